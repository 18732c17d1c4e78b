"""What the stream processor does with one message, in plain Python (no Faust).

:func:`process_batch` applies a batch's in-band registry changes, then checks and enriches
each reading and camera event from the device registry (:mod:`streams.validation`), runs the
device rules over it and returns the enriched batch, the alert transitions, the refused
items, the values composite rules judge per place, and the rule memories that changed.
:func:`process_places` judges those values on the place's partition. A batch with a ``tick``
judges silence instead. The rule memory of a stream that starts with none comes from the
alerts still open in the database (:mod:`streams.seeds`). The Faust agents only move bytes
in and out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic_core import TzInfo

from cityvitals.contracts import (
    Alert,
    CameraEvent,
    DeadLetter,
    DeviceState,
    PlaceBatch,
    PlaceObservation,
    Reading,
    ReadingBatch,
    WindowPartial,
)
from rules import (
    Arrival,
    DeviceMemory,
    Observation,
    PlaceMemory,
    RuleSet,
    evaluate_device,
    evaluate_place,
    observations,
    sweep_device,
    sweep_place,
    withdraw_device,
)
from rules.indicators import Catalogue
from streams.partials import Partials, copy_marks
from streams.validation import (
    FUTURE_TOLERANCE,
    PAST_TOLERANCE,
    VALUES_REFUSED,
    ahead,
    enrich,
    is_newer,
    problem,
    refusal,
    registry_entry,
    span,
    split_values,
    too_old,
    value_faults,
)

OUT_OF_SERVICE = frozenset({DeviceState.SUSPENDED.value, DeviceState.RETIRED.value})
"""The states of a device whose open alerts a tick closes."""

__all__ = [
    "STAGE_FAILED",
    "BatchOutcome",
    "Memories",
    "ParsedMemories",
    "PlaceOutcome",
    "backlog",
    "device_ids",
    "process_batch",
    "process_places",
    "sweep_devices",
]

log = logging.getLogger("cityvitals.streams")

STAGE_FAILED = "stage_failed"
"""The refusal kind of an item the stage failed on (a defect, or a value nothing foresaw): it
is dead-lettered with the error, and the rest of its batch goes on. Its rule memory and alerts
are not kept; an indicator it was being folded into when the error came may keep part of it
(values an indicator cannot fold are refused before, as out of range)."""

Memories = Mapping[str, dict[str, Any] | None]
"""Rule memory by device (or place) id, as kept in the stream's tables (plain JSON)."""


@dataclass
class BatchOutcome:
    enriched: ReadingBatch
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    """Dead letters by reason kind (unknown, inactive, out_of_range, future, late,
    stage_failed)."""
    out_of_order: int = 0
    """Readings stored but not judged: not newer than their device's newest, within grace."""
    values_refused: int = 0
    """Readings taken whose other values were refused (a dead letter each, beside
    :attr:`refused`)."""
    for_places: list[PlaceObservation] = field(default_factory=list)
    changed_states: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """New rule memory by device; None to delete it."""
    changed_devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluations: int = 0
    partials: list[WindowPartial] = field(default_factory=list)
    """Indicator window states to merge on the places' partitions."""
    changed_marks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per device, the window each indicator last counted it in."""

    def refuse(
        self, item: Reading | CameraEvent, reason: str, kind: str, source: str, now: datetime
    ) -> None:
        """Count ``item`` refused as ``kind`` and keep its dead letter."""
        self.refused[kind] += 1
        self.dead_letters.append(refusal(item, reason, kind, source, now))


class ParsedMemories:
    """Device memories as the rules hold them, each with the table value it was parsed from
    or written as, kept from batch to batch (parsing them was a twentieth of the stage's work).

    The table stays the source of truth: a memory is used only while the table holds that
    very value (the same object), so a value recovered after a rebalance, a seed or any other
    write is parsed afresh. Bounded: forgotten past ``size`` devices.
    """

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._held: dict[str, tuple[dict[str, Any], DeviceMemory]] = {}

    def get(self, device_id: str, stored: dict[str, Any] | None) -> DeviceMemory:
        held = self._held.get(device_id)
        if held is not None and held[0] is stored:
            return held[1]
        memory = DeviceMemory.from_json(stored)
        if stored is not None:
            self.put(device_id, stored, memory)
        return memory

    def put(self, device_id: str, stored: dict[str, Any], memory: DeviceMemory) -> None:
        if len(self._held) >= self.size:
            self._held.clear()
        self._held[device_id] = (stored, memory)


class _Memories:
    """Device memories read once per batch, written back once per batch."""

    def __init__(self, stored: Memories, parsed: ParsedMemories) -> None:
        self.stored = stored
        self.parsed = parsed
        self.loaded: dict[str, DeviceMemory] = {}
        self.changed: set[str] = set()

    def get(self, device_id: str) -> DeviceMemory:
        memory = self.loaded.get(device_id)
        if memory is None:
            stored = self.stored.get(device_id)
            memory = self.loaded[device_id] = self.parsed.get(device_id, stored)
        return memory

    def put(self, device_id: str, memory: DeviceMemory) -> None:
        self.loaded[device_id] = memory
        self.changed.add(device_id)

    def dump(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for device_id in self.changed:
            memory = self.loaded[device_id]
            if memory.watermark or memory.rules:
                out[device_id] = stored = memory.to_json()
                self.parsed.put(device_id, stored, memory)
            else:
                out[device_id] = None
        return out


def process_batch(
    batch: ReadingBatch,
    devices: Mapping[str, Mapping[str, Any] | None],
    states: Memories,
    rules: RuleSet,
    source: str,
    now: datetime,
    catalogue: Catalogue | None = None,
    marks: Mapping[str, dict[str, Any] | None] | None = None,
    offset: int = -1,
    parsed: ParsedMemories | None = None,
) -> BatchOutcome:
    """Enrich, judge, and collect what to send. Inputs are not modified. ``parsed``: the
    memories parsed in earlier batches, to use while ``states`` holds the same values."""
    out = BatchOutcome(enriched=ReadingBatch())
    for device in batch.devices:
        old = out.changed_devices.get(device.device_id) or devices.get(device.device_id)
        if is_newer(device, old):
            out.changed_devices[device.device_id] = registry_entry(device)
    partials = Partials(catalogue) if catalogue is not None else None
    memories = _Memories(states, parsed or ParsedMemories())
    readings: list[Reading] = []
    events: list[CameraEvent] = []
    items: tuple[Reading | CameraEvent, ...] = (*batch.readings, *batch.camera_events)
    limit, earliest = now + FUTURE_TOLERANCE, now - PAST_TOLERANCE
    for item in items:
        device_id = item.device_id
        entry = out.changed_devices.get(device_id) or devices.get(device_id)
        why, kind = problem(item, entry)
        if why is not None:
            out.refuse(item, why, kind, source, now)
            continue
        assert entry is not None
        taken: Reading | CameraEvent = item
        part: tuple[Reading, str] | None = None  # the values refused, once the rest is taken
        if isinstance(item, Reading) and (faults := value_faults(device_id, item.values, entry)):
            if len(faults) == len(item.values):
                out.refuse(item, "; ".join(f[1] for f in faults), faults[0][2], source, now)
                continue
            taken, refused_part, said = split_values(item, faults)
            part = (refused_part, said)
        try:
            enriched = enrich(taken, entry)
            future = ahead(enriched.ts, now, limit)
            if future is not None:
                out.refuse(item, future, "future", source, now)
                continue
            received = item.received_at  # another producer's, on readings.raw: liveness
            if received is not None and received > limit:  # would take it as seen until then
                late_by = ahead(received, now, limit, "received_at")
                assert late_by is not None
                out.refuse(item, late_by, "future", source, now)
                continue
            past = too_old(enriched.ts, now, earliest)
            if past is not None:
                out.refuse(item, past, "too_old", source, now)
                continue
            unfit = partials.refuses(enriched) if partials is not None else None
            if unfit is not None:
                out.refuse(item, unfit, "out_of_range", source, now)
                continue
            memory = memories.get(device_id)
            judged = evaluate_device(
                rules,
                memory,
                observations(
                    enriched,
                    entry.get("profile_id"),
                    tuple(entry.get("tags", ())),
                    entry.get("expected_interval_s"),
                ),
            )
            if judged.arrival is Arrival.LATE:
                assert memory.watermark is not None
                behind = (memory.watermark - item.ts).total_seconds()
                reason = (
                    f"late: {span(behind)} behind the device's newest reading "
                    f"(grace {span(rules.grace.total_seconds())})"
                )
                out.refuse(item, reason, "late", source, now)
                continue
            if partials is not None:
                device_marks = out.changed_marks.get(device_id)
                if device_marks is None:
                    device_marks = copy_marks((marks or {}).get(device_id))
                if partials.add(enriched, device_marks, offset, entry.get("expected_interval_s")):
                    out.changed_marks[device_id] = device_marks
        except Exception as exc:  # one item the stage cannot judge, not its batch
            if not out.refused[STAGE_FAILED]:  # the traceback, once a batch
                log.exception("the stage failed on an item of %s from %s", device_id, source)
            reason = f"the stream stage failed on it: {type(exc).__name__}: {exc}"
            out.refuse(item, reason, STAGE_FAILED, source, now)
            continue
        if part is not None:  # the reading is taken: its refused values alone are kept
            out.values_refused += 1
            out.dead_letters.append(refusal(part[0], part[1], VALUES_REFUSED, source, now))
        if judged.arrival is Arrival.OUT_OF_ORDER:
            out.out_of_order += 1
        else:
            memories.put(device_id, judged.memory)
        out.alerts.extend(judged.alerts)
        out.for_places.extend(judged.for_places)
        out.evaluations += judged.evaluations
        if isinstance(enriched, Reading):
            readings.append(enriched)
        else:
            events.append(enriched)
    if batch.tick is not None:
        tick = sweep_devices(memories, devices, out.changed_devices, rules, batch.tick)
        out.alerts.extend(tick.alerts)
        out.evaluations += tick.evaluations
    out.changed_states = memories.dump()
    # Made of items validated already: constructed, not validated again.
    out.enriched = ReadingBatch.model_construct(
        readings=tuple(readings), camera_events=tuple(events)
    )
    if partials is not None:
        out.partials = partials.partials()
    return out


@dataclass
class _Sweep:
    alerts: list[Alert] = field(default_factory=list)
    evaluations: int = 0


def sweep_devices(
    memories: _Memories,
    devices: Mapping[str, Mapping[str, Any] | None],
    changed_devices: Mapping[str, Mapping[str, Any]],
    rules: RuleSet,
    now: datetime,
) -> _Sweep:
    """A clock tick over every device whose memory was given: judge silence at ``now``.
    Devices that are not active are not judged (their silence is expected); the open alerts
    of one taken out of service (suspended, retired) are closed."""
    out = _Sweep()
    for device_id in list(memories.stored):
        entry = changed_devices.get(device_id) or devices.get(device_id)
        if entry is None:
            continue
        state = entry["state"]
        if state != DeviceState.ACTIVE:
            if state in OUT_OF_SERVICE:
                memory = memories.get(device_id)
                why = f"no longer applies: its device is {state}"
                gone = withdraw_device(memory, tuple(entry["place_path"]), now, why)
                if gone.memory is not memory:
                    memories.put(device_id, gone.memory)
                out.alerts.extend(gone.alerts)
            continue
        subject = Observation(
            device_id,
            entry["device_type"],
            tuple(entry["place_path"]),
            "",
            0.0,
            now,
            1.0,
            entry.get("profile_id"),
            tuple(entry.get("tags", ())),
            entry.get("expected_interval_s"),
        )
        memory = memories.get(device_id)
        swept = sweep_device(rules, memory, subject, now)
        out.evaluations += swept.evaluations
        if swept.memory is not memory:
            memories.put(device_id, swept.memory)
        out.alerts.extend(swept.alerts)
    return out


@dataclass
class PlaceOutcome:
    alerts: list[Alert] = field(default_factory=list)
    changed_states: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """New composite memory by place id; None to delete it."""


def process_places(batch: PlaceBatch, states: Memories, rules: RuleSet) -> PlaceOutcome:
    """Judge composite rules on one partition's places: each observation, then any tick
    over every place whose memory was given."""
    out = PlaceOutcome()
    loaded: dict[str, PlaceMemory] = {}

    def memory(place_id: str) -> PlaceMemory | None:
        if place_id not in loaded:
            raw = states.get(place_id)
            if raw is None:
                return None
            loaded[place_id] = PlaceMemory.from_json(raw)
        return loaded[place_id]

    for obs in batch.observations:
        place_id = obs.place_path[-1]
        loaded[place_id], alerts = evaluate_place(rules, memory(place_id), obs)
        out.alerts.extend(alerts)
    if batch.tick is not None:
        # Readings that are still on their way (within the grace) keep their window open.
        now = batch.tick - rules.grace
        for place_id in list(states):
            current = memory(place_id)
            if current is not None and current.place_path:
                loaded[place_id], alerts = sweep_place(rules, current, now)
                out.alerts.extend(alerts)
    for place_id, mem in loaded.items():
        new = mem.to_json() if mem.rules else None
        if new != states.get(place_id):
            out.changed_states[place_id] = new
    return out


def backlog(batch: ReadingBatch, began: datetime | None) -> int:
    """Its readings and events the gateway received before ``began`` (this process's start,
    as its metrics give it to the audit), or at no known time: a backlog held on
    ``readings.raw`` across a restart. None when the start is not known: then the audit
    counts the whole database, and no item is left out.

    >>> from datetime import UTC, timedelta
    >>> from cityvitals.contracts import Reading
    >>> t = datetime(2026, 12, 3, 12, tzinfo=UTC)
    >>> def r(received: datetime | None) -> Reading:
    ...     return Reading(device_id="a", ts=t, seq=1, values={"m": 1}, received_at=received)
    >>> east = timezone(timedelta(hours=8))
    >>> batch = ReadingBatch(readings=(r(None), r(t), r(t.replace(hour=13)), r(t.astimezone(east))))
    >>> backlog(batch, t.replace(hour=13)), backlog(batch, t), backlog(batch, None)
    (3, 1, 0)
    """
    if began is None:
        return 0
    late = 0
    zone: object = None  # the fixed-offset zone ``start`` is in
    start = began
    items: tuple[Reading | CameraEvent, ...] = (*batch.readings, *batch.camera_events)
    for item in items:
        received = item.received_at
        if received is None:
            late += 1
            continue
        here = received.tzinfo
        if here is not zone and (type(here) is TzInfo or type(here) is timezone):
            # Both in one zone object, an instant compares without asking either's offset
            # (the decoded instants share pydantic's zone, which is slow to ask).
            zone, start = here, began.astimezone(here)
        if received < (start if here is zone else began):
            late += 1
    return late


def device_ids(batch: ReadingBatch) -> set[str]:
    """The devices a batch names: its registry changes', readings' and camera events'."""
    ids = {d.device_id for d in batch.devices}
    for reading in batch.readings:
        ids.add(reading.device_id)
    for event in batch.camera_events:
        ids.add(event.camera_id)
    return ids
