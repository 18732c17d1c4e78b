"""The notifier service: dispatch orders and escalations from Kafka to every webhook URL.

It follows ``dispatch`` (:class:`~cityvitals.contracts.DispatchOrder`) and ``escalations``
(:class:`~cityvitals.contracts.Escalation`) and POSTs each message, signed, to every URL of
``webhook_urls`` (:mod:`sinks.webhook` says how, and which failures are tried again). Messages
are taken one at a time, in their partitions' order, and a message's offset is committed only
once it was delivered to every URL or dead-lettered: nothing is lost, and a restart may send a
message again (receivers drop a repeated ``X-Cityvitals-Delivery``).

- A message that is not its topic's contract goes to ``deadletter`` with the validation error.
- A delivery that fails for good (a final answer, or ``webhook_attempts`` tries used) goes to
  ``deadletter`` with the URL, the status or error and the tries, one dead letter per URL that
  failed; the other URLs still get the message and the next message goes on.

Metrics (:class:`~cityvitals.stage.StageMetrics`, stage ``notify``, counting Kafka messages):
received = forwarded (delivered to every URL) + rejected{reason=contract|delivery}; per URL
delivery ``cityvitals_notify_deliveries_total{outcome=delivered|failed}``; tries after the
first ``cityvitals_notify_retries_total``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from cityvitals import kafka
from cityvitals.contracts import DeadLetter
from cityvitals.settings import Settings
from cityvitals.stage import StageMetrics, Transient, dead_letter, kafka_source, retry
from cityvitals.topics import Topic
from sinks.webhook import (
    EVENTS,
    Delivery,
    Notice,
    Post,
    backoff_s,
    deliver,
    http_post,
    notice,
    public_url,
)

__all__ = ["GROUP", "Notifier", "longest_delivery_s", "run"]

log = logging.getLogger("cityvitals.notify")

GROUP = "cityvitals_notify"
"""The consumer group (the deployment's topic prefix is applied)."""
POLL_S = 0.5
CONTRACTS = {Topic.DISPATCH: "DispatchOrder", Topic.ESCALATIONS: "Escalation"}


def longest_delivery_s(settings: Settings) -> float:
    """The longest one message can take: every URL failing every try after the full timeout.

    >>> longest_delivery_s(Settings(webhook_urls=("http://127.0.0.1/a",), webhook_attempts=3,
    ...     webhook_timeout_s=2, webhook_backoff_s=1, webhook_backoff_max_s=10))
    9.0
    """
    s = settings
    waits = sum(
        backoff_s(n, s.webhook_backoff_s, s.webhook_backoff_max_s)
        for n in range(1, s.webhook_attempts)
    )
    return len(s.webhook_urls) * (s.webhook_attempts * s.webhook_timeout_s + waits)


class Notifier:
    """Consume ``dispatch`` and ``escalations`` and deliver each message to every URL."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        producer: Producer,
        registry: CollectorRegistry,
        post: Post = http_post,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.post = post
        self.topics = {settings.topic(t): t for t in EVENTS}
        self._deadletter = settings.topic(Topic.DEADLETTER)
        self.metrics = StageMetrics("notify", registry, "Kafka messages")
        self.deliveries = self.metrics.counter(
            "deliveries_total", "Webhook deliveries (one per message and URL)", "outcome"
        )
        self.retries = self.metrics.counter("retries_total", "Webhook tries after the first")

    def _deliver(self, url: str, message: Notice, stop: threading.Event) -> Delivery | None:
        s = self.settings
        return deliver(
            url,
            message,
            secret=s.webhook_secret.get_secret_value(),
            attempts=s.webhook_attempts,
            timeout_s=s.webhook_timeout_s,
            first_backoff_s=s.webhook_backoff_s,
            max_backoff_s=s.webhook_backoff_max_s,
            post=self.post,
            wait=stop.wait,
        )

    def _send(self, letters: Sequence[DeadLetter]) -> None:
        """Publish dead letters and wait for Kafka to confirm them."""
        failures: list[str] = []

        def confirmed(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for letter in letters:
            self.producer.produce(
                self._deadletter, letter.model_dump_json().encode(), on_delivery=confirmed
            )
        left = self.producer.flush(30)
        if left or failures:
            raise kafka.KafkaUnavailable(
                self.settings.kafka_bootstrap,
                f"{left + len(failures)} dead letters unconfirmed: {failures[:3]}",
            )

    def _dead_letter(self, letters: Sequence[DeadLetter], stop: threading.Event) -> bool:
        """Send ``letters`` until Kafka confirms them; False if the service stopped first."""
        try:
            retry(lambda: self._send(letters), stop)
        except Transient:
            if stop.is_set():
                return False
            raise
        return True

    def handle(self, msg: Message, stop: threading.Event) -> bool:
        """Deliver one message to every URL, or dead-letter it. True when it is settled (its
        offset may be committed); False when the service stopped before."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        kind, value = self.topics[topic], msg.value() or b""
        source = kafka_source(topic, partition, offset)
        self.metrics.received.inc()
        try:
            message = notice(kind, value)
        except ValidationError as exc:
            reason = f"not a {CONTRACTS[kind]}: {exc}"
            log.warning("%s: %s", source, reason)
            if not self._dead_letter([dead_letter("notify", reason, value, source)], stop):
                return False
            self.metrics.refuse("contract")
            return True
        failed: list[Delivery] = []
        for url in self.settings.webhook_urls:
            result = self._deliver(url, message, stop)
            if result is None:
                log.info("stopping: %s to %s is not settled", source, public_url(url))
                return False
            self.retries.inc(result.attempts - 1)
            self.deliveries.labels("delivered" if result.delivered else "failed").inc()
            if not result.delivered:
                log.warning("%s %s: %s", message.event, message.delivery_id, result.reason())
                failed.append(result)
        if failed:
            letters = [dead_letter("notify", d.reason(), value, source) for d in failed]
            if not self._dead_letter(letters, stop):
                return False
            self.metrics.refuse("delivery")
        else:
            self.metrics.forwarded.inc()
        return True

    def run_once(self, stop: threading.Event) -> int:
        """Take one message, settle it and commit its offset; returns the messages settled."""
        for msg in kafka.consume_batch(self.consumer, 1, POLL_S):
            if not self.handle(msg, stop):
                return 0
            self.consumer.commit(message=msg, asynchronous=False)
            return 1
        return 0

    def _assigned(self, _consumer: Consumer, _parts: list[TopicPartition]) -> None:
        self.metrics.ready.set(1)

    def _revoked(self, _consumer: Consumer, _parts: list[TopicPartition]) -> None:
        self.metrics.ready.set(0)

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe(
            list(self.topics), on_assign=self._assigned, on_revoke=self._revoked
        )
        log.info(
            "notifying %s of %s",
            ", ".join(public_url(u) for u in self.settings.webhook_urls),
            ", ".join(self.topics),
        )
        try:
            while not stop.is_set():
                self.run_once(stop)
        finally:
            self.metrics.ready.set(0)
            self.consumer.close()


def run(settings: Settings, registry: CollectorRegistry, stop: threading.Event) -> None:
    """The notifier until ``stop`` is set. The consumer may wait between two messages as long
    as one delivery can take (every URL, every try) without leaving its group."""
    poll_ms = int(max(300.0, longest_delivery_s(settings) + 60.0) * 1000)
    consumer = kafka.consumer(
        settings, settings.topic(GROUP), **{"max.poll.interval.ms": min(poll_ms, 86_400_000)}
    )
    Notifier(settings, consumer, kafka.producer(settings), registry).run(stop)
