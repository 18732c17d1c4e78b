"""``users``: who may call the API, with a role, a place scope and a token kept as a hash.

Tokens are ``secrets.token_urlsafe(32)`` (32 random bytes): SHA-256 of the token is enough to
store it (no dictionary reaches a random 256-bit value, so no salt or slow hash is needed).
A token is found by its hash and then compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from device_registry.access import Role, User
from device_registry.repositories.audit import Cursor

__all__ = [
    "UserRow",
    "disable",
    "find_by_name",
    "find_by_token",
    "hash_token",
    "insert",
    "new_token",
    "rows",
    "set_token",
]

COLUMNS = "user_id, name, role, scope, department, created_at, disabled_at"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class UserRow:
    """A user as stored (without the token's hash)."""

    user: User
    created_at: datetime
    disabled_at: datetime | None


def _row(r: tuple[object, ...]) -> UserRow:
    user_id, name, role, scope, department, created_at, disabled_at = r
    user = User(str(user_id), str(name), Role(str(role)), tuple(scope), department)  # type: ignore[arg-type]
    return UserRow(user, created_at, disabled_at)  # type: ignore[arg-type]


def insert(cur: Cursor, user: User, token: str) -> None:
    cur.execute(
        "INSERT INTO users (user_id, name, role, scope, department, token_hash) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (
            user.user_id,
            user.name,
            user.role.value,
            list(user.scope),
            user.department,
            hash_token(token),
        ),
    )


def rows(cur: Cursor) -> list[UserRow]:
    return [_row(r) for r in cur.execute(f"SELECT {COLUMNS} FROM users ORDER BY name")]


def find_by_name(cur: Cursor, name: str) -> UserRow | None:
    row = cur.execute(f"SELECT {COLUMNS} FROM users WHERE name = %s", (name,)).fetchone()
    return None if row is None else _row(row)


def find_by_token(cur: Cursor, token: str) -> User | None:
    """The enabled user whose token this is, else None."""
    wanted = hash_token(token)
    row = cur.execute(
        f"SELECT {COLUMNS}, token_hash FROM users WHERE token_hash = %s AND disabled_at IS NULL",
        (wanted,),
    ).fetchone()
    if row is None or not hmac.compare_digest(str(row[-1]), wanted):
        return None
    return _row(row[:-1]).user


def disable(cur: Cursor, name: str) -> bool:
    cur.execute(
        "UPDATE users SET disabled_at = now() WHERE name = %s AND disabled_at IS NULL", (name,)
    )
    return cur.rowcount == 1


def set_token(cur: Cursor, name: str, token: str) -> bool:
    cur.execute("UPDATE users SET token_hash = %s WHERE name = %s", (hash_token(token), name))
    return cur.rowcount == 1


def move_scopes(cur: Cursor, old: list[str], new: list[str]) -> list[tuple[UserRow, UserRow]]:
    """Every user whose scope is at or under ``old`` now has it at or under ``new`` (a place
    moved with its subtree); returns each changed user before and after."""
    n = len(old)
    before = [
        _row(r)
        for r in cur.execute(
            f"SELECT {COLUMNS} FROM users WHERE cardinality(scope) >= %s AND scope[1:%s] = %s",
            (n, n, old),
        ).fetchall()
    ]
    cur.execute(
        "UPDATE users SET scope = %s || scope[%s:] WHERE cardinality(scope) >= %s"
        " AND scope[1:%s] = %s",
        (new, n + 1, n, n, old),
    )
    return [(b, replace(b, user=replace(b.user, scope=(*new, *b.user.scope[n:])))) for b in before]


def set_scope(cur: Cursor, name: str, scope: Sequence[str]) -> bool:
    cur.execute("UPDATE users SET scope = %s WHERE name = %s", (list(scope), name))
    return cur.rowcount == 1
