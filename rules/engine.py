"""Run a rule set over readings: per device, and per place for composite rules.

Pure: memory in, memory and alert transitions out. The stream processor keeps a device's
memory in a table on the device's partition and a place's memory on the place's partition;
a backtest keeps both in dicts. Both call exactly these functions.

Event time. A device's readings are judged in event-time order: a reading not newer than the
device's newest (its watermark) does not move any rule state. It is *out of order* when it is
within the rule set's ``grace`` of the watermark (it is still stored, and counted) and *late*
beyond that (the caller dead-letters it). Clock ticks (:func:`sweep_device`,
:func:`sweep_place`) judge absence and composite windows when no reading comes.

>>> from datetime import UTC, datetime
>>> from rules.ruleset import parse_rules
>>> rs = parse_rules("rules: [{id: deep, metric: water_cm, levels: {yellow: 15}}]")
>>> o = Observation("wl-1", "water_level", ("c", "d1"), "water_cm", 18.0,
...                 datetime(2026, 7, 1, tzinfo=UTC))
>>> out = evaluate_device(rs, None, [o])
>>> [(a.status.value, a.level.value) for a in out.alerts], out.arrival.value
([('firing', 'yellow')], 'in_order')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cityvitals.contracts import (
    Alert,
    AlertResolution,
    AlertStatus,
    CameraEvent,
    PlaceObservation,
    Reading,
    WarningLevel,
)
from rules import anomaly
from rules.alerting import AlertState, Transition, resolve, step
from rules.kinds import (
    AbsenceRule,
    AnomalyRule,
    CompositeRule,
    LevelledRule,
    RateRule,
    RuleBase,
    ThresholdRule,
)
from rules.ruleset import RuleSet

__all__ = [
    "Arrival",
    "DeviceMemory",
    "DeviceOutcome",
    "Observation",
    "PlaceMemory",
    "evaluate_device",
    "evaluate_place",
    "observations",
    "sweep_device",
    "sweep_place",
]

_INSTANT = timedelta(microseconds=1)
RATE_POINTS = 64
"""Most points a rate rule keeps per device (its window shortens beyond that)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One value of one metric of one device at one instant, as the rules see it.

    A reading with several values gives several observations; a camera event gives one, whose
    metric is ``camera.<event type>`` and whose confidence is the analytics' confidence.
    """

    device_id: str
    device_type: str | None
    place_path: tuple[str, ...]
    metric: str
    value: float
    ts: datetime
    confidence: float = 1.0
    profile_id: str | None = None
    tags: tuple[str, ...] = ()
    expected_interval_s: float | None = None
    """The device's expected reporting interval (its profile's), if known."""


def observations(
    item: Reading | CameraEvent,
    profile_id: str | None = None,
    tags: tuple[str, ...] = (),
    expected_interval_s: float | None = None,
) -> list[Observation]:
    if isinstance(item, Reading):
        return [
            Observation(
                item.device_id,
                item.device_type,
                item.place_path,
                m,
                v,
                item.ts,
                1.0,
                profile_id,
                tags,
                expected_interval_s,
            )
            for m, v in item.values.items()
        ]
    return [
        Observation(
            item.camera_id,
            item.device_type,
            item.place_path,
            f"camera.{item.event_type.value}",
            item.value,
            item.ts,
            item.confidence,
            profile_id,
            tags,
            expected_interval_s,
        )
    ]


class Arrival(StrEnum):
    IN_ORDER = "in_order"
    OUT_OF_ORDER = "out_of_order"
    """Not newer than the device's newest, within the grace: stored, not judged."""
    LATE = "late"
    """Older than the device's newest by more than the grace: dead-lettered."""


def _iso(ts: datetime) -> str:
    return ts.isoformat()


@dataclass(slots=True)
class DeviceMemory:
    """Everything the rules remember about one device: its watermark and each rule's state."""

    watermark: datetime | None = None
    rules: dict[str, AlertState] = field(default_factory=dict)
    metrics: frozenset[str] = frozenset()
    """The metrics judged at the watermark's instant (another message of the same instant
    may bring others)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"r": {k: s.to_json() for k, s in self.rules.items()}}
        if self.watermark is not None:
            out["wm"] = _iso(self.watermark)
            out["wmm"] = sorted(self.metrics)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> DeviceMemory:
        if not data:
            return cls()
        wm = data.get("wm")
        return cls(
            None if wm is None else datetime.fromisoformat(wm),
            {k: AlertState.from_json(v) for k, v in data.get("r", {}).items()},
            frozenset(data.get("wmm", ())),
        )


@dataclass(slots=True)
class PlaceMemory:
    """What composite rules remember about one place: its clock and each rule's state."""

    place_path: tuple[str, ...] = ()
    clock: datetime | None = None
    rules: dict[str, AlertState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pp": list(self.place_path),
            "r": {k: s.to_json() for k, s in self.rules.items()},
        }
        if self.clock is not None:
            out["t"] = _iso(self.clock)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> PlaceMemory:
        if not data:
            return cls()
        t = data.get("t")
        return cls(
            tuple(data.get("pp", ())),
            None if t is None else datetime.fromisoformat(t),
            {k: AlertState.from_json(v) for k, v in data.get("r", {}).items()},
        )


@dataclass
class DeviceOutcome:
    memory: DeviceMemory
    arrival: Arrival = Arrival.IN_ORDER
    alerts: list[Alert] = field(default_factory=list)
    for_places: list[PlaceObservation] = field(default_factory=list)
    """Observations that composite rules judge on the place's partition."""
    evaluations: int = 0


# --- judging one input, per kind --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Judgement:
    level: WarningLevel | None
    value: float
    threshold: float
    memory: Any


def _judge_levelled(rule: LevelledRule, value: float, firing: bool, memory: Any) -> _Judgement:
    passed = rule.judge(value, firing)
    if passed is None:
        return _Judgement(None, value, rule.lowest[1], memory)
    return _Judgement(passed[0], value, passed[1], memory)


def _judge_rate(rule: RateRule, obs: Observation, state: AlertState) -> _Judgement:
    """Memory: ``[[ts, value], ...]`` within ``over``. Past :data:`RATE_POINTS` every other
    point is dropped (the oldest and newest stay), so the window keeps its span."""
    horizon = obs.ts - rule.over
    points = [p for p in (state.memory or []) if datetime.fromisoformat(p[0]) >= horizon]
    first = points[0] if points else None
    points.append([_iso(obs.ts), obs.value])
    if len(points) > RATE_POINTS:
        points = [*points[:-1:2], points[-1]]
    if first is None or obs.ts - datetime.fromisoformat(first[0]) < max(rule.span, _INSTANT):
        return _Judgement(None, 0.0, rule.lowest[1], points)
    elapsed = (obs.ts - datetime.fromisoformat(first[0])) / rule.per
    rate = (obs.value - first[1]) / elapsed
    return _judge_levelled(rule, rate, state.firing, points)


def _judge_anomaly(rule: AnomalyRule, obs: Observation, state: AlertState) -> _Judgement:
    detector = None if state.memory is None else anomaly.AnomalyState.from_json(state.memory)
    detector, score = anomaly.score(rule.params, detector, obs.ts, obs.value)
    return _judge_levelled(rule, score, state.firing, detector.to_json())


def _judge(rule: RuleBase, obs: Observation, state: AlertState) -> _Judgement:
    if isinstance(rule, RateRule):
        return _judge_rate(rule, obs, state)
    if isinstance(rule, AnomalyRule):
        return _judge_anomaly(rule, obs, state)
    assert isinstance(rule, ThresholdRule)
    seen = None if rule.expires_after is None else _iso(obs.ts)  # when it expires
    return _judge_levelled(rule, obs.value, state.firing, seen)


def _last_value(
    rule: LevelledRule, state: AlertState
) -> tuple[datetime, WarningLevel | None, float, float] | None:
    """The last value judged for a pending or firing rule: its time, level, value, threshold."""
    if state.sample is not None:
        ts, level, value, threshold = state.sample
        return datetime.fromisoformat(ts), WarningLevel(level) if level else None, value, threshold
    if isinstance(rule, ThresholdRule) and rule.expires_after and isinstance(state.memory, str):
        value, threshold = (state.detail[2], state.detail[3]) if state.detail else (0.0, 0.0)
        return datetime.fromisoformat(state.memory), state.level, value, threshold
    return None


def _rejudge(
    rules: RuleSet,
    states: dict[str, AlertState],
    now: datetime,
    subject: Observation,
    fresh: frozenset[str],
    out: DeviceOutcome,
) -> None:
    """Pending and firing device rules whose metric has no new value at ``now`` (a clock tick,
    or a reading of other metrics): judge their last value again, as Prometheus judges the
    last sample at every evaluation, so ``for`` and ``keep_firing_for`` run out. A value older
    than ``expires_after`` no longer holds; one older than the rule's stale horizon ends the
    episode: a pending alert is dropped, a firing one resolves as stale. ``fresh`` are the
    metrics that have just been judged."""
    for rule_id, state in list(states.items()):
        rule = rules.by_id.get(rule_id)
        if not isinstance(rule, LevelledRule) or rule.metric in fresh:
            continue
        if state.pending_since is None and state.alert_id is None:
            continue
        last = _last_value(rule, state)
        if last is None:
            continue
        seen, level, value, threshold = last
        obs = replace(subject, metric=rule.metric, value=value, ts=now)
        silent = now - seen
        out.evaluations += 1
        if silent >= rules.stale_horizon(rule, subject.expected_interval_s):
            _stale(rule, states, state, obs, silent, threshold, out)
            continue
        if isinstance(rule, ThresholdRule) and rule.expires_after and silent >= rule.expires_after:
            level = None
        judged = _Judgement(level, value, threshold, state.memory)
        key = f"{rule.id}|{subject.device_id}|{rule.metric}"
        tr = _apply(rule, states, state, judged, now, key, (subject.device_id, rule.metric))
        if tr is not None:
            out.alerts.append(_alert(rule, tr, now, obs, judged))


def _stale(
    rule: LevelledRule,
    states: dict[str, AlertState],
    state: AlertState,
    obs: Observation,
    silent: timedelta,
    threshold: float,
    out: DeviceOutcome,
) -> None:
    """The device's last value is too old to judge: drop a pending alert, resolve a firing
    one with the reason."""
    if state.alert_id is None:
        new = replace(state, pending_since=None, sample=None)
    else:
        new, tr = resolve(state)
        judged = _Judgement(None, obs.value, threshold, state.memory)
        out.alerts.append(
            _alert(rule, tr, obs.ts, obs, judged, resolution=AlertResolution.STALE, silent=silent)
        )
    if new.idle:
        states.pop(rule.id, None)
    else:
        states[rule.id] = new


def _judge_absence(rule: AbsenceRule, ts: datetime, seen: bool, state: AlertState) -> _Judgement:
    """Memory is when the metric was last seen (or the device first met the rule)."""
    last = ts if seen or state.memory is None else datetime.fromisoformat(state.memory)
    silent = (ts - last).total_seconds()
    level = rule.level if silent >= rule.after.total_seconds() else None
    return _Judgement(level, silent, rule.after.total_seconds(), _iso(last))


# --- alerts -----------------------------------------------------------------------------------


def _human(td: timedelta) -> str:
    s = td.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s / size:g}{unit}"
    return f"{s:g}s"


def render_summary(rule: RuleBase, **values: Any) -> str:
    values.setdefault("per", _human(rule.per) if isinstance(rule, RateRule) else "")
    values.setdefault("place", "/".join(values.get("place_path", ())))
    values.setdefault("evidence", ", ".join(values.get("evidence_ids", ())))
    return rule.summary.format(rule_id=rule.id, **values)


def _alert(
    rule: RuleBase,
    tr: Transition,
    ts: datetime,
    obs: Observation,
    judged: _Judgement,
    evidence: tuple[str, ...] = (),
    place_path: tuple[str, ...] | None = None,
    resolution: AlertResolution = AlertResolution.CLEARED,
    silent: timedelta | None = None,
) -> Alert:
    path = obs.place_path if place_path is None else place_path
    summary = render_summary(
        rule,
        metric=obs.metric,
        value=judged.value,
        device_id=obs.device_id,
        threshold=judged.threshold,
        level=tr.level.value,
        place_path=path,
        evidence_ids=evidence,
    )
    resolved = tr.status is AlertStatus.RESOLVED
    if resolved:  # what ended, its peak, and what the value is now (or why there is none)
        where = "/".join(path) if evidence or isinstance(rule, CompositeRule) else obs.device_id
        now = f"{obs.metric} now {judged.value:g}"
        if silent is not None:
            now = f"no {obs.metric} reading for {_human(silent)}: stale"
        summary = (
            f"resolved: {rule.id} at {where} (peak {tr.peak.value}, since "
            f"{tr.started_at:%Y-%m-%d %H:%M}Z); {now}"
        )
    return Alert(
        alert_id=tr.alert_id,
        revision=tr.revision,
        rule_id=rule.id,
        status=tr.status,
        level=tr.level,
        device_id=obs.device_id,
        metric=obs.metric,
        value=judged.value,
        threshold=judged.threshold,
        place_path=path,
        device_type=obs.device_type,
        started_at=tr.started_at,
        ts=ts,
        summary=summary[:500],
        evidence=evidence,
        peak_level=tr.peak,
        resolution=resolution if resolved else None,
    )


def _apply(
    rule: RuleBase,
    states: dict[str, AlertState],
    state: AlertState,
    judged: _Judgement,
    ts: datetime,
    key: str,
    subject: tuple[str, str],
    fresh: bool = False,
) -> Transition | None:
    """Step the rule's state; ``subject`` (device, metric) is remembered while it fires.
    ``fresh``: the judgement is of a new value, remembered while pending or firing."""
    if judged.memory is not state.memory:
        state = replace(state, memory=judged.memory)
    new, tr = step(state, ts, judged.level, key, rule.for_, rule.keep_firing_for)
    if tr is not None and tr.status is AlertStatus.FIRING:
        new = replace(new, detail=(*subject, judged.value, judged.threshold))
    if new.pending_since is None and new.alert_id is None:
        if new.sample is not None:
            new = replace(new, sample=None)
    elif fresh:
        level = "" if judged.level is None else judged.level.value
        new = replace(new, sample=(_iso(ts), level, judged.value, judged.threshold))
    if new.idle:
        states.pop(rule.id, None)
    else:
        states[rule.id] = new
    return tr


def _retire(
    states: dict[str, AlertState],
    place_path: tuple[str, ...],
    ts: datetime,
    stale: Callable[[str, AlertState], str | None],
) -> list[Alert]:
    """Drop the states ``stale`` gives a reason for (a rule removed, changed kind, or no longer
    in scope); close their open alerts with that reason."""
    alerts = []
    for rule_id, state in list(states.items()):
        reason = stale(rule_id, state)
        if reason is None:
            continue
        del states[rule_id]
        if state.alert_id is None or state.detail is None:
            continue
        device_id, metric, value, threshold = state.detail
        _, tr = resolve(state)
        alerts.append(
            Alert(
                alert_id=tr.alert_id,
                revision=tr.revision,
                rule_id=rule_id,
                status=AlertStatus.RESOLVED,
                level=tr.level,
                device_id=device_id,
                metric=metric,
                value=value,
                threshold=threshold,
                place_path=place_path,
                started_at=tr.started_at,
                ts=ts,
                summary=f"resolved: rule {rule_id!r} {reason} (peak {tr.peak.value})",
                peak_level=tr.peak,
                resolution=AlertResolution.RETIRED,
            )
        )
    return alerts


def _device_stale(
    rules: RuleSet, scope: tuple[Any, ...]
) -> Callable[[str, AlertState], str | None]:
    def stale(rule_id: str, state: AlertState) -> str | None:
        rule = rules.by_id.get(rule_id)
        if rule is None:
            return "was removed from the rule set"
        if isinstance(rule, CompositeRule) or (state.kind and state.kind != rule.kind):
            return f"is now a {rule.kind} rule"
        if not rule.in_scope(*scope):
            return "no longer applies to this device"
        return None

    return stale


# --- devices ----------------------------------------------------------------------------------


def evaluate_device(
    rules: RuleSet, memory: DeviceMemory | None, reading: list[Observation]
) -> DeviceOutcome:
    """Judge one reading (its observations share a device and an instant) by every rule in
    scope. ``memory`` is not modified; the outcome carries the new one."""
    memory = memory or DeviceMemory()
    out = DeviceOutcome(memory)
    if not reading:
        return out
    first = reading[0]
    ts = first.ts
    judged_now: frozenset[str] = frozenset()
    if memory.watermark is not None and ts <= memory.watermark:
        if ts == memory.watermark:  # the same instant: judge the metrics not judged yet
            reading = [o for o in reading if o.metric not in memory.metrics]
            judged_now = memory.metrics
        if ts < memory.watermark or not reading:
            late = ts < memory.watermark - rules.grace
            out.arrival = Arrival.LATE if late else Arrival.OUT_OF_ORDER
            return out
    states = dict(memory.rules)
    scope = (first.device_type, first.profile_id, first.place_path, first.tags)
    if states:
        out.alerts.extend(_retire(states, first.place_path, ts, _device_stale(rules, scope)))
    for obs in reading:
        for rule in rules.device_rules(obs.metric):
            if not rule.in_scope(*scope):
                continue
            if isinstance(rule, ThresholdRule) and obs.confidence < rule.min_confidence:
                continue
            state = states.get(rule.id) or AlertState(kind=rule.kind)
            judged = _judge(rule, obs, state)
            out.evaluations += 1
            key = f"{rule.id}|{obs.device_id}|{obs.metric}"
            tr = _apply(
                rule, states, state, judged, ts, key, (obs.device_id, obs.metric), fresh=True
            )
            if tr is not None:
                out.alerts.append(_alert(rule, tr, ts, obs, judged))
        for composite in rules.composite_rules(obs.metric):
            depth = composite.group_by.depth + 1
            if len(obs.place_path) >= depth and composite.in_scope(*scope):
                out.for_places.append(
                    PlaceObservation(
                        rule_id=composite.id,
                        place_path=obs.place_path[:depth],
                        device_id=obs.device_id,
                        device_type=obs.device_type,
                        metric=obs.metric,
                        value=obs.value,
                        confidence=obs.confidence,
                        ts=obs.ts,
                    )
                )
    metrics = judged_now | {o.metric for o in reading}
    if states:
        _rejudge(rules, states, ts, first, frozenset(metrics), out)
    for absent in rules.absence:
        if absent.in_scope(*scope):
            out.evaluations += 1
            _absence(absent, states, ts, absent.metric in metrics, first, out)
    out.memory = DeviceMemory(ts, states, frozenset(metrics))
    return out


def _absence(
    rule: AbsenceRule,
    states: dict[str, AlertState],
    ts: datetime,
    seen: bool,
    subject: Observation,
    out: DeviceOutcome,
) -> None:
    state = states.get(rule.id) or AlertState(kind=rule.kind)
    judged = _judge_absence(rule, ts, seen, state)
    key = f"{rule.id}|{subject.device_id}|{rule.metric}"
    tr = _apply(rule, states, state, judged, ts, key, (subject.device_id, rule.metric))
    if tr is not None:
        obs = replace(subject, metric=rule.metric, value=judged.value, ts=ts)
        out.alerts.append(_alert(rule, tr, ts, obs, judged))


def sweep_device(
    rules: RuleSet, memory: DeviceMemory, subject: Observation, now: datetime
) -> DeviceOutcome:
    """A clock tick at ``now`` for a device that may have gone quiet: judge its absence
    rules, and its pending and firing rules on their last values (until stale). ``subject``
    carries the device's id, type, place and expected interval (its metric and value are
    not used). The watermark does not move: a tick is no reading."""
    out = DeviceOutcome(memory)
    if not memory.rules and not rules.absence:
        return out
    states = dict(memory.rules)
    scope = (subject.device_type, subject.profile_id, subject.place_path, subject.tags)
    if states:
        out.alerts.extend(_retire(states, subject.place_path, now, _device_stale(rules, scope)))
    for rule in rules.absence:
        state = states.get(rule.id)
        if state is None:
            if rule.in_scope(*scope):  # a rule new to the device: its silence counts from now
                states[rule.id] = AlertState(memory=_iso(now), kind=rule.kind)
            continue
        if state.memory is None or now <= datetime.fromisoformat(state.memory):
            continue
        out.evaluations += 1
        _absence(rule, states, now, False, subject, out)
    if states:
        _rejudge(rules, states, now, subject, frozenset(), out)
    if out.alerts or states != memory.rules:
        out.memory = DeviceMemory(memory.watermark, states, memory.metrics)
    return out


# --- places -----------------------------------------------------------------------------------


def _judge_composite(
    rule: CompositeRule, memory: Any, clock: datetime, update: PlaceObservation | None
) -> tuple[_Judgement, tuple[str, ...], float]:
    """Memory: ``[[condition index, device, ts, value, holds], ...]``, the latest per pair
    within the window. Returns the judgement, the devices whose readings hold, and the
    threshold of the condition the update met."""
    entries: dict[tuple[int, str], list[Any]] = {(e[0], e[1]): e for e in (memory or [])}
    threshold = rule.conditions[0].threshold
    if update is not None:
        for i, cond in enumerate(rule.conditions):
            if cond.metric != update.metric:
                continue
            threshold = cond.threshold
            held = cond.holds(update.value, update.confidence)
            now = entries.get((i, update.device_id))
            if now is None or datetime.fromisoformat(now[2]) <= update.ts:
                entries[(i, update.device_id)] = [
                    i,
                    update.device_id,
                    _iso(update.ts),
                    update.value,
                    held,
                ]
    horizon = clock - rule.window
    kept = [e for e in entries.values() if datetime.fromisoformat(e[2]) >= horizon]
    holding = [e for e in kept if e[4]]
    met = {e[0] for e in holding}
    devices = tuple(sorted({e[1] for e in holding}))
    anchored = rule.anchor is None or any(rule.conditions[i].metric == rule.anchor for i in met)
    enough = len(met) == len(rule.conditions) if rule.require == "all" else bool(met)
    ok = anchored and enough and len(devices) >= rule.min_devices
    kept.sort(key=lambda e: (e[0], e[1]))
    judged = _Judgement(rule.level if ok else None, float(len(devices)), threshold, kept or None)
    return judged, devices, threshold


def evaluate_place(
    rules: RuleSet, memory: PlaceMemory | None, update: PlaceObservation
) -> tuple[PlaceMemory, list[Alert]]:
    """Judge a composite rule at a place after one of its devices reported."""
    memory = memory or PlaceMemory(place_path=update.place_path)
    rule = rules.by_id.get(update.rule_id)
    if not isinstance(rule, CompositeRule):
        return memory, []  # the rule was removed or changed kind since the reading was sent
    clock = update.ts if memory.clock is None else max(memory.clock, update.ts)
    states = dict(memory.rules)
    state = states.get(rule.id) or AlertState(kind=rule.kind)
    judged, devices, _ = _judge_composite(rule, state.memory, clock, update)
    key = f"{rule.id}|{update.place_path[-1]}"
    tr = _apply(rule, states, state, judged, clock, key, (update.device_id, update.metric))
    alerts = []
    if tr is not None:
        obs = Observation(
            update.device_id,
            update.device_type,
            update.place_path,
            update.metric,
            update.value,
            update.ts,
        )
        alerts.append(_alert(rule, tr, clock, obs, judged, devices, update.place_path))
    return PlaceMemory(memory.place_path or update.place_path, clock, states), alerts


def sweep_place(
    rules: RuleSet, memory: PlaceMemory, now: datetime
) -> tuple[PlaceMemory, list[Alert]]:
    """A clock tick: readings that aged out of a window may end (or hold off) an episode."""
    clock = now if memory.clock is None else max(memory.clock, now)
    states = dict(memory.rules)

    def stale(rule_id: str, _state: AlertState) -> str | None:
        rule = rules.by_id.get(rule_id)
        if rule is None:
            return "was removed from the rule set"
        return None if isinstance(rule, CompositeRule) else f"is now a {rule.kind} rule"

    alerts = _retire(states, memory.place_path, clock, stale)
    for rule_id, state in memory.rules.items():
        rule = rules.by_id.get(rule_id)
        if not isinstance(rule, CompositeRule):
            continue
        judged, devices, _ = _judge_composite(rule, state.memory, clock, None)
        device_id, metric = (state.detail or (memory.place_path[-1], rule.conditions[0].metric))[:2]
        key = f"{rule.id}|{memory.place_path[-1]}"
        tr = _apply(rule, states, state, judged, clock, key, (str(device_id), str(metric)))
        if tr is not None:
            obs = Observation(str(device_id), None, memory.place_path, str(metric), 0.0, clock)
            alerts.append(_alert(rule, tr, clock, obs, judged, devices, memory.place_path))
    return PlaceMemory(memory.place_path, clock, states), alerts
