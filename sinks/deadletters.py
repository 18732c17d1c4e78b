"""Reading the stored dead letters back: what each stage refused, why, and the refused bytes
(``cityvitals deadletters``). The sinks write them (:mod:`sinks.postgres`)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cityvitals.contracts import DeadLetter

__all__ = ["LetterFilter", "StoredLetter", "list_letters", "shown_payload"]

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters :func:`list_letters` gives; every field narrows (None: any)."""

    stage: str | None = None
    device: str | None = None
    since: datetime | None = None
    reason: str | None = None
    """Only those whose reason holds this text (any case)."""
    limit: int = 50


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as stored, with where it is kept on the ``deadletter`` topic."""

    letter: DeadLetter
    kept_at: str
    """``topic[partition]@offset`` of the letter on Kafka."""


def list_letters(conn: Conn, where: LetterFilter) -> list[StoredLetter]:
    """The dead letters ``where`` selects, the newest first."""
    asked: list[tuple[str, Any]] = [
        ("stage = %s", where.stage),
        ("device_id = %s", where.device),
        ("received_at >= %s", where.since),
        ("strpos(lower(reason), lower(%s)) > 0", where.reason),
    ]
    clauses = [clause for clause, value in asked if value is not None]
    params = [value for _clause, value in asked if value is not None]
    query = "SELECT * FROM deadletters"
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    query += " ORDER BY received_at DESC, kafka_topic, kafka_partition, kafka_offset DESC LIMIT %s"
    params.append(where.limit)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query.encode(), params).fetchall()
    return [
        StoredLetter(
            letter=DeadLetter(
                stage=row["stage"],
                reason=row["reason"],
                source=row["source"],
                device_id=row["device_id"],
                payload_b64=row["payload_b64"],
                received_at=row["received_at"],
            ),
            kept_at=f"{row['kafka_topic']}[{row['kafka_partition']}]@{row['kafka_offset']}",
        )
        for row in rows
    ]


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
