"""The sink service: Kafka topics → PostgreSQL, in batches, committing offsets only after a write.

It follows :data:`sinks.routes.ROUTES`: each message of a routed topic is decoded for each of
its routes and the items are written, batch by batch, by the route's sink. A message that does
not decode is sent to ``deadletter`` (and so is kept) and the rest of the batch goes on; a
malformed dead letter is itself stored as a dead letter row. A database fault stops progress,
not the process: the batch is retried until the database answers, and no offset moves past
rows that were not written.

Metrics (:class:`~cityvitals.stage.StageMetrics`, stage ``sinks``, counting Kafka messages):
received = forwarded (written) + rejected{reason=<topic>}; rows newly written per table in
``cityvitals_sinks_rows_total{table}``, and when rows were last written to each in
``cityvitals_sinks_last_write_timestamp_seconds{table}``. A reading or camera event whose row's key was stored
with other values (a device's second value for one instant) is written as far as it is new
and dead-lettered with the values both ways (``cityvitals_sinks_conflicts_total``): one
forwarded message, and a dead letter beside the refusals. A batch the database refuses for a
value (a NUL in text, a number out of range, a failed check) is halved until each refused item
stands alone; those are dead-lettered with its reason (``cityvitals_sinks_refused_items_total``;
a dead letter it refuses is stored in its place) and the rest is written. A batch refused whole
is a fault of the table or the code: the sink stops on it, as on any other error.
``cityvitals_sinks_ready`` is 1 while the sinks hold their partitions and no batch has waited
on the database past :data:`STUCK_S` (``cityvitals_sinks_write_waiting_seconds``): a write
blocked on a database hung or paused logs nothing, and was seen nowhere else.
"""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import psycopg
import psycopg.errors
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from cityvitals.contracts import IDENTIFIER, STAGE, DeadLetter
from cityvitals.db import DatabaseUnavailable
from cityvitals.kafka import consume_batch
from cityvitals.problems import problems
from cityvitals.settings import Settings
from cityvitals.stage import StageMetrics, dead_letter, kafka_source, retry
from cityvitals.topics import Topic
from sinks.base import Conflict, Connection, Sink, SinkUnavailable
from sinks.postgres import KafkaPlaced
from sinks.routes import ROUTES, Envelope, Route

__all__ = ["SinkRunner"]

log = logging.getLogger("cityvitals.sinks")

Source = tuple[int, str]
"""Where a message's items begin in a route's batch, and the message's place in Kafka."""


STUCK_S = 30.0
"""How long a batch may wait on the database (a database hung, paused, or its disk full)
before the sinks say they are not ready: they log nothing while a write blocks."""

REFUSED = (
    psycopg.DataError,
    psycopg.errors.CheckViolation,
    psycopg.errors.NotNullViolation,
    OverflowError,
    struct.error,
)
"""What the database raises for a value it will never store (a NUL in text, a number out of
a column's range, a check it fails), and what the driver raises for a number no column of its
type holds (an integer past 2^63 - 1, refused before it is sent: OverflowError from the C
driver, struct.error from the Python one): no retry helps. Other errors
stop the sink as before."""

DATABASE_REFUSED = "database_refused"
"""The cause of the dead letter of an item the database refused (counted by table in
``cityvitals_sinks_refused_items_total``)."""

CONFLICT = "conflict"
"""The cause of the dead letter of a reading whose value for a stored instant differed
(``cityvitals_sinks_conflicts_total``)."""

IDENTIFIER_RE = re.compile(IDENTIFIER)


class SinkRefused(RuntimeError):
    """The database refused what the sink keeps in place of what it refused: a defect."""


def _source_of(sources: Sequence[Source], at: int) -> str:
    """The Kafka message the batch's item ``at`` came in."""
    return sources[bisect_right(sources, at, key=itemgetter(0)) - 1][1]


class SinkRunner:
    """Consume the routed topics and write them with one sink per route, all on ``conn``."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        producer: Producer,
        conn: Connection,
        registry: CollectorRegistry,
        routes: Sequence[Route] = ROUTES,
        connect: Callable[[], Connection] | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.routes = list(routes)
        self.conn = conn
        self.connect = connect
        self.sinks: list[Sink[Any]] = [route.sink(conn) for route in self.routes]
        self.topics = {settings.topic(r.topic): r.topic for r in self.routes}
        self._deadletter = settings.topic(Topic.DEADLETTER)
        self.metrics = StageMetrics("sinks", registry, "Kafka messages")
        self.written = Counter(
            "cityvitals_sinks_rows_total", "Rows newly written", ["table"], registry=registry
        )
        self.last_write = Gauge(
            "cityvitals_sinks_last_write_timestamp_seconds",
            "When the sink last wrote rows to a table (Unix time): how fresh the table is",
            ["table"],
            registry=registry,
        )
        self.refused_items = Counter(
            "cityvitals_sinks_refused_items_total",
            "Items of a table the database refused for a value (each dead-lettered; a dead letter "
            "it refused is stored in its place instead, and not counted here)",
            ["table"],
            registry=registry,
        )
        for sink in self.sinks:  # every table's series from the start, at 0
            self.refused_items.labels(sink.table)
        self.conflicts = Counter(
            "cityvitals_sinks_conflicts_total",
            "Readings and camera events dead-lettered because a row's key was stored with "
            "other values (a second value for one device, metric and instant)",
            registry=registry,
        )
        self._assigned = False
        self._writing_since: float | None = None
        """When the batch being written began (monotonic), retries included; None between."""
        self.waiting = Gauge(
            "cityvitals_sinks_write_waiting_seconds",
            "How long the batch being written has waited on the database (0 between batches): "
            f"past {STUCK_S:g} s the sinks say they are not ready",
            registry=registry,
        )
        self.waiting.set_function(self._waited)
        self.metrics.ready.set_function(
            lambda: 1.0 if self._assigned and self._waited() < STUCK_S else 0.0
        )

    def _waited(self) -> float:
        since = self._writing_since
        return 0.0 if since is None else time.monotonic() - since

    def _decode(self, msg: Message, batch: list[list[Any]], sources: list[list[Source]]) -> None:
        """Add the message's items to each of its routes' batches (and where they begin, with
        the message's place in Kafka, to ``sources``), or dead-letter it."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        envelope = Envelope(topic, partition, offset, msg.value() or b"")
        kind = self.topics[topic]
        self.metrics.received.inc()
        mine = [i for i, route in enumerate(self.routes) if route.topic is kind]
        try:
            decoded = [self.routes[i].decode(envelope) for i in mine]
        except ValidationError as exc:
            self.metrics.refuse(kind.value)
            refused = dead_letter(
                "sinks",
                ": ".join(problems(exc)),
                envelope.value,
                kafka_source(topic, partition, offset),
                cause=kind.value,
            )
            if kind is Topic.DEADLETTER:
                # A dead letter that is itself malformed: keep its bytes as a dead letter row.
                for i in mine:
                    batch[i].append((topic, partition, offset, refused))
            else:
                self.producer.produce(self._deadletter, refused.model_dump_json().encode())
            return
        for i, items in zip(mine, decoded, strict=True):
            sources[i].append((len(batch[i]), kafka_source(topic, partition, offset)))
            batch[i].extend(items)
        self.metrics.forwarded.inc()

    def _write_one(self, index: int, items: list[Any]) -> int:
        """Write one route's items; a lost connection is replaced before the retry."""
        try:
            return self.sinks[index].write(items)
        except SinkUnavailable:
            self._reconnect_if_lost()
            raise

    def _reconnect_if_lost(self) -> None:
        """A connection the server dropped (a restarted database) never comes back: open a new
        one for every sink. While the database is still down this fails and the retry waits."""
        if self.connect is None or not self.conn.closed:
            return
        try:
            conn = self.connect()
        except DatabaseUnavailable as exc:
            log.warning("database still unavailable: %s", exc)
            return
        log.info("reconnected to the database")
        self.conn = conn
        self.sinks = [route.sink(conn) for route in self.routes]

    def _write(
        self, batch: list[list[Any]], sources: list[list[Source]], stop: threading.Event
    ) -> None:
        for i, items in enumerate(batch):
            written, refused = self._write_parts(i, items, sources[i], 0, stop)
            if refused and len(refused) == len(items) > 1:
                # Every item refused: a fault of the table or of this code, not of the data.
                raise refused[0][1]
            if refused:
                log.warning(
                    "%s refused %d of %d items", self.sinks[i].table, len(refused), len(items)
                )
            for at, exc in refused:
                source = _source_of(sources[i], at)
                self._dead_letter_refused(i, items[at], source, str(exc).strip(), stop)
            self._count_written(i, written)
        if self.producer.flush(30):
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "dead letters unconfirmed"))

    def _count_written(self, index: int, written: int) -> None:
        table = self.sinks[index].table
        if written:  # before the count: who sees the rows sees when they were written
            self.last_write.labels(table).set_to_current_time()
        self.written.labels(table).inc(written)

    def _write_parts(
        self, index: int, items: list[Any], sources: list[Source], start: int, stop: threading.Event
    ) -> tuple[int, list[tuple[int, Exception]]]:
        """Write ``items``, the batch's from position ``start``; a part the database refuses
        for a value is halved until each item it refuses stands alone. Returns the rows
        written, and the position and error of each refused item. A value no check before
        foresaw must not stop the table (the sink would fail on it at every restart), and
        halving keeps a large batch with one such item to a few writes."""
        try:
            written = retry(lambda: self._write_one(index, items), stop)
        except REFUSED as exc:
            if len(items) == 1:
                return 0, [(start, exc)]
            half = len(items) // 2
            first = self._write_parts(index, items[:half], sources, start, stop)
            second = self._write_parts(index, items[half:], sources, start + half, stop)
            return first[0] + second[0], first[1] + second[1]
        conflicts = getattr(self.sinks[index], "conflicts", ())
        self._dead_letter_conflicts(conflicts, items, sources, start)
        return written, []

    def _dead_letter_refused(
        self, index: int, item: Any, source: str, why: str, stop: threading.Event
    ) -> None:
        table = self.sinks[index].table
        reason = f"{table}: the database refused it: {why}"
        log.warning("%s: %s", source, reason)
        if self.routes[index].topic is Topic.DEADLETTER:
            self._keep_refused_letter(index, item, reason, source, stop)
            return
        self.refused_items.labels(table).inc()
        letter = dead_letter(
            "sinks",
            reason,
            item.model_dump_json().encode(),
            source,
            cause=DATABASE_REFUSED,
            device_id=getattr(item, "device_id", None),
            received_at=getattr(item, "received_at", None),
        )
        self.producer.produce(
            self._deadletter,
            letter.model_dump_json().encode(),
            key=(letter.device_id or "").encode(),
        )

    def _keep_refused_letter(
        self, index: int, item: KafkaPlaced, reason: str, source: str, stop: threading.Event
    ) -> None:
        """A dead letter the table refused, stored in its place: as it is once its contract's
        checks have run (a letter made without them), else as one of the same stage, device
        and time whose payload is the refused letter. Not a new dead letter: the audit counts
        it under its stage as before."""
        topic, partition, offset, letter = item
        try:
            checked = DeadLetter.model_validate(letter.model_dump())
            retry(lambda: self._write_one(index, [(topic, partition, offset, checked)]), stop)
            return
        except (ValidationError, *REFUSED):
            pass
        stage = letter.stage if STAGE.fullmatch(str(letter.stage)) else "sinks"
        kept = dead_letter(
            stage,
            reason,
            letter.model_dump_json().encode(),
            source,
            cause=DATABASE_REFUSED,
            device_id=letter.device_id
            if isinstance(letter.device_id, str) and IDENTIFIER_RE.fullmatch(letter.device_id)
            else None,
            received_at=letter.received_at,
        )
        try:
            retry(lambda: self._write_one(index, [(topic, partition, offset, kept)]), stop)
        except REFUSED as exc:
            raise SinkRefused(
                f"{source}: the database refused a dead letter and its stand-in: {exc}"
            ) from exc

    def _dead_letter_conflicts(
        self, conflicts: Sequence[Conflict], items: list[Any], sources: list[Source], start: int = 0
    ) -> None:
        """Keep each item the table's key turned away with other values as one dead letter
        (the reasons of its rows together), naming the Kafka message it came in."""
        reasons: dict[int, list[str]] = {}
        for conflict in conflicts:
            reasons.setdefault(id(conflict.item), []).append(conflict.reason)
        for at, item in enumerate(items):
            why = reasons.get(id(item))
            if why is None:
                continue
            source = _source_of(sources, start + at)
            letter = dead_letter(
                "sinks",
                "; ".join(why),
                item.model_dump_json().encode(),
                source,
                cause=CONFLICT,
                device_id=item.device_id,
                received_at=item.received_at,
            )
            self.producer.produce(
                self._deadletter,
                letter.model_dump_json().encode(),
                key=(letter.device_id or "").encode(),  # as every stage keys its dead letters
            )
            self.conflicts.inc()
            log.warning("%s: %s", source, letter.reason)

    def run_once(self, stop: threading.Event) -> int:
        """Consume one batch, write it, commit; returns the messages consumed."""
        s = self.settings
        messages = consume_batch(
            self.consumer, s.sink_batch_max, s.sink_linger_ms / 1000, s.sink_idle_ms / 1000
        )
        batch: list[list[Any]] = [[] for _ in self.routes]
        sources: list[list[Source]] = [[] for _ in self.routes]
        for msg in messages:
            self._decode(msg, batch, sources)
        if messages:
            self._writing_since = time.monotonic()
            try:
                self._write(batch, sources, stop)
            finally:
                self._writing_since = None
            self.consumer.commit(asynchronous=False)
        return len(messages)

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe(
            list(self.topics),
            on_assign=lambda _c, _parts: setattr(self, "_assigned", True),
            on_revoke=lambda _c, _parts: setattr(self, "_assigned", False),
        )
        try:
            while not stop.is_set():
                self.run_once(stop)
        finally:
            self.consumer.close()
            for sink in self.sinks:
                sink.close()
