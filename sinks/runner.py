"""The sink service: Kafka topics → PostgreSQL, in batches, committing offsets only after a write.

A message that does not decode is sent to ``deadletter`` (and so is kept) and the rest of the
batch goes on. A database fault stops progress, not the process: the batch is retried until the
database answers, and no offset moves past rows that were not written.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from cityvitals.contracts import (
    Alert,
    CameraEvent,
    DeadLetter,
    Indicator,
    Reading,
    ReadingBatch,
)
from cityvitals.settings import Settings
from cityvitals.topics import Topic
from sinks.postgres import (
    AlertSink,
    CameraEventSink,
    DeadLetterSink,
    IndicatorSink,
    ReadingSink,
    SinkUnavailable,
)

__all__ = ["SinkRunner"]

log = logging.getLogger("cityvitals.sinks")


@dataclass
class _Batch:
    readings: list[Reading] = field(default_factory=list)
    camera_events: list[CameraEvent] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    indicators: list[Indicator] = field(default_factory=list)
    dead_letters: list[tuple[str, int, int, DeadLetter]] = field(default_factory=list)


class SinkRunner:
    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        producer: Producer,
        readings: ReadingSink,
        camera_events: CameraEventSink,
        alerts: AlertSink,
        dead_letters: DeadLetterSink,
        registry: CollectorRegistry,
        indicators: IndicatorSink | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.readings, self.camera_events = readings, camera_events
        self.alerts, self.dead_letters = alerts, dead_letters
        self.indicators = indicators
        self.topics = {
            settings.topic(Topic.READINGS): Topic.READINGS,
            settings.topic(Topic.ALERTS): Topic.ALERTS,
            settings.topic(Topic.DEADLETTER): Topic.DEADLETTER,
        }
        if indicators is not None:
            self.topics[settings.topic(Topic.INDICATORS)] = Topic.INDICATORS
        self.received = Counter(
            "cityvitals_sinks_messages_total",
            "Kafka messages consumed",
            ["topic"],
            registry=registry,
        )
        self.written = Counter(
            "cityvitals_sinks_rows_total", "Rows newly written", ["table"], registry=registry
        )
        self.ready = Gauge(
            "cityvitals_sinks_ready", "1 while partitions are assigned", registry=registry
        )
        self.rejected = Counter(
            "cityvitals_sinks_rejected_total",
            "Messages that did not decode (dead-lettered)",
            ["topic"],
            registry=registry,
        )

    def _decode(self, msg: Message, batch: _Batch) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        value = msg.value() or b""
        kind = self.topics[topic]
        self.received.labels(kind.value).inc()
        try:
            if kind is Topic.READINGS:
                decoded = ReadingBatch.model_validate_json(value)
                batch.readings.extend(decoded.readings)
                batch.camera_events.extend(decoded.camera_events)
            elif kind is Topic.ALERTS:
                batch.alerts.append(Alert.model_validate_json(value))
            elif kind is Topic.INDICATORS:
                batch.indicators.append(Indicator.model_validate_json(value))
            else:
                letter = DeadLetter.model_validate_json(value)
                batch.dead_letters.append((topic, partition, offset, letter))
        except ValidationError as exc:
            self.rejected.labels(kind.value).inc()
            refused = DeadLetter(
                stage="sinks",
                reason=str(exc)[:2000],
                source=f"{topic}[{partition}]@{offset}",
                payload_b64=base64.b64encode(value).decode(),
                received_at=datetime.now(UTC),
            )
            if kind is Topic.DEADLETTER:
                # A dead letter that is itself malformed: keep its bytes as a dead letter row.
                batch.dead_letters.append((topic, partition, offset, refused))
            else:
                self.producer.produce(
                    self.settings.topic(Topic.DEADLETTER), refused.model_dump_json().encode()
                )

    def _retry(self, table: str, write: Callable[[], int], stop: threading.Event) -> None:
        """Write until the database takes it; only ``stop`` ends the wait (re-raising)."""
        while True:
            try:
                self.written.labels(table).inc(write())
                return
            except SinkUnavailable as exc:
                log.warning("%s; retrying in %.1f s", exc, exc.retry_after)
                if stop.wait(exc.retry_after):
                    raise

    def _write(self, batch: _Batch, stop: threading.Event) -> None:
        self._retry("readings", lambda: self.readings.write_batch(batch.readings), stop)
        self._retry(
            "camera_events", lambda: self.camera_events.write_batch(batch.camera_events), stop
        )
        self._retry("alerts", lambda: self.alerts.write_batch(batch.alerts), stop)
        if self.indicators is not None:
            sink = self.indicators
            self._retry("indicators", lambda: sink.write_batch(batch.indicators), stop)
        self._retry("deadletters", lambda: self.dead_letters.write_batch(batch.dead_letters), stop)
        if self.producer.flush(30):
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "dead letters unconfirmed"))

    def run_once(self, stop: threading.Event) -> int:
        """Consume one batch, write it, commit; returns the messages consumed."""
        s = self.settings
        messages = self.consumer.consume(s.sink_batch_max, timeout=s.sink_linger_ms / 1000)
        batch = _Batch()
        consumed = 0
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", error)
                continue
            consumed += 1
            self._decode(msg, batch)
        if consumed:
            self._write(batch, stop)
            self.consumer.commit(asynchronous=False)
        return consumed

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe(
            list(self.topics),
            on_assign=lambda _c, _parts: self.ready.set(1),
            on_revoke=lambda _c, _parts: self.ready.set(0),
        )
        try:
            while not stop.is_set():
                self.run_once(stop)
        finally:
            self.consumer.close()
            for sink in (self.readings, self.camera_events, self.alerts, self.dead_letters):
                sink.close()
