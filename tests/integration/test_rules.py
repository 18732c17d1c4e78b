"""Rules through the running pipeline: hot reload, memory that survives a worker restart,
composite rules on the place partition, and silence judged by the stream's clock."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cityvitals import kafka
from cityvitals.topics import Topic, partition_for
from tests.integration.conftest import Pipeline, reading, wait_for

pytestmark = pytest.mark.integration


def uid() -> str:
    return uuid.uuid4().hex[:8]


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def alerts(pipeline: Pipeline, rule_id: str) -> list[tuple[Any, ...]]:
    return pipeline.query(
        "SELECT status, level, device_id, started_at, evidence, place_path FROM alerts "
        "WHERE rule_id = %s ORDER BY started_at",
        rule_id,
    )


def test_a_rule_added_to_the_file_fires_without_a_restart(pipeline: Pipeline) -> None:
    n = uid()
    device, secret = pipeline.register("water_level")
    now = datetime.now(UTC)
    pipeline.mosquitto_pub(
        device,
        secret,
        pipeline.topic(device),
        reading(iso(now - timedelta(minutes=2)), 1, **{f"m{n}": 50}),
    )
    wait_for(lambda: pipeline.rows(device), what="the reading before the rule exists")
    assert alerts(pipeline, f"added-{n}") == []
    pipeline.add_rules(f"  - {{id: added-{n}, metric: m{n}, levels: {{yellow: 10, red: 100}}}}\n")
    pipeline.mosquitto_pub(
        device,
        secret,
        pipeline.topic(device),
        reading(iso(now - timedelta(minutes=1)), 2, **{f"m{n}": 60}),
    )
    found = wait_for(lambda: alerts(pipeline, f"added-{n}"), what="the new rule's alert")
    assert [(s, lv, d) for s, lv, d, *_ in found] == [("firing", "yellow", device)]

    # 'up' from a shell without CITYVITALS_RULES_FILE would start the stream on the shipped
    # rules, which would resolve this alert as removed: it refuses to, naming the rule.
    from wiring.cli_stack import _refuse_missing_rules
    from wiring.services import load_rules
    from wiring.stack import StackError

    shipped = pipeline.settings.model_copy(update={"rules_file": None})
    with pytest.raises(StackError, match=rf"added-{n} \(1 firing\)") as refused:
        _refuse_missing_rules(shipped, load_rules(shipped))
    assert "the shipped defaults lacks" in str(refused.value)
    assert "--rules-removed" in str(refused.value)
    in_force = load_rules(pipeline.settings)  # the file that has it
    assert f"added-{n}" in {r.id for r in in_force.rules}
    try:
        _refuse_missing_rules(pipeline.settings, in_force)
    except StackError as exc:  # another test's rule may fire still: not this one
        assert f"added-{n}" not in str(exc)


def test_a_broken_rule_file_is_refused_and_the_rules_in_force_stay(pipeline: Pipeline) -> None:
    path = pipeline.settings.rules_file
    assert path is not None
    good = path.read_text()
    errors = "cityvitals_streams_rules_reload_errors_total"

    def refused() -> float:
        line = [x for x in pipeline.metrics("streams").splitlines() if x.startswith(errors)]
        return float(line[0].split()[-1]) if line else -1.0

    before = refused()
    path.write_text(good + "  - {id: broken, metric: m, levels: {blue: 10, yellow: 5}}\n")
    wait_for(lambda: refused() > before, what="the broken file to be refused")
    path.write_text(good)
    # The rules in force still work: the shipped depth rule fires.
    device, secret = pipeline.register("water_level")
    pipeline.mosquitto_pub(
        device,
        secret,
        pipeline.topic(device),
        reading(iso(datetime.now(UTC)), 1, water_level_cm=20),
    )
    wait_for(
        lambda: [a for a in alerts(pipeline, "waterlogging-depth") if a[2] == device],
        what="the depth alert under the rules in force",
    )


def test_rule_memory_survives_a_worker_restart(pipeline: Pipeline) -> None:
    n = uid()
    pipeline.add_rules(
        f"  - {{id: rise-{n}, kind: rate, metric: h{n}, over: 1h, per: 1h, levels: {{orange: 20}}}}\n"
    )
    device, secret = pipeline.register("water_level")
    start = datetime.now(UTC) - timedelta(minutes=40)
    pipeline.mosquitto_pub(
        device, secret, pipeline.topic(device), reading(iso(start), 1, **{f"h{n}": 0})
    )
    wait_for(lambda: pipeline.rows(device), what="the first reading")
    pipeline.restart("streams")
    pipeline.mosquitto_pub(
        device,
        secret,
        pipeline.topic(device),
        reading(iso(start + timedelta(minutes=30)), 2, **{f"h{n}": 30}),
    )
    # 30 over half an hour is 60 per hour: only a worker that remembers the first value
    # (a rate rule's memory) sees the rise.
    found = wait_for(lambda: alerts(pipeline, f"rise-{n}"), what="the alert after the restart")
    assert [(s, lv) for s, lv, *_ in found] == [("firing", "orange")]


def test_keep_firing_for_runs_out_at_the_streams_clock(pipeline: Pipeline) -> None:
    n = uid()
    pipeline.add_rules(
        f"  - {{id: kept-{n}, metric: k{n}, levels: {{yellow: 30}}, keep_firing_for: 3s}}\n"
    )
    device, secret = pipeline.register("water_level")
    now = datetime.now(UTC)
    for seq, (ago, value) in enumerate(((2, 35), (1, 20)), start=1):
        pipeline.mosquitto_pub(
            device,
            secret,
            pipeline.topic(device),
            reading(iso(now - timedelta(seconds=ago)), seq, **{f"k{n}": value}),
        )
    # No further reading: only the clock can end the keep_firing_for.
    resolved = wait_for(
        lambda: [a for a in alerts(pipeline, f"kept-{n}") if a[0] == "resolved"],
        what="the alert resolved by a tick",
    )
    assert [(s, d) for s, _lv, d, *_ in resolved] == [("resolved", device)]


def test_a_composite_rule_joins_two_devices_of_a_street(pipeline: Pipeline) -> None:
    n = uid()
    street = f"itest/d{n}/s{n}"
    rain, rain_secret = pipeline.register("rain_gauge", f"{street}/ga{n}")
    water, water_secret = pipeline.register("water_level", f"{street}/gb{n}")
    now = datetime.now(UTC)
    pipeline.mosquitto_pub(
        rain,
        rain_secret,
        pipeline.topic(rain),
        reading(iso(now - timedelta(minutes=3)), 1, rain_mm_h=48),
    )
    pipeline.mosquitto_pub(
        water,
        water_secret,
        pipeline.topic(water),
        reading(iso(now - timedelta(minutes=1)), 1, water_level_cm=7),
    )

    def flood() -> list[tuple[Any, ...]]:
        return [a for a in alerts(pipeline, "street-flash-flood") if a[5] == street.split("/")]

    (status, level, _device, _start, evidence, _path), *_ = wait_for(flood, what="the flood alert")
    assert (status, level) == ("firing", "orange")
    assert sorted(evidence) == sorted([rain, water])

    # On Kafka: keyed by the street, on the street's partition (one key, one partition)
    found = on_kafka(pipeline, "street-flash-flood", f"s{n}")
    parts = pipeline.settings.kafka_partitions
    assert {(key, part) for key, part, _ in found} == {
        (f"s{n}".encode(), partition_for(f"s{n}", parts))
    }


def on_kafka(pipeline: Pipeline, rule_id: str, place_id: str) -> list[tuple[bytes, int, Any]]:
    """The transitions of ``rule_id``'s alerts at ``place_id`` on the ``alerts`` topic (key,
    partition, the alert as JSON), once at least one came (a minute at most)."""
    consumer = kafka.consumer(pipeline.settings, f"itest-{uid()}")
    consumer.subscribe([pipeline.settings.topic(Topic.ALERTS)])
    found: list[tuple[bytes, int, Any]] = []
    deadline = time.monotonic() + 60
    try:
        while not found and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    alert = json.loads(msg.value() or b"{}")
                    if alert["rule_id"] == rule_id and place_id in alert["place_path"]:
                        found.append((msg.key() or b"", msg.partition() or 0, alert))
    finally:
        consumer.close()
    return found


def test_silence_is_judged_by_the_streams_clock(pipeline: Pipeline) -> None:
    n = uid()
    pipeline.add_rules(
        f"  - {{id: quiet-{n}, kind: absence, metric: q{n}, after: 3s, device_types: [quiet{n}]}}\n"
    )
    device, secret = pipeline.register(f"quiet{n}")
    pipeline.mosquitto_pub(
        device, secret, pipeline.topic(device), reading(iso(datetime.now(UTC)), 1, **{f"q{n}": 1})
    )
    # No further reading: only the clock ticks can notice the silence.
    found = wait_for(lambda: alerts(pipeline, f"quiet-{n}"), what="the absence alert")
    assert [(s, d) for s, _lv, d, *_ in found] == [("firing", device)]


def test_a_rules_night_levels_judge_the_readings_of_its_hours(pipeline: Pipeline) -> None:
    """The same 60 dB(A) passes nothing by day and the night's 55 in the night's hours (by
    the reading's time, in the city's zone: UTC here), through a reloaded rule file."""
    n = uid()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    starts, ends = now - timedelta(hours=2), now - timedelta(minutes=30)
    night = f"{{starts: '{starts:%H:%M}', ends: '{ends:%H:%M}', levels: {{blue: 55}}}}"
    pipeline.add_rules(
        f"  - {{id: night-{n}, metric: db{n}, levels: {{blue: 70}}, night: {night}}}\n"
    )
    device, secret = pipeline.register("noise")
    for seq, ago in enumerate((timedelta(hours=3), timedelta(minutes=90)), start=1):
        pipeline.mosquitto_pub(
            device, secret, pipeline.topic(device), reading(iso(now - ago), seq, **{f"db{n}": 60})
        )
    # Its firing, as published: the stored row may be its end already (the device silent
    # since a reading 90 minutes old: stale at the stream's next tick).
    place = pipeline.query("SELECT place_path FROM devices WHERE device_id = %s", device)
    (_, _, fired), *_ = on_kafka(pipeline, f"night-{n}", place[0][0][-1])
    assert (fired["status"], fired["level"], fired["revision"]) == ("firing", "blue", 0)
    assert datetime.fromisoformat(fired["started_at"]) == now - timedelta(minutes=90)
    assert fired["summary"].endswith(
        f"reached 55 (blue): the night levels, {starts:%H:%M}-{ends:%H:%M} UTC"
    )
