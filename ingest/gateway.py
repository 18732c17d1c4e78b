"""The MQTT → Kafka gateway.

Subscribes (QoS1, persistent session) to everything under the topic root, with a plain
subscription when it is the only gateway, or a shared one when several split the load
(:func:`subscription`),
decodes each message (one reading or event, or a pack of readings), groups the good ones by the Kafka
partition of their device and sends each group as one :class:`ReadingBatch` to that partition of
``readings.raw``. A refused message goes to
``deadletter`` with its reason and original bytes. An MQTT message is acknowledged only after
Kafka confirmed the message that carries it, so a crash loses nothing: the broker redelivers
what was not acknowledged. The MQTT 5 receive maximum bounds how many wait at once.
"""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, Message, Producer
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry, Counter, Gauge

from cityvitals.contracts import (
    CameraEvent,
    CameraEventPayload,
    Reading,
    ReadingBatch,
    ReadingPayload,
)
from cityvitals.kafka import partition_count
from cityvitals.settings import Settings
from cityvitals.stage import StageMetrics, dead_letter, utc_now
from cityvitals.topics import Topic, partition_for
from ingest.decode import DecodeError, decode_message, publisher_of_topic
from ingest.protocols import Decoded

__all__ = ["Gateway", "GatewayError", "GatewayMetrics"]

log = logging.getLogger("cityvitals.ingest")

_PACK_ITEM = re.compile(r"\[\d+\](\.|$)")
_FIELDS = frozenset(
    {*ReadingPayload.model_fields, *CameraEventPayload.model_fields, "payload", "topic"}
)
"""The fields a payload may name (anything else a device sent is an unknown field)."""


def field_label(field: str) -> str:
    """The label a refusal is counted by: the field a payload got wrong, with what a device
    chose put as ``*`` and ``[n]`` (a metric's name, which may hold dots; a field no payload
    has; an element's position in a pack), so that a device sending made-up names adds no
    Prometheus series.

    >>> field_label("values.Bad199.[key]"), field_label("[12].values.pm25"), field_label("")
    ('values.*.[key]', '[n].values.*', 'payload')
    >>> field_label("values.x.Bad0.[key]"), field_label("colour.z0"), field_label("[0].a.b")
    ('values.*.[key]', '(unknown field)', '[n].(unknown field)')
    >>> field_label("[3]"), field_label("[3].ts"), field_label("seq")
    ('[n]', '[n].ts', 'seq')
    """
    if not field:
        return "payload"
    pack = _PACK_ITEM.match(field)
    head, rest = ("[n].", field[pack.end() :]) if pack else ("", field)
    if pack and not rest:  # the element itself (not an object, say)
        return "[n]"
    name = rest.split(".", 1)[0]
    if name not in _FIELDS:
        return f"{head}(unknown field)"
    if name == "values" and rest != "values":
        return f"{head}values.*" + (".[key]" if rest.endswith(".[key]") else "")
    return f"{head}{name}"


SESSION_EXPIRY_S = 7 * 24 * 3600


def subscription(group: str, root: str) -> tuple[str, list[str]]:
    """The filter a gateway subscribes to, and the filters of other setups that its persistent
    session may still hold (to drop): everything under ``root`` (a device may write anywhere
    under its own id, and a message on a mistyped topic is dead-lettered, not lost), shared
    in ``group`` when one is set.

    Mosquitto 2.0 keeps a persistent session's plain subscription across its own restart, so
    what devices publish before the gateway is back waits for it; it does not keep a shared
    one, and what is published meanwhile is dropped. So one gateway subscribes plainly, and a
    share group is for splitting the load among several.

    >>> subscription("", "cityvitals")[0]
    'cityvitals/#'
    >>> topic, stale = subscription("ingest", "cityvitals")
    >>> topic, "cityvitals/#" in stale, topic in stale
    ('$share/ingest/cityvitals/#', True, False)
    """
    legacy = [f"$share/{group or 'ingest'}/{root}/+/{kind}" for kind in ("readings", "events")]
    plain, shared = f"{root}/#", f"$share/{group or 'ingest'}/{root}/#"
    topic = shared if group else plain
    return topic, [f for f in (plain, shared, *legacy) if f != topic]


class GatewayError(RuntimeError):
    """The gateway cannot go on (broker refused it, Kafka refused a batch); it must restart."""


class GatewayMetrics(StageMetrics):
    """The stage's counters (readings and camera events; a refused MQTT message counts one,
    refusals by the field at fault), plus what waits for Kafka and the size of each Kafka
    message."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(
            "ingest", registry, "readings and events (a refused MQTT message: one)", label="field"
        )
        self.inflight = Gauge(
            "cityvitals_ingest_inflight",
            "Readings and events (a refused MQTT message: one) waiting for Kafka",
            registry=registry,
        )
        self.batch_size = self.histogram(
            "batch_size", "Readings per Kafka message", (1, 5, 10, 50, 100, 250, 500, 1000, 2500)
        )
        self.disconnects = Counter(
            "cityvitals_ingest_mqtt_disconnects_total",
            "Times the gateway lost its MQTT connection (paho reconnects)",
            registry=registry,
        )


class MqttClient(mqtt.Client):
    """paho's client, reading the socket in large chunks and acknowledging many QoS 1
    messages at once."""

    READ_BYTES = 65536
    """What one read of the socket asks for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read = b""
        self._read_at = 0
        self._reads_left = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes, from what the last read of the socket brought.

        paho reads each packet with three or more reads of the socket (its type, each byte
        of its length, its body), and each read lets go of Python's lock between threads
        and takes it back. Served from one read, paho's read path took 25.6-27.1 µs of CPU
        a one-reading message instead of 28.7-32.7 (200,000 messages through a socket pair,
        2026-12-02; docs/speed.md).
        """
        if self._read_at >= len(self._read):
            if self._reads_left <= 0:
                raise BlockingIOError  # the rest stays in the socket for paho's next wait
            self._reads_left -= 1
            data = super()._sock_recv(self.READ_BYTES)
            if len(data) <= bufsize:
                return data
            self._read, self._read_at = data, 0
        start = self._read_at
        self._read_at = min(start + bufsize, len(self._read))
        return self._read[start : self._read_at]

    def _handle_publish(self) -> MQTTErrorCode:
        """A QoS 1 PUBLISH with no MQTT 5 properties (what devices send) handed to
        ``on_message`` as paho does, but without paho's empty ``Properties`` object, which
        it builds, clears and fills for every message: about two fifths of its read path's
        CPU (cProfile of 200,000 messages through a socket pair; docs/speed.md). Such a
        message's ``properties`` is None, as an MQTT 3 message's is, and paho's debug line
        for each message is not written. Any other PUBLISH goes to paho. Acknowledged by the
        caller (``manual_ack``), as paho leaves it then."""
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        at = 2 + int.from_bytes(packet[:2], "big")  # past the topic
        if (
            (header & 0x06) != 0x02  # QoS 1 only
            or self._protocol != mqtt.MQTTv5
            or not self._manual_ack
            or len(packet) < at + 3
            or packet[at + 2] != 0  # properties present: paho decodes them
        ):
            return super()._handle_publish()
        view = memoryview(packet)
        message = mqtt.MQTTMessage(int.from_bytes(view[at : at + 2], "big"), bytes(view[2:at]))
        message.qos = 1
        message.dup = bool(header & 0x08)
        message.retain = bool(header & 0x01)
        message.payload = bytes(view[at + 3 :])
        message.timestamp = mqtt.time_func()
        # Straight to on_message: paho would first match the topic against the per-topic
        # callbacks, which this client has none of (message_callback_add refuses them).
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                try:
                    on_message(self, self._userdata, message)
                except Exception as err:  # as paho's _handle_on_message
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def message_callback_add(self, sub: str, callback: Any) -> None:
        """Refused: the gateway's client hands every message to ``on_message``."""
        raise NotImplementedError("MqttClient hands every message to on_message")

    def _sock_close(self) -> None:
        self._read, self._read_at = b"", 0
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Every whole packet of at most :data:`_SOCKET_READS` reads of the socket (paho's own
        reads one packet, with no QoS 2 messages in flight); a packet cut at the end of the
        last read is finished on a later call, from the socket. Nothing read stays in the
        buffer: paho waits on the socket, not on it, and what stayed could wait for the next
        traffic or the keepalive. Over TLS a read returns at most one record (16 KB), so a
        call reads less."""
        self._reads_left = _SOCKET_READS
        while True:
            rc = super().loop_read(max_packets)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._read_at >= len(self._read):
                return rc

    def ack_all(self, mids: list[int]) -> None:
        """Send a PUBACK for each of ``mids``, in one write. paho's :meth:`ack` queues each
        PUBACK alone, waking its network thread and writing the socket once per message
        (with the reading built unvalidated, the gateway's CPU per reading fell 4-5 %,
        ``cityvitals bench``, 2026-12-02). These are the same 4-byte packets it sends
        (:meth:`ack`, MQTT 3.1.1 and 5: a success needs no reason code), queued as one entry
        of its outgoing queue; a connection lost before the write loses them as it loses
        queued single PUBACKs, and the broker redelivers those messages."""
        mids = [mid for mid in mids if mid]  # 0: a QoS 0 message, not acknowledged
        if mids:
            packets = struct.pack(f"!{len(mids)}I", *(_PUBACK_HEAD | mid for mid in mids))
            self._packet_queue(PUBACK, packets, 0, 1)


_SOCKET_READS = 4
"""At most this many reads of the socket each time it is ready; then paho's loop writes what
waits (the PUBACKs that :meth:`MqttClient.ack_all` queued and woke it for)."""

_PUBACK_HEAD = (PUBACK << 24) | (2 << 16)
"""A PUBACK's fixed header (type, remaining length 2) above its 16-bit message id."""


T = TypeVar("T")


def split(
    items: Sequence[T], encode: Callable[[Sequence[T]], bytes], max_bytes: int
) -> Iterator[tuple[Sequence[T], bytes]]:
    """``items`` encoded as one message, or, when that is over ``max_bytes``, as several, in
    order: a group too large is halved until each part fits or is a single item (which goes
    whatever its size). A burst after a restart or of devices' backlogs can gather hundreds
    of packs of one partition, tens of megabytes, which Kafka would refuse as one message.

    >>> encode = lambda part: ",".join(part).encode()
    >>> [m for _, m in split(["aaaa", "bb", "c", "ddddddddd"], encode, 7)]
    [b'aaaa,bb', b'c', b'ddddddddd']
    >>> [m for _, m in split(["a", "b"], encode, 7)]
    [b'a,b']
    """
    message = encode(items)
    if len(message) <= max_bytes or len(items) == 1:
        yield items, message
        return
    half = len(items) // 2
    yield from split(items[:half], encode, max_bytes)
    yield from split(items[half:], encode, max_bytes)


@dataclass(frozen=True, slots=True)
class _Decoded:
    mid: int
    items: list[Decoded]


def _encode(part: Sequence[_Decoded]) -> bytes:
    """The ``readings.raw`` message of decoded MQTT messages."""
    readings = tuple(one for d in part for one in d.items if isinstance(one, Reading))
    events = tuple(one for d in part for one in d.items if isinstance(one, CameraEvent))
    return ReadingBatch(readings=readings, camera_events=events).to_json()


@dataclass(frozen=True, slots=True)
class _Inbound:
    mid: int
    """The message's packet id, to acknowledge; 0 for a QoS 0 message, which takes none."""
    topic: str
    payload: bytes
    received_at: datetime


class Gateway:
    def __init__(self, settings: Settings, producer: Producer, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.producer = producer
        self.metrics = GatewayMetrics(registry)
        # paho's thread appends, this one pops: a deque's ends are thread-safe, and cheaper
        # per message than a Queue's locks.
        self._inbox: deque[_Inbound] = deque()
        self._failure: str | None = None
        self._connected = threading.Event()
        self._raw = settings.topic(Topic.READINGS_RAW)
        self._deadletter = settings.topic(Topic.DEADLETTER)
        self._partitions = partition_count(producer, self._raw)
        self.client = self._mqtt_client()

    # --- MQTT side (paho's network thread) ------------------------------------------------

    def _mqtt_client(self) -> MqttClient:
        s = self.settings
        client = MqttClient(
            CallbackAPIVersion.VERSION2,
            client_id=s.mqtt_client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(s.mqtt_username, s.mqtt_password.get_secret_value())
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(
        self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            s = self.settings
            self._failure = (
                f"MQTT broker {s.mqtt_host}:{s.mqtt_port} refused the gateway's login "
                f"{s.mqtt_username!r}: {reason} (CITYVITALS_MQTT_USERNAME, CITYVITALS_MQTT_PASSWORD)"
            )
            return
        topic, stale = subscription(self.settings.mqtt_share_group, self.settings.mqtt_topic_root)
        client.subscribe([(topic, 1)])
        # A persistent session may still hold the filters of another setup or an earlier version.
        client.unsubscribe(stale)
        self._connected.set()
        log.info("connected to MQTT %s:%s", self.settings.mqtt_host, self.settings.mqtt_port)

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, reasons: Any, _p: Any) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            self._failure = f"MQTT broker refused the gateway's subscriptions: {refused}"
            return
        self.metrics.ready.set(1)

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        self.metrics.ready.set(0)
        self.metrics.disconnects.inc()
        if self._failure is None:  # refused: the failure says why, and the gateway stops
            log.warning("MQTT disconnected (%s); paho reconnects", reason)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        # A QoS 0 message is not acknowledged: a PUBACK for it names no message the broker
        # sent, and the broker drops the connection (a retained one: at every reconnect).
        mid = msg.mid if msg.qos else 0
        self._inbox.append(_Inbound(mid, msg.topic, bytes(msg.payload), utc_now()))

    # --- Kafka side (the caller's thread) -------------------------------------------------

    def _acker(
        self, mids: list[int], forwarded: int, waiting: int
    ) -> Callable[[KafkaError | None, Message], None]:
        """Acknowledge ``mids`` once Kafka has the message: ``forwarded`` items of it count
        as forwarded, ``waiting`` stop waiting."""

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                # The MQTT messages stay unacknowledged; the broker redelivers them after restart.
                self._failure = f"Kafka refused a batch of {len(mids)} messages: {err}"
                return
            self.client.ack_all(mids)
            self.metrics.forwarded.inc(forwarded)
            self.metrics.inflight.dec(waiting)

        return delivered

    def _drain(self) -> list[_Inbound]:
        """What arrived, up to a batch, waiting at most the linger time for more, and once
        ``ingest_idle_min`` messages arrived, at most the idle time after the last one.

        Kafka's delivery reports (which acknowledge MQTT messages) are served while waiting, so
        a full receive window never waits on this loop.
        """
        s = self.settings
        batch: list[_Inbound] = []
        deadline = time.monotonic() + s.ingest_linger_ms / 1000
        idle = s.ingest_idle_ms / 1000
        quiet_since: float | None = None  # the inbox found empty since the last arrival
        while len(batch) < s.ingest_batch_max:
            try:
                batch.append(self._inbox.popleft())
                quiet_since = None
                continue
            except IndexError:
                pass
            now = time.monotonic()
            if now >= deadline or self._failure:
                break
            if quiet_since is None:
                quiet_since = now
            elif idle and len(batch) >= s.ingest_idle_min and now - quiet_since >= idle:
                break
            self.producer.poll(0.002)
        return batch

    def _dead_letter(self, item: _Inbound, error: DecodeError, counted: str = "") -> None:
        """Keep a refused message, counted by ``counted`` (else the field the error names)."""
        device = publisher_of_topic(self.settings.mqtt_topic_root, item.topic)
        cause = counted or field_label(error.field)
        letter = dead_letter(
            "ingest",
            str(error),
            item.payload,
            item.topic,
            cause=cause,
            device_id=device,
            received_at=item.received_at,
        )
        self.metrics.received.inc()
        self.metrics.inflight.inc()
        self.metrics.refuse(cause)
        self._produce(
            self._deadletter,
            letter.model_dump_json().encode(),
            key=(device or "").encode(),
            on_delivery=self._acker([item.mid], 0, 1),
        )

    def _produce(self, topic: str, value: bytes, **options: Any) -> None:
        """Hand a message to the producer; while its local queue is full (Kafka stalled
        under a flood of QoS 0 messages, which no receive maximum bounds), serve its
        deliveries and wait for room rather than stop the gateway."""
        while True:
            try:
                self.producer.produce(topic, value, **options)
                return
            except BufferError:
                log.warning("the Kafka producer's queue is full: waiting for room")
                self.producer.poll(0.5)

    def forward(self, inbound: list[_Inbound]) -> None:
        """Decode a drained group and hand it to the producer (acks follow on delivery)."""
        groups: dict[int, list[_Decoded]] = defaultdict(list)
        root = self.settings.mqtt_topic_root
        for item in inbound:
            try:
                decoded = decode_message(root, item.topic, item.payload, item.received_at)
            except DecodeError as exc:
                self._dead_letter(item, exc)
                continue
            except Exception as exc:  # a defect of a decoder: this message alone is refused
                log.exception("decoding a message on %s failed", item.topic)
                failed = f"the gateway failed on it ({type(exc).__name__}: {exc}; its log has more)"
                self._dead_letter(item, DecodeError(failed), counted="decoder_failed")
                continue
            # One message is one device's: its items share a partition.
            groups[partition_for(decoded[0].device_id, self._partitions)].append(
                _Decoded(item.mid, decoded)
            )
        for partition, group in groups.items():
            for part, message in split(group, _encode, self.settings.ingest_message_max_bytes):
                count = sum(len(d.items) for d in part)
                self.metrics.received.inc(count)
                self.metrics.inflight.inc(count)
                self.metrics.batch_size.observe(count)
                self._produce(
                    self._raw,
                    message,
                    partition=partition,
                    on_delivery=self._acker([d.mid for d in part], count, count),
                )
        self.producer.poll(0)

    def heartbeat(self) -> None:
        """Tell every partition of ``readings.raw`` the gateway runs, connected to the broker
        (:attr:`~cityvitals.contracts.ReadingBatch.heartbeat`): liveness takes their absence
        as the intake's stall, not as the devices' silence. Unconfirmed, a heartbeat is lost
        with no harm: the next follows."""
        value = ReadingBatch(heartbeat=utc_now()).to_json()
        for partition in range(self._partitions):
            self._produce(self._raw, value, partition=partition)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set; raises GatewayError when it cannot go on."""
        s = self.settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = s.ingest_receive_maximum
        self.client.connect_async(
            s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False, properties=props
        )
        self.client.loop_start()
        beat_at = 0.0
        try:
            while not stop.is_set():
                if self._failure:
                    raise GatewayError(self._failure)
                inbound = self._drain()
                if inbound:
                    self.forward(inbound)
                beats = s.ingest_heartbeat_s > 0
                if beats and time.monotonic() >= beat_at and self._connected.is_set():
                    self.heartbeat()
                    beat_at = time.monotonic() + s.ingest_heartbeat_s
        finally:
            remaining = self.producer.flush(30)
            self.client.loop_stop()
            self.client.disconnect()
            if remaining:
                log.error("%d Kafka messages unconfirmed at stop; MQTT will redeliver", remaining)
