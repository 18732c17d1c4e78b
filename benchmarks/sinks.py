"""Sink throughput beside raw COPY into the same database, in the same run.

Starts a private PostgreSQL (as ``cityvitals up`` does), applies the migrations, and writes the
same reading rows three ways: raw binary COPY into a bare copy of the readings table (no keys,
no indexes: the floor of what the server can take), the reading sink (COPY into a staging
table, then an idempotent insert into the real table), and the reading sink again over rows
already stored (a replay: every row is a conflict). Then the indicator sink's upserts. Prints
rows/s and the ratio to raw COPY; asserts nothing.

    python -m benchmarks.sinks [--rows 200000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import mkdtemp

from benchmarks.stack import free_port
from cityvitals import db
from cityvitals.contracts import Indicator, IndicatorQuality, PlaceLevel, Reading
from cityvitals.settings import Settings
from sinks.maintenance import maintain
from sinks.postgres import IndicatorSink, ReadingSink
from wiring.servers import create_database, postgres_process
from wiring.stack import StackPaths, wait_for_port


def make_readings(count: int, devices: int = 500) -> list[Reading]:
    """Readings of the last hours, so they land in the day partitions as live data does."""
    rng = random.Random(1)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    out = []
    for i in range(count // 2):  # two metrics per reading
        device = i % devices
        out.append(
            Reading(
                device_id=f"aq-{device:05d}",
                ts=start + timedelta(seconds=60 * (i // devices)),
                seq=i,
                values={"pm25": rng.uniform(5, 200), "pm10": rng.uniform(10, 300)},
                device_type="air_quality",
                place_path=("sim", "sim-d1", f"sim-d1-s{device % 8}", f"sim-d1-s{device % 8}-g1"),
                received_at=start,
            )
        )
    return out


def raw_rows(readings: list[Reading]) -> list[tuple[object, ...]]:
    """The reading sink's rows, in its order (by device), for a raw COPY with psycopg's own
    encoders (a place path as a list)."""
    return [
        (r.device_id, metric, r.ts, value, r.seq, r.device_type, list(r.place_path), r.received_at)
        for r in sorted(readings, key=lambda r: r.device_id)
        for metric, value in r.values.items()
    ]


def make_indicators(count: int) -> list[Indicator]:
    start = datetime(2026, 7, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    return [
        Indicator(
            indicator="aqi",
            place_id=f"sim-d1-s{i % 200}",
            place_level=PlaceLevel.STREET,
            place_path=("sim", "sim-d1", f"sim-d1-s{i % 200}"),
            window_start=start + timedelta(minutes=5 * (i // 200)),
            window_s=300,
            value=float(i % 300),
            band="moderate",
            coverage=0.9,
            reporting=9,
            expected=10,
            quality=IndicatorQuality.GOOD,
            detail={"primary": "pm25"},
            computed_at=now,
        )
        for i in range(count)
    ]


def timed(label: str, rows: int, action: object, floor: float | None = None) -> float:
    assert callable(action)
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    rate = rows / elapsed
    ratio = f"  {rate / floor:5.2f} × raw COPY" if floor else ""
    print(f"{label:<44} {rows:>9,} rows in {elapsed:6.2f} s: {rate:>10,.0f} rows/s{ratio}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="reading rows (metric values)")
    parser.add_argument("--batch", type=int, default=5000, help="readings per sink batch")
    parser.add_argument("--indicators", type=int, default=50_000)
    args = parser.parse_args()
    state = Path(mkdtemp(prefix="cityvitals-bench-"))
    url = f"postgresql://cityvitals@127.0.0.1:{free_port()}/cityvitals"
    settings = Settings(database_url=url, state_dir=state)
    paths = StackPaths(state)
    paths.make()
    server = postgres_process(paths, url)
    try:
        server.start()
        wait_for_port("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]), 60, server)
        create_database(url)
        db.migrate(settings)
        with db.connect(settings) as conn:
            maintain(conn, datetime.now(UTC))  # today's partitions, as the sinks service does
        readings = make_readings(args.rows)
        rows = raw_rows(readings)
        with db.connect(settings) as conn:
            conn.execute("CREATE TABLE bench_raw (LIKE readings)")

            def raw_copy() -> None:
                with (
                    conn.cursor() as cur,
                    cur.copy("COPY bench_raw FROM STDIN (FORMAT BINARY)") as copy,
                ):
                    copy.set_types(list(ReadingSink.types))
                    for row in rows:
                        copy.write_row(row)

            print(f"PostgreSQL {conn.info.server_version}, {len(rows):,} reading rows")
            floor = timed("raw binary COPY (no keys, no indexes)", len(rows), raw_copy)
        sink = ReadingSink(db.connect(settings))
        per = args.batch

        def through_sink() -> None:
            for i in range(0, len(readings), per):
                sink.write(readings[i : i + per])

        timed("reading sink (stage COPY + insert on key)", len(rows), through_sink, floor)
        timed("reading sink, replayed (all conflicts)", len(rows), through_sink, floor)
        indicators = make_indicators(args.indicators)
        isink = IndicatorSink(db.connect(settings))

        def upsert() -> None:
            for i in range(0, len(indicators), 1000):
                isink.write(indicators[i : i + 1000])

        timed("indicator sink (upsert)", len(indicators), upsert, floor)
    finally:
        try:
            server.stop()
        finally:
            remove_state(paths)


def remove_state(paths: StackPaths) -> None:
    """Delete the run's state folder and PostgreSQL's data folder, which lives elsewhere
    (``/var/lib/cityvitals/<hash>``) when run as root."""
    data = paths.postgres_data
    if not data.is_relative_to(paths.state_dir):
        shutil.rmtree(data.parent, ignore_errors=True)
    shutil.rmtree(paths.state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
