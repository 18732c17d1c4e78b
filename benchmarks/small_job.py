"""The streams stage beside Quix Streams on the design's small job, measured in the same run
on the bench's private stack (part of ``cityvitals bench``, :mod:`benchmarks.bench`).

The job (DESIGN.md): parse JSON readings, alert on a threshold, count each device's readings
in 10 s tumbling windows. Both sides get the same N readings (PM2.5 only, one reading in
``ALERT_EVERY`` of each device over :data:`~benchmarks.quix_job.ALERT_ABOVE`, readings of a
device 100 ms apart in event time so that windows close), already on their input topic when
the consumer starts; the rate is readings over the time from the first processed to the last
(ours: by the Kafka timestamps of its output messages, :class:`~benchmarks.bench_parts.Outputs`).
Both run on the same tansu, twice each, one run at a time in the order :data:`ROUNDS` (ours,
Quix Streams, Quix Streams, ours), each run afresh (topics, tables and state of its own), while
the rest of the bench's stack idles; the figures are each side's mean rate, their ratio, and
every run's rate (``runs``); the phases are those of our second run.

- **Quix Streams** (:mod:`benchmarks.quix_job`, its own process, run by the Python of
  :data:`QUIX_PYTHON`, which ``./dev setup`` makes: Quix pins an older confluent-kafka and
  pydantic than ours, so it has an environment of its own): one reading per Kafka
  message, keyed by device id (as its input topic is usually fed); ``filter`` over the
  threshold to an alerts topic (a message per reading over it), ``tumbling_window(10 s)
  .count().final()`` to a counts topic (its state in RocksDB with a changelog topic).
- **ours**: a second Faust worker of the streams stage (``cityvitals run streams``, its own
  topic prefix, hence its own app id, topics and tables) with a rule file holding only the
  threshold rule (:data:`RULES`) and an indicator catalogue holding only a 10 s window over
  PM2.5 (:data:`INDICATORS`). Its input is ``readings.raw`` as the gateway writes it: batches
  of :data:`PER_BATCH` readings per Kafka message (the design: a stream processor's cost is
  per message), each on its devices' partition, the devices' registry entries in-band in
  the first batch of each partition. Where it does more than the Quix job: it validates each
  reading against the registry and enriches it, forwards every reading to ``readings``, keeps
  per-device rule state (the threshold alerts on transitions, firing and resolving, not on
  every reading over it) and a reading memory (late and duplicate readings), and counts
  readings per place (the bench devices' streets: the catalogue rolls indicators up by place,
  not by device; the catalogue has no bare count formula, so the window is a ``mean``, whose
  state is the count and a sum), sending the window partials to the place side and merging
  them there (the place's count; its indicator is reported later, after the catalogue's
  grace). Its figure is readings per second, from the readings of its output messages on
  ``readings``. Beside it, where its time went: the seconds per 1000 readings its groups
  spent decoding, judging (``process_batch``), handing outputs to the producer and waiting for
  Kafka's confirmation (:data:`PHASES`, read from the worker's metrics before it stops; wall
  time of its main thread, so the consumer thread's turns with the interpreter count too).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from benchmarks import quix_job
from benchmarks.bench_parts import Outputs, _metric
from benchmarks.quix_job import ALERT_ABOVE, TOPIC_CONFIG
from benchmarks.stack import free_port
from cityvitals import kafka
from cityvitals.contracts import Device, Reading, ReadingBatch
from cityvitals.settings import Settings
from cityvitals.topics import Topic, partition_for

if TYPE_CHECKING:
    from benchmarks.bench import BenchOptions

__all__ = ["INDICATORS", "PHASES", "QUIX_PYTHON", "RULES", "QuixFailed", "QuixMissing", "small_job"]

QUIX_PYTHON = Path(__file__).resolve().parents[1] / ".cache" / "quix" / "bin" / "python"
"""The interpreter of the environment holding Quix Streams (``./dev setup`` makes it)."""
PREFIX = "small"
"""The topic prefix of our worker on the small job (its app id and tables follow it)."""
PER_BATCH = 250
ALERT_EVERY = 100
STEP = timedelta(milliseconds=100)
"""Event time between two readings of a device."""

RULES = f"""\
grace: 10m
rules:
  - id: pm25-small-job
    metric: pm25
    levels: {{red: {ALERT_ABOVE:g}}}
    clear: 60
"""
INDICATORS = """\
indicators:
  - id: pm25_10s
    kind: mean
    metric: pm25
    device_types: [air_quality]
    window: 10s
    levels: [street]
"""


def make_readings(devices: list[Device], count: int) -> list[Reading]:
    """``count`` readings, the devices in turn, each device's ``STEP`` apart, in the past.

    >>> from benchmarks.small_job import make_readings
    >>> d = Device(device_id="a-1", device_type="air_quality", place_path=("c",),
    ...            updated_at=datetime.now(UTC))
    >>> rs = make_readings([d], ALERT_EVERY)
    >>> [r.values["pm25"] > ALERT_ABOVE for r in rs].count(True), rs[1].ts - rs[0].ts == STEP
    (1, True)
    """
    per_device = -(-count // len(devices))
    start = datetime.now(UTC) - per_device * STEP - timedelta(minutes=2)
    out = []
    for n in range(count):
        k = n // len(devices)
        pm25 = ALERT_ABOVE + 25 if k % ALERT_EVERY == ALERT_EVERY - 1 else 30.0 + k % 9
        out.append(
            Reading(
                device_id=devices[n % len(devices)].device_id,
                ts=start + k * STEP,
                seq=k,
                values={"pm25": pm25},
                received_at=start + k * STEP,
            )
        )
    return out


def _create(settings: Settings, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    created = admin.create_topics([NewTopic(topic, partitions, 1, config=TOPIC_CONFIG)])
    created[topic].result(30)


class QuixMissing(RuntimeError):
    def __init__(self, python: Path) -> None:
        super().__init__(f"no Quix Streams environment at {python}: './dev setup' makes it")
        self.python = python


class QuixFailed(RuntimeError):
    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(f"the Quix Streams job exited {returncode}: {stderr[-2000:]}")
        self.returncode = returncode
        self.stderr = stderr


def quix(
    settings: Settings, readings: list[Reading], python: Path, timeout: float, run: int = 1
) -> dict[str, Any]:
    """Quix Streams on the job: one reading per message, keyed and stamped, then its process
    (``run`` numbers its input topic and state: each run starts afresh)."""
    if not python.exists():
        raise QuixMissing(python)
    topic = f"{PREFIX}{run}.quix.in"
    partitions = settings.kafka_partitions
    _create(settings, topic, partitions)
    producer: Producer = kafka.producer(settings)
    for r in readings:
        producer.produce(
            topic,
            r.model_dump_json().encode(),
            key=r.device_id.encode(),
            partition=partition_for(r.device_id, partitions),
            timestamp=int(r.ts.timestamp() * 1000),
        )
        producer.poll(0)
    producer.flush(30)
    argv = [str(python), quix_job.__file__, settings.kafka_bootstrap, topic, str(len(readings))]
    argv.append(str(settings.state_dir / f"quix{run}"))
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise QuixFailed(done.returncode, done.stderr.decode(errors="replace"))
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return {
        "messages": result["messages"],
        "msg_per_s": round((result["messages"] - 1) / max(result["seconds"], 1e-9)),
    }


def _batches(devices: list[Device], readings: list[Reading], partitions: int) -> list[Any]:
    """ReadingBatch messages of ``PER_BATCH`` readings on their devices' partitions; the
    first batch of a partition carries its devices' registry entries."""
    by_partition: dict[int, list[Reading]] = {}
    for r in readings:
        by_partition.setdefault(partition_for(r.device_id, partitions), []).append(r)
    out = []
    for partition, mine in by_partition.items():
        ids = {r.device_id for r in mine}
        registry = tuple(d for d in devices if d.device_id in ids)
        for i in range(0, len(mine), PER_BATCH):
            batch = ReadingBatch(
                devices=registry if i == 0 else (), readings=tuple(mine[i : i + PER_BATCH])
            )
            out.append((partition, batch.model_dump_json().encode()))
    return out


def ours(
    settings: Settings,
    stack: Any,
    devices: list[Device],
    readings: list[Reading],
    timeout: float,
    run: int = 1,
) -> dict[str, Any]:
    """Our streams stage on the job: a worker of its own, started once its input is written
    (``run`` numbers its topic prefix, hence its app id, topics and tables: each run starts
    afresh)."""
    from wiring.stack import ManagedProcess

    folder = settings.state_dir / f"small-job{run}"
    folder.mkdir(exist_ok=True)
    (folder / "rules.yaml").write_text(RULES)
    (folder / "indicators.yaml").write_text(INDICATORS)
    small = settings.model_copy(
        update={
            "topic_prefix": f"{PREFIX}{run}",
            "rules_file": folder / "rules.yaml",
            "indicators_file": folder / "indicators.yaml",
            "metrics_port": free_port(),
        }
    )
    kafka.ensure_topics(small)
    raw = small.topic(Topic.READINGS_RAW)
    outputs = Outputs(small, small.topic(Topic.READINGS))
    producer: Producer = kafka.producer(small)
    batches = _batches(devices, readings, small.kafka_partitions)
    for partition, value in batches:
        producer.produce(raw, value, partition=partition)
        producer.poll(0)
    producer.flush(30)
    worker = ManagedProcess(
        f"streams-small-job{run}",
        [sys.executable, "-m", "wiring.cli", "run", "streams"],
        stack.paths,
        env=small.to_env(),
    )
    worker.start()
    try:
        outputs.wait(len(batches), timeout, worker.alive)
        phases = _phases(small.metrics_port, len(readings)) if worker.alive() else None
    finally:
        worker.stop()
    forwarded, rate = outputs.rate()
    return {
        "forwarded": forwarded,
        "readings_per_s": round(rate) if rate else None,
        "phases_s_per_1000": phases,
    }


ROUNDS = ("ours", "quix", "quix", "ours")
"""The order the two sides run in, each run afresh on the same readings: the machine is
shared and its speed drifts, and in this order (ABBA) a steady drift weighs on both sides
alike; with one run each, the side run second took all of it."""

PHASES = ("decode", "judge", "hand", "confirm")
"""The phases of the stage's groups (its ``cityvitals_streams_group_seconds`` histogram)."""


def _phases(port: int | None, readings: int) -> dict[str, float]:
    """The worker's seconds in each phase of its groups per 1000 readings (its clock ticks'
    groups included), read from its metrics."""
    assert port is not None
    # A group is timed once its outputs are confirmed, just after they were seen: wait until
    # no group is added for a while.
    groups, deadline = -1.0, time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = _metric(port, "cityvitals_streams_group_messages_count")
        if seen == groups:
            break
        groups = seen
        time.sleep(0.5)
    name = "cityvitals_streams_group_seconds_sum"
    return {p: round(1000 * _metric(port, f'{name}{{phase="{p}"}}') / readings, 4) for p in PHASES}


def small_job(
    settings: Settings, stack: Any, devices: list[Device], opts: BenchOptions
) -> dict[str, Any]:
    """Ours and Quix Streams on the same readings, in the order :data:`ROUNDS`; the ratio of
    their mean rates (with the reason, and no Quix figure, when Quix Streams could not run:
    then ours runs once)."""
    readings = make_readings(devices, opts.small_job_readings)
    mine: list[dict[str, Any]] = []
    theirs: list[float] = []
    problem = None
    for side in ROUNDS:
        if side == "ours":
            if problem is None or not mine:
                mine.append(ours(settings, stack, devices, readings, opts.timeout_s, len(mine) + 1))
        elif problem is None:
            try:
                run = len(theirs) + 1
                done = quix(settings, readings, opts.quix_python, opts.timeout_s, run)
                theirs.append(done["msg_per_s"])
            except (QuixMissing, QuixFailed, subprocess.TimeoutExpired) as exc:
                problem = str(exc)
    rates = [m["readings_per_s"] for m in mine]
    rate = round(statistics.fmean(rates)) if all(rates) else None
    quix_rate = round(statistics.fmean(theirs)) if theirs and problem is None else None
    return {
        "quix_problem": problem,
        "readings": len(readings),
        "forwarded": min(m["forwarded"] for m in mine),
        "readings_per_s": rate,
        "quix_msg_per_s": quix_rate,
        "ratio_to_quix": round(rate / quix_rate, 3) if rate and quix_rate else None,
        "readings_per_message": PER_BATCH,
        "quix_readings_per_message": 1,
        "runs": {"ours": rates, "quix": theirs if problem is None else []},
        "phases_s_per_1000": mine[-1]["phases_s_per_1000"],
    }
