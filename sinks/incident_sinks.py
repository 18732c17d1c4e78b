"""The sinks of the incident stage's topics (see :mod:`sinks.base` for the interface).

- :class:`IncidentSink`: ``incidents`` (the latest revision of each incident: an upsert never
  replaces a higher revision) and ``incident_transitions`` (every step), in one transaction.
- :class:`DispatchSink`, :class:`EscalationSink`, :class:`ReportSink`: one row per order,
  escalation and citizen report, inserted once on their natural keys.

A replayed message changes nothing: each sink returns the rows that were new.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cityvitals.contracts import CitizenReport, DispatchOrder, Escalation, IncidentUpdate
from sinks.base import Cursor, SqlSink

__all__ = ["DispatchSink", "EscalationSink", "IncidentSink", "ReportSink"]


def _value(x: Any) -> Any:
    """An enum's value (or None)."""
    return None if x is None else x.value


class IncidentSink(SqlSink):
    """Incident updates: the transition is inserted once; the incident row is upserted and
    keeps the highest revision seen. Returns the new transitions."""

    table = "incidents"
    statement = """
        INSERT INTO incident_transitions (incident_id, revision, action, from_state, to_state,
                                          actor, reason, ts, tier, department, feedback_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
    """
    UPSERT = """
        INSERT INTO incidents AS i (incident_id, revision, category, state, level, source,
                                    place_id, place_path, title, tier, department, dispatch_id,
                                    opened_at, updated_at, accept_by, handle_by, alerts,
                                    open_alerts, devices, reports, muted, flaps, escalations,
                                    snapshot_refs, acknowledged_by, acknowledged_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                %s, %s, %s, %s, %s, %s)
        ON CONFLICT (incident_id) DO UPDATE SET
            revision = EXCLUDED.revision, category = EXCLUDED.category, state = EXCLUDED.state,
            level = EXCLUDED.level, source = EXCLUDED.source, place_id = EXCLUDED.place_id,
            place_path = EXCLUDED.place_path, title = EXCLUDED.title, tier = EXCLUDED.tier,
            department = EXCLUDED.department, dispatch_id = EXCLUDED.dispatch_id,
            opened_at = EXCLUDED.opened_at, updated_at = EXCLUDED.updated_at,
            accept_by = EXCLUDED.accept_by, handle_by = EXCLUDED.handle_by,
            alerts = EXCLUDED.alerts, open_alerts = EXCLUDED.open_alerts,
            devices = EXCLUDED.devices, reports = EXCLUDED.reports, muted = EXCLUDED.muted,
            flaps = EXCLUDED.flaps, escalations = EXCLUDED.escalations,
            snapshot_refs = EXCLUDED.snapshot_refs, acknowledged_by = EXCLUDED.acknowledged_by,
            acknowledged_at = EXCLUDED.acknowledged_at
        WHERE EXCLUDED.revision > i.revision
    """

    def rows(self, batch: Sequence[IncidentUpdate]) -> list[tuple[object, ...]]:
        return [
            (
                t.incident_id,
                t.revision,
                t.action.value,
                _value(t.from_state),
                t.to_state.value,
                t.actor,
                t.reason,
                t.ts,
                _value(t.tier),
                t.department,
                t.feedback_id,
            )
            for t in (u.transition for u in batch)
        ]

    def execute(self, cur: Cursor, batch: Sequence[Any], rows: list[tuple[object, ...]]) -> int:
        new = super().execute(cur, batch, rows)
        incidents = [
            (
                i.incident_id,
                i.revision,
                i.category,
                i.state.value,
                i.level.value,
                i.source.value,
                i.place_id,
                list(i.place_path),
                i.title,
                _value(i.tier),
                i.department,
                i.dispatch_id,
                i.opened_at,
                i.updated_at,
                i.accept_by,
                i.handle_by,
                list(i.alerts),
                i.open_alerts,
                list(i.devices),
                list(i.reports),
                i.muted,
                i.flaps,
                i.escalations,
                list(i.snapshot_refs),
                i.acknowledged_by,
                i.acknowledged_at,
            )
            for i in (u.incident for u in batch)
        ]
        cur.executemany(self.UPSERT, incidents)
        return new


class DispatchSink(SqlSink):
    """Dispatch orders, once each by ``dispatch_id`` (a replayed order is the same order)."""

    table = "dispatches"
    statement = """
        INSERT INTO dispatches (dispatch_id, kind, incident_id, incidents, department, tier,
                                tier_place_id, category, level, place_id, place_path, title,
                                accept_by, handle_by, ts, withdraws, revises, reason, summary,
                                signals, devices, alerts, opened_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                %s, %s, %s)
        ON CONFLICT DO NOTHING
    """

    def rows(self, batch: Sequence[DispatchOrder]) -> list[tuple[object, ...]]:
        return [
            (
                d.dispatch_id,
                d.kind.value,
                d.incident_id,
                list(d.incidents),
                d.department,
                d.tier.value,
                d.tier_place_id,
                d.category,
                d.level.value,
                d.place_id,
                list(d.place_path),
                d.title,
                d.accept_by,
                d.handle_by,
                d.ts,
                d.withdraws,
                d.revises,
                d.reason,
                d.summary,
                list(d.signals),
                list(d.devices),
                list(d.alerts),
                d.opened_at,
            )
            for d in batch
        ]


class EscalationSink(SqlSink):
    """Escalations, once each by (incident, time, tier escalated from)."""

    table = "escalations"
    statement = """
        INSERT INTO escalations (incident_id, from_tier, to_tier, department, from_department,
                                 breach, deadline, dispatch_id, ts)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
    """

    def rows(self, batch: Sequence[Escalation]) -> list[tuple[object, ...]]:
        return [
            (
                e.incident_id,
                e.from_tier.value,
                _value(e.to_tier),
                e.department,
                e.from_department,
                e.breach,
                e.deadline,
                e.dispatch_id,
                e.ts,
            )
            for e in batch
        ]


class ReportSink(SqlSink):
    """Citizen reports, once each by ``report_id``."""

    table = "reports"
    statement = """
        INSERT INTO reports (report_id, channel, category, place_path, text, photo_ref, level,
                             lat, lon, reported_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
    """

    def rows(self, batch: Sequence[CitizenReport]) -> list[tuple[object, ...]]:
        return [
            (
                r.report_id,
                r.channel.value,
                r.category,
                list(r.place_path),
                r.text,
                r.photo_ref,
                r.level.value,
                r.lat,
                r.lon,
                r.reported_at,
            )
            for r in batch
        ]
