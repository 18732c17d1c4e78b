"""Storage upkeep for both database flavours: partitions, roll-ups and retention. No Kafka.

``maintain(conn, now)`` is meant to run every few minutes (and once at start-up). On plain
PostgreSQL it does what TimescaleDB's background jobs do on a TimescaleDB server:

- creates the day partitions from ``days_back`` before ``now`` to ``days_ahead`` after it and
  moves the rows that landed in a DEFAULT partition into their day's partition (one
  transaction per day: the rows are deleted, the partition created and the rows inserted, or
  nothing is);
- drops the day partitions that end before ``now - retention`` (and deletes such rows from
  DEFAULT partitions and from the unpartitioned roll-ups);
- refreshes the roll-ups (``readings_1m/1h/1d``, ``indicators_1h/1d``) with ``date_bin`` for
  the buckets from ``since`` on: idempotent upserts.

In both flavours it deletes the rows of alerts, incidents, citizen reports and dead letters
past their data class's retention, when one is set (:mod:`sinks.record_retention`).

On TimescaleDB it refreshes the continuous aggregates for the buckets from ``since`` on
(``refresh_continuous_aggregate``), checks that the migration's policies exist and have not
failed, and, when no TimescaleDB background-worker scheduler runs (PGlite, a server without
``timescaledb`` in ``shared_preload_libraries``), does the policies' work itself:
``drop_chunks`` by the retention and ``compress_chunk`` after each compression policy's age.

Roll-ups are hierarchical in both flavours: the hour reads the minute, the day the hour; so a
refresh of the hour sees the minute buckets that earlier refreshes wrote.

The connection must be in autocommit mode (as :func:`cityvitals.db.connect` gives): each step
runs in its own transaction, and TimescaleDB refuses to refresh inside one.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import psycopg

from cityvitals import db
from cityvitals.stage import utc_now
from sinks.plain_upkeep import plain_partitions, plain_refresh_sql, plain_retention
from sinks.record_retention import prune_records
from sinks.storage import (
    DEFAULT_RETENTION,
    ORIGIN,
    PARTITIONED,
    ROLLUPS,
    Connection,
    MaintenanceReport,
    Retention,
    Rollup,
    bucket_ceil,
    bucket_floor,
    class_retention,
    require_autocommit,
)
from sinks.timescale_upkeep import scheduler_runs, timescale_jobs, timescale_policies

__all__ = [
    "DEFAULT_RETENTION",
    "ORIGIN",
    "PARTITIONED",
    "REFRESH_BACKOFF",
    "ROLLUPS",
    "MaintenanceReport",
    "RefreshBusy",
    "Retention",
    "Rollup",
    "bucket_floor",
    "class_retention",
    "maintain",
    "refresh_rollups",
]


def maintain(
    conn: Connection,
    now: datetime,
    retention: Retention = DEFAULT_RETENTION,
    *,
    since: datetime | None = None,
    days_back: int = 2,
    days_ahead: int = 7,
    run_policies: bool | None = None,
) -> MaintenanceReport:
    """One round of upkeep as of ``now``; roll-ups are refreshed from ``since`` (default: three
    hours before ``now``, enough when this runs at least every two hours).

    ``run_policies`` (TimescaleDB): do retention and compression here; ``None`` does them
    when no background-worker scheduler runs in this database.
    """
    require_autocommit(conn)
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    since = now - timedelta(hours=3) if since is None else since
    report = MaintenanceReport(db.flavour(conn))
    prune_records(conn, now, retention, report)
    if report.flavour == "plain":
        plain_retention(conn, now, retention, report)
        report.refreshed = refresh_rollups(conn, since, now=now, retention=retention)
        # After the refresh, so that minute buckets of days without a partition yet move too.
        plain_partitions(conn, now, retention, days_back, days_ahead, report)
        return report
    jobs = timescale_jobs(conn)
    if run_policies is None:
        run_policies = not scheduler_runs(conn)
    if not run_policies:  # the scheduler runs the refresh policies: do not collide with them
        report.left_to_policies = sorted(
            str(table)
            for _, proc, table, *_ in jobs
            if proc == "policy_refresh_continuous_aggregate"
        )
    busy: list[str] = []
    report.refreshed = refresh_rollups(
        conn,
        since,
        now=now,
        retention=retention,
        skip=frozenset(report.left_to_policies),
        busy=busy,
    )
    report.notes.extend(
        f"{name}: not refreshed, another refresh of it was running (its policy will)"
        for name in busy
    )
    timescale_policies(conn, now, retention, run_policies, jobs, report)
    return report


REFRESH_BACKOFF = (0.5, 1.0, 2.0, 4.0)
"""Seconds to wait before each retry of a continuous-aggregate refresh that met another one
(TimescaleDB >= 2.27 fails it "due to a concurrent refresh" instead of waiting)."""


class RefreshBusy(RuntimeError):
    """Continuous aggregates still refreshed by someone else after every retry."""

    def __init__(self, rollups: list[str], detail: str) -> None:
        super().__init__(f"{', '.join(rollups)}: refresh met a concurrent refresh ({detail})")
        self.rollups = rollups
        self.detail = detail


def refresh_rollups(
    conn: Connection,
    since: datetime,
    until: datetime | None = None,
    *,
    now: datetime | None = None,
    retention: Retention = DEFAULT_RETENTION,
    skip: frozenset[str] = frozenset(),
    busy: list[str] | None = None,
) -> dict[str, int | None]:
    """Recompute every roll-up bucket that overlaps ``[since, until)`` (``until=None``: to the
    last row), in hierarchy order; returns rows written per roll-up (``None`` on TimescaleDB).

    A roll-up is never refreshed before the retention horizon of what it reads (as of
    ``now``): there the source rows are gone, and TimescaleDB would delete the roll-up's
    buckets that the README promises to keep. Roll-ups named in ``skip`` are left alone (their
    refresh policy does them). A TimescaleDB refresh that meets a concurrent one is retried
    (:data:`REFRESH_BACKOFF`); one still refused is named in ``busy``, or, without that list,
    raised as :class:`RefreshBusy` once the others are done.
    """
    require_autocommit(conn)
    if since.tzinfo is None or (until is not None and until.tzinfo is None):
        raise ValueError(f"since and until must be timezone-aware, got {since!r}, {until!r}")
    now = utc_now() if now is None else now
    kind = db.flavour(conn)
    done: dict[str, int | None] = {}
    refused: list[str] = []
    detail = ""
    for rollup in ROLLUPS:
        if rollup.name in skip:
            continue
        start = bucket_floor(since, rollup.width)
        kept = getattr(retention, rollup.source, None)
        if kept is not None:
            start = max(start, bucket_ceil(now - kept, rollup.width))
        end = None if until is None else bucket_ceil(until, rollup.width)
        if end is not None and end <= start:
            continue
        if kind == "timescale":
            problem = _refresh_aggregate(conn, rollup.name, start, end)
            if problem is None:
                done[rollup.name] = None
            else:
                refused.append(rollup.name)
                detail = problem
        else:
            with conn.transaction():
                cur = conn.execute(plain_refresh_sql(rollup), {"start": start, "end": end})
                done[rollup.name] = cur.rowcount
    if refused and busy is None:
        raise RefreshBusy(refused, detail)
    if busy is not None:
        busy.extend(refused)
    return done


def _refresh_aggregate(
    conn: Connection, name: str, start: datetime, end: datetime | None
) -> str | None:
    """Refresh one continuous aggregate; ``None``, or why it was still refused."""
    for wait in (*REFRESH_BACKOFF, None):
        try:
            conn.execute(
                "CALL refresh_continuous_aggregate(%s::regclass, %s::timestamptz, %s::timestamptz)",
                (name, start, end),
            )
            return None
        except psycopg.Error as exc:
            if "concurrent refresh" not in str(exc):
                raise
            if wait is None:
                return str(exc).strip().splitlines()[0]
            time.sleep(wait)
    return None  # pragma: no cover - the loop returns
