"""The liveness service: watches the enriched ``readings`` topic and judges every active device.

Each report (a reading's or camera event's ``received_at``, else its ``ts``) moves its device's
clock on (:mod:`device_registry.liveness`). Every ``liveness_check_interval_s`` the whole fleet
is judged against the wall clock: a status change is stored in ``device_liveness`` and
published on ``liveness``, a place outage is stored in ``place_outages`` and published on
``outages``. Kafka confirms first, then the database is written, then consumer offsets are
committed: a crash in between publishes a change again (at least once) and loses none.

The fleet (the active devices, their places and their profiles' intervals) follows the
registry's compacted ``devices`` topic (:class:`~device_registry.device_feed.DeviceFeed`): read
from its beginning at the start, then each change as it is published; never a query per
report. A device reporting before its registration reaches the service is watched at once,
with the default interval, and stored again with its profile's once the registration arrives.
Silence counts from the last report or from when the service began watching the device,
whichever is later (:func:`~device_registry.liveness.watch_from`): a restart blames no device
for the downtime.

A provisioned device is not watched (nobody expects it yet). Its first reading on ``readings``
has passed the stream's checks, so the service asks the registry to make it active (audited
with the actor ``liveness`` and the action ``activate_on_first_reading``); the registry stays
the one writer of devices.

Run one instance. It judges only while it holds every partition of ``readings`` and has caught
up with them; while it is behind (a backlog after a restart or a database pause) it keeps
learning but judges nothing, since every device would look silent. Nor does it judge the
devices of a partition the stream stage has stalled on
(:class:`~device_registry.liveness.StallWatch`: its group has committed nothing there on
``readings.raw`` for ``liveness_stall_s`` while messages wait): what they send does not reach
``readings`` then, and judged, they would go offline together, as one outage of the city when
every partition stalls. The devices of the other partitions are judged meanwhile (a device's
partition is :func:`~cityvitals.topics.partition_for` of its id, as every producer picks it).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from cityvitals import db, kafka
from cityvitals.contracts import (
    Device,
    DeviceLiveness,
    Liveness,
    PlaceOutage,
)
from cityvitals.settings import Settings
from cityvitals.stage import retry, utc_now
from cityvitals.topics import Topic, partition_for
from device_registry.device_feed import DeviceFeed
from device_registry.liveness import (
    DeviceClock,
    IntakeWatch,
    LivenessPolicy,
    Outage,
    PlacePath,
    StallWatch,
    Watched,
    check,
    follow,
    observe,
    report,
)
from device_registry.liveness_metrics import LivenessMetrics
from device_registry.liveness_store import LivenessStore, LivenessStoreUnavailable
from device_registry.registry import Registry

__all__ = [
    "CATCH_UP_LAG_S",
    "Activate",
    "LivenessService",
    "LivenessStore",
    "LivenessStoreUnavailable",
    "policy",
    "run",
]

log = logging.getLogger("cityvitals.liveness")

Conn = psycopg.Connection[tuple[Any, ...]]

CATCH_UP_LAG_S = 5.0
"""Reports that reached the gateway longer ago than this mean the consumer is behind."""
CONSUME_MAX = 1000
ACTOR = "liveness"


class Report(NamedTuple):
    """One item of a ``readings`` message, as liveness sees it."""

    device_id: str
    seen_at: datetime
    """Its ``received_at`` (the gateway's clock), else its ``ts`` (the device's)."""
    received: bool
    """Whether ``seen_at`` is the gateway's ``received_at``."""
    place_path: tuple[str, ...]
    event: bool = False
    """A camera's event: it shows the camera alive, and teaches no cadence (events come when
    it sees something: three in a second made a camera offline a few seconds later)."""


def reports(value: bytes) -> list[Report]:
    """Who reported when, from a ``readings`` message (a :class:`~cityvitals.contracts.ReadingBatch`
    as JSON), reading only the fields liveness needs: validating the whole batch into its
    models took two thirds of the service's work a reading. The items of a device that share
    one instant (a pack of readings the gateway received at once) are one report. Raises
    ``ValueError`` naming what is wrong. A heartbeat (:func:`is_heartbeat`) has none.

    >>> raw = (
    ...     b'{"readings": [{"device_id": "aq-1", "ts": "2026-12-05T08:00:00Z", "values": {},'
    ...     b' "received_at": "2026-12-05T08:00:01+00:00", "place_path": ["c", "d"]}],'
    ...     b' "camera_events": [{"camera_id": "cam-1", "ts": "2026-12-05T09:00:00+01:00"}]}'
    ... )
    >>> for r in reports(raw):
    ...     print(r.device_id, r.seen_at.isoformat(), r.received, r.place_path, r.event)
    aq-1 2026-12-05T08:00:01+00:00 True ('c', 'd') False
    cam-1 2026-12-05T09:00:00+01:00 False () True
    >>> reports(b'{"readings": [{"device_id": "aq-1", "ts": "2026-12-05T08:00:00"}]}')
    Traceback (most recent call last):
    ...
    ValueError: readings[0]: '2026-12-05T08:00:00' has no time zone
    """
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an object")
    out: list[Report] = []
    last: dict[str, str] = {}
    for field, key in (("readings", "device_id"), ("camera_events", "camera_id")):
        items = doc.get(field, [])
        if not isinstance(items, list):
            raise ValueError(f"{field} is not a list")
        for i, item in enumerate(items):
            try:
                out.extend(_report(item, key, last, field == "camera_events"))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
                raise ValueError(f"{field}[{i}]: {what}") from None
    return out


def is_heartbeat(value: bytes) -> bool:
    """Whether a ``readings`` message is the gateway's heartbeat, which the stream stage
    passes on alone (parsed only when it names one: readings are not parsed twice).

    >>> is_heartbeat(b'{"schema_version":1,"devices":[],"readings":[],"camera_events":[],'
    ...              b'"tick":null,"heartbeat":"2026-12-07T21:40:00Z"}')
    True
    >>> is_heartbeat(b'{"readings": [{"device_id": "heartbeat"}], "camera_events": []}')
    False
    """
    if b'"heartbeat":"' not in value:  # a metric or device named so is no string field
        return False
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("heartbeat"), str)
        and not doc.get("readings")
        and not doc.get("camera_events")
    )


def _report(item: Any, key: str, last: dict[str, str], event: bool = False) -> list[Report]:
    """The item's report, or none when its device's last report in the message was at the
    same instant."""
    received = item.get("received_at")
    device_id, seen = item[key], received or item["ts"]
    if not isinstance(device_id, str) or not isinstance(seen, str):
        raise TypeError(f"{key}, ts and received_at must be text")
    if last.get(device_id) == seen:
        return []
    last[device_id] = seen
    seen_at = datetime.fromisoformat(seen)
    if seen_at.tzinfo is None:
        raise ValueError(f"{seen!r} has no time zone")
    path = item.get("place_path", ())
    if not isinstance(path, list | tuple):
        raise TypeError("place_path must be a list of text")
    "".join(path)  # raises TypeError on an element that is not text
    return [Report(device_id, seen_at, received is not None, tuple(path), event)]


Activate = Callable[[Sequence[str]], Sequence[str]]
"""Asks the registry to make active those of the devices that are still provisioned; returns
the ids it activated. Raises on a database or Kafka fault (the service tries again later)."""


def policy(settings: Settings) -> LivenessPolicy:
    return LivenessPolicy(
        late_factor=settings.liveness_late_factor,
        offline_factor=settings.liveness_offline_factor,
        outage_min_devices=settings.outage_min_devices,
        outage_silent_fraction=settings.outage_silent_fraction,
        default_interval_s=settings.liveness_default_interval_s,
    )


class LivenessService:
    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        devices: DeviceFeed,
        producer: Producer,
        store: LivenessStore,
        registry: CollectorRegistry,
        activate: Activate,
        upstream: Callable[[], dict[int, tuple[int, int]]] | None = None,
    ) -> None:
        """``upstream``: per partition of ``readings.raw``, the stream group's committed
        offset and the partition's end (:class:`StreamProgress`); None: not watched."""
        self.settings = settings
        self.upstream = upstream
        self.stall = StallWatch(settings.liveness_stall_s)
        self.intake = IntakeWatch(settings.liveness_stall_s)
        self._intake_said: frozenset[int] = frozenset()
        self._stalled_said: frozenset[int] = frozenset()
        self._raw_partitions = 1
        self.devices = devices
        self.activate = activate
        self._unwatched: set[str] = set()
        """Devices that reported while not in the fleet: perhaps provisioned, to activate."""
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.policy = policy(settings)
        self.metrics = LivenessMetrics(registry)
        self.topic = settings.topic(Topic.READINGS)
        self.fleet: dict[str, Watched] = {}
        self.clocks: dict[str, DeviceClock] = {}
        self.outages: dict[PlacePath, Outage] = {}
        self._dirty: set[str] = set()
        self._uncommitted = False
        self._partitions = 0
        self._assigned: set[tuple[str, int]] = set()
        self._next: dict[tuple[str, int], int] = {}
        self._targets: dict[tuple[str, int], tuple[int, int]] | None = None
        self._warm = False
        self._newest: datetime | None = None

    # --- consuming ------------------------------------------------------------------------

    def _observe(
        self, device_id: str, place_path: PlacePath, seen_at: datetime, event: bool = False
    ) -> None:
        watched = self.fleet.get(device_id)
        if watched is None:  # registered or provisioned since the last refresh
            watched = Watched(place_path, self.policy.default_interval_s, seen_at)
            self.fleet[device_id] = watched
            self._unwatched.add(device_id)
        clock = self.clocks.get(device_id) or DeviceClock(since=watched.since)
        self.clocks[device_id] = observe(clock, seen_at, learn=not event)
        self._dirty.add(device_id)

    def _decode(self, msg: Message) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        self._next[(topic, partition)] = offset + 1
        self._uncommitted = True
        value = msg.value() or b""
        if is_heartbeat(value):  # the intake works; no report, not counted as one
            self.intake.beat(partition, time.monotonic())
            return
        self.metrics.received.inc()
        try:
            items = reports(value)
        except ValueError as exc:
            self.metrics.refuse(Topic.READINGS.value)
            log.warning("%s[%d]@%d is not a ReadingBatch: %s", topic, partition, offset, exc)
            return
        for item in items:
            self._observe(item.device_id, item.place_path, item.seen_at, item.event)
        received = [i.seen_at for i in items if i.received]
        newest = max(received, default=None)  # to tell how far behind the consumer is
        if newest is not None and (self._newest is None or newest > self._newest):
            self._newest = newest
        self.metrics.forwarded.inc()

    def _consume(self, timeout: float) -> None:
        messages = self.consumer.consume(CONSUME_MAX, timeout=timeout)
        self._newest = None
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", error)
                continue
            self._decode(msg)

    def _on_assign(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in parts}
        self.metrics.ready.set(1)

    def _on_revoke(self, _consumer: Consumer, _parts: list[TopicPartition]) -> None:
        self._assigned = set()
        self.metrics.ready.set(0)

    # --- whether judging is meaningful now -------------------------------------------------

    def _end_offsets(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Per assigned partition: where this consumer starts and the end it must reach."""
        parts = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        targets = {}
        for tp in self.consumer.committed(parts, timeout=10):
            low, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            start = tp.offset if tp.offset >= 0 else low
            targets[(tp.topic, tp.partition)] = (start, high)
        return targets

    def _caught_up(self, now: datetime) -> bool:
        if len(self._assigned) < self._partitions:
            return False
        if not self._warm:
            if self._targets is None:
                try:
                    self._targets = self._end_offsets()
                except KafkaException as exc:
                    log.warning("reading end offsets: %s; trying again at the next check", exc)
                    return False
            self._warm = all(
                self._next.get(tp, start) >= end for tp, (start, end) in self._targets.items()
            )
            if not self._warm:
                return False
            log.info("caught up with %s; judging liveness", self.topic)
        lag = 0.0 if self._newest is None else (now - self._newest).total_seconds()
        return lag <= CATCH_UP_LAG_S

    # --- one check ------------------------------------------------------------------------

    def _publish(self, devices: Sequence[DeviceLiveness], outages: Sequence[PlaceOutage]) -> None:
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        changes: list[tuple[Topic, str, str, BaseModel]]
        changes = [(Topic.LIVENESS, d.device_id, d.status.value, d) for d in devices]
        changes += [(Topic.OUTAGES, o.place_id, o.status.value, o) for o in outages]
        for topic, key, status, change in changes:
            self.producer.produce(
                self.settings.topic(topic),
                change.model_dump_json().encode(),
                key=key.encode(),
                on_delivery=delivered,
            )
            self.metrics.published.labels(topic.value, status).inc()
        left = self.producer.flush(30)
        if failures or left:
            raise kafka.KafkaUnavailable(
                self.settings.kafka_bootstrap,
                f"{left + len(failures)} liveness changes unconfirmed: {failures[:3]}",
            )

    def _stalled(self) -> frozenset[int]:
        """The partitions of ``readings.raw`` the stream stage has stalled on, or is still
        working off a stall's backlog on (said in the log when that changes); the last verdict
        while Kafka does not answer."""
        if self.upstream is None:
            return frozenset()
        try:
            offsets = self.upstream()
        except (KafkaException, kafka.KafkaUnavailable) as exc:
            log.debug("the stream's progress on readings.raw is unreadable: %s", exc)
            return self._stalled_said
        held = frozenset(self.stall.look(time.monotonic(), offsets))
        self._raw_partitions = len(offsets)
        if held != self._stalled_said:
            if held - self._stalled_said:
                waiting = sum(max(0, offsets[p][1] - offsets[p][0]) for p in held)
                log.warning(
                    "the stream stage has committed nothing on readings.raw %s "
                    "for %.0f s while %d messages wait there: judging none of their devices "
                    "until it has worked them off (the silence on readings is the pipeline's, "
                    "not the devices')",
                    _partitions(held),
                    self.settings.liveness_stall_s,
                    waiting,
                )
            if gone := self._stalled_said - held:
                log.info(
                    "the stream stage has worked off the stall's backlog on readings.raw "
                    "%s: judging their devices",
                    _partitions(gone),
                )
            self._stalled_said = held
        self.metrics.stalled.set(int(bool(held)))
        return held

    def _intake_stalled(self) -> frozenset[int]:
        """The partitions of ``readings`` the gateway's heartbeats have stopped reaching, or
        came back to a moment ago (:class:`IntakeWatch`; said in the log when that changes)."""
        held = frozenset(self.intake.held(time.monotonic()))
        if held != self._intake_said:
            if new := held - self._intake_said:
                log.warning(
                    "no heartbeat of the gateway has reached readings %s for %.0f s: the "
                    "gateway has hung or lost the broker (or the stream stage stalled); "
                    "judging none of their devices (the silence is the intake's, not the "
                    "devices')",
                    _partitions(new),
                    self.settings.liveness_stall_s,
                )
            if gone := self._intake_said - held:
                log.info(
                    "the gateway's heartbeats reach readings %s again: judging their devices, "
                    "their silence counted from now",
                    _partitions(gone),
                )
                self._watch_afresh(gone)
            self._intake_said = held
        self.metrics.intake_stalled.set(int(bool(held)))
        return held

    def _watch_afresh(self, partitions: frozenset[int]) -> None:
        """The devices of ``partitions``, which the intake held, count their silence from now,
        as after a restart: heartbeats back say the gateway runs, not that the broker kept
        what they sent meanwhile (QoS 0 is not kept) nor that it has all arrived, and a device
        reporting every 5 minutes is heard again at its next report."""
        now = utc_now()
        parts = self._device_partitions()
        for device_id, watched in self.fleet.items():
            if partition_for(device_id, parts) in partitions:
                clock = self.clocks.get(device_id) or DeviceClock(since=watched.since)
                self.clocks[device_id] = dataclasses.replace(clock, since=max(clock.since, now))

    def _held(self, stalled: frozenset[int]) -> frozenset[str]:
        """The watched devices whose readings go to a stalled partition of ``readings.raw``
        (every producer picks it with :func:`~cityvitals.topics.partition_for`)."""
        if not stalled:
            return frozenset()
        parts = self._device_partitions()
        return frozenset(d for d in self.fleet if partition_for(d, parts) in stalled)

    def _device_partitions(self) -> int:
        """How many partitions the devices' readings are spread over: ``readings.raw``'s,
        or, where the stream's progress there is not watched, ``readings``' (as many)."""
        return self._raw_partitions if self.upstream is not None else max(1, self._partitions)

    def check_once(self, stop: threading.Event) -> None:
        """Judge (when caught up; not the devices of a partition the stream stage has stalled
        on), publish, store, then commit what was consumed."""
        now = utc_now()
        outages: list[PlaceOutage] = []
        stalled = self._stalled() | self._intake_stalled()
        held = self._held(stalled)
        self.metrics.held.set(len(held))
        if len(stalled) < self._device_partitions() and self._caught_up(now):
            result = check(self.clocks, self.fleet, self.outages, now, self.policy, held)
            self.clocks, self.outages = result.clocks, result.outages
            self._dirty.update(result.changed)
            outages = [*result.ended, *result.started]
            self._publish(result.announced, outages)
        else:
            self.metrics.skipped.inc()
        rows = [
            report(d, self.clocks[d], self.fleet[d], now)
            for d in sorted(self._dirty)
            if d in self.clocks
        ]
        retry(lambda: self.store.save(rows, outages), stop)
        self._dirty.clear()
        if self._uncommitted and self._assigned:
            self.consumer.commit(asynchronous=False)
            self._uncommitted = False
        self._gauges()

    def _gauges(self) -> None:
        counts = dict.fromkeys(Liveness, 0)
        for clock in self.clocks.values():
            counts[clock.status] += 1
        for status, n in counts.items():
            self.metrics.devices.labels(status.value).set(n)
        self.metrics.outages.set(len(self.outages))

    def activate_reporting(self) -> None:
        """Ask the registry to activate the provisioned devices among those that reported
        while unwatched. On a fault they are asked again at the next check."""
        if not self._unwatched:
            return
        asked = sorted(self._unwatched)
        try:
            activated = self.activate(asked)
        except (psycopg.Error, db.DatabaseUnavailable, kafka.KafkaUnavailable) as exc:
            log.warning("activating %d reporting devices failed: %s; retrying", len(asked), exc)
            return
        self._unwatched.difference_update(asked)
        if activated:
            self.metrics.activated.inc(len(activated))
            log.info("activated on their first reading: %s", ", ".join(activated[:10]))

    def follow(self, changes: Sequence[Device]) -> None:
        """Apply device changes from the registry: an active device is watched, any other is
        not (its clock is dropped). Watching a device begins when it first appears. A watched
        device with a clock is stored again at the next check, by its new place and interval:
        its first report may have come before its registration did (then it was stored with
        the default interval), and a profile's new interval must not wait for its next one."""
        if changes:
            self.fleet = follow(self.fleet, changes, self.policy.default_interval_s, utc_now())
            self.clocks = {d: c for d, c in self.clocks.items() if d in self.fleet}
            self._dirty.update(d.device_id for d in changes if d.device_id in self.clocks)

    def load(self, stop: threading.Event) -> None:
        self.outages = retry(self.store.outages, stop)
        self.follow(self.devices.read_to_end(stop))
        self.clocks = retry(lambda: self.store.clocks(self.fleet, self.outages), stop)
        self._partitions = kafka.partition_count(self.consumer, self.topic)
        log.info(
            "watching %d active devices (%d with stored liveness), %d open outages",
            len(self.fleet),
            len(self.clocks),
            len(self.outages),
        )

    def run(self, stop: threading.Event) -> None:
        """Load, then until ``stop``: follow the registry, consume reports, and every
        ``liveness_check_interval_s`` activate the newly reporting, judge, store and commit."""
        interval = self.settings.liveness_check_interval_s
        try:
            self.load(stop)
            self.consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            next_check = time.monotonic() + interval
            while not stop.is_set():
                self.follow(self.devices.poll())
                self._consume(max(0.0, min(0.2, next_check - time.monotonic())))
                if time.monotonic() < next_check:
                    continue
                self.activate_reporting()
                self.check_once(stop)
                next_check = time.monotonic() + interval
        finally:
            self.metrics.ready.set(0)
            self.consumer.close()
            self.devices.close()
            self.store.close()


def _partitions(numbers: frozenset[int]) -> str:
    """``partition 3`` or ``partitions 0, 1, 2``, for the log."""
    named = ", ".join(map(str, sorted(numbers)))
    return f"partition {named}" if len(numbers) == 1 else f"partitions {named}"


class StreamProgress:
    """The stream group's progress on ``readings.raw``: per partition, its committed offset
    and the partition's end (read by a consumer of the group's id that never joins it)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic(Topic.READINGS_RAW)
        self.bootstrap = settings.kafka_bootstrap
        self.consumer = kafka.consumer(settings, settings.topic(settings.streams_app_id))
        self._parts: list[TopicPartition] | None = None

    def __call__(self) -> dict[int, tuple[int, int]]:
        if self._parts is None:
            count = kafka.partition_count(self.consumer, self.topic, 5.0)
            self._parts = [TopicPartition(self.topic, p) for p in range(count)]
        out = {}
        for tp in kafka.committed(self.consumer, self._parts, self.bootstrap, tries=1, timeout=5):
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=5, cached=False
            )
            out[tp.partition] = (max(tp.offset, low), high)
        return out

    def close(self) -> None:
        self.consumer.close()


class RegistryActivator:
    """:data:`Activate` through the device registry, on a connection of its own (reopened
    after a fault). The broker needs no change: a provisioned device's login already works."""

    def __init__(self, settings: Settings, producer: Producer) -> None:
        self.settings = settings
        self.producer = producer
        self._registry: Registry | None = None

    def __call__(self, device_ids: Sequence[str]) -> list[str]:
        if self._registry is None or self._registry.conn.closed or self._registry.conn.broken:
            self._registry = Registry(self.settings, db.connect(self.settings), self.producer, None)
        return [d.device_id for d in self._registry.activate_on_first_reading(device_ids, ACTOR)]

    def close(self) -> None:
        if self._registry is not None:
            self._registry.conn.close()


def run(settings: Settings, registry: CollectorRegistry, stop: threading.Event) -> None:
    """The liveness service until ``stop`` is set."""
    producer = kafka.producer(settings)
    activator = RegistryActivator(settings, producer)
    upstream = StreamProgress(settings)
    try:
        LivenessService(
            settings,
            kafka.consumer(settings, settings.topic("cityvitals_liveness")),
            DeviceFeed(settings, settings.topic("cityvitals_liveness_devices")),
            producer,
            LivenessStore(settings),
            registry,
            activator,
            upstream,
        ).run(stop)
    finally:
        upstream.close()
        activator.close()
