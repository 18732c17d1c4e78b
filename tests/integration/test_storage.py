"""Storage in both flavours: plain PostgreSQL (the session's real server, one schema per test)
and TimescaleDB (a real TimescaleDB 2.23 build: PGlite compiled to WebAssembly, behind
pglite-socket, started by the ``timescale`` fixture). Partitions, roll-ups, retention, policies.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cityvitals import db
from cityvitals.contracts import Reading
from cityvitals.settings import Settings
from sinks.maintenance import ROLLUPS, MaintenanceReport, Retention, maintain, refresh_rollups
from sinks.postgres import ReadingSink
from tests.integration.conftest import Pipeline

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2031, 3, 15, 10, 30, tzinfo=UTC)
READING_ROLLUP_COLUMNS = [
    "bucket",
    "device_id",
    "metric",
    "device_type",
    "place_path",
    "avg_value",
    "min_value",
    "max_value",
    "n",
]
INDICATOR_ROLLUP_COLUMNS = [
    "bucket",
    "indicator",
    "place_id",
    "avg_value",
    "min_value",
    "max_value",
    "avg_coverage",
    "n",
]
INDICATOR_COLUMNS = [
    ("indicator", "text", "NO"),
    ("place_id", "text", "NO"),
    ("place_level", "text", "NO"),
    ("place_path", "ARRAY", "NO"),
    ("window_start", "timestamp with time zone", "NO"),
    ("window_s", "integer", "NO"),
    ("value", "double precision", "YES"),
    ("level", "text", "YES"),
    ("coverage", "double precision", "NO"),
    ("reporting", "integer", "NO"),
    ("expected", "integer", "NO"),
    ("quality", "text", "NO"),
    ("detail", "jsonb", "YES"),
    ("computed_at", "timestamp with time zone", "NO"),
    ("samples", "integer", "NO"),
]
INSERT_INDICATOR = """
    INSERT INTO indicators (indicator, place_id, place_level, place_path, window_start,
                            window_s, value, level, coverage, reporting, expected, quality,
                            detail, computed_at)
    VALUES (%s, %s, 'district', %s, %s, 300, %s, NULL, %s, 3, 4, 'good', NULL, %s)
"""
INSERT_READING = """
    INSERT INTO readings (device_id, metric, ts, value, seq, device_type, place_path, received_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, NULL) ON CONFLICT DO NOTHING
"""

Conn = psycopg.Connection[tuple[Any, ...]]


# -- plain PostgreSQL ----------------------------------------------------------------------


@pytest.fixture()
def plain(pipeline: Pipeline) -> Iterator[Settings]:
    """A schema of this test's own on the session's PostgreSQL, migrated."""
    settings = pipeline.settings.model_copy(
        update={"database_schema": f"st{uuid.uuid4().hex[:12]}"}
    )
    db.migrate(settings)
    try:
        yield settings
    finally:
        with db.connect(settings) as conn:
            conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def reading(device: str, ts: datetime, seq: int, path: tuple[str, ...], **values: float) -> Reading:
    return Reading(
        device_id=device,
        ts=ts,
        seq=seq,
        values=values,
        device_type="air_quality",
        place_path=path,
    )


def partition_of(conn: Conn, table: str, where: str, *params: Any) -> list[str]:
    sql = f"SELECT DISTINCT tableoid::regclass::text FROM {table} WHERE {where}"
    return sorted(row[0] for row in conn.execute(sql.encode(), params))


def test_plain_schema_is_partitioned_indexed_and_rerunnable(plain: Settings) -> None:
    assert db.flavour(plain) == "plain"
    assert db.migrate(plain) == []  # nothing left to apply
    with db.connect(plain) as conn:
        assert conn.execute("SELECT flavour FROM schema_flavour").fetchall() == [("plain",)]
        assert conn.execute(
            "SELECT name, flavour FROM schema_migrations WHERE version = 4"
        ).fetchall() == [("storage", "plain")]
        partitioned = {
            row[0]
            for row in conn.execute(
                "SELECT partrelid::regclass::text FROM pg_partitioned_table p"
                " JOIN pg_class c ON c.oid = p.partrelid"
                " WHERE c.relnamespace = current_schema()::regnamespace"
            )
        }
        assert partitioned == {"readings", "camera_events", "indicators", "readings_1m"}
        for table in partitioned:
            bounds = conn.execute(
                "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
                (table,),
            ).fetchall()
            assert ("DEFAULT",) in bounds, table
        brin = set(
            conn.execute(
                "SELECT t.relname, a.attname FROM pg_index x"
                " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam"
                " JOIN pg_class t ON t.oid = x.indrelid"
                " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
                " WHERE am.amname = 'brin' AND t.relnamespace = current_schema()::regnamespace"
                "   AND t.relkind = 'p'"
            ).fetchall()
        )
        assert {
            ("readings", "ts"),
            ("camera_events", "ts"),
            ("indicators", "window_start"),
        } <= brin
        assert columns(conn, "indicators") == INDICATOR_COLUMNS
        assert primary_key(conn, "indicators") == ["indicator", "place_id", "window_start"]
        for rollup in ROLLUPS:
            expected = (
                READING_ROLLUP_COLUMNS
                if rollup.name.startswith("readings")
                else INDICATOR_ROLLUP_COLUMNS
            )
            assert [c[0] for c in columns(conn, rollup.name)] == expected
        # alerts stays an ordinary table.
        assert conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = 'alerts'::regclass"
        ).fetchone() == ("r",)


def columns(conn: Conn, table: str) -> list[tuple[str, str, str]]:
    return [
        (str(name), str(kind), str(nullable))
        for name, kind, nullable in conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
    ]


def primary_key(conn: Conn, table: str) -> list[str]:
    return [
        str(row[0])
        for row in conn.execute(
            "SELECT a.attname FROM pg_index x"
            " JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, pos) ON true"
            " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum"
            " WHERE x.indrelid = %s::regclass AND x.indisprimary ORDER BY k.pos",
            (table,),
        )
    ]


def migrate_with_old_data(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Migrate up to 0003, store readings and camera events of three days the way the sinks
    did before 0004 (without COPY, which PGlite lacks), then apply the rest."""
    every = db.migrations()
    with monkeypatch.context() as patch:
        patch.setattr(db, "migrations", lambda: [m for m in every if m.version < 4])
        db.migrate(settings)
    with db.connect(settings) as conn, conn.cursor() as cur:
        cur.executemany(
            INSERT_READING,
            [("aq-x", "pm25", NOW - timedelta(days=d), float(d), d, "t", ["c"]) for d in (0, 1, 5)],
        )
        cur.executemany(
            "INSERT INTO camera_events (camera_id, event_type, ts, value, confidence, seq,"
            " place_path) VALUES ('cam-x', 'smoke_fire', %s, 1, 0.9, %s, '{c}')",
            [(NOW - timedelta(days=d), d) for d in (0, 7)],
        )
    return db.migrate(settings)


def test_existing_rows_are_kept_by_the_storage_migration(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pipeline.settings.model_copy(
        update={"database_schema": f"st{uuid.uuid4().hex[:12]}"}
    )
    try:
        assert migrate_with_old_data(settings, monkeypatch) == [
            "0004_storage",
            "0005_indicator_samples",
            "0006_incidents",
            "0007_users",
            "0008_deadletter_key",
            "0009_escalation_from",
            "0010_deadletter_position",
            "0011_dispatch_withdrawal",
            "0012_dispatch_revision",
            "0013_incident_acknowledged",
            "0014_alert_resolution",
            "0015_deadletter_resent",
            "0016_dispatch_summary",
            "0017_dispatch_withdraws_index",
            "0018_dispatch_signals",
            "0019_alert_anomaly",
            "0020_outage_devices",
            "0021_liveness_silent_index",
            "0022_deadletters_device",
            "0023_device_tags",
            "0024_transition_feedback",
            "0025_dispatch_alerts",
            "0026_dispatch_opened",
            "0027_tiers_below_street",
            "0028_deadletters_cause",
            "0029_deadletters_replayed",
        ]
        with db.connect(settings) as conn:
            for d in (0, 1, 5):
                ts = NOW - timedelta(days=d)
                assert partition_of(conn, "readings", "ts = %s", ts) == [f"readings_p{ts:%Y%m%d}"]
            assert partition_of(conn, "camera_events", "true") == [
                f"camera_events_p{NOW - timedelta(days=d):%Y%m%d}" for d in (7, 0)
            ]
            assert conn.execute("SELECT count(*) FROM readings_default").fetchone() == (0,)
            assert conn.execute(
                "SELECT count(*) FROM pg_class WHERE relname LIKE '%%unpartitioned%%'"
                " AND relnamespace = current_schema()::regnamespace"
            ).fetchone() == (0,)
    finally:
        with db.connect(settings) as conn:
            conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def test_rows_of_any_date_land_and_maintenance_moves_them(plain: Settings) -> None:
    path = ("itest", "d1", "s1", "g1")
    old, new, far = NOW - timedelta(days=30), NOW, NOW + timedelta(days=400)
    batch = [
        reading("aq-1", old, 1, path, pm25=10.0, no2=1.0),
        reading("aq-1", new, 2, path, pm25=20.0, no2=2.0),
        reading("aq-1", far, 3, path, pm25=30.0, no2=3.0),
    ]
    with db.connect(plain) as conn:
        sink = ReadingSink(conn)
        assert sink.write(batch) == 6  # COPY + upsert into the partitioned table
        assert partition_of(conn, "readings", "true") == ["readings_default"]

        report = maintain(conn, NOW)
        assert report.flavour == "plain"
        assert report.moved == {"readings": 6, "readings_1m": 4}  # 1m: NOW's and far's
        expected_days = {f"readings_p{(NOW + timedelta(days=d)):%Y%m%d}" for d in range(-2, 8)} | {
            f"readings_p{old:%Y%m%d}",
            f"readings_p{far:%Y%m%d}",
        }
        assert expected_days <= set(report.created)
        assert conn.execute("SELECT count(*) FROM readings_default").fetchone() == (0,)
        for ts in (old, new, far):
            assert partition_of(conn, "readings", "ts = %s", ts) == [f"readings_p{ts:%Y%m%d}"]
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (6,)

        again = maintain(conn, NOW)
        assert (again.created, again.moved, again.dropped) == ([], {}, [])

        # The sink's upserts work across partitions: a replay adds nothing, a new row lands.
        assert sink.write(batch) == 0
        later = reading("aq-1", NOW + timedelta(days=1), 4, path, pm25=40.0)
        assert sink.write([later]) == 1
        assert partition_of(conn, "readings", "seq = 4") == [
            f"readings_p{NOW + timedelta(days=1):%Y%m%d}"
        ]
        # A row for a day without partition goes to DEFAULT, and the next round moves it.
        stray = reading("aq-1", NOW + timedelta(days=30), 5, path, pm25=50.0)
        assert sink.write([stray]) == 1
        assert partition_of(conn, "readings", "seq = 5") == ["readings_default"]
        assert maintain(conn, NOW).moved["readings"] == 1
        assert partition_of(conn, "readings", "seq = 5") == [
            f"readings_p{NOW + timedelta(days=30):%Y%m%d}"
        ]


def test_rollups_equal_a_direct_computation(plain: Settings) -> None:
    start = NOW - timedelta(days=2, hours=3)
    with db.connect(plain) as conn:
        maintain(conn, NOW)  # day partitions for the window
        write_city(conn, start, sink=ReadingSink(conn))
        refreshed = refresh_rollups(conn, since=start - timedelta(days=1))
        assert all(refreshed[r.name] for r in ROLLUPS), refreshed
        assert_rollups_match(conn, "date_bin")

        # Idempotent: refreshing again changes nothing; a late reading is taken in.
        before = conn.execute("SELECT * FROM readings_1h ORDER BY 1, 2, 3").fetchall()
        refresh_rollups(conn, since=start)
        assert conn.execute("SELECT * FROM readings_1h ORDER BY 1, 2, 3").fetchall() == before
        late = reading("aq-0", start + timedelta(seconds=295), 99_999, ("c", "d0"), pm25=500.0)
        assert ReadingSink(conn).write([late]) == 1
        refresh_rollups(conn, since=start)
        assert_rollups_match(conn, "date_bin")


def write_city(conn: Conn, start: datetime, sink: ReadingSink | None = None) -> None:
    """Readings of 4 devices (one moves place mid-bucket) over ~2 days, and indicators."""
    rng = random.Random(7)
    batch = []
    for i in range(600):
        ts = start + timedelta(minutes=5 * i, seconds=rng.randrange(0, 290))
        for d in range(4):
            path = ("c", f"d{d}") if not (d == 3 and i >= 301) else ("c", "moved")
            batch.append(
                reading(f"aq-{d}", ts, i, path, pm25=rng.uniform(0, 150), no2=rng.uniform(0, 80))
            )
    if sink is not None:
        assert sink.write(batch) == len(batch) * 2
    else:  # PGlite: no COPY
        rows = [
            (r.device_id, m, r.ts, v, r.seq, r.device_type, list(r.place_path))
            for r in batch
            for m, v in r.values.items()
        ]
        with conn.cursor() as cur:
            cur.executemany(INSERT_READING, rows)
    indicators = []
    for i in range(500):
        ws = start + timedelta(minutes=5 * i)
        for place in ("d0", "d1"):
            value = None if i % 17 == 0 else rng.uniform(0, 100)
            indicators.append(
                ("air_quality", place, ["c", place], ws, value, rng.uniform(0.5, 1), ws)
            )
    with conn.cursor() as cur:
        cur.executemany(INSERT_INDICATOR, indicators)


def binned(binner: str, width: str, column: str) -> str:
    """The bucket of ``column`` by ``date_bin`` (plain) or ``time_bucket`` (TimescaleDB)."""
    if binner == "date_bin":
        return f"date_bin('{width}', {column}, '2000-01-01 00:00:00+00'::timestamptz)"
    return f"time_bucket('{width}', {column})"


def assert_rollups_match(conn: Conn, binner: str) -> None:
    """Every roll-up equals a GROUP BY over the raw rows with ``date_bin``/``time_bucket``."""
    for width, name in (
        ("1 minute", "readings_1m"),
        ("1 hour", "readings_1h"),
        ("1 day", "readings_1d"),
    ):
        direct = conn.execute(
            f"""SELECT {binned(binner, width, "ts")}, device_id, metric, avg(value), min(value),
                       max(value), count(*),
                       (array_agg(array_to_string(place_path, '/') ORDER BY ts DESC))[1],
                       (array_agg(device_type ORDER BY ts DESC))[1]
                  FROM readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""".encode()
        ).fetchall()
        rolled = conn.execute(
            f"""SELECT bucket, device_id, metric, avg_value, min_value, max_value, n,
                       array_to_string(place_path, '/'), device_type
                  FROM {name} ORDER BY 1, 2, 3""".encode()
        ).fetchall()
        assert len(rolled) == len(direct), name
        for got, want in zip(rolled, direct, strict=True):
            assert got[:3] == want[:3], name
            assert got[3] == pytest.approx(want[3], rel=1e-9), (name, got, want)
            assert got[4:] == want[4:], (name, got, want)
    assert conn.execute(
        "SELECT count(*) FROM readings_1h WHERE place_path = '{c,moved}'"
    ).fetchone() != (0,)
    for width, name in (("1 hour", "indicators_1h"), ("1 day", "indicators_1d")):
        direct = conn.execute(
            f"""SELECT {binned(binner, width, "window_start")}, indicator, place_id, avg(value),
                       min(value), max(value),
                       avg(coverage), count(*)
                  FROM indicators GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""".encode()
        ).fetchall()
        rolled = conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3".encode()).fetchall()
        assert len(rolled) == len(direct), name
        for got, want in zip(rolled, direct, strict=True):
            assert got[:3] == want[:3] and got[7] == want[7], (name, got, want)
            for g, w in zip(got[3:7], want[3:7], strict=True):  # NULL where every value is NULL
                assert (g is None and w is None) or g == pytest.approx(w, rel=1e-9), (
                    name,
                    got,
                    want,
                )


def test_retention_drops_old_partitions_and_nothing_newer(plain: Settings) -> None:
    path = ("c", "d1")
    ages = (400, 120, 91, 90, 89, 30, 0)  # days before NOW
    with db.connect(plain) as conn:
        sink = ReadingSink(conn)
        sink.write([reading("aq-r", NOW - timedelta(days=a), a, path, pm25=float(a)) for a in ages])
        with conn.cursor() as cur:
            cur.executemany(
                INSERT_INDICATOR,
                [
                    ("air_quality", "d1", list(path), NOW - timedelta(days=a), 1.0, 1.0, NOW)
                    for a in (500, 401, 399, 1)
                ],
            )
        conn.execute(
            "INSERT INTO readings_1h (bucket, device_id, metric, n) VALUES"
            " (%s, 'aq-r', 'pm25', 1), (%s, 'aq-r', 'pm25', 1)",
            (NOW - timedelta(days=800), NOW - timedelta(days=700)),
        )
        conn.execute(
            "INSERT INTO readings_1d (bucket, device_id, metric, n) VALUES (%s, 'aq-r', 'pm25', 1)",
            (NOW - timedelta(days=3000),),
        )
        first = maintain(conn, NOW, since=NOW - timedelta(days=500))
        # Rows past the retention are deleted from DEFAULT (not moved into a partition):
        # readings of 400, 120 and 91 days, indicators of 500 and 401, the 800-day hour.
        assert first.deleted_rows == 6, first
        keep_from = (NOW - timedelta(days=90)).replace(hour=0, minute=0)  # whole days go
        kept = [
            int(row[0]) for row in conn.execute("SELECT value FROM readings ORDER BY value DESC")
        ]
        assert kept == [a for a in ages if a <= 90], kept
        assert conn.execute(
            "SELECT count(*) FROM readings WHERE ts < %s", (keep_from,)
        ).fetchone() == (0,)
        assert [
            row[0].date() for row in conn.execute("SELECT window_start FROM indicators ORDER BY 1")
        ] == [(NOW - timedelta(days=a)).date() for a in (399, 1)]
        assert conn.execute(
            "SELECT count(*) FROM readings_1h WHERE metric = 'pm25' AND device_id = 'aq-r' AND bucket < %s",
            (NOW - timedelta(days=730),),
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM readings_1d WHERE bucket = %s", (NOW - timedelta(days=3000),)
        ).fetchone() == (1,)

        # Three days later the partitions of the days 88 to 90 days back go, with their rows,
        # and nothing newer. (Readings of 91 to 95 days back never get a partition.)
        for day in range(88, 96):
            sink.write([reading("aq-s", NOW - timedelta(days=day), 1000 + day, path, pm25=1.0)])
        assert maintain(conn, NOW).deleted_rows == 5
        later = maintain(conn, NOW + timedelta(days=3))
        dropped_days = {name[-8:] for name in later.dropped if name.startswith("readings_p")}
        assert dropped_days == {f"{NOW - timedelta(days=d):%Y%m%d}" for d in (88, 89, 90)}, (
            later.dropped
        )
        remaining = conn.execute("SELECT min(ts) FROM readings WHERE device_id = 'aq-s'").fetchone()
        assert remaining == (None,)
        assert [
            int(row[0])
            for row in conn.execute(
                "SELECT value FROM readings WHERE device_id = 'aq-r' ORDER BY 1"
            )
        ] == [0, 30]
        assert not [
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'readings'::regclass AND c.relname < %s"
                "   AND c.relname <> 'readings_default'",
                (f"readings_p{(NOW + timedelta(days=3) - timedelta(days=90)):%Y%m%d}",),
            )
        ]


def old(days: int) -> datetime:
    return NOW - timedelta(days=days)


def seed_records(conn: Conn) -> None:
    """Alerts, incidents, reports and dead letters, old (40 days) and recent (10 days), with
    old ones still open or still listed by an open incident."""
    alert = (
        "INSERT INTO alerts (alert_id, revision, rule_id, status, level, device_id, metric,"
        " value, threshold, place_path, started_at, updated_at, resolved_at, summary)"
        " VALUES (%s, 2, 'r', %s, 'yellow', 'aq-1', 'pm25', 1, 1, '{c}', %s, %s, %s, 's')"
    )
    for alert_id, status, started, resolved in (
        ("a-old", "resolved", old(41), old(40)),
        ("a-firing", "firing", old(400), None),
        ("a-recent", "resolved", old(11), old(10)),
        ("a-listed", "resolved", old(41), old(40)),  # listed by the open incident
    ):
        conn.execute(alert, (alert_id, status, started, resolved or started, resolved))
        conn.execute(
            "INSERT INTO alert_transitions (alert_id, revision, status, level, value, ts)"
            " VALUES (%s, 1, 'firing', 'yellow', 1, %s), (%s, 2, %s, 'yellow', 1, %s)",
            (alert_id, started, alert_id, status, resolved or started),
        )
    incident = (
        "INSERT INTO incidents (incident_id, revision, category, state, level, source,"
        " place_id, place_path, title, opened_at, updated_at, alerts, reports)"
        " VALUES (%s, 3, 'air', %s, 'yellow', 'alert', 'c', '{c}', 't', %s, %s, %s, %s)"
    )
    for incident_id, state, updated, alerts, reports in (
        ("i-old", "closed", old(40), [], ["r-closed"]),
        ("i-open", "handled", old(400), ["a-listed"], ["r-open"]),
        ("i-recent", "closed", old(10), [], []),
    ):
        conn.execute(incident, (incident_id, state, updated, updated, alerts, reports))
        conn.execute(
            "INSERT INTO incident_transitions (incident_id, revision, action, to_state, actor, ts)"
            " VALUES (%s, 1, 'open', 'new', 'rules', %s)",
            (incident_id, updated),
        )
        conn.execute(
            "INSERT INTO escalations (incident_id, from_tier, breach, deadline, ts)"
            " VALUES (%s, 'street', 'accept', %s, %s)",
            (incident_id, updated, updated),
        )
    dispatch = (
        "INSERT INTO dispatches (dispatch_id, kind, incident_id, incidents, department, tier,"
        " tier_place_id, category, level, place_id, place_path, title, accept_by, handle_by, ts)"
        " VALUES (%s, %s, %s, %s, 'env', 'street', 'c', 'air', 'yellow', 'c', '{c}', 't',"
        " %s, %s, %s)"
    )
    for dispatch_id, kind, first, listed in (
        ("d-old", "order", "i-old", ["i-old"]),
        ("d-digest", "digest", "i-old", ["i-old", "i-open"]),  # lists an open incident
        ("d-open", "order", "i-open", ["i-open"]),
    ):
        conn.execute(dispatch, (dispatch_id, kind, first, listed, old(40), old(40), old(40)))
    for report_id, days in (("r-old", 40), ("r-closed", 40), ("r-open", 40), ("r-recent", 10)):
        conn.execute(
            "INSERT INTO reports (report_id, channel, category, place_path, text, level,"
            " reported_at) VALUES (%s, 'app', 'air', '{c}', 'smells', 'blue', %s)",
            (report_id, old(days)),
        )
    for offset, days in enumerate((40, 35, 31, 10)):
        conn.execute(
            "INSERT INTO deadletters (kafka_topic, kafka_partition, kafka_offset, stage, reason,"
            " source, payload_b64, received_at) VALUES ('deadletter', 0, %s, 'ingest', 'bad',"
            " 'mqtt', '', %s)",
            (offset, old(days)),
        )
    for offset, days in ((0, 40), (3, 10)):  # sent again: the record goes with its letter
        conn.execute(
            "INSERT INTO deadletters_resent VALUES ('deadletter', 0, %s, %s, 'http://h/x', %s,"
            " 'cli:a', 'delivered')",
            (offset, old(days), old(1)),
        )
    for offset, days in ((1, 35), (3, 10)):  # replayed: the record goes with its letter
        conn.execute(
            "INSERT INTO deadletters_replayed VALUES ('deadletter', 0, %s, %s, %s, 'cli:a')",
            (offset, old(days), old(1)),
        )


def ids(conn: Conn, table: str, column: str) -> list[str]:
    return [row[0] for row in conn.execute(f"SELECT {column} FROM {table} ORDER BY 1".encode())]


def test_retention_prunes_closed_old_records_and_keeps_open_and_recent(plain: Settings) -> None:
    with db.connect(plain) as conn:
        assert_record_retention(conn)


def assert_record_retention(conn: Conn) -> None:
    """Both flavours: the record tables are plain tables in each."""
    from sinks.maintenance import class_retention
    from sinks.record_retention import prune_records

    seed_records(conn)
    tables = (
        "alerts",
        "alert_transitions",
        "incidents",
        "incident_transitions",
        "dispatches",
        "escalations",
        "reports",
        "deadletters",
        "deadletters_resent",
        "deadletters_replayed",
    )
    count = "SELECT count(*) FROM {}"
    before = {t: conn.execute(count.format(t).encode()).fetchone() for t in tables}

    unset = maintain(conn, NOW)  # no class retention set: nothing goes
    assert unset.pruned == {}
    assert {t: conn.execute(count.format(t).encode()).fetchone() for t in tables} == before

    month = Settings(
        retention_operational_days=30, retention_citizen_days=30, retention_diagnostic_days=30
    )
    report = maintain(conn, NOW, class_retention(month))
    assert report.pruned == {
        "alerts": 1,
        "alert_transitions": 2,
        "incidents": 1,
        "incident_transitions": 1,
        "dispatches": 1,
        "escalations": 1,
        "reports": 2,
        "deadletters": 3,
        "deadletters_resent": 1,
        "deadletters_replayed": 1,
    }, report.pruned
    assert "14 record rows pruned by class retention (alerts 1, " in report.summary()
    assert ids(conn, "alerts", "alert_id") == ["a-firing", "a-listed", "a-recent"]
    assert ids(conn, "alert_transitions", "DISTINCT alert_id") == [
        "a-firing",
        "a-listed",
        "a-recent",
    ]
    assert ids(conn, "incidents", "incident_id") == ["i-open", "i-recent"]
    assert ids(conn, "incident_transitions", "incident_id") == ["i-open", "i-recent"]
    assert ids(conn, "escalations", "incident_id") == ["i-open", "i-recent"]
    assert ids(conn, "dispatches", "dispatch_id") == ["d-digest", "d-open"]
    assert ids(conn, "reports", "report_id") == ["r-open", "r-recent"]
    assert ids(conn, "deadletters", "kafka_offset::text") == ["3"]
    assert ids(conn, "deadletters_resent", "kafka_offset::text") == ["3"]
    assert ids(conn, "deadletters_replayed", "kafka_offset::text") == ["3"]

    # Many old rows go in several batches, each its own statement.
    for offset in range(10, 15):
        conn.execute(
            "INSERT INTO deadletters (kafka_topic, kafka_partition, kafka_offset, stage,"
            " reason, source, payload_b64, received_at) VALUES ('deadletter', 0, %s,"
            " 'ingest', 'bad', 'mqtt', '', %s)",
            (offset, old(60)),
        )
    again = MaintenanceReport(report.flavour)
    prune_records(conn, NOW, Retention(deadletters=timedelta(days=30)), again, batch=2)
    assert again.pruned == {"deadletters": 5, "deadletters_resent": 0, "deadletters_replayed": 0}
    assert ids(conn, "deadletters", "kafka_offset::text") == ["3"]


def test_a_schema_keeps_its_flavour(plain: Settings) -> None:
    with db.connect(plain) as conn:
        conn.execute("UPDATE schema_flavour SET flavour = 'timescale'")
    with pytest.raises(db.FlavourMismatch, match="created for TimescaleDB"):
        db.migrate(plain)
    other = plain.model_copy(update={"database_schema": f"st{uuid.uuid4().hex[:12]}"})
    with pytest.raises(db.FlavourUnavailable, match="no timescaledb extension"):
        db.migrate(other, want="timescale")
    with db.connect(other) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {other.database_schema} CASCADE".encode())


# -- TimescaleDB in PGlite -----------------------------------------------------------------


PGLITE_MODULES = ROOT / ".cache" / "pglite" / "node_modules"
PGLITE_SERVER = ROOT / "tests" / "timescale" / "server.mjs"


def unavailable(reason: str) -> None:
    """Fail under CI (the TimescaleDB path must be tested there); skip elsewhere."""
    message = f"TimescaleDB (PGlite) test server unavailable: {reason}; run ./dev setup"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def timescale() -> Iterator[str]:
    """The database URL of a TimescaleDB build of PGlite on a free loopback port."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed")
    if not (PGLITE_MODULES / "@unni-craftsman" / "pglite" / "dist" / "timescaledb").is_dir():
        unavailable(f"the npm packages are not installed in {PGLITE_MODULES}")
    assert node is not None
    process = subprocess.Popen(
        [node, str(PGLITE_SERVER), str(PGLITE_MODULES), "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    listening = threading.Event()

    def read_output() -> None:  # and keep reading, so that the server never blocks on it
        assert process.stdout is not None
        for text in process.stdout:
            output.append(text)
            if text.startswith("listening "):
                listening.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    if not listening.wait(60):
        process.kill()
        process.wait(timeout=10)
        reader.join(timeout=5)
        unavailable(f"the server did not start within 60 s: {''.join(output)}".strip())
    line = next(text for text in output if text.startswith("listening "))
    host, port = line.split()[1].rsplit(":", 1)
    try:
        yield f"postgresql://postgres:any@{host}:{port}/postgres?sslmode=disable"
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the server stops when its standard input closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_timescale_storage_in_pglite(timescale: str, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    settings = Settings(database_url=timescale, database_schema=f"ts{uuid.uuid4().hex[:12]}")
    assert migrate_with_old_data(settings, monkeypatch) == [
        "0004_storage",
        "0005_indicator_samples",
        "0006_incidents",
        "0007_users",
        "0008_deadletter_key",
        "0009_escalation_from",
        "0010_deadletter_position",
        "0011_dispatch_withdrawal",
        "0012_dispatch_revision",
        "0013_incident_acknowledged",
        "0014_alert_resolution",
        "0015_deadletter_resent",
        "0016_dispatch_summary",
        "0017_dispatch_withdraws_index",
        "0018_dispatch_signals",
        "0019_alert_anomaly",
        "0020_outage_devices",
        "0021_liveness_silent_index",
        "0022_deadletters_device",
        "0023_device_tags",
        "0024_transition_feedback",
        "0025_dispatch_alerts",
        "0026_dispatch_opened",
        "0027_tiers_below_street",
        "0028_deadletters_cause",
        "0029_deadletters_replayed",
    ]  # migrate_data
    assert db.migrate(settings) == []
    assert db.flavour(settings) == "timescale"
    now = datetime.now(UTC)  # TimescaleDB's policies and refreshes go by the real clock
    with db.connect(settings) as conn:
        assert conn.execute(
            "SELECT name, flavour FROM schema_migrations WHERE version = 4"
        ).fetchall() == [("storage", "timescale")]
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM camera_events").fetchone() == (2,)
        conn.execute("DELETE FROM readings")  # NOW is in 2031: keep this test to the real clock
        conn.execute("DELETE FROM camera_events")
        check_timescale_objects(conn)
        start = now - timedelta(days=2, hours=3)
        write_city(conn, start)
        refresh_rollups(conn, since=start - timedelta(days=1))
        assert_rollups_match(conn, "time_bucket")

        # Old data: 120 days (past the retention), 20 days (compressed, kept).
        for age in (120, 20):
            conn.execute(
                INSERT_READING.encode(),
                ("aq-old", "pm25", now - timedelta(days=age), float(age), age, "t", ["c"]),
            )
        # The roll-ups as they were made while those raw rows were young.
        young = Retention(readings=None, readings_1m=None)
        refresh_rollups(conn, since=now - timedelta(days=200), now=now, retention=young)
        kept = "SELECT count(*) FROM {} WHERE device_id = 'aq-old'"
        assert conn.execute(kept.format("readings_1d").encode()).fetchone() == (2,)
        report = maintain(conn, now, since=start)
        assert report.flavour == "timescale"
        assert report.policies_run_here, report  # PGlite runs no background workers
        assert [n for n in report.notes if "scheduler" not in n] == [], report.notes
        assert any("_hyper_" in chunk for chunk in report.dropped), report
        assert report.compressed, report
        assert conn.execute("SELECT value FROM readings WHERE device_id = 'aq-old'").fetchall() == [
            (20.0,)
        ]
        # A refresh from far back, after the raw rows went, keeps the roll-ups kept for good.
        maintain(conn, now, since=now - timedelta(days=200))
        for rollup in ("readings_1h", "readings_1d"):
            assert conn.execute(kept.format(rollup).encode()).fetchone() == (2,), rollup
        compressed = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
            "   AND is_compressed"
        ).fetchone()
        assert compressed is not None and compressed[0] >= 1
        # An upsert into a compressed chunk is still a no-op when it replays a row.
        replay = conn.execute(
            INSERT_READING.encode(),
            ("aq-old", "pm25", now - timedelta(days=20), 20.0, 20, "t", ["c"]),
        )
        assert replay.rowcount == 0
    print(f"TimescaleDB (PGlite) storage test: {time.monotonic() - started:.1f} s")


def check_timescale_objects(conn: Conn) -> None:
    hypertables = conn.execute(
        "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = current_schema() ORDER BY 1"
    ).fetchall()
    assert hypertables == [("camera_events", True), ("indicators", True), ("readings", True)]
    intervals = set(
        conn.execute(
            "SELECT hypertable_name, column_name, time_interval"
            "  FROM timescaledb_information.dimensions"
            " WHERE hypertable_schema = current_schema()"
            "   AND hypertable_name IN ('readings', 'camera_events', 'indicators')"
        ).fetchall()
    )
    assert intervals == {
        ("readings", "ts", timedelta(days=1)),
        ("camera_events", "ts", timedelta(days=1)),
        ("indicators", "window_start", timedelta(days=1)),
    }
    aggregates = conn.execute(
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = current_schema() ORDER BY 1"
    ).fetchall()
    assert aggregates == [(r.name, True) for r in sorted(ROLLUPS, key=lambda r: r.name)]
    for rollup in ROLLUPS:
        expected = (
            READING_ROLLUP_COLUMNS
            if rollup.name.startswith("readings")
            else INDICATOR_ROLLUP_COLUMNS
        )
        assert [c[0] for c in columns(conn, rollup.name)] == expected
    assert columns(conn, "indicators") == INDICATOR_COLUMNS
    jobs = {
        (str(proc), str(table)): config
        for proc, table, config in conn.execute(
            "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs"
            " WHERE hypertable_schema = current_schema()"
        )
    }
    # Retention policies carry exactly the defaults that maintenance uses.
    retention = {
        table: config["drop_after"]
        for (proc, table), config in jobs.items()
        if proc == "policy_retention"
    }
    assert retention == {table: f"{age.days} days" for table, age in Retention().items()}
    compression = {
        table: config["compress_after"]
        for (proc, table), config in jobs.items()
        if proc == "policy_compression"
    }
    assert compression == {"readings": "7 days", "camera_events": "7 days", "indicators": "30 days"}
    refresh = {table for proc, table in jobs if proc == "policy_refresh_continuous_aggregate"}
    assert refresh == {r.name for r in ROLLUPS}
    segment_by = set(
        conn.execute(
            "SELECT hypertable_name, attname FROM timescaledb_information.compression_settings"
            " WHERE hypertable_schema = current_schema() AND segmentby_column_index IS NOT NULL"
        ).fetchall()
    )
    assert segment_by == {
        ("readings", "device_id"),
        ("camera_events", "camera_id"),
        ("indicators", "place_id"),
    }
    # alerts stays an ordinary table.
    assert conn.execute(
        "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'alerts'"
    ).fetchone() == (0,)


def test_an_indicator_window_is_never_replaced_by_one_of_less_data(plain: Settings) -> None:
    """After a restart the stream may report a window again from less data than it had:
    the stored row stays. A report again after late data (a superset) replaces it."""
    from cityvitals.contracts import Indicator, IndicatorQuality, PlaceLevel
    from sinks.postgres import IndicatorSink

    def window(reporting: int, samples: int, value: float, minutes: int) -> Indicator:
        return Indicator(
            indicator="aqi",
            place_id="d1",
            place_level=PlaceLevel.DISTRICT,
            place_path=("c", "d1"),
            window_start=NOW,
            window_s=3600,
            value=value,
            coverage=reporting / 10,
            reporting=reporting,
            expected=10,
            samples=samples,
            quality=IndicatorQuality.GOOD if reporting >= 8 else IndicatorQuality.PARTIAL,
            computed_at=NOW + timedelta(hours=1, minutes=minutes),
        )

    def stored(conn: Conn) -> tuple[Any, ...] | None:
        return conn.execute(
            "SELECT value, reporting, samples FROM indicators WHERE indicator = 'aqi'"
        ).fetchone()

    with db.connect(plain) as conn:
        sink = IndicatorSink(conn)
        sink.write([window(9, 700, 80.0, 1)])
        sink.write([window(6, 300, 120.0, 20)])  # after a restart: fewer devices
        assert stored(conn) == (80.0, 9, 700)
        sink.write([window(9, 400, 95.0, 21)])  # as many devices, fewer samples
        assert stored(conn) == (80.0, 9, 700)
        sink.write([window(9, 720, 81.0, 22)])  # late data: a superset
        assert stored(conn) == (81.0, 9, 720)
        sink.write([window(10, 730, 82.0, 23)])
        assert stored(conn) == (82.0, 10, 730)
        sink.write([window(10, 730, 82.0, 2)])  # an older computation of the same data
        assert conn.execute("SELECT computed_at FROM indicators").fetchone() == (
            NOW + timedelta(hours=1, minutes=23),
        )


def new_schema(pipeline: Pipeline) -> Settings:
    return pipeline.settings.model_copy(update={"database_schema": f"st{uuid.uuid4().hex[:12]}"})


def drop(settings: Settings) -> None:
    with db.connect(settings) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {settings.database_schema} CASCADE".encode())


def test_a_detection_that_ends_its_connection_does_not_stop_the_migration(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a CREATE EXTENSION of a TimescaleDB that is not preloaded does on a real server."""
    settings = new_schema(pipeline)

    def ends_the_session(conn: Conn) -> tuple[str, str]:
        conn.close()
        return "plain", "timescaledb 2.28.1 is available but CREATE EXTENSION ended the connection"

    monkeypatch.setattr(db, "detect_flavour", ends_the_session)
    try:
        assert "0004_storage" in db.migrate(settings)
        assert db.flavour(settings) == "plain"
    finally:
        drop(settings)


def test_a_failing_step_leaves_no_half_migrated_schema_and_the_flavour_free(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Apache build refused 0004 after the schema had been recorded as TimescaleDB: the
    step leaves nothing behind, and once the server is seen as plain the schema migrates."""
    settings = new_schema(pipeline)
    every = db.migrations()
    broken = db.Migration(
        4,
        "storage",
        "",
        (("plain", "CREATE TABLE half_done (x int);\nSELECT no_such_function();"),),
    )
    try:
        with monkeypatch.context() as patch:
            patch.setattr(db, "migrations", lambda: [*(m for m in every if m.version < 4), broken])
            with pytest.raises(psycopg.errors.UndefinedFunction):
                db.migrate(settings)
        with db.connect(settings) as conn:
            assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
            assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (3,)
            conn.execute("UPDATE schema_flavour SET flavour = 'timescale'")  # as 0004 found it
        assert db.migrate(settings)[0] == "0004_storage"
        assert db.flavour(settings) == "plain"
    finally:
        drop(settings)


def test_timescale_record_retention_in_pglite(timescale: str) -> None:
    settings = Settings(database_url=timescale, database_schema=f"ts{uuid.uuid4().hex[:12]}")
    db.migrate(settings)
    assert db.flavour(settings) == "timescale"
    with db.connect(settings) as conn:
        assert_record_retention(conn)


def test_tags_stored_before_their_bounds_are_brought_within_them(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tags the API took before they were bounded (empty, with ';', a tab, over 64 characters,
    more than 32): a device holding them no longer read as one, and one such row stopped
    every listing (and every 'up'). Migration 0023 brings them within the bounds."""
    from device_registry.repositories.devices import get

    settings = pipeline.settings.model_copy(
        update={"database_schema": f"st{uuid.uuid4().hex[:12]}"}
    )
    every = db.migrations()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(db, "migrations", lambda: [m for m in every if m.version < 23])
            db.migrate(settings)
        old = ["ok", "", "a;b", "tab\there", "x" * 70, *(f"t{i}" for i in range(40))]
        with db.connect(settings) as conn:
            conn.execute(
                "INSERT INTO devices (device_id, device_type, place_path, state, tags,"
                " updated_at) VALUES ('old-tags', 'water_level', '{c}', 'active', %s, now())",
                (old,),
            )
        assert db.migrate(settings) == [
            f"{m.version:04d}_{m.name}" for m in every if m.version >= 23
        ]
        with db.connect(settings) as conn, conn.cursor() as cur:
            device = get(cur, "old-tags")  # reads as a device again
        assert device.tags[:4] == ("ok", "a b", "tab here", "x" * 64)
        assert len(device.tags) == 32 and device.tags[4:] == tuple(f"t{i}" for i in range(28))
    finally:
        with db.connect(settings) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {settings.database_schema} CASCADE".encode())
