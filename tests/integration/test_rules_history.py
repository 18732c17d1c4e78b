"""Rules over history and across a lost memory: the database form of the backtest, and open
alerts that continue when the stream starts with an empty Kafka."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cityvitals import db, kafka
from cityvitals.contracts import (
    Alert,
    AlertStatus,
    Device,
    MetricSpec,
    Profile,
    Reading,
    ReadingBatch,
)
from cityvitals.settings import Settings
from cityvitals.topics import Topic, partition_for
from tests.integration.conftest import Pipeline, at, free_port, reading, wait_for
from wiring.cli_rules import rules_app
from wiring.localstack import reports_ready
from wiring.services import open_registry
from wiring.stack import ManagedProcess

pytestmark = pytest.mark.integration


def uid() -> str:
    return uuid.uuid4().hex[:8]


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def test_a_database_backtest_writes_what_the_rules_make_of_stored_readings(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    n = uid()
    t0 = datetime.fromisoformat(at("10:00:00"))  # recent: the storage keeps readings 90 days
    stored = [("a", 0, 35.0), ("a", 1, 20.0), ("b", 2, 40.0)]
    with db.connect(pipeline.settings) as conn:
        for device, minute, value in stored:
            conn.execute(
                "INSERT INTO readings (device_id, metric, ts, value, seq, device_type, place_path)"
                " VALUES (%s, %s, %s, %s, %s, 'water_level', '{itest,d1}')",
                (f"bt{device}-{n}", f"m{n}", t0 + timedelta(minutes=minute), value, minute),
            )
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"rules: [{{id: bt, metric: m{n}, levels: {{yellow: 30}}, keep_firing_for: 3m}}]"
    )
    out = tmp_path / "alerts.jsonl"
    argv = ["backtest", "--rules", str(rules), "--output", str(out)]
    argv += ["--from", iso(t0), "--to", iso(t0 + timedelta(minutes=30))]
    result = CliRunner().invoke(rules_app, argv, env=pipeline.settings.to_env())
    assert result.exit_code == 0, result.output
    found = [Alert.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [(a.device_id, a.status.value, a.ts - t0) for a in found] == [
        (f"bta-{n}", "firing", timedelta(0)),
        (f"btb-{n}", "firing", timedelta(minutes=2)),
        (f"bta-{n}", "resolved", timedelta(minutes=4)),  # keep_firing_for ran out at a tick
        (f"btb-{n}", "resolved", timedelta(minutes=22)),  # silent: stale after 4 x 5 minutes
    ]
    assert found[-1].resolution is not None and found[-1].resolution.value == "stale"


def test_rules_check_names_what_the_registry_does_not_know(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    device, _ = pipeline.register("rh_gauge")
    gauge = Profile(
        profile_id="rh-v1",
        device_type="rh_gauge",
        expected_interval_s=60,
        metrics={"level_cm": MetricSpec(unit="cm")},
    )
    with open_registry(pipeline.settings) as registry:
        place = registry.get(device).place_path[-1]
        registry.put_profile(gauge, "itest")
    rules = tmp_path / "rules.yaml"
    good = (
        f"{{id: ok, metric: level_cm, levels: {{red: 1}}, places: [{place}], "
        "device_types: [rh_gauge]}"
    )
    # a rule of any device type: the gauge's profile says nothing of what the devices
    # without a profile (this gauge among them) send
    anywhere = "{id: anywhere, metric: water_level_cm, levels: {red: 1}}"
    rules.write_text(f"rules: [{good}, {anywhere}]")
    env = pipeline.settings.to_env()
    checked = CliRunner().invoke(rules_app, ["check", str(rules), "--registry"], env=env)
    assert checked.exit_code == 0, checked.output
    assert "every place, device type and profile the rules name is in the registry" in (
        checked.output
    )
    typo = "{id: typo, metric: m, levels: {red: 1}, places: [riverzide], profiles: [nope]}"
    metric = "{id: metric, kind: absence, metric: levl_cm, after: 5m, device_types: [rh_gauge]}"
    rules.write_text(f"rules: [{good}, {typo}, {metric}]")
    offline = CliRunner().invoke(rules_app, ["check", str(rules)], env=env)
    assert offline.exit_code == 0, offline.output  # the file alone is valid
    refused = CliRunner().invoke(rules_app, ["check", str(rules), "--registry"], env=env)
    assert refused.exit_code == 1, refused.output
    assert "rule 'typo': places names 'riverzide', which the registry does not know" in (
        refused.output
    )
    assert "rule 'typo': profiles names 'nope'" in refused.output
    assert (
        "rule 'metric': metric 'levl_cm' is in no profile of device type rh_gauge (they list "
        "level_cm): only a device without a profile could send it (misspelt?)"
    ) in refused.output
    assert "rule 'ok'" not in refused.output
    # A rule whose devices have no profile: its metric is held against what readings carry.
    pipeline.register("rh_free")  # a device type no profile is of
    free = "{id: free, metric: levl_free, levels: {red: 1}, device_types: [rh_free]}"
    rules.write_text(f"rules: [{good}, {free}]")
    noted = CliRunner().invoke(rules_app, ["check", str(rules), "--registry"], env=env)
    assert noted.exit_code == 0, noted.output  # rules may come before their devices
    assert (
        "note: rule 'free': metric 'levl_free' was not checked against a profile (no device it "
        "applies to has one), and no reading of the last day carries it (they carry "
    ) in noted.output
    assert "1 metric of rules whose devices have no profile in no reading" in noted.output
    # A device type nothing ships nor registers is a problem (a shipped one no device here
    # has is a note: tests/unit/test_cli_rules.py).
    lamp = "{id: lamp-x, metric: lux, levels: {red: 1}, device_types: [lamp_post]}"
    rules.write_text(f"rules: [{good}, {lamp}]")
    unknown = CliRunner().invoke(rules_app, ["check", str(rules), "--registry"], env=env)
    assert unknown.exit_code == 1, unknown.output
    assert "rule 'lamp-x': device_types names 'lamp_post', which the registry does not" in (
        unknown.output
    )


def test_incidents_check_names_a_department_the_registry_does_not_know(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    from device_registry.incident_publisher import incident_departments
    from wiring.cli_incidents import incidents_app

    shipped = Path(__file__).parents[2] / "rules" / "incidents.yaml"
    with open_registry(pipeline.settings) as registry:  # as 'cityvitals up' registers them
        shipped_settings = pipeline.settings.model_copy(update={"incidents_file": shipped})
        registry.add_missing_departments(incident_departments(shipped_settings), "itest")
    env = pipeline.settings.to_env()
    argv = ["check", str(shipped), "--registry"]
    checked = CliRunner().invoke(incidents_app, argv, env=env)
    assert checked.exit_code == 0 and checked.output.endswith("OK\n"), checked.output
    misspelt = tmp_path / "incidents.yaml"
    misspelt.write_text(shipped.read_text().replace("water-affairs", "water-afairs"))
    refused = CliRunner().invoke(incidents_app, ["check", str(misspelt), "--registry"], env=env)
    assert refused.exit_code == 1, refused.output
    assert "department 'water-afairs' is not in the registry" in refused.output


@contextmanager
def fresh_streams(pipeline: Pipeline) -> Iterator[Settings]:
    """A second streams service on the same database and rule file, but with topics and
    tables of its own: a stream that starts with an empty Kafka, as after a restart of the
    local stack. Yields its settings once it is ready."""
    settings = pipeline.settings.model_copy(
        update={"topic_prefix": f"re{uid()}", "metrics_port": free_port()}
    )
    kafka.ensure_topics(settings)
    process = ManagedProcess(
        f"streams-{settings.topic_prefix}",
        [sys.executable, "-m", "wiring.cli", "run", "streams"],
        pipeline.stack.paths,
        env=settings.to_env(),
    )
    process.start()
    try:
        wait_for(
            lambda: reports_ready("streams", settings.metrics_port),
            timeout=90,
            what="the second streams service ready",
        )
        yield settings
    finally:
        process.stop()


def test_an_open_alert_resolves_with_its_id_after_a_restart_with_an_empty_kafka(
    pipeline: Pipeline,
) -> None:
    n = uid()
    rule_id = f"resume-{n}"
    pipeline.add_rules(f"  - {{id: {rule_id}, metric: r{n}, levels: {{red: 10}}}}\n")
    device_id, secret = pipeline.register("water_level")
    now = datetime.now(UTC)
    pipeline.mosquitto_pub(
        device_id, secret, pipeline.topic(device_id), reading(iso(now), 1, **{f"r{n}": 50})
    )
    ((alert_id,),) = wait_for(
        lambda: pipeline.query(
            "SELECT alert_id FROM alerts WHERE rule_id = %s AND status = 'firing'", rule_id
        ),
        what="the alert open in the database",
    )
    with fresh_streams(pipeline) as settings:
        device = Device(
            device_id=device_id,
            device_type="water_level",
            place_path=("itest", "d1", "s1", "g1"),
            updated_at=now,
        )
        normal = Reading(
            device_id=device_id, ts=now + timedelta(seconds=1), seq=2, values={f"r{n}": 1}
        )
        batch = ReadingBatch(devices=(device,), readings=(normal,))
        producer = kafka.producer(settings)
        producer.produce(
            settings.topic(Topic.READINGS_RAW),
            batch.model_dump_json().encode(),
            partition=partition_for(device_id, settings.kafka_partitions),
        )
        assert producer.flush(30) == 0
        consumer = kafka.consumer(settings, f"itest-{uid()}")
        consumer.subscribe([settings.topic(Topic.ALERTS)])
        try:

            def resolved() -> list[Alert]:
                message = consumer.poll(0.5)
                if message is None or message.error() is not None:
                    return []
                alert = Alert.model_validate_json(message.value() or b"")
                return [alert] if alert.rule_id == rule_id else []

            (alert,) = wait_for(resolved, timeout=60, what="the open alert resolved")
        finally:
            consumer.close()
    assert (alert.alert_id, alert.status, alert.revision) == (alert_id, AlertStatus.RESOLVED, 1)
