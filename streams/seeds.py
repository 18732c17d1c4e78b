"""Rule memory rebuilt from the alerts still open in the database, in plain Python.

A stream that starts with no memory (the local stack's Kafka keeps nothing across a
restart) is given the open alerts (:mod:`streams.resume` reads them): :func:`seed_memories`
turns them into device and place memories that continue each episode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cityvitals.contracts import Alert, AlertStatus, WarningLevel
from rules import AlertState, CompositeRule, DeviceMemory, PlaceMemory, RuleSet
from rules.kinds import REGISTRY, RuleBase

__all__ = ["OpenAlert", "Seeds", "seed_memories"]


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


def _seed_state(open_alert: OpenAlert, rule: RuleBase | None) -> AlertState:
    a = open_alert.alert
    kind = "" if rule is None else str(rule.kind)
    return AlertState(
        pending_since=a.started_at,
        alert_id=a.alert_id,
        level=a.level,
        revision=a.revision,
        kind=kind,
        detail=(a.device_id, a.metric, a.value, a.threshold),
        peak=open_alert.peak_level,
        sample=(open_alert.last_seen.isoformat(), a.level.value, a.value, a.threshold),
        memory=None if rule is None else REGISTRY[rule.kind].resumed(rule, a),
    )


def seed_memories(open_alerts: Iterable[OpenAlert], rules: RuleSet) -> Seeds:
    """Rule memory that continues each open alert: it keeps its id, level, revision and
    peak, and its device's last value (as of the database) holds it until a new reading
    ends it, or it goes stale. A composite alert goes to its place; an alert whose rule is
    gone goes to its device, where the next tick resolves it as retired. What a kind kept
    besides comes back where the alert tells it (an absence: when the metric was last seen,
    ``RuleKind.resumed``); the rest (a rate's points, an anomaly detector) is not in the
    database and starts afresh."""
    devices: dict[str, DeviceMemory] = {}
    places: dict[str, PlaceMemory] = {}
    for open_alert in open_alerts:
        a = open_alert.alert
        if a.status is not AlertStatus.FIRING:
            continue
        rule = rules.by_id.get(a.rule_id)
        state = _seed_state(open_alert, rule)
        if isinstance(rule, CompositeRule) and a.place_path:
            place = places.setdefault(a.place_path[-1], PlaceMemory(place_path=a.place_path))
            place.rules[a.rule_id] = state
        else:
            devices.setdefault(a.device_id, DeviceMemory()).rules[a.rule_id] = state
    return Seeds(
        {k: m.to_json() for k, m in devices.items()},
        {k: m.to_json() for k, m in places.items()},
    )
