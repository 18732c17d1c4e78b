"""Reads for the duty officer's console: the readings of an incident's devices around the time
it opened (:func:`readings_around`), and the feedback the incident stage refused
(:func:`refusals`). The sinks write the tables (:class:`sinks.postgres.ReadingSink`,
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

__all__ = [
    "AROUND",
    "OutOfRange",
    "Refusal",
    "SeriesPoint",
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
