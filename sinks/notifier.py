"""The notifier service: dispatch orders and escalations from Kafka to every webhook URL.

It follows ``dispatch`` (:class:`~cityvitals.contracts.DispatchOrder`) and ``escalations``
(:class:`~cityvitals.contracts.Escalation`) and POSTs each message, signed, to every URL of
``webhook_urls`` (:mod:`sinks.webhook` says how, and which failures are tried again).

Each URL has a *lane*: its own consumer group (:func:`lane_group`, named by the URL without
its login or key, so a key can change) and thread, so a receiver that is down (its deliveries
tried again for up to ``webhook_retry_for_s``) holds back only its own messages. A lane takes
messages one at a time, in their partitions' order, and commits a message's offset only once
it was delivered to the URL or dead-lettered: nothing is lost, and a restart may send a
message again (receivers drop a repeated ``X-Cityvitals-Delivery``).

The group :data:`GROUP` is the notifier's *cursor*: each lane also commits there the furthest
position it reached. A lane whose group has committed nothing (a URL added, or the first start
after an upgrade from the notifier of one group for all URLs) starts where the cursor was when
the notifier started, so a new receiver gets what is dispatched from then on and an upgrade
sends nothing twice; with no cursor either (a new deployment), from the start of the topics.

- A message that is not its topic's contract goes to ``deadletter`` with the validation error
  (from every lane: it is refused once per URL).
- A delivery that fails for good (a final answer, or ``webhook_retry_for_s`` of tries) goes to
  ``deadletter`` with the URL, the status or error and the tries; the lane goes on with the
  next message. ``cityvitals resend`` sends such messages again.

Metrics (:class:`~cityvitals.stage.StageMetrics`, stage ``notify``, counting Kafka messages
once per URL): received = forwarded (delivered) + rejected{reason=contract|delivery}; per
delivery ``cityvitals_notify_deliveries_total{outcome=delivered|failed}``; tries after the
first ``cityvitals_notify_retries_total``; ``cityvitals_notify_failing{url}`` is 1 while a
URL's delivery is being tried again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from cityvitals import kafka
from cityvitals.contracts import DeadLetter
from cityvitals.problems import problems
from cityvitals.settings import Settings, public_url
from cityvitals.stage import StageMetrics, Transient, dead_letter, kafka_source, retry
from cityvitals.topics import Topic
from sinks.webhook import (
    EVENTS,
    Delivery,
    Notice,
    Post,
    deliver_as,
    duration,
    http_post,
    notice,
)

__all__ = [
    "GROUP",
    "Counts",
    "Notifier",
    "cursor",
    "lane_group",
    "longest_delivery_s",
    "run",
]

log = logging.getLogger("cityvitals.notify")

GROUP = "cityvitals_notify"
"""The notifier's cursor (the deployment's topic prefix is applied): the furthest position a
lane committed, where a new lane starts; the one group of all URLs before each had a lane."""
LOG_EVERY = 10
"""While a delivery keeps failing, every this many tries is logged (and the first)."""
POLL_S = 0.5
CONTRACTS = {Topic.DISPATCH: "DispatchOrder", Topic.ESCALATIONS: "Escalation"}


def lane_group(url: str) -> str:
    """The consumer group of one URL's lane (the topic prefix is applied to it too): a digest
    of the URL without its login, query or fragment (:func:`~cityvitals.settings.public_url`),
    so a gateway's key can change and the lane goes on where it was.

    >>> lane_group("http://127.0.0.1:8080/hook") == lane_group("http://u:k@127.0.0.1:8080/hook?a=1")
    True
    >>> lane_group("http://127.0.0.1:8080/hook")
    'cityvitals_notify.77038f203606'
    """
    return f"{GROUP}.{hashlib.sha256(public_url(url).encode()).hexdigest()[:12]}"


def longest_delivery_s(settings: Settings) -> float:
    """The longest one lane can take over a message: tries until ``webhook_retry_for_s``, the
    last one starting just before and waiting out its timeout.

    >>> longest_delivery_s(Settings(webhook_retry_for_s=600, webhook_timeout_s=5))
    605.0
    """
    return settings.webhook_retry_for_s + settings.webhook_timeout_s


class Counts:
    """The notifier's metrics, shared by its lanes, and whether every lane has partitions."""

    def __init__(self, registry: CollectorRegistry, lanes: int) -> None:
        self.metrics = StageMetrics("notify", registry, "Kafka messages (once per URL)")
        self.deliveries = self.metrics.counter(
            "deliveries_total", "Webhook deliveries (one per message and URL)", "outcome"
        )
        self.retries = self.metrics.counter("retries_total", "Webhook tries after the first")
        self.failing = self.metrics.gauge(
            "failing", "1 while a delivery to the URL is being tried again", "url"
        )
        self._lanes = lanes
        self._assigned: set[str] = set()
        self._lock = threading.Lock()
        self._furthest: dict[tuple[str, int], int] = {}

    def further(self, topic: str, partition: int, offset: int) -> bool:
        """Whether ``offset`` (the next to read) is past every lane's on the partition, in
        this process: then it is the cursor's new position."""
        with self._lock:
            if offset <= self._furthest.get((topic, partition), -1):
                return False
            self._furthest[(topic, partition)] = offset
            return True

    def assigned(self, url: str, has: bool) -> None:
        """Lane ``url`` has partitions (``has``) or none: ready while every lane has some."""
        with self._lock:
            (self._assigned.add if has else self._assigned.discard)(url)
            self.metrics.ready.set(1 if len(self._assigned) == self._lanes else 0)


class Notifier:
    """One URL's lane: consume ``dispatch`` and ``escalations`` in its own group and deliver
    each message to the URL."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        consumer: Consumer,
        producer: Producer,
        counts: Counts,
        post: Post = http_post,
        start_at: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        self.settings = settings
        self.url = url
        self.consumer = consumer
        self.producer = producer
        self.counts = counts
        self.metrics = counts.metrics
        self.post = post
        self.topics = {settings.topic(t): t for t in EVENTS}
        self._deadletter = settings.topic(Topic.DEADLETTER)
        self._shown = public_url(url)
        self._cursor = kafka.consumer(settings, settings.topic(GROUP))
        """Commits the cursor (it never subscribes: it is no member of the group)."""
        self.start_at = start_at if start_at is not None else cursor(settings)
        """Where the cursor was when the notifier started, read once: where a partition new
        to this lane starts (read at its assignment, it could be past a message another,
        faster lane took since)."""

    def _failed(self, message: Notice, attempt: int, delivery: Delivery) -> None:
        """A try that will be tried again: counted, and the first and every
        :data:`LOG_EVERY` th logged."""
        self.counts.retries.inc()
        if attempt == 1:
            self.counts.failing.labels(self._shown).set(1)
        if attempt == 1 or attempt % LOG_EVERY == 0:
            left = self.settings.webhook_retry_for_s - delivery.seconds
            log.warning(
                "%s %s to %s: %s; trying again, for up to %s more",
                message.event,
                message.delivery_id,
                self._shown,
                delivery.outcome(),
                duration(left),
            )

    def _deliver(self, message: Notice, stop: threading.Event) -> Delivery | None:
        try:
            return deliver_as(
                self.settings,
                self.url,
                message,
                post=self.post,
                wait=stop.wait,
                failed=lambda attempt, delivery: self._failed(message, attempt, delivery),
            )
        finally:
            self.counts.failing.labels(self._shown).set(0)

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
        """Deliver one message to the URL, or dead-letter it. True when it is settled (its
        offset may be committed); False when the service stopped before."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        kind, value = self.topics[topic], msg.value() or b""
        source = kafka_source(topic, partition, offset)
        self.metrics.received.inc()
        try:
            message = notice(kind, value)
        except ValidationError as exc:
            reason = f"not a {CONTRACTS[kind]}: {': '.join(problems(exc))}"
            log.warning("%s: %s", source, reason)
            if not self._dead_letter(
                [dead_letter("notify", reason, value, source, cause="contract")], stop
            ):
                return False
            self.metrics.refuse("contract")
            return True
        result = self._deliver(message, stop)
        if result is None:
            log.info("stopping: %s to %s is not settled", source, self._shown)
            return False
        self.counts.deliveries.labels("delivered" if result.delivered else "failed").inc()
        if result.delivered:
            if result.attempts > 1:
                log.info(
                    "%s %s to %s: delivered after %d attempts over %s",
                    message.event,
                    message.delivery_id,
                    self._shown,
                    result.attempts,
                    duration(result.seconds),
                )
            self.metrics.forwarded.inc()
            return True
        log.warning("%s %s: %s", message.event, message.delivery_id, result.reason())
        letter = dead_letter("notify", result.reason(), value, source, cause="delivery")
        if not self._dead_letter([letter], stop):
            return False
        self.metrics.refuse("delivery")
        return True

    def run_once(self, stop: threading.Event) -> int:
        """Take one message, settle it and commit its offset (and the cursor's, when this
        lane is the furthest); returns the messages settled."""
        for msg in kafka.consume_batch(self.consumer, 1, POLL_S):
            if not self.handle(msg, stop):
                return 0
            self.consumer.commit(message=msg, asynchronous=False)
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            if self.counts.further(topic, partition, offset + 1):
                self._move_cursor(TopicPartition(topic, partition, offset + 1))
            return 1
        return 0

    def _move_cursor(self, to: TopicPartition) -> None:
        """Commit the cursor; a refusal (a notifier of the one group for all URLs still a
        member of it, during an upgrade) is logged, not raised: the cursor only says where a
        new lane starts, and the lane's own offsets are committed already."""
        try:
            self._cursor.commit(offsets=[to], asynchronous=False)
        except KafkaException as exc:
            log.warning("the cursor %s did not move: %s", self.settings.topic(GROUP), exc)

    def _assigned(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Partitions this lane's group never committed start where the cursor (:data:`GROUP`)
        was when the notifier started (``start_at``)."""
        mine = kafka.committed(consumer, parts, self.settings.kafka_bootstrap)
        fresh = {(tp.topic, tp.partition) for tp in mine if tp.offset < 0}
        moved = 0
        for tp in parts:
            at = self.start_at.get((tp.topic, tp.partition))
            if (tp.topic, tp.partition) in fresh and at is not None:
                tp.offset, moved = at, moved + 1
        if moved:
            consumer.assign(parts)
            log.info(
                "%s: %d partitions new to this lane start at the cursor %s",
                self._shown,
                moved,
                self.settings.topic(GROUP),
            )
        self.counts.assigned(self.url, True)

    def _revoked(self, _consumer: Consumer, _parts: list[TopicPartition]) -> None:
        self.counts.assigned(self.url, False)

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe(
            list(self.topics), on_assign=self._assigned, on_revoke=self._revoked
        )
        log.info("notifying %s of %s", self._shown, ", ".join(self.topics))
        try:
            while not stop.is_set():
                self.run_once(stop)
        finally:
            self.counts.assigned(self.url, False)
            self.consumer.close()
            self._cursor.close()


def cursor(settings: Settings) -> dict[tuple[str, int], int]:
    """The cursor's committed positions (:data:`GROUP`) on the notifier's topics."""
    reader = kafka.consumer(settings, settings.topic(GROUP))
    try:
        parts = [
            TopicPartition(name, p)
            for name in (settings.topic(t) for t in EVENTS)
            for p in range(kafka.partition_count(reader, name))
        ]
        found = kafka.committed(reader, parts, settings.kafka_bootstrap)
    finally:
        reader.close()
    return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}


def lane(
    settings: Settings, url: str, counts: Counts, start_at: Mapping[tuple[str, int], int]
) -> Notifier:
    """The lane of ``url``, its consumer in :func:`lane_group`. Its consumer may wait between
    two messages as long as one delivery can take without leaving its group."""
    poll_s = longest_delivery_s(settings) + settings.webhook_backoff_max_s + 60.0
    consumer = kafka.consumer(
        settings,
        settings.topic(lane_group(url)),
        **{"max.poll.interval.ms": min(int(poll_s * 1000), 86_400_000)},
    )
    return Notifier(settings, url, consumer, kafka.producer(settings), counts, start_at=start_at)


def run(settings: Settings, registry: CollectorRegistry, stop: threading.Event) -> None:
    """The notifier until ``stop`` is set: a lane per URL, each in a thread. A lane that fails
    stops the others, and its error is raised."""
    urls = settings.webhook_urls
    counts = Counts(registry, len(urls))
    start_at = cursor(settings)  # before any lane moves it
    lanes = [lane(settings, url, counts, start_at) for url in urls]
    errors: list[BaseException] = []

    def drive(one: Notifier) -> None:
        try:
            one.run(stop)
        except BaseException as exc:  # raised by run(), after the other lanes stopped
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=drive, args=(one,), name=f"notify-{n}", daemon=True)
        for n, one in enumerate(lanes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
