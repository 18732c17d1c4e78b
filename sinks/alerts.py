"""Reading alerts back from the database, for the CLI and the API (the alert sink writes the
tables: :class:`sinks.postgres.AlertSink`; ``alerts`` keeps each episode's latest transition,
``alert_transitions`` every one).

- :func:`list_alerts`: episodes, the last changed first, filtered by status, rule, lowest
  level, place, device and time;
- :func:`alert_detail`: one episode with all its transitions and the incident that holds it;
- :func:`alert_rows`: the episodes of some ids (an incident's alerts); for one incident's or
  alert's view, each still firing with the newest reading of its device's metric (what it
  reads now: its ``summary`` says what it read when it reached its level).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict

from cityvitals.contracts import AlertStatus, AnomalyWhy, Incident, WarningLevel
from sinks.ids import AmbiguousId, find_id

__all__ = [
    "AlertDetail",
    "AlertFilter",
    "AlertRow",
    "AlertStep",
    "UnknownAlert",
    "alert_detail",
    "alert_rows",
    "list_alerts",
    "place_clause",
]

Conn = psycopg.Connection[Any]

_COLUMNS = (
    "alert_id, revision, rule_id, status, level, device_id, metric, value, threshold,"
    " place_path, device_type, started_at, updated_at, resolved_at, summary, evidence, anomaly,"
    " resolution"
)


class UnknownAlert(LookupError):
    def __init__(self, alert_id: str, hint: str = "") -> None:
        super().__init__(f"alert {alert_id!r} does not exist{hint}")
        self.alert_id = alert_id


class AmbiguousAlert(AmbiguousId):
    """A start of an id that several alerts' ids have."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        super().__init__("alert", prefix, matches)


def find_alert(conn: Conn, given: str) -> str:
    """The id of the alert whose id is ``given`` or starts with it (:func:`sinks.ids.find_id`);
    raises :class:`UnknownAlert` or :class:`AmbiguousAlert`."""
    return find_id(conn, given, "alerts", "alert_id", UnknownAlert, AmbiguousAlert)


@dataclass(frozen=True)
class AlertRow:
    """An alert episode as the ``alerts`` table keeps it: its latest transition."""

    alert_id: str
    revision: int
    rule_id: str
    status: str
    level: str
    device_id: str
    metric: str
    value: float
    threshold: float
    place_path: tuple[str, ...]
    started_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    summary: str
    device_type: str | None = None
    evidence: tuple[str, ...] = ()
    anomaly: AnomalyWhy | None = None
    """An anomaly alert's why as numbers, from its latest firing or change of level."""
    resolution: str | None = None
    """A resolved episode's end (the contract's :class:`AlertResolution`): ``cleared`` (a
    reading back under its levels), ``stale`` (its device fell silent) or ``retired`` (its
    rule no longer applies); None while it fires (and for one stored before it was kept)."""
    latest_value: float | None = None
    """An episode still firing, in one incident's or alert's view: the newest reading of its
    device's metric (an alert is stored when it fires or changes level, so ``value`` and
    ``summary`` say what it read then). None where the device holds no reading of it (a
    camera's event) and in listings."""
    latest_ts: datetime | None = None
    """When that reading was measured."""

    def latest_said(self, zone: tzinfo) -> str:
        """``; newest water_level_cm 12 at 2026-12-07 10:32:00`` (in ``zone``) beside the
        summary of an episode firing whose metric has a reading, else nothing."""
        if self.latest_value is None or self.latest_ts is None:
            return ""
        at = self.latest_ts.astimezone(zone)
        return f"; newest {self.metric} {self.latest_value:g} at {at:%Y-%m-%d %H:%M:%S}"


@dataclass(frozen=True)
class AlertStep:
    """One transition of an episode: it fired (revision 0), changed level, or resolved."""

    revision: int
    status: str
    level: str
    value: float
    ts: datetime


class AlertDetail(BaseModel):
    """One alert episode, its transitions oldest first, and the incident holding it (if any)."""

    model_config = ConfigDict(frozen=True)

    alert: AlertRow
    transitions: tuple[AlertStep, ...]
    incident: Incident | None


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts :func:`list_alerts` gives; every field narrows (None: any)."""

    status: AlertStatus | None = None
    rule: str | None = None
    level: WarningLevel | None = None
    """This level or a higher one (yellow: yellow, orange and red)."""
    place: str | None = None
    """A place id (alerts at or under it) or a place path prefix ``city/district``."""
    device: str | None = None
    since: datetime | None = None
    """Episodes still firing at or after this time (not resolved before it)."""
    until: datetime | None = None
    """Episodes that started before this time."""
    limit: int | None = 100
    offset: int = 0
    """Matches skipped first, in the listing's order."""


def place_clause(place: str) -> tuple[str, list[object]]:
    """A ``WHERE`` clause on ``place_path``: a place id (at or under it) or a path prefix ``a/b``.

    >>> place_clause("d1")
    ('place_path @> ARRAY[%s]::text[]', ['d1'])
    >>> place_clause("c/d1/")
    ('place_path[1:%s] = %s::text[]', [2, ['c', 'd1']])
    """
    parts = place.strip("/").split("/")
    if len(parts) == 1:
        return "place_path @> ARRAY[%s]::text[]", [parts[0]]
    return "place_path[1:%s] = %s::text[]", [len(parts), parts]


def _row(found: dict[str, Any]) -> AlertRow:
    why = found["anomaly"]
    return AlertRow(
        **{
            **found,
            "place_path": tuple(found["place_path"]),
            "evidence": tuple(found["evidence"]),
            "anomaly": None if why is None else AnomalyWhy.model_validate(why),
        }
    )


def _fetch(conn: Conn, query: str, params: list[object]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query.encode(), params).fetchall()


def list_alerts(conn: Conn, where: AlertFilter = AlertFilter()) -> list[AlertRow]:
    """The episodes that match, the last changed first."""
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (
        ("status", None if where.status is None else where.status.value),
        ("rule_id", where.rule),
        ("device_id", where.device),
    ):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if where.level is not None:
        clauses.append("level = ANY(%s)")
        params.append(where.level.and_above())
    if where.place:
        clause, values = place_clause(where.place)
        clauses.append(clause)
        params.extend(values)
    if where.since is not None:
        clauses.append("(resolved_at IS NULL OR resolved_at >= %s)")
        params.append(where.since)
    if where.until is not None:
        clauses.append("started_at < %s")
        params.append(where.until)
    query = f"SELECT {_COLUMNS} FROM alerts"
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    query += " ORDER BY updated_at DESC, alert_id"
    if where.limit is not None:
        query += " LIMIT %s"
        params.append(where.limit)
    if where.offset:
        query += " OFFSET %s"
        params.append(where.offset)
    return [_row(found) for found in _fetch(conn, query, params)]


def alert_rows(conn: Conn, alert_ids: list[str], latest: bool = False) -> list[AlertRow]:
    """The episodes of these ids, oldest started first (unknown ids are left out); with
    ``latest`` (one incident's or alert's view, not the console's poll of every open
    incident), those still firing with their metric's newest reading."""
    query = f"SELECT {_COLUMNS} FROM alerts WHERE alert_id = ANY(%s) ORDER BY started_at, alert_id"
    rows = [_row(found) for found in _fetch(conn, query, [alert_ids])]
    return _with_latest(conn, rows) if latest else rows


LATEST_WITHIN = "7 days"
"""How far back the newest reading of a firing alert's metric is looked for: the days before
compression (a device silent longer has none shown), so no compressed chunk is opened."""


def _with_latest(conn: Conn, rows: list[AlertRow]) -> list[AlertRow]:
    """``rows``, each still firing with the newest reading of its device's metric (of the
    last :data:`LATEST_WITHIN`; a camera's events are no readings)."""
    firing = {
        (a.device_id, a.metric)
        for a in rows
        if a.status == AlertStatus.FIRING.value and not a.metric.startswith("camera.")
    }
    if not firing:
        return rows
    devices, metrics = zip(*sorted(firing), strict=True)
    newest = _fetch(
        conn,
        "SELECT a.device_id, a.metric, r.value, r.ts FROM unnest(%s::text[], %s::text[])"
        " AS a(device_id, metric) CROSS JOIN LATERAL (SELECT value, ts FROM readings"
        " WHERE device_id = a.device_id AND metric = a.metric"
        f" AND ts > now() - interval '{LATEST_WITHIN}' ORDER BY ts DESC LIMIT 1) r",
        [list(devices), list(metrics)],
    )
    now = {(r["device_id"], r["metric"]): (r["value"], r["ts"]) for r in newest}
    return [
        replace(a, latest_value=now[key][0], latest_ts=now[key][1])
        if a.status == AlertStatus.FIRING.value and (key := (a.device_id, a.metric)) in now
        else a
        for a in rows
    ]


def alert_detail(conn: Conn, alert_id: str) -> AlertDetail:
    """The episode, its transitions and the incident whose alerts list it (the last opened,
    should there be several); raises :class:`UnknownAlert`."""
    found = alert_rows(conn, [alert_id], latest=True)
    if not found:
        raise UnknownAlert(alert_id)
    steps = _fetch(
        conn,
        "SELECT revision, status, level, value, ts FROM alert_transitions"
        " WHERE alert_id = %s ORDER BY revision",
        [alert_id],
    )
    holders = _fetch(
        conn,
        "SELECT * FROM incidents WHERE alerts @> ARRAY[%s]::text[]"
        " ORDER BY opened_at DESC, incident_id LIMIT 1",
        [alert_id],
    )
    return AlertDetail(
        alert=found[0],
        transitions=tuple(AlertStep(**s) for s in steps),
        incident=Incident.model_validate(holders[0]) if holders else None,
    )
