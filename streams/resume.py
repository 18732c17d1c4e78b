"""What the stream reads from the database: the alerts and incidents still open, once, when
it starts, and the places' names, kept up to date while it runs.

The stream's rule memory lives in Faust tables backed by Kafka. A Kafka that keeps nothing
across a restart (the local stack's tansu runs in memory) takes that memory with it; the
database still has every open episode, so the stream continues them
(:func:`streams.seeds.seed_memories`). The incident desk names places by the names the
registry gives them (:func:`changed_places`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg.rows import dict_row
from pydantic import ValidationError

from cityvitals import db
from cityvitals.contracts import Action, Alert, AlertStatus, Incident, WarningLevel
from cityvitals.settings import Settings
from rules.incidents import PLATFORM, Tracked, resumed
from streams.seeds import OpenAlert

__all__ = ["OPEN_ALERTS", "OPEN_INCIDENTS", "changed_places", "open_alerts", "open_incidents"]

log = logging.getLogger("cityvitals.streams")

_RANKS = {level.rank: level for level in WarningLevel}

OPEN_ALERTS = """
    SELECT a.alert_id, a.revision, a.rule_id, a.level, a.device_id, a.metric, a.value,
           a.threshold, a.place_path, a.device_type, a.started_at, a.updated_at, a.summary,
           a.evidence,
           (SELECT max(CASE t.level WHEN 'blue' THEN 1 WHEN 'yellow' THEN 2
                                    WHEN 'orange' THEN 3 ELSE 4 END)
              FROM alert_transitions t WHERE t.alert_id = a.alert_id),
           coalesce(
               (SELECT max(r.ts) FROM readings r
                 WHERE r.device_id = a.device_id AND r.metric = a.metric),
               (SELECT max(e.ts) FROM camera_events e
                 WHERE e.camera_id = a.device_id AND 'camera.' || e.event_type = a.metric),
               a.updated_at)
      FROM alerts a
     WHERE a.status = 'firing'
"""


def _open_alert(row: tuple[Any, ...]) -> OpenAlert:
    (alert_id, revision, rule_id, level, device_id, metric, value, threshold, place_path,
     device_type, started_at, updated_at, summary, evidence, peak, last_seen) = row  # fmt: skip
    alert = Alert(
        alert_id=alert_id,
        revision=revision,
        rule_id=rule_id,
        status=AlertStatus.FIRING,
        level=level,
        device_id=device_id,
        metric=metric,
        value=value,
        threshold=threshold,
        place_path=tuple(place_path),
        device_type=device_type,
        started_at=started_at,
        ts=updated_at,
        summary=summary,
        evidence=tuple(evidence),
    )
    stored_peak = _RANKS.get(peak or 0, alert.level)
    top = stored_peak if stored_peak.rank > alert.level.rank else alert.level
    return OpenAlert(alert, top, max(last_seen, alert.started_at))


def open_alerts(settings: Settings) -> list[OpenAlert]:
    """Every alert episode the database shows firing. A database that cannot be read is
    logged and the stream starts without them (their alerts then stay open until an
    operator or a later restart closes them); a row that is not a valid alert is skipped
    and logged."""
    try:
        with db.connect(settings) as conn:
            rows = conn.execute(OPEN_ALERTS).fetchall()
    except (db.DatabaseUnavailable, psycopg.Error) as exc:
        log.error("cannot read the open alerts to continue them: %s", str(exc).strip())
        return []
    found = []
    for row in rows:
        try:
            found.append(_open_alert(row))
        except ValidationError as exc:
            log.error("open alert %s not continued: %s", row[0], exc)
    log.info("continuing %d open alerts from the database", len(found))
    return found


OPEN_INCIDENTS = """
    SELECT i.*,
           (SELECT count(*) FROM dispatches d WHERE d.incident_id = i.incident_id) AS orders,
           (SELECT coalesce(json_object_agg(a.alert_id, json_build_array(a.revision,
                                                                         a.status = 'firing')),
                            '{}'::json)
              FROM alerts a WHERE a.alert_id = ANY(i.alerts)) AS alert_states,
           (SELECT coalesce(array_agg(DISTINCT e.breach), '{}')
              FROM escalations e
             WHERE e.incident_id = i.incident_id AND e.from_tier = i.tier
               AND e.ts >= coalesce((SELECT max(d.ts) FROM dispatches d
                                      WHERE d.incident_id = i.incident_id
                                        AND d.kind NOT IN ('withdrawal', 'revision')),
                                    i.opened_at))
               AS breached,
           (SELECT coalesce(array_agg(d.dispatch_id ORDER BY d.ts), '{}') FROM dispatches d
             WHERE d.incident_id = i.incident_id AND d.revises = i.dispatch_id) AS revisions,
           (SELECT coalesce(array_agg(last.rule_id || '|' || last.device_id), '{}')
              FROM (SELECT DISTINCT ON (a.rule_id, a.device_id) a.*
                      FROM alerts a WHERE a.alert_id = ANY(i.alerts)
                     ORDER BY a.rule_id, a.device_id, a.started_at DESC) last
             WHERE last.status = 'resolved' AND last.resolution IN ('stale', 'retired'))
               AS blind
           , coalesce((SELECT a.summary FROM alerts a
                        WHERE a.alert_id = ANY(i.alerts) AND a.status = 'firing'
                        ORDER BY a.updated_at DESC LIMIT 1),
                      (SELECT d.summary FROM dispatches d WHERE d.incident_id = i.incident_id
                        ORDER BY d.ts DESC LIMIT 1),
                      '') AS said
           , (SELECT coalesce(json_object_agg(a.alert_id, a.summary ORDER BY a.updated_at),
                              '{}'::json)
                FROM alerts a WHERE a.alert_id = ANY(i.alerts) AND a.status = 'firing')
               AS firing_said
           , (SELECT coalesce(json_object_agg(a.alert_id, a.level), '{}'::json)
                FROM alerts a WHERE a.alert_id = ANY(i.alerts) AND a.status = 'firing')
               AS firing_level
           , (SELECT min(a.started_at) FROM alerts a
               WHERE a.alert_id = ANY(i.alerts) AND a.status = 'firing'
                 AND i.state IN ('verified', 'closed')
                 AND a.started_at >= (SELECT max(t.ts) FROM incident_transitions t
                                       WHERE t.incident_id = i.incident_id
                                         AND t.action IN ('verify', 'close')))
               AS back_since
           , (SELECT json_build_array(t.action, t.actor) FROM incident_transitions t
               WHERE t.incident_id = i.incident_id
                 AND t.action IN ('dispatch', 'escalate', 'reassign')
               ORDER BY t.revision DESC LIMIT 1) AS routed
      FROM incidents i
     WHERE i.state <> 'closed' OR i.updated_at > now() - interval '1 day'
"""
"""The incidents a desk continues: every open one, and those closed within a day (a late
feedback or a reopen finds them)."""


def open_incidents(settings: Settings) -> list[Tracked]:
    """The incidents the database holds open (or closed within a day), for a desk whose book
    is empty (:func:`rules.incidents.resumed`). A database that cannot be read is logged and
    the desk starts empty; a row that is not a valid incident is skipped and logged."""
    try:
        with db.connect(settings) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(OPEN_INCIDENTS).fetchall()
    except (db.DatabaseUnavailable, psycopg.Error) as exc:
        log.error("cannot read the open incidents to continue them: %s", str(exc).strip())
        return []
    found = []
    for row in rows:
        orders, alerts, breached = row.pop("orders"), row.pop("alert_states"), row.pop("breached")
        revisions, blind, said = row.pop("revisions"), row.pop("blind"), row.pop("said")
        firing_said = row.pop("firing_said") or {}
        firing_level = row.pop("firing_level") or {}
        back_since = row.pop("back_since")
        action, actor = row.pop("routed") or ("", "")
        try:
            incident = Incident.model_validate(row)
        except ValidationError as exc:
            log.error("incident %s not continued: %s", row.get("incident_id"), exc)
            continue
        states = {a: (int(rev), bool(firing)) for a, (rev, firing) in (alerts or {}).items()}
        found.append(
            resumed(
                incident,
                states,
                int(orders),
                list(breached),
                list(revisions),
                list(blind),
                said,
                {str(a): str(summary) for a, summary in firing_said.items()},
                # who moved it to its department last: a person's reassignment holds
                actor if action == Action.REASSIGN and actor != PLATFORM else None,
                {str(a): WarningLevel(level) for a, level in firing_level.items()},
                back_since,
            )
        )
    return found


CHANGED_PLACES = "SELECT place_id, name, updated_at FROM places"


def changed_places(settings: Settings, since: datetime | None) -> list[tuple[str, str, datetime]]:
    """Every place's id, name and last change (``updated_at``), or only those changed after
    ``since``: what :class:`streams.incidents.PlaceNames` reads. Raises what the database
    raises."""
    query, args = CHANGED_PLACES, []
    if since is not None:
        query, args = f"{query} WHERE updated_at > %s", [since]
    with db.connect(settings) as conn:
        return cast(list[tuple[str, str, datetime]], conn.execute(query, args).fetchall())
