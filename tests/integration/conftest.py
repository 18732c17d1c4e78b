"""Integration fixtures: a real Mosquitto, tansu and PostgreSQL, and the three services, started
as local processes on free loopback ports for the test session (``cityvitals up`` does the same).

Tests isolate themselves by device ids (each test makes its own); the pipeline is shared because
a Faust worker takes seconds to join its group.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from confluent_kafka import Consumer

from cityvitals import db, kafka
from cityvitals.contracts import Device
from cityvitals.settings import Settings
from device_registry.access import Role
from tests.integration.publishing import login_answer
from wiring.localstack import LocalStack, MetricsPorts, down, scrape
from wiring.services import open_registry
from wiring.stack import free_loopback_port

T = TypeVar("T")


free_port = free_loopback_port


def free_port_block(count: int) -> int:
    """A base port such that base+1 .. base+count are free now (``up --metrics-base``)."""
    return free_loopback_port(count + 1)


def wait_for(probe: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll until ``probe`` returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Pipeline:
    settings: Settings
    stack: LocalStack

    def register(
        self, device_type: str = "water_level", place: str = "itest/d1/s1/g1"
    ) -> tuple[str, str]:
        """A new active device, once the broker takes its login; returns (device id, MQTT
        secret)."""
        device_id = f"{device_type.replace('_', '')}-{uuid.uuid4().hex[:10]}"
        device = Device(
            device_id=device_id,
            device_type=device_type,
            place_path=tuple(place.split("/")),
            updated_at=datetime.now(UTC),
        )
        with open_registry(self.settings) as registry:
            secret = registry.add(device, "itest")
        wait_for(  # the broker refuses it until it has reloaded its password file
            lambda: login_answer(self.settings, device_id, secret) == 0,
            timeout=30,
            what=f"the broker to take {device_id}'s login",
        )
        return device_id, secret

    def metrics(self, service: str) -> str:
        """The service's Prometheus exposition text ('' while it does not answer)."""
        port = self.stack.metrics.of(service)
        try:
            return scrape(port)
        except OSError:
            return ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``cityvitals ARGS`` as a separate process on this stack, as an operator runs it."""
        return subprocess.run(
            [sys.executable, "-m", "wiring.cli", *args],
            env={**os.environ, **self.settings.to_env()},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def add_rules(self, rules_yaml: str) -> str:
        """Append rules to the stream's rule file; returns once the stream runs them."""
        from rules import parse_rules

        path = self.settings.rules_file
        assert path is not None
        text = path.read_text() + rules_yaml
        version = parse_rules(text, str(path)).version
        tmp = path.with_suffix(".new")
        tmp.write_text(text)
        tmp.replace(path)
        wait_for(
            lambda: (
                f'cityvitals_streams_rules_info{{version="{version}"}} 1.0'
                in self.metrics("streams")
            ),
            what=f"the stream to run rule file version {version}",
        )
        return version

    def restart(self, service: str) -> None:
        """Stop a service's process and start it again; returns once it reports ready."""
        from wiring.localstack import reports_ready

        (process,) = [p for p in self.stack.processes if p.name == service]
        process.stop()
        process.start()
        wait_for(
            lambda: reports_ready(service, self.stack.metrics.of(service)),
            timeout=90,
            what=f"{service} ready after a restart",
        )

    def topic(self, device_id: str, kind: str = "readings") -> str:
        return f"{self.settings.mqtt_topic_root}/{device_id}/{kind}"

    def mosquitto_pub(
        self, user: str, secret: str, topic: str, payload: str | bytes, *extra: str
    ) -> subprocess.CompletedProcess[bytes]:
        """Publish with Mosquitto's own client (QoS 1), not ours."""
        data = payload.encode() if isinstance(payload, str) else payload
        return subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.settings.mqtt_port),
                "-q",
                "1",
                "-u",
                user,
                "-P",
                secret,
                "-t",
                topic,
                "-s",
                *extra,
            ],
            input=data,
            capture_output=True,
            timeout=30,
            check=False,
        )

    def login_refused(self, user: str, secret: str) -> bool:
        """Whether the broker refuses ``user`` now: a connection that publishes nothing (MQTT 5,
        which names the refusal), so a probe never leaves a reading behind."""
        probe = subprocess.run(
            [
                *("mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.settings.mqtt_port)),
                *("-u", user, "-P", secret, "-V", "mqttv5", "-t", self.topic(user)),
                *("-C", "1", "-W", "1"),
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return b"not authori" in probe.stderr.lower()

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with db.connect(self.settings) as conn:
            return conn.execute(sql.encode(), params).fetchall()

    def rows(self, device_id: str) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT metric, ts, value, seq, place_path FROM readings WHERE device_id = %s ORDER BY ts, metric",
            device_id,
        )


TEST_DAY: date = (datetime.now(UTC) - timedelta(days=1)).date()
"""The day (UTC) the tests' readings, alerts and incidents are stamped: yesterday, so that any
time of it is in the past (the stream refuses a reading over 10 minutes ahead of its clock)."""


def at(time_of_day: str) -> str:
    """``"HH:MM:SS"`` on :data:`TEST_DAY` as an ISO instant in UTC (``2026-12-04T08:00:00Z``).

    Test data is stamped relative to today, never on a fixed date: the stream refuses a reading
    more than 365 days behind its clock (``too_old``) and the storage drops readings after 90
    days, so a fixed date would make the suite fail once the calendar passes it.
    """
    return f"{TEST_DAY.isoformat()}T{time_of_day}Z"


def reading(ts: str, seq: int, **values: float) -> str:
    return json.dumps({"ts": ts, "seq": seq, "values": values})


SECONDS = {level: "3s" for level in ("blue", "yellow", "orange", "red")}
HOUR = {level: "1h" for level in SECONDS}


DEPTH_HOLD = "    keep_firing_for: 1m   # a level is left once the water held under it a minute, not at a ripple\n"


def test_rules() -> str:
    """The shipped rule file, its depth rule stepping down and resolving at once: the tests'
    readings come seconds apart, and a water level that recedes (or a sensor that flaps) is
    to change the alert within them. (The shipped minute's hold is a unit test's, on the
    shipped file: tests/unit/test_ruleset.py.)"""
    text = resources.files("rules").joinpath("default.yaml").read_text()
    assert text.count(DEPTH_HOLD) == 1, "the shipped depth rule's hold changed: update DEPTH_HOLD"
    return text.replace(DEPTH_HOLD, "")


def test_incidents() -> str:
    """The shipped incident file, quick to verify, plus a category whose tiers have 3 s to
    accept (rules ``esc-*``): escalation within a test's patience."""
    config = yaml.safe_load(resources.files("rules").joinpath("incidents.yaml").read_text())
    quick = {tier: {"accept": SECONDS, "handle": HOUR} for tier in ("street", "district", "city")}
    config["categories"]["itest_escalation"] = {"rules": ["esc-*"], "sla": quick}
    config["routes"][:0] = [
        {"category": "itest_escalation", "tier": "street", "department": "street-ops"},
        {"category": "itest_escalation", "tier": "district", "department": "water-affairs"},
    ]
    config["verify"] = {"quiet": "2s", "close_after": "0s"}
    return yaml.safe_dump(config)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (PEM files in ``folder``): the
    stack's MQTT over TLS listener serves it, and a client trusts it as its CA."""
    cert, key = folder / "mqtt-cert.pem", folder / "mqtt-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    state = tmp_path_factory.mktemp("stack")
    rules_file = state / "rules.yaml"  # tests add rules to it: the stream reloads it
    rules_file.write_text(test_rules())
    incidents_file = state / "incidents.yaml"
    incidents_file.write_text(test_incidents())
    cert, key = self_signed(state)
    settings = Settings(
        rules_file=rules_file,
        incidents_file=incidents_file,
        rules_reload_s=0.5,
        rules_tick_s=1.0,
        indicators_grace_s=1.0,
        mqtt_port=free_port(),
        mqtt_tls_port=free_port(),
        mqtt_tls_certfile=cert,
        mqtt_tls_keyfile=key,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        database_url=f"postgresql://cityvitals@127.0.0.1:{free_port()}/cityvitals",
        state_dir=state,
        topic_prefix=f"it{uuid.uuid4().hex[:6]}",
        mqtt_client_id=f"itest-{uuid.uuid4().hex[:6]}",
        sink_linger_ms=100,
        api_port=free_port(),
        liveness_check_interval_s=0.5,
    )
    stack = LocalStack(settings, MetricsPorts(*(free_port() for _ in range(5))))
    try:
        ready = stack.start_infrastructure()
        stack.start_services()
        stack.wait_ready()
        yield Pipeline(ready, stack)
    finally:
        stack.stop()
        logs = Path(tmp_path_factory.getbasetemp()) / "service-logs"
        shutil.copytree(Path(state) / "logs", logs, dirs_exist_ok=True)
        print(f"service logs kept in {logs}")
        down(state, purge=True)


@pytest.fixture()
def alerts_consumer(pipeline: Pipeline) -> Iterator[Consumer]:
    """A consumer of the real ``alerts`` topic from its beginning, in a group of its own."""
    from cityvitals.topics import Topic

    consumer = kafka.consumer(pipeline.settings, f"itest-{uuid.uuid4().hex}")
    consumer.subscribe([pipeline.settings.topic(Topic.ALERTS)])
    yield consumer
    consumer.close()


ADMIN = "itest-api"
"""The admin the API tests call as (its name is the actor of what they change)."""


def add_user(
    settings: Settings,
    name: str,
    role: Role,
    scope: tuple[str, ...] = (),
    department: str | None = None,
) -> str:
    """A new user of the API in the settings' database; returns its token."""
    with open_registry(settings) as registry:
        return str(registry.add_user(name, role, "itest", scope, department)[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def admin_token(pipeline: Pipeline) -> str:
    """The token of the pipeline API's admin user, ``itest-api``."""
    return add_user(pipeline.settings, ADMIN, Role.ADMIN)


def api_client(settings: Settings, token: str, timeout: float = 120) -> httpx.Client:
    """An HTTP client of the settings' API, calling with ``token`` (as ``X-Actor: itest-api``)."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{settings.api_port}",
        timeout=timeout,
        headers={"X-Actor": ADMIN, **bearer(token)},
    )
