"""The design's small job on Quix Streams, as a process of its own (``.cache/quix/bin/python
benchmarks/quix_job.py BOOTSTRAP TOPIC COUNT STATE_DIR``), for ``cityvitals bench``
(:mod:`benchmarks.small_job`). It imports nothing of cityvitals: it runs in the environment
that holds Quix Streams, whose confluent-kafka and pydantic are older than ours.

Input: ``TOPIC``, one reading per Kafka message (the JSON of a :class:`Reading`, as the
gateway writes it), keyed by device id, stamped with the reading's time. The job: parse the
JSON; alert on a threshold (every reading over it goes to ``TOPIC.alerts``); count each
device's readings in 10 s tumbling windows (event time, a window's count goes to
``TOPIC.counts`` when it closes). It stops after ``COUNT`` input messages and prints one JSON
line: the messages processed and the seconds from the first to the last.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["ALERT_ABOVE", "WINDOW_MS", "run_job"]

ALERT_ABOVE = 75.0
"""PM2.5 (µg/m³) over which a reading raises an alert (both sides of the small job)."""
WINDOW_MS = 10_000
"""The tumbling window of the per-device count."""

# tansu: a short fetch queue backoff (it ignores the per-partition fetch limit, so
# librdkafka would pause 1 s at a time), and a short session (a join waits half of it).
CONSUMER_CONFIG = {
    "fetch.queue.backoff.ms": 10,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 2000,
}
TOPIC_CONFIG = {"retention.ms": "600000", "retention.bytes": "-1"}


def run_job(bootstrap: str, topic: str, count: int, state_dir: Path) -> dict[str, Any]:
    """Run the job over ``count`` messages of ``topic``; the rate from first to last."""
    from quixstreams import Application
    from quixstreams.models.topics import TopicConfig

    processed = 0
    first = last = 0.0

    def on_processed(_topic: str, _partition: int, _offset: int) -> None:
        nonlocal processed, first, last
        processed += 1
        last = time.monotonic()
        if processed == 1:
            first = last
        if processed >= count:
            app.stop()

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"{topic}.quix",
        auto_offset_reset="earliest",
        consumer_extra_config=CONSUMER_CONFIG,
        state_dir=state_dir,
        loglevel="WARNING",
        on_message_processed=on_processed,
    )
    source = app.topic(topic, value_deserializer="json", key_deserializer="str")

    def out(name: str) -> Any:
        config = TopicConfig(num_partitions=1, replication_factor=1, extra_config=TOPIC_CONFIG)
        return app.topic(f"{topic}.{name}", value_serializer="json", config=config)

    readings = app.dataframe(source)
    alerts = readings.filter(lambda r: r["values"].get("pm25", 0.0) > ALERT_ABOVE)
    alerts.to_topic(out("alerts"))
    counts = readings.tumbling_window(duration_ms=WINDOW_MS).count().final()
    counts.to_topic(out("counts"))
    app.run()
    return {"messages": processed, "seconds": last - first}


def main(argv: list[str]) -> None:
    bootstrap, topic, count, state_dir = argv
    print(json.dumps(run_job(bootstrap, topic, int(count), Path(state_dir))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
