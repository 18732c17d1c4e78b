"""The one sink interface, ``write(batch)`` and ``close()``, and the helpers sinks share.

Every write is one transaction and idempotent: the same batch written twice stores once, so a
replayed Kafka message changes nothing. A database that does not answer raises
:class:`SinkUnavailable` (a :class:`~cityvitals.stage.Transient`): nothing of the batch was
committed and the runner retries it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, NamedTuple, Protocol, TypeVar

import psycopg
import psycopg.errors
from psycopg.adapt import Dumper
from psycopg.pq import Format

from cityvitals.stage import Transient

__all__ = ["Conflict", "Connection", "CopySink", "Cursor", "Sink", "SinkUnavailable", "SqlSink"]

T_contra = TypeVar("T_contra", contravariant=True)

Connection = psycopg.Connection[tuple[Any, ...]]
Cursor = psycopg.Cursor[tuple[Any, ...]]


class SinkUnavailable(Transient):
    """The database refused or dropped a batch; nothing of it was committed. Retry later."""

    def __init__(self, table: str, rows: int, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"writing {rows} rows to {table} failed: {detail}", retry_after)
        self.table = table
        self.rows = rows


class Conflict(NamedTuple):
    """An item whose row's key was stored already with other values: the stored values stay,
    and the item is kept as a dead letter with ``reason`` (a replay repeats the values)."""

    item: Any
    reason: str


class Sink(Protocol[T_contra]):
    """Where one kind of item goes. ``table`` names it in metrics and logs."""

    table: str

    def write(self, batch: Sequence[T_contra]) -> int:
        """Write all items in one transaction; returns the rows that were new."""
        ...

    def close(self) -> None:
        """Release the connection; safe to call more than once."""
        ...


class SqlSink:
    """A sink that turns items into rows and runs ``statement`` once per row
    (``executemany``) in one transaction. Subclasses give ``table``, ``statement`` and
    :meth:`rows`; :meth:`written` says what the write returns (the new rows by default)."""

    table: str
    statement: str

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def rows(self, batch: Sequence[Any]) -> Iterable[tuple[object, ...]]:
        raise NotImplementedError

    def execute(self, cur: Cursor, batch: Sequence[Any], rows: list[tuple[object, ...]]) -> int:
        cur.executemany(self.statement, rows)
        return cur.rowcount

    def write(self, batch: Sequence[Any]) -> int:
        if not batch:
            return 0
        rows = list(self.rows(batch))
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                return self.execute(cur, batch, rows)
        except psycopg.OperationalError as exc:
            raise SinkUnavailable(self.table, len(rows), str(exc).strip()) from exc

    def close(self) -> None:
        self.conn.close()


TEXT_ARRAY_OID = 1009
TEXT_OID = 25


@lru_cache(maxsize=65536)
def text_array(items: tuple[str, ...]) -> bytes:
    """A one-dimensional ``text[]`` in PostgreSQL's binary format (``array_send``): the
    number of dimensions, a has-nulls flag, the element type, the length and lower bound
    (1), then each element's byte length and UTF-8 bytes. Kept per value: a place path
    repeats on every row of its devices, and psycopg's own array dumper (Python) was two
    thirds of a reading row's COPY time.
    """
    if not items:
        return struct.pack("!iiI", 0, 0, TEXT_OID)
    parts = [struct.pack("!iiIii", 1, 0, TEXT_OID, len(items), 1)]
    for item in items:
        data = item.encode()
        parts.append(struct.pack("!i", len(data)))
        parts.append(data)
    return b"".join(parts)


class TextArrayDumper(Dumper):
    """Binary ``text[]`` for COPY columns typed ``text[]`` (``Copy.set_types``), from a
    tuple or list of strings, through :func:`text_array`."""

    format = Format.BINARY
    oid = TEXT_ARRAY_OID

    def dump(self, obj: Any) -> bytes:
        return text_array(tuple(obj))


class CopySink(SqlSink):
    """COPY (binary) straight into the table while every row is new (the usual case); when
    a row is already stored (a replay) that COPY fails on the table's natural key, only its
    savepoint rolls back, and the batch goes through a session-local staging table and
    ``INSERT ... ON CONFLICT DO NOTHING`` instead. After a conflict the staging path is kept
    until a batch is all new again (replays come in runs). A staged row whose key was stored
    with other values (a device that sent a second value for one instant) is no replay: with
    ``compared`` set it is one of the write's :attr:`conflicts`, for the runner to dead-letter.
    Subclasses give ``columns``,
    ``types`` and :meth:`rows`, which yields each row as it is copied: a batch's rows are
    never all held at once, so they die young and give the garbage collector nothing to
    promote (holding a batch's rows cost about 8 % more of the sink's CPU)."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    key: tuple[str, ...] = ()
    """The table's natural key, whose columns start ``columns``."""
    compared: tuple[str, ...] = ()
    """Columns a row whose key is stored already must repeat to be a replay; one that differs
    is a :class:`Conflict` (:meth:`conflict` says why). Empty: not checked."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self.conflicts: list[Conflict] = []
        """The last write's conflicts."""
        # Only where the column type is given (COPY after set_types), never for parameters.
        conn.adapters.register_dumper(None, TextArrayDumper)
        cols = ", ".join(self.columns)
        stage = f"_stage_{self.table}"
        self._create = (
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
            f"(LIKE {self.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        self._direct = f"COPY {self.table} ({cols}) FROM STDIN (FORMAT BINARY)"
        self._copy = f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)"
        self.statement = (
            f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING"
        )
        self.replaying = False
        """Whether the last batch held rows already stored: then the next goes via staging."""
        on = " AND ".join(f"t.{c} = s.{c}" for c in self.key)
        new, old = (", ".join(f"{t}.{c}" for c in self.compared) for t in ("s", "t"))
        # Each staged row looks its stored one up by the key's index: a plain join the planner
        # may do by scanning the table, which grows, for a batch of a few hundred rows (the
        # LIMIT keeps the subquery from being merged into such a join; the key is unique).
        self._differs = (
            f"SELECT {', '.join(f's.{c}' for c in self.key)}, {new}, {old} FROM {stage} s "
            f"CROSS JOIN LATERAL (SELECT {', '.join(self.compared)} FROM {self.table} t "
            f"WHERE {on} LIMIT 1) t WHERE ({new}) IS DISTINCT FROM ({old})"
            if self.compared
            else ""
        )

    def conflict(self, batch: Sequence[Any], row: tuple[Any, ...]) -> Conflict:
        """The conflict of ``row`` (its key, then its ``compared`` values as staged, then as
        stored): the item of ``batch`` it came from, and why it is refused."""
        raise NotImplementedError

    def rows(self, batch: Sequence[Any]) -> Iterator[tuple[object, ...]]:
        raise NotImplementedError

    def _copy_rows(self, cur: Cursor, statement: str, batch: Sequence[Any]) -> int:
        count = 0
        with cur.copy(statement.encode()) as copy:
            copy.set_types(list(self.types))
            for row in self.rows(batch):
                copy.write_row(row)
                count += 1
        return count

    def write(self, batch: Sequence[Any]) -> int:
        self.conflicts = []
        if not batch:
            return 0
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                if not self.replaying:
                    try:
                        with self.conn.transaction():
                            return self._copy_rows(cur, self._direct, batch)
                    except psycopg.errors.UniqueViolation:
                        pass
                cur.execute(self._create.encode())
                count = self._copy_rows(cur, self._copy, batch)
                cur.execute(self.statement.encode())
                new = cur.rowcount
                self.replaying = new < count
                if self.replaying and self.compared:
                    cur.execute(self._differs.encode())
                    self.conflicts = [self.conflict(batch, row) for row in cur.fetchall()]
                return new
        except psycopg.OperationalError as exc:
            raise SinkUnavailable(self.table, len(batch), str(exc).strip()) from exc
