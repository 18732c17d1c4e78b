"""Parts of ``cityvitals bench`` (:mod:`benchmarks.bench`): reading the services' counters,
publishing load, and the two stage figures measured beside their ceilings: the streams stage
beside a bare confluent-kafka loop, the reading sink beside raw COPY."""

from __future__ import annotations

import gc
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from cityvitals import db, kafka
from cityvitals.contracts import Device, Reading, ReadingBatch
from cityvitals.settings import Settings
from cityvitals.topics import Topic, partition_for

if TYPE_CHECKING:
    from benchmarks.bench import BenchOptions

__all__ = ["sink", "streams_stage"]


def _metric(port: int, name: str) -> float:
    """The sum of metric ``name``'s samples on the metrics endpoint at ``port``."""
    from wiring.localstack import sample_sum, scrape

    return sample_sum(scrape(port), name)


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of every process under it, living or ended (PostgreSQL
    does its work in a backend process per connection, under the postmaster)."""
    import os

    stats: dict[int, list[str]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stats[int(path.parent.name)] = path.read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue  # ended meanwhile
    children: dict[int, list[int]] = {}
    for child, stat in stats.items():
        children.setdefault(int(stat[1]), []).append(child)
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is not None:
            # utime, stime, and cutime, cstime: of the children it has waited for (ended).
            ticks += sum(int(f) for f in fields[11:15])
        todo.extend(children.get(current, ()))
    return ticks / os.sysconf("SC_CLK_TCK")


def _waited_cpu_seconds() -> float:
    """CPU seconds of this process's children that ended and were waited for (the load's
    MQTT clients, once the run has waited for them)."""
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


class Ticks(NamedTuple):
    """The machine's CPU ticks, all cores: busy, stolen (the host ran another machine while
    this one had work) and in all."""

    busy: int
    steal: int
    total: int


def machine_ticks(stat: str | None = None) -> Ticks:
    """The ticks since boot, from ``/proc/stat`` (or its text ``stat``): user, nice, system,
    irq and softirq are busy; idle and iowait are not; guest time is in user time already.

    >>> machine_ticks("cpu  10 1 5 100 4 2 3 7 9 0")
    Ticks(busy=21, steal=7, total=132)
    """
    line = (stat or Path("/proc/stat").read_text()).split("\n", 1)[0]
    f = [int(v) for v in line.split()[1:9]] + [0] * 8
    return Ticks(f[0] + f[1] + f[2] + f[5] + f[6], f[7], sum(f[:8]))


def cpu_figures(
    cpu: dict[str, float], clients: float, stored: int, ticks: Ticks, cores: int
) -> dict[str, Any]:
    """An end-to-end run's CPU figures: each process's and the load clients' CPU seconds per
    1000 readings, the share of the machine's ticks that was busy and stolen during the run
    (``ticks``: its difference), and the rate at which these CPU costs would keep all
    ``cores`` busy.

    >>> cpu_figures({"a": 1.0, "b": 0.5}, 0.5, 4000, Ticks(150, 10, 200), 2)["cpu_bound_readings_per_s"]
    4000
    """
    per = 1000 / max(stored, 1)
    return {
        "cpu_s_per_1000": {name: round(s * per, 4) for name, s in cpu.items()},
        "load_clients_cpu_s_per_1000": round(clients * per, 4),
        "machine_busy": round(ticks.busy / max(ticks.total, 1), 3),
        "machine_steal": round(ticks.steal / max(ticks.total, 1), 3),
        "cpu_bound_readings_per_s": round(
            cores * max(stored, 1) / max(sum(cpu.values()) + clients, 1e-9)
        ),
    }


def _stored(settings: Settings, prefix: str) -> int:
    with db.connect(settings) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE metric = 'pm25' AND device_id LIKE %s",
            (prefix + "%",),
        ).fetchone()
    return int(str(row[0])) if row else 0


def _body(ts: datetime, seq: int, pm25: float) -> dict[str, Any]:
    return {"ts": ts.isoformat(), "seq": seq, "values": {"pm25": pm25, "pm10": 60.0}}


def _line(ts: datetime, seq: int, pm25: float) -> bytes:
    """One reading as one MQTT message (a line of ``mosquitto_pub -l``)."""
    return (json.dumps(_body(ts, seq, pm25)) + "\n").encode()


def _pack_line(readings: list[tuple[datetime, int, float]]) -> bytes:
    """Readings as one MQTT message: a pack (JSON array), or one reading alone."""
    if len(readings) == 1:
        return _line(*readings[0])
    return (json.dumps([_body(*r) for r in readings]) + "\n").encode()


def _publisher(
    settings: Settings, device_id: str, secret: str, window: int
) -> subprocess.Popen[bytes]:
    """Mosquitto's C client publishing the lines of its stdin at QoS 1 (little CPU)."""
    return subprocess.Popen(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(settings.mqtt_port),
            "-q",
            "1",
            "-M",
            str(window),
            "-u",
            device_id,
            "-P",
            secret,
            "-t",
            f"{settings.mqtt_topic_root}/{device_id}/readings",
            "-l",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )


def _wait(done: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(every)
    return done()


def partition_ends(consumer: Consumer, topic: str) -> list[TopicPartition]:
    """Where each partition of ``topic`` ends now, to read what comes after. tansu may give
    the end one short: a message or two before it are included (tell them by timestamp)."""
    ends = []
    for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
        ends.append(TopicPartition(topic, p, max(low, high - 2)))
    return ends


class Outputs:
    """A stage's output messages (``ReadingBatch``, one per input message) on ``topic``, sent
    from now on: timed by their Kafka timestamps (when the stage sent each), so measuring asks
    nothing of the stage: scraping its metrics 20 times a second, as the small job did, was 8 %
    of its busy time (py-spy), and reading a counter is no clock of when work was done."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.since_ms = int(time.time() * 1000)
        self.consumer: Consumer = kafka.consumer(settings, f"bench-outputs-{uuid.uuid4().hex[:8]}")
        # From the end of each partition, assigned (a subscription's "latest" is looked up
        # only at its first fetch, which may come after the stage's first output).
        self.consumer.assign(partition_ends(self.consumer, topic))
        self.messages: list[Any] = []

    def wait(self, count: int, timeout: float, going: Callable[[], bool] = lambda: True) -> None:
        """Until ``count`` messages sent since this was made have come (or the timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline and going():
            for msg in kafka.consume_batch(self.consumer, 500, 0.5):
                # the gateway's heartbeats (no items) are no output of the stage measured
                if msg.timestamp()[1] >= self.since_ms and not _heartbeat(msg.value() or b""):
                    self.messages.append(msg)

    def rate(self) -> tuple[int, float | None]:
        """Readings in the messages, and readings per second: those after the first message
        over the time from the first message to the last (None with fewer than two)."""
        self.consumer.close()
        stamped = sorted(
            (m.timestamp()[1], len(ReadingBatch.model_validate_json(m.value())))
            for m in self.messages
        )
        total = sum(n for _, n in stamped)
        if len(stamped) < 2 or stamped[-1][0] <= stamped[0][0]:
            return total, None
        return total, (total - stamped[0][1]) / ((stamped[-1][0] - stamped[0][0]) / 1000)


def _heartbeat(value: bytes) -> bool:
    return b'"heartbeat":"' in value and not len(ReadingBatch.model_validate_json(value))


# --- the measurements -------------------------------------------------------------------------


def _batches(
    devices: list[Device], count: int, partitions: int, per: int
) -> list[tuple[int, bytes]]:
    """``count`` readings as ReadingBatch messages of ``per`` readings, each to its devices'
    partition (as the gateway sends them)."""
    start = datetime.now(UTC) + timedelta(seconds=1)
    by_partition: dict[int, list[Reading]] = {}
    for n in range(count):
        device = devices[n % len(devices)]
        by_partition.setdefault(partition_for(device.device_id, partitions), []).append(
            Reading(
                device_id=device.device_id,
                ts=start + timedelta(milliseconds=n // len(devices)),
                seq=20_000_000 + n,
                values={"pm25": 30.0 + n % 9, "pm10": 60.0},
                received_at=start,
            )
        )
    out = []
    for partition, readings in by_partition.items():
        for i in range(0, len(readings), per):
            batch = ReadingBatch(readings=tuple(readings[i : i + per]))
            out.append((partition, batch.model_dump_json().encode()))
    return out


def streams_stage(settings: Settings, devices: list[Device], opts: BenchOptions) -> dict[str, Any]:
    """The Faust stage on pre-made batches, then a bare confluent-kafka loop doing the same."""
    from streams.pipeline import ParsedMemories, process_batch
    from streams.validation import registry_entry
    from wiring.services import load_catalogue, load_rules

    raw = settings.topic(Topic.READINGS_RAW)
    producer = kafka.producer(settings)
    partitions = kafka.partition_count(producer, raw)
    batches = _batches(devices, opts.stream_readings, partitions, 250)
    outputs = Outputs(settings, settings.topic(Topic.READINGS))
    for partition, value in batches:
        producer.produce(raw, value, partition=partition)
    producer.flush(30)
    outputs.wait(len(batches), opts.timeout_s)
    done, rate = outputs.rate()

    # The ceiling: the same job in a bare loop, over every message of readings.raw, with the
    # garbage collector tuned as in the stream worker (wiring.services).
    from wiring.services import GC_THRESHOLDS

    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    scratch = settings.topic(Topic.READINGS) + ".bench"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    config = {"retention.ms": "600000", "retention.bytes": "-1"}
    created = admin.create_topics([NewTopic(scratch, partitions, 1, config=config)])
    created[scratch].result(30)
    rules, catalogue = load_rules(settings), load_catalogue(settings)
    entries: dict[str, Any] = {d.device_id: registry_entry(d) for d in devices}
    states: dict[str, Any] = {}
    marks: dict[str, Any] = {}
    parsed = ParsedMemories()  # as the stream worker keeps them
    consumer: Consumer = kafka.consumer(settings, f"bench-ceiling-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([raw])
    out: Producer = kafka.producer(settings)
    count, idle, began = 0, 0.0, None
    while idle < (2.0 if began else 20.0):  # joining the group takes seconds
        messages = [
            m for m in kafka.consume_batch(consumer, 500, 0.5) if not _heartbeat(m.value() or b"")
        ]
        if not messages:  # nothing, or the gateway's heartbeats alone
            idle += 0.5
            continue
        idle = 0.0
        began = began or time.monotonic()
        for msg in messages:
            batch = ReadingBatch.model_validate_json(msg.value() or b"{}")
            if batch.tick is not None or batch.heartbeat is not None:
                continue
            ids = {r.device_id for r in batch.readings}
            outcome = process_batch(
                batch,
                {d: entries.get(d) for d in ids},
                {d: states.get(d) for d in ids},
                rules,
                "bench",
                datetime.now(UTC),
                catalogue,
                {d: marks.get(d) for d in ids},
                msg.offset() or 0,
                parsed,
            )
            out.produce(
                scratch, outcome.enriched.model_dump_json().encode(), partition=msg.partition() or 0
            )
            for alert in outcome.alerts:
                out.produce(scratch, alert.model_dump_json().encode())
            for partial in outcome.partials:
                out.produce(scratch, partial.model_dump_json().encode())
            states.update(outcome.changed_states)
            marks.update(outcome.changed_marks)
            count += len(batch)
        out.poll(0)
    out.flush(30)
    ceiling_s = time.monotonic() - (began or time.monotonic()) - (idle if began else 0.0)
    consumer.close()
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    ceiling = count / max(ceiling_s, 1e-9)
    return {
        "readings": opts.stream_readings,
        "forwarded": done,
        "readings_per_s": round(rate) if rate else None,
        "ceiling_readings_per_s": round(ceiling),
        "ratio_to_ceiling": round(rate / ceiling, 3) if count and rate else None,
        "ceiling": "a bare confluent-kafka loop: decode, process_batch, produce, every message of readings.raw",
    }


def _copy_seconds(conn: Any, table: str, like: str, rows: list[tuple[object, ...]]) -> float:
    """Seconds to binary-COPY ``rows`` into a new table made ``like`` (dropped after)."""
    from sinks.postgres import ReadingSink

    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({like})")
    started = time.perf_counter()
    with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(ReadingSink.types))
        for row in rows:
            copy.write_row(row)
    seconds = time.perf_counter() - started
    conn.execute(f"DROP TABLE {table}")
    return seconds


def sink(settings: Settings, rows: int) -> dict[str, Any]:
    """The reading sink beside raw binary COPY of the same rows into a bare copy of the table,
    with psycopg's own encoders (``raw``) and with the sink's encoding of place paths
    (``raw_same_encoding``: the floor of the server and of COPY itself)."""
    from benchmarks.sinks import make_readings, raw_rows
    from sinks.base import TextArrayDumper
    from sinks.postgres import ReadingSink

    readings = make_readings(rows)
    copy_rows = raw_rows(readings)
    with db.connect(settings) as conn:
        raw_s = _copy_seconds(conn, "bench_raw", "LIKE readings", copy_rows)
        conn.adapters.register_dumper(None, TextArrayDumper)
        same_s = _copy_seconds(conn, "bench_raw", "LIKE readings", copy_rows)
        # The same rows into a copy of the table with its key and indexes: what they cost,
        # apart from the sink's Python work.
        keyed_s = _copy_seconds(conn, "bench_keyed", "LIKE readings INCLUDING ALL", copy_rows)
    writer = ReadingSink(db.connect(settings))
    started = time.perf_counter()
    for i in range(0, len(readings), 2500):
        writer.write(readings[i : i + 2500])
    sink_s = time.perf_counter() - started
    writer.close()
    n = len(copy_rows)
    return {
        "rows": n,
        "raw_copy_rows_per_s": round(n / raw_s),
        "raw_copy_same_encoding_rows_per_s": round(n / same_s),
        "keyed_copy_rows_per_s": round(n / keyed_s),
        "keyed_copy_ratio_to_raw_copy_same_encoding": round(same_s / keyed_s, 3),
        "rows_per_s": round(n / sink_s),
        "ratio_to_raw_copy": round(raw_s / sink_s, 3),
        "ratio_to_raw_copy_same_encoding": round(same_s / sink_s, 3),
    }
