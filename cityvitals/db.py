"""PostgreSQL connections and the versioned, re-runnable schema migrations, for both flavours.

A schema is either ``timescale`` (the server has the TimescaleDB extension: hypertables,
continuous aggregates, compression and retention policies) or ``plain`` (plain PostgreSQL:
native partitioning by day, BRIN, roll-up tables kept by :mod:`sinks.maintenance`). The
flavour is decided when a schema is first migrated and recorded in it (``schema_flavour``);
migrating it later on a server of the other flavour is refused (:class:`FlavourMismatch`).

Migrations are the SQL files in ``cityvitals/migrations``:

- ``NNNN_name.sql`` runs in every flavour;
- ``NNNN_name.timescale.sql`` / ``NNNN_name.plain.sql`` run only in that flavour, after the
  common file of the same version if there is one. One version is one step: its files run in
  one transaction and are recorded once in ``schema_migrations`` (with the flavour that ran).

Running :func:`migrate` again applies only what is new. A transaction-level advisory lock on
the schema's name keeps two processes that start together from applying a step twice.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from typing import Literal, get_args

import psycopg
from psycopg import sql

from cityvitals.settings import Settings

__all__ = [
    "FLAVOURS",
    "DatabaseUnavailable",
    "Flavour",
    "FlavourMismatch",
    "FlavourUnavailable",
    "Migration",
    "connect",
    "detect_flavour",
    "flavour",
    "migrate",
    "migrations",
]

log = logging.getLogger("cityvitals.db")

Flavour = Literal["timescale", "plain"]
FLAVOURS: tuple[Flavour, ...] = get_args(Flavour)
Connection = psycopg.Connection[tuple[object, ...]]

NO_TIMESCALE = "the server has no timescaledb extension"
MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.(timescale|plain))?\.sql$")


class DatabaseUnavailable(RuntimeError):
    """The database did not accept a connection; the caller may retry."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the database is unavailable: {detail}")
        self.detail = detail


class FlavourMismatch(RuntimeError):
    """The schema was created under one flavour and would now be migrated under the other."""

    def __init__(self, schema: str, recorded: Flavour, wanted: Flavour, why: str) -> None:
        super().__init__(
            f"schema {schema!r} was created for {_describe(recorded)} but would now be migrated "
            f"for {_describe(wanted)} ({why}); a schema is not converted between the two: "
            f"migrate into a new schema (CITYVITALS_DATABASE_SCHEMA) and copy the data over, "
            f"or run against a server of the schema's flavour"
        )
        self.schema = schema
        self.recorded = recorded
        self.wanted = wanted


class FlavourUnavailable(RuntimeError):
    """TimescaleDB was asked for and the server cannot provide it."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"TimescaleDB is not available on this server: {detail}")
        self.detail = detail


def _describe(flavour: Flavour) -> str:
    return "TimescaleDB" if flavour == "timescale" else "plain PostgreSQL"


@dataclass(frozen=True)
class Migration:
    """One step: the SQL of its common file and of its flavoured files (``None`` when absent)."""

    version: int
    name: str
    sql: str
    flavoured: tuple[tuple[Flavour, str], ...] = ()

    def sql_for(self, flavour: Flavour) -> str:
        return "\n".join([self.sql, *(text for f, text in self.flavoured if f == flavour)])

    def ran_for(self, flavour: Flavour) -> Flavour | None:
        """The flavour recorded for this step: ``None`` when only common SQL ran."""
        return flavour if any(f == flavour for f, _ in self.flavoured) else None


def migrations() -> list[Migration]:
    """Every step, by version; a version's files must share one name."""
    files: dict[int, list[tuple[str, Flavour | None, str]]] = defaultdict(list)
    for entry in resources.files("cityvitals.migrations").iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            kind: Flavour | None = match[3]  # type: ignore[assignment]
            files[int(match[1])].append((match[2], kind, entry.read_text()))
    steps = []
    for version, parts in sorted(files.items()):
        names = {name for name, _, _ in parts}
        if len(names) != 1:
            raise ValueError(f"migration {version:04d} has files of different names: {names}")
        common = [text for _, kind, text in parts if kind is None]
        flavoured = tuple(sorted((kind, text) for _, kind, text in parts if kind is not None))
        steps.append(Migration(version, names.pop(), common[0] if common else "", flavoured))
    return steps


def connect(settings: Settings, *, autocommit: bool = True) -> Connection:
    """A connection whose search path is the deployment's schema, then ``public``.

    Autocommit by default: every write runs inside an explicit ``conn.transaction()`` block.
    The search path is set by a statement, not by a startup option, because some servers
    ignore startup options (PGlite) or refuse them (PgBouncer).
    """
    try:
        conn: Connection = psycopg.connect(
            settings.database_url.get_secret_value(), autocommit=autocommit, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc).strip()) from exc
    try:
        conn.execute(
            "SELECT pg_catalog.set_config('search_path', %s, false)",
            (f"{sql.Identifier(settings.database_schema).as_string(conn)}, public",),
        )
        if not autocommit:
            conn.commit()
    except psycopg.OperationalError as exc:
        conn.close()
        raise DatabaseUnavailable(str(exc).strip()) from exc
    return conn


def detect_flavour(conn: Connection) -> tuple[Flavour, str]:
    """What the server offers, and why: ``timescale`` when the community (Timescale-licensed)
    TimescaleDB is installed in the database, or is available and loaded so that ``CREATE
    EXTENSION`` can install it (into ``public``); ``plain`` otherwise, with the reason.

    Checked before anything is tried: a server without ``timescaledb`` in
    ``shared_preload_libraries`` ends the connection on ``CREATE EXTENSION``, and the
    Apache-licensed build (``timescaledb.license = 'apache'``) has no compression and no
    continuous aggregates. Should ``CREATE EXTENSION`` still fail, the connection is not rolled
    back when it is gone: call this on a connection of its own (as :func:`migrate` does).
    Needs an autocommit connection outside a transaction, as :func:`connect` gives.
    """
    installed = _one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    available = _one(
        conn, "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if installed is None and available is None:
        return "plain", NO_TIMESCALE
    version = installed or available
    licence = _one(conn, "SELECT current_setting('timescaledb.license', true)")
    if licence == "apache":
        return "plain", _apache(version)
    if installed is not None:
        return "timescale", f"timescaledb {installed} is installed"
    preload = str(_one(conn, "SHOW shared_preload_libraries") or "")
    preloaded = "timescaledb" in {name.strip() for name in preload.split(",")}
    if not preloaded and not _loads_extensions_itself(conn):
        return "plain", (
            f"timescaledb {version} is available but not in shared_preload_libraries "
            f"({preload or 'empty'}): CREATE EXTENSION would end the connection. To use it, "
            "set shared_preload_libraries = 'timescaledb' in postgresql.conf and restart "
            "the server"
        )
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public")
    except psycopg.Error as exc:
        detail = str(exc).strip().replace("\n", " ")
        if conn.closed or conn.broken:
            return "plain", (
                f"timescaledb {version} is available but CREATE EXTENSION ended the "
                f"connection ({detail}); is timescaledb in shared_preload_libraries?"
            )
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        return "plain", f"timescaledb {version} is available but CREATE EXTENSION failed: {detail}"
    if _one(conn, "SELECT current_setting('timescaledb.license', true)") == "apache":
        return "plain", _apache(version)
    return "timescale", f"timescaledb {version} was installed now"


def _one(conn: Connection, query: str) -> str | None:
    row = conn.execute(query.encode()).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _apache(version: str | None) -> str:
    return (
        f"timescaledb {version} is the Apache-licensed build (timescaledb.license = 'apache'), "
        "which has no compression and no continuous aggregates; set timescaledb.license = "
        "'timescale' on the server to use them"
    )


def _loads_extensions_itself(conn: Connection) -> bool:
    """PGlite (PostgreSQL compiled to WebAssembly) loads an extension's library on
    ``CREATE EXTENSION`` without ``shared_preload_libraries``."""
    return "emscripten" in (_one(conn, "SELECT version()") or "").lower()


def _recorded(conn: Connection) -> Flavour | None:
    if conn.execute("SELECT to_regclass('schema_flavour')").fetchone() in (None, (None,)):
        return None
    row = conn.execute("SELECT flavour FROM schema_flavour").fetchone()
    return row[0] if row else None  # type: ignore[return-value]


def flavour(target: Connection | Settings) -> Flavour:
    """The flavour of the connection's schema (of the settings' schema): the one recorded by
    :func:`migrate`, or for a schema not migrated yet what :func:`detect_flavour` finds."""
    if isinstance(target, Settings):
        with connect(target) as conn:
            return flavour(conn)
    return _recorded(target) or detect_flavour(target)[0]


def _prepare(conn: Connection, schema: str) -> None:
    with conn.transaction():
        _lock(conn, schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # Which flavoured files a step ran (NULL: only its common file; or applied before
        # flavours existed).
        conn.execute(
            "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS flavour text"
            " CHECK (flavour IN ('timescale', 'plain'))"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_flavour ("
            " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),"
            " flavour text NOT NULL CHECK (flavour IN ('timescale', 'plain')),"
            " reason text NOT NULL,"
            " decided_at timestamptz NOT NULL DEFAULT now())"
        )


def _lock(conn: Connection, schema: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cityvitals.migrate:{schema}",))


def _probe(settings: Settings) -> tuple[Flavour, str]:
    """:func:`detect_flavour` on a connection of its own: CREATE EXTENSION may end it."""
    with connect(settings) as probe:
        return detect_flavour(probe)


def _decide(
    conn: Connection, schema: str, want: Flavour | Literal["auto"], server: Flavour, why: str
) -> Flavour:
    if want == "timescale" and server != "timescale":
        raise FlavourUnavailable(why)
    chosen: Flavour = server if want == "auto" else want
    if want == "plain" and server == "timescale":
        why = f"plain was asked for ({why})"
    with conn.transaction():
        _lock(conn, schema)
        recorded = _recorded(conn)
        if recorded is None:
            conn.execute(
                "INSERT INTO schema_flavour (flavour, reason) VALUES (%s, %s)", (chosen, why)
            )
            fell_back = chosen == "plain" and why != NO_TIMESCALE
            log.log(
                logging.WARNING if fell_back else logging.INFO,
                "schema %s: %s (%s)",
                schema,
                _describe(chosen),
                why,
            )
            return chosen
        if recorded != chosen and not _flavoured_steps(conn):
            # Recorded, but no step of that flavour ever ran (one failed and was rolled
            # back, e.g. on the Apache build): the schema is still free to choose.
            conn.execute("UPDATE schema_flavour SET flavour = %s, reason = %s", (chosen, why))
            log.warning(
                "schema %s: %s after all, no %s step was applied (%s)",
                schema,
                _describe(chosen),
                _describe(recorded),
                why,
            )
            return chosen
    if recorded != chosen:
        raise FlavourMismatch(schema, recorded, chosen, why)
    return chosen


def _flavoured_steps(conn: Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM schema_migrations WHERE flavour IS NOT NULL"
    ).fetchone()
    return bool(row and row[0])


def migrate(settings: Settings, *, want: Flavour | Literal["auto"] = "auto") -> list[str]:
    """Apply the migrations not applied yet; returns their names.

    ``want`` picks the flavour of a new schema: ``auto`` (TimescaleDB when the server has it),
    or one of :data:`FLAVOURS` (``timescale`` raises :class:`FlavourUnavailable` when the
    server cannot provide it). An existing schema keeps its flavour: a different one raises
    :class:`FlavourMismatch`.
    """
    schema = settings.database_schema
    applied_now = []
    server, why = _probe(settings)  # before the session that migrates (PGlite has one only)
    with connect(settings) as conn:
        _prepare(conn, schema)
        chosen = _decide(conn, schema, want, server, why)
        for migration in migrations():
            with conn.transaction():
                _lock(conn, schema)
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
                ).fetchone()
                if done:
                    continue
                text = migration.sql_for(chosen)
                if text.strip():
                    conn.execute(text.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, flavour) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.ran_for(chosen)),
                )
                applied_now.append(f"{migration.version:04d}_{migration.name}")
    return applied_now
