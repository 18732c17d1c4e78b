"""The webhook notifier on real parts: messages produced to tansu's ``dispatch`` and
``escalations`` topics reach a local HTTP server (``http.server`` on 127.0.0.1), signed; a
failing delivery lands on ``deadletter`` and the next message still goes through.

Each test has topics of its own (a fresh prefix) and runs the notifier in a thread; waits and
timeouts are kept small through the settings.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from cityvitals import kafka
from cityvitals.contracts import (
    DeadLetter,
    DispatchKind,
    DispatchOrder,
    Escalation,
    Tier,
    WarningLevel,
)
from cityvitals.settings import Settings
from cityvitals.topics import Topic
from sinks.notifier import GROUP, Notifier
from sinks.webhook import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify_signature
from tests.integration.conftest import Pipeline, free_port, wait_for

pytestmark = pytest.mark.integration

SECRET = "itest-webhook-secret"


@dataclass
class Request:
    path: str
    event: str
    delivery_id: str
    signature: str
    body: bytes
    status: int


@dataclass
class Receiver:
    """A webhook receiver: answers each delivery id with its scripted statuses in turn (200
    once they run out, or always), and keeps every request."""

    script: dict[str, list[int]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            delivery_id = headers.get(DELIVERY_HEADER, "")
            statuses = self.script.get(delivery_id, [])
            status = statuses.pop(0) if statuses else 200
            self.requests.append(
                Request(
                    path,
                    headers.get(EVENT_HEADER, ""),
                    delivery_id,
                    headers.get(SIGNATURE_HEADER, ""),
                    body,
                    status,
                )
            )
            return status

    def of(self, delivery_id: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.delivery_id == delivery_id]


@contextmanager
def http_receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.answer(self.path, dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def notify_settings(pipeline: Pipeline, *urls: str, attempts: int = 3) -> Settings:
    settings = pipeline.settings.model_copy(
        update={
            "topic_prefix": f"nt{uuid.uuid4().hex[:8]}",
            "webhook_urls": urls,
            "webhook_secret": SecretStr(SECRET),
            "webhook_timeout_s": 2.0,
            "webhook_attempts": attempts,
            "webhook_backoff_s": 0.05,
            "webhook_backoff_max_s": 0.2,
        }
    )
    kafka.ensure_topics(settings)
    return settings


@contextmanager
def running_notifier(settings: Settings) -> Iterator[Notifier]:
    stop = threading.Event()
    notifier = Notifier(
        settings,
        kafka.consumer(settings, settings.topic(GROUP)),
        kafka.producer(settings),
        CollectorRegistry(),
    )
    thread = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield notifier
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def produce(settings: Settings, topic: Topic, *values: bytes, key: str = "street-ops") -> None:
    producer = kafka.producer(settings)
    for value in values:
        producer.produce(settings.topic(topic), value, key=key.encode())
    assert producer.flush(30) == 0


def order(title: str = "Flooding") -> DispatchOrder:
    now = datetime.now(UTC)
    return DispatchOrder(
        dispatch_id=uuid.uuid4().hex,
        kind=DispatchKind.ORDER,
        incident_id=uuid.uuid4().hex,
        department="street-ops",
        tier=Tier.STREET,
        tier_place_id="s1",
        category="flooding",
        level=WarningLevel.ORANGE,
        place_id="s1",
        place_path=("itest", "d1", "s1"),
        title=title,
        accept_by=now + timedelta(minutes=10),
        handle_by=now + timedelta(hours=4),
        ts=now,
    )


def escalation() -> Escalation:
    now = datetime.now(UTC)
    return Escalation(
        incident_id=uuid.uuid4().hex,
        from_tier=Tier.STREET,
        to_tier=Tier.DISTRICT,
        department="water",
        breach="accept",
        deadline=now - timedelta(seconds=1),
        ts=now,
    )


def dead_letters(settings: Settings, count: int) -> list[DeadLetter]:
    """The first ``count`` dead letters on the settings' ``deadletter`` topic."""
    consumer = kafka.consumer(settings, f"itest-{uuid.uuid4().hex}")
    consumer.subscribe([settings.topic(Topic.DEADLETTER)])
    found: list[DeadLetter] = []
    try:

        def read() -> bool:
            for msg in kafka.consume_batch(consumer, 100, 0.2):
                found.append(DeadLetter.model_validate_json(msg.value() or b""))
            return len(found) >= count

        wait_for(read, 30, f"{count} dead letters")
    finally:
        consumer.close()
    return found


def sample(notifier: Notifier, name: str, **labels: str) -> float:
    """A metric of the notifier: ``cityvitals_notify_<name>``."""
    value = notifier.metrics.registry.get_sample_value(f"cityvitals_notify_{name}", labels)
    return 0.0 if value is None else value


def committed(settings: Settings, topic: Topic) -> int:
    """The offsets the notifier's group committed on ``topic``, summed over its partitions."""
    consumer = kafka.consumer(settings, settings.topic(GROUP))
    try:
        name = settings.topic(topic)
        parts = [TopicPartition(name, p) for p in range(kafka.partition_count(consumer, name))]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def test_dispatch_orders_and_escalations_arrive_signed_at_every_url(pipeline: Pipeline) -> None:
    with http_receiver() as (receiver, base):
        settings = notify_settings(pipeline, f"{base}/sms", f"{base}/chat")
        sent_order, sent_escalation = order(), escalation()
        produce(settings, Topic.DISPATCH, sent_order.model_dump_json().encode())
        produce(
            settings,
            Topic.ESCALATIONS,
            sent_escalation.model_dump_json().encode(),
            key=sent_escalation.incident_id,
        )
        with running_notifier(settings) as notifier:
            wait_for(lambda: len(receiver.requests) >= 4, 30, "4 deliveries")
            wait_for(lambda: notifier.metrics.reconciles(), 30, "the counters to reconcile")
        assert committed(settings, Topic.DISPATCH) == 1
        assert committed(settings, Topic.ESCALATIONS) == 1

    assert len(receiver.requests) == 4
    assert sorted((r.path, r.event) for r in receiver.requests) == [
        ("/chat", "dispatch"),
        ("/chat", "escalation"),
        ("/sms", "dispatch"),
        ("/sms", "escalation"),
    ]
    for request in receiver.requests:
        assert verify_signature(SECRET, request.signature, request.body, 60)
        assert not verify_signature("not-the-secret", request.signature, request.body, 60)
        if request.event == "dispatch":
            assert DispatchOrder.model_validate_json(request.body) == sent_order
            assert request.delivery_id == sent_order.dispatch_id
        else:
            assert Escalation.model_validate_json(request.body) == sent_escalation
    escalation_ids = {r.delivery_id for r in receiver.requests if r.event == "escalation"}
    assert len(escalation_ids) == 1  # the same id at every URL
    assert sample(notifier, "forwarded_total") == 2


def test_a_server_answering_500_twice_gets_the_message_once_after_retries(
    pipeline: Pipeline,
) -> None:
    with http_receiver() as (receiver, base):
        settings = notify_settings(pipeline, f"{base}/hook", attempts=3)
        sent = order()
        receiver.script[sent.dispatch_id] = [500, 500]
        produce(settings, Topic.DISPATCH, sent.model_dump_json().encode())
        with running_notifier(settings) as notifier:
            wait_for(lambda: sample(notifier, "forwarded_total") == 1, 30, "the delivery")

    tries = receiver.of(sent.dispatch_id)
    assert [r.status for r in tries] == [500, 500, 200]
    assert all(verify_signature(SECRET, r.signature, r.body, 60) for r in tries)
    assert sample(notifier, "retries_total") == 2
    assert notifier.metrics.reconciles()
    assert sample(notifier, "rejected_total", reason="delivery") == 0


def test_a_refused_delivery_is_dead_lettered_and_the_next_message_goes_through(
    pipeline: Pipeline,
) -> None:
    with http_receiver() as (receiver, base):
        settings = notify_settings(pipeline, f"{base}/hook?key=private", attempts=3)
        refused, after = order("refused"), order("after")
        receiver.script[refused.dispatch_id] = [400]
        raw = refused.model_dump_json().encode()
        produce(settings, Topic.DISPATCH, raw, after.model_dump_json().encode())
        with running_notifier(settings) as notifier:
            wait_for(lambda: receiver.of(after.dispatch_id), 30, "the next message")
            wait_for(lambda: notifier.metrics.reconciles(), 30, "the counters to reconcile")

    assert [r.status for r in receiver.of(refused.dispatch_id)] == [400]  # not retried
    [letter] = dead_letters(settings, 1)
    assert letter.stage == "notify"
    assert letter.reason == f"webhook {base}/hook: HTTP 400 after 1 attempt"  # no key named
    assert base64.b64decode(letter.payload_b64) == raw
    assert letter.source.startswith(settings.topic(Topic.DISPATCH))
    assert sample(notifier, "rejected_total", reason="delivery") == 1
    assert sample(notifier, "forwarded_total") == 1
    assert committed(settings, Topic.DISPATCH) == 2


def test_an_unreachable_url_is_dead_lettered_after_its_attempts_and_others_still_get_it(
    pipeline: Pipeline,
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/down"
    with http_receiver() as (receiver, base):
        settings = notify_settings(pipeline, unreachable, f"{base}/up", attempts=2)
        first, second = escalation(), escalation()
        raws = [first.model_dump_json().encode(), second.model_dump_json().encode()]
        produce(settings, Topic.ESCALATIONS, *raws, key="k")
        with running_notifier(settings) as notifier:
            wait_for(lambda: len(receiver.requests) == 2, 30, "both messages at the good URL")
            wait_for(lambda: notifier.metrics.reconciles(), 30, "the counters to reconcile")

    letters = dead_letters(settings, 2)
    # deadletter has several partitions: its order is not the topics' order
    assert sorted(base64.b64decode(d.payload_b64) for d in letters) == sorted(raws)
    for letter in letters:
        assert letter.stage == "notify"
        assert letter.reason.startswith(f"webhook {unreachable}: ")
        assert letter.reason.endswith(" after 2 attempts")
        assert "Connection" in letter.reason or "refused" in letter.reason
    assert sample(notifier, "rejected_total", reason="delivery") == 2
    assert sample(notifier, "retries_total") == 2


def test_a_message_that_is_not_its_contract_is_dead_lettered_with_the_error(
    pipeline: Pipeline,
) -> None:
    with http_receiver() as (receiver, base):
        settings = notify_settings(pipeline, f"{base}/hook")
        after = order()
        produce(
            settings, Topic.DISPATCH, b'{"dispatch_id": "nope"}', after.model_dump_json().encode()
        )
        with running_notifier(settings) as notifier:
            wait_for(lambda: receiver.of(after.dispatch_id), 30, "the next message")
            wait_for(lambda: notifier.metrics.reconciles(), 30, "the counters to reconcile")

    [letter] = dead_letters(settings, 1)
    assert letter.stage == "notify"
    assert letter.reason.startswith("not a DispatchOrder: ")
    assert "dispatch_id" in letter.reason
    assert base64.b64decode(letter.payload_b64) == b'{"dispatch_id": "nope"}'
    assert len(receiver.requests) == 1
    assert sample(notifier, "rejected_total", reason="contract") == 1
