"""``cityvitals bench``: the speed figures of issue 12 beside their ceilings, in one run, as JSON.

On private local stacks (each its own state folder and loopback ports) it measures, one
after the other (1 on a first stack; 2-5 on a second, fresh one, started when the first has
stopped):

1. end to end: D devices publish N readings at QoS 1 through Mosquitto's C client, one
   reading per MQTT message; readings stored per second, the readings lost (published but not
   stored), each process's CPU seconds per 1000 readings, the load's MQTT clients' (they share
   the machine's cores: ``load_clients_cpu_s_per_1000``) and the share of all the machine's
   cores that was busy meanwhile (``machine_busy``; ``machine_steal``: taken by the host for
   other machines), and the rate at which those CPU costs would keep every core this process
   may use busy (``cpu_bound_readings_per_s``); then the same with other devices
   that send packs of P readings per message (``end_to_end_packed``: devices that buffer, or
   a field gateway forwarding them);
2. alert latency at half that rate: background load at half the end-to-end rate while a
   marker device alternates a PM2.5 value that fires and one that resolves; MQTT publish ->
   the transition on the ``alerts`` topic, p50 and p99;
3. the streams stage: batches produced straight onto ``readings.raw`` and the time the Faust
   stage takes to forward them, beside a bare confluent-kafka loop doing the same job
   (decode, :func:`streams.pipeline.process_batch`, produce its outputs) over the same topic;
4. the streams stage beside Quix Streams on the design's small job (parse, alert on a
   threshold, count per 10 s window; :mod:`benchmarks.small_job` says what each side does):
   a second streams worker with just that rule and that window, and a Quix Streams process,
   over the same readings (``streams_small_job``);
5. the reading sink beside raw binary COPY into a bare copy of the table, same database (and
   raw COPY into a copy of the table with its key and indexes: what they cost).

Why two stacks: the local broker, tansu in memory, lists every batch a partition holds at
each fetch that returns data (and has no retention or DeleteRecords), so its work per fetch
grows with everything stored before. Measured at a steady 2,500 readings/s, its CPU went from
0.32 to 0.58 of a core over four 33 s latency runs on one stack, and the latency's p99 from
273 to 626 ms; after the end-to-end runs the latency would measure mostly the broker's past.

Machines differ and share their cores: the ratios measured in one run are what compare.
The document gives each figure's target and the gap to it (:func:`report`, pure). A target
may be relative to another figure of the same run: the full job's streams stage is held to 2x
the Quix Streams rate measured on the small job (Quix runs only the small job: the full job,
with every shipped rule, the indicator catalogue and the registry, is ours alone).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.bench_parts import (
    Ticks,
    _body,
    _cpu_seconds,
    _line,
    _metric,
    _pack_line,
    _publisher,
    _stored,
    _wait,
    _waited_cpu_seconds,
    cpu_figures,
    machine_ticks,
    partition_ends,
    sink,
    streams_stage,
)
from benchmarks.small_job import QUIX_PYTHON, small_job
from cityvitals import kafka
from cityvitals.contracts import Device
from cityvitals.settings import Settings
from cityvitals.topics import Topic

__all__ = ["TARGETS", "BenchOptions", "Target", "report", "run"]


@dataclass(frozen=True, slots=True)
class Target:
    """A figure's target: ``at_least`` (higher is better) or at most (lower is better)."""

    figure: str
    value: float
    at_least: bool
    goal: float | None = None
    note: str = ""
    times: str | None = None
    """When set, the target is ``value`` times this figure of the same run."""


MARK_EVERY_S = 0.2
"""Seconds between the latency run's markers."""
WARM_UP_S = 3.0
"""Seconds of background load before the first marker (the load is steady by then)."""
SINK_ROWS = 'cityvitals_sinks_rows_total{table="readings"}'
"""The reading rows the sink has newly written (one per value of a reading)."""
SINK_LAST_WRITE = 'cityvitals_sinks_last_write_timestamp_seconds{table="readings"}'
"""When the sink last wrote reading rows (Unix time): the end of an end-to-end run."""
SINK_POLL_S = 0.2
"""How often the end-to-end run reads the sink's counter (each read costs the sink a little
CPU, counted in its figure). The run's end is the sink's last write, not the read that saw
it: found by the read, it came up to this late (on a 1.6 s run, up to 12 %)."""
SETTLE_S = 5.0
"""Pause between the latency run and the streams stage's run: the stages finish the backlog
of the run before (indicators, ticks)."""

TARGETS: tuple[Target, ...] = (
    Target("end_to_end.readings_per_s", 20_000, True, 30_000, "with zero loss"),
    Target("end_to_end.lost", 0, False),
    Target("end_to_end_packed.readings_per_s", 20_000, True, 30_000, "with zero loss"),
    Target("end_to_end_packed.lost", 0, False),
    Target(
        "streams.readings_per_s",
        2,
        True,
        note="the full job at 2x Quix Streams on the small job, both measured in this run",
        times="streams_small_job.quix_msg_per_s",
    ),
    Target(
        "streams_small_job.ratio_to_quix",
        2,
        True,
        note="the small job: our streams stage at 2x Quix Streams, same readings, same run",
    ),
    Target("alert_latency.p99_ms", 250, False, note="at half the top end-to-end load"),
    Target("sink.ratio_to_raw_copy", 0.5, True),
)


def _lookup(figures: Mapping[str, Any], path: str) -> float | None:
    node: Any = figures
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if node is None else float(node)


def report(figures: Mapping[str, Any], date: str) -> dict[str, Any]:
    """The bench's document: the figures, the date, and each target with its gap.

    ``gap`` is how far the figure is from the target in the target's direction (0 when it
    is met; None when the figure, or the one a relative target multiplies, was not measured).

    >>> doc = report({"sink": {"ratio_to_raw_copy": 0.31}}, "2026-12-01")
    >>> [t for t in doc["targets"] if t["figure"] == "sink.ratio_to_raw_copy"]
    [{'figure': 'sink.ratio_to_raw_copy', 'target': 0.5, 'direction': 'at least', 'measured': 0.31, 'met': False, 'gap': 0.19, 'goal': None, 'note': ''}]
    """
    targets = []
    for t in TARGETS:
        measured = _lookup(figures, t.figure)
        value: float | None = t.value
        if t.times is not None:
            base = _lookup(figures, t.times)
            value = None if base is None else round(t.value * base, 4)
        if measured is None or value is None:
            met, gap = None, None
        else:
            short = value - measured if t.at_least else measured - value
            met, gap = short <= 0, round(max(short, 0.0), 4)
        targets.append(
            {
                "figure": t.figure,
                "target": value,
                "direction": "at least" if t.at_least else "at most",
                "measured": measured,
                "met": met,
                "gap": gap,
                "goal": t.goal,
                "note": t.note,
            }
        )
    return {"date": date, **figures, "targets": targets}


@dataclass(frozen=True, slots=True)
class BenchOptions:
    readings: int = 200_000
    """Readings of each end-to-end run: 8-16 s of load here, so the rate is the pipeline's
    sustained one. A burst of 30,000 (1.4-1.7 s) measured mostly how long the stages take to
    fill and drain: 19,216-21,553 readings/s one per message on the morning of 2026-12-06,
    against 25,196-27,299 with 200,000 (docs/speed.md)."""
    devices: int = 30
    pack: int = 10
    """Readings per MQTT message of the packed end-to-end run."""
    window: int = 1000
    latency_s: float = 30.0
    """Seconds of markers (one every 0.2 s): of 150, p99 lies between the two worst (of 50
    it was the worst)."""
    latency_load: float = 0.0
    """Background readings/s of the latency run; 0: half the end-to-end rate."""
    latency_tick_s: float = 0.1
    """The latency run writes its background load to the publishers every this many seconds:
    a tick's readings at once (0.1 s: bursts; 0.02 s: a steadier trickle)."""
    stream_readings: int = 30_000
    small_job_readings: int = 100_000
    """Readings of the small job, on our stage and on Quix Streams (each)."""
    quix_python: Path = QUIX_PYTHON
    """The interpreter of the environment holding Quix Streams."""
    sink_rows: int = 100_000
    timeout_s: float = 120.0
    stream_workers: int = 1
    """Stream workers in one consumer group on the end-to-end and latency runs' stacks (the
    stack's own and more, each its own process): a deployment runs one a core."""


# --- helpers ---------------------------------------------------------------------------------


def end_to_end(
    settings: Settings,
    stack: Any,
    credentials: dict[str, str],
    opts: BenchOptions,
    pack: int = 1,
    stream_ports: Sequence[int] = (),
) -> dict[str, Any]:
    """All readings written to the clients' stdin at once: the pipeline's top rate; ``pack``
    readings per MQTT message. The devices are the run's own (their readings are counted);
    ``stream_ports``: the metrics ports of the stream workers (the stack's own if none)."""
    per_device = max(opts.readings // len(credentials), 1)
    expected = per_device * len(credentials)
    base = datetime.now(UTC) - timedelta(seconds=per_device * 0.001 + 60)
    prefix = next(iter(credentials)).rsplit("-", 1)[0] + "-"
    loads = {
        device_id: b"".join(
            _pack_line(
                [
                    (base + timedelta(milliseconds=seq), seq, 35.0 + seq % 7)
                    for seq in range(first, min(first + pack, per_device + 1))
                ]
            )
            for first in range(1, per_device + 1, pack)
        )
        for device_id in credentials
    }
    procs = {p.name: p.popen.pid for p in stack.processes if p.popen}
    # The same devices may have sent before (the latency run's load, with --latency-load).
    already = _stored(settings, prefix)
    # Done when the sink has written them: its counter is cheap to read, where a count of the
    # stored rows took PostgreSQL up to 90 ms, ten times a second, from the run it measured.
    written = _metric(stack.metrics.sinks, SINK_ROWS)
    before = {name: _cpu_seconds(pid) for name, pid in procs.items()}
    clients_before, machine = _waited_cpu_seconds(), machine_ticks()
    start, started_at = time.monotonic(), time.time()
    publishers = [_publisher(settings, d, s, opts.window) for d, s in sorted(credentials.items())]
    for proc, device_id in zip(publishers, sorted(credentials), strict=True):
        assert proc.stdin is not None
        proc.stdin.write(loads[device_id])
        proc.stdin.close()
    for proc in publishers:
        proc.wait()
    published = time.monotonic() - start  # every reading handed to Mosquitto, acknowledged
    clients = _waited_cpu_seconds() - clients_before
    rows = expected * len(_body(base, 0, 0.0)["values"])  # a row per value
    _wait(
        lambda: _metric(stack.metrics.sinks, SINK_ROWS) - written >= rows,
        opts.timeout_s,
        SINK_POLL_S,
    )
    last_write = _metric(stack.metrics.sinks, SINK_LAST_WRITE)
    # No write during the run (nothing stored): the time the wait ended.
    elapsed = last_write - started_at if last_write > started_at else time.monotonic() - start
    cpu = {name: _cpu_seconds(pid) - before[name] for name, pid in procs.items()}
    ticks = Ticks(*(now - then for now, then in zip(machine_ticks(), machine, strict=True)))
    got = _stored(settings, prefix) - already
    ports = stack.metrics
    return {
        "readings": expected,
        "devices": len(credentials),
        "readings_per_message": pack,
        "readings_per_s": round(got / elapsed),
        "seconds": round(elapsed, 2),
        "published_s": round(published, 2),
        "stored": got,
        "lost": expected - got,
        "rejected": {
            "ingest": _metric(ports.ingest, "cityvitals_ingest_rejected_total"),
            "streams": sum(
                _metric(port, "cityvitals_streams_rejected_total")
                for port in stream_ports or (ports.streams,)
            ),
        },
        "stream_workers": len(stream_ports) or 1,
        **cpu_figures(cpu, clients, got, ticks, len(os.sched_getaffinity(0))),
    }


def alert_latency(
    settings: Settings,
    credentials: dict[str, str],
    marker: tuple[str, str],
    rate: float,
    opts: BenchOptions,
) -> dict[str, Any]:
    """Background load at ``rate`` readings/s while the marker fires and resolves an alert
    every 0.2 s; latency from its MQTT publish to the transition on ``alerts``, and per hop
    (:func:`_hops`)."""
    marker_id, marker_secret = marker
    sent: dict[str, tuple[float, float]] = {}  # ts -> (monotonic, wall clock) of the publish
    latencies: list[float] = []
    marks: list[str] = []
    # ts -> (wall clock of the publish, of the alert's production, of its arrival here)
    arrived: dict[str, tuple[float, float, float]] = {}
    stop = threading.Event()
    # A short fetch wait: the broker may hold a fetch that finds nothing for the whole wait.
    consumer = kafka.consumer(
        settings,
        f"bench-latency-{uuid.uuid4().hex[:8]}",
        **{"fetch.wait.max.ms": 10, "auto.offset.reset": "latest"},
    )
    assigned = threading.Event()
    alerts_topic, raw_topic = settings.topic(Topic.ALERTS), settings.topic(Topic.READINGS_RAW)
    consumer.subscribe([alerts_topic], on_assign=lambda *_: assigned.set())
    # The gateway's messages are read after the run, not during it: following readings.raw
    # live made the broker serve each of its batches to one more consumer (listing the
    # partition's batches for each fetch that returns data, see the module docstring).
    raw_from = partition_ends(consumer, raw_topic)
    marker_bytes = marker_id.encode()

    def listen() -> None:
        while not stop.is_set() or (sent and time.monotonic() < stopped_at + 5):
            # One message at a time: a batch call returns only when full or timed out, which
            # would add up to its timeout to every latency.
            msg = consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                value = msg.value() or b"{}"
                if marker_bytes not in value:
                    continue
                produced = msg.timestamp()[1] / 1000
                alert = json.loads(value)
                at = sent.pop(alert.get("ts", ""), None)
                if at is None:
                    continue
                (published, wall), now = at, time.monotonic()
                latencies.append(now - published)
                arrived[alert["ts"]] = (wall, produced, time.time())

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-marker-{uuid.uuid4().hex[:6]}"
    )
    client.username_pw_set(marker_id, marker_secret)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    publishers = {
        d: _publisher(settings, d, s, opts.window) for d, s in sorted(credentials.items())
    }
    stopped_at = float("inf")
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assigned.wait(30)  # joining the group takes seconds; markers sent before would wait it
    seq = {d: 10_000_000 for d in credentials}
    start = time.monotonic()
    tick, n = opts.latency_tick_s, 0
    mark_every = max(round(MARK_EVERY_S / tick), 1)
    per_tick = rate * tick / max(len(credentials), 1)
    owed = 0.0
    while time.monotonic() - start < WARM_UP_S + opts.latency_s:
        owed += per_tick
        count, owed = int(owed), owed - int(owed)
        now = datetime.now(UTC)
        for device_id, proc in publishers.items():
            assert proc.stdin is not None
            lines = []
            for _ in range(count):
                seq[device_id] += 1
                lines.append(
                    _line(now + timedelta(microseconds=seq[device_id] % 1000), seq[device_id], 40.0)
                )
            proc.stdin.write(b"".join(lines))
            proc.stdin.flush()
        if n % mark_every == 0 and time.monotonic() - start >= WARM_UP_S:
            ts = datetime.now(UTC)
            key = ts.isoformat().replace("+00:00", "Z")
            sent[key] = (time.monotonic(), time.time())
            # The first fires, the next resolves, and so on: each makes a transition.
            pm25 = 100.0 if len(marks) % 2 == 0 else 10.0
            marks.append(key)
            body = {"ts": ts.isoformat(), "seq": n, "values": {"pm25": pm25}}
            client.publish(
                f"{settings.mqtt_topic_root}/{marker_id}/readings", json.dumps(body), qos=1
            )
        n += 1
        time.sleep(max(0.0, start + n * tick - time.monotonic()))
    stopped_at = time.monotonic()
    stop.set()
    for proc in publishers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    listener.join(10)
    consumer.close()
    on_raw = _marker_on_raw(settings, raw_from, marker_id)
    hops = [
        (on_raw[ts] - wall, produced - on_raw[ts], got - produced)
        for ts, (wall, produced, got) in arrived.items()
        if ts in on_raw
    ]
    client.loop_stop()
    client.disconnect()
    out: dict[str, Any] = {
        "load_readings_per_s": round(rate),
        "load_tick_s": opts.latency_tick_s,
        "markers": len(latencies) + len(sent),
        "missing": len(sent),
        "missing_markers": [
            f"{i} of {len(marks)}: {k}" for i, k in sorted((marks.index(k), k) for k in sent)[:5]
        ],
        **_percentiles(latencies),
        "hops_ms": _hops(hops),
    }
    return out


def _marker_on_raw(settings: Settings, since: list[Any], marker_id: str) -> dict[str, float]:
    """The marker's readings on ``readings.raw`` from ``since`` on: reading ts -> the wall
    clock the gateway produced its batch at (the message's Kafka timestamp)."""
    consumer = kafka.consumer(settings, f"bench-raw-{uuid.uuid4().hex[:8]}")
    consumer.assign(since)
    out: dict[str, float] = {}
    marker_bytes = marker_id.encode()
    try:
        while messages := kafka.consume_batch(consumer, 500, 2.0):
            for msg in messages:
                value = msg.value() or b"{}"
                if marker_bytes not in value:
                    continue
                for reading in json.loads(value).get("readings", ()):
                    if reading.get("device_id") == marker_id:
                        out[reading["ts"]] = msg.timestamp()[1] / 1000
    finally:
        consumer.close()
    return out


HOPS = ("mqtt_to_raw", "raw_to_alert", "alert_to_consumer")
"""The latency's hops, by the Kafka timestamps of the marker's messages: MQTT publish -> the
gateway's produce onto ``readings.raw``; -> the stream stage's produce onto ``alerts``; -> a
consumer has it. The clocks are one machine's."""


def _percentiles(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50 and p99 in milliseconds, None with fewer than two samples.

    >>> _percentiles([0.1, 0.2, 0.3])
    {'p50_ms': 200.0, 'p99_ms': 396.0}
    >>> _percentiles([0.1])
    {'p50_ms': None, 'p99_ms': None}
    """
    if len(seconds) < 2:
        return {"p50_ms": None, "p99_ms": None}
    q = statistics.quantiles(seconds, n=100)
    return {"p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}


def _hops(samples: Sequence[tuple[float, ...]]) -> dict[str, Any]:
    """Each hop's p50 and p99 (:data:`HOPS`, in order) over the markers whose message on
    ``readings.raw`` was found (``samples`` of them)."""
    hops: dict[str, Any] = {
        name: _percentiles([s[i] for s in samples]) for i, name in enumerate(HOPS)
    }
    return {**hops, "samples": len(samples)}


def _progress(figures: Mapping[str, Any]) -> None:
    """What is measured so far, on stderr (a later failure does not lose it)."""
    print(json.dumps(figures), file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class _Fleet:
    """The devices a bench stack knows: their credentials, one per message and in packs, and
    the marker of the latency run."""

    devices: list[Device]
    credentials: dict[str, str]
    packed: dict[str, str]
    marker: tuple[str, str]
    stream_ports: tuple[int, ...]
    """The metrics ports of the stack's stream workers (its own first)."""


def _register(
    settings: Settings, devices: list[Device], packing: list[Device]
) -> tuple[dict[str, str], dict[str, str]]:
    """Register both fleets; their MQTT credentials. The registry, its Kafka producer with it,
    is let go on return: held in the stack's frame, the producer went on calling the stopped
    broker until the bench ended."""
    from wiring.services import open_registry

    with open_registry(settings) as registry:
        return (
            dict(registry.add_many(devices, "benchmark")),
            dict(registry.add_many(packing, "benchmark")),
        )


def _more_stream_workers(settings: Settings, stack: Any, count: int) -> tuple[int, ...]:
    """Start ``count`` stream workers in the stack's group beside its own (each its own
    process and metrics port, stopped with the stack); every worker's metrics port, once
    all report ready (after their group's rebalance)."""
    from benchmarks.stack import free_port
    from wiring.localstack import reports_ready
    from wiring.stack import ManagedProcess

    ports = [stack.metrics.streams]
    for n in range(2, count + 2):
        ports.append(free_port())
        env = settings.model_copy(update={"metrics_port": ports[-1]}).to_env()
        command = [sys.executable, "-m", "wiring.cli", "run", "streams"]
        worker = ManagedProcess(f"streams-{n}", command, stack.paths, env=env)
        worker.start()
        stack.processes.append(worker)
    deadline = time.monotonic() + 120
    while not all(reports_ready("streams", port) for port in ports):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {len(ports)} stream workers were not ready after 120 s")
        time.sleep(0.2)
    return tuple(ports)


@contextmanager
def _bench_stack(
    opts: BenchOptions, stream_workers: int = 1
) -> Iterator[tuple[Settings, Any, _Fleet]]:
    """A private stack, started and ready, with ``stream_workers`` stream workers and the
    bench's devices registered; stopped and purged on leaving."""
    from benchmarks.stack import private_stack
    from wiring.localstack import down

    settings, stack = private_stack()
    state = settings.state_dir
    try:
        settings = stack.start_infrastructure()
        stack.start_services()
        stack.wait_ready()
        stream_ports = _more_stream_workers(settings, stack, stream_workers - 1)
        now = datetime.now(UTC)
        devices = [
            Device(
                device_id=f"bench-{i:05d}",
                device_type="air_quality",
                place_path=("bench", f"bench-d{i % 4}", f"bench-d{i % 4}-s{i % 8}"),
                updated_at=now,
            )
            for i in range(opts.devices + 1)
        ]
        packing = [
            d.model_copy(update={"device_id": d.device_id.replace("bench-", "packed-")})
            for d in devices[:-1]
        ]
        credentials, packed = _register(settings, devices, packing)
        time.sleep(1)  # the broker reloads its password file
        marker = devices[-1].device_id
        marker_of = (marker, credentials.pop(marker))
        yield settings, stack, _Fleet(devices[:-1], credentials, packed, marker_of, stream_ports)
    finally:
        stack.stop()
        down(state, purge=True)


def run(opts: BenchOptions) -> dict[str, Any]:
    """Measure everything on two private stacks, one after the other; the figures (see
    :func:`report`).

    The end-to-end runs have the first stack. The alert latency, the streams stage, the small
    job and the sink have a second, fresh one: the local broker (tansu in memory) lists every
    batch a partition holds at each fetch that returns data, so its cost grows with what the
    runs before stored (module docstring). The end-to-end and latency runs have
    ``opts.stream_workers`` stream workers; the streams stage and the small job, which compare
    one process with one, the stack's own alone (the others stopped, the group settled)."""
    figures: dict[str, Any] = {}
    with _bench_stack(opts, opts.stream_workers) as (settings, stack, fleet):
        figures["end_to_end"] = end_to_end(
            settings, stack, fleet.credentials, opts, stream_ports=fleet.stream_ports
        )
        _progress(figures)
        figures["end_to_end_packed"] = end_to_end(
            settings, stack, fleet.packed, opts, opts.pack, fleet.stream_ports
        )
        _progress(figures)
    rate = opts.latency_load or figures["end_to_end"]["readings_per_s"] / 2
    with _bench_stack(opts, opts.stream_workers) as (settings, stack, fleet):
        figures["alert_latency"] = alert_latency(
            settings, fleet.credentials, fleet.marker, rate, opts
        )
        figures["alert_latency"]["stream_workers"] = len(fleet.stream_ports)
        _progress(figures)
        _one_stream_worker(stack)
        time.sleep(SETTLE_S)  # the latency run's load done: the stage's outputs are the run's
        stack.wait_ready()
        figures["streams"] = streams_stage(settings, fleet.devices, opts)
        _progress(figures)
        figures["streams_small_job"] = small_job(settings, stack, fleet.devices, opts)
        _progress(figures)
        figures["sink"] = sink(settings, opts.sink_rows)
    return figures


def _one_stream_worker(stack: Any) -> None:
    """Stop the stream workers :func:`_more_stream_workers` started; the stack's own takes
    their partitions over."""
    for process in [p for p in stack.processes if p.name.startswith("streams-")]:
        process.stop()
        stack.processes.remove(process)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(opts: BenchOptions | None = None) -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # the private stack is stopped on the way out
    figures = run(opts or BenchOptions())
    print(json.dumps(report(figures, datetime.now(UTC).date().isoformat()), indent=2))
