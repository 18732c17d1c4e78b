"""Incidents through the running pipeline: devices publish over MQTT, the stream raises alerts,
the incident stage correlates, dispatches, follows feedback and escalates; a consumer with
another Kafka client (kcat) reads ``dispatch``, and every message fits its published schema."""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
import typer
import yaml
from confluent_kafka import Consumer
from pydantic import SecretStr
from typer.testing import CliRunner

from cityvitals import db, kafka
from cityvitals.contracts import (
    Action,
    DispatchKind,
    DispatchOrder,
    Escalation,
    Feedback,
    IncidentState,
    IncidentUpdate,
    Place,
    PlaceLevel,
    Tier,
)
from cityvitals.topics import Topic
from sinks.incidents import IncidentDetail, UnknownIncident, incident_detail
from sinks.readings import refusals
from streams.incidents import PlaceNames
from streams.resume import changed_places, open_incidents
from tests.integration.conftest import Pipeline, reading, wait_for
from wiring.cli import app
from wiring.services import open_registry

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


class TopicLog:
    """Every message of a topic from its beginning, read in the background of each call."""

    def __init__(self, pipeline: Pipeline, topic: Topic) -> None:
        self.consumer: Consumer = kafka.consumer(pipeline.settings, f"itest-{uuid.uuid4().hex}")
        self.consumer.subscribe([pipeline.settings.topic(topic)])
        self.values: list[bytes] = []
        deadline = time.monotonic() + 60
        while not self.consumer.assignment() and time.monotonic() < deadline:
            self._take(self.consumer.poll(0.5))

    def _take(self, msg: Any) -> None:
        if msg is not None and msg.error() is None:
            self.values.append(msg.value())

    def read(self) -> list[bytes]:
        """Every message so far: reads until the topic has been quiet for a second."""
        while True:
            msg = self.consumer.poll(1.0)
            if msg is None:
                return self.values
            self._take(msg)

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture()
def logs(pipeline: Pipeline) -> Iterator[Callable[[Topic], TopicLog]]:
    opened: list[TopicLog] = []

    def open_log(topic: Topic) -> TopicLog:
        opened.append(TopicLog(pipeline, topic))
        return opened[-1]

    yield open_log
    for log in opened:
        log.close()


def updates(log: TopicLog, street: str) -> list[IncidentUpdate]:
    found = [IncidentUpdate.model_validate_json(v) for v in log.read()]
    return [u for u in found if street in u.incident.place_path]


def orders(log: TopicLog, street: str) -> list[DispatchOrder]:
    found = [DispatchOrder.model_validate_json(v) for v in log.read()]
    return [o for o in found if street in o.place_path]


def latest(found: list[IncidentUpdate]) -> dict[str, IncidentUpdate]:
    out: dict[str, IncidentUpdate] = {}
    for u in found:
        if (
            u.incident.incident_id not in out
            or u.incident.revision > out[u.incident.incident_id].incident.revision
        ):
            out[u.incident.incident_id] = u
    return out


def send_feedback(pipeline: Pipeline, incident_id: str, action: str, **extra: Any) -> Feedback:
    fb = Feedback(
        feedback_id=uuid.uuid4().hex,
        incident_id=incident_id,
        action=Action(action),
        actor=extra.pop("actor", "street-ops/crew-7"),
        ts=extra.pop("ts", datetime.now(UTC)),
        **extra,
    )
    producer = kafka.producer(pipeline.settings)
    producer.produce(
        pipeline.settings.topic(Topic.DISPATCH_FEEDBACK),
        key=incident_id.encode(),
        value=fb.model_dump_json().encode(),
    )
    assert producer.flush(30) == 0
    return fb


class Street:
    """Devices on one new street of its own district: sensors in its grids and a camera."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        n = uuid.uuid4().hex[:6]
        self.street = f"st{n}"
        self.base = f"itest/dist{n}/{self.street}"
        self.seq = 0

    def sensor(self, grid: int) -> tuple[str, str]:
        return self.pipeline.register("water_level", f"{self.base}/{self.street}g{grid}")

    def camera(self, grid: int) -> tuple[str, str]:
        return self.pipeline.register("camera", f"{self.base}/{self.street}g{grid}")

    def water(self, device: tuple[str, str], cm: float) -> None:
        self.seq += 1
        ts = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
        payload = reading(ts, self.seq, water_level_cm=cm)
        done = self.pipeline.mosquitto_pub(*device, self.pipeline.topic(device[0]), payload)
        assert done.returncode == 0, done.stderr

    def seen_by_camera(self, camera: tuple[str, str], score: float) -> None:
        self.seq += 1
        event = {
            "ts": (datetime.now(UTC) - timedelta(seconds=30)).isoformat(),
            "seq": self.seq,
            "event_type": "waterlogging",
            "value": score,
            "confidence": 0.9,
            "snapshot_ref": f"snapshots/{camera[0]}/{self.seq}.jpg",
        }
        topic = self.pipeline.topic(camera[0], "events")
        done = self.pipeline.mosquitto_pub(*camera, topic, json.dumps(event))
        assert done.returncode == 0, done.stderr


def flood(street: Street, sensors: int = 5) -> list[tuple[str, str]]:
    devices = [street.sensor(i % 3) for i in range(sensors)]
    for device in devices:
        street.water(device, 8.0)  # past the 5 cm auto-alarm depth: blue
    camera = street.camera(1)
    street.seen_by_camera(camera, 0.9)
    return [*devices, camera]


def one_incident(log: TopicLog, street: str, alerts: int) -> IncidentUpdate:
    def settled() -> IncidentUpdate | None:
        now = latest(updates(log, street))
        if len(now) == 1:
            (update,) = now.values()
            if len(update.incident.alerts) >= alerts:
                return update
        assert len(now) <= 1, f"more than one incident for {street}: {list(now)}"
        return None

    return wait_for(settled, timeout=90, what=f"one incident of {alerts} alerts on {street}")


def test_a_flooded_street_is_one_incident_dispatched_once_at_street_tier(
    pipeline: Pipeline, logs: Callable[[Topic], TopicLog]
) -> None:
    incidents, dispatch = logs(Topic.INCIDENTS), logs(Topic.DISPATCH)
    street = Street(pipeline)
    # A street named in the registry after the stream started: the department reads its name.
    name = f"Canal Street {street.street[2:]}"
    path = tuple(street.base.split("/"))
    with open_registry(pipeline.settings) as registry:
        named = Place(place_id=street.street, level=PlaceLevel.STREET, name=name, path=path)
        registry.put_places([named], "itest")
    flood(street)
    update = one_incident(incidents, street.street, alerts=6)
    inc = update.incident
    assert inc.category == "flooding" and inc.place_id == street.street
    assert inc.title == f"Flooding at {name}"
    assert inc.state is IncidentState.DISPATCHED and len(inc.devices) == 6
    time.sleep(3)  # a few clock ticks: nothing more goes out
    # one order; a level that rose after it (the camera's) is a revision of its limits
    order, *revised = sent = orders(dispatch, street.street)
    assert [(r.kind, r.revises) for r in revised] == [
        (DispatchKind.REVISION, order.dispatch_id) for _ in revised
    ]
    assert (order.department, order.tier, order.tier_place_id) == (
        "street-ops",
        Tier.STREET,
        street.street,
    )
    assert order.incident_id == inc.incident_id and order.kind is DispatchKind.ORDER
    assert order.title == f"Flooding at {name}"
    # The order says what its alert said, depth and limit, so a crew needs no call back.
    assert order.summary.startswith("water 8 cm at ") and "reached 5 cm (blue)" in order.summary
    assert order.summary in order.signals and order.devices  # every alert firing, its devices
    assert len(order.alerts) == len(order.signals) and set(order.alerts) <= set(inc.alerts)
    assert len(latest(updates(incidents, street.street))) == 1

    def detail() -> IncidentDetail | None:  # once the sinks stored the incident and its alerts
        with db.connect(pipeline.settings) as conn:
            try:
                found = incident_detail(conn, inc.incident_id)
            except UnknownIncident:
                return None
        return found if len(found.alerts) == 6 else None

    # The duty officer sees what the camera saw: its event's snapshot, not only report photos.
    stored = wait_for(detail, what="the incident and its alerts stored")
    kept = stored.dispatches[0]  # as the table keeps it
    assert (kept.summary, kept.signals, kept.devices, kept.alerts, kept.opened_at) == (
        order.summary,
        order.signals,
        order.devices,
        order.alerts,
        inc.opened_at,
    )
    camera = next(d for d in inc.devices if "camera" in d)
    assert [(c.camera_id, c.event_type) for c in stored.camera_snapshots] == [
        (camera, "waterlogging")
    ]
    assert stored.camera_snapshots[0].snapshot_ref.startswith(f"snapshots/{camera}/")

    # A desk whose book is empty (a broker that kept nothing) continues it from the database:
    # its revision, its alerts and its dispatches, so the next order gets a new id.
    (back,) = [
        t for t in open_incidents(pipeline.settings) if t.incident.incident_id == inc.incident_id
    ]
    assert back.incident.revision == stored.incident.revision and back.orders == len(sent)
    assert len(back.alerts) == 6 and all(firing for _, firing in back.alerts.values())
    # what its latest alert said, which the next order carries
    assert back.said in {a.summary for a in stored.alerts}, back.said
    assert sorted(back.firing_said.values()) == sorted(a.summary for a in stored.alerts)
    # and at which level each fires, so the next order says the worst
    assert {a: level.value for a, level in back.firing_level.items()} == {
        a.alert_id: a.level for a in stored.alerts
    }
    top = max(back.firing_level.values(), key=lambda level: level.rank)
    assert back.worst_said in {a.summary for a in stored.alerts if a.level == top.value}


def test_a_fire_confirmed_after_a_gas_leak_goes_to_the_fire_service(
    pipeline: Pipeline, logs: Callable[[Topic], TopicLog]
) -> None:
    """A gas sensor's alert opens a gas leak for the gas utility; the camera's smoke, confirmed
    by both (red), makes it a fire: the fire service takes it over, the gas utility is told to
    stop, whichever sensor spoke first."""
    dispatch = logs(Topic.DISPATCH)
    street = Street(pipeline)
    grid = f"{street.base}/{street.street}g1"
    gas, camera = pipeline.register("gas", grid), street.camera(1)
    street.seq += 1
    ts = (datetime.now(UTC) - timedelta(seconds=20)).isoformat()
    done = pipeline.mosquitto_pub(*gas, pipeline.topic(gas[0]), reading(ts, 1, gas_lel_pct=15))
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: [o.department for o in orders(dispatch, street.street)] == ["gas-utility"],
        what="the gas leak's order to the gas utility",
    )
    event = {
        "ts": (datetime.now(UTC) - timedelta(seconds=10)).isoformat(),
        "seq": 1,
        "event_type": "smoke_fire",
        "value": 0.95,
        "confidence": 0.97,
        "snapshot_ref": f"snapshots/{camera[0]}/1.jpg",
    }
    done = pipeline.mosquitto_pub(*camera, pipeline.topic(camera[0], "events"), json.dumps(event))
    assert done.returncode == 0, done.stderr
    sent = wait_for(
        lambda: (
            (found := orders(dispatch, street.street))
            and any(o.department == "fire-rescue" for o in found)
            and found
        ),
        what="the fire service's order",
    )
    # (a department's orders share a partition; across departments the log's order is not
    # theirs: found by kind)
    (order,) = [o for o in sent if o.kind is DispatchKind.ORDER]
    (withdrawal,) = [o for o in sent if o.kind is DispatchKind.WITHDRAWAL]
    (fire,) = [o for o in sent if o.kind is DispatchKind.REASSIGNMENT]
    assert order.department == "gas-utility"
    assert (withdrawal.department, withdrawal.withdraws) == ("gas-utility", order.dispatch_id)
    assert (fire.department, fire.tier) == ("fire-rescue", Tier.DISTRICT)
    # the camera's own alert (orange) or the confirmation (red), whichever the desk heard first
    assert fire.title.startswith("Smoke or fire at ") and fire.summary.startswith("smoke/fire")


def test_feedback_closes_the_loop_and_a_feedback_out_of_turn_is_refused(
    pipeline: Pipeline, logs: Callable[[Topic], TopicLog]
) -> None:
    incidents = logs(Topic.INCIDENTS)
    street = Street(pipeline)
    sensor = street.sensor(0)
    street.water(sensor, 8.0)
    incident_id = one_incident(incidents, street.street, alerts=1).incident.incident_id

    early = send_feedback(pipeline, incident_id, "handled")
    refused = wait_for(
        lambda: pipeline.query(
            "SELECT reason, source, payload_b64 FROM deadletters WHERE stage = 'incidents' "
            "AND reason LIKE %s",
            "handled is not allowed while the incident is dispatched%",
        ),
        what=f"the refusal of feedback {early.feedback_id}",
    )
    assert "people may send: accept" in refused[0][0]
    # what the sender sent, as its topic has it, not the stage's envelope
    assert refused[0][1].startswith(
        pipeline.settings.topic(Topic.DISPATCH_FEEDBACK) + ", by way of "
    )
    assert Feedback.model_validate_json(base64.b64decode(refused[0][2])) == early
    with db.connect(pipeline.settings) as conn:  # as the console reads refusals
        shown = refusals(conn, datetime.now(UTC) - timedelta(hours=1))
    assert early.feedback_id in {r.feedback_id for r in shown}
    listed = CliRunner().invoke(
        app, ["deadletters", "--stage", "incidents"], env=pipeline.settings.to_env()
    )
    assert listed.exit_code == 0, listed.output
    assert (  # whose action, on which incident: the device column has none to say
        f"    handled by street-ops/crew-7 on incident {incident_id} (feedback {early.feedback_id})"
    ) in listed.output.splitlines()

    # A sender's clock in 2030 would be the desk's: every deadline run out at the next tick.
    sent_at = datetime.now(UTC)
    ahead = send_feedback(pipeline, incident_id, "note", ts=datetime(2030, 1, 1, tzinfo=UTC))
    producer = kafka.producer(pipeline.settings)  # a record with a key and no value
    producer.produce(pipeline.settings.topic(Topic.DISPATCH_FEEDBACK), key=b"k", value=None)
    assert producer.flush(30) == 0
    kept = wait_for(
        lambda: (
            (
                found := pipeline.query(
                    "SELECT cause, reason, payload_b64 FROM deadletters WHERE stage = 'incidents'"
                    " AND cause IN ('future', 'bad_dispatch.feedback') AND received_at >= %s"
                    " ORDER BY cause",
                    sent_at,
                )
            )
            and len(found) >= 2
            and found
        ),
        what="the feedback from the future and the record without a value dead-lettered",
    )
    (empty,) = [row for row in kept if row[0] == "bad_dispatch.feedback" and row[2] == ""]
    assert empty[1] == "the message has no value (a tombstone: a key and no value)"
    (future,) = [row for row in kept if row[0] == "future"]
    assert future[1].startswith("ts 2030-01-01T00:00:00+00:00 is ")
    assert Feedback.model_validate_json(base64.b64decode(future[2])) == ahead

    for action in ("accept", "on_site", "handled"):
        send_feedback(pipeline, incident_id, action)
    street.water(sensor, 0.0)  # the water is gone: the alert resolves, sensors verify
    closed = wait_for(
        lambda: [
            u for u in updates(incidents, street.street) if u.incident.state is IncidentState.CLOSED
        ],
        timeout=90,
        what="the incident verified by its sensors and closed",
    )
    steps = [
        (u.transition.action, u.transition.actor)
        for u in sorted(updates(incidents, street.street), key=lambda u: u.incident.revision)
    ]
    actions = [a for a, _ in steps]
    assert actions[:2] == [Action.OPEN, Action.DISPATCH]
    assert [a for a in actions if a in (Action.ACCEPT, Action.ON_SITE, Action.HANDLED)] == [
        Action.ACCEPT,
        Action.ON_SITE,
        Action.HANDLED,
    ]
    assert actions[-2:] == [Action.VERIFY, Action.CLOSE]
    assert ("street-ops/crew-7") in {actor for a, actor in steps if a is Action.ACCEPT}
    assert closed[0].incident.open_alerts == 0
    assert Action.ESCALATE not in actions  # the desk's clock stayed its own


def test_act_waits_for_what_the_incident_stage_did_with_it(
    pipeline: Pipeline, logs: Callable[[Topic], TopicLog]
) -> None:
    """'cityvitals incidents act --wait' tells a duty officer what the stage did: applied
    (and the state it left), or refused with the stage's reason (a second reopen sent at
    once), where without it the command said 'sent' and the refusal was in the dead letters
    alone. An accept of the handled incident's own order is refused before it is sent: with
    its order an incident only moves on."""
    incidents = logs(Topic.INCIDENTS)
    street = Street(pipeline)
    street.water(street.sensor(0), 8.0)
    incident_id = one_incident(incidents, street.street, alerts=1).incident.incident_id
    wait_for(
        lambda: pipeline.query("SELECT 1 FROM incidents WHERE incident_id = %s", incident_id),
        what="the incident stored",
    )

    def act(action: str) -> Any:
        argv = ["incidents", "act", incident_id[:8], action, "--wait", "60"]
        return CliRunner().invoke(app, argv, env=pipeline.settings.to_env())

    for action, state in (("accept", "accepted"), ("on_site", "on_site"), ("handled", "handled")):
        applied = act(action)
        assert applied.exit_code == 0, applied.output
        assert f"applied: {action} (revision" in applied.output
        assert f"the step left it {state}" in applied.output
    refused = act("accept")
    assert refused.exit_code == 1, refused.output
    assert "error: accept is not allowed while the incident is handled" in refused.output
    assert "nothing was sent" in refused.output

    # Two reopens, sent at once by one actor: the second is refused. Each step
    # names the feedback that made it, so the second's wait says refused, not the first's
    # step by the same actor ("applied", exit 0, it said when steps were matched by actor).
    import getpass

    from wiring.cli_incidents import _answer

    (revision,) = pipeline.query(
        "SELECT revision FROM incidents WHERE incident_id = %s", incident_id
    )[0]
    actor = f"cli:{getpass.getuser()}"
    first = send_feedback(pipeline, incident_id, "reopen", actor=actor, reason="not drained")
    again = send_feedback(pipeline, incident_id, "reopen", actor=actor, reason="not drained")
    _answer(pipeline.settings, first, revision, 60)  # applied: returns
    with pytest.raises(typer.Exit) as second:
        _answer(pipeline.settings, again, revision, 60)
    assert second.value.exit_code == 1
    steps = pipeline.query(
        "SELECT feedback_id FROM incident_transitions WHERE incident_id = %s AND revision > %s",
        incident_id,
        revision,
    )
    made = {f for (f,) in steps}
    assert first.feedback_id in made and again.feedback_id not in made


def test_a_department_s_answer_sent_twice_does_not_land_on_the_next_order(
    pipeline: Pipeline, logs: Callable[[Topic], TopicLog]
) -> None:
    """A street crew's reject, sent twice at once (a double click): the first sends the
    incident to the next route; the second answered the street's order, which is no longer
    the order, and is refused. Sent without naming it, it was taken as the district's reject
    and sent the incident to the city, the district never told."""
    from cityvitals.contracts import Department
    from device_registry.access import Role
    from tests.integration.conftest import add_user, bearer

    incidents = logs(Topic.INCIDENTS)
    street = Street(pipeline)
    street.water(street.sensor(0), 8.0)
    incident_id = one_incident(incidents, street.street, alerts=1).incident.incident_id
    wait_for(
        lambda: pipeline.query(
            "SELECT 1 FROM incidents WHERE incident_id = %s AND department = 'street-ops'",
            incident_id,
        ),
        what="the street's order stored",
    )
    with open_registry(pipeline.settings) as registry:  # the routing's, as a user's needs it
        registry.put_department(Department(department_id="street-ops", name="Street"), "itest")
    crew = f"crew-{uuid.uuid4().hex[:6]}"
    token = add_user(pipeline.settings, crew, Role.DEPARTMENT_OPERATOR, department="street-ops")
    path = f"/incidents/{incident_id}/actions"
    base = f"http://127.0.0.1:{pipeline.settings.api_port}"
    with httpx.Client(base_url=base, headers=bearer(token), timeout=60) as api:
        first = api.post(path, json={"action": "reject", "reason": "not ours"})
        second = api.post(path, json={"action": "reject", "reason": "not ours"})
    assert first.status_code == 202, first.text
    # The second is refused here (the order stored moved on) or by the stage (sent first).
    assert second.status_code in (202, 403), second.text
    if second.status_code == 202:
        refused = second.json()["feedback_id"]
        with db.connect(pipeline.settings) as conn:
            found = wait_for(
                lambda: [
                    r
                    for r in refusals(conn, datetime.now(UTC) - timedelta(minutes=5))
                    if r.feedback_id == refused
                ],
                what="the second reject refused",
            )
        assert "is not the incident's current" in found[0].reason, found[0].reason
    moved = wait_for(
        lambda: pipeline.query(
            "SELECT department, tier FROM incidents WHERE incident_id = %s AND department"
            " <> 'street-ops'",
            incident_id,
        ),
        what="the incident at the next route",
    )
    time.sleep(3)  # the stage has had time to take the second
    rejects = pipeline.query(
        "SELECT department FROM incident_transitions WHERE incident_id = %s AND action = 'reject'",
        incident_id,
    )
    assert rejects == [("street-ops",)]  # one reject, the street's
    now = pipeline.query(
        "SELECT department, tier FROM incidents WHERE incident_id = %s", incident_id
    )
    assert now == moved and now[0][1] == "district", now  # the next route, not the city


def test_an_unaccepted_dispatch_escalates_to_district_then_city(
    pipeline: Pipeline, logs: Callable[[Topic], TopicLog]
) -> None:
    dispatch, escalations = logs(Topic.DISPATCH), logs(Topic.ESCALATIONS)
    n = uuid.uuid4().hex[:6]
    pipeline.add_rules(f"  - {{id: esc-{n}, metric: esc_{n}, levels: {{yellow: 10}}}}\n")
    street = Street(pipeline)
    device = street.sensor(0)
    street.seq += 1
    ts = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    pipeline.mosquitto_pub(*device, pipeline.topic(device[0]), reading(ts, 1, **{f"esc_{n}": 20}))
    sent = wait_for(
        lambda: len(orders(dispatch, street.street)) >= 5 and orders(dispatch, street.street),
        timeout=90,
        what="the dispatch, then the district's and the city's, each tier told it is withdrawn",
    )
    # keyed by department, they come on partitions of their own: in time, withdrawal first
    sent.sort(key=lambda o: (o.ts, o.kind is not DispatchKind.WITHDRAWAL))
    assert [(o.kind, o.tier, o.department) for o in sent] == [
        (DispatchKind.ORDER, Tier.STREET, "street-ops"),
        (DispatchKind.WITHDRAWAL, Tier.STREET, "street-ops"),
        (DispatchKind.ESCALATION, Tier.DISTRICT, "water-affairs"),
        (DispatchKind.WITHDRAWAL, Tier.DISTRICT, "water-affairs"),
        (DispatchKind.ESCALATION, Tier.CITY, "city-ops"),
    ]
    found = [o for o in sent if o.kind is not DispatchKind.WITHDRAWAL]
    counted = [
        line
        for line in pipeline.metrics("streams").splitlines()
        if line.startswith("cityvitals_incidents_withdrawn_total{")
        and 'tier="district"' in line
        and 'department="water-affairs"' in line
    ]
    assert counted and float(counted[0].split()[-1]) >= 1, counted  # counted apart from orders
    assert [w.withdraws for w in sent if w.kind is DispatchKind.WITHDRAWAL] == [
        o.dispatch_id for o in found[:2]
    ]
    for earlier, later in itertools.pairwise(found):
        # each tier had 3 s: the escalation came after its limit, within a few clock ticks
        assert later.ts >= earlier.accept_by
        assert later.ts - earlier.accept_by < timedelta(seconds=15)
    ids = {o.incident_id for o in found}
    events = wait_for(
        lambda: [
            e
            for e in (Escalation.model_validate_json(v) for v in escalations.read())
            if e.incident_id in ids and e.to_tier is not None
        ],
        what="the escalation events",
    )
    assert [(e.from_tier, e.to_tier, e.breach) for e in events] == [
        (Tier.STREET, Tier.DISTRICT, "accept"),
        (Tier.DISTRICT, Tier.CITY, "accept"),
    ]
    metrics = pipeline.metrics("streams")
    assert 'cityvitals_incidents_escalations_total{breach="accept",tier="street"}' in metrics


def test_replaying_every_input_twice_makes_no_new_incident_or_dispatch(
    pipeline: Pipeline, logs: Callable[[Topic], TopicLog]
) -> None:
    incidents, dispatch, alerts = logs(Topic.INCIDENTS), logs(Topic.DISPATCH), logs(Topic.ALERTS)
    street = Street(pipeline)
    flood(street, sensors=3)
    first = one_incident(incidents, street.street, alerts=4)
    inputs = [v for v in alerts.read() if street.street.encode() in v]
    assert len(inputs) >= 4
    before = len(updates(incidents, street.street))
    producer = kafka.producer(pipeline.settings)
    for _ in range(2):
        for value in inputs:
            producer.produce(pipeline.settings.topic(Topic.ALERTS), value=value)
    assert producer.flush(30) == 0
    marker = Street(pipeline)  # a later input: once it is through, the replays are too
    marker.water(marker.sensor(0), 8.0)
    one_incident(incidents, marker.street, alerts=1)
    assert len(updates(incidents, street.street)) == before
    assert latest(updates(incidents, street.street))[first.incident.incident_id] is not None
    sent = orders(dispatch, street.street)  # one order, maybe a revision (the camera's level)
    assert [o.kind for o in sent].count(DispatchKind.ORDER) == 1
    assert len({o.dispatch_id for o in sent}) == len(sent)  # nothing sent again


def test_a_flapping_sensor_makes_one_incident(
    pipeline: Pipeline, logs: Callable[[Topic], TopicLog]
) -> None:
    incidents, dispatch = logs(Topic.INCIDENTS), logs(Topic.DISPATCH)
    street = Street(pipeline)
    sensor = street.sensor(0)
    for depth in (8.0, 0.0) * 4:
        street.water(sensor, depth)
    incident = one_incident(incidents, street.street, alerts=4)
    time.sleep(3)
    assert len(latest(updates(incidents, street.street))) == 1
    assert [o.incident_id for o in orders(dispatch, street.street)] == [
        incident.incident.incident_id
    ]


def newer_librdkafka(folder: Path) -> dict[str, str]:
    """An environment that runs kcat on the librdkafka of the confluent-kafka wheel.

    Debian's librdkafka (2.0.2) cannot parse the ApiVersions v3 answer of tansu, the local
    broker ("Protocol read buffer underflow for ApiVersion v3"); it talks to Apache Kafka. kcat
    itself is Debian's, and nothing of cityvitals is in the consumer.
    """
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    (library,) = libs.glob("librdkafka-*.so.1")
    (folder / "librdkafka.so.1").symlink_to(library)
    return {"PATH": os.environ.get("PATH", ""), "LD_LIBRARY_PATH": str(folder)}


def test_kcat_reads_dispatch_and_every_message_fits_its_schema(
    pipeline: Pipeline, logs: Callable[[Topic], TopicLog], tmp_path: Path
) -> None:
    incidents = logs(Topic.INCIDENTS)
    street = Street(pipeline)
    flood(street, sensors=2)
    one_incident(incidents, street.street, alerts=3)
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is installed by ./dev setup (Debian package kcat)"
    out = subprocess.run(
        [
            kcat,
            *("-b", pipeline.settings.kafka_bootstrap, "-C"),
            *("-t", pipeline.settings.topic(Topic.DISPATCH)),
            *("-o", "beginning", "-e", "-q", "-f", "%s\\n"),
        ],
        capture_output=True,
        timeout=60,
        check=False,
        env=newer_librdkafka(tmp_path),
    )
    assert out.returncode == 0, out.stderr.decode()
    lines = [line for line in out.stdout.decode().splitlines() if line.strip()]
    assert any(street.street in line for line in lines)
    schema = json.loads((SCHEMAS / "topic.dispatch.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for line in lines:
        validator.validate(json.loads(line))


def test_the_desks_place_names_follow_the_registry(pipeline: Pipeline) -> None:
    """Read once in full, then what was named or renamed since; a database that cannot be
    read leaves the names as they were."""
    settings = pipeline.settings
    unreadable = (db.DatabaseUnavailable, psycopg.Error)
    names = PlaceNames(functools.partial(changed_places, settings), unreadable)
    names.read()
    street = Street(pipeline)
    path = tuple(street.base.split("/"))
    assert street.street not in names.names
    for name in ("Canal Street", "Canal Road"):
        with open_registry(settings) as registry:
            place = Place(place_id=street.street, level=PlaceLevel.STREET, name=name, path=path)
            registry.put_places([place], "itest")
        names.read()
        assert names.names[street.street] == name
        assert names.names[path[1]] == path[1]  # created with it, named by its id
    unreachable = settings.model_copy(
        update={"database_url": SecretStr("postgresql://nobody@127.0.0.1:1/none")}
    )
    names.changed = functools.partial(changed_places, unreachable)
    names.read()
    assert names.names[street.street] == "Canal Road"
    # A place met first is asked for once, not at every input that names it.
    assert names.unknown(("nowhere",)) and not names.unknown(path)
    asyncio.run(names.refresh(5.0, ("nowhere",)))
    assert not names.unknown(("nowhere",)) and "nowhere" not in names.names


def test_a_changed_incident_file_is_taken_without_a_restart(pipeline: Pipeline) -> None:
    """A broken change is refused and counted, the configuration in force stays; a valid one
    is in force within a reload: a category added to it opens incidents under its title."""
    path = pipeline.settings.incidents_file
    assert path is not None
    good = path.read_text()

    def metric(name: str) -> list[str]:
        return [x for x in pipeline.metrics("streams").splitlines() if x.startswith(name)]

    def refused() -> float:
        found = metric("cityvitals_incidents_config_reload_errors_total")
        return float(found[0].split()[-1]) if found else -1.0

    before, (version,) = refused(), metric("cityvitals_incidents_config_info")
    try:
        path.write_text(good + "\nstorm: {per: soon}\n")
        wait_for(lambda: refused() > before, what="the broken incident file refused")
        assert metric("cityvitals_incidents_config_info") == [version]  # the one in force stays
        n = uuid.uuid4().hex[:6]
        config = yaml.safe_load(good)
        config["categories"][f"probe_{n}"] = {"rules": [f"probe-{n}"], "title": f"Probe {n}"}
        path.write_text(yaml.safe_dump(config))
        wait_for(
            lambda: metric("cityvitals_incidents_config_info") not in ([version], []),
            what="the changed incident file in force",
        )
        pipeline.add_rules(f"  - {{id: probe-{n}, metric: probe_{n}, levels: {{yellow: 10}}}}\n")
        street = Street(pipeline)
        device = street.sensor(0)
        ts = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
        payload = reading(ts, 1, **{f"probe_{n}": 20})
        pipeline.mosquitto_pub(*device, pipeline.topic(device[0]), payload)
        found = wait_for(
            lambda: pipeline.query(
                "SELECT category, title FROM incidents WHERE place_id = %s", street.street
            ),
            timeout=90,
            what="the incident of the added category",
        )
        assert found == [(f"probe_{n}", f"Probe {n} at {street.street}")]
    finally:
        path.write_text(good)
