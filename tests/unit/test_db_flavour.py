"""Which storage a server gets, from what a real TimescaleDB server answers that no server here
can: the library not preloaded, the Apache-licensed build, a CREATE EXTENSION that ends the
connection. A small fake connection answers the catalogue queries (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from cityvitals import db

SERVER = "PostgreSQL 15.13 (Debian 15.13-0+deb12u1) on x86_64-pc-linux-gnu"


@dataclass
class Rows:
    rows: list[tuple[Any, ...]]

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


@dataclass
class FakeServer:
    """A connection to a PostgreSQL 15 server with TimescaleDB 2.28 on its disk."""

    installed: str | None = None
    available: str | None = "2.28.1"
    preload: str = "timescaledb"
    licence: str | None = "timescale"
    create_ends_session: bool = False
    version: str = SERVER
    closed: bool = False
    broken: bool = False
    ran: list[str] = field(default_factory=list)

    def execute(self, query: str | bytes, params: Any = None) -> Rows:
        text = query.decode() if isinstance(query, bytes) else query
        if self.closed:
            raise psycopg.OperationalError("the connection is closed")
        self.ran.append(text)
        if "FROM pg_extension" in text:
            return Rows([(self.installed,)] if self.installed else [])
        if "pg_available_extensions" in text:
            return Rows([(self.available,)] if self.available else [])
        if "timescaledb.license" in text:
            loaded = "timescaledb" in self.preload or self.installed
            return Rows([(self.licence if loaded else None,)])
        if "shared_preload_libraries" in text:
            return Rows([(self.preload,)])
        if "version()" in text:
            return Rows([(self.version,)])
        if text.startswith("CREATE EXTENSION"):
            if self.create_ends_session:
                self.closed = self.broken = True
                raise psycopg.OperationalError(
                    "server closed the connection unexpectedly (FATAL: extension "
                    '"timescaledb" must be preloaded)'
                )
            self.installed = self.available
            return Rows([])
        raise AssertionError(f"unexpected query {text!r}")

    def rollback(self) -> None:
        raise AssertionError("rollback() on a connection that is gone")


def detect(server: FakeServer) -> tuple[str, str]:
    return db.detect_flavour(server)  # type: ignore[arg-type]


def test_timescaledb_not_preloaded_is_plain_and_create_extension_is_not_tried() -> None:
    server = FakeServer(preload="pg_stat_statements")
    flavour, why = detect(server)
    assert flavour == "plain"
    assert "shared_preload_libraries" in why and "restart" in why
    assert not [q for q in server.ran if q.startswith("CREATE EXTENSION")]


def test_a_create_extension_that_ends_the_connection_falls_back_without_a_rollback() -> None:
    server = FakeServer(create_ends_session=True)
    flavour, why = detect(server)
    assert flavour == "plain" and "ended the connection" in why


@pytest.mark.parametrize("installed", [None, "2.28.1"])
def test_the_apache_build_is_plain_with_the_reason(installed: str | None) -> None:
    server = FakeServer(installed=installed, licence="apache")
    flavour, why = detect(server)
    assert flavour == "plain"
    assert "Apache" in why and "no compression and no continuous aggregates" in why
    assert not [q for q in server.ran if q.startswith("CREATE EXTENSION")]


def test_the_community_build_preloaded_is_installed() -> None:
    server = FakeServer()
    assert detect(server) == ("timescale", "timescaledb 2.28.1 was installed now")
    assert detect(server) == ("timescale", "timescaledb 2.28.1 is installed")


def test_pglite_loads_the_library_itself() -> None:
    server = FakeServer(
        preload="", licence=None, version="PostgreSQL 17.5 ... compiled by emcc (Emscripten)"
    )
    assert detect(server)[0] == "timescale"


def test_the_storage_step_runs_its_common_file_before_the_flavours_own() -> None:
    """0004 creates the indicators table once, in its common file, for both flavours."""
    [storage] = [m for m in db.migrations() if m.version == 4]
    assert "CREATE TABLE indicators" in storage.sql
    for flavour in db.FLAVOURS:
        text = storage.sql_for(flavour)
        assert text.startswith(storage.sql) and text.strip() != storage.sql.strip()
        assert "CREATE TABLE indicators (" not in text[len(storage.sql) :]
        assert storage.ran_for(flavour) == flavour
