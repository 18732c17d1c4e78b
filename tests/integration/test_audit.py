"""``cityvitals audit`` on the running pipeline: a bounded mix of valid and refused readings,
published over MQTT, reconciles end to end and its figures are what was sent."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.conftest import Pipeline, reading, wait_for
from tests.integration.publishing import publish_all

VALID, BAD_AT_GATEWAY, BAD_AT_STREAM = 30, 6, 4


def run_audit(pipeline: Pipeline, *args: str) -> tuple[int, dict[str, Any]]:
    """``cityvitals audit --json ARGS``."""
    done = pipeline.cli("audit", "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_audit_reconciles_what_was_published(pipeline: Pipeline) -> None:
    device, secret = pipeline.register()
    topic = pipeline.topic(device)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    valid = [
        reading((start + timedelta(seconds=i)).isoformat(), i, water_level_cm=10 + i)
        for i in range(VALID - 2)
    ]
    # Two messages of one instant, each with its own metric: two readings, both stored.
    shared = (start + timedelta(seconds=VALID)).isoformat()
    valid += [reading(shared, VALID, water_level_cm=3), reading(shared, VALID, battery_v=3.6)]
    # A second value for the first instant: not stored over the first, dead-lettered by the sinks.
    at_sinks = [reading(start.isoformat(), VALID + 1, water_level_cm=99)]
    at_gateway = [b"{not json", b'{"ts": 1}', b"\xff\xfe", b'{"values": NaN}', b"[]", b'"x"']
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    at_stream = [reading(future, 1000 + i, water_level_cm=1) for i in range(BAD_AT_STREAM)]
    assert len(at_gateway) == BAD_AT_GATEWAY
    messages = [(topic, m.encode()) for m in valid]
    messages += [(topic, m) for m in at_gateway] + [(topic, m.encode()) for m in at_stream]
    messages += [(topic, m.encode()) for m in at_sinks]
    published = len(messages)

    _, before = run_audit(pipeline)
    since = datetime.now(UTC).isoformat()
    assert publish_all(pipeline.settings, device, secret, messages) == published
    wait_for(lambda: len(pipeline.rows(device)) == VALID, what=f"{VALID} rows stored")

    code, after = run_audit(
        pipeline, "--since", since, "--published", str(published), "--wait", "30"
    )
    assert code == 0, [line for line in after["lines"] if line["ok"] is False]

    def delta(stage: str, figure: str) -> int:
        return int(after["hops"][stage][figure] - before["hops"][stage][figure])

    assert delta("ingest", "received") == published
    assert delta("ingest", "forwarded") == VALID + BAD_AT_STREAM + 1
    assert delta("ingest", "refused") == BAD_AT_GATEWAY
    assert delta("streams", "forwarded") == VALID + 1
    assert delta("streams", "refused") == BAD_AT_STREAM
    assert delta("sinks", "conflicts") == 1
    window = after["database_window"]
    assert (window["readings"], window["camera_events"]) == (VALID, 0)
    assert window["deadletters"] == {"ingest": BAD_AT_GATEWAY, "streams": BAD_AT_STREAM, "sinks": 1}
    assert window["device_deadletters"] == BAD_AT_GATEWAY + BAD_AT_STREAM + 1
    (line,) = [line for line in after["lines"] if line["check"].startswith("published")]
    assert (line["left"], line["right"], line["ok"]) == (published, published, True)
    # Another device's traffic in the window makes a gap, unless the device is named: its
    # readings and dead letters alone then count.
    other, other_secret = pipeline.register()
    theirs = [
        reading((start + timedelta(seconds=i)).isoformat(), i, water_level_cm=1) for i in range(3)
    ]
    assert (
        publish_all(
            pipeline.settings,
            other,
            other_secret,
            [(pipeline.topic(other), m.encode()) for m in theirs],
        )
        == 3
    )
    wait_for(lambda: len(pipeline.rows(other)) == 3, what="the other device's 3 rows stored")
    hour = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    code, crowded = run_audit(pipeline, "--since", hour, "--published", str(published))
    (line,) = [line for line in crowded["lines"] if line["check"].startswith("published")]
    assert code == 1 and line["right"] > published, line
    code, mine = run_audit(
        pipeline, "--since", hour, "--published", str(published), "--device", device
    )
    (line,) = [line for line in mine["lines"] if line["check"].startswith("published")]
    assert (line["left"], line["right"], line["ok"]) == (published, published, True)
    # Each stage keys its dead letters by the device (README: a topic's key).
    keys = deadletter_keys(pipeline, device, BAD_AT_GATEWAY + BAD_AT_STREAM + 1)
    assert keys == {"ingest": {device}, "streams": {device}, "sinks": {device}}


def deadletter_keys(pipeline: Pipeline, device: str, count: int) -> dict[str, set[str]]:
    """The message keys of ``device``'s dead letters on the topic, by the stage that wrote
    them, once ``count`` were read."""
    from cityvitals import kafka
    from cityvitals.topics import Topic

    consumer = kafka.consumer(pipeline.settings, f"itest-{uuid.uuid4().hex}")
    consumer.subscribe([pipeline.settings.topic(Topic.DEADLETTER)])
    keys: dict[str, set[str]] = {}
    found = 0

    def read() -> bool:
        nonlocal found
        for msg in kafka.consume_batch(consumer, 500, 1.0):
            if msg.error() is not None:
                continue
            letter = json.loads(msg.value() or b"{}")
            if letter.get("device_id") == device:
                keys.setdefault(letter["stage"], set()).add((msg.key() or b"").decode())
                found += 1
        return found >= count

    try:
        wait_for(read, what=f"{count} dead letters of {device}")
    finally:
        consumer.close()
    return keys


def test_audit_names_a_gap_when_more_was_published_than_arrived(pipeline: Pipeline) -> None:
    code, report = run_audit(pipeline, "--since", datetime.now(UTC).isoformat(), "--published", "3")
    assert code == 1
    (line,) = [line for line in report["lines"] if line["check"].startswith("published")]
    assert line["gap"] == 3 and "neither stored nor dead-lettered" in line["detail"]


def test_a_backlog_received_before_the_stream_started_is_no_gap(pipeline: Pipeline) -> None:
    """Readings on ``readings.raw`` that the gateway received before the stream started (held
    on Kafka across a restart), or with no time of receipt: the stream forwards and counts
    them as its backlog, and the audit leaves them out of both sides of its stream → database
    check instead of calling them lost (the database counts rows received since the start)."""
    from cityvitals import kafka
    from cityvitals.contracts import Reading, ReadingBatch
    from cityvitals.topics import Topic, partition_for

    device, _secret = pipeline.register()
    _, before = run_audit(pipeline)
    long_ago = datetime.now(UTC) - timedelta(days=2)  # before any of the stack's processes
    now = datetime.now(UTC).replace(microsecond=0)
    backlog = [
        Reading(
            device_id=device,
            ts=now - timedelta(minutes=10 - i),
            seq=i,
            values={"water_level_cm": 3.0},
            received_at=None if i == 0 else long_ago,
        )
        for i in range(5)
    ]
    unknown = Reading(  # refused (its device is unknown): not forwarded, so no backlog
        device_id=f"nobody-{device}",
        ts=now,
        seq=1,
        values={"water_level_cm": 3.0},
        received_at=long_ago,
    )
    producer = kafka.producer(pipeline.settings)
    producer.produce(
        pipeline.settings.topic(Topic.READINGS_RAW),
        ReadingBatch(readings=(*backlog, unknown)).model_dump_json().encode(),
        partition=partition_for(device, pipeline.settings.kafka_partitions),
    )
    assert producer.flush(30) == 0
    wait_for(lambda: len(pipeline.rows(device)) == len(backlog), what="the backlog stored")

    code, after = run_audit(pipeline, "--wait", "30")
    assert code == 0, [line for line in after["lines"] if line["ok"] is False]
    streams = after["hops"]["streams"]
    assert streams["backlog"] - before["hops"]["streams"]["backlog"] == len(backlog)
    (line,) = [line for line in after["lines"] if line["check"].startswith("stream → database")]
    assert line["ok"] is True and line["left"] == streams["forwarded"] - streams["backlog"]
