"""PostgreSQL connections and the versioned, re-runnable schema migrations.

Migrations are the SQL files in ``cityvitals/migrations`` named ``NNNN_name.sql``. Each runs
once, in its own transaction, inside the deployment's schema (``Settings.database_schema``),
and is recorded in ``schema_migrations``; running :func:`migrate` again applies only what is
new. A lock keeps two processes that start together from applying the same file twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from cityvitals.settings import Settings

__all__ = ["DatabaseUnavailable", "Migration", "connect", "migrate", "migrations"]

MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class DatabaseUnavailable(RuntimeError):
    """The database did not accept a connection; the caller may retry."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the database is unavailable: {detail}")
        self.detail = detail


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("cityvitals.migrations").iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def connect(
    settings: Settings, *, autocommit: bool = True
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection whose search path is the deployment's schema.

    Autocommit by default: every write runs inside an explicit ``conn.transaction()`` block.
    """
    try:
        return psycopg.connect(
            settings.database_url.get_secret_value(),
            autocommit=autocommit,
            options=f"-c search_path={settings.database_schema},public",
            connect_timeout=10,
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc).strip()) from exc


def migrate(settings: Settings) -> list[str]:
    """Apply the migrations not applied yet; returns their names."""
    schema = sql.Identifier(settings.database_schema)
    applied_now = []
    with connect(settings) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
                ).fetchone()
                if done:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied_now.append(f"{migration.version:04d}_{migration.name}")
    return applied_now
