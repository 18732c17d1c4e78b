"""The dead letter sink against the session's real PostgreSQL, in a schema of this module's
own: a refused input redelivered (after a crash upstream) and refused again comes back as a
second message on the deadletter topic, at a new Kafka position, and is stored once."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from cityvitals import db
from cityvitals.contracts import DeadLetter
from cityvitals.settings import Settings
from cityvitals.stage import dead_letter
from cityvitals.topics import Topic
from sinks.postgres import DeadLetterSink
from sinks.routes import decode_dead_letter
from tests.integration.conftest import Pipeline
from wiring.cli import app

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def schema(pipeline: Pipeline) -> Iterator[Settings]:
    settings = pipeline.settings.model_copy(
        update={"database_schema": f"dl{uuid.uuid4().hex[:12]}"}
    )
    db.migrate(settings)
    yield settings
    with db.connect(settings) as conn:
        conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def test_a_redelivered_refusal_is_stored_once(schema: Settings) -> None:
    def refusal(device_id: str, seq: int, received: datetime) -> DeadLetter:
        payload = f'{{"device_id": "{device_id}", "seq": {seq}}}'.encode()
        return dead_letter(
            "streams",
            f"unknown device {device_id}",
            payload,
            "readings.raw[2]",
            cause="unknown_device",
            device_id=device_id,
            received_at=received,
        )

    first = refusal("aq-1", 7, T0)
    again = refusal("aq-1", 7, T0 + timedelta(seconds=9))  # the same input, refused later
    other = refusal("aq-1", 8, T0)
    sink = DeadLetterSink(db.connect(schema))
    try:
        assert sink.write([("deadletter", 0, 40, first)]) == 1
        assert sink.write([("deadletter", 0, 41, again), ("deadletter", 1, 9, other)]) == 1
        assert sink.write([("deadletter", 0, 40, first)]) == 0  # a replay of the topic
    finally:
        sink.close()
    with db.connect(schema) as look:
        stored = look.execute(
            "SELECT kafka_offset, payload_b64, received_at FROM deadletters ORDER BY 1"
        ).fetchall()
    assert [(offset, received) for offset, _, received in stored] == [(9, T0), (40, T0)]


def test_a_new_refusal_at_a_used_position_is_kept(schema: Settings) -> None:
    """A broker that keeps nothing (tansu in memory) numbers the deadletter topic from 0 again
    after a restart: a new letter at an old position is not a replay of the old one."""
    before, after = T0 - timedelta(days=2), T0 - timedelta(days=1)  # before the CLI test's
    letters = [
        dead_letter("ingest", "payload: not valid JSON", b"{", "cityvitals/wl-9/readings",
                    cause="payload", device_id="wl-9", received_at=when)
        for when in (before, after)
    ]  # fmt: skip
    sink = DeadLetterSink(db.connect(schema))
    try:
        assert sink.write([("deadletter", 5, 0, letters[0])]) == 1
        assert sink.write([("deadletter", 5, 0, letters[1])]) == 1  # after the restart
        assert sink.write([("deadletter", 5, 0, letters[1])]) == 0  # its own replay
    finally:
        sink.close()
    with db.connect(schema) as look:
        kept = look.execute(
            "SELECT received_at FROM deadletters WHERE kafka_partition = 5 ORDER BY 1"
        ).fetchall()
    assert kept == [(before,), (after,)]


def test_the_cli_lists_the_dead_letters_by_filter_with_their_bytes(schema: Settings) -> None:
    """``cityvitals deadletters``: what was refused, why and by which stage, newest first; the
    refused bytes on request, as text or, when they are not UTF-8, as bytes."""
    letters = [
        dead_letter("ingest", "seq: Field required", b'{"ts": 1}', "cityvitals/wl-7/readings",
                    cause="seq", device_id="wl-7", received_at=T0 + timedelta(hours=1)),
        dead_letter("ingest", "not JSON: Expecting value", b"\xff\xfe", "cityvitals/wl-8/readings",
                    cause="payload", device_id="wl-8", received_at=T0 + timedelta(hours=2)),
        dead_letter("streams", "unknown device cam-3", b"{}", "readings.raw[1]",
                    cause="unknown_device", device_id="cam-3", received_at=T0 + timedelta(hours=3)),
    ]  # fmt: skip
    sink = DeadLetterSink(db.connect(schema))
    try:
        sink.write([("deadletter", 2, 100 + i, letter) for i, letter in enumerate(letters)])
    finally:
        sink.close()
    since = (T0 + timedelta(minutes=30)).isoformat()

    def run(*args: str) -> Any:
        return CliRunner().invoke(
            app, ["deadletters", "--since", since, *args], env=schema.to_env()
        )

    listed = run()
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].startswith("times in ")
    assert "streams" in lines[1] and "cam-3" in lines[1] and "readings.raw[1]" in lines[1]
    assert lines[2].strip() == "[unknown_device] unknown device cam-3"
    assert "wl-8" in lines[3] and "wl-7" in lines[5]  # the newest first

    ingest = run("--stage", "ingest", "--payload")
    assert ingest.exit_code == 0, ingest.output
    assert "cam-3" not in ingest.output
    assert "    payload: b'\\xff\\xfe'" in ingest.output
    assert '    payload: {"ts": 1}' in ingest.output

    found = json.loads(run("--reason", "FIELD REQUIRED", "--json").output)
    assert [(f["letter"]["device_id"], f["kept_at"]) for f in found] == [
        ("wl-7", "deadletter[2]@100")
    ]
    assert found[0]["letter"]["received_at"].startswith("2026-12-01T")
    assert run("--device", "nobody").output == "no dead letters\n"
    by_cause = json.loads(run("--cause", "payload", "--json").output)
    assert [f["letter"]["device_id"] for f in by_cause] == ["wl-8"]
    assert by_cause[0]["letter"]["cause"] == "payload"
    assert run("--stage", "gateway").output == (
        "no dead letters of a stage 'gateway' (the stages that refuse inputs: ingest, streams, "
        "incidents, sinks, notify)\n"
    )
    bad = run("--stage", "Ingest!")
    assert bad.exit_code == 1 and "--stage 'Ingest!' is not a stage name" in bad.output


def test_a_letter_the_database_refuses_is_kept_as_one_about_it_and_the_rest_written(
    schema: Settings,
) -> None:
    """A NUL in a reason (a device's JSON key ``"\\u0000"`` quoted by pydantic) is written as
    ``\\x00`` by the contract. A letter that reaches the table without the contract's checks
    and that PostgreSQL refuses is stored once they have run, and the batch's other items are
    written: the batch no longer fails at every restart."""
    from prometheus_client import CollectorRegistry

    from sinks.routes import Envelope, Route
    from sinks.runner import SinkRunner
    from tests.unit.test_stage import FakeKafka, FakeMessage

    def unchecked(msg: Envelope) -> list[Any]:
        body = json.loads(msg.value)
        body["received_at"] = datetime.fromisoformat(body["received_at"])
        return [(msg.topic, msg.partition, msg.offset, DeadLetter.model_construct(**body))]

    def letter(reason: str, device: str) -> bytes:
        made = dead_letter("ingest", "x", b"\x00{", "cityvitals/t", cause="x", device_id=device)
        return json.dumps({**json.loads(made.model_dump_json()), "reason": reason}).encode()

    topic = schema.topic(Topic.DEADLETTER)
    quoted = letter("values.a\x00b: Extra inputs are not permitted", "nul-1")
    checked = SinkRunner(
        schema, FakeKafka([FakeMessage(topic, 1, quoted)]), FakeKafka([]), db.connect(schema),
        CollectorRegistry(), [Route(Topic.DEADLETTER, decode_dead_letter, DeadLetterSink)],
    )  # fmt: skip
    assert checked.run_once(threading.Event()) == 1

    poison, fine = letter("a\x00b", "nul-2"), letter("fine", "nul-3")
    kafka = FakeKafka([FakeMessage(topic, 2, poison), FakeMessage(topic, 3, fine)])
    registry = CollectorRegistry()
    runner = SinkRunner(
        schema, kafka, kafka, db.connect(schema), registry,
        [Route(Topic.DEADLETTER, unchecked, DeadLetterSink)],
    )  # fmt: skip
    assert runner.run_once(threading.Event()) == 2
    refused = "cityvitals_sinks_refused_items_total"  # not a new letter: kept in its place
    assert registry.get_sample_value(refused, {"table": "deadletters"}) == 0  # there from the start
    with db.connect(schema) as look:
        stored = look.execute(
            "SELECT kafka_offset, stage, reason, device_id, payload_b64 FROM deadletters"
            " WHERE kafka_offset IN (1, 2, 3) AND kafka_topic = %s ORDER BY 1",
            (topic,),
        ).fetchall()
    (one, _, reason_1, _, _), (two, stage_2, reason_2, device_2, payload_2), three = stored
    assert (one, reason_1) == (1, "values.a\\x00b: Extra inputs are not permitted")
    # Made without the contract's checks, it is stored as they make it, whole.
    assert (two, stage_2, reason_2, device_2) == (2, "ingest", "a\\x00b", "nul-2")
    assert base64.b64decode(payload_2) == b"\x00{"
    assert three[:3] == (3, "ingest", "fine")


def test_a_reading_no_column_holds_is_dead_lettered_and_the_rest_written(schema: Settings) -> None:
    """A reading whose sequence number is past a bigint (as one written without the
    contract's bound would be) stopped the sinks at every start, the driver refusing it before
    the database saw it: it is refused alone and dead-lettered, the batch's others stored."""
    from prometheus_client import CollectorRegistry

    from cityvitals.contracts import Reading
    from sinks.postgres import ReadingSink
    from sinks.routes import Envelope, Route
    from sinks.runner import SinkRunner
    from tests.unit.test_stage import FakeKafka, FakeMessage

    device = f"big-{uuid.uuid4().hex[:6]}"

    def unchecked(msg: Envelope) -> list[Reading]:
        body = json.loads(msg.value)
        return [
            Reading.model_construct(
                device_id=device,
                ts=datetime.fromisoformat(body["ts"]),
                seq=body["seq"],
                values={"x": 1.0},
                received_at=None,
                device_type=None,
                place_path=("c",),
            )
        ]

    topic = schema.topic(Topic.READINGS)
    sent = [(1, T0, 1), (2, T0 + timedelta(seconds=1), 2**63), (3, T0 + timedelta(seconds=2), 3)]
    kafka = FakeKafka(
        [
            FakeMessage(topic, offset, json.dumps({"ts": ts.isoformat(), "seq": seq}).encode())
            for offset, ts, seq in sent
        ]
    )
    registry = CollectorRegistry()
    runner = SinkRunner(
        schema, kafka, kafka, db.connect(schema), registry,
        [Route(Topic.READINGS, unchecked, ReadingSink)],
    )  # fmt: skip
    assert runner.run_once(threading.Event()) == 3
    with db.connect(schema) as look:
        stored = look.execute(
            "SELECT seq FROM readings WHERE device_id = %s ORDER BY seq", (device,)
        ).fetchall()
    assert stored == [(1,), (3,)]
    [letter] = [v for t, v in kafka.produced if "deadletter" in t]
    refused = DeadLetter.model_validate_json(letter)
    assert refused.stage == "sinks" and refused.device_id == device
    assert refused.reason.startswith("readings: the database refused it: ")
    assert "int too big" in refused.reason
    counted = registry.get_sample_value(
        "cityvitals_sinks_refused_items_total", {"table": "readings"}
    )
    assert counted == 1
