"""Faults under load, on a private stack of real processes (so killing them disturbs no other
test): while a few devices publish a steady, bounded stream of readings at QoS 1, a part of the
pipeline crashes (``kill -9``) or stops, and starts again. Afterwards every published reading is
stored exactly once, and the one threshold crossing in the stream is one alert episode, one
incident and one dispatch order: nothing lost, nothing doubled. On the default stack,
``cityvitals audit`` then reconciles every hop it can compare, and makes its stream →
database check whatever restarted.

Each case uses devices of its own in a district of its own, so the cases share the stack but
not their data.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals import kafka
from cityvitals.settings import Settings
from cityvitals.topics import Topic
from tests.integration.conftest import Pipeline, free_port, wait_for
from tests.integration.conftest import test_incidents as quick_incidents
from wiring.localstack import LocalStack, MetricsPorts, down, reports_ready, sample_sum, scrape
from wiring.stack import ManagedProcess, wait_for_port

pytestmark = pytest.mark.integration

DEVICES = 3
RATE_HZ = 10.0
"""Readings per second per device: 30 a second in all, a few hundred per case."""
HOT = 75.0 + 25.0
"""Above the ``pm25-pollution`` rule's blue level (75); the rest of the stream is below its
clear level (60), so the hot stretch is one episode: firing, then resolved."""
CALM = 35.0


@contextmanager
def private_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, **overrides: Any
) -> Iterator[Pipeline]:
    """A whole stack of its own (``name`` tags its folder, topics and kept logs), with fast
    ticks and sinks; ``overrides`` are settings on top."""
    state = tmp_path_factory.mktemp(f"{name}-stack")
    incidents_file = state / "incidents.yaml"
    incidents_file.write_text(quick_incidents())
    tag = uuid.uuid4().hex[:6]
    fields: dict[str, Any] = {
        "rules_file": None,
        "incidents_file": incidents_file,
        "rules_tick_s": 1.0,
        "indicators_grace_s": 1.0,
        "mqtt_port": free_port(),
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",
        "database_url": f"postgresql://cityvitals@127.0.0.1:{free_port()}/cityvitals",
        "state_dir": state,
        "topic_prefix": f"{name[:2]}{tag}",
        "mqtt_client_id": f"{name}-{tag}",
        "sink_linger_ms": 100,
        "api_port": free_port(),
        "liveness_check_interval_s": 0.5,
        # devices publishing every second go late after 8 s of silence and offline after
        # 10 s; a stream that commits nothing for 4 s while readings wait has stalled (it
        # commits every 2.8 s, so a stall is seen 4 to 7 s after it began)
        "liveness_late_factor": 8.0,
        "liveness_offline_factor": 10.0,
        "liveness_stall_s": 4.0,
    }
    settings = Settings(**{**fields, **overrides})
    local = LocalStack(settings, MetricsPorts(*(free_port() for _ in range(5))))
    try:
        ready = local.start_infrastructure()
        local.start_services()
        local.wait_ready()
        yield Pipeline(ready, local)
    finally:
        local.stop()
        logs = Path(tmp_path_factory.getbasetemp()) / f"{name}-service-logs"
        shutil.copytree(state / "logs", logs, dirs_exist_ok=True)
        print(f"{name} stack's service logs kept in {logs}")
        down(state, purge=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A stack of its own, started like the session's ``pipeline``."""
    with private_stack(tmp_path_factory, "fault") as pipeline:
        yield pipeline


@dataclass
class Load:
    """Devices publishing ``count`` readings each at ``RATE_HZ``, from one paho client per device
    with a persistent session (QoS 1): a client that loses the broker reconnects and sends
    again what was not acknowledged."""

    pipeline: Pipeline
    devices: dict[str, str]
    count: int
    hot: range
    clients: list[mqtt.Client] = field(default_factory=list)
    sent: list[set[int]] = field(default_factory=list)
    acked: list[set[int]] = field(default_factory=list)
    published: int = 0
    thread: threading.Thread | None = None

    def connect(self) -> None:
        s = self.pipeline.settings
        for device_id, secret in self.devices.items():
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"{device_id}-pub",
                clean_session=False,
                protocol=mqtt.MQTTv311,
            )
            client.username_pw_set(device_id, secret)
            client.reconnect_delay_set(0.2, 1)
            connected = threading.Event()
            client.on_connect = lambda *_a, ev=connected: ev.set()  # type: ignore[misc]
            # A PUBACK, however late; a message published while the broker is away waits in
            # the client (its MQTTMessageInfo says "not connected" for good) and goes out later.
            acked: set[int] = set()
            client.on_publish = lambda _c, _u, mid, *_a, got=acked: got.add(mid)  # type: ignore[misc]
            self.acked.append(acked)
            self.sent.append(set())
            client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=10)
            client.loop_start()
            wait_for(lambda ev=connected: ev.is_set(), timeout=30, what=f"{device_id} connected")  # type: ignore[misc]
            self.clients.append(client)

    def body(self, device_index: int, seq: int, base: datetime) -> str:
        value = HOT if device_index == 0 and seq in self.hot else CALM
        ts = base + timedelta(milliseconds=100 * seq)
        return json.dumps({"ts": ts.isoformat(), "seq": seq, "values": {"pm25": value}})

    def _run(self) -> None:
        root = self.pipeline.settings.mqtt_topic_root
        base = datetime.now(UTC)
        start = time.monotonic()
        for seq in range(1, self.count + 1):
            for n, (device_id, client) in enumerate(zip(self.devices, self.clients, strict=True)):
                info = client.publish(
                    f"{root}/{device_id}/readings", self.body(n, seq, base), qos=1
                )
                self.sent[n].add(info.mid)
                self.published += 1
            time.sleep(max(0.0, start + seq / RATE_HZ - time.monotonic()))

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.thread.start()

    def progress(self) -> float:
        return self.published / (self.count * len(self.devices))

    def finish(self, timeout: float = 60) -> int:
        """Wait until every reading is sent and acknowledged by the broker; returns how many."""
        assert self.thread is not None
        self.thread.join(self.count / RATE_HZ + timeout)
        wait_for(
            lambda: all(sent <= acked for sent, acked in zip(self.sent, self.acked, strict=True)),
            timeout=timeout,
            what="the broker to acknowledge every reading",
        )
        for client in self.clients:
            client.loop_stop()
            client.disconnect()
        return self.published


def process(pipeline: Pipeline, name: str) -> ManagedProcess:
    (found,) = [p for p in pipeline.stack.processes if p.name == name]
    return found


def warnings(pipeline: Pipeline, name: str, most: int = 30) -> str:
    """The last warnings and errors in a process's log, for a failure message."""
    lines = process(pipeline, name).log_tail(5_000).splitlines()
    found = [line for line in lines if " WARNING " in line or " ERROR " in line]
    return "\n".join(found[-most:]) or "(none)"


def wait_ready(pipeline: Pipeline, service: str) -> None:
    wait_for(
        lambda: reports_ready(service, pipeline.stack.metrics.of(service)),
        timeout=90,
        what=f"{service} ready after its restart",
    )


def crash(service: str) -> Callable[[Pipeline], None]:
    """``kill -9`` the service, start it again at once."""

    def fault(pipeline: Pipeline) -> None:
        proc = process(pipeline, service)
        proc.kill()
        proc.start()
        wait_ready(pipeline, service)

    return fault


def restart_mosquitto(pipeline: Pipeline) -> None:
    """Stop the broker (it saves its sessions and queues) and start it again."""
    proc = process(pipeline, "mosquitto")
    proc.stop()
    proc.start()
    wait_for_port("127.0.0.1", pipeline.settings.mqtt_port, 30, proc)
    wait_ready(pipeline, "ingest")


DATABASE_DOWN_S = 60.0


def stop_database(pipeline: Pipeline) -> None:
    """Stop PostgreSQL (fast shutdown) for ``DATABASE_DOWN_S``, then start it again."""
    proc = process(pipeline, "postgres")
    assert proc.popen is not None
    proc.popen.send_signal(signal.SIGINT)  # SIGTERM would wait for every client to leave
    proc.popen.wait(30)
    time.sleep(DATABASE_DOWN_S)
    port = int(pipeline.settings.database_url.get_secret_value().rsplit(":", 1)[1].split("/")[0])
    proc.start()
    wait_for_port("127.0.0.1", port, 30, proc)


def no_fault(_pipeline: Pipeline) -> None:
    """The control case: the same load and checks with nothing going wrong."""


def audit(pipeline: Pipeline) -> str:
    """What ``cityvitals audit`` says of every hop (a lost reading's hop shows as a gap)."""
    try:
        done = pipeline.cli("audit")
    except subprocess.SubprocessError as exc:
        return f"(the audit failed: {exc})"
    return done.stdout + done.stderr


def reconciled(pipeline: Pipeline) -> dict[str, Any]:
    """``cityvitals audit --json`` once everything in flight has landed: it must exit 0."""
    done = pipeline.cli("audit", "--json", "--wait", "30")
    report: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == 0, [line for line in report["lines"] if line["ok"] is False]
    return report


def on_raw(pipeline: Pipeline, lost: dict[str, list[int]]) -> dict[int, dict[str, Any]] | str:
    """Where ``readings.raw`` stands, per partition: its high watermark as the broker reports
    it (tansu's on S3 can be far off), the offset after the last message read back, the stream
    group's committed offset, and the offsets holding each lost reading (none: the reading is
    not on the topic). A diagnosis for a failure message: an error reading the topic is
    returned."""
    try:
        return _on_raw(pipeline, lost)
    except Exception as exc:
        return f"(reading readings.raw failed: {exc!r})"


def _on_raw(pipeline: Pipeline, lost: dict[str, list[int]]) -> dict[int, dict[str, Any]]:
    with closing(RawProgress(pipeline.settings, **{"enable.partition.eof": True})) as raw:
        view: dict[int, dict[str, Any]] = {
            p: {"high": high, "read_to": 0, "committed": committed, "lost_at": {}}
            for p, (high, committed) in enumerate(zip(raw.ends(), raw.committed(), strict=True))
        }
        consumer = raw.consumer
        consumer.assign([TopicPartition(raw.topic, p, OFFSET_BEGINNING) for p in view])
        ended: set[int] = set()
        deadline = time.monotonic() + 30
        while len(ended) < len(view) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error, partition = msg.error(), msg.partition() or 0
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ended.add(partition)
                continue
            view[partition]["read_to"] = (msg.offset() or 0) + 1
            for r in json.loads(msg.value() or b"{}").get("readings", ()):
                if r.get("seq") in lost.get(r.get("device_id"), ()):
                    at = view[partition]["lost_at"]
                    at.setdefault(f"{r['device_id']}#{r['seq']}", []).append(msg.offset())
        return view


def wait_until_stored(
    pipeline: Pipeline,
    count_sql: str,
    ids: list[str],
    published: int,
    quiet_s: float = 15,
    limit_s: float = 90,
) -> None:
    """Until ``published`` rows are stored, or nothing more will come (then the checks that
    follow say what is missing): no row came for ``quiet_s``, then the stream group read past
    where ``readings.raw`` ended at that point, and no row came for ``quiet_s / 3`` more (the
    sinks write what the stream sent last). A stream still catching up after a fault (slow on a
    loaded machine: on the S3-backed broker each fetch lists the partition's objects) is waited
    for, up to ``limit_s`` in all, and longer (three times at most) while the group's offsets
    still move on a partition it has not read past: slow is not lost. One that stopped
    reading is waited for ``limit_s``, and then fails the checks.

    Past the end, not at it: tansu may report an end one short, and the stream's own clock
    ticks reach every partition each second, so a stream that reads comes past it."""
    with closing(RawProgress(pipeline.settings)) as raw:
        last, changed = -1, time.monotonic()
        deadline, latest = changed + limit_s, changed + 3 * limit_s
        ends: list[int] | None = None  # where readings.raw ended once rows had stopped
        passed: float | None = None  # when the stream group had read past them
        seen: list[int] | None = None  # the group's offsets when last asked
        asked = 0.0
        while (stored := pipeline.query(count_sql, ids)[0][0]) < published:
            now = time.monotonic()
            if stored != last:
                last, changed, ends, passed = stored, now, None, None
            elif now > deadline or (passed is not None and now - passed > quiet_s / 3):
                return
            elif now - changed > quiet_s and passed is None and now - asked >= 1:
                asked = now
                try:
                    if ends is None:
                        ends = raw.ends()
                        continue
                    committed = raw.committed()
                    behind = [
                        p for p, (c, e) in enumerate(zip(committed, ends, strict=True)) if c <= e
                    ]
                    if not behind:
                        passed = now
                    elif seen is not None and any(committed[p] > seen[p] for p in behind):
                        deadline = min(max(deadline, now + quiet_s), latest)  # still reading
                    seen = committed
                except KafkaException:
                    pass  # the broker does not answer yet (just restarted): asked again
            time.sleep(0.2)


class RawProgress:
    """``readings.raw`` as the stream group reads it: where each partition ends, and the
    offsets the group committed (read by a consumer of the group's id that never joins it)."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self.topic = settings.topic(Topic.READINGS_RAW)
        self.parts = [TopicPartition(self.topic, p) for p in range(settings.kafka_partitions)]
        group = settings.topic(settings.streams_app_id)
        self.consumer = kafka.consumer(settings, group, **overrides)

    def ends(self) -> list[int]:
        return [self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.parts]

    def committed(self) -> list[int]:
        """The group's committed offsets (the next to read; negative: none yet)."""
        return [tp.offset for tp in self.consumer.committed(self.parts, timeout=10)]

    def close(self) -> None:
        self.consumer.close()


MOSQUITTO_DROPS_SHARED = pytest.mark.xfail(
    strict=True,
    reason="Mosquitto 2.0.11 (Debian 12; 2.0.21 from bookworm-backports too) does not restore a "
    "persistent session's shared subscription ($share/...) after a restart: what devices "
    "publish before the gateway has reconnected and subscribed again has no subscriber and is "
    "dropped (a plain subscription of the same session is restored and gets it)",
)

FAULTS: dict[str, tuple[Callable[[Pipeline], None], int]] = {
    # name: (fault, readings per device); a stream long enough to outlast the fault.
    "none": (no_fault, 60),
    "kill -9 gateway": (crash("ingest"), 100),
    "kill -9 streams worker": (crash("streams"), 150),
    "kill -9 sinks": (crash("sinks"), 100),
    "kill -9 liveness": (crash("liveness"), 100),
    "restart mosquitto": (restart_mosquitto, 100),
    "stop postgresql 60 s": (stop_database, 900),
}


def start_load(pipeline: Pipeline, per_device: int) -> tuple[Load, str]:
    """New devices in a district of their own, publishing; returns the load and the district."""
    district = f"d{uuid.uuid4().hex[:6]}"
    devices = dict(
        pipeline.register("air_quality", f"faults/{district}/{district}s/{district}g")
        for _ in range(DEVICES)
    )
    hot = range(per_device // 5, per_device // 5 + 10)  # straddles a fault at a quarter
    load = Load(pipeline, devices, per_device, hot)
    load.connect()
    load.start()
    return load, district


def assert_stored_exactly_once(pipeline: Pipeline, load: Load, district: str) -> None:
    """Every reading stored once; the hot stretch is one alert, one incident, one order."""
    published = load.finish()
    assert published == DEVICES * load.count
    assert pipeline.stack.dead() == [], [p.log_tail() for p in pipeline.stack.dead()]
    ids = list(load.devices)
    count_sql = (
        "SELECT count(*), count(DISTINCT (device_id, metric, ts)) FROM readings "
        "WHERE device_id = ANY(%s)"
    )
    wait_until_stored(pipeline, count_sql, ids, published)
    first = ids[0]
    wait_for(
        lambda: pipeline.query(
            "SELECT 1 FROM alerts WHERE device_id = %s AND status = 'resolved'", first
        ),
        timeout=30,
        what="the hot stretch's alert resolved",
    )
    wait_for(
        lambda: pipeline.query(
            "SELECT 1 FROM dispatches d JOIN incidents i USING (incident_id) "
            "WHERE %s = ANY(i.devices) AND d.kind = 'order'",
            first,
        ),
        timeout=30,
        what="the incident's dispatch order",
    )
    time.sleep(2)  # anything doubled would arrive by now: the sinks write every 0.1 s

    stored_seqs = dict(
        pipeline.query(
            "SELECT device_id, array_agg(seq ORDER BY seq) FROM readings "
            "WHERE device_id = ANY(%s) GROUP BY device_id",
            ids,
        )
    )
    every = set(range(1, load.count + 1))
    missing = {d: sorted(every - set(stored_seqs.get(d, []))) for d in ids}
    letters = pipeline.query(
        "SELECT stage, reason, count(*) FROM deadletters WHERE device_id = ANY(%s) "
        "GROUP BY stage, reason",
        ids,
    )
    lost = {d: m for d, m in missing.items() if m}
    assert lost == {}, (
        f"readings lost; dead letters: {letters}; the audit: {audit(pipeline)}; "
        f"readings.raw: {on_raw(pipeline, lost)}; the stream's warnings and errors:\n"
        f"{warnings(pipeline, 'streams')}"
    )
    stored, distinct = pipeline.query(count_sql, ids)[0]
    assert (stored, distinct) == (published, published)
    alerts = pipeline.query(
        "SELECT device_id, rule_id, status FROM alerts WHERE device_id = ANY(%s)", ids
    )
    assert alerts == [(first, "pm25-pollution", "resolved")]
    incidents = pipeline.query(
        "SELECT incident_id FROM incidents WHERE devices && %s::text[] OR place_path[2] = %s",
        ids,
        district,
    )
    assert len(incidents) == 1
    orders = pipeline.query(
        "SELECT dispatch_id FROM dispatches WHERE incident_id = %s AND kind = 'order'",
        incidents[0][0],
    )
    assert len(orders) == 1


@pytest.mark.parametrize("name", FAULTS)
def test_under_load_a_fault_loses_and_doubles_nothing(stack: Pipeline, name: str) -> None:
    """On the default stack: one gateway, on a plain subscription. Afterwards the audit
    reconciles every check it can compare, the stream → database check whatever restarted."""
    under_fault(stack, name)
    report = reconciled(stack)
    (line,) = [line for line in report["lines"] if line["check"].startswith("stream → database")]
    assert line["ok"] is True, line
    print(
        f"{name}: the audit: " + "; ".join(f"{x['check']} {x['detail']}" for x in report["lines"])
    )


def test_an_input_left_to_the_incident_desk_across_a_restart_balances(stack: Pipeline) -> None:
    """An alert put on ``incidents.inputs`` while the stream worker is down (as the process
    before left an input its forward had counted and its desk had not taken) opens its
    incident after the restart, and the audit balances: the desk counts what it takes, the
    forward what it receives, each in its own process."""
    from cityvitals.contracts import Alert, AlertStatus, IncidentInput, WarningLevel

    district = f"d{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    alert = Alert(
        alert_id=uuid.uuid4().hex,
        revision=0,
        rule_id="pm25-pollution",
        status=AlertStatus.FIRING,
        level=WarningLevel.BLUE,
        device_id=f"carried-{district}",
        metric="pm25",
        value=HOT,
        threshold=75.0,
        place_path=("faults", district, f"{district}s", f"{district}g"),
        device_type="air_quality",
        started_at=now,
        ts=now,
        summary="pm25 100 over 75",
    )
    worker = process(stack, "streams")
    worker.stop()
    producer = kafka.producer(stack.settings)
    value = IncidentInput(alert=alert).model_dump_json().encode()
    producer.produce(stack.settings.topic(Topic.INCIDENT_INPUTS), value, partition=0)
    assert producer.flush(30) == 0
    worker.start()
    wait_ready(stack, "streams")
    wait_for(
        lambda: stack.query("SELECT 1 FROM incidents WHERE %s = ANY(devices)", alert.device_id),
        timeout=60,
        what="the alert's incident",
    )
    report = reconciled(stack)
    desk = report["hops"]["incidents_desk"]
    assert desk["received"] >= 1, desk  # more if it had not taken all it was given
    (line,) = [line for line in report["lines"] if line["check"].startswith("incidents_desk:")]
    assert line["ok"] is True, line
    print(f"the audit after the restart: {line['check']}")


def test_a_stalled_stream_is_no_outage_of_the_devices_it_leaves_unheard(stack: Pipeline) -> None:
    """The stream worker stopped (SIGSTOP, alive but reading nothing) while three devices of a
    street go on publishing: nothing reaches ``readings``, and liveness judged them all
    offline, one outage of the place (of the city, were the whole fleet there). It holds its
    judgement of the devices of each partition whose offsets on ``readings.raw`` stand still
    while messages wait, says so in ``cityvitals_liveness_upstream_stalled`` and
    ``cityvitals_liveness_devices_held``, and judges them again once the stream moves."""
    from tests.integration.test_liveness import liveness_rows, reporting, statuses

    district = f"d{uuid.uuid4().hex[:6]}"
    place = f"faults/{district}/{district}s/{district}g"
    devices = [stack.register("water_level", place) for _ in range(3)]
    ids = [d for d, _ in devices]
    port = stack.stack.metrics.of("liveness")

    def stalled() -> float:
        return sample_sum(scrape(port), "cityvitals_liveness_upstream_stalled")

    worker = process(stack, "streams")
    assert worker.popen is not None
    with reporting(stack, devices):
        wait_for(  # each judged by its cadence, a second: offline after 10 s of silence
            lambda: (
                (rows := liveness_rows(stack, ids)).keys() == set(ids)
                and all(r[1] == "online" and r[3] <= 2 for r in rows.values())
            ),
            timeout=60,
            what="the devices' cadence learned",
        )
        worker.popen.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: stalled() == 1, timeout=30, what="the stall seen by liveness")
            time.sleep(12)  # past the 10 s after which the devices would be offline
            assert statuses(stack, ids) == {"online"}
            held = sample_sum(scrape(port), "cityvitals_liveness_devices_held")
            assert held >= len(ids), held  # theirs, and those sharing their partitions
            assert not stack.query(
                "SELECT outage_id FROM place_outages WHERE %s = ANY(place_path)", district
            )
        finally:
            worker.popen.send_signal(signal.SIGCONT)
        wait_for(lambda: stalled() == 0, timeout=60, what="the stream seen moving again")
        time.sleep(3)  # judged again, on readings caught up
        assert statuses(stack, ids) == {"online"}
        assert not stack.query(
            "SELECT outage_id FROM place_outages WHERE %s = ANY(place_path)", district
        )


def test_a_hung_gateway_is_no_outage_of_the_devices_it_leaves_unheard(stack: Pipeline) -> None:
    """The gateway stopped (SIGSTOP, connected but reading nothing) while three devices of a
    street go on publishing: their messages wait in the broker, and a gateway paused 75 s had
    opened an outage of the city and dispatched it. Without its heartbeats for 4 s (this
    stack's ``liveness_stall_s``) on a partition of ``readings``, liveness holds its judgement
    of that partition's devices (``cityvitals_liveness_intake_stalled``), and for 4 s more
    once they come back, while what the broker kept arrives: no device offline, no outage. A city of their own: under
    an outage open above them (earlier tests' devices, silent since), theirs would not open."""
    from tests.integration.test_liveness import liveness_rows, reporting, statuses

    district = f"d{uuid.uuid4().hex[:6]}"
    place = f"{district}c/{district}/{district}s/{district}g"
    devices = [stack.register("water_level", place) for _ in range(3)]
    ids = [d for d, _ in devices]
    port = stack.stack.metrics.of("liveness")

    def stalled() -> float:
        return sample_sum(scrape(port), "cityvitals_liveness_intake_stalled")

    def outages() -> list[tuple[Any, ...]]:
        return stack.query(  # of the street or any place above it, the city included
            "SELECT outage_id FROM place_outages WHERE place_path[1] = %s", f"{district}c"
        )

    gateway = process(stack, "ingest")
    assert gateway.popen is not None
    # every second: late after 8 s of silence, offline after 10 s (this stack's factors),
    # past the 4 s (and up to 2 s between heartbeats) after which the intake is held
    with reporting(stack, devices):
        wait_for(
            lambda: (
                (rows := liveness_rows(stack, ids)).keys() == set(ids)
                and all(r[1] == "online" and r[3] <= 2 for r in rows.values())
            ),
            timeout=90,
            what="the devices' cadence learned",
        )
        assert stalled() == 0
        gateway.popen.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: stalled() == 1, timeout=30, what="the hung intake seen by liveness")
            time.sleep(12)  # past the 10 s after which the devices would be offline
            assert not outages()  # judged, the three would be one outage of the street
            assert statuses(stack, ids) == {"online"}
            held = sample_sum(scrape(port), "cityvitals_liveness_devices_held")
            assert held >= len(ids), held
        finally:
            gateway.popen.send_signal(signal.SIGCONT)
        wait_for(lambda: stalled() == 0, timeout=60, what="the heartbeats back and held out")
        time.sleep(3)  # judged again, on readings the broker kept
        assert statuses(stack, ids) == {"online"}
        assert not outages()


def under_fault(stack: Pipeline, name: str) -> None:
    fault, per_device = FAULTS[name]
    started = time.monotonic()
    load, district = start_load(stack, per_device)
    wait_for(lambda: load.progress() >= 0.25, timeout=60, what="a quarter of the load sent")
    fault(stack)
    over = time.monotonic() - started
    assert_stored_exactly_once(stack, load, district)
    print(
        f"{name}: {load.published} readings, fault over at {over:.1f} s, case {time.monotonic() - started:.1f} s"
    )


def ingest_total(port: int, what: str) -> float:
    return sample_sum(scrape(port), f"cityvitals_ingest_{what}_total")


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A stack whose gateway subscribes in a share group, as gateways that split the load do."""
    with private_stack(tmp_path_factory, "shared", mqtt_share_group="ingest") as pipeline:
        yield pipeline


@MOSQUITTO_DROPS_SHARED
def test_a_mosquitto_restart_loses_nothing_on_a_shared_subscription(
    shared_stack: Pipeline,
) -> None:
    under_fault(shared_stack, "restart mosquitto")


def test_two_gateways_on_one_shared_subscription_split_the_load(shared_stack: Pipeline) -> None:
    """A second gateway (its own MQTT client id, the same share group) takes part of the load;
    together they forward every reading once."""
    stack = shared_stack
    settings = stack.settings.model_copy(
        update={"metrics_port": free_port(), "mqtt_client_id": f"{stack.settings.mqtt_client_id}-2"}
    )
    second = ManagedProcess(
        "ingest-2",
        [sys.executable, "-m", "wiring.cli", "run", "ingest"],
        stack.stack.paths,
        env=settings.to_env(),
    )
    second.start()
    try:
        wait_for(
            lambda: reports_ready("ingest", settings.metrics_port),
            timeout=60,
            what="the second gateway ready",
        )
        ports = (stack.stack.metrics.ingest, settings.metrics_port)
        before = [ingest_total(port, "forwarded") for port in ports]
        load, district = start_load(stack, 100)
        assert_stored_exactly_once(stack, load, district)
        shares = [
            ingest_total(port, "forwarded") - b for port, b in zip(ports, before, strict=True)
        ]
        assert sum(shares) == load.published
        assert min(shares) > 0, shares
        print(f"two gateways forwarded {shares[0]:.0f} + {shares[1]:.0f} readings")
    finally:
        second.stop()
