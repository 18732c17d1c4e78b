"""The liveness service on the stage toolkit: its store's faults are waited out by the one
``stage.retry``, and its per-hop counters are the toolkit's, named like every stage's."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from cityvitals.contracts import CameraEvent, Device, DeviceState, Reading, ReadingBatch
from cityvitals.settings import Settings
from cityvitals.stage import Transient, retry, utc_now
from cityvitals.topics import partition_for
from device_registry.liveness import DeviceClock, Watched, observe
from device_registry.liveness_metrics import LivenessMetrics
from device_registry.liveness_service import LivenessService, reports
from device_registry.liveness_store import LivenessStoreUnavailable
from tests.unit.test_stage import FakeKafka, FakeMessage

SETTINGS = Settings(topic_prefix="t")
T0 = datetime(2026, 11, 22, 8, tzinfo=UTC)


class FlakyStore:
    """Refuses the first ``faults`` saves as the database being down, then keeps them."""

    def __init__(self, faults: int) -> None:
        self.faults = faults
        self.saved: list[tuple[Sequence[Any], Sequence[Any]]] = []

    def save(self, devices: Sequence[Any], outages: Sequence[Any]) -> None:
        if self.faults:
            self.faults -= 1
            raise LivenessStoreUnavailable("saving", "connection refused", retry_after=0)
        self.saved.append((devices, outages))


def service(consumer: FakeKafka, store: FlakyStore, registry: CollectorRegistry) -> Any:
    """A service that holds none of the one partition of ``readings``: it judges nothing."""
    live = LivenessService(
        SETTINGS,
        consumer,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        registry,
        lambda ids: [],
    )
    live._partitions = 1
    return live


def test_a_store_fault_is_a_transient_one_that_the_stage_retry_waits_out() -> None:
    fault = LivenessStoreUnavailable("saving", "connection refused", retry_after=0.5)
    assert isinstance(fault, Transient) and fault.retry_after == 0.5
    assert (fault.operation, fault.detail) == ("saving", "connection refused")
    assert str(fault) == "liveness store: saving failed: connection refused"
    stop = threading.Event()
    stop.set()
    with pytest.raises(LivenessStoreUnavailable):
        retry(lambda: FlakyStore(1).save([], []), stop)


def reported(device_id: str, store: FlakyStore) -> Any:
    """A service (:func:`service`) that has consumed one reading of ``device_id`` at ``c``."""
    batch = ReadingBatch(
        readings=(Reading(device_id=device_id, ts=T0, seq=1, values={"m": 4}, place_path=("c",)),)
    )
    live = service(
        FakeKafka([FakeMessage("t.readings", 0, batch.model_dump_json().encode())]),
        store,
        CollectorRegistry(),
    )
    live._consume(0)
    return live


def test_a_check_stores_the_clocks_once_the_database_is_back() -> None:
    store = FlakyStore(faults=2)
    live = reported("aq-1", store)
    live.check_once(threading.Event())
    [(devices, outages)] = store.saved
    assert [d.device_id for d in devices] == ["aq-1"] and outages == []


def test_the_liveness_counters_reconcile_and_keep_their_names() -> None:
    good = ReadingBatch(readings=(Reading(device_id="aq-1", ts=T0, seq=1, values={"pm25": 4}),))
    registry = CollectorRegistry()
    consumer = FakeKafka(
        [
            FakeMessage("t.readings", 0, good.model_dump_json().encode()),
            FakeMessage("t.readings", 1, b"{not json"),
        ]
    )
    live = service(consumer, FlakyStore(0), registry)
    assert isinstance(live.metrics, LivenessMetrics)
    live._consume(0)
    live.check_once(threading.Event())
    assert live.metrics.reconciles()
    value = registry.get_sample_value
    assert value("cityvitals_liveness_received_total") == 2
    assert value("cityvitals_liveness_forwarded_total") == 1
    assert value("cityvitals_liveness_rejected_total", {"reason": "readings"}) == 1
    # Names the deployment's probes and docs rely on.
    assert value("cityvitals_liveness_checks_skipped_total") == 1
    assert value("cityvitals_liveness_ready") == 0
    assert value("cityvitals_liveness_devices", {"status": "online"}) == 1
    for name in ("outages_open", "activated_total"):
        assert value(f"cityvitals_liveness_{name}") == 0


class Published:
    """A producer that keeps what it is given and confirms it at once."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.changes.append((key.decode(), orjson.loads(value)["status"]))
        on_delivery(None, None)

    def flush(self, _timeout: float) -> int:
        return 0


def two_partitions() -> tuple[str, str]:
    """Two device ids on different partitions of two."""
    other = next(
        f"aq-{i}" for i in range(2, 99) if partition_for(f"aq-{i}", 2) != partition_for("aq-1", 2)
    )
    return "aq-1", other


def test_a_stalled_partition_holds_the_judgement_of_its_own_devices_alone() -> None:
    """One stream worker of two hangs: the devices whose readings wait on its partition of
    ``readings.raw`` are not judged (silent on ``readings``, through no fault of theirs);
    those of the other partition are, a real silence among them is not hidden; once the
    stream has worked off the backlog, every device is judged again."""
    stuck, free = two_partitions()
    looks = iter(range(1, 100))
    backlog = [True]

    def upstream() -> dict[int, tuple[int, int]]:
        n = next(looks)
        waiting = (5, 5 + n) if backlog[0] else (5 + n, 5 + n)
        return {partition_for(stuck, 2): waiting, partition_for(free, 2): (7 + n, 7 + n)}

    producer, registry = Published(), CollectorRegistry()
    live = LivenessService(
        Settings(topic_prefix="t", liveness_stall_s=1e-6, ingest_heartbeat_s=0),
        FakeKafka([]),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        FlakyStore(0),  # type: ignore[arg-type]
        registry,
        lambda ids: [],
        upstream,
    )
    live._partitions, live._assigned, live._warm = 1, {("t.readings", 0)}, True
    hour_ago = utc_now() - timedelta(hours=1)
    live.fleet = {d: Watched(("c", d), 10.0, hour_ago) for d in (stuck, free)}
    live.clocks = {d: observe(DeviceClock(since=hour_ago), hour_ago) for d in (stuck, free)}
    live._stalled()  # the stream's offsets seen once: a stall is their standing still since
    live.check_once(threading.Event())
    assert producer.changes == [(free, "offline")]
    value = registry.get_sample_value
    assert value("cityvitals_liveness_devices_held") == 1
    assert value("cityvitals_liveness_upstream_stalled") == 1
    backlog[0] = False  # the stream moves on and works the backlog off
    live.check_once(threading.Event())
    assert producer.changes == [(free, "offline"), (stuck, "offline")]
    assert value("cityvitals_liveness_devices_held") == 0
    assert value("cityvitals_liveness_upstream_stalled") == 0


def test_a_partition_without_the_gateway_s_heartbeat_holds_its_devices_until_the_backlog_came() -> (
    None
):
    """A gateway paused 75 s made the whole city's devices silent and opened an outage of
    the city: a partition of ``readings`` whose heartbeats stopped holds its devices, and
    for ``liveness_stall_s`` more once they come back, then counts their silence from then;
    the others are judged as ever. A heartbeat is no report."""
    stuck, free = two_partitions()
    p_stuck, p_free = partition_for(stuck, 2), partition_for(free, 2)
    producer, registry = Published(), CollectorRegistry()
    live = LivenessService(
        Settings(topic_prefix="t", liveness_stall_s=10.0),
        FakeKafka([]),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        FlakyStore(0),  # type: ignore[arg-type]
        registry,
        lambda ids: [],
    )
    live._partitions, live._assigned, live._warm = 2, {("t.readings", 0), ("t.readings", 1)}, True
    hour_ago = utc_now() - timedelta(hours=1)
    live.fleet = {d: Watched(("c", d), 10.0, hour_ago) for d in (stuck, free)}
    live.clocks = {d: observe(DeviceClock(since=hour_ago), hour_ago) for d in (stuck, free)}
    beat = ReadingBatch(heartbeat=T0).to_json()
    live._decode(FakeMessage("t.readings", 7, beat))  # partition 0, read as a heartbeat
    value = registry.get_sample_value
    assert value("cityvitals_liveness_received_total") == 0  # no report
    assert 0 in live.intake.last
    now = time.monotonic()
    live.intake.last = {p_stuck: now - 60.0, p_free: now}  # the stuck one's last, a minute ago
    live.check_once(threading.Event())
    assert producer.changes == [(free, "offline")]
    assert value("cityvitals_liveness_devices_held") == 1
    assert value("cityvitals_liveness_intake_stalled") == 1
    live.intake.beat(p_stuck, time.monotonic())  # back: what the broker kept is on its way
    live.check_once(threading.Event())
    assert producer.changes == [(free, "offline")]
    live.intake.back[p_stuck] -= 11.0  # as long again since
    live.intake.beat(p_stuck, time.monotonic())
    released = utc_now()
    live.check_once(threading.Event())
    # judged again, its silence counted from the release, as after a restart: the broker may
    # have kept nothing it sent (QoS 0), and it is heard again at its next report
    assert producer.changes == [(free, "offline")]
    assert live.clocks[stuck].since >= released and live.clocks[stuck].status.value == "online"
    assert live.clocks[free].since == hour_ago  # the other partition's, as it was
    assert value("cityvitals_liveness_devices_held") == 0
    assert value("cityvitals_liveness_intake_stalled") == 0


def test_a_device_that_reported_before_its_registration_is_stored_again_by_its_profile() -> None:
    """Its first report came first (watched, and stored, by the default interval); once its
    registration arrives, the next check stores it by its profile's interval without waiting
    for another report."""
    store = FlakyStore(faults=0)
    live = reported("wl-1", store)
    live.check_once(threading.Event())
    live.check_once(threading.Event())  # nothing new: nothing stored again
    registered = Device(
        device_id="wl-1",
        device_type="water_level",
        place_path=("c", "d"),
        state=DeviceState.ACTIVE,
        expected_interval_s=600,
        updated_at=T0,
    )
    live.follow([registered])
    live.check_once(threading.Event())
    first, idle, after = (devices for devices, _outages in store.saved)
    default = SETTINGS.liveness_default_interval_s
    assert [(d.expected_interval_s, d.place_path) for d in first] == [(default, ("c",))]
    assert idle == []
    assert [(d.expected_interval_s, d.place_path) for d in after] == [(600, ("c", "d"))]


def test_reports_read_what_the_contract_validates() -> None:
    """The lean reader gives each item's device, instant and place as the models do, one
    report for a pack the gateway received at once, and the device's clock at the gateway."""
    east = timezone(timedelta(hours=8))
    batch = ReadingBatch(
        readings=tuple(
            Reading(
                device_id=f"aq-{i % 2}",
                ts=(T0 + timedelta(seconds=i)).astimezone(east),
                seq=i,
                values={"pm25": float(i)},
                received_at=None if i == 5 else T0 + timedelta(seconds=10 * (i // 4)),
                place_path=("c", "d", f"s{i % 2}"),
            )
            for i in range(6)
        ),
        camera_events=(
            CameraEvent(
                camera_id="cam-1", event_type="crowd_density", ts=T0, seq=1, value=3, confidence=0.9
            ),
        ),
    )
    got = reports(batch.model_dump_json().encode())
    expected, last = [], {}
    for item in (*batch.readings, *batch.camera_events):
        seen = item.received_at or item.ts
        if last.get(item.device_id) != seen:
            event = isinstance(item, CameraEvent)  # a camera's event teaches no cadence
            expected.append(
                (item.device_id, seen, item.received_at is not None, item.place_path, event)
            )
        last[item.device_id] = seen
    assert [tuple(r) for r in got] == expected
    assert len(got) == 5  # aq-0 twice and aq-1 once at the gateway, aq-1 by its ts, cam-1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1]", "a JSON list, not an object"),
        (b'{"readings": {}}', "readings is not a list"),
        (b'{"readings": [{"ts": "2026-12-05T08:00:00Z"}]}', "readings[0]: no 'device_id'"),
        (b'{"readings": [{"device_id": "a"}]}', "readings[0]: no 'ts'"),
        (b'{"readings": [{"device_id": 7, "ts": "2026-12-05T08:00:00Z"}]}', "must be text"),
        (b'{"readings": [{"device_id": "a", "ts": "yesterday"}]}', "readings[0]: Invalid"),
        (b'{"readings": [{"device_id": "a", "ts": "2026-12-05T08:00:00"}]}', "no time zone"),
        (b'{"camera_events": [1]}', "camera_events[0]:"),
        (
            b'{"readings": [{"device_id": "a", "ts": "2026-12-05T08:00:00Z", "place_path": [1]}]}',
            "readings[0]:",
        ),
    ],
)
def test_a_message_liveness_cannot_read_is_refused_with_what_is_wrong(
    payload: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    good = ReadingBatch(readings=(Reading(device_id="aq-1", ts=T0, seq=1, values={"m": 1}),))
    consumer = FakeKafka(
        [
            FakeMessage("t.readings", 0, payload),
            FakeMessage("t.readings", 1, good.model_dump_json().encode()),
        ]
    )
    live = service(consumer, FlakyStore(0), registry)
    live._consume(0)
    assert reason in caplog.text
    assert (
        registry.get_sample_value("cityvitals_liveness_rejected_total", {"reason": "readings"}) == 1
    )
    assert list(live.clocks) == ["aq-1"]  # the next message is read
