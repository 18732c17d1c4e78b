"""The stage toolkit (cityvitals.stage) and the sink runner's use of it: counters that reconcile,
one dead-letter builder, retries of transient faults."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from cityvitals.contracts import DeadLetter, Reading, ReadingBatch
from cityvitals.settings import Settings
from cityvitals.stage import StageMetrics, Transient, as_utc, dead_letter, retry
from cityvitals.topics import Topic
from sinks.routes import Route, decode_dead_letter, decode_readings

SETTINGS = Settings(topic_prefix="t")
T0 = datetime(2026, 11, 22, 8, tzinfo=UTC)


def test_every_stage_names_its_counters_alike() -> None:
    registry = CollectorRegistry()
    for stage in ("ingest", "streams", "sinks"):
        StageMetrics(stage, registry, "Messages")
    names = {m.name for m in registry.collect()}
    for stage in ("ingest", "streams", "sinks"):
        assert {f"cityvitals_{stage}_{n}" for n in ("received", "forwarded", "rejected")} <= names


def test_a_dead_letter_keeps_the_bytes_and_cuts_a_long_reason() -> None:
    letter = dead_letter(
        "sinks", "x" * 5000, b"\x00\xff", "alerts[1]@2", cause="c" * 150, device_id="aq-1"
    )
    assert (letter.stage, letter.source, letter.device_id) == ("sinks", "alerts[1]@2", "aq-1")
    assert letter.cause == "c" * 100
    assert letter.payload_b64 == "AP8=" and len(letter.reason) == 2000
    assert letter.received_at is not None and letter.received_at.tzinfo is not None


def test_naive_timestamps_are_taken_as_utc() -> None:
    assert as_utc(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)


def test_retry_gives_up_only_when_the_stage_stops() -> None:
    stop = threading.Event()
    stop.set()

    def down() -> int:
        raise Transient("database down", retry_after=0)

    with pytest.raises(Transient, match="database down"):
        retry(down, stop)


class FakeMessage:
    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self._topic, self._offset, self._value = topic, offset, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


class FakeKafka:
    def __init__(self, messages: list[FakeMessage]) -> None:
        self.messages = messages
        self.produced: list[tuple[str, bytes]] = []
        self.keys: list[bytes | None] = []
        self.commits = 0
        self.waits: list[float] = []

    def consume(self, _count: int, timeout: float) -> list[FakeMessage]:
        self.waits.append(timeout)
        out, self.messages = self.messages, []
        return out

    def commit(self, asynchronous: bool) -> None:
        self.commits += 1

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.produced.append((topic, value))
        self.keys.append(key)

    def flush(self, _timeout: float) -> int:
        return 0


class MemorySink:
    table = "memory"

    def __init__(self, _conn: object) -> None:
        self.written: list[Any] = []

    def write(self, batch: Sequence[Any]) -> int:
        self.written.extend(batch)
        return len(batch)

    def close(self) -> None:
        pass


def test_the_sink_runner_reconciles_and_dead_letters_what_does_not_decode() -> None:
    from sinks.runner import SinkRunner

    good = ReadingBatch(readings=(Reading(device_id="aq-1", ts=T0, seq=1, values={"pm25": 4}),))
    kafka = FakeKafka(
        [
            FakeMessage("t.readings", 1, good.model_dump_json().encode()),
            FakeMessage("t.readings", 2, b"{not json"),
            FakeMessage("t.deadletter", 3, b"[]"),
        ]
    )
    routes = [
        Route(Topic.READINGS, decode_readings, MemorySink),
        Route(Topic.DEADLETTER, decode_dead_letter, MemorySink),
    ]
    registry = CollectorRegistry()
    runner = SinkRunner(SETTINGS, kafka, kafka, None, registry, routes)  # type: ignore[arg-type]
    assert runner.run_once(threading.Event()) == 3
    assert runner.metrics.reconciles()
    assert registry.get_sample_value("cityvitals_sinks_received_total") == 3
    assert registry.get_sample_value("cityvitals_sinks_rejected_total", {"reason": "readings"}) == 1
    readings, letters = (s.written for s in runner.sinks)  # type: ignore[attr-defined]
    assert readings == list(good.readings)
    # A malformed dead letter is stored as one; anything else malformed goes to deadletter.
    [(topic, _, offset, kept)] = letters
    assert (topic, offset, kept.stage, kept.source) == (
        "t.deadletter",
        3,
        "sinks",
        "t.deadletter[0]@3",
    )
    [(target, value)] = kafka.produced
    refused = DeadLetter.model_validate_json(value)
    assert (target, refused.source) == ("t.deadletter", "t.readings[0]@2")
    assert kafka.commits == 1


class ConflictingSink(MemorySink):
    """Turns away, as stored with another value, the pm25 and no2 rows of device aq-2."""

    def write(self, batch: Sequence[Any]) -> int:
        from sinks.base import Conflict

        self.conflicts = [
            Conflict(r, f"{metric} differs")
            for r in batch
            for metric in r.values
            if r.device_id == "aq-2"
        ]
        return super().write(batch)


def test_the_sink_runner_writes_a_burst_once_its_topic_goes_quiet() -> None:
    """A burst is written when nothing more came for the idle time, not at the linger time;
    with no idle time, it waits for the linger time or a full batch, as one call."""
    from sinks.runner import SinkRunner

    good = ReadingBatch(readings=(Reading(device_id="aq-1", ts=T0, seq=1, values={"pm25": 4}),))
    routes = [Route(Topic.READINGS, decode_readings, MemorySink)]
    for idle_ms, waits in ((20, [0.02, 0.02]), (0, [0.25])):
        settings = SETTINGS.model_copy(update={"sink_linger_ms": 250, "sink_idle_ms": idle_ms})
        kafka = FakeKafka([FakeMessage("t.readings", 1, good.model_dump_json().encode())])
        registry = CollectorRegistry()
        runner = SinkRunner(settings, kafka, kafka, None, registry, routes)  # type: ignore[arg-type]
        before = time.time()
        assert runner.run_once(threading.Event()) == 1
        assert [round(w, 2) for w in kafka.waits] == waits
        assert kafka.commits == 1
        last = "cityvitals_sinks_last_write_timestamp_seconds"
        assert (registry.get_sample_value(last, {"table": "memory"}) or 0) >= before


class PickySink(MemorySink):
    """Refuses any batch holding a reading of ``pm25`` 666, as PostgreSQL refuses a value."""

    def write(self, batch: Sequence[Any]) -> int:
        if any(r.values.get("pm25") == 666 for r in batch):
            raise psycopg.DataError("value out of range")
        return super().write(batch)


def test_the_sink_runner_keeps_what_the_database_refuses_and_writes_the_rest() -> None:
    from sinks.runner import SinkRunner

    readings = [
        Reading(device_id="aq-1", ts=T0 + timedelta(seconds=n), seq=n, values={"pm25": v})
        for n, v in enumerate((4, 5, 666, 6))
    ]
    kafka = FakeKafka(
        [
            FakeMessage(
                "t.readings", offset, ReadingBatch(readings=part).model_dump_json().encode()
            )
            for offset, part in ((7, tuple(readings[:2])), (8, tuple(readings[2:])))
        ]
    )
    registry = CollectorRegistry()
    routes = [Route(Topic.READINGS, decode_readings, PickySink)]
    runner = SinkRunner(SETTINGS, kafka, kafka, None, registry, routes)  # type: ignore[arg-type]
    assert runner.run_once(threading.Event()) == 2
    (sink,) = runner.sinks
    assert sink.written == [readings[0], readings[1], readings[3]]  # type: ignore[attr-defined]
    [(topic, value)] = kafka.produced
    letter = DeadLetter.model_validate_json(value)
    assert (topic, letter.stage, letter.source, letter.device_id) == (
        "t.deadletter",
        "sinks",
        "t.readings[0]@8",
        "aq-1",
    )
    assert letter.reason == "memory: the database refused it: value out of range"
    assert letter.cause == "database_refused"
    assert Reading.model_validate_json(base64.b64decode(letter.payload_b64)) == readings[2]
    assert registry.get_sample_value("cityvitals_sinks_rows_total", {"table": "memory"}) == 3
    refused = "cityvitals_sinks_refused_items_total"
    assert registry.get_sample_value(refused, {"table": "memory"}) == 1
    assert kafka.commits == 1
    # Every item refused: no value's fault but the table's or the code's; the batch fails.
    poisoned = [r.model_copy(update={"values": {"pm25": 666}}) for r in readings[:2]]
    body = ReadingBatch(readings=tuple(poisoned)).model_dump_json().encode()
    kafka = FakeKafka([FakeMessage("t.readings", 9, body)])
    runner = SinkRunner(SETTINGS, kafka, kafka, None, CollectorRegistry(), routes)  # type: ignore[arg-type]
    with pytest.raises(psycopg.DataError):
        runner.run_once(threading.Event())
    assert (kafka.produced, kafka.commits) == ([], 0)


def test_the_sink_runner_dead_letters_a_reading_stored_with_other_values_once() -> None:
    """One dead letter for each reading the table's key turned away, with the reasons of its
    rows together, naming the Kafka message it came in; counted beside the refusals."""
    from sinks.runner import SinkRunner

    def message(offset: int, *devices: str) -> FakeMessage:
        readings = tuple(
            Reading(device_id=d, ts=T0, seq=1, values={"pm25": 4, "no2": 9}) for d in devices
        )
        return FakeMessage(
            "t.readings", offset, ReadingBatch(readings=readings).model_dump_json().encode()
        )

    kafka = FakeKafka([message(5, "aq-1", "aq-3"), message(6, "aq-1", "aq-2")])
    registry = CollectorRegistry()
    routes = [Route(Topic.READINGS, decode_readings, ConflictingSink)]
    runner = SinkRunner(SETTINGS, kafka, kafka, None, registry, routes)  # type: ignore[arg-type]
    assert runner.run_once(threading.Event()) == 2
    assert runner.metrics.reconciles()  # both messages forwarded
    [(target, value)] = kafka.produced
    letter = DeadLetter.model_validate_json(value)
    assert (target, letter.stage, letter.source) == ("t.deadletter", "sinks", "t.readings[0]@6")
    assert kafka.keys == [b"aq-2"]  # keyed by the device, as every stage's dead letters
    assert (letter.device_id, letter.reason) == ("aq-2", "pm25 differs; no2 differs")
    assert letter.cause == "conflict"
    assert Reading.model_validate_json(base64.b64decode(letter.payload_b64)).device_id == "aq-2"
    assert registry.get_sample_value("cityvitals_sinks_conflicts_total") == 1


class BlockedSink(MemorySink):
    """A write that waits until ``released`` is set: a database hung, paused or full."""

    released = threading.Event()
    entered = threading.Event()

    def write(self, batch: Sequence[Any]) -> int:
        self.entered.set()
        self.released.wait(10)
        return super().write(batch)


def test_the_sinks_say_they_are_not_ready_while_a_write_waits_on_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database paused for a minute: the write blocked, the sinks logged nothing and said
    they were ready the whole time. Past STUCK_S they say they are not, with how long."""
    from sinks import runner as runner_module
    from sinks.runner import SinkRunner

    monkeypatch.setattr(runner_module, "STUCK_S", 0.2)
    good = ReadingBatch(readings=(Reading(device_id="aq-1", ts=T0, seq=1, values={"pm25": 4}),))
    kafka = FakeKafka([FakeMessage("t.readings", 1, good.model_dump_json().encode())])
    registry = CollectorRegistry()
    routes = [Route(Topic.READINGS, decode_readings, BlockedSink)]
    runner = SinkRunner(SETTINGS, kafka, kafka, None, registry, routes)  # type: ignore[arg-type]
    runner._assigned = True  # as the consumer's assignment does
    assert registry.get_sample_value("cityvitals_sinks_ready") == 1
    BlockedSink.released.clear()
    writing = threading.Thread(target=runner.run_once, args=(threading.Event(),))
    writing.start()
    assert BlockedSink.entered.wait(5)
    time.sleep(0.3)
    assert registry.get_sample_value("cityvitals_sinks_ready") == 0
    assert (registry.get_sample_value("cityvitals_sinks_write_waiting_seconds") or 0) >= 0.2
    BlockedSink.released.set()
    writing.join(5)
    assert registry.get_sample_value("cityvitals_sinks_ready") == 1
    assert registry.get_sample_value("cityvitals_sinks_write_waiting_seconds") == 0
