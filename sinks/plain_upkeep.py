"""Storage upkeep on plain PostgreSQL: day partitions, retention and the roll-up refresh SQL."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from psycopg import sql

from sinks.storage import (
    DAY,
    ORIGIN,
    PARTITIONED,
    Connection,
    MaintenanceReport,
    Retention,
    Rollup,
    bucket_floor,
    table_exists,
)

__all__ = ["plain_partitions", "plain_refresh_sql", "plain_retention"]


def plain_refresh_sql(rollup: Rollup) -> sql.Composed:
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


def plain_partitions(
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


def plain_retention(
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
        if target is None or not table_exists(conn, target):
            continue
        with conn.transaction():
            report.deleted_rows += conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                    sql.Identifier(target), sql.Identifier(column)
                ),
                (keep_from,),
            ).rowcount
