"""A reading's whole journey on real parts: mosquitto_pub → Mosquitto → gateway → tansu → Faust →
PostgreSQL, and alerts back out on Kafka."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client.parser import text_string_to_metric_families

from cityvitals.contracts import Alert, DeadLetter
from tests.integration.conftest import Pipeline, at, reading, wait_for

pytestmark = pytest.mark.integration


def test_a_reading_published_twice_lands_exactly_once(pipeline: Pipeline) -> None:
    device, secret = pipeline.register("air_quality")
    topic = pipeline.topic(device)
    first = reading(at("08:00:00"), 1, pm25=41.5, pm10=60)
    for _ in range(2):
        result = pipeline.mosquitto_pub(device, secret, topic, first)
        assert result.returncode == 0, result.stderr
    # A later reading from the same device travels the same partition: once it is stored,
    # both copies of the first one have been processed.
    pipeline.mosquitto_pub(device, secret, topic, reading(at("08:01:00"), 2, pm25=40))
    wait_for(lambda: len(pipeline.rows(device)) == 3, what="the later reading in the database")
    rows = pipeline.rows(device)
    assert [(m, v, seq) for m, _ts, v, seq, _p in rows] == [
        ("pm10", 60.0, 1),
        ("pm25", 41.5, 1),
        ("pm25", 40.0, 2),
    ]
    assert rows[0][4] == ["itest", "d1", "s1", "g1"]  # enriched with the device's place


def test_a_second_value_for_a_stored_instant_is_dead_lettered_with_both(
    pipeline: Pipeline,
) -> None:
    """The first value stays; the second is no replay and is not folded away unseen: the
    sinks keep its reading as a dead letter naming both values and the message it came in."""
    device, secret = pipeline.register("air_quality")
    topic = pipeline.topic(device)
    for message in (
        reading(at("08:00:00"), 1, pm25=41.5, pm10=60),
        reading(at("08:00:00"), 2, pm25=90, pm10=60),  # pm25 again, another value
        reading(at("08:01:00"), 3, pm25=40),
    ):
        result = pipeline.mosquitto_pub(device, secret, topic, message)
        assert result.returncode == 0, result.stderr
    [(stage, cause, reason, source, payload)] = wait_for(
        lambda: pipeline.query(
            "SELECT stage, cause, reason, source, payload_b64 FROM deadletters"
            " WHERE device_id = %s",
            device,
        ),
        what="the second value's dead letter",
    )
    assert (stage, cause) == ("sinks", "conflict") and source.startswith(
        pipeline.settings.topic("readings") + "["
    )
    assert reason == (
        f"a second value for {device} pm25 at {at('08:00:00').replace('Z', '+00:00')}: 90, "
        "where 41.5 is stored (the first value stays)"
    )
    assert json.loads(base64.b64decode(payload))["seq"] == 2
    wait_for(lambda: len(pipeline.rows(device)) == 3, what="the later reading in the database")
    assert [(m, v, seq) for m, _ts, v, seq, _p in pipeline.rows(device)] == [
        ("pm10", 60.0, 1),
        ("pm25", 41.5, 1),
        ("pm25", 40.0, 3),
    ]


def test_malformed_payload_is_dead_lettered_and_the_gateway_keeps_working(
    pipeline: Pipeline,
) -> None:
    device, secret = pipeline.register()
    topic = pipeline.topic(device)
    pipeline.mosquitto_pub(device, secret, topic, b'{"ts": not json')
    deep = reading(at("08:00:00"), 1, water_level_cm="deep")  # type: ignore[arg-type]
    pipeline.mosquitto_pub(device, secret, topic, deep)
    pipeline.mosquitto_pub(device, secret, topic, reading(at("08:00:05"), 2, water_level_cm=1.5))
    wait_for(lambda: pipeline.rows(device), what="the good reading after two bad ones")
    letters = wait_for(
        lambda: (
            (
                r := pipeline.query(
                    "SELECT stage, reason, source, payload_b64, cause FROM deadletters WHERE device_id = %s ORDER BY reason",
                    device,
                )
            )
            and len(r) == 2
            and r
        ),
        what="two dead letters",
    )
    reasons = [r[1] for r in letters]
    assert "payload: not valid JSON" in reasons[0]
    assert reasons[1].startswith("values.water_level_cm:") and "'deep'" in reasons[1]
    assert {r[0] for r in letters} == {"ingest"} and {r[2] for r in letters} == {topic}
    assert [r[4] for r in letters] == ["payload", "values.*"]  # as the gateway counted them
    import base64

    assert base64.b64decode(letters[0][3]) == b'{"ts": not json'  # the original bytes


def test_a_pack_of_readings_lands_whole_and_a_bad_pack_is_kept_whole(pipeline: Pipeline) -> None:
    """A device that buffered its readings sends them in one message (a JSON array): each is
    stored. A pack with one bad element is dead-lettered as it came, the element named."""
    device, secret = pipeline.register()
    topic = pipeline.topic(device)
    good = [
        json.loads(reading(at(f"09:00:{s:02d}"), s + 1, water_level_cm=s / 10)) for s in range(5)
    ]
    bad = json.dumps([good[0], {"ts": at("09:01:00"), "values": {"water_level_cm": 1}}])
    assert pipeline.mosquitto_pub(device, secret, topic, bad).returncode == 0
    assert pipeline.mosquitto_pub(device, secret, topic, json.dumps(good)).returncode == 0
    wait_for(lambda: len(pipeline.rows(device)) == 5, what="the pack's five readings stored")
    assert [seq for _m, _ts, _v, seq, _p in pipeline.rows(device)] == [1, 2, 3, 4, 5]
    [(reason, payload)] = wait_for(
        lambda: pipeline.query(
            "SELECT reason, payload_b64 FROM deadletters WHERE device_id = %s", device
        ),
        what="the bad pack dead-lettered",
    )
    import base64

    assert reason.startswith("[1].seq:") and "required" in reason
    assert base64.b64decode(payload) == bad.encode()


def test_a_device_unknown_to_the_registry_is_dead_lettered(pipeline: Pipeline) -> None:
    # The broker knows the login (provisioned outside the registry), the registry does not.
    ghost, secret = "ghost-" + pipeline.settings.topic_prefix, "ghost-secret-1"
    with __import__("wiring.services", fromlist=["open_registry"]).open_registry(
        pipeline.settings
    ) as registry:
        registry.set_service_credential(ghost, secret, "itest")
    wait_for(
        lambda: (
            pipeline.mosquitto_pub(
                ghost, secret, pipeline.topic(ghost), reading(at("08:00:00"), 1, x=1)
            ).returncode
            == 0
        ),
        what="the broker to accept the new login",
    )
    letter = wait_for(
        lambda: pipeline.query(
            "SELECT stage, reason, cause FROM deadletters WHERE device_id = %s", ghost
        ),
        what="a dead letter",
    )
    assert letter[0][0] == "streams" and "not in the registry" in letter[0][1]
    assert letter[0][2] == "unknown_device"  # as cityvitals_streams_rejected_total counts it
    assert pipeline.rows(ghost) == []


def test_a_device_publishes_over_tls_with_its_own_login(pipeline: Pipeline) -> None:
    """Field devices on a real network send their passwords over TLS: the broker's second
    listener serves the stack's certificate, with the same logins and ACL; a client that
    does not trust the certificate, or speaks plain MQTT to it, gets nothing through."""
    device, secret = pipeline.register()
    s = pipeline.settings
    assert s.mqtt_tls_port is not None and s.mqtt_tls_certfile is not None
    tls = ("-p", str(s.mqtt_tls_port), "--cafile", str(s.mqtt_tls_certfile))
    topic = pipeline.topic(device)
    sent = pipeline.mosquitto_pub(device, secret, topic, reading(at("07:00:00"), 1, x=1), *tls)
    assert sent.returncode == 0, sent.stderr
    rows = wait_for(lambda: pipeline.rows(device), what="the reading sent over TLS")
    assert [(m, v, seq) for m, _ts, v, seq, _p in rows] == [("x", 1.0, 1)]
    wrong = pipeline.mosquitto_pub(
        device, "not-its-secret", topic, reading(at("07:00:01"), 2, x=2), *tls
    )
    assert wrong.returncode != 0  # the same logins as the plain listener
    plain = pipeline.mosquitto_pub(
        device, secret, topic, reading(at("07:00:02"), 3, x=3), "-p", str(s.mqtt_tls_port)
    )
    assert plain.returncode != 0  # no TLS, no connection


def test_a_device_cannot_publish_on_another_devices_topic(pipeline: Pipeline) -> None:
    mallory, secret = pipeline.register()
    victim, _ = pipeline.register()
    acks: list[ReasonCode] = []
    done = threading.Event()

    def on_publish(_c: object, _u: object, _mid: int, reason: ReasonCode, _p: object) -> None:
        acks.append(reason)
        done.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"m-{mallory}", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(mallory, secret)
    client.on_publish = on_publish
    client.connect("127.0.0.1", pipeline.settings.mqtt_port)
    client.loop_start()
    try:
        client.publish(pipeline.topic(victim), reading(at("08:00:00"), 1, water_level_cm=99), qos=1)
        assert done.wait(10), "no PUBACK"
    finally:
        client.loop_stop()
        client.disconnect()
    assert acks[0].value == 0x87  # MQTT 5: not authorized
    # Its own topic works, and nothing of the refused message reached the database.
    pipeline.mosquitto_pub(
        mallory,
        secret,
        pipeline.topic(mallory),
        reading(at("08:00:01"), 2, water_level_cm=1),
    )
    wait_for(lambda: pipeline.rows(mallory), what="mallory's own reading")
    assert pipeline.rows(victim) == []


def test_a_mistyped_topic_under_mqtt_311_is_dead_lettered_not_lost(pipeline: Pipeline) -> None:
    """MQTT 3.1.1 cannot refuse a publish: the broker acknowledges it either way. A topic under
    the device's own id reaches the gateway, which dead-letters it naming the expected forms."""
    device, secret = pipeline.register()
    root = pipeline.settings.mqtt_topic_root
    mistyped = f"{root}/{device}/reading"
    acked = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{device}", protocol=mqtt.MQTTv311
    )
    client.username_pw_set(device, secret)
    client.on_publish = lambda *_: acked.set()
    client.connect("127.0.0.1", pipeline.settings.mqtt_port)
    client.loop_start()
    try:
        client.publish(mistyped, reading(at("08:00:00"), 1, water_level_cm=3), qos=1)
        assert acked.wait(10), "no PUBACK"
    finally:
        client.loop_stop()
        client.disconnect()
    letter = wait_for(
        lambda: pipeline.query(
            "SELECT stage, reason, source FROM deadletters WHERE device_id = %s", device
        ),
        what="the mistyped topic's dead letter",
    )
    assert letter == [
        (
            "ingest",
            f"topic: topic {mistyped!r} is neither {root}/<device_id>/readings nor "
            f"{root}/<device_id>/events",
            mistyped,
        )
    ]
    assert 'cityvitals_ingest_rejected_total{field="topic"}' in pipeline.metrics("ingest")
    assert pipeline.rows(device) == []


def _alerts_of(consumer: Consumer, device: str, count: int, rule_id: str) -> list[Alert]:
    found: list[Alert] = []

    def poll() -> bool:
        for msg in consumer.consume(100, timeout=0.5):
            if msg.error() is None:
                alert = Alert.model_validate_json(msg.value())
                if (alert.device_id, alert.rule_id) == (device, rule_id):
                    found.append(alert)
        return len(found) >= count

    wait_for(poll, what=f"{count} alert transitions for {device}")
    return found


def test_over_threshold_yields_one_alert_and_recovery_one_resolve(
    pipeline: Pipeline, alerts_consumer: Consumer
) -> None:
    device, secret = pipeline.register("water_level")
    topic = pipeline.topic(device)
    for seq, depth in enumerate([1.0, 8.0, 9.0, 8.0, 1.0, 0.5], start=1):
        pipeline.mosquitto_pub(
            device,
            secret,
            topic,
            reading(at(f"08:00:{seq:02d}"), seq, water_level_cm=depth),
        )
    # Replaying an over-threshold reading adds no transition.
    pipeline.mosquitto_pub(device, secret, topic, reading(at("08:00:03"), 3, water_level_cm=9.0))
    pipeline.mosquitto_pub(device, secret, topic, reading(at("08:00:09"), 9, water_level_cm=0.4))
    wait_for(lambda: len(pipeline.rows(device)) == 7, what="every reading stored")
    depth = "waterlogging-depth"  # (the rise from 1 to 8 cm also fires the rate rule)
    alerts = _alerts_of(alerts_consumer, device, 2, depth)
    for msg in alerts_consumer.consume(100, timeout=2):  # anything more would be a duplicate
        if msg.error() is None and json.loads(msg.value())["device_id"] == device:
            alert = Alert.model_validate_json(msg.value())
            if alert.rule_id == depth:
                alerts.append(alert)
    assert [(a.status.value, a.level.value, a.rule_id) for a in alerts] == [
        ("firing", "blue", "waterlogging-depth"),
        ("resolved", "blue", "waterlogging-depth"),
    ]
    assert alerts[0].alert_id == alerts[1].alert_id
    assert alerts[0].place_path == ("itest", "d1", "s1", "g1")
    stored = wait_for(
        lambda: pipeline.query(
            "SELECT status, revision, resolved_at IS NOT NULL FROM alerts "
            "WHERE device_id = %s AND rule_id = %s",
            device,
            depth,
        ),
        what="the alert in the database",
    )
    assert stored == [("resolved", 1, True)]
    assert (
        len(
            pipeline.query(
                "SELECT 1 FROM alert_transitions WHERE alert_id = %s", alerts[0].alert_id
            )
        )
        == 2
    )


def test_dead_letters_carry_the_contract(pipeline: Pipeline) -> None:
    """Every dead letter stored so far decodes as the published DeadLetter contract (what its
    stage counted it as included: other tests store letters made without it, as of before
    causes were kept; the tests of each stage check theirs say it)."""
    rows = pipeline.query(
        "SELECT stage, reason, cause, source, device_id, payload_b64, received_at FROM deadletters"
    )
    for stage, reason, cause, source, device_id, payload, received in rows:
        DeadLetter(
            stage=stage,
            reason=reason,
            cause=cause,
            source=source,
            device_id=device_id,
            payload_b64=payload,
            received_at=received,
        )


def test_the_stream_times_every_group_it_takes(pipeline: Pipeline) -> None:
    """Every group it takes (the stage's own clock ticks reach it every second on this
    stack, readings or not) counts once in each phase and in the group sizes."""

    def counts() -> dict[str, float]:
        families = text_string_to_metric_families(pipeline.metrics("streams"))
        return {
            s.labels.get("phase", s.name): s.value
            for f in families
            if f.name in ("cityvitals_streams_group_seconds", "cityvitals_streams_group_messages")
            for s in f.samples
            if s.name.endswith("_count")
        }

    before = counts()
    # All are observed one after the other for each group: read them in step.
    after = wait_for(
        lambda: (
            c if len(set((c := counts()).values())) == 1 and c != before and len(c) == 5 else None
        )
    )
    phases = {"decode", "judge", "hand", "confirm"}
    assert set(after) == phases | {"cityvitals_streams_group_messages_count"}
    assert all(after[k] > before.get(k, 0) for k in after), (before, after)
    # Each phase's time is its own: judging (process_batch runs on every message, clock
    # ticks included) takes some of it.
    families = text_string_to_metric_families(pipeline.metrics("streams"))
    seconds = {
        s.labels["phase"]: s.value
        for f in families
        if f.name == "cityvitals_streams_group_seconds"
        for s in f.samples
        if s.name.endswith("_sum")
    }
    assert set(seconds) == phases and seconds["judge"] > 0, seconds


def disconnects(pipeline: Pipeline) -> float:
    text = pipeline.metrics("ingest")
    line = next(x for x in text.splitlines() if x.startswith("cityvitals_ingest_mqtt_disconnects"))
    return float(line.split()[-1])


def test_a_retained_qos_0_reading_is_stored_and_the_gateway_stays_connected(
    pipeline: Pipeline,
) -> None:
    """A device publishing at QoS 0 (retained, so the broker sends it again at each of the
    gateway's subscriptions) is taken; the gateway acknowledged it once with a PUBACK naming
    no message, and the broker dropped it at every reconnect, redelivering the city's
    messages each time."""
    before = disconnects(pipeline)
    device, secret = pipeline.register()
    other, other_secret = pipeline.register()
    topic = pipeline.topic(device)
    now = datetime.now(UTC) - timedelta(seconds=5)
    sent = pipeline.mosquitto_pub(
        device, secret, topic, reading(now.isoformat(), 1, water_level_cm=3), "-q", "0", "-r"
    )
    assert sent.returncode == 0, sent.stderr
    try:
        wait_for(lambda: pipeline.rows(device), what="the QoS 0 reading stored")
        later = (now + timedelta(seconds=1)).isoformat()
        sent = pipeline.mosquitto_pub(
            other, other_secret, pipeline.topic(other), reading(later, 1, water_level_cm=4)
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: pipeline.rows(other), what="a QoS 1 reading after it")
        assert disconnects(pipeline) == before
    finally:  # the retained message is cleared (an empty retained publish)
        pipeline.mosquitto_pub(device, secret, topic, b"", "-q", "0", "-r")


def test_the_streams_event_loop_beats_and_says_how_long_it_was_silent(pipeline: Pipeline) -> None:
    """Its readiness includes a loop that turns: a timer beats every second, and the metrics
    server's thread reads how long ago (a stuck loop reports not ready after 30 s)."""

    def silent() -> float:
        for family in text_string_to_metric_families(pipeline.metrics("streams")):
            if family.name == "cityvitals_streams_loop_silent_seconds":
                return float(family.samples[0].value)
        raise AssertionError("no cityvitals_streams_loop_silent_seconds")

    seen = []
    for _ in range(3):
        time.sleep(1)
        seen.append(silent())
    assert all(0 <= s < 5 for s in seen), seen  # beaten again and again
    assert "cityvitals_streams_ready 1.0" in pipeline.metrics("streams").splitlines()


def test_every_service_says_which_build_runs(pipeline: Pipeline) -> None:
    """``cityvitals_build_info`` on each service's metrics: an operator sees what every
    process runs after an upgrade (one not restarted runs the version before)."""
    from cityvitals.build import build

    labels = build().labels()
    for service in ("ingest", "streams", "sinks", "liveness", "api"):
        exposed = pipeline.metrics(service)
        line = next((s for s in exposed.splitlines() if s.startswith("cityvitals_build_info{")), "")
        assert f'schema="{labels["schema"]}"' in line and line.endswith(" 1.0"), (service, line)
