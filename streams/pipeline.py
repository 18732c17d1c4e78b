"""What the stream processor does with one batch, in plain Python (no Faust).

:func:`process_batch` applies the batch's in-band registry changes, then validates and
enriches each reading and camera event from the device registry, runs the rules over it
and returns the enriched batch, the alert transitions, the refused items and the rule states
that changed. The Faust agents only move bytes in and out.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cityvitals.contracts import (
    Alert,
    CameraEvent,
    DeadLetter,
    Device,
    DeviceState,
    Reading,
    ReadingBatch,
)
from rules import RuleSet, ThresholdState, evaluate, observations

__all__ = ["BatchOutcome", "DeviceStates", "is_newer", "process_batch", "registry_entry"]

DeviceStates = dict[str, dict[str, Any]]
"""Rule state of one device: rule id → serialised :class:`ThresholdState`."""


def registry_entry(device: Device) -> dict[str, Any]:
    """The slice of a Device the stream needs per reading, kept small in the table."""
    return {
        "device_type": device.device_type,
        "place_path": list(device.place_path),
        "state": device.state.value,
        "updated_at": device.updated_at.isoformat(),
        "valid_ranges": {m: list(r) for m, r in device.valid_ranges.items()},
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
    changed_states: dict[str, DeviceStates] = field(default_factory=dict)
    changed_devices: dict[str, dict[str, Any]] = field(default_factory=dict)


def _refusal(item: Reading | CameraEvent, reason: str, source: str, now: datetime) -> DeadLetter:
    return DeadLetter(
        stage="streams",
        reason=reason,
        source=source,
        device_id=item.device_id,
        payload_b64=base64.b64encode(item.model_dump_json().encode()).decode(),
        received_at=now,
    )


def process_batch(
    batch: ReadingBatch,
    devices: Mapping[str, Mapping[str, Any] | None],
    states: Mapping[str, DeviceStates | None],
    rules: RuleSet,
    source: str,
    now: datetime,
) -> BatchOutcome:
    """Enrich, evaluate rules, and collect what to send. Inputs are not modified."""
    out = BatchOutcome(enriched=ReadingBatch())
    for device in batch.devices:
        if is_newer(
            device, out.changed_devices.get(device.device_id) or devices.get(device.device_id)
        ):
            out.changed_devices[device.device_id] = registry_entry(device)
    readings: list[Reading] = []
    events: list[CameraEvent] = []
    items: tuple[Reading | CameraEvent, ...] = (*batch.readings, *batch.camera_events)
    for item in items:
        entry = out.changed_devices.get(item.device_id) or devices.get(item.device_id)
        if entry is None:
            out.dead_letters.append(
                _refusal(
                    item, f"unknown device {item.device_id!r}: not in the registry", source, now
                )
            )
            continue
        if entry["state"] != DeviceState.ACTIVE:
            out.dead_letters.append(
                _refusal(
                    item, f"device {item.device_id!r} is {entry['state']}, not active", source, now
                )
            )
            continue
        ranges = entry.get("valid_ranges")
        if ranges and isinstance(item, Reading) and (problem := out_of_range(item.values, ranges)):
            out.dead_letters.append(_refusal(item, problem, source, now))
            continue
        enriched = item.model_copy(
            update={"device_type": entry["device_type"], "place_path": tuple(entry["place_path"])}
        )
        if isinstance(enriched, Reading):
            readings.append(enriched)
        else:
            events.append(enriched)
        _run_rules(enriched, states, rules, out)
    out.enriched = ReadingBatch(readings=tuple(readings), camera_events=tuple(events))
    return out


def _run_rules(
    item: Reading | CameraEvent,
    states: Mapping[str, DeviceStates | None],
    rules: RuleSet,
    out: BatchOutcome,
) -> None:
    device_id = item.device_id
    for obs in observations(item):
        for rule in rules.for_metric(obs.metric):
            if not rule.applies_to(obs):
                continue
            current = out.changed_states.get(device_id)
            if current is None:
                current = dict(states.get(device_id) or {})
            raw = current.get(rule.id)
            state = ThresholdState.model_validate(raw) if raw is not None else None
            new_state, alert = evaluate(rule, state, obs)
            if new_state is not state:
                if new_state is None:
                    current.pop(rule.id, None)
                else:
                    current[rule.id] = new_state.model_dump(mode="json")
                out.changed_states[device_id] = current
            if alert is not None:
                out.alerts.append(alert)
