"""The Faust application: agents and tables around :mod:`streams.pipeline`.

The agents, on co-partitioned topics (every producer picks partitions with
``cityvitals.topics.partition_for``), so a device's registry entry, its readings and its rule
memory are always on the same worker, and so are a place's composite rule memory and the
values judged by it:

- ``devices`` → the ``device_registry`` table (the slice of each device a reading needs), which
  bootstraps a new deployment; the same changes also arrive in-band on ``readings.raw``;
- ``readings.raw`` → apply in-band registry changes, enrich, run device rules → ``readings``
  (one message per input batch, same partition), ``alerts``, ``deadletter``, and the values
  composite rules need → ``observations.places`` on the place's partition; a device's rule
  memory and indicator marks live in the ``device_state`` table (:func:`device_changes`),
  and the readings' window partials go to ``indicators.partials``: one message per place
  partition for each group of input messages (:func:`bundle`);
- ``observations.places`` → composite rules → ``alerts``; memory in ``place_rule_state``;
- ``indicators.partials`` → the places' indicator windows (table ``place_vitals``), closed
  by clock ticks → ``indicators``.

The gateway's heartbeats on ``readings.raw`` are passed on to the same partition of
``readings`` (the liveness service tells a hung gateway from silent devices by them).
A timer sends a clock tick to every partition of ``readings.raw``, ``observations.places`` and
``indicators.partials`` every ``rules_tick_s``, so silence is judged and windows close in order
with the readings. Another re-reads the rule file when it changes
(hot reload): rule memory is keyed by rule id, so a rule that stays keeps its state, a new one
starts empty, and a removed one's open alerts are resolved.

At start the stream is given the alerts still open in the database: a device or place it has
no memory of (its Kafka kept nothing) takes them back, so they continue and resolve.

``readings.raw`` and ``indicators.partials`` are taken a group of messages at a time: every
output of a group, its table changelog records included, is confirmed by Kafka before the
agent takes the next group (the other agents: the next message), and Faust commits offsets
only after that (at-least-once; sinks make it effectively once).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar, cast

import faust
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.streams import _current_event
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError

from cityvitals.contracts import (
    Alert,
    Device,
    Indicator,
    IndicatorBatch,
    MembershipChange,
    PlaceBatch,
    PlaceLevel,
    PlaceObservation,
    ReadingBatch,
    WindowPartial,
)
from cityvitals.problems import problems
from cityvitals.settings import Settings
from cityvitals.stage import NO_VALUE, STARTED, dead_letter, kafka_source, utc_now
from cityvitals.topics import Topic, partition_for
from rules import RuleSet
from rules.incidents import IncidentConfig, Tracked, load_incident_config, parse_incident_config
from rules.indicators import Catalogue
from streams.delivery import confirmed, hand_over, send_one
from streams.incidents import IncidentMetrics, PlaceNames, add_incident_agents
from streams.live import LiveFile, LiveRules, LoopWatch, StreamMetrics
from streams.pipeline import (
    ParsedMemories,
    backlog,
    device_ids,
    process_batch,
    process_places,
)
from streams.seeds import OpenAlert, seed_memories
from streams.transport import Transport
from streams.validation import is_newer, registry_entry
from streams.vitals import apply, close, membership

__all__ = ["LiveRules", "StreamMetrics", "create_app"]

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("cityvitals.streams")


def current(event: Any) -> None:
    """Make ``event`` the stream's current event in this task: a table written now sends its
    changelog to the event's partition (Faust takes it from the current event)."""
    _current_event.set(weakref.ref(event))


DeviceState = dict[str, Any]
"""What the stage keeps of a device between messages: ``{"rules": its rule memory, "marks":
its indicator marks}`` (either may be None). One value, so a message that changes both writes
one changelog record, not two: with a city's devices, each reading's device is alone in its
message, and the changelog records were most of the stage's work."""


def device_changes(
    held: dict[str, DeviceState],
    rules: dict[str, dict[str, Any] | None],
    marks: dict[str, dict[str, Any]],
) -> dict[str, DeviceState | None]:
    """The new ``device_state`` values of the devices whose rule memory (``rules``: None
    deletes it) or marks changed, from what the table ``held``; None deletes the device's entry.

    >>> held = {"a": {"rules": {"w": 1}, "marks": {"t": []}}, "b": {"rules": {"w": 2}, "marks": None}}
    >>> sorted(device_changes(held, {"a": {"w": 3}, "b": None}, {"c": {"t": [1]}}).items())
    [('a', {'rules': {'w': 3}, 'marks': {'t': []}}), ('b', None), ('c', {'rules': None, 'marks': {'t': [1]}})]
    """
    out: dict[str, DeviceState | None] = {}
    for device_id in rules.keys() | marks.keys():
        old = held.get(device_id) or {}
        new = {
            "rules": rules[device_id] if device_id in rules else old.get("rules"),
            "marks": marks[device_id] if device_id in marks else old.get("marks"),
        }
        out[device_id] = new if new["rules"] or new["marks"] else None
    return out


def put(table: Any, changes: Mapping[str, dict[str, Any] | None]) -> None:
    """Set entries in a table's store (None or an empty memory deletes the key), without
    changelog records: :func:`log_changes` writes those."""
    for key, memory in changes.items():
        if memory:
            table.data[key] = memory
        else:
            table.data.pop(key, None)


Record = tuple[bytes | None, bytes | None]
"""A Kafka record's key and value (a None value in a changelog is a tombstone)."""


async def send_records(
    app: faust.App, topic: str, partition: int, records: Sequence[Record]
) -> list[Awaitable[Any]]:
    """``records`` on ``partition`` of ``topic``, in order, handed to Faust's aiokafka producer
    as record batches (one, unless over its batch size); returns their deliveries.

    Faust's own send (``topic.send``) takes a message at a time, each with its own future,
    callbacks and the producer's checks: about 170 µs of the stage's thread each (the small
    job's alerts, docs/speed.md); a batch of records takes one hand-over. A record over the
    producer's largest request is refused here, as aiokafka's send refuses it
    (``MessageSizeTooLargeError``). The batches are closed, so they go without the producer's linger;
    Faust flushes the producer before it commits offsets, as for its own sends. The producer
    takes a partition's next batch only when it has taken the one before, so a caller gathers
    its records (a group of messages) and sends them once.
    """
    if not records:
        return []
    producer = cast(Any, app.producer)._ensure_producer()  # Faust's aiokafka producer
    largest = producer._max_request_size
    for key, value in records:
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
        if size > largest:
            raise MessageSizeTooLargeError(
                f"a record of {size} bytes for {topic}, partition {partition}, is larger "
                f"than the producer's largest request ({largest} bytes)"
            )
    sent: list[Awaitable[Any]] = []
    batch = producer.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:  # full, so closed
            sent.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any
    batch.close()  # closed: sent without the producer's linger
    sent.append(await producer.send_batch(batch, topic, partition=partition))
    return sent


Outbox = dict[tuple[str, int], list[Record]]
"""Records to send, by topic and partition, in the order they were made."""


async def send_outbox(app: faust.App, outbox: Outbox) -> list[Awaitable[Any]]:
    """:func:`send_records` of every topic and partition of ``outbox``."""
    sent: list[Awaitable[Any]] = []
    for (topic, partition), records in outbox.items():
        sent += await send_records(app, topic, partition, records)
    return sent


async def log_changes(
    table: Any, changes: Mapping[str, dict[str, Any] | None], partition: int
) -> list[Awaitable[Any]]:
    """The changelog records of ``changes`` (as :func:`put` made them) on the table's
    ``partition``, sent as :func:`send_records` sends; returns their deliveries.

    Faust writes one record at a time (``table[key] = value``: a message through its producer
    buffer and a send each): with a city's devices each reading is a device of its own in its
    message, and those writes were most of the stage's work. The records here are encoded by
    the changelog topic as Faust encodes them, so its recovery and standbys read them as its
    own.
    """
    topic = table.changelog_topic
    records = [
        (
            topic.prepare_key(key, table.key_serializer)[0],
            # None is a tombstone: recovery deletes the key.
            topic.prepare_value(memory, table.value_serializer)[0] if memory else None,
        )
        for key, memory in changes.items()
    ]
    return await send_records(table.app, topic.get_topic_name(), partition, records)


Changes = dict[int, dict[str, dict[str, Any] | None]]
"""Table entries changed, by partition (a later change of a key replaces an earlier one)."""


async def log_all(table: Any, changed: Changes) -> list[Awaitable[Any]]:
    """:func:`log_changes` of every partition's changes."""
    sent: list[Awaitable[Any]] = []
    for partition, changes in changed.items():
        sent += await log_changes(table, changes, partition)
    return sent


VITALS_PER_MESSAGE = 2_000
"""Most window partials and expected-device changes in one ``indicators.partials`` message."""


def bundle(
    batches: Sequence[IndicatorBatch], limit: int = VITALS_PER_MESSAGE
) -> list[IndicatorBatch]:
    """``batches`` (of one place partition, in order; bundled ones are taken apart) as few
    messages: the first batch of each with the next as its ``more``, up to ``limit``
    partials and changes a message (a larger batch alone). A group of input messages sends
    one such, not a message each: fewer sends, and fewer messages for the broker to keep and
    the place side to take (docs/speed.md says what it changed).

    >>> b = [IndicatorBatch(offset=n, members=(MembershipChange(place_path=("c",),
    ...      device_type="noise", delta=1),) * n) for n in (1, 2, 3)]
    >>> [[x.offset for x in m.each()] for m in bundle(b, limit=3)]
    [[1, 2], [3]]
    """
    messages: list[list[IndicatorBatch]] = []
    held = 0
    singles = (
        b.model_copy(update={"more": ()}) if b.more else b for m in batches for b in m.each()
    )
    for batch in singles:
        size = len(batch.partials) + len(batch.members)
        if held + size > limit or not messages:
            messages.append([])
            held = 0
        messages[-1].append(batch)
        held += size
    return [
        first.model_copy(update={"more": tuple(rest)}) if rest else first
        for first, *rest in messages
    ]


class _Handled(NamedTuple):
    """What :func:`create_app`'s ``handle`` did with one ``readings.raw`` message."""

    forwarded: int
    """Readings and events that go on (the others were refused and dead-lettered)."""
    backlog: int
    """Of those, the ones received before this process started (:func:`backlog`)."""
    changes: dict[str, DeviceState | None]
    """The ``device_state`` entries it changed, whose changelog records the caller writes."""
    vitals: dict[int, IndicatorBatch]
    """Its window partials by place partition, which the caller sends (:func:`bundle`)."""
    judging: float
    """Seconds :func:`~streams.pipeline.process_batch` took on it (``perf_counter``)."""


TAKE_MAX = 100
"""Most ``readings.raw`` messages the stage takes at once."""
PRODUCER_LINGER_S = 0.005
"""How long the producer waits to fill a produce request."""
TAKE_WITHIN_S = 0.005
"""How long the stage waits for a group to fill (a message's added latency at most)."""

GAUGE_LEVELS = frozenset({PlaceLevel.CITY, PlaceLevel.DISTRICT, PlaceLevel.STREET})
"""Levels whose indicators are Prometheus gauges (grids would be too many series)."""


def create_app(
    settings: Settings,
    rules: RuleSet,
    catalogue: Catalogue,
    registry: CollectorRegistry,
    open_alerts: Sequence[OpenAlert] = (),
    incidents: IncidentConfig | None = None,
    open_incidents: Sequence[Tracked] = (),
    place_names: PlaceNames | None = None,
) -> faust.App:
    metrics = StreamMetrics(registry)
    live = LiveRules(rules, settings.rules_file, metrics)
    seeds = seed_memories(open_alerts, rules)
    parsed = ParsedMemories()
    parts = settings.kafka_partitions
    app = faust.App(
        settings.topic(settings.streams_app_id),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        # Faust makes this folder at start (its tables are in memory and write nothing there);
        # by default it is "<app id>-data" in the working folder, one per topic prefix.
        datadir=str(settings.state_dir / "streams-data"),
        web_enabled=False,
        processing_guarantee="at_least_once",
        topic_partitions=parts,
        topic_replication_factor=settings.kafka_replication,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=max(settings.kafka_session_timeout_ms / 3000, 0.5),
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=4_000_000,
        # tansu answers ListOffsets "latest" one short (DESIGN.md), so a worker that gets back
        # a changelog partition it wrote itself found its own offset past the "end" and
        # crashed the recovery (ConsistencyError, seen in the scale-out test).
        recovery_consistency_check=False,
        # Outputs of a group go out in few produce requests, not one each: a socket write
        # per request was a fifth of the stage's CPU.
        producer_linger=PRODUCER_LINGER_S,
        producer_max_batch_size=1_000_000,
        logging_config=None,
    )
    app.transport = Transport(app.conf.broker_consumer, app, fetch_wait_ms=settings.fetch_wait_ms)

    def topic(name: Topic) -> faust.TopicT:
        return app.topic(
            settings.topic(name), key_serializer="raw", value_serializer="raw", partitions=parts
        )

    raw_topic, readings_topic = topic(Topic.READINGS_RAW), topic(Topic.READINGS)
    devices_topic, alerts_topic = topic(Topic.DEVICES), topic(Topic.ALERTS)
    deadletter_topic, places_topic = topic(Topic.DEADLETTER), topic(Topic.PLACE_OBSERVATIONS)
    partials_topic, indicators_topic = topic(Topic.INDICATOR_PARTIALS), topic(Topic.INDICATORS)
    grace = timedelta(seconds=settings.indicators_grace_s)
    incident_metrics = IncidentMetrics(registry)
    incident_config = LiveFile(
        "incident file",
        incidents or load_incident_config(settings.incidents_file),
        settings.incidents_file,
        parse_incident_config,
        incident_metrics.config_errors,
    )
    add_incident_agents(
        app,
        topic,
        deadletter_topic,
        incident_config,
        incident_metrics,
        settings.rules_tick_s,
        open_incidents,
        settings.zone,
        place_names,
        parts,
    )

    devices = app.Table("device_registry", default=None, partitions=parts)
    device_state = app.Table("device_state", default=None, partitions=parts)
    place_state = app.Table("place_rule_state", default=None, partitions=parts)
    members = app.Table("indicator_members", default=None, partitions=parts)
    vitals = app.Table("place_vitals", default=None, partitions=parts)

    watch = LoopWatch()
    for gauge in (metrics.ready, incident_metrics.ready, incident_metrics.desk.ready):
        gauge.set_function(watch.ready)
    metrics.loop_silent.set_function(watch.silent_s)

    @app.on_rebalance_complete.connect
    async def _ready(*_args: Any, **_kw: Any) -> None:
        watch.assigned = True

    @app.on_partitions_revoked.connect
    async def _not_ready(*_args: Any, **_kw: Any) -> None:
        watch.assigned = False

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def beat() -> None:
        watch.beat()

    @app.timer(interval=settings.rules_reload_s)  # type: ignore[untyped-decorator]
    async def reload_rules() -> None:
        live.check()
        if incident_config.check():
            incident_metrics.show(incident_config.current)

    # Each worker ticks the partitions it owns: one tick per partition, whatever the
    # number of workers, and no tick is lost while leadership moves after a restart.
    @app.timer(interval=settings.rules_tick_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        now = utc_now()
        ticks = {
            raw_topic.get_topic_name(): (raw_topic, ReadingBatch(tick=now)),
            places_topic.get_topic_name(): (places_topic, PlaceBatch(tick=now)),
            partials_topic.get_topic_name(): (partials_topic, IndicatorBatch(tick=now)),
        }
        sent = []
        for tp in app.assignor.assigned_actives():
            if tp.topic in ticks:
                target, message = ticks[tp.topic]
                value = message.model_dump_json().encode()
                sent.append(await target.send(value=value, partition=tp.partition))
        await asyncio.gather(*sent)

    def on_partition(keys: Any, partition: int) -> list[str]:
        return [k for k in keys if partition_for(k, parts) == partition]

    async def decode(event: Any, model: type[M], label: str) -> tuple[str, M | None]:
        """The event's source and its value as ``model``; None (counted under ``label`` and
        dead-lettered) when it does not decode."""
        msg = event.message
        source = kafka_source(msg.topic, msg.partition)
        try:
            if event.value is None:
                raise ValueError(NO_VALUE)
            return source, model.model_validate_json(event.value)
        except (ValidationError, ValueError) as exc:
            metrics.received.inc()
            metrics.refuse(label)
            reason = ": ".join(problems(exc)) if isinstance(exc, ValidationError) else str(exc)
            letter = dead_letter("streams", reason, event.value, source, cause=label)
            await confirmed(functools.partial(send_one, deadletter_topic, letter), "a dead letter")
            return source, None

    async def decoded(
        stream: faust.StreamT[bytes], model: type[M], label: str
    ) -> AsyncIterator[tuple[Any, str, M]]:
        """Each message of ``stream`` as ``model``, with its Kafka message and source; one
        that does not decode is counted under ``label`` and dead-lettered."""
        async for event in stream.events():
            source, item = await decode(event, model, label)
            if item is not None:
                yield event.message, source, item

    async def decoded_groups(
        stream: faust.StreamT[bytes], model: type[M], label: str
    ) -> AsyncIterator[tuple[float, list[tuple[Any, str, M]]]]:
        """As :func:`decoded`, a group at a time: what arrived within ``TAKE_WITHIN_S``, at
        most ``TAKE_MAX`` messages, with the seconds (``perf_counter``) decoding it took.
        Each item comes with its Faust event: make it the current one (:func:`current`)
        before writing a table for it through Faust (``table[key] =``; :func:`put` and
        :func:`log_changes` need none)."""
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):  # type: ignore[attr-defined]
            taken = time.perf_counter()
            group = []
            for event in events:
                source, item = await decode(event, model, label)
                if item is not None:
                    group.append((event, source, item))
            yield time.perf_counter() - taken, group

    def vitals_batches(
        source: str,
        offset: int,
        partials: list[WindowPartial],
        members: list[MembershipChange],
    ) -> dict[int, IndicatorBatch]:
        """One input message's window partials and expected-device changes, by the places'
        partitions."""
        grouped: dict[int, tuple[list[WindowPartial], list[MembershipChange]]] = defaultdict(
            lambda: ([], [])
        )
        for partial in partials:
            grouped[partition_for(partial.place_path[-1], parts)][0].append(partial)
        for change in members:
            grouped[partition_for(change.place_path[-1], parts)][1].append(change)
        return {
            place_partition: IndicatorBatch(
                source=source, offset=offset, partials=tuple(mine), members=tuple(changes)
            )
            for place_partition, (mine, changes) in grouped.items()
        }

    async def send_vitals(batches: Mapping[int, Sequence[IndicatorBatch]]) -> list[Awaitable[Any]]:
        """Each place partition's batches, bundled (:func:`bundle`); their deliveries."""
        return [
            await partials_topic.send(value=message.model_dump_json().encode(), partition=p)
            for p, mine in batches.items()
            for message in bundle(mine)
        ]

    alerts_name, deadletter_name = alerts_topic.get_topic_name(), deadletter_topic.get_topic_name()
    readings_name, places_name = readings_topic.get_topic_name(), places_topic.get_topic_name()

    def alert_records(alerts: list[Alert], by_place: bool = False) -> list[Record]:
        """The alerts, counted, as ``alerts`` records keyed by device; ``by_place``: a place's
        composite alerts, keyed by the place whose partition they go to (an episode's device
        may change from one transition to the next, its place does not)."""
        for alert in alerts:
            metrics.alerts.labels(alert.status.value, alert.level.value).inc()
        return [
            (
                (a.place_path[-1] if by_place and a.place_path else a.device_id).encode(),
                a.model_dump_json().encode(),
            )
            for a in alerts
        ]

    @app.agent(devices_topic)
    async def registry_feed(stream: faust.StreamT[bytes]) -> None:
        async for msg, source, device in decoded(stream, Device, "bad_device"):
            new = registry_entry(device)
            if is_newer(device, devices.get(device.device_id)):
                devices[device.device_id] = new
                metrics.devices.set(len(devices))
            # Expected devices per place follow this feed only, with a table of its own:
            # the in-band copy of the same change must not count it twice.
            old = members.get(device.device_id)
            if is_newer(device, old):
                changes = membership(old, new)
                members[device.device_id] = new
                if changes:
                    batches = vitals_batches(source, msg.offset, [], changes)
                    each = {p: [b] for p, b in batches.items()}
                    await confirmed(functools.partial(send_vitals, each), "a membership change")

    # When this process started, as its metrics give it to the audit.
    started_s = registry.get_sample_value(STARTED)
    began = None if started_s is None else datetime.fromtimestamp(started_s, UTC)

    async def handle(msg: Any, source: str, batch: ReadingBatch, outbox: Outbox) -> _Handled:
        """One ``readings.raw`` message: judged, tables updated, its enriched readings, alerts
        and observations for the places put in ``outbox``, its dead letters handed to the
        producer. Its window partials and changelog records are returned: the caller sends
        them, and the outbox, for a group of messages at once (:class:`_Handled`)."""
        partition = msg.partition
        metrics.received.inc(len(batch))
        if batch.tick is not None:  # every device here: absence may be new to some
            ids = set(on_partition(list(devices.keys()), partition))
        else:
            ids = device_ids(batch)
        held: dict[str, DeviceState] = {d: device_state.get(d) or {} for d in ids}
        seeded: dict[str, DeviceState | None] = {}
        for device_id in ids & seeds.devices.keys():
            seed = seeds.take("device", device_id, held[device_id].get("rules"))
            if seed is not None:
                held[device_id] = seeded[device_id] = {**held[device_id], "rules": seed}
        started = time.perf_counter()
        outcome = process_batch(
            batch,
            {d: devices.get(d) for d in ids},
            {d: held[d].get("rules") for d in ids},
            live.current,
            # its place in Kafka with the offset: a reading replayed (cityvitals replay) and
            # refused again is a new dead letter, not the old one's redelivery (letter_key)
            kafka_source(msg.topic, msg.partition, msg.offset),
            utc_now(),
            catalogue,
            {d: held[d].get("marks") for d in ids},
            msg.offset,
            parsed,
        )
        judging = time.perf_counter() - started
        if len(outcome.enriched):
            value = outcome.enriched.to_json()
            outbox[(readings_name, partition)].append((None, value))
        if batch.heartbeat is not None:  # the gateway's: on to liveness, the intake works
            value = ReadingBatch(heartbeat=batch.heartbeat).to_json()
            outbox[(readings_name, partition)].append((None, value))
        outbox[(alerts_name, partition)] += alert_records(outcome.alerts)
        for letter in outcome.dead_letters:
            key = letter.device_id or ""
            record = (key.encode(), letter.model_dump_json().encode())
            outbox[(deadletter_name, partition_for(key, parts))].append(record)
        by_place: dict[int, list[PlaceObservation]] = defaultdict(list)
        for obs in outcome.for_places:
            by_place[partition_for(obs.place_path[-1], parts)].append(obs)
        for place_partition, group in by_place.items():
            value = PlaceBatch(observations=tuple(group)).model_dump_json().encode()
            outbox[(places_name, place_partition)].append((None, value))
        for reason, count in outcome.refused.items():
            metrics.rejected.labels(reason).inc(count)
        metrics.out_of_order.inc(outcome.out_of_order)
        metrics.values_refused.inc(outcome.values_refused)
        metrics.evaluations.inc(outcome.evaluations)
        for device_id, entry in outcome.changed_devices.items():
            devices[device_id] = entry
        if outcome.changed_devices:
            metrics.devices.set(len(devices))
        changes = seeded | device_changes(held, outcome.changed_states, outcome.changed_marks)
        put(device_state, changes)
        vitals = vitals_batches(source, msg.offset, outcome.partials, [])
        late = backlog(outcome.enriched, began)
        return _Handled(len(outcome.enriched), late, changes, vitals, judging)

    async def send_group(
        outbox: Outbox, vitals: Mapping[int, Sequence[IndicatorBatch]], changed: Changes
    ) -> list[Awaitable[Any]]:
        """A group's outputs: each topic partition once, each place partition's window
        partials once, each device's changelog record once; every part is handed over even
        if one before it failed."""
        sent: list[Awaitable[Any]] = []
        try:
            sent += await send_outbox(app, outbox)
        finally:
            try:
                sent += await send_vitals(vitals)
            finally:
                sent += await log_all(device_state, changed)
        return sent

    decoding, judging, handing, confirming = (
        metrics.group_seconds.labels(p) for p in ("decode", "judge", "hand", "confirm")
    )

    @app.agent(raw_topic)
    async def process(stream: faust.StreamT[bytes]) -> None:
        # Messages are taken in groups and their outputs awaited once per group: waiting
        # for Kafka's confirmation message by message would cap the stage at one round trip
        # per message. A group's offsets are committed only after all its outputs were
        # confirmed (Faust acknowledges the events of a group when the next is taken).
        async for decoded_in, group in decoded_groups(stream, ReadingBatch, "bad_batch"):
            started = time.perf_counter()
            forwarded = backlogged = 0
            judged_in = 0.0
            outbox: Outbox = defaultdict(list)
            changed: Changes = defaultdict(dict)
            vitals: dict[int, list[IndicatorBatch]] = defaultdict(list)
            send = functools.partial(send_group, outbox, vitals, changed)
            try:
                for event, source, batch in group:
                    current(event)
                    handled = await handle(event.message, source, batch, outbox)
                    forwarded += handled.forwarded
                    backlogged += handled.backlog
                    judged_in += handled.judging
                    changed[event.message.partition].update(handled.changes)
                    for place_partition, part in handled.vitals.items():
                        vitals[place_partition].append(part)
            except BaseException:  # what was put in the table goes to its changelog
                await send()
                raise
            sent = await hand_over(send)
            handed = time.perf_counter()
            await confirmed(send, "a group of readings.raw", sent)
            metrics.forwarded.inc(forwarded)  # counted together, once confirmed
            metrics.backlog.inc(backlogged)
            decoding.observe(decoded_in)
            judging.observe(judged_in)
            handing.observe(max(handed - started - judged_in, 0.0))
            confirming.observe(time.perf_counter() - handed)
            metrics.group_size.observe(len(group))

    async def send_place(
        partition: int, records: Sequence[Record], changes: Mapping[str, dict[str, Any] | None]
    ) -> list[Awaitable[Any]]:
        """A place message's alerts and its rule memory's changelog records."""
        sent = await send_records(app, alerts_name, partition, records)
        return sent + await log_changes(place_state, changes, partition)

    async def send_indicators(changed: Changes, reported: list[Indicator]) -> list[Awaitable[Any]]:
        """A group's window changelog records and the indicators it closed."""
        sent = await log_all(vitals, changed)
        for i in reported:
            value = i.model_dump_json().encode()
            sent.append(await indicators_topic.send(key=i.place_id.encode(), value=value))
        return sent

    @app.agent(places_topic)
    async def places(stream: faust.StreamT[bytes]) -> None:
        async for msg, _source, batch in decoded(stream, PlaceBatch, "bad_place_batch"):
            partition = msg.partition
            if batch.tick is not None:
                ids = on_partition([*place_state.keys(), *seeds.places], partition)
            else:
                ids = [o.place_path[-1] for o in batch.observations]
            held = {p: place_state.get(p) for p in ids}
            seeded: dict[str, dict[str, Any] | None] = {}
            for place_id in seeds.places.keys() & set(ids):
                seed = seeds.take("place", place_id, held[place_id])
                if seed is not None:
                    held[place_id] = seeded[place_id] = seed
            outcome = process_places(batch, held, live.current)
            records = alert_records(outcome.alerts, by_place=True)
            changes = seeded | outcome.changed_states
            put(place_state, changes)
            send = functools.partial(send_place, partition, records, changes)
            await confirmed(send, "an observations.places message")

    @app.agent(partials_topic)
    async def place_vitals(stream: faust.StreamT[bytes]) -> None:
        async for _decoding, group in decoded_groups(stream, IndicatorBatch, "bad_indicator_batch"):
            changed: Changes = defaultdict(dict)
            reported: list[Indicator] = []
            try:
                for event, _source, message in group:
                    partition = event.message.partition
                    for batch in message.each():
                        if batch.tick is None:
                            paths = {p.place_path for p in batch.partials}
                            paths.update(c.place_path for c in batch.members)
                            for path in sorted(paths):
                                memory = apply(vitals.get(path[-1]), path, batch)
                                put(vitals, {path[-1]: memory})
                                changed[partition][path[-1]] = memory
                            continue
                        for place_id in on_partition(list(vitals.keys()), partition):
                            memory, found = close(vitals[place_id], catalogue, batch.tick, grace)
                            if found or memory != vitals[place_id]:
                                put(vitals, {place_id: memory})
                                changed[partition][place_id] = memory
                            reported += found
            except BaseException:  # as in process
                await log_all(vitals, changed)
                raise
            send = functools.partial(send_indicators, changed, reported)
            sent = await hand_over(send)
            for i in reported:
                metrics.indicators.labels(i.quality.value).inc()
                if i.place_level in GAUGE_LEVELS:
                    labels = (i.indicator, i.place_id, i.place_level.value)
                    metrics.coverage.labels(*labels).set(i.coverage)
                    if i.value is not None:
                        metrics.indicator.labels(*labels).set(i.value)
            await confirmed(send, "a group of indicators.partials", sent)

    return app
