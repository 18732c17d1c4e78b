"""The stream's Faust app fetches with the wait of its settings (a broker that holds an empty
fetch for the whole wait, as tansu does, must not delay each hop by Faust's fixed 1.5 s; tansu
on S3 answers with what it read within the wait, so there the wait is longer), seeks back to
the committed offsets with the flow stopped (so a restarted worker loses nothing), its
tables serialize with orjson, and a table's many changes go to its changelog as Faust's own
records, a batch at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from faust.types import TP
from prometheus_client import CollectorRegistry

from cityvitals.settings import Settings
from streams.app import (
    Outbox,
    Record,
    create_app,
    log_all,
    log_changes,
    put,
    send_outbox,
    send_records,
)
from wiring.localstack import STREAM_INPUTS
from wiring.services import load_catalogue, load_rules


@pytest.mark.parametrize(
    ("overrides", "wait_ms"),
    [
        ({}, 20),  # tansu in memory, or Kafka: a short wait
        ({"kafka_storage": "s3"}, 500),  # tansu on S3 answers with what it read in the wait
        ({"kafka_storage": "s3", "kafka_fetch_wait_ms": 250}, 250),  # set explicitly
    ],
)
def test_the_stream_consumer_waits_as_long_as_its_settings_say(
    overrides: dict[str, Any], wait_ms: int
) -> None:
    async def fetch_wait() -> Any:
        settings = Settings(kafka_bootstrap="127.0.0.1:1", **overrides)  # nothing is connected
        app = create_app(
            settings, load_rules(settings), load_catalogue(settings), CollectorRegistry()
        )
        worker = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return worker._fetch_max_wait_ms
        finally:
            await worker.stop()

    assert asyncio.run(fetch_wait()) == wait_ms


def test_the_stream_tables_serialize_with_orjson() -> None:
    """Faust writes a changelog record per table change (a device's marks, its rule memory):
    with orjson a record costs about 2 µs instead of 17."""
    from faust.utils import json as faust_json

    assert faust_json.orjson is not None
    marks = {
        "t": [[1_796_356_800_000_000, 7]],
        "c": {"aqi": {"c/c-d1": {"1796356800": 7}}},
    }
    assert faust_json.loads(faust_json.dumps(marks)) == marks


class Fetching:
    """The stream's real consumer, its broker side replaced: a fetch returns ``records`` of
    one partition, and a seek to the committed offsets notes whether the flow ran then."""

    def __init__(self, consumer: Any, records: list[str], committed: int) -> None:
        self.consumer = consumer
        self.tp = TP("readings.raw", 0)
        self.records = records
        self.committed = committed
        self.seeks: list[bool] = []  # the flow was running at each seek
        consumer.seek_to_committed = self.seek_to_committed
        consumer._getmany = self.fetch
        consumer.highwater = lambda _tp: len(records)
        consumer._to_message = lambda _tp, record: record
        consumer._set_active_tps({self.tp})
        consumer.resume_flow()

    async def seek_to_committed(self) -> dict[TP, int]:
        self.seeks.append(self.consumer.flow_active)
        return {self.tp: self.committed}

    async def fetch(self, active_partitions: Any, timeout: float) -> dict[TP, list[str]]:
        return {self.tp: self.records}


def consumer_of_a_stream() -> Any:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")  # nothing is connected
    app = create_app(settings, load_rules(settings), load_catalogue(settings), CollectorRegistry())
    return app.consumer


def test_a_seek_back_waits_for_the_fetch_loop_and_leaves_the_flow_stopped() -> None:
    """Faust clears the streams' buffers after it seeks back to the committed offsets, then
    resumes the consumer: a record handed to a stream between the seek and the clearing would
    be lost, its offset already counted as read. So the seek stops the flow, waits until the
    fetch loop has handed on the record in hand (recording its read offset), and leaves the
    flow stopped for Faust to resume after the clearing."""

    async def run() -> tuple[list[Any], list[bool], list[bool], Any, bool]:
        fetching = Fetching(consumer_of_a_stream(), ["o5", "o6", "o7"], committed=5)
        consumer = fetching.consumer
        loop = consumer.getmany(1.0)  # what Faust's fetch loop iterates
        handed = [await loop.__anext__()]
        seek = asyncio.create_task(consumer.perform_seek())
        for _ in range(10):
            await asyncio.sleep(0)
        seeks_while_held = list(fetching.seeks)
        handed += [item async for item in loop]  # the loop lets go: nothing more comes
        await seek
        read = consumer._read_offset[fetching.tp]
        return handed, seeks_while_held, fetching.seeks, read, consumer.flow_active

    handed, seeks_while_held, seeks, read_offset, flowing = asyncio.run(run())
    assert handed == [(TP("readings.raw", 0), "o5")]
    assert seeks_while_held == []  # not while the fetch loop held a record
    assert seeks == [False]  # once, with the flow stopped
    assert read_offset == 5  # the next record handed on is the committed one
    assert not flowing  # until Faust resumes the consumer after clearing the buffers


def test_a_flow_stopped_during_a_fetch_seeks_back_without_waiting_for_itself() -> None:
    """A fetch that returns after the flow stopped hands nothing on: Faust's getmany seeks back
    from inside the fetch loop, which must not wait for the loop to let go of itself."""

    async def run() -> tuple[list[Any], list[bool]]:
        fetching = Fetching(consumer_of_a_stream(), ["o5"], committed=5)
        consumer = fetching.consumer

        async def fetch_then_stop(active_partitions: Any, timeout: float) -> Any:
            consumer.stop_flow()  # a rebalance began meanwhile
            return {fetching.tp: fetching.records}

        consumer._getmany = fetch_then_stop
        handed = await asyncio.wait_for(_all(consumer.getmany(1.0)), timeout=10)
        return handed, fetching.seeks

    handed, seeks = asyncio.run(run())
    assert handed == []
    assert seeks == [False]


async def _all(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


def test_the_stream_keeps_its_data_folder_in_the_state_folder(tmp_path: Path) -> None:
    """Faust makes its data folder when a worker starts: in the state folder, not one folder
    per topic prefix in whatever folder the worker was started from."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", state_dir=tmp_path)
    app = create_app(settings, load_rules(settings), load_catalogue(settings), CollectorRegistry())
    assert app.conf.datadir == tmp_path / "streams-data"


class Producer:
    """Stands for Faust's aiokafka producer: real record batches, kept instead of sent."""

    def __init__(self, batch_size: int, max_request_size: int = 4_000_000) -> None:
        self.batch_size = batch_size
        self._max_request_size = max_request_size
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        assert batch.closed()  # else the producer would keep it for its linger
        records = [(r.key, r.value) for r in DefaultRecordBatch(bytes(batch._build()))]
        self.sent.append((topic, partition, records))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def changelog_of(batch_size: int) -> tuple[Any, Producer]:
    app = faust.App("t", broker="kafka://127.0.0.1:1", store="memory://")  # nothing connects
    table = app.Table("device_state", default=None, partitions=4)
    producer = Producer(batch_size)
    app.producer._producer = producer
    return table, producer


def test_a_table_is_written_as_faust_writes_it_in_one_batch_of_records() -> None:
    """:func:`streams.app.put` sets the entries in the table, and :func:`streams.app.log_changes`
    hands their changelog records, byte for byte those Faust's own ``table[key] = value``
    makes, to the producer in one batch."""
    table, producer = changelog_of(1_000_000)
    table.data["gone"] = {"rules": {"r": 1}, "marks": None}
    changes = {
        "a-1": {"rules": {"r": 2}, "marks": {"t": [["2026-12-01T04:00:00+00:00", 7]]}},
        "gone": None,
        "empty": {},
    }

    async def write() -> tuple[list[Any], list[tuple[bytes, bytes | None]]]:
        put(table, changes)
        delivered = [await f for f in await log_changes(table, changes, 3)]
        faust_made = [  # Faust's own records of the same changes (queued, never sent)
            table.send_changelog(3, "a-1", changes["a-1"]).message,
            table.send_changelog(3, "gone", None, value_serializer="raw").message,
            table.send_changelog(3, "empty", None, value_serializer="raw").message,
        ]
        return delivered, [(m.key, m.value) for m in faust_made]

    delivered, faust_made = asyncio.run(write())
    assert delivered == [None]
    assert dict(table.data) == {"a-1": changes["a-1"]}
    assert producer.sent == [("t-device_state-changelog", 3, faust_made)]


def test_a_table_write_larger_than_a_batch_goes_as_several_in_order() -> None:
    table, producer = changelog_of(300)
    changes: dict[str, dict[str, Any] | None] = {f"d-{i}": {"rules": {"n": i}} for i in range(40)}
    put(table, changes)
    futures = asyncio.run(log_changes(table, changes, 1))
    assert len(futures) == len(producer.sent) > 1
    keys = [key for _topic, _partition, records in producer.sent for key, _value in records]
    assert keys == [f'"d-{i}"'.encode() for i in range(40)]
    assert {p for _t, p, _r in producer.sent} == {1}
    assert len(table.data) == 40


def test_changes_of_several_partitions_go_as_a_batch_each_and_no_change_as_none() -> None:
    table, producer = changelog_of(1_000)
    changed = {0: {"a": {"n": 1}, "b": None}, 2: {"c": {"n": 3}}}
    assert len(asyncio.run(log_all(table, changed))) == 2
    assert [(partition, len(records)) for _t, partition, records in producer.sent] == [
        (0, 2),
        (2, 1),
    ]
    assert asyncio.run(log_changes(table, {}, 0)) == []
    assert len(producer.sent) == 2


def test_an_outbox_goes_as_one_batch_per_topic_partition_with_its_records_in_order() -> None:
    """:func:`streams.app.send_outbox` hands each topic partition's records over as one
    closed batch (not a Faust send each), keys, values and order kept."""
    app = faust.App("t", broker="kafka://127.0.0.1:1", store="memory://")  # nothing connects
    producer = Producer(1_000_000)
    app.producer._producer = producer
    outbox: Outbox = {
        ("alerts", 2): [(b"d-1", b"fired"), (b"d-1", b"resolved")],
        ("readings", 2): [(None, b"r-1"), (None, b"r-2"), (None, b"r-3")],
        ("readings", 0): [(None, b"r-4")],
    }
    delivered = asyncio.run(send_outbox(app, outbox))
    assert len(delivered) == 3
    assert producer.sent == [
        ("alerts", 2, [(b"d-1", b"fired"), (b"d-1", b"resolved")]),
        ("readings", 2, [(None, b"r-1"), (None, b"r-2"), (None, b"r-3")]),
        ("readings", 0, [(None, b"r-4")]),
    ]
    assert asyncio.run(send_outbox(app, {("readings", 1): []})) == []


def test_a_record_over_the_largest_request_is_refused_and_nothing_of_its_batch_is_sent() -> None:
    """As aiokafka's own send refuses it: the broker would refuse the request."""
    app = faust.App("t", broker="kafka://127.0.0.1:1", store="memory://")  # nothing connects
    producer = Producer(1_000_000, max_request_size=1_000)
    app.producer._producer = producer
    records: list[Record] = [(None, b"small"), (None, b"x" * 2_000)]
    with pytest.raises(MessageSizeTooLargeError, match="larger than the producer's largest"):
        asyncio.run(send_records(app, "readings", 0, records))
    assert producer.sent == []


def test_a_stopping_stack_waits_for_every_topic_the_stream_consumes() -> None:
    """The drain reads the stream's lag on :data:`STREAM_INPUTS`: a topic an agent consumes
    that it left out (say the incident desk's inputs) would let a stop lose what waits there."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1")  # nothing is connected
    app = create_app(settings, load_rules(settings), load_catalogue(settings), CollectorRegistry())
    consumed = {name for agent in app.agents.values() for name in agent.channel.topics}
    assert consumed == {settings.topic(t) for t in STREAM_INPUTS}
