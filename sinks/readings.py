"""Reads for the duty officer's console: the readings of an incident's devices around the time
it opened (:func:`readings_around`), what one device sent and had refused lately
(:func:`device_activity`), and the feedback the incident stage refused (:func:`refusals`).
The sinks write the tables (:class:`sinks.postgres.ReadingSink`,
:class:`sinks.postgres.DeadLetterSink`); nothing here writes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from sinks.deadletters import REPLAYED

__all__ = [
    "ACTIVITY_LOOKBACK",
    "AROUND",
    "PER_METRIC",
    "REFUSED_COUNTED",
    "CameraSeen",
    "DeviceActivity",
    "OutOfRange",
    "Refusal",
    "Refused",
    "SeriesPoint",
    "device_activity",
    "outside_range",
    "readings_around",
    "recent_metrics",
    "refusal_of",
    "refusals",
]

Conn = psycopg.Connection[Any]

AROUND = timedelta(minutes=30)
"""How far before and after an incident opened :func:`readings_around` looks."""


@dataclass(frozen=True)
class SeriesPoint:
    device_id: str
    metric: str
    ts: datetime
    value: float


def readings_around(
    conn: Conn,
    device_ids: Sequence[str],
    at: datetime,
    span: timedelta = AROUND,
    limit: int = 5000,
) -> list[SeriesPoint]:
    """The readings of ``device_ids`` within ``span`` either side of ``at``, by device, metric
    and time (at most ``limit``)."""
    if not device_ids:
        return []
    rows = conn.execute(
        "SELECT device_id, metric, ts, value FROM readings "
        "WHERE device_id = ANY(%s) AND ts >= %s AND ts <= %s "
        "ORDER BY device_id, metric, ts LIMIT %s",
        (list(device_ids), at - span, at + span, limit),
    ).fetchall()
    return [SeriesPoint(d, m, ts, float(v)) for d, m, ts, v in rows]


ACTIVITY_LOOKBACK = timedelta(days=7)
"""How far back :func:`device_activity` looks for each metric's newest reading, the camera's
newest events and the refused messages (chunks older than that are compressed)."""
SHOWN = 10
"""The newest camera events and refused messages :func:`device_activity` lists."""
PER_METRIC = 500
"""The newest readings of each metric :func:`device_activity` gives of its span at most."""
REFUSED_COUNTED = 10_000
"""The refused messages :func:`device_activity` counts at most (a device refused at every
message would be counted whole at every look)."""


@dataclass(frozen=True)
class CameraSeen:
    """One event a camera sent (its video analytics' finding)."""

    event_type: str
    ts: datetime
    value: float
    confidence: float
    snapshot_ref: str | None


@dataclass(frozen=True)
class Refused:
    """A message naming a device that a stage refused: when, which stage, why, and what the
    stage counted it as (None for a letter stored before causes were kept)."""

    received_at: datetime
    stage: str
    reason: str
    cause: str | None = None


@dataclass(frozen=True)
class DeviceActivity:
    """What one device sent and had refused lately, for a person checking on it."""

    since: datetime
    """The start of the span :attr:`points` covers."""
    points: tuple[SeriesPoint, ...]
    """Its readings since :attr:`since`, by metric and time: each metric's newest
    :data:`PER_METRIC` at most."""
    cut: bool
    """Whether a metric had more readings in the span than :attr:`points` holds."""
    latest: tuple[SeriesPoint, ...]
    """Each metric's newest reading within :data:`ACTIVITY_LOOKBACK`, by metric."""
    camera_events: tuple[CameraSeen, ...]
    """Its newest camera events within :data:`ACTIVITY_LOOKBACK`, the newest first."""
    refused: int
    """The messages naming it that a stage refused within :data:`ACTIVITY_LOOKBACK` and that
    were not replayed since (``cityvitals replay``), counted up to :data:`REFUSED_COUNTED`."""
    refused_newest: tuple[Refused, ...]
    """The newest :data:`SHOWN` of those, the newest first."""


_HERE = "(%(depth)s = 0 OR place_path[1:%(depth)s] = %(within)s::text[])"
"""A reading taken under the place path ``within`` (its first ``depth`` ids), or anywhere."""
_NEWEST = f"""
WITH RECURSIVE metrics(metric) AS (
    SELECT min(metric) FROM readings
    WHERE device_id = %(device)s AND ts >= %(back)s AND ts <= %(now)s AND {_HERE}
  UNION ALL
    SELECT (SELECT min(r.metric) FROM readings r
            WHERE r.device_id = %(device)s AND r.ts >= %(back)s AND r.ts <= %(now)s
              AND r.metric > metrics.metric AND {_HERE.replace("place_path", "r.place_path")})
    FROM metrics WHERE metrics.metric IS NOT NULL
)
SELECT m.metric, newest.ts, newest.value FROM metrics m
CROSS JOIN LATERAL (
    SELECT ts, value FROM readings
    WHERE device_id = %(device)s AND metric = m.metric AND ts >= %(since)s AND ts <= %(now)s
      AND {_HERE}
    ORDER BY ts DESC LIMIT %(each)s
) newest
ORDER BY m.metric, newest.ts
"""
"""Each metric's newest ``each`` readings of a device since ``since``: its metrics of the week
(``back``) found one by one along the primary key (device, metric, time), then each one's
newest, so a device reporting every few seconds is not read whole, nor sorted."""


def device_activity(
    conn: Conn,
    device_id: str,
    span: timedelta,
    now: datetime,
    within: Sequence[str] = (),
) -> DeviceActivity:
    """What ``device_id`` sent in the ``span`` before ``now``, its metrics' newest values, its
    newest camera events, and the messages naming it that were refused (dead letters); its
    readings and camera events those taken under the place path ``within`` alone (a user's
    scope: a device moved into it brings none of its readings from elsewhere)."""
    since, back = now - span, now - ACTIVITY_LOOKBACK
    asked = {
        "device": device_id, "back": back, "now": now,
        "depth": len(within), "within": list(within),
    }  # fmt: skip
    points = (
        conn.execute(_NEWEST, {**asked, "since": since, "each": PER_METRIC + 1}).fetchall()
        if span
        else []  # the latest values alone (``devices show``)
    )
    latest = conn.execute(_NEWEST, {**asked, "since": back, "each": 1}).fetchall()
    seen = conn.execute(
        "SELECT event_type, ts, value, confidence, snapshot_ref FROM camera_events"
        f" WHERE camera_id = %(device)s AND ts >= %(back)s AND ts <= %(now)s AND {_HERE}"
        " ORDER BY ts DESC LIMIT %(shown)s",
        {**asked, "shown": SHOWN},
    ).fetchall()
    counted = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM deadletters d"
        f" WHERE device_id = %s AND received_at >= %s AND NOT {REPLAYED} LIMIT %s) AS found",
        (device_id, back, REFUSED_COUNTED),
    ).fetchone()
    refused = conn.execute(
        "SELECT received_at, stage, reason, cause FROM deadletters d"
        f" WHERE device_id = %s AND received_at >= %s AND NOT {REPLAYED}"
        " ORDER BY received_at DESC LIMIT %s",
        (device_id, back, SHOWN),
    ).fetchall()
    each: dict[str, list[SeriesPoint]] = {}
    for m, ts, v in points:
        each.setdefault(m, []).append(SeriesPoint(device_id, m, ts, float(v)))
    return DeviceActivity(
        since=since,
        points=tuple(p for series in each.values() for p in series[-PER_METRIC:]),
        cut=any(len(series) > PER_METRIC for series in each.values()),
        latest=tuple(SeriesPoint(device_id, m, ts, float(v)) for m, ts, v in latest),
        camera_events=tuple(
            CameraSeen(e, ts, float(v), float(c), ref) for e, ts, v, c, ref in seen
        ),
        refused=int(counted[0]) if counted else 0,
        refused_newest=tuple(Refused(*row) for row in refused),
    )


def recent_metrics(conn: Conn, since: datetime) -> set[str]:
    """The metrics of the readings stored since ``since`` (what devices send: a rule on
    another metric judges nothing until one sends it)."""
    rows = conn.execute("SELECT DISTINCT metric FROM readings WHERE ts >= %s", (since,))
    return {str(metric) for (metric,) in rows.fetchall()}


@dataclass(frozen=True)
class OutOfRange:
    """Readings of one metric, stored since a time, outside a range: how many, from how many
    devices, and their least and greatest values."""

    metric: str
    readings: int
    devices: int
    low: float
    high: float


def outside_range(
    conn: Conn,
    device_ids: Sequence[str],
    metric: str,
    low: float | None,
    high: float | None,
    since: datetime,
) -> OutOfRange | None:
    """What ``device_ids`` sent of ``metric`` since ``since`` that lies outside ``[low,
    high]`` (None: no bound that side); None when nothing does (a profile narrowed under live
    devices would refuse such values from then on)."""
    if not device_ids or (low is None and high is None):
        return None
    row = conn.execute(
        "SELECT count(*), count(DISTINCT device_id), min(value), max(value) FROM readings"
        " WHERE device_id = ANY(%s) AND metric = %s AND ts >= %s"
        " AND (value < %s OR value > %s)",
        (
            list(device_ids),
            metric,
            since,
            float("-inf") if low is None else low,
            float("inf") if high is None else high,
        ),
    ).fetchone()
    if row is None or not row[0]:
        return None
    return OutOfRange(metric, int(row[0]), int(row[1]), float(row[2]), float(row[3]))


@dataclass(frozen=True)
class Refusal:
    """A feedback the incident stage refused, and why."""

    incident_id: str
    feedback_id: str
    action: str
    actor: str
    reason: str
    received_at: datetime


def refusal_of(payload_b64: str, reason: str, received_at: datetime) -> Refusal | None:
    """The refused feedback in a dead letter's payload; None when it is not a feedback.

    >>> from datetime import UTC
    >>> at = datetime(2026, 11, 22, tzinfo=UTC)
    >>> body = {"incident_id": "a" * 32, "feedback_id": "f1", "action": "close", "actor": "ana"}
    >>> payload = base64.b64encode(json.dumps(body).encode()).decode()
    >>> refusal_of(payload, "close needs a reason", at).action
    'close'
    >>> wrapped = {"feedback": body, "alert": None, "tick": None}  # as the stage reads it
    >>> payload = base64.b64encode(json.dumps(wrapped).encode()).decode()
    >>> refusal_of(payload, "close needs a reason", at).feedback_id
    'f1'
    >>> refusal_of("AA==", "not JSON", at) is None
    True
    """
    try:
        found = json.loads(base64.b64decode(payload_b64, validate=True))
    except (binascii.Error, ValueError):
        return None
    if isinstance(found, dict) and isinstance(found.get("feedback"), dict):
        found = found["feedback"]  # the stage's own input (IncidentInput) wraps the feedback
    if not isinstance(found, dict) or not {"incident_id", "feedback_id", "action"} <= set(found):
        return None
    return Refusal(
        incident_id=str(found["incident_id"]),
        feedback_id=str(found["feedback_id"]),
        action=str(found["action"]),
        actor=str(found.get("actor", "")),
        reason=reason,
        received_at=received_at,
    )


def refusals(conn: Conn, after: datetime, limit: int = 200) -> list[Refusal]:
    """The feedback the incident stage refused after ``after``, oldest first."""
    rows = conn.execute(
        "SELECT payload_b64, reason, received_at FROM deadletters "
        "WHERE stage = 'incidents' AND received_at > %s ORDER BY received_at LIMIT %s",
        (after, limit),
    ).fetchall()
    found = (refusal_of(payload, reason, at) for payload, reason, at in rows)
    return [r for r in found if r is not None]
