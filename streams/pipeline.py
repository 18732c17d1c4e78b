"""What the stream processor does with one message, in plain Python (no Faust).

:func:`process_batch` applies a batch's in-band registry changes, then validates and enriches
each reading and camera event from the device registry, runs the device rules over it and
returns the enriched batch, the alert transitions, the refused items, the values composite
rules judge per place, and the rule memories that changed. :func:`process_places` judges
those values on the place's partition. A batch with a ``tick`` judges silence instead.
:func:`seed_memories` turns the alerts still open in the database into rule memory, for a
stream that starts with no memory (the local stack's Kafka keeps nothing across a restart).
The Faust agents only move bytes in and out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cityvitals.contracts import (
    Alert,
    AlertStatus,
    CameraEvent,
    DeadLetter,
    Device,
    DeviceState,
    PlaceBatch,
    PlaceObservation,
    Reading,
    ReadingBatch,
    WarningLevel,
    WindowPartial,
)
from cityvitals.stage import dead_letter
from rules import (
    AlertState,
    Arrival,
    CompositeRule,
    DeviceMemory,
    Observation,
    PlaceMemory,
    RuleSet,
    evaluate_device,
    evaluate_place,
    observations,
    sweep_device,
    sweep_place,
)
from rules.indicators import Catalogue
from streams.vitals import Partials

__all__ = [
    "FUTURE_TOLERANCE",
    "BatchOutcome",
    "Memories",
    "OpenAlert",
    "PlaceOutcome",
    "Seeds",
    "is_newer",
    "process_batch",
    "process_places",
    "registry_entry",
    "seed_memories",
    "sweep_devices",
]

FUTURE_TOLERANCE = timedelta(minutes=10)
"""A reading stamped further ahead of the stream's clock is refused: it would move its
device's watermark into the future and make every later reading late."""

Memories = Mapping[str, dict[str, Any] | None]
"""Rule memory by device (or place) id, as kept in the stream's tables (plain JSON)."""


def registry_entry(device: Device) -> dict[str, Any]:
    """The slice of a Device the stream needs per reading, kept small in the table."""
    return {
        "device_type": device.device_type,
        "profile_id": device.profile_id,
        "place_path": list(device.place_path),
        "tags": list(device.tags),
        "state": device.state.value,
        "updated_at": device.updated_at.isoformat(),
        "valid_ranges": {m: list(r) for m, r in device.valid_ranges.items()},
        "expected_interval_s": device.expected_interval_s,
    }


def out_of_range(values: Mapping[str, float], ranges: Mapping[str, Any]) -> str | None:
    """The first value outside its profile's valid range, described; None if all are valid."""
    for metric, value in values.items():
        low, high = ranges.get(metric, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{metric}={value:g} is outside the profile's valid range [{low}, {high}]"
    return None


def is_newer(device: Device, entry: Mapping[str, Any] | None) -> bool:
    """Whether a registry change is newer than what the table holds (last writer wins)."""
    return entry is None or device.updated_at >= datetime.fromisoformat(entry["updated_at"])


@dataclass
class BatchOutcome:
    enriched: ReadingBatch
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    """Dead letters by reason kind (unknown, inactive, out_of_range, future, late)."""
    out_of_order: int = 0
    """Readings stored but not judged: not newer than their device's newest, within grace."""
    for_places: list[PlaceObservation] = field(default_factory=list)
    changed_states: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """New rule memory by device; None to delete it."""
    changed_devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluations: int = 0
    partials: list[WindowPartial] = field(default_factory=list)
    """Indicator window states to merge on the places' partitions."""
    changed_marks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per device, the window each indicator last counted it in."""


def _refusal(item: Reading | CameraEvent, reason: str, source: str, now: datetime) -> DeadLetter:
    payload = item.model_dump_json().encode()
    return dead_letter(
        "streams", reason, payload, source, device_id=item.device_id, received_at=now
    )


class _Memories:
    """Device memories read once per batch, written back once per batch."""

    def __init__(self, stored: Memories) -> None:
        self.stored = stored
        self.loaded: dict[str, DeviceMemory] = {}
        self.changed: set[str] = set()

    def get(self, device_id: str) -> DeviceMemory:
        memory = self.loaded.get(device_id)
        if memory is None:
            memory = self.loaded[device_id] = DeviceMemory.from_json(self.stored.get(device_id))
        return memory

    def put(self, device_id: str, memory: DeviceMemory) -> None:
        self.loaded[device_id] = memory
        self.changed.add(device_id)

    def dump(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for device_id in self.changed:
            memory = self.loaded[device_id]
            out[device_id] = memory.to_json() if memory.watermark or memory.rules else None
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
) -> BatchOutcome:
    """Enrich, judge, and collect what to send. Inputs are not modified."""
    out = BatchOutcome(enriched=ReadingBatch())
    for device in batch.devices:
        old = out.changed_devices.get(device.device_id) or devices.get(device.device_id)
        if is_newer(device, old):
            out.changed_devices[device.device_id] = registry_entry(device)
    partials = Partials(catalogue) if catalogue is not None else None
    memories = _Memories(states)
    readings: list[Reading] = []
    events: list[CameraEvent] = []
    items: tuple[Reading | CameraEvent, ...] = (*batch.readings, *batch.camera_events)
    for item in items:
        entry = out.changed_devices.get(item.device_id) or devices.get(item.device_id)
        problem, kind = _problem(item, entry, now)
        if problem is not None:
            out.refused[kind] += 1
            out.dead_letters.append(_refusal(item, problem, source, now))
            continue
        assert entry is not None
        enriched = item.model_copy(
            update={"device_type": entry["device_type"], "place_path": tuple(entry["place_path"])}
        )
        memory = memories.get(item.device_id)
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
                f"late: {behind:.0f} s behind the device's newest reading "
                f"(grace {rules.grace.total_seconds():.0f} s)"
            )
            out.refused["late"] += 1
            out.dead_letters.append(_refusal(item, reason, source, now))
            continue
        if judged.arrival is Arrival.OUT_OF_ORDER:
            out.out_of_order += 1
        else:
            memories.put(item.device_id, judged.memory)
        out.alerts.extend(judged.alerts)
        out.for_places.extend(judged.for_places)
        out.evaluations += judged.evaluations
        if isinstance(enriched, Reading):
            readings.append(enriched)
        else:
            events.append(enriched)
        if partials is not None:
            device_marks = out.changed_marks.get(item.device_id)
            if device_marks is None:
                stored = (marks or {}).get(item.device_id) or {}
                device_marks = {"t": list(stored.get("t", [])), "w": dict(stored.get("w", {}))}
            if partials.add(enriched, device_marks, offset):
                out.changed_marks[item.device_id] = device_marks
    if batch.tick is not None:
        tick = sweep_devices(memories, devices, out.changed_devices, rules, batch.tick)
        out.alerts.extend(tick.alerts)
        out.evaluations += tick.evaluations
    out.changed_states = memories.dump()
    out.enriched = ReadingBatch(readings=tuple(readings), camera_events=tuple(events))
    if partials is not None:
        out.partials = partials.partials()
    return out


PROCESSED_STATES = frozenset({DeviceState.ACTIVE, DeviceState.PROVISIONED})
"""A provisioned device's first valid reading is processed (the liveness service then asks
the registry to activate it); a suspended or retired device's readings are refused."""


def unlisted_metric(
    device_id: str, values: Mapping[str, float], entry: Mapping[str, Any]
) -> str | None:
    """The first metric the device's profile does not list, described; None if all are listed.

    A device with a profile may send only its profile's metrics (the registry publishes them
    as ``valid_ranges``); a device without a profile is not limited.
    """
    profile_id = entry.get("profile_id")
    if profile_id is None:
        return None
    listed = entry.get("valid_ranges") or {}
    for metric in values:
        if metric not in listed:
            return (
                f"metric {metric!r} is not in profile {profile_id!r} of device {device_id!r} "
                f"(it lists: {', '.join(sorted(listed)) or 'no metrics'})"
            )
    return None


def _problem(
    item: Reading | CameraEvent, entry: Mapping[str, Any] | None, now: datetime
) -> tuple[str | None, str]:
    if entry is None:
        return f"unknown device {item.device_id!r}: not in the registry", "unknown_device"
    if entry["state"] not in PROCESSED_STATES:
        state = entry["state"]
        return f"device {item.device_id!r} is {state}, not active or provisioned", "inactive_device"
    if isinstance(item, Reading):
        if problem := unlisted_metric(item.device_id, item.values, entry):
            return problem, "unlisted_metric"
        ranges = entry.get("valid_ranges")
        if ranges and (problem := out_of_range(item.values, ranges)):
            return problem, "out_of_range"
    if item.ts > now + FUTURE_TOLERANCE:
        ahead = (item.ts - now).total_seconds()
        return f"ts {item.ts.isoformat()} is {ahead:.0f} s ahead of the stream's clock", "future"
    return None, ""


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
    Devices that are not active are left alone (their silence is expected)."""
    out = _Sweep()
    for device_id in list(memories.stored):
        entry = changed_devices.get(device_id) or devices.get(device_id)
        if entry is None or entry["state"] != DeviceState.ACTIVE:
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


# --- resuming after a restart -----------------------------------------------------------------


@dataclass(frozen=True)
class OpenAlert:
    """An alert episode the database still shows firing, as the stream needs it back."""

    alert: Alert
    """Its latest transition as stored (``ts`` is when that transition happened)."""
    peak_level: WarningLevel
    """The highest level among its stored transitions."""
    last_seen: datetime
    """The device's newest stored value of the alert's metric (else the transition's time)."""


@dataclass
class Seeds:
    """Rule memory rebuilt from open alerts, by device and by place (composite rules), as JSON.
    A memory is taken only by a device or place the stream has no memory of at all."""

    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    places: dict[str, dict[str, Any]] = field(default_factory=dict)

    def take(self, kind: str, key: str, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """The seed for ``key`` if the stream has no memory of it (it is then used up)."""
        seeds = self.devices if kind == "device" else self.places
        seed = seeds.pop(key, None)
        return seed if seed is not None and not stored else None


def _seed_state(open_alert: OpenAlert, kind: str) -> AlertState:
    a = open_alert.alert
    return AlertState(
        pending_since=a.started_at,
        alert_id=a.alert_id,
        level=a.level,
        revision=a.revision,
        kind=kind,
        detail=(a.device_id, a.metric, a.value, a.threshold),
        peak=open_alert.peak_level,
        sample=(open_alert.last_seen.isoformat(), a.level.value, a.value, a.threshold),
    )


def seed_memories(open_alerts: Iterable[OpenAlert], rules: RuleSet) -> Seeds:
    """Rule memory that continues each open alert: it keeps its id, level, revision and
    peak, and its device's last value (as of the database) holds it until a new reading
    ends it, or it goes stale. A composite alert goes to its place; an alert whose rule is
    gone goes to its device, where the next tick resolves it as retired. What the kinds
    kept besides (a rate's points, an anomaly detector) is not in the database and starts
    afresh."""
    devices: dict[str, DeviceMemory] = {}
    places: dict[str, PlaceMemory] = {}
    for open_alert in open_alerts:
        a = open_alert.alert
        if a.status is not AlertStatus.FIRING:
            continue
        rule = rules.by_id.get(a.rule_id)
        kind = "" if rule is None else str(rule.kind)
        state = _seed_state(open_alert, kind)
        if isinstance(rule, CompositeRule) and a.place_path:
            place = places.setdefault(a.place_path[-1], PlaceMemory(place_path=a.place_path))
            place.rules[a.rule_id] = state
        else:
            devices.setdefault(a.device_id, DeviceMemory()).rules[a.rule_id] = state
    return Seeds(
        {k: m.to_json() for k, m in devices.items()},
        {k: m.to_json() for k, m in places.items()},
    )
