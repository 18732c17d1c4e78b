"""The webhook notifier on real parts: messages produced to tansu's ``dispatch`` and
``escalations`` topics reach a local HTTP server (``http.server`` on 127.0.0.1), signed; a
failing delivery lands on ``deadletter`` and the next message still goes through; a URL that
is down holds back only its own lane, and gets every message once it is back.

Each test has topics of its own (a fresh prefix) and runs the notifier (:func:`sinks.notifier.run`,
a lane per URL) in a thread; waits and timeouts are kept small through the settings.
"""

from __future__ import annotations

import base64
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from typer.testing import CliRunner

from cityvitals import db, kafka
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
from sinks.notifier import GROUP, lane_group, run
from sinks.postgres import DeadLetterSink
from sinks.webhook import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify_signature
from tests.integration.conftest import Pipeline, free_port, wait_for
from wiring import audit
from wiring.audit import Line
from wiring.cli import app
from wiring.cli_audit import read_stored

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
def http_receiver(port: int = 0) -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.answer(self.path, dict(self.headers.items()), body)
            said = b"" if status < 300 else b"unknown department: street-ops\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(said)))
            self.end_headers()
            self.wfile.write(said)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def notify_settings(pipeline: Pipeline, *urls: str, retry_for_s: float = 0.5) -> Settings:
    settings = pipeline.settings.model_copy(
        update={
            "topic_prefix": f"nt{uuid.uuid4().hex[:8]}",
            "webhook_urls": urls,
            "webhook_secret": SecretStr(SECRET),
            "webhook_timeout_s": 2.0,
            "webhook_retry_for_s": retry_for_s,
            "webhook_backoff_s": 0.05,
            "webhook_backoff_max_s": 0.2,
        }
    )
    kafka.ensure_topics(settings)
    return settings


@contextmanager
def running_notifier(settings: Settings) -> Iterator[CollectorRegistry]:
    """The notifier service in a thread; yields its metrics' registry."""
    stop, registry = threading.Event(), CollectorRegistry()
    thread = threading.Thread(target=run, args=(settings, registry, stop), daemon=True)
    thread.start()
    try:
        yield registry
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

        wait_for(read, 90, f"{count} dead letters")  # a new group joins tansu first
    finally:
        consumer.close()
    return found


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A metric of the notifier: ``cityvitals_notify_<name>``."""
    value = registry.get_sample_value(f"cityvitals_notify_{name}", labels)
    return 0.0 if value is None else value


def reconciles(registry: CollectorRegistry) -> bool:
    """received = forwarded + rejected, summed over the lanes."""
    rejected = sum(
        s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "cityvitals_notify_rejected_total"
    )
    received = sample(registry, "received_total")
    return received > 0 and received == sample(registry, "forwarded_total") + rejected


def committed(settings: Settings, topic: Topic, url: str, group: str | None = None) -> int:
    """The offsets the lane of ``url`` committed on ``topic`` (or ``group``'s), summed over
    its partitions."""
    consumer = kafka.consumer(settings, settings.topic(group or lane_group(url)))
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
        with running_notifier(settings) as metrics:
            wait_for(lambda: sample(metrics, "ready") == 1, 30, "both lanes ready")
            wait_for(lambda: len(receiver.requests) >= 4, 30, "4 deliveries")
            wait_for(lambda: reconciles(metrics), 30, "the counters to reconcile")
        for url in settings.webhook_urls:  # each lane commits its own
            assert committed(settings, Topic.DISPATCH, url) == 1
            assert committed(settings, Topic.ESCALATIONS, url) == 1

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
    assert sample(metrics, "forwarded_total") == 4  # two messages, two URLs
    assert sample(metrics, "ready") == 0  # stopped


def test_a_server_answering_500_twice_gets_the_message_once_after_retries(
    pipeline: Pipeline,
) -> None:
    with http_receiver() as (receiver, base):
        settings = notify_settings(pipeline, f"{base}/hook", retry_for_s=30)
        sent = order()
        receiver.script[sent.dispatch_id] = [500, 500]
        produce(settings, Topic.DISPATCH, sent.model_dump_json().encode())
        with running_notifier(settings) as metrics:
            wait_for(lambda: sample(metrics, "forwarded_total") == 1, 30, "the delivery")

    tries = receiver.of(sent.dispatch_id)
    assert [r.status for r in tries] == [500, 500, 200]
    assert all(verify_signature(SECRET, r.signature, r.body, 60) for r in tries)
    assert sample(metrics, "retries_total") == 2
    assert reconciles(metrics)
    assert sample(metrics, "rejected_total", reason="delivery") == 0


def test_a_refused_delivery_is_dead_lettered_and_the_next_message_goes_through(
    pipeline: Pipeline,
) -> None:
    with http_receiver() as (receiver, base):
        settings = notify_settings(pipeline, f"{base}/hook?key=private")
        refused, after = order("refused"), order("after")
        receiver.script[refused.dispatch_id] = [400]
        raw = refused.model_dump_json().encode()
        produce(settings, Topic.DISPATCH, raw, after.model_dump_json().encode())
        with running_notifier(settings) as metrics:
            wait_for(lambda: receiver.of(after.dispatch_id), 30, "the next message")
            wait_for(lambda: reconciles(metrics), 30, "the counters to reconcile")

    assert [r.status for r in receiver.of(refused.dispatch_id)] == [400]  # not retried
    [letter] = dead_letters(settings, 1)
    assert (letter.stage, letter.cause) == ("notify", "delivery")
    # the receiver's answer says what it found wrong; the URL's key is not named
    said = '"unknown department: street-ops"'
    assert letter.reason == f"webhook {base}/hook: HTTP 400 ({said}) after 1 attempt"
    assert base64.b64decode(letter.payload_b64) == raw
    assert letter.source.startswith(settings.topic(Topic.DISPATCH))
    assert sample(metrics, "rejected_total", reason="delivery") == 1
    assert sample(metrics, "forwarded_total") == 1
    assert committed(settings, Topic.DISPATCH, settings.webhook_urls[0]) == 2


def test_an_unreachable_url_is_dead_lettered_when_its_time_is_up_and_others_still_get_it(
    pipeline: Pipeline,
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/down"
    with http_receiver() as (receiver, base):
        settings = notify_settings(pipeline, unreachable, f"{base}/up", retry_for_s=0.5)
        first, second = escalation(), escalation()
        raws = [first.model_dump_json().encode(), second.model_dump_json().encode()]
        produce(settings, Topic.ESCALATIONS, *raws, key="k")
        with running_notifier(settings) as metrics:
            wait_for(lambda: len(receiver.requests) == 2, 30, "both messages at the good URL")
            wait_for(
                lambda: sample(metrics, "rejected_total", reason="delivery") == 2,
                30,
                "both dead-lettered for the unreachable URL",
            )
            wait_for(lambda: reconciles(metrics), 30, "the counters to reconcile")

    letters = dead_letters(settings, 2)
    # deadletter has several partitions: its order is not the topics' order
    assert sorted(base64.b64decode(d.payload_b64) for d in letters) == sorted(raws)
    for letter in letters:
        assert letter.stage == "notify"
        assert letter.reason.startswith(f"webhook {unreachable}: ")
        assert re.search(r" after \d+ attempts over \d+ s$", letter.reason), letter.reason
        assert "Connection" in letter.reason or "refused" in letter.reason
    assert sample(metrics, "retries_total") >= 2
    assert sample(metrics, "forwarded_total") == 2


def test_a_url_that_is_down_holds_back_only_its_lane_and_gets_every_message_when_back(
    pipeline: Pipeline,
) -> None:
    """A receiver down for a while (a deploy, a gateway restart) is waited out: the other
    URL's lane goes on meanwhile, and nothing is dead-lettered."""
    port = free_port()
    with http_receiver() as (up, base):
        settings = notify_settings(
            pipeline, f"http://127.0.0.1:{port}/sms", f"{base}/chat", retry_for_s=120
        )
        orders = [order("first"), order("second")]
        produce(settings, Topic.DISPATCH, *(o.model_dump_json().encode() for o in orders))
        with running_notifier(settings) as metrics:
            wait_for(lambda: len(up.requests) == 2, 30, "both orders at the URL that is up")
            wait_for(
                lambda: sample(metrics, "failing", url=f"http://127.0.0.1:{port}/sms") == 1,
                30,
                "the URL that is down to be tried again",
            )
            assert committed(settings, Topic.DISPATCH, settings.webhook_urls[0]) == 0
            with http_receiver(port) as (back, _):
                wait_for(lambda: len(back.requests) == 2, 30, "both orders once it is back")
                wait_for(lambda: reconciles(metrics), 30, "the counters to reconcile")
            assert sample(metrics, "failing", url=f"http://127.0.0.1:{port}/sms") == 0
        for url in settings.webhook_urls:
            assert committed(settings, Topic.DISPATCH, url) == 2

    assert [r.delivery_id for r in back.requests] == [o.dispatch_id for o in orders]  # in order
    assert sample(metrics, "rejected_total", reason="delivery") == 0
    assert sample(metrics, "forwarded_total") == 4
    assert sample(metrics, "retries_total") >= 1


def test_a_new_lane_starts_at_the_cursor_so_an_upgrade_sends_nothing_twice(
    pipeline: Pipeline,
) -> None:
    """An upgrade from the notifier of one group for all URLs sends nothing twice: the lane
    of a URL takes that group's committed offsets (the cursor) when its own group has none."""
    with http_receiver() as (receiver, base):
        settings = notify_settings(pipeline, f"{base}/hook")
        before, after = order("delivered before the upgrade"), order("after")
        name = settings.topic(Topic.DISPATCH)
        producer = kafka.producer(settings)
        for sent in (before, after):
            producer.produce(name, sent.model_dump_json().encode(), partition=0)
        assert producer.flush(30) == 0
        # the old notifier had delivered the first message and committed past it
        old = kafka.consumer(settings, settings.topic(GROUP))
        try:
            old.commit(offsets=[TopicPartition(name, 0, 1)], asynchronous=False)
        finally:
            old.close()
        with running_notifier(settings) as metrics:
            wait_for(lambda: receiver.of(after.dispatch_id), 30, "the message after")
            wait_for(lambda: reconciles(metrics), 30, "the counters to reconcile")

    assert receiver.of(before.dispatch_id) == []
    assert sample(metrics, "received_total") == 1
    assert committed(settings, Topic.DISPATCH, settings.webhook_urls[0]) == 2
    assert committed(settings, Topic.DISPATCH, "", group=GROUP) == 2  # the cursor moved on


def test_a_url_added_later_gets_what_is_dispatched_from_then_on(pipeline: Pipeline) -> None:
    """A receiver added to a running city does not get every order the topics still hold:
    its lane starts at the cursor. A gateway's key changing in its URL keeps its lane."""
    with http_receiver() as (first, base), http_receiver() as (added, other):
        settings = notify_settings(pipeline, f"{base}/hook")
        earlier = order("before the second receiver")
        produce(settings, Topic.DISPATCH, earlier.model_dump_json().encode())
        with running_notifier(settings) as metrics:
            wait_for(lambda: first.of(earlier.dispatch_id), 30, "the first order")
            wait_for(lambda: reconciles(metrics), 30, "the counters to reconcile")
        both = settings.model_copy(
            update={"webhook_urls": (f"{base}/hook?key=rotated", f"{other}/added")}
        )
        later = order("after")
        produce(settings, Topic.DISPATCH, later.model_dump_json().encode())
        with running_notifier(both) as metrics:
            wait_for(lambda: added.of(later.dispatch_id), 30, "the later order at the new URL")
            wait_for(lambda: first.of(later.dispatch_id), 30, "the later order at the first")
            wait_for(lambda: reconciles(metrics), 30, "the counters to reconcile")

    assert added.of(earlier.dispatch_id) == []  # not sent the order before it was added
    assert len(first.of(earlier.dispatch_id)) == 1  # the rotated key kept the lane's place
    assert sample(metrics, "received_total") == 2  # one message, two lanes


def test_what_the_notifier_gave_up_on_is_owed_until_resend_delivers_or_forgets_it(
    pipeline: Pipeline,
) -> None:
    """The dead letters of URLs that stayed down, stored by the dead letter sink, are owed:
    ``cityvitals audit`` counts them; ``cityvitals resend`` delivers them once the receiver is
    back (while it is down, they stay owed), each with its first delivery id, and forgets by
    hand those of a URL no longer configured."""
    port = free_port()
    down, gone = f"http://127.0.0.1:{port}/sms", f"http://127.0.0.1:{free_port()}/old"
    settings = notify_settings(pipeline, down, gone, retry_for_s=0.3).model_copy(
        update={"database_schema": f"nt{uuid.uuid4().hex[:12]}"}
    )
    db.migrate(settings)
    try:
        orders = [order("first"), order("second")]
        produce(settings, Topic.DISPATCH, *(o.model_dump_json().encode() for o in orders))
        with running_notifier(settings) as metrics:
            wait_for(
                lambda: sample(metrics, "rejected_total", reason="delivery") == 4,
                30,
                "both orders dead-lettered for both URLs",
            )
        sink = DeadLetterSink(db.connect(settings))
        try:
            assert sink.write(kept_letters(settings, 4)) == 4
        finally:
            sink.close()
        assert read_stored(settings, None).owed == 4
        [owed_line] = [line for line in reconcile_lines(settings) if "owed" in line.check]
        assert owed_line.ok is False and "cityvitals resend" in owed_line.detail
        now = settings.model_copy(update={"webhook_urls": (down,)})  # the old URL retired

        def resend(*args: str) -> Any:
            return CliRunner().invoke(app, ["resend", *args], env=now.to_env())

        listed = resend("--dry-run")
        assert listed.exit_code == 0, listed.output
        assert listed.output.count(": would be sent") == 2
        assert f"-> {down}: dispatch {orders[0].dispatch_id}: would be sent" in listed.output
        assert listed.output.count("the URL is not in CITYVITALS_WEBHOOK_URLS") == 2

        forgot = resend("--forget", "--url", "/old")
        assert forgot.exit_code == 0, forgot.output
        assert "2 forgotten, 0 not" in forgot.output
        assert read_stored(settings, None).owed == 2

        still = resend("--retry-for", "0.3")
        assert still.exit_code == 1, still.output
        assert "still not delivered" in still.output and "0 delivered, 2 not" in still.output
        assert "not sent: the URL did not take an earlier one" in still.output  # in order
        assert read_stored(settings, None).owed == 2

        with http_receiver(port) as (back, _):
            sent = resend()
            assert sent.exit_code == 0, sent.output
            assert "2 delivered, 0 not" in sent.output
        assert [r.delivery_id for r in back.requests] == [o.dispatch_id for o in orders]
        assert all(verify_signature(SECRET, r.signature, r.body, 60) for r in back.requests)
        assert read_stored(settings, None).owed == 0
        again = resend()
        assert again.exit_code == 0 and "nothing owed" in again.output
        with db.connect(settings) as conn:
            how = conn.execute(
                "SELECT how, count(*) FROM deadletters_resent GROUP BY how ORDER BY how"
            ).fetchall()
        assert how == [("delivered", 2), ("forgotten", 2)]
    finally:
        with db.connect(settings) as conn:
            conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def kept_letters(settings: Settings, count: int) -> list[tuple[str, int, int, DeadLetter]]:
    """The first ``count`` dead letters on ``deadletter``, with where each is kept."""
    consumer = kafka.consumer(settings, f"itest-{uuid.uuid4().hex}")
    consumer.subscribe([settings.topic(Topic.DEADLETTER)])
    found: list[tuple[str, int, int, DeadLetter]] = []
    try:

        def read() -> bool:
            for msg in kafka.consume_batch(consumer, 100, 0.2):
                letter = DeadLetter.model_validate_json(msg.value() or b"")
                found.append((msg.topic() or "", msg.partition() or 0, msg.offset() or 0, letter))
            return len(found) >= count

        wait_for(read, 90, f"{count} dead letters")  # a new group joins tansu first
    finally:
        consumer.close()
    return found


def reconcile_lines(settings: Settings) -> list[Line]:
    """The audit's checks of the database alone (no service counted)."""
    stored = read_stored(settings, None)
    return audit.reconcile(audit.Figures({}, stored, stored))
