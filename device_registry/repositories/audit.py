"""``audit_log``: who changed what, before and after; written in the change's transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

__all__ = ["AuditEntry", "Cursor", "entries", "record", "record_many"]

Cursor = psycopg.Cursor[Any]

INSERT = (
    "INSERT INTO audit_log (actor, action, entity, entity_id, before, after) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def _json(model: Any) -> Jsonb | None:
    if model is None:
        return None
    if isinstance(model, dict):
        return Jsonb(json.loads(json.dumps(model, default=str)))
    if is_dataclass(model) and not isinstance(model, type):  # a user, say
        return Jsonb(json.loads(json.dumps(asdict(model), default=str)))
    return Jsonb(json.loads(model.model_dump_json()))


def record(
    cur: Cursor, actor: str, action: str, entity: str, entity_id: str, before: Any, after: Any
) -> None:
    cur.execute(INSERT, (actor, action, entity, entity_id, _json(before), _json(after)))


def record_many(
    cur: Cursor, actor: str, action: str, entity: str, changes: Sequence[tuple[str, Any, Any]]
) -> None:
    """One entry per (entity id, before, after)."""
    cur.executemany(INSERT, [(actor, action, entity, i, _json(b), _json(a)) for i, b, a in changes])


def entries(
    cur: Cursor,
    entity: str | None,
    entity_id: str | None,
    limit: int,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: int = 0,
) -> list[AuditEntry]:
    """Newest first (``offset`` of them skipped), optionally of one entity kind and id, by one
    actor (as recorded, or a user's name without the ``(role)`` recorded after it, or an
    admin's who acted for someone: ``ana (via bridge (admin))`` is found as ``ana`` and as
    ``bridge``), at or after ``since`` and before ``until``."""
    where, params = ["true"], []
    for clause, value in (
        ("entity = %s", entity),
        ("entity_id = %s", entity_id),
        (
            "%s IN (actor, split_part(actor, ' (', 1), "
            "split_part(split_part(actor, ' (via ', 2), ' (', 1))",
            actor,
        ),
        ("at >= %s", since),
        ("at < %s", until),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    rows = cur.execute(
        f"SELECT at, actor, action, entity, entity_id, before, after FROM audit_log "
        f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT {int(limit)} "
        f"OFFSET {int(offset)}".encode(),
        params,
    ).fetchall()
    return [AuditEntry(*r) for r in rows]
