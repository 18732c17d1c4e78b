"""What the storage upkeep works on: the roll-ups, the retention, the report, bucket arithmetic.

Shared by :mod:`sinks.maintenance` and its two flavours (:mod:`sinks.plain_upkeep`,
:mod:`sinks.timescale_upkeep`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

import psycopg

from cityvitals.data_classes import TABLES, capped, retention_cap
from cityvitals.db import Flavour
from cityvitals.settings import Settings

__all__ = [
    "DAY",
    "DEFAULT_RETENTION",
    "ORIGIN",
    "PARTITIONED",
    "RECORD_TABLES",
    "ROLLUPS",
    "Connection",
    "MaintenanceReport",
    "Retention",
    "Rollup",
    "bucket_ceil",
    "bucket_floor",
    "class_retention",
    "require_autocommit",
    "table_exists",
]

Connection = psycopg.Connection[tuple[object, ...]]

ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
"""Where buckets and day partitions are aligned: UTC midnight (``date_bin``'s origin)."""
DAY = timedelta(days=1)

PARTITIONED = {"readings": "ts", "camera_events": "ts", "indicators": "window_start"}
"""Plain flavour: the tables partitioned by day, and their time column (plus ``readings_1m``)."""

RECORD_TABLES = ("alerts", "incidents", "reports", "deadletters")
"""The tables of records the upkeep deletes row by row in batches once a data class's retention
is set (:mod:`sinks.record_retention`; ``alerts`` and ``incidents`` with their child tables),
unlike the time series above, which go by day partition or chunk."""


@dataclass(frozen=True)
class Retention:
    """How long each table keeps its rows (``None``: for ever). The defaults of the time series
    are the ones the TimescaleDB migration gives its retention policies
    (0004_storage.timescale.sql); the record tables (:data:`RECORD_TABLES`) keep their rows for
    ever unless their data class's retention is set."""

    readings: timedelta | None = timedelta(days=90)
    camera_events: timedelta | None = timedelta(days=90)
    indicators: timedelta | None = timedelta(days=400)
    readings_1m: timedelta | None = timedelta(days=90)
    readings_1h: timedelta | None = timedelta(days=730)
    readings_1d: timedelta | None = None
    indicators_1h: timedelta | None = timedelta(days=730)
    indicators_1d: timedelta | None = None
    alerts: timedelta | None = None
    incidents: timedelta | None = None
    reports: timedelta | None = None
    deadletters: timedelta | None = None

    def items(self) -> list[tuple[str, timedelta]]:
        """(table, retention) for every time-series table that has one (partitions, chunks)."""
        return [(name, age) for name, age in self._kept() if name not in RECORD_TABLES]

    def records(self) -> list[tuple[str, timedelta]]:
        """(table, retention) for every record table (:data:`RECORD_TABLES`) that has one."""
        return [(name, age) for name, age in self._kept() if name in RECORD_TABLES]

    def _kept(self) -> list[tuple[str, timedelta]]:
        kept = ((f.name, getattr(self, f.name)) for f in fields(self))
        return [(name, age) for name, age in kept if age is not None]


@dataclass(frozen=True)
class Rollup:
    """A roll-up table (plain) or continuous aggregate (TimescaleDB) and what it reads."""

    name: str
    width: timedelta
    source: str
    kind: str  # "readings_raw", "readings_rollup" or "indicators"


ROLLUPS = (
    Rollup("readings_1m", timedelta(minutes=1), "readings", "readings_raw"),
    Rollup("readings_1h", timedelta(hours=1), "readings_1m", "readings_rollup"),
    Rollup("readings_1d", DAY, "readings_1h", "readings_rollup"),
    Rollup("indicators_1h", timedelta(hours=1), "indicators", "indicators"),
    Rollup("indicators_1d", DAY, "indicators", "indicators"),
)
"""In refresh order: a roll-up comes after the one it reads."""


@dataclass
class MaintenanceReport:
    flavour: Flavour
    created: list[str] = field(default_factory=list)
    """Plain: day partitions created."""
    moved: dict[str, int] = field(default_factory=dict)
    """Plain: rows moved out of each table's DEFAULT partition into their day's partition."""
    dropped: list[str] = field(default_factory=list)
    """Day partitions (plain) or chunks (TimescaleDB) dropped by the retention."""
    deleted_rows: int = 0
    """Plain: rows past the retention deleted outside day partitions."""
    pruned: dict[str, int] = field(default_factory=dict)
    """Both flavours: rows deleted from each record table and its child tables by its data
    class's retention (only the tables whose class has one set)."""
    refreshed: dict[str, int | None] = field(default_factory=dict)
    """Roll-ups refreshed: rows written (plain) or ``None`` (TimescaleDB does not say)."""
    compressed: list[str] = field(default_factory=list)
    """TimescaleDB: chunks compressed here because no scheduler runs the policies."""
    left_to_policies: list[str] = field(default_factory=list)
    """TimescaleDB: continuous aggregates not refreshed here because a scheduler runs their
    refresh policies (a refresh of our own would collide with theirs)."""
    policies_run_here: bool = False
    """TimescaleDB: whether retention and compression were done here rather than by jobs."""
    notes: list[str] = field(default_factory=list)
    """What needs a person: missing or failing policies, partitions of unknown names."""

    def summary(self) -> str:
        """One line of what the round did, for the command line and the service's log.

        >>> report = MaintenanceReport("plain", created=["readings_p20261201"], deleted_rows=3)
        >>> report.pruned = {"deadletters": 12, "reports": 0}
        >>> report.summary()
        'plain: 1 partitions created, 0 rows moved, 0 dropped by retention (3 rows deleted), 0 roll-ups refreshed, 12 record rows pruned by class retention (deadletters 12, reports 0)'
        """
        parts = [
            f"{len(self.created)} partitions created",
            f"{sum(self.moved.values())} rows moved",
            f"{len(self.dropped)} dropped by retention"
            + (f" ({self.deleted_rows} rows deleted)" if self.deleted_rows else ""),
            f"{len(self.refreshed)} roll-ups refreshed",
        ]
        if self.compressed:
            parts.append(f"{len(self.compressed)} chunks compressed")
        if self.pruned:
            each = ", ".join(f"{table} {count}" for table, count in self.pruned.items())
            parts.append(
                f"{sum(self.pruned.values())} record rows pruned by class retention ({each})"
            )
        return f"{self.flavour}: " + ", ".join(parts)


def bucket_floor(ts: datetime, width: timedelta) -> datetime:
    """The start of ``ts``'s bucket: ``date_bin(width, ts, ORIGIN)`` and ``time_bucket``.

    >>> bucket_floor(datetime(2025, 3, 1, 10, 59, 59, tzinfo=UTC), timedelta(hours=1))
    datetime.datetime(2025, 3, 1, 10, 0, tzinfo=datetime.timezone.utc)
    """
    return ORIGIN + ((ts - ORIGIN) // width) * width


def bucket_ceil(ts: datetime, width: timedelta) -> datetime:
    floor = bucket_floor(ts, width)
    return floor if floor == ts else floor + width


def require_autocommit(conn: Connection) -> None:
    if not conn.autocommit:
        raise ValueError(
            "storage maintenance needs an autocommit connection (db.connect gives one)"
        )


DEFAULT_RETENTION = Retention()


def class_retention(settings: Settings) -> Retention:
    """The tables' retention under their data classes' (``CITYVITALS_RETENTION_<CLASS>_DAYS``):
    each default, shortened to its class's where that is shorter; the defaults when none is set.
    """
    kept = {
        f.name: capped(getattr(DEFAULT_RETENTION, f.name), retention_cap(settings, TABLES[f.name]))
        for f in fields(Retention)
    }
    return Retention(**kept)


def table_exists(conn: Connection, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() not in (None, (None,))
