"""Liveness on real parts: devices publish with mosquitto_pub, the liveness service follows the
enriched ``readings`` topic, and its verdicts land in PostgreSQL and on Kafka.

The pipeline judges every 0.5 s (``liveness_check_interval_s`` in the fixture). Devices here
publish about every second, so each is judged by that cadence, not the 300 s default: late
after 2 s of silence, offline after 4 s. (A shorter cadence would be lost in the pipeline's own
latency, up to about a second from the gateway to the liveness service.) Each test places its
devices in a city of its own, so no other test's devices count towards its places.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer
from typer.testing import CliRunner

from cityvitals import kafka
from cityvitals.contracts import Device, DeviceLiveness, OutageStatus, PlaceOutage
from cityvitals.topics import Topic
from tests.integration.conftest import Pipeline, api_client, reading, wait_for
from wiring.cli import app as cli_app

pytestmark = pytest.mark.integration

EVERY = 1.0
"""Seconds between two readings of a test device."""


class TopicLog:
    """Everything on one Kafka topic from its beginning, read in a group of its own."""

    def __init__(self, pipeline: Pipeline, topic: Topic) -> None:
        self.consumer: Consumer = kafka.consumer(pipeline.settings, f"itest-{uuid.uuid4().hex}")
        self.consumer.subscribe([pipeline.settings.topic(topic)])
        self.values: list[bytes] = []

    def read(self, idle: float = 1.0) -> list[bytes]:
        """Read until nothing new came for ``idle`` seconds; returns all read so far."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            for msg in self.consumer.consume(500, timeout=0.2):
                if msg.error() is None:
                    self.values.append(msg.value() or b"")
                    quiet_since = time.monotonic()
        return self.values

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture()
def liveness_log(pipeline: Pipeline) -> Iterator[TopicLog]:
    log = TopicLog(pipeline, Topic.LIVENESS)
    yield log
    log.close()


@pytest.fixture()
def outages_log(pipeline: Pipeline) -> Iterator[TopicLog]:
    log = TopicLog(pipeline, Topic.OUTAGES)
    yield log
    log.close()


def changes(log: TopicLog, devices: Sequence[str]) -> list[DeviceLiveness]:
    decoded = (DeviceLiveness.model_validate_json(v) for v in log.read(idle=0.5))
    return [d for d in decoded if d.device_id in devices]


def publish_round(pipeline: Pipeline, devices: Sequence[tuple[str, str]], seq: int) -> None:
    for device, secret in devices:
        now = datetime.now(UTC).isoformat()
        result = pipeline.mosquitto_pub(
            device, secret, pipeline.topic(device), reading(now, seq, water_level_cm=2.0)
        )
        assert result.returncode == 0, result.stderr


def publish_rounds(pipeline: Pipeline, devices: Sequence[tuple[str, str]], rounds: int) -> None:
    """Each device publishes ``rounds`` readings, :data:`EVERY` seconds apart."""
    for seq in range(rounds):
        started = time.monotonic()
        publish_round(pipeline, devices, seq)
        if seq < rounds - 1:
            time.sleep(max(0.0, EVERY - (time.monotonic() - started)))


@contextmanager
def reporting(
    pipeline: Pipeline, devices: Sequence[tuple[str, str]], every: float = EVERY
) -> Iterator[None]:
    """The devices keep publishing every ``every`` seconds until the block ends."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        seq = 1000
        while not stop.is_set():
            try:
                publish_round(pipeline, devices, seq)
            except BaseException as exc:
                errors.append(exc)
                return
            seq += 1
            stop.wait(every)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors


def liveness_rows(pipeline: Pipeline, devices: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    rows = pipeline.query(
        "SELECT device_id, status, last_seen, expected_interval_s, place_path "
        "FROM device_liveness WHERE device_id = ANY(%s)",
        list(devices),
    )
    return {r[0]: r for r in rows}


def statuses(pipeline: Pipeline, devices: Sequence[str]) -> set[str]:
    rows = liveness_rows(pipeline, devices)
    return {rows[d][1] for d in devices} if len(rows) == len(devices) else set()


def test_a_silent_device_goes_offline_by_its_own_cadence_and_comes_back_online(
    pipeline: Pipeline, liveness_log: TopicLog
) -> None:
    tag = uuid.uuid4().hex[:6]
    device, secret = pipeline.register(place=f"lv{tag}/dA{tag}/sA{tag}/sA{tag}g1")
    runner, env = CliRunner(), pipeline.settings.to_env()
    before = runner.invoke(cli_app, ["devices", "liveness", "--place", f"lv{tag}"], env=env)
    assert before.stdout.split()[:4] == [device, "not", "heard", "yet"], before.output
    assert "1 device (1 not heard yet)" in before.stderr
    unheard = runner.invoke(cli_app, ["devices", "show", device], env=env)
    assert "  liveness   not heard yet (judged late after two" in unheard.stdout, unheard.output
    publish_rounds(pipeline, [(device, secret)], rounds=5)

    # Offline by its own cadence (seconds), not by 4 x the 300 s default: a time-out of 30 s and
    # the observed interval show it; how fast mosquitto_pub runs on a loaded machine does not.
    wait_for(lambda: statuses(pipeline, [device]) == {"offline"}, 30, "the device offline")
    _, _, last_seen, interval, path = liveness_rows(pipeline, [device])[device]
    assert 0.5 * EVERY < interval < 3 * EVERY, "the observed cadence"
    assert path == [f"lv{tag}", f"dA{tag}", f"sA{tag}", f"sA{tag}g1"]

    # The command line shows it too: the list of a place's devices by status, and the device.
    listed = runner.invoke(
        cli_app, ["devices", "liveness", "--place", f"lv{tag}", "--status", "offline"], env=env
    )
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.split()[:2] == [device, "offline,"], listed.stdout
    assert "1 device (1 offline); times in UTC" in listed.stderr
    for command in ("liveness", "list"):  # a misspelt place is refused, not "0 devices"
        typo = runner.invoke(cli_app, ["devices", command, "--place", f"lv{tag}x"], env=env)
        assert typo.exit_code == 1 and f"--place 'lv{tag}x': no such place" in typo.stderr
    by_path = runner.invoke(
        cli_app, ["devices", "list", "--place", f"lv{tag}/dA{tag}/sA{tag}"], env=env
    )
    assert device in by_path.stdout, by_path.output
    shown = runner.invoke(cli_app, ["devices", "show", device], env=env)
    assert f"liveness   offline, last seen {last_seen:%Y-%m-%d %H:%M:%S}" in shown.stdout

    offline = wait_for(
        lambda: [c for c in changes(liveness_log, [device]) if c.status == "offline"],
        15,
        "the offline change on Kafka",
    )[0]
    assert offline.last_seen == last_seen and offline.expected_interval_s == interval
    silence = (offline.ts - last_seen).total_seconds()
    factor = pipeline.settings.liveness_offline_factor
    assert factor * interval <= silence < factor * interval + 10.0  # judged within a few checks

    with reporting(pipeline, [(device, secret)]):
        wait_for(lambda: statuses(pipeline, [device]) == {"online"}, 15, "the device online")

        def back_online() -> list[str]:
            seen = [c.status.value for c in changes(liveness_log, [device])]
            return seen if "online" in seen[seen.index("offline") :] else []

        seen = wait_for(back_online, 15, "the online change on Kafka")
    first = seen.index("offline")
    assert seen[first - 1 : first + 2] == ["late", "offline", "online"], seen


def test_a_silent_street_is_one_outage_and_its_devices_raise_no_offline_of_their_own(
    pipeline: Pipeline, liveness_log: TopicLog, outages_log: TopicLog, admin_token: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    city, district, street = f"lv{tag}", f"dL{tag}", f"sX{tag}"
    street_path = [city, district, street]
    devices = [
        pipeline.register(place=f"{city}/{district}/{street}/{street}g{1 + i % 2}")
        for i in range(6)
    ]
    ids = [d for d, _ in devices]
    # Three neighbours in the district report once: too few gaps for a cadence, so the 300 s
    # default keeps them online and the district (6 of 9 offline) does not qualify itself.
    neighbours = [pipeline.register(place=f"{city}/{district}/sY{tag}/sY{tag}g1") for _ in range(3)]
    publish_round(pipeline, neighbours, 0)
    publish_rounds(pipeline, devices, rounds=5)

    def outages() -> list[tuple[Any, ...]]:
        """Outages anywhere in this test's city."""
        return pipeline.query(
            "SELECT outage_id, place_path, status, devices_total, devices_silent "
            "FROM place_outages WHERE place_path[1] = %s",
            city,
        )

    outage_id = wait_for(outages, 30, "a place outage")[0][0]
    wait_for(lambda: statuses(pipeline, ids) == {"offline"}, 15, "every device offline")
    time.sleep(2.0)  # four more checks: nothing else may open
    # Silent when it opened: all six, or five (enough: 5/6 of the street is over the policy's
    # fraction) when the last device's last reading came a check later, on a busy machine.
    rows = [r[1:] for r in outages()]
    assert [r[:3] for r in rows] == [(street_path, "started", 6)], (
        "one outage, for the street: not its grids, not its district"
    )
    silent = rows[0][3]
    assert silent in (5, 6) and silent / 6 >= pipeline.settings.outage_silent_fraction, rows
    on_kafka = [PlaceOutage.model_validate_json(v) for v in outages_log.read()]
    mine = [o for o in on_kafka if o.place_path[0] == city]
    assert [(o.outage_id, o.place_id, o.status) for o in mine] == [
        (outage_id, street, OutageStatus.STARTED)
    ]
    # It names the devices to visit: on Kafka, in its row and by the API.
    named = mine[0].devices
    assert len(named) == silent and set(named) <= set(ids), named
    with api_client(pipeline.settings, admin_token) as client:
        served = client.get("/liveness/outages", params={"place": street}).json()
    assert [(o["outage_id"], tuple(o["devices"])) for o in served] == [(outage_id, named)]
    before = changes(liveness_log, ids)
    # Each device may announce late on its way (when a check falls in its late window: on a
    # busy machine one may not), never offline: that is withheld under the outage.
    assert {c.status for c in before} <= {"late"}, "offline withheld under the outage"

    # Power back: the street reports again, the outage ends, and no device was ever offline.
    with reporting(pipeline, devices):
        wait_for(
            lambda: pipeline.query(
                "SELECT 1 FROM place_outages WHERE outage_id = %s AND status = 'ended'",
                outage_id,
            ),
            15,
            "the outage to end",
        )
        wait_for(lambda: statuses(pipeline, ids) == {"online"}, 15, "every device online")

        def all_online() -> list[DeviceLiveness]:
            seen = changes(liveness_log, ids)
            return seen if {c.device_id for c in seen if c.status == "online"} == set(ids) else []

        after = wait_for(all_online, 15, "every device online on Kafka")
    assert "offline" not in {c.status for c in after}
    on_kafka = [PlaceOutage.model_validate_json(v) for v in outages_log.read()]
    assert [
        (o.outage_id, o.status, o.devices_total) for o in on_kafka if o.place_path[0] == city
    ] == [(outage_id, "started", 6), (outage_id, "ended", 6)]


def test_the_service_follows_the_registry_a_new_profile_interval_reaches_it(
    pipeline: Pipeline,
) -> None:
    """The fleet follows the ``devices`` topic: a device with too few reports for a cadence is
    judged by its profile's interval, and a profile's new interval reaches the service."""
    from cityvitals.contracts import Profile
    from wiring.services import open_registry

    tag = uuid.uuid4().hex[:6]
    profile = Profile(
        profile_id=f"wl-{tag}",
        device_type="water_level",
        expected_interval_s=600,
        metrics={"water_level_cm": {"unit": "cm", "min": 0, "max": 500}},
    )
    device = f"waterlevel-{tag}"
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(profile, "itest")
        # Registered with its profile. Its first reading may still reach the service before its
        # registration does: it is then stored by the default interval first, and again by the
        # profile's once the registration arrives, with no further report.
        secret = reg.add(
            Device(
                device_id=device,
                device_type="water_level",
                place_path=(f"lv{tag}", f"dP{tag}"),
                profile_id=profile.profile_id,
                updated_at=datetime.now(UTC),
            ),
            "itest",
        )

    def interval() -> float | None:
        row = liveness_rows(pipeline, [device]).get(device)
        return None if row is None else float(row[3])

    # At most three reports: two gaps are too few for a cadence, so the profile's interval stands.
    publish_round(pipeline, [(device, secret)], 0)
    wait_for(lambda: interval() == 600.0, 30, "the device's liveness row by its profile")
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(profile.model_copy(update={"expected_interval_s": 120.0}), "itest")
    for seq in (1, 2):  # the second in case the first was judged before the change arrived
        publish_round(pipeline, [(device, secret)], seq)
        try:
            wait_for(lambda: interval() == 120.0, 15, "the profile's new interval")
            return
        except pytest.fail.Exception:
            if seq == 2:
                raise


def test_a_suspended_device_is_not_listed_with_its_last_judgement(pipeline: Pipeline) -> None:
    """The service stops watching a suspended device, so its row keeps its last status
    (``online``) for good: the list shows active devices alone."""
    from cityvitals import db
    from cityvitals.contracts import DeviceState
    from device_registry.liveness_store import device_rows
    from wiring.services import open_registry

    tag = uuid.uuid4().hex[:6]
    device, secret = pipeline.register(place=f"lv{tag}/dS{tag}")
    publish_round(pipeline, [(device, secret)], 0)

    def listed() -> list[str]:
        with db.connect(pipeline.settings) as conn:
            return [d.device_id for d in device_rows(conn, place=f"lv{tag}")]

    wait_for(lambda: listed() == [device], 30, "the device's liveness, listed")
    with open_registry(pipeline.settings) as reg:
        reg.set_state(device, DeviceState.SUSPENDED, "itest")
    assert listed() == []
    assert liveness_rows(pipeline, [device])[device][1] == "online"  # the row stays, frozen


def test_a_camera_s_burst_of_events_does_not_make_it_offline_seconds_later(
    pipeline: Pipeline,
) -> None:
    """Events come when a camera sees something: four a second apart taught it a cadence of
    a second, and it was offline four seconds after. It keeps the 300 s it is judged by."""
    tag = uuid.uuid4().hex[:6]
    camera, secret = pipeline.register("camera", f"lc{tag}/d{tag}/s{tag}/g{tag}")
    for seq in range(4):
        event = {
            "ts": datetime.now(UTC).isoformat(), "seq": seq, "event_type": "smoke_fire",
            "value": 0.2, "confidence": 0.9,
        }  # fmt: skip
        sent = pipeline.mosquitto_pub(
            camera, secret, pipeline.topic(camera, "events"), json.dumps(event)
        )
        assert sent.returncode == 0, sent.stderr
        time.sleep(1.0)
    rows = wait_for(lambda: liveness_rows(pipeline, [camera]), 30, "the camera judged")
    time.sleep(8)  # past 4 x the second it would have learned
    _, status, last_seen, interval, _ = liveness_rows(pipeline, [camera])[camera]
    assert (status, interval) == ("online", 300.0), rows
    assert last_seen is not None
