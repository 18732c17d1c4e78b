"""Reading the stored dead letters back: what each stage refused, why, and the refused bytes
(``cityvitals deadletters``), and the messages the notifier still owes a webhook (``cityvitals
resend``, ``cityvitals audit``). The sinks write them (:mod:`sinks.postgres`)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import ValidationError

from cityvitals.contracts import CameraEvent, DeadLetter, Reading

__all__ = [
    "REPLAYED",
    "LetterFilter",
    "LetterKey",
    "Owed",
    "Replayable",
    "StoredLetter",
    "count_owed",
    "list_letters",
    "mark_replayed",
    "mark_resent",
    "owed",
    "replayable",
    "shown_payload",
]

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters :func:`list_letters` gives; every field narrows (None: any)."""

    stage: str | None = None
    device: str | None = None
    since: datetime | None = None
    reason: str | None = None
    """Only those whose reason holds this text (any case)."""
    cause: str | None = None
    """Only those counted as this (:attr:`DeadLetter.cause`)."""
    limit: int = 50


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as stored, with where it is kept on the ``deadletter`` topic."""

    letter: DeadLetter
    kept_at: str
    """``topic[partition]@offset`` of the letter on Kafka."""
    replayed_at: datetime | None = None
    """When its item was put back on ``readings.raw`` (``cityvitals replay``), if it was."""
    replayed_by: str | None = None


LetterKey = tuple[str, int, int, datetime]
"""A stored dead letter's key: its Kafka position and its time of receipt."""

REPLAYED = (
    "EXISTS (SELECT 1 FROM deadletters_replayed r WHERE (r.kafka_topic, r.kafka_partition,"
    " r.kafka_offset, r.received_at) = (d.kafka_topic, d.kafka_partition, d.kafka_offset,"
    " d.received_at))"
)
"""Whether the dead letter ``d`` was replayed (SQL)."""


def _selected(where: LetterFilter) -> tuple[list[str], list[Any]]:
    """The SQL clauses on the dead letters ``d`` that ``where`` asks for, and their values."""
    asked: list[tuple[str, Any]] = [
        ("d.stage = %s", where.stage),
        ("d.device_id = %s", where.device),
        ("d.received_at >= %s", where.since),
        ("strpos(lower(d.reason), lower(%s)) > 0", where.reason),
        ("d.cause = %s", where.cause),
    ]
    clauses = [clause for clause, value in asked if value is not None]
    return clauses, [value for _clause, value in asked if value is not None]


def list_letters(conn: Conn, where: LetterFilter) -> list[StoredLetter]:
    """The dead letters ``where`` selects, the newest first."""
    clauses, params = _selected(where)
    query = (
        "SELECT d.*, r.replayed_at, r.replayed_by FROM deadletters d"
        " LEFT JOIN deadletters_replayed r USING (kafka_topic, kafka_partition, kafka_offset,"
        " received_at)"
    )
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    query += (
        " ORDER BY d.received_at DESC, d.kafka_topic, d.kafka_partition, d.kafka_offset DESC"
        " LIMIT %s"
    )
    params.append(where.limit)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query.encode(), params).fetchall()
    return [
        StoredLetter(
            letter=_letter(row),
            kept_at=f"{row['kafka_topic']}[{row['kafka_partition']}]@{row['kafka_offset']}",
            replayed_at=row["replayed_at"],
            replayed_by=row["replayed_by"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Replayable:
    """A reading or camera event the stream stage refused, as it read it on ``readings.raw``."""

    key: LetterKey
    letter: DeadLetter
    item: Reading | CameraEvent


def replayable(conn: Conn, where: LetterFilter, raw_topic: str) -> tuple[list[Replayable], int]:
    """The stream stage's refusals of items of ``raw_topic`` that ``where`` selects and that
    were not replayed yet, the oldest first (a device's readings in the order they came); and
    how many more it selects that hold no item. A message that was no batch at all
    (``bad_batch``), or a letter stored before causes were kept, is not selected."""
    clauses, params = _selected(where)
    clauses += [
        "d.stage = 'streams'",
        "left(d.source, length(%s)) = %s",
        f"NOT {REPLAYED}",
        "d.cause IS NOT NULL AND left(d.cause, 4) <> 'bad_'",
    ]
    params += [raw_topic + "[", raw_topic + "["]
    query = (
        "SELECT d.* FROM deadletters d WHERE " + " AND ".join(clauses) + " ORDER BY"
        " d.received_at, d.kafka_topic, d.kafka_partition, d.kafka_offset LIMIT %s"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query.encode(), [*params, where.limit]).fetchall()
    found, unusable = [], 0
    for row in rows:
        payload = base64.b64decode(row["payload_b64"])
        try:
            doc = json.loads(payload)
            event = isinstance(doc, dict) and "camera_id" in doc
            item: Reading | CameraEvent = (
                CameraEvent.model_validate(doc) if event else Reading.model_validate(doc)
            )
        except (ValueError, ValidationError):
            unusable += 1
            continue
        key = (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"], row["received_at"])
        found.append(Replayable(key, _letter(row), item))
    return found, unusable


def mark_replayed(conn: Conn, keys: Sequence[LetterKey], by: str, at: datetime) -> None:
    """Record that the dead letters ``keys`` were replayed by ``by`` at ``at``."""
    with conn.cursor() as cur:
        cur.executemany(
            b"INSERT INTO deadletters_replayed VALUES (%s, %s, %s, %s, %s, %s)"
            b" ON CONFLICT DO NOTHING",
            [(*key, at, by) for key in keys],
        )


def _letter(row: dict[str, Any]) -> DeadLetter:
    """A stored dead letter, from its row."""
    return DeadLetter(
        stage=row["stage"],
        reason=row["reason"],
        cause=row["cause"],
        source=row["source"],
        device_id=row["device_id"],
        payload_b64=row["payload_b64"],
        received_at=row["received_at"],
    )


def shown_payload(payload_b64: str, width: int = 200) -> str:
    """The refused bytes for a person: as text when they are UTF-8, else as Python shows bytes;
    cut to ``width`` characters, saying how long they were.

    >>> shown_payload(base64.b64encode(b'{"seq": 1}').decode())
    '{"seq": 1}'
    >>> shown_payload(base64.b64encode(bytes([0xFF, 0x00])).decode())
    "b'\\\\xff\\\\x00'"
    >>> shown_payload(base64.b64encode(b"x" * 300).decode(), width=10)
    'xxxxxxxxxx... (300 bytes)'
    >>> shown_payload("not base64!")
    "(not base64: 'not base64!')"
    """
    try:
        raw = base64.b64decode(payload_b64, validate=True)
    except (binascii.Error, ValueError):
        return f"(not base64: {payload_b64[:width]!r})"
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = repr(raw)
    return text if len(text) <= width else f"{text[:width]}... ({len(raw)} bytes)"


# --- what the notifier owes -----------------------------------------------------------------

_OWED = """
    stage = 'notify' AND left(reason, 8) = 'webhook '
    AND NOT EXISTS (
        SELECT 1 FROM deadletters_resent r
        WHERE (r.kafka_topic, r.kafka_partition, r.kafka_offset, r.received_at)
            = (d.kafka_topic, d.kafka_partition, d.kafka_offset, d.received_at))
"""
"""A delivery the notifier gave up on (its reason names the webhook: a message that was not its
contract is not owed) whose message was not delivered since, nor forgotten."""

_URL = "split_part(substr(reason, 9), ': ', 1)"
"""The URL a notifier's reason names (``webhook <url>: <outcome>``; a public URL holds no
``": "``)."""

Key = tuple[str, int, int, datetime]
"""Where a dead letter is kept: its topic, partition, offset and time received."""


@dataclass(frozen=True)
class Owed:
    """A dispatch order or escalation a webhook never got: the notifier's dead letter of it."""

    letter: DeadLetter
    url: str
    """The URL as the reason names it (:func:`cityvitals.settings.public_url`: without a login
    or key; one receiver each, as the settings require)."""
    keys: tuple[Key, ...]
    """Its dead letters: one, or more when the notifier gave up on the same message and URL
    again (after a restart, or a resend that failed)."""


def owed(conn: Conn, since: datetime | None = None, holding: str | None = None) -> list[Owed]:
    """The messages the notifier gave up on, not delivered nor forgotten since, the oldest
    first, once per message (its bytes) and URL; ``holding``: only those whose bytes hold this
    text (an incident's id)."""
    query = f"SELECT *, {_URL} AS url FROM deadletters d WHERE {_OWED}"
    params: list[object] = []
    if since is not None:
        query += " AND received_at >= %s"
        params.append(since)
    if holding is not None:
        query += " AND position(convert_to(%s, 'UTF8') in decode(payload_b64, 'base64')) > 0"
        params.append(holding)
    query += " ORDER BY received_at, kafka_topic, kafka_partition, kafka_offset"
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query.encode(), params).fetchall()
    found: dict[tuple[str, str], Owed] = {}
    for row in rows:
        key: Key = (
            row["kafka_topic"],
            row["kafka_partition"],
            row["kafka_offset"],
            row["received_at"],
        )
        same = (row["payload_b64"], row["url"])
        earlier = found.get(same)
        if earlier is not None:
            found[same] = Owed(earlier.letter, earlier.url, (*earlier.keys, key))
            continue
        found[same] = Owed(_letter(row), row["url"], (key,))
    return list(found.values())


def count_owed(conn: Conn, since: datetime | None = None) -> int:
    """How many messages the notifier owes (each message and URL once, as :func:`owed`)."""
    query = f"SELECT count(DISTINCT (payload_b64, {_URL})) FROM deadletters d WHERE {_OWED}"
    params: Sequence[object] = ()
    if since is not None:
        query += " AND received_at >= %s"
        params = (since,)
    row = conn.execute(query.encode(), params).fetchone()
    return int(row[0]) if row else 0


def mark_resent(conn: Conn, owed: Owed, by: str, at: datetime, forgotten: bool = False) -> None:
    """Record that ``owed`` was delivered to its URL (or, ``forgotten``, given up on by hand)
    by ``by`` at ``at``: it is owed no more."""
    how = "forgotten" if forgotten else "delivered"
    with conn.cursor() as cur:
        cur.executemany(
            b"INSERT INTO deadletters_resent VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            b" ON CONFLICT DO NOTHING",
            [(*key, owed.url, at, by, how) for key in owed.keys],
        )
