"""Scale-out of the stream: two workers in one consumer group, on a private stack of real
processes (the fault tests' stack), under a steady, bounded load of readings at QoS 1.

The two workers split the partitions (each forwards readings), every reading is stored once,
and when the worker that holds a device stops (gracefully, or ``kill -9``) while the device's
alert is open, the other takes its partitions and its memory: the alert opened before the
handover resolves after it on the other worker, one episode, not two.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from cityvitals.contracts import Device
from cityvitals.topics import partition_for
from tests.integration.conftest import Pipeline, free_port, wait_for
from tests.integration.test_faults import DEVICES, Load, assert_stored_exactly_once, process
from tests.integration.test_faults import stack as stack  # the fault tests' private stack
from wiring.localstack import reports_ready, scrape
from wiring.services import open_registry
from wiring.stack import ManagedProcess

pytestmark = pytest.mark.integration

PER_DEVICE = 200
"""Readings per device: 20 s of load at the fault tests' 10 a second."""
HOT = range(40, 130)
"""The first device's hot stretch (seq): it opens an alert about 4 s in and stays above the
rule's clear level for 9 s, long enough to span a handover (tansu's group join waits half the
6 s session timeout; a killed worker is noticed only when its session runs out)."""


@dataclass
class Worker:
    """A stream worker process and its metrics port."""

    process: ManagedProcess
    port: int

    def total(self, name: str, **labels: str) -> float:
        """The sum of a counter's samples (``cityvitals_streams_<name>_total``) that carry
        ``labels``; 0 while the worker does not answer."""
        try:
            text = scrape(self.port)
        except OSError:
            return 0.0
        prefix = f"cityvitals_streams_{name}_total"
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(prefix) and all(w in line for w in wanted)
        )

    def ready(self) -> bool:
        return reports_ready("streams", self.port)


@pytest.fixture(scope="module")
def workers(stack: Pipeline) -> Iterator[list[Worker]]:
    """The stack's stream worker and a second one in the same group (own metrics port;
    Faust's web server is off in every worker)."""
    settings = stack.settings.model_copy(update={"metrics_port": free_port()})
    second = ManagedProcess(
        "streams-2",
        [sys.executable, "-m", "wiring.cli", "run", "streams"],
        stack.stack.paths,
        env=settings.to_env(),
    )
    pair = [
        Worker(process(stack, "streams"), stack.stack.metrics.streams),
        Worker(second, settings.metrics_port),
    ]
    try:
        yield pair
    finally:
        second.stop()


def both_running(pair: list[Worker]) -> None:
    """Start whichever worker is not running; return once both report ready (a worker is
    ready after its group's rebalance completes)."""
    for worker in pair:
        if not worker.process.alive():
            worker.process.start()
    wait_for(lambda: all(w.ready() for w in pair), timeout=90, what="both stream workers ready")


def devices_on_partitions(pipeline: Pipeline, district: str) -> dict[str, str]:
    """``DEVICES`` new active devices on as many different partitions (so that however the
    workers split the partitions evenly, each holds at least one); returns id -> secret."""
    parts = pipeline.settings.kafka_partitions
    ids: dict[int, str] = {}
    while len(ids) < DEVICES:
        device_id = f"airquality-{uuid.uuid4().hex[:10]}"
        ids.setdefault(partition_for(device_id, parts), device_id)
    place = ("scale", district, f"{district}s", f"{district}g")
    devices = {}
    with open_registry(pipeline.settings) as registry:
        for device_id in ids.values():
            device = Device(
                device_id=device_id,
                device_type="air_quality",
                place_path=place,
                updated_at=datetime.now(UTC),
            )
            devices[device_id] = registry.add(device, "itest")
    return devices


def stop(worker: Worker) -> None:
    worker.process.stop()


def kill(worker: Worker) -> None:
    worker.process.kill()


@pytest.mark.parametrize(
    "leave",
    [stop, kill],
    ids=["stop", "kill -9"],
)
def test_two_workers_split_the_load_and_hand_over_partitions_and_memory(
    stack: Pipeline, workers: list[Worker], leave: Callable[[Worker], None]
) -> None:
    started = time.monotonic()
    both_running(workers)
    forwarded = [w.total("forwarded") for w in workers]
    firing = [w.total("alert_transitions", status="firing") for w in workers]
    resolved = [w.total("alert_transitions", status="resolved") for w in workers]

    district = f"d{uuid.uuid4().hex[:6]}"
    load = Load(stack, devices_on_partitions(stack, district), PER_DEVICE, HOT)
    load.connect()
    load.start()

    # The worker holding the first device opens its alert; both workers forward readings.
    holder = wait_for(
        lambda: next(
            (
                w
                for w, f in zip(workers, firing, strict=True)
                if w.total("alert_transitions", status="firing") > f
            ),
            None,
        ),
        timeout=30,
        what="the hot device's alert to open",
    )
    wait_for(
        lambda: all(w.total("forwarded") > f for w, f in zip(workers, forwarded, strict=True)),
        timeout=15,
        what="both workers to forward readings",
    )
    shares = [w.total("forwarded") - f for w, f in zip(workers, forwarded, strict=True)]
    (other,) = [w for w in workers if w is not holder]
    at = load.progress()
    leave(holder)

    i = workers.index(other)
    wait_for(
        lambda: other.total("alert_transitions", status="resolved") > resolved[i],
        timeout=60,
        what="the worker that took the partitions over to resolve the alert",
    )
    over = time.monotonic() - started
    holder.process.start()  # back in the group (the stack's checks want every process up)
    assert_stored_exactly_once(stack, load, district)  # one alert, resolved; one incident
    print(
        f"{leave.__name__}: forwarded {shares[0]:.0f} + {shares[1]:.0f} before the handover "
        f"at {at:.0%} of the load, resolved by the other at {over:.1f} s; "
        f"case {time.monotonic() - started:.1f} s"
    )
