"""confluent-kafka clients configured the way every cityvitals stage needs them."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from cityvitals.data_classes import retention_cap
from cityvitals.settings import Settings
from cityvitals.stage import Transient
from cityvitals.topics import TOPICS

__all__ = [
    "KafkaUnavailable",
    "committed",
    "consume_batch",
    "consumer",
    "ensure_topics",
    "lag",
    "partition_count",
    "producer",
]

log = logging.getLogger("cityvitals.kafka")


class KafkaUnavailable(Transient):
    """The Kafka cluster did not answer in time; the caller may retry."""

    def __init__(self, bootstrap: str, detail: str) -> None:
        super().__init__(f"Kafka at {bootstrap} is unavailable: {detail}")
        self.bootstrap = bootstrap
        self.detail = detail


QUIET: dict[str, Any] = {"log.connection.close": False}
"""A connection the broker closed (idle, or stopping: every 'cityvitals down' printed one) is
not logged; a connection that fails still is."""


def producer(settings: Settings, **overrides: Any) -> Producer:
    """A producer that waits for every in-sync replica (``acks=all``) and keeps a partition's
    order through retries (one request in flight per broker).

    It is not Kafka's idempotent producer: a retry is written again, and every consumer folds
    the duplicate (each write downstream is an upsert on a natural key). The idempotent one
    lost batches when the broker crashed: tansu, killed with a produce request in flight,
    answered the retry with ``DuplicateSequenceNumber`` ("already written"), which the
    producer takes as delivered, yet the batch was in no partition
    (``tests/integration/test_broker_restart.py``).
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
        "message.max.bytes": 4_000_000,
        **QUIET,
    }
    config.update(overrides)
    return Producer(config)


def consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A consumer that commits only what the caller says it has processed."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(settings.kafka_session_timeout_ms // 3, 500),
        # Some brokers ignore the per-partition fetch limit; without this librdkafka pauses 1 s.
        "fetch.queue.backoff.ms": 10,
        "partition.assignment.strategy": "range",
        **QUIET,
    }
    config.update(overrides)
    return Consumer(config)


def committed(
    consumer: Consumer,
    parts: list[TopicPartition],
    bootstrap: str,
    tries: int = 10,
    timeout: float = 30.0,
) -> list[TopicPartition]:
    """The consumer's group's committed offsets of ``parts`` (negative: none), asked again
    while the broker answers a partition with an error (a group just made, a coordinator
    loading), which must not read as "never committed"; raises KafkaUnavailable when it still
    does."""
    failed: list[str] = []
    for attempt in range(tries):
        if attempt:
            time.sleep(0.5)
        try:
            found = consumer.committed(parts, timeout=timeout)
        except KafkaException as exc:
            failed = [str(exc)]
            continue
        failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in found if tp.error]
        if not failed:
            return list(found)
    raise KafkaUnavailable(bootstrap, f"committed offsets unreadable: {'; '.join(failed)}")


def lag(reader: Consumer, topics: list[str], bootstrap: str, timeout: float = 5.0) -> int:
    """The messages of ``topics`` that ``reader``'s group has not committed past (a partition
    it has committed nothing on: all the partition holds), each partition's at least 0 (a
    broker may report a partition's end short of a committed offset). Each call to Kafka waits
    ``timeout`` s at most; raises KafkaUnavailable when Kafka does not answer."""
    try:
        parts = [
            TopicPartition(topic, p)
            for topic in topics
            for p in range(partition_count(reader, topic, timeout))
        ]
        left = 0
        for tp in committed(reader, parts, bootstrap, tries=1, timeout=timeout):
            low, high = reader.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout
            )
            left += max(0, high - max(tp.offset, low))
        return left
    except KafkaException as exc:
        raise KafkaUnavailable(bootstrap, f"lag: {exc}") from None


def consume_batch(client: Consumer, count: int, timeout: float, idle: float = 0.0) -> list[Message]:
    """Up to ``count`` messages within ``timeout`` seconds, without the error events (the end
    of a partition is skipped silently, any other error is logged: librdkafka recovers).

    With ``idle``, what came goes as soon as nothing more came for ``idle`` seconds: a burst
    is handed on when it ends, not at the timeout, and a steady flow still fills batches.

    >>> class Quiet:  # a message, then silence
    ...     def __init__(self): self.calls = []
    ...     def consume(self, n, timeout):
    ...         self.calls.append(timeout)
    ...         return [Good()] if len(self.calls) == 1 else []
    >>> class Good:
    ...     def error(self): return None
    >>> quiet = Quiet()
    >>> len(consume_batch(quiet, 10, 5.0, idle=0.01)), quiet.calls
    (1, [0.01, 0.01])
    """
    good: list[Message] = []
    deadline = time.monotonic() + timeout
    left = timeout
    while True:  # at least one call: a timeout of 0 takes what is there
        wait = min(left, idle) if idle else left
        messages = client.consume(count - len(good), timeout=max(wait, 0.0))
        for msg in messages:
            error = msg.error()
            if error is None:
                good.append(msg)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", error)
        left = deadline - time.monotonic()
        if not idle or len(good) >= count or left <= 0 or (good and not messages):
            break
    return good


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create every cityvitals topic that does not exist yet; returns the names created.

    A topic's ``retention.ms`` is its own, shortened by its data class's retention
    (``CITYVITALS_RETENTION_<CLASS>_DAYS``); a topic that exists keeps what it was given."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailable(settings.kafka_bootstrap, str(exc)) from exc
    wanted = [
        NewTopic(
            settings.topic(spec.topic),
            num_partitions=spec.partitions or settings.kafka_partitions,
            replication_factor=settings.kafka_replication,
            config=spec.config(retention_cap(settings, spec.data_class)),
        )
        for spec in TOPICS
        if settings.topic(spec.topic) not in existing
    ]
    if not wanted:
        return []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise KafkaUnavailable(settings.kafka_bootstrap, f"creating {name}: {exc}") from exc
    return [t.topic for t in wanted]


def partition_count(client: Producer | Consumer, topic: str, timeout: float = 30.0) -> int:
    """How many partitions a topic has, as the cluster says; raises if it does not exist."""
    try:
        meta = client.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise KafkaUnavailable("cluster", str(exc)) from exc
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaUnavailable("cluster", f"topic {topic} does not exist; run 'cityvitals topics'")
    return len(meta.partitions)
