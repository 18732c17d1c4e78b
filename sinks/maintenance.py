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

import re
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from cityvitals import db
from cityvitals.db import Flavour

__all__ = [
    "ORIGIN",
    "PARTITIONED",
    "REFRESH_BACKOFF",
    "ROLLUPS",
    "MaintenanceReport",
    "RefreshBusy",
    "Retention",
    "Rollup",
    "bucket_floor",
    "maintain",
    "refresh_rollups",
]

Connection = psycopg.Connection[tuple[object, ...]]

ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
"""Where buckets and day partitions are aligned: UTC midnight (``date_bin``'s origin)."""
DAY = timedelta(days=1)

PARTITIONED = {"readings": "ts", "camera_events": "ts", "indicators": "window_start"}
"""Plain flavour: the tables partitioned by day, and their time column (plus ``readings_1m``)."""


@dataclass(frozen=True)
class Retention:
    """How long each table keeps its rows (``None``: for ever). The defaults are the ones the
    TimescaleDB migration gives its retention policies (0004_storage.timescale.sql)."""

    readings: timedelta | None = timedelta(days=90)
    camera_events: timedelta | None = timedelta(days=90)
    indicators: timedelta | None = timedelta(days=400)
    readings_1m: timedelta | None = timedelta(days=90)
    readings_1h: timedelta | None = timedelta(days=730)
    readings_1d: timedelta | None = None
    indicators_1h: timedelta | None = timedelta(days=730)
    indicators_1d: timedelta | None = None

    def items(self) -> list[tuple[str, timedelta]]:
        """(table, retention) for every table that has one."""
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


def bucket_floor(ts: datetime, width: timedelta) -> datetime:
    """The start of ``ts``'s bucket: ``date_bin(width, ts, ORIGIN)`` and ``time_bucket``.

    >>> bucket_floor(datetime(2025, 3, 1, 10, 59, 59, tzinfo=UTC), timedelta(hours=1))
    datetime.datetime(2025, 3, 1, 10, 0, tzinfo=datetime.timezone.utc)
    """
    return ORIGIN + ((ts - ORIGIN) // width) * width


def _bucket_ceil(ts: datetime, width: timedelta) -> datetime:
    floor = bucket_floor(ts, width)
    return floor if floor == ts else floor + width


def _require_autocommit(conn: Connection) -> None:
    if not conn.autocommit:
        raise ValueError(
            "storage maintenance needs an autocommit connection (db.connect gives one)"
        )


def maintain(
    conn: Connection,
    now: datetime,
    retention: Retention = Retention(),
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
    _require_autocommit(conn)
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    since = now - timedelta(hours=3) if since is None else since
    report = MaintenanceReport(db.flavour(conn))
    if report.flavour == "plain":
        _plain_retention(conn, now, retention, report)
        report.refreshed = refresh_rollups(conn, since, now=now, retention=retention)
        # After the refresh, so that minute buckets of days without a partition yet move too.
        _plain_partitions(conn, now, retention, days_back, days_ahead, report)
        return report
    jobs = _jobs(conn)
    if run_policies is None:
        run_policies = not _scheduler_runs(conn)
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
    _timescale_policies(conn, now, retention, run_policies, jobs, report)
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
    retention: Retention = Retention(),
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
    _require_autocommit(conn)
    if since.tzinfo is None or (until is not None and until.tzinfo is None):
        raise ValueError(f"since and until must be timezone-aware, got {since!r}, {until!r}")
    now = datetime.now(UTC) if now is None else now
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
            start = max(start, _bucket_ceil(now - kept, rollup.width))
        end = None if until is None else _bucket_ceil(until, rollup.width)
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
                cur = conn.execute(_plain_refresh_sql(rollup), {"start": start, "end": end})
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


def _plain_refresh_sql(rollup: Rollup) -> sql.Composed:
    """An upsert of the roll-up's buckets from ``%(start)s`` to ``%(end)s`` (NULL: no end)."""
    width = sql.Literal(rollup.width)
    params = {
        "target": sql.Identifier(rollup.name),
        "source": sql.Identifier(rollup.source),
        "width": width,
        "origin": sql.Literal(ORIGIN),
    }
    if rollup.kind == "indicators":
        return sql.SQL(
            """
            INSERT INTO {target} AS r (bucket, indicator, place_id, avg_value, min_value,
                                       max_value, avg_coverage, n)
            SELECT date_bin({width}, window_start, {origin}), indicator, place_id, avg(value),
                   min(value), max(value), avg(coverage), count(*)
              FROM {source}
             WHERE window_start >= %(start)s
               AND (%(end)s::timestamptz IS NULL OR window_start < %(end)s::timestamptz)
             GROUP BY 1, indicator, place_id
            ON CONFLICT (indicator, place_id, bucket) DO UPDATE SET
                avg_value = EXCLUDED.avg_value, min_value = EXCLUDED.min_value,
                max_value = EXCLUDED.max_value, avg_coverage = EXCLUDED.avg_coverage,
                n = EXCLUDED.n
            """
        ).format(**params)
    if rollup.kind == "readings_raw":
        time, avg, low, high, n = "ts", "avg(value)", "min(value)", "max(value)", "count(*)"
    else:
        time, avg = "bucket", "sum(avg_value * n) / sum(n)::double precision"
        low, high, n = "min(min_value)", "max(max_value)", "sum(n)::bigint"
    params |= {
        "time": sql.Identifier(time),
        "avg": sql.SQL(avg),
        "low": sql.SQL(low),
        "high": sql.SQL(high),
        "n": sql.SQL(n),
    }
    # device_type and place_path come from the latest row of each group (its time is unique
    # within a device and metric), as TimescaleDB's last(x, time) gives them.
    return sql.SQL(
        """
        INSERT INTO {target} AS r (bucket, device_id, metric, device_type, place_path,
                                   avg_value, min_value, max_value, n)
        SELECT g.bucket, g.device_id, g.metric, l.device_type, l.place_path,
               g.avg_value, g.min_value, g.max_value, g.n
          FROM (SELECT date_bin({width}, {time}, {origin}) AS bucket, device_id, metric,
                       {avg} AS avg_value, {low} AS min_value, {high} AS max_value, {n} AS n,
                       max({time}) AS last_time
                  FROM {source}
                 WHERE {time} >= %(start)s
                   AND (%(end)s::timestamptz IS NULL OR {time} < %(end)s::timestamptz)
                 GROUP BY 1, device_id, metric) AS g
          JOIN {source} AS l
            ON l.device_id = g.device_id AND l.metric = g.metric AND l.{time} = g.last_time
           AND l.{time} >= %(start)s
        ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
            device_type = EXCLUDED.device_type, place_path = EXCLUDED.place_path,
            avg_value = EXCLUDED.avg_value, min_value = EXCLUDED.min_value,
            max_value = EXCLUDED.max_value, n = EXCLUDED.n
        """
    ).format(**params)


# -- plain PostgreSQL: day partitions --------------------------------------------------------


def _partitioned(conn: Connection) -> dict[str, str]:
    """Partitioned tables of the schema (those the plain migration made) and time columns."""
    found = dict(PARTITIONED, readings_1m="bucket")
    return {
        table: column
        for table, column in found.items()
        if conn.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", (table,)
        ).fetchone()
    }


def _partitions(conn: Connection, parent: str) -> tuple[dict[date, str], str | None, list[str]]:
    """(day partitions by day, DEFAULT partition, partitions of names not ours)."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)"
        "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(%s)",
        (parent,),
    ).fetchall()
    days: dict[date, str] = {}
    default = None
    other = []
    pattern = re.compile(rf"^{re.escape(parent)}_p(\d{{8}})$")
    for name, bound in rows:
        assert isinstance(name, str)
        match = pattern.match(name)
        if bound == "DEFAULT":
            default = name
        elif match:
            days[datetime.strptime(match[1], "%Y%m%d").date()] = name
        else:
            other.append(name)
    return days, default, other


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _keep_from(now: datetime, age: timedelta) -> datetime:
    """Rows before this go: whole UTC days that ended by ``now - age``."""
    return bucket_floor(now - age, DAY)


def _plain_partitions(
    conn: Connection,
    now: datetime,
    retention: Retention,
    days_back: int,
    days_ahead: int,
    report: MaintenanceReport,
) -> None:
    today = now.astimezone(UTC).date()
    window = {today + timedelta(days=d) for d in range(-days_back, days_ahead + 1)}
    ages = dict(retention.items())
    for parent, column in _partitioned(conn).items():
        days, default, other = _partitions(conn, parent)
        report.notes.extend(
            f"{parent}: partition {name} is not a day partition of ours; left alone"
            for name in other
        )
        stray: set[date] = set()
        if default is not None:
            rows = conn.execute(
                sql.SQL("SELECT DISTINCT ({} AT TIME ZONE 'UTC')::date FROM {}").format(
                    sql.Identifier(column), sql.Identifier(default)
                )
            )
            stray = {day for (day,) in rows if isinstance(day, date)}
        wanted = window | stray
        if parent in ages:
            first = _keep_from(now, ages[parent]).date()
            wanted = {day for day in wanted if day >= first}
        for day in sorted(wanted - days.keys()):
            moved = _create_day(conn, parent, column, default, day)
            report.created.append(f"{parent}_p{day:%Y%m%d}")
            if moved:
                report.moved[parent] = report.moved.get(parent, 0) + moved


def _create_day(conn: Connection, parent: str, column: str, default: str | None, day: date) -> int:
    """Create ``day``'s partition, first taking its rows out of the DEFAULT partition (which
    would otherwise refuse the new partition); returns the rows moved."""
    start, end = _day_start(day), _day_start(day) + DAY
    names = {
        "parent": sql.Identifier(parent),
        "part": sql.Identifier(f"{parent}_p{day:%Y%m%d}"),
        "column": sql.Identifier(column),
        "start": sql.Literal(start),
        "end": sql.Literal(end),
    }
    create = sql.SQL(
        "CREATE TABLE {part} PARTITION OF {parent} FOR VALUES FROM ({start}) TO ({end})"
    )
    with conn.transaction():
        if default is None:
            conn.execute(create.format(**names))
            return 0
        names["default"] = sql.Identifier(default)
        # No writer may put a row of this day into DEFAULT between the move and the create.
        conn.execute(sql.SQL("LOCK TABLE {parent} IN ACCESS EXCLUSIVE MODE").format(**names))
        conn.execute(
            sql.SQL("CREATE TEMP TABLE _cityvitals_moving (LIKE {parent}) ON COMMIT DROP").format(
                **names
            )
        )
        taken = conn.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM {default} WHERE {column} >= %s AND {column} < %s"
                " RETURNING *) INSERT INTO _cityvitals_moving SELECT * FROM moved"
            ).format(**names),
            (start, end),
        ).rowcount
        conn.execute(create.format(**names))
        put = conn.execute(
            sql.SQL("INSERT INTO {parent} SELECT * FROM _cityvitals_moving").format(**names)
        ).rowcount
        if put != taken:  # pragma: no cover - the transaction rolls back: nothing is lost
            raise RuntimeError(f"{parent}: moved {taken} rows of {day} but inserted {put}")
        return taken


def _plain_retention(
    conn: Connection, now: datetime, retention: Retention, report: MaintenanceReport
) -> None:
    partitioned = _partitioned(conn)
    for table, age in retention.items():
        keep_from = _keep_from(now, age)
        if table in partitioned:
            column = partitioned[table]
            days, default, _ = _partitions(conn, table)
            for day, name in sorted(days.items()):
                if _day_start(day) < keep_from:
                    with conn.transaction():
                        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                    report.dropped.append(name)
            target = default
        else:
            column, target = "bucket", table
        if target is None or not _exists(conn, target):
            continue
        with conn.transaction():
            report.deleted_rows += conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                    sql.Identifier(target), sql.Identifier(column)
                ),
                (keep_from,),
            ).rowcount


def _exists(conn: Connection, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() not in (None, (None,))


# -- TimescaleDB: policies -----------------------------------------------------------------


EXPECTED_POLICIES = {
    ("policy_compression", table) for table in ("readings", "camera_events", "indicators")
} | {("policy_refresh_continuous_aggregate", rollup.name) for rollup in ROLLUPS}
"""The jobs 0004_storage.timescale.sql creates, besides one retention policy per table of
:class:`Retention` that has a retention."""


def _scheduler_runs(conn: Connection) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
        " WHERE application_name = 'TimescaleDB Background Worker Scheduler'"
        " AND datname = current_database())"
    ).fetchone()
    return bool(row and row[0])


def _jobs(conn: Connection) -> list[tuple[object, ...]]:
    """(job id, proc, table, compress_after, last run status, failures, start_offset)."""
    return conn.execute(
        "SELECT j.job_id, j.proc_name, j.hypertable_name,"
        "       (j.config->>'compress_after')::interval, s.last_run_status, s.total_failures,"
        "       (j.config->>'start_offset')::interval"
        "  FROM timescaledb_information.jobs j"
        "  LEFT JOIN timescaledb_information.job_stats s USING (job_id)"
        " WHERE j.hypertable_schema = current_schema()"
    ).fetchall()


def _timescale_policies(
    conn: Connection,
    now: datetime,
    retention: Retention,
    run_policies: bool,
    jobs: list[tuple[object, ...]],
    report: MaintenanceReport,
) -> None:
    present = {(str(proc), str(table)) for _, proc, table, *_ in jobs}
    expected = EXPECTED_POLICIES | {("policy_retention", table) for table, _ in retention.items()}
    report.notes.extend(
        f"{table}: no {proc} job (expected from the migration)"
        for proc, table in sorted(expected - present)
    )
    report.notes.extend(
        f"{table}: {proc} job {job_id} last run {status} ({failures} failures so far)"
        for job_id, proc, table, _, status, failures, _ in jobs
        if status == "Failed"
    )
    sources = {r.name: r.source for r in ROLLUPS}
    for _, proc, table, _, _, _, offset in jobs:
        kept = getattr(retention, sources.get(str(table), ""), None)
        refresh = proc == "policy_refresh_continuous_aggregate"
        if refresh and isinstance(offset, timedelta) and kept is not None and offset >= kept:
            report.notes.append(
                f"{table}: its refresh policy reaches back {offset.days} days, past the "
                f"{kept.days} days its source keeps: it would delete kept roll-ups"
            )
    report.policies_run_here = run_policies
    if not run_policies:
        return
    report.notes.append(
        "no TimescaleDB background-worker scheduler runs in this database: retention and "
        "compression were done by this maintenance run"
    )
    for table, age in retention.items():
        dropped = conn.execute(
            "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)",
            (table, now - age),
        ).fetchall()
        report.dropped.extend(str(row[0]) for row in dropped)
    for _, proc, hypertable, compress_after, *_ in jobs:
        if proc != "policy_compression" or not isinstance(compress_after, timedelta):
            continue
        compressed = conn.execute(
            "SELECT compress_chunk(format('%%I.%%I', chunk_schema, chunk_name)::regclass)"
            "  FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = %s"
            "   AND NOT is_compressed AND range_end <= %s",
            (hypertable, now - compress_after),
        ).fetchall()
        report.compressed.extend(str(row[0]) for row in compressed)
