"""The retention of the record tables: alerts, incidents, citizen reports and dead letters.

Once a data class's retention is set (``CITYVITALS_RETENTION_<CLASS>_DAYS``), the upkeep of
both flavours deletes these tables' rows older than it, :data:`PRUNE_BATCH` rows a statement
(one transaction each), until a statement finds fewer:

- ``deadletters`` (diagnostic) by ``received_at``, with their ``deadletters_resent`` and
  ``deadletters_replayed``;
- ``reports`` (citizen) by ``reported_at``, except a report listed by an incident that is not
  closed (``incidents.reports``);
- ``alerts`` (operational) that are resolved, by ``resolved_at``, with their
  ``alert_transitions``, except an alert listed by an incident that is not closed;
- ``incidents`` (operational) that are closed, by ``updated_at`` (their last revision: the
  close or a later one), with their ``incident_transitions``, ``escalations`` and
  ``dispatches``; a digest dispatch that also lists an incident not closed is kept.

A firing alert and an incident that is not closed are never deleted, however old. Unset
retentions delete nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sinks.storage import Connection, MaintenanceReport, Retention

__all__ = ["PRUNES", "PRUNE_BATCH", "prune_records"]

log = logging.getLogger("cityvitals.maintenance")

PRUNE_BATCH = 10_000
"""Rows of a record table deleted by one statement (its child rows go in the same one)."""

OPEN_INCIDENT_LISTS = (
    "EXISTS (SELECT 1 FROM incidents i WHERE i.state <> 'closed' AND {} = ANY(i.{}))"
)


def _still_listed(column: str, array: str) -> str:
    return OPEN_INCIDENT_LISTS.format(column, array)


PRUNES: dict[str, tuple[tuple[str, ...], str]] = {
    "deadletters": (
        ("deadletters", "deadletters_resent", "deadletters_replayed"),
        """
        WITH gone AS (
            DELETE FROM deadletters WHERE (kafka_topic, kafka_partition, kafka_offset,
                                           received_at) IN (
                SELECT kafka_topic, kafka_partition, kafka_offset, received_at FROM deadletters
                 WHERE received_at < %(before)s LIMIT %(batch)s)
            RETURNING kafka_topic, kafka_partition, kafka_offset, received_at),
        resent AS (
            DELETE FROM deadletters_resent r USING gone g
             WHERE (r.kafka_topic, r.kafka_partition, r.kafka_offset, r.received_at)
                 = (g.kafka_topic, g.kafka_partition, g.kafka_offset, g.received_at)
            RETURNING 1),
        replayed AS (
            DELETE FROM deadletters_replayed r USING gone g
             WHERE (r.kafka_topic, r.kafka_partition, r.kafka_offset, r.received_at)
                 = (g.kafka_topic, g.kafka_partition, g.kafka_offset, g.received_at)
            RETURNING 1)
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM resent),
               (SELECT count(*) FROM replayed)
        """,
    ),
    "reports": (
        ("reports",),
        f"""
        WITH gone AS (
            DELETE FROM reports WHERE report_id IN (
                SELECT r.report_id FROM reports r
                 WHERE r.reported_at < %(before)s
                   AND NOT {_still_listed("r.report_id", "reports")}
                 LIMIT %(batch)s)
            RETURNING 1)
        SELECT count(*) FROM gone
        """,
    ),
    "alerts": (
        ("alerts", "alert_transitions"),
        f"""
        WITH gone AS (
            DELETE FROM alerts WHERE alert_id IN (
                SELECT a.alert_id FROM alerts a
                 WHERE a.status = 'resolved'
                   AND coalesce(a.resolved_at, a.updated_at) < %(before)s
                   AND NOT {_still_listed("a.alert_id", "alerts")}
                 LIMIT %(batch)s)
            RETURNING alert_id),
        steps AS (
            DELETE FROM alert_transitions WHERE alert_id IN (SELECT alert_id FROM gone)
            RETURNING 1)
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM steps)
        """,
    ),
    "incidents": (
        ("incidents", "incident_transitions", "dispatches", "escalations"),
        """
        WITH gone AS (
            DELETE FROM incidents WHERE incident_id IN (
                SELECT incident_id FROM incidents
                 WHERE state = 'closed' AND updated_at < %(before)s
                 LIMIT %(batch)s)
            RETURNING incident_id),
        steps AS (
            DELETE FROM incident_transitions WHERE incident_id IN (SELECT incident_id FROM gone)
            RETURNING 1),
        orders AS (
            DELETE FROM dispatches d WHERE d.incident_id IN (SELECT incident_id FROM gone)
               AND NOT EXISTS (SELECT 1 FROM incidents i
                                WHERE i.state <> 'closed' AND i.incident_id = ANY(d.incidents))
            RETURNING 1),
        raised AS (
            DELETE FROM escalations WHERE incident_id IN (SELECT incident_id FROM gone)
            RETURNING 1)
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM steps),
               (SELECT count(*) FROM orders), (SELECT count(*) FROM raised)
        """,
    ),
}
"""Per record table: the tables one statement deletes from (the record table first) and the
statement, which answers one count per table, for ``%(before)s`` and ``%(batch)s``."""


def prune_records(
    conn: Connection,
    now: datetime,
    retention: Retention,
    report: MaintenanceReport,
    *,
    batch: int = PRUNE_BATCH,
) -> None:
    """Delete the record tables' rows past their retention as of ``now`` (see the module);
    the counts per table go to ``report.pruned`` and the log."""
    for table, age in retention.records():
        tables, statement = PRUNES[table]
        counts = dict.fromkeys(tables, 0)
        while True:
            with conn.transaction():
                row = conn.execute(statement, {"before": now - age, "batch": batch}).fetchone()
            deleted = [count for count in row or () if isinstance(count, int)]
            assert len(deleted) == len(tables), row
            for name, count in zip(tables, deleted, strict=True):
                counts[name] += count
            if deleted[0] < batch:
                break
        report.pruned.update(counts)
        log.info(
            "%s: deleted rows older than %d days: %s",
            table,
            age.days,
            ", ".join(f"{count} from {name}" for name, count in counts.items()),
        )
