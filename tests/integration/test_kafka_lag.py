"""What a stack stopping waits for: the messages a consumer group has not committed past, read
from a real broker. With the sinks stopped, the readings the stream passed on wait in Kafka
(the lag the stack's drain sees); started again, the sinks store them and the lag is 0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cityvitals import kafka
from cityvitals.settings import Settings
from cityvitals.topics import Topic
from tests.integration.conftest import Pipeline, reading, wait_for
from wiring.localstack import DRAINED, reports_ready

pytestmark = pytest.mark.integration


def group_lag(s: Settings, group: str, topics: list[str]) -> int:
    """:func:`kafka.lag` of ``group`` on ``topics``, read by a consumer of its own."""
    reader = kafka.consumer(s, group)
    try:
        return kafka.lag(reader, topics, s.kafka_bootstrap)
    finally:
        reader.close()


def test_the_sinks_lag_is_what_they_have_not_stored(pipeline: Pipeline) -> None:
    s = pipeline.settings
    sinks, topics = s.topic(s.sink_group), [s.topic(t) for t in DRAINED]
    stream, raw = s.topic(s.streams_app_id), [s.topic(Topic.READINGS_RAW)]
    wait_for(lambda: group_lag(s, sinks, topics) == 0, what="the sinks caught up")
    (process,) = [p for p in pipeline.stack.processes if p.name == "sinks"]
    process.stop()
    try:
        device = pipeline.register()
        ts = datetime.now(UTC) - timedelta(seconds=5)
        for seq in range(1, 6):
            payload = reading((ts + timedelta(milliseconds=seq)).isoformat(), seq, water_level_cm=1)
            done = pipeline.mosquitto_pub(*device, pipeline.topic(device[0]), payload)
            assert done.returncode == 0, done.stderr
        # the stream took them (its group's lag on the gateway's topic back to 0) ...
        wait_for(lambda: group_lag(s, stream, raw) == 0, what="the stream caught up")
        # ... and its readings (in one message or more: the stream batches) wait for the sinks
        assert group_lag(s, sinks, topics) >= 1
    finally:
        process.start()
    wait_for(lambda: reports_ready("sinks", pipeline.stack.metrics.of("sinks")), 90, "sinks up")
    wait_for(lambda: group_lag(s, sinks, topics) == 0, 90, "the sinks stored them")
