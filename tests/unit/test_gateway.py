"""The gateway's MQTT client and its Kafka messages, without a broker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry

from cityvitals.contracts import DeadLetter
from cityvitals.settings import Settings
from ingest import gateway as gateway_module
from ingest.gateway import _SOCKET_READS, Gateway, MqttClient, _Inbound, split


def queued(client: mqtt.Client) -> bytes:
    """What the client has queued for the broker (it has no connection, so nothing left)."""
    return b"".join(bytes(p["packet"][p["pos"] :]) for p in client._out_packet)  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_acknowledging_many_writes_the_packets_paho_writes_for_each(protocol: int) -> None:
    mids = [1, 2, 255, 256, 4000, 65535]
    one_by_one = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    for mid in mids:
        one_by_one.ack(mid, 1)
    together = MqttClient(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    together.ack_all(mids)
    assert len(together._out_packet) == 1  # type: ignore[attr-defined]
    assert queued(together) == queued(one_by_one) and len(queued(together)) == 4 * len(mids)


def test_acknowledging_none_writes_nothing() -> None:
    client = MqttClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.ack_all([])
    client.ack_all([0, 0])  # QoS 0 messages: a PUBACK would make the broker drop the gateway
    assert queued(client) == b""


@given(st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=60), st.integers(1, 400))
def test_a_group_is_split_in_order_into_messages_that_fit(items: list[bytes], limit: int) -> None:
    parts = list(split(items, b"|".join, limit))
    assert [i for part, _ in parts for i in part] == items  # each once, in order
    for part, message in parts:
        assert message == b"|".join(part)
        assert len(message) <= limit or len(part) == 1
    if len(b"|".join(items)) <= limit:
        assert len(parts) == 1


def any_publish(
    topic: str, payload: bytes, qos: int, mid: int, dup: bool, retain: bool, props: bytes | None
) -> bytes:
    """A PUBLISH packet; ``props`` is its MQTT 5 properties block as sent (None: MQTT 3.1.1,
    which has none)."""
    body = len(topic.encode()).to_bytes(2, "big") + topic.encode()
    body += (mid.to_bytes(2, "big") if qos else b"") + (props or b"") + payload
    length, remaining = b"", len(body)
    while True:
        byte, remaining = remaining % 128, remaining // 128
        length += bytes([byte | (128 if remaining else 0)])
        if not remaining:
            break
    return bytes([0x30 | dup << 3 | qos << 1 | retain]) + length + body


NO_PROPERTIES = b"\x00"


def publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 5 PUBLISH at QoS 0 (no properties)."""
    return any_publish(topic, payload, 0, 0, False, False, NO_PROPERTIES)


class Segments:
    """A non-blocking socket that has received ``chunks``: a read takes from the first one
    (up to the size asked), and raises when all are taken."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.reads = list(chunks), 0

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        self.reads += 1
        chunk = self.chunks.pop(0)
        if len(chunk) > size:
            self.chunks.insert(0, chunk[size:])
        return chunk[:size]

    def close(self) -> None:
        pass


def receiving(chunks: list[bytes]) -> tuple[MqttClient, Segments, list[tuple[str, bytes]]]:
    client = MqttClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    got: list[tuple[str, bytes]] = []
    client.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload)))
    sock = Segments(chunks)
    client._sock = sock  # type: ignore[assignment]
    return client, sock, got


def test_a_burst_of_messages_is_read_from_one_read_of_the_socket() -> None:
    packets = [publish_packet(f"cityvitals/d{i}/readings", b"x" * i) for i in range(50)]
    client, sock, got = receiving([b"".join(packets)])
    assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    assert got == [(f"cityvitals/d{i}/readings", b"x" * i) for i in range(50)]
    assert sock.reads == 1  # paho alone reads each packet's type, length and body apart


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=20),
    st.lists(st.integers(1, 400), min_size=1, max_size=40),
)
def test_messages_cut_anywhere_by_the_socket_arrive_whole_and_in_order(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(publish_packet(f"t/{i}", p) for i, p in enumerate(payloads))
    chunks, at = [], 0
    for cut in cuts * (len(stream) // sum(cuts) + 1):
        if at < len(stream):
            chunks.append(stream[at : at + cut])
            at += cut
    client, sock, got = receiving(chunks)
    while sock.chunks:
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    assert got == [(f"t/{i}", p) for i, p in enumerate(payloads)]


def test_one_wait_for_the_socket_delivers_every_message_it_read_and_reads_a_bounded_amount() -> (
    None
):
    packet = publish_packet("cityvitals/d/readings", b'{"pm25": 12.5}')
    burst = packet * 20_000  # about 800 KB waiting in the socket
    client, sock, got = receiving([burst])
    read = MqttClient.READ_BYTES * _SOCKET_READS
    assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    # Every message whole within what was read has arrived: a message read but left in the
    # client's buffer would wait, since paho waits on the socket and it may stay quiet.
    assert len(got) == read // len(packet) and sock.reads == _SOCKET_READS
    while sock.chunks:
        client.loop_read()
    assert len(got) == 20_000


_TYPED = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
_TYPED.ContentType = "application/json"
PROPERTIES = [NO_PROPERTIES, NO_PROPERTIES, _TYPED.pack(), b"\x80\x00"]  # type: ignore[no-untyped-call]
"""MQTT 5 properties blocks: none (what devices send), a content type, and none with its
length written in two bytes (allowed by the varint encoding; paho decodes it)."""


@st.composite
def publish_streams(draw: st.DrawFn) -> tuple[int, list[Any]]:
    """A protocol and PUBLISH packets of it: QoS 0, 1 and 2, duplicates, retained; in MQTT 5
    with or without properties and with empty topics (MQTT 3.1.1 refuses those)."""
    v5 = draw(st.booleans())
    topics = st.text(
        st.characters(codec="utf-8", exclude_characters="+#\x00"), min_size=int(not v5)
    )
    packet = st.tuples(
        topics,
        # Payloads starting with a zero byte: in MQTT 3.1.1 it sits where MQTT 5's empty
        # properties block would.
        st.tuples(st.sampled_from([b"", b"\x00"]), st.binary(max_size=200)).map(b"".join),
        st.sampled_from([0, 1, 1, 1, 2]),
        st.integers(1, 65535),
        st.booleans(),
        st.booleans(),
        st.sampled_from(PROPERTIES) if v5 else st.none(),
    )
    return (mqtt.MQTTv5 if v5 else mqtt.MQTTv311), draw(st.lists(packet, min_size=1, max_size=20))


def delivered(client: mqtt.Client, stream: bytes) -> tuple[list[Any], bytes]:
    """What ``client`` hands ``on_message`` from ``stream`` (each message's fields, its
    timestamp, and its properties: None, or as JSON), and what it queues to send."""
    got: list[Any] = []

    def seen(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        props = None if m.properties is None else m.properties.json()  # type: ignore[no-untyped-call]
        got.append((m.mid, m.topic, bytes(m.payload), m.qos, m.dup, m.retain, m.timestamp, props))

    client.on_message = seen
    client._sock = Segments([stream])  # type: ignore[assignment]
    while client._sock.chunks:  # type: ignore[union-attr]
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    return got, queued(client)


@given(publish_streams(), st.booleans())
def test_publish_packets_reach_on_message_as_paho_hands_them(
    streams: tuple[int, list[Any]], manual_ack: bool
) -> None:
    """The gateway's own path (MQTT 5, QoS 1, no properties, acknowledged by the caller) gives
    what paho gives, with no properties object; every other PUBLISH is paho's."""
    protocol, packets = streams
    stream = b"".join(any_publish(*p) for p in packets)
    ours = MqttClient(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=manual_ack)
    paho = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=manual_ack)
    with patch.object(mqtt, "time_func", lambda: 7.0):
        (got, sent), (want, paho_sent) = delivered(ours, stream), delivered(paho, stream)
    assert sent == paho_sent
    assert [g[:7] for g in got] == [w[:7] for w in want]
    fast = [
        protocol == mqtt.MQTTv5 and manual_ack and qos == 1 and props == NO_PROPERTIES
        for _t, _b, qos, _m, _d, _r, props in packets
        if qos < 2  # QoS 2 waits for the sender's release
    ]
    assert [g[7] is None for g in got] == [
        f or w[7] is None for f, w in zip(fast, want, strict=True)
    ]
    assert all(w[7] == {} for f, w in zip(fast, want, strict=True) if f)
    expected = [(mid if q else 0, t, b, q, dup, r) for t, b, q, mid, dup, r, _ in packets if q < 2]
    assert [g[:6] for g in got] == expected


@pytest.mark.parametrize("suppress", [False, True])
def test_an_exception_in_on_message_is_handled_as_paho_handles_it(suppress: bool) -> None:
    packet = any_publish("cityvitals/d/readings", b"{}", 1, 5, False, False, NO_PROPERTIES)
    outcomes = []
    for client in (
        MqttClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True),
        mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True),
    ):
        client.suppress_exceptions = suppress
        logged: list[str] = []
        client.on_log = lambda _c, _u, _level, text, logged=logged: logged.append(text)

        def broken(*_: Any) -> None:
            raise ValueError("a bug in on_message")

        client.on_message = broken
        client._sock = Segments([packet])  # type: ignore[assignment]
        try:
            outcome: Any = client.loop_read()
        except ValueError as exc:
            outcome = str(exc)
        outcomes.append((outcome, [t for t in logged if "on_message" in t]))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == (mqtt.MQTT_ERR_SUCCESS if suppress else "a bug in on_message")
    assert outcomes[0][1] == ["Caught exception in on_message: a bug in on_message"]


def test_what_a_broken_connection_left_unread_is_not_read_on_the_next() -> None:
    packet = publish_packet("t/a", b"reading")
    broken = b"\x30\xff\xff\xff\xff\xff"  # a length of more than four bytes
    client, _sock, got = receiving([packet + broken + packet])
    assert client.loop_read() == mqtt.MQTT_ERR_PROTOCOL  # and paho closes the socket
    client._in_packet = {  # type: ignore[attr-defined]  # as paho sets it on reconnecting
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }
    client._sock = Segments([publish_packet("t/b", b"next")])  # type: ignore[assignment]
    client.loop_read()
    assert got == [("t/a", b"reading"), ("t/b", b"next")]


class Clock:
    """The gateway's clock (whole microseconds, so waits add up exactly), moved on by the
    fake producer's waits."""

    def __init__(self) -> None:
        self.us = 1_000_000_000

    def monotonic(self) -> float:
        return self.us / 1e6


class WaitingProducer:
    """A producer with one topic of two partitions whose :meth:`poll` only lets time pass,
    and calls ``during`` each time (to make readings arrive)."""

    def __init__(self, clock: Clock, during: Callable[[], None] = lambda: None) -> None:
        self.clock, self.during = clock, during

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(error=None, partitions={0: None, 1: None})
        return SimpleNamespace(topics={topic: meta})

    def poll(self, timeout: float) -> int:
        self.clock.us += round(timeout * 1e6)
        self.during()
        return 0


def draining(
    monkeypatch: pytest.MonkeyPatch, idle_ms: int, arrive: Callable[[Gateway], None] | None = None
) -> tuple[Gateway, Clock]:
    """A gateway whose producer waits in 2 ms steps; an idle time of 9 ms keeps the check off
    the steps' exact boundary (float)."""
    clock = Clock()
    # the gateway's own clock only, not the time module everyone shares
    monkeypatch.setattr(gateway_module, "time", SimpleNamespace(monotonic=clock.monotonic))
    settings = Settings(
        ingest_linger_ms=100, ingest_idle_ms=idle_ms, ingest_idle_min=100, ingest_batch_max=500
    )
    producer = WaitingProducer(clock)
    gateway = Gateway(settings, producer, CollectorRegistry())  # type: ignore[arg-type]
    if arrive is not None:
        producer.during = lambda: arrive(gateway)
    return gateway, clock


def inbound(mid: int) -> _Inbound:
    return _Inbound(mid, "cityvitals/d/readings", b"{}", datetime(2026, 12, 2, tzinfo=UTC))


def bursts(every_ms: int, size: int) -> Callable[[Gateway], None]:
    """``size`` readings arriving together every ``every_ms`` (the producer waits 2 ms)."""
    mids, polls = iter(range(100_000)), iter(range(100_000))

    def arrive(gateway: Gateway) -> None:
        if next(polls) % (every_ms // 2) == 0:
            gateway._inbox.extend(inbound(next(mids)) for _ in range(size))

    return arrive


def drained_after(monkeypatch: pytest.MonkeyPatch, idle_ms: int, **load: int) -> tuple[int, int]:
    """Milliseconds one drain took, and what it returned, under periodic bursts."""
    gateway, clock = draining(monkeypatch, idle_ms, bursts(**load))
    started = clock.us
    batch = gateway._drain()
    return (clock.us - started) // 1000, len(batch)


def test_a_burst_goes_once_nothing_more_came_for_the_idle_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway, clock = draining(monkeypatch, idle_ms=9)
    gateway._inbox.extend(inbound(mid) for mid in range(150))
    started = clock.us
    assert [i.mid for i in gateway._drain()] == list(range(150))
    assert clock.us - started == 10_000  # not the whole 100 ms


def test_bursts_are_sent_as_each_ends_only_when_large_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bursts of 150 every 50 ms: the first goes at the first look 9 ms after it came
    assert drained_after(monkeypatch, 9, every_ms=50, size=150) == (12, 150)
    # bursts of 40 every 20 ms: none is sent alone; the third fills the gathering past 100
    assert drained_after(monkeypatch, 9, every_ms=20, size=40) == (52, 120)
    # a thin flow gathers for the whole linger time, as before
    assert drained_after(monkeypatch, 9, every_ms=20, size=5) == (100, 25)


def test_a_steady_flow_fills_its_message_for_the_whole_linger_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a reading every 2 ms, within the idle time
    assert drained_after(monkeypatch, 9, every_ms=2, size=1) == (100, 50)


@pytest.mark.parametrize("idle_ms", [0, 9])
def test_without_idle_time_or_readings_the_gateway_waits_the_linger_time(
    monkeypatch: pytest.MonkeyPatch, idle_ms: int
) -> None:
    gateway, clock = draining(monkeypatch, idle_ms=idle_ms)
    if not idle_ms:
        gateway._inbox.extend(inbound(mid) for mid in range(150))
    started = clock.us
    assert len(gateway._drain()) == (0 if idle_ms else 150)
    assert clock.us - started == 100_000


def test_the_gateway_client_refuses_per_topic_callbacks() -> None:
    client = MqttClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    with pytest.raises(NotImplementedError, match="on_message"):
        client.message_callback_add("cityvitals/#", lambda *_: None)


class RecordingProducer(WaitingProducer):
    """A producer that keeps what is produced, by topic."""

    def __init__(self) -> None:
        super().__init__(Clock())
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, **_: Any) -> None:
        self.sent.append((topic, value))


def test_a_decoder_that_fails_refuses_that_message_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A defect of a decoder (an exception it should not raise) stopped the gateway, and
    Mosquitto gave it the same message at every restart: the message is dead-lettered, with
    the error, and the others go on."""
    from cityvitals.topics import Topic

    real = gateway_module.decode_message

    def failing(root: str, topic: str, payload: bytes, at: datetime) -> Any:
        if payload == b"boom":
            raise OverflowError("date value out of range")
        return real(root, topic, payload, at)

    monkeypatch.setattr(gateway_module, "decode_message", failing)
    settings, producer = Settings(), RecordingProducer()
    registry = CollectorRegistry()
    gateway = Gateway(settings, producer, registry)  # type: ignore[arg-type]
    at = datetime(2026, 12, 2, tzinfo=UTC)
    good = b'{"ts": "2026-12-02T00:00:00Z", "seq": 1, "values": {"x": 1}}'
    topic = "cityvitals/wl-1/readings"
    gateway.forward([_Inbound(1, topic, b"boom", at), _Inbound(2, topic, good, at)])
    assert [t for t, _ in producer.sent] == [
        settings.topic(Topic.DEADLETTER),
        settings.topic(Topic.READINGS_RAW),
    ]
    letter = DeadLetter.model_validate_json(producer.sent[0][1])
    assert letter.reason.startswith("the gateway failed on it (OverflowError: date value out of")
    assert letter.device_id == "wl-1" and letter.cause == "decoder_failed"
    refused = registry.get_sample_value(
        "cityvitals_ingest_rejected_total", {"field": "decoder_failed"}
    )
    assert refused == 1.0


def test_made_up_names_add_no_series_to_the_refusals_count() -> None:
    """A device sending a new metric name or field at every message grew the refusal counter
    by a series each (its label was the field's path): they are counted under one label."""
    settings, producer, registry = Settings(), RecordingProducer(), CollectorRegistry()
    gateway = Gateway(settings, producer, registry)  # type: ignore[arg-type]
    at = datetime(2026, 12, 2, tzinfo=UTC)
    topic = "cityvitals/wl-1/readings"
    bad = [
        f'{{"ts": "2026-12-02T00:00:00Z", "seq": 1, "values": {{"x.Bad{i}": 1}}}}'
        for i in range(50)
    ]
    bad += [
        f'{{"ts": "2026-12-02T00:00:00Z", "seq": 1, "values": {{"x": 1}}, "k.{i}": 1}}'
        for i in range(50)
    ]
    gateway.forward([_Inbound(i, topic, b.encode(), at) for i, b in enumerate(bad)])
    labels = {
        s.labels["field"]
        for m in registry.collect()
        if m.name == "cityvitals_ingest_rejected"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert labels == {"values.*.[key]", "(unknown field)"}
    assert len(producer.sent) == 100  # each kept, with its own reason, counted as its label
    causes = {DeadLetter.model_validate_json(value).cause for _topic, value in producer.sent}
    assert causes == labels


def test_a_full_producer_queue_waits_for_room_instead_of_stopping_the_gateway() -> None:
    """Kafka stalled under a flood of QoS 0 messages fills librdkafka's queue: produce()
    raised BufferError out of the gateway, which stopped; it waits for room now."""

    class FullOnce(RecordingProducer):
        def __init__(self) -> None:
            super().__init__()
            self.full, self.polls = 2, 0

        def produce(self, topic: str, value: bytes, **options: Any) -> None:
            if self.full:
                self.full -= 1
                raise BufferError("Local: Queue full")
            super().produce(topic, value, **options)

        def poll(self, timeout: float) -> int:
            self.polls += 1
            return super().poll(timeout)

    producer = FullOnce()
    gateway = Gateway(Settings(), producer, CollectorRegistry())  # type: ignore[arg-type]
    at = datetime(2026, 12, 2, tzinfo=UTC)
    good = b'{"ts": "2026-12-02T00:00:00Z", "seq": 1, "values": {"x": 1}}'
    gateway.forward([_Inbound(1, "cityvitals/wl-1/readings", good, at)])
    assert len(producer.sent) == 1 and producer.polls >= 2
