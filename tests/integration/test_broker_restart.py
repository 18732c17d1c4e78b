"""The Kafka broker restarted under load, on a private stack whose tansu keeps its data on a
local S3 server (``CITYVITALS_KAFKA_STORAGE=s3``): while devices publish a steady, bounded
stream at QoS 1, tansu stops (or is killed) and starts again. Its topics, messages and the
consumer groups' committed offsets are in the S3 server, which keeps running; afterwards every
published reading is stored exactly once, and the one threshold crossing is one alert, one
incident and one dispatch order.

The load and its checks are those of ``test_faults.py``; only the fault and the stack differ.
The stream stage fetches with a longer wait on this stack (``Settings.fetch_wait_ms``): tansu
on S3 answers a fetch with the batches it has read from S3 within the wait, and with the
in-memory stack's 20 ms the stream got none or one per fetch and fell ever further behind.
That, not a lost message, failed this test before, in both cases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.conftest import Pipeline, wait_for
from tests.integration.test_faults import (
    assert_stored_exactly_once,
    private_stack,
    process,
    start_load,
)
from wiring.stack import wait_for_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A stack of its own with the broker's data on the local S3 server."""
    with private_stack(tmp_path_factory, "broker", kafka_storage="s3") as pipeline:
        yield pipeline


def kafka_port(pipeline: Pipeline) -> int:
    return int(pipeline.settings.kafka_bootstrap.rsplit(":", 1)[1])


def restart_broker(pipeline: Pipeline) -> None:
    """Stop tansu (SIGTERM: it finishes what it has in hand) and start it again."""
    proc = process(pipeline, "tansu")
    proc.stop()
    proc.start()
    wait_for_port("127.0.0.1", kafka_port(pipeline), 30, proc)


def crash_broker(pipeline: Pipeline) -> None:
    """``kill -9`` tansu and start it again at once."""
    proc = process(pipeline, "tansu")
    proc.kill()
    proc.start()
    wait_for_port("127.0.0.1", kafka_port(pipeline), 30, proc)


FAULTS: dict[str, Callable[[Pipeline], None]] = {
    "restart tansu": restart_broker,
    "kill -9 tansu": crash_broker,
}
PER_DEVICE = 100
"""Readings per device (10 s of load): the fault comes at a quarter, the rest outlasts it."""


@pytest.mark.parametrize("name", FAULTS)
def test_a_broker_restart_under_load_loses_and_doubles_nothing(stack: Pipeline, name: str) -> None:
    started = time.monotonic()
    load, district = start_load(stack, PER_DEVICE)
    wait_for(lambda: load.progress() >= 0.25, timeout=60, what="a quarter of the load sent")
    FAULTS[name](stack)
    over = time.monotonic() - started
    assert_stored_exactly_once(stack, load, district)
    print(
        f"{name}: {load.published} readings, broker back at {over:.1f} s, "
        f"case {time.monotonic() - started:.1f} s"
    )
