"""The local broker's cost per fetch against what a partition holds: tansu in memory, as the
local stack runs it, on a topic of one partition that grows by one-message batches.

tansu keeps each produced batch as an object and, at every fetch that returns data, lists
every object the partition holds before it reads the ones it returns; it has no retention and
no DeleteRecords. So a fetch costs more the more the partition holds, and a long-running local
stack (or a bench run after another on the same stack) slows. Apache Kafka finds a fetch's
offset in an index instead.

After each step of ``--per-step`` produced batches it fetches the partition's last batch
``--fetches`` times (each a fetch of its own) and prints the time and tansu's CPU per fetch,
then produces ``--probe`` batches one at a time and prints tansu's CPU per produce. Prints
figures (JSON with ``--json``); asserts nothing. Loopback only, bounded by its arguments.

    python -m benchmarks.broker [--steps 8] [--per-step 1300] [--fetches 100] [--probe 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from benchmarks.bench_parts import _cpu_seconds
from cityvitals import kafka
from cityvitals.settings import Settings
from wiring.servers import tansu_process
from wiring.stack import ManagedProcess, StackPaths, free_loopback_port, wait_for_port

__all__ = ["grow"]

TOPIC = "growth"
PAYLOAD = b"x" * 200


def _fetch_last(settings: Settings, end: int, times: int) -> None:
    """Fetch the partition's last batch ``times`` times, each a fetch of its own."""
    group = f"growth-{uuid.uuid4().hex[:8]}"
    consumer: Consumer = kafka.consumer(settings, group, **{"fetch.wait.max.ms": 10})
    try:
        for _ in range(times):
            consumer.assign([TopicPartition(TOPIC, 0, end - 1)])
            while not consumer.consume(1, 1.0):
                pass
            consumer.unassign()
    finally:
        consumer.close()


def grow(steps: int, per_step: int, fetches: int, probe: int) -> list[dict[str, Any]]:
    """Start a tansu, grow its partition step by step; the figures of each step."""
    with tempfile.TemporaryDirectory(prefix="cityvitals-broker-") as folder:
        paths = StackPaths(Path(folder))
        paths.make()
        port = free_loopback_port()
        broker: ManagedProcess = tansu_process(paths, port)
        broker.start()
        try:
            wait_for_port("127.0.0.1", port, 30, broker)
            assert broker.popen is not None
            pid, settings = broker.popen.pid, Settings(kafka_bootstrap=f"127.0.0.1:{port}")
            admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
            config = {"retention.ms": "600000", "retention.bytes": "-1"}
            admin.create_topics([NewTopic(TOPIC, 1, 1, config=config)])[TOPIC].result(30)
            producer: Producer = kafka.producer(settings, **{"linger.ms": 0})

            def one_batch() -> None:  # flushed alone: one batch, one object
                producer.produce(TOPIC, PAYLOAD, partition=0)
                producer.flush(30)

            held, out = 0, []
            for _ in range(steps):
                for _ in range(per_step):
                    one_batch()
                held += per_step
                wall, cpu = time.perf_counter(), _cpu_seconds(pid)
                _fetch_last(settings, held, fetches)
                fetch_s = (time.perf_counter() - wall) / fetches
                fetch_cpu = (_cpu_seconds(pid) - cpu) / fetches
                cpu = _cpu_seconds(pid)
                for _ in range(probe):
                    one_batch()
                produce_cpu = (_cpu_seconds(pid) - cpu) / probe
                held += probe
                out.append(
                    {
                        "batches_held": held - probe,
                        "fetch_ms": round(fetch_s * 1000, 2),
                        "fetch_cpu_ms": round(fetch_cpu * 1000, 2),
                        "produce_cpu_ms": round(produce_cpu * 1000, 2),
                    }
                )
            return out
        finally:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--per-step", type=int, default=1300)
    parser.add_argument("--fetches", type=int, default=100, help="fetches timed per step")
    parser.add_argument("--probe", type=int, default=100, help="batches produced to time one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = grow(args.steps, args.per_step, args.fetches, args.probe)
    if args.json:
        print(json.dumps(figures))
        return
    print("tansu in memory, a partition of one-message batches: one fetch of its last batch")
    for f in figures:
        print(
            f"{f['batches_held']:>7,} batches held: a fetch {f['fetch_ms']:>6.2f} ms, "
            f"tansu CPU {f['fetch_cpu_ms']:>5.2f} ms; tansu CPU per produce "
            f"{f['produce_cpu_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
