"""``mqtt_credentials``: each device's and service's MQTT login, hashed (never in clear)."""

from __future__ import annotations

from collections.abc import Sequence

from device_registry.repositories.audit import Cursor

__all__ = ["enabled", "issue", "rotate", "service_login_among", "set_enabled", "set_service"]


def service_login_among(cur: Cursor, usernames: Sequence[str]) -> str | None:
    """One of ``usernames`` that is a service's login, if any."""
    row = cur.execute(
        "SELECT username FROM mqtt_credentials "
        "WHERE role <> 'device' AND username = ANY(%s) LIMIT 1",
        (list(usernames),),
    ).fetchone()
    return None if row is None else str(row[0])


def issue(cur: Cursor, logins: Sequence[tuple[str, str, bool]]) -> None:
    """Device logins as (username, password hash, enabled); a service's login stays its own."""
    cur.executemany(
        "INSERT INTO mqtt_credentials (username, password_hash, role, enabled) "
        "VALUES (%s, %s, 'device', %s) ON CONFLICT (username) DO UPDATE SET "
        "password_hash = EXCLUDED.password_hash, enabled = EXCLUDED.enabled, "
        "updated_at = now() WHERE mqtt_credentials.role = 'device'",
        logins,
    )


def set_enabled(cur: Cursor, username: str, enabled: bool) -> None:
    cur.execute(
        "UPDATE mqtt_credentials SET enabled = %s, updated_at = now() WHERE username = %s",
        (enabled, username),
    )


def rotate(cur: Cursor, username: str, password_hash: str) -> bool:
    """A device's new hash; False if no device has that login."""
    cur.execute(
        "UPDATE mqtt_credentials SET password_hash = %s, updated_at = now() "
        "WHERE username = %s AND role = 'device'",
        (password_hash, username),
    )
    return cur.rowcount == 1


def set_service(cur: Cursor, username: str, password_hash: str) -> None:
    cur.execute(
        "INSERT INTO mqtt_credentials (username, password_hash, role) "
        "VALUES (%s, %s, 'service') ON CONFLICT (username) DO UPDATE SET "
        "password_hash = EXCLUDED.password_hash, enabled = true, updated_at = now()",
        (username, password_hash),
    )


def enabled(cur: Cursor) -> list[tuple[str, str]]:
    """(username, hash) of every login that works: what the broker's password file holds."""
    rows = cur.execute(
        "SELECT username, password_hash FROM mqtt_credentials WHERE enabled"
    ).fetchall()
    return [(str(u), str(h)) for u, h in rows]
