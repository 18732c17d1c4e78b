"""The gateway's MQTT client and its Kafka messages, without a broker."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from ingest.gateway import _SOCKET_READS, MqttClient, split


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


def publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 5 PUBLISH at QoS 0 (no properties)."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + b"\x00" + payload
    length, remaining = b"", len(body)
    while True:
        byte, remaining = remaining % 128, remaining // 128
        length += bytes([byte | (128 if remaining else 0)])
        if not remaining:
            return b"\x30" + length + body


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
