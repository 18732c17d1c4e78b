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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cityvitals.contracts import (
    SCHEMA_VERSION,
    Alert,
    AlertResolution,
    AlertStatus,
    PlaceObservation,
    iso,
    trusted,
)
from rules.alerting import AlertState, Transition, quiet, resolve, step
from rules.alerts import alert, retire
from rules.kinds import REGISTRY, Judgement, RuleBase
from rules.memory import DeviceMemory, PlaceMemory
from rules.observation import Observation, observations
from rules.ruleset import Judged, RuleSet

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
    "withdraw_device",
]


class Arrival(StrEnum):
    IN_ORDER = "in_order"
    OUT_OF_ORDER = "out_of_order"
    """Not newer than the device's newest, within the grace: stored, not judged."""
    LATE = "late"
    """Older than the device's newest by more than the grace: dead-lettered."""


@dataclass(init=False)
class DeviceOutcome:
    memory: DeviceMemory
    arrival: Arrival
    alerts: list[Alert]
    for_places: list[PlaceObservation]
    """Observations that place rules (composite) judge on the place's partition."""
    evaluations: int

    def __init__(self, memory: DeviceMemory) -> None:
        # Written out: compiled, where the dataclass's own __init__ runs as Python code
        # (64-82 ns against 211-305, in a scratch module; one is made per reading).
        self.memory = memory
        self.arrival = Arrival.IN_ORDER
        self.alerts = []
        self.for_places = []
        self.evaluations = 0


# --- stepping a rule's state --------------------------------------------------------------------


def _apply(
    rule: RuleBase,
    states: dict[str, AlertState],
    state: AlertState,
    judged: Judgement,
    ts: datetime,
    key: str,
    subject: tuple[str, str],
    fresh: bool = False,
) -> Transition | None:
    """Step the rule's state; ``subject`` (device, metric) is remembered while it fires.
    ``fresh``: the judgement is of a new value, remembered while pending or firing."""
    if judged.memory is not state.memory:
        state = state._replace(memory=judged.memory)
    new, tr = step(state, ts, judged.level, key, rule.for_, rule.keep_firing_for)
    if tr is not None and tr.status is AlertStatus.FIRING:
        new = new._replace(detail=(*subject, judged.value, judged.threshold))
    if new.pending_since is None and new.alert_id is None:
        if new.sample is not None:
            new = new._replace(sample=None)
    elif fresh:
        level = "" if judged.level is None else judged.level.value
        new = new._replace(sample=(iso(ts), level, judged.value, judged.threshold))
    _keep(states, rule.id, new)
    return tr


def _keep(states: dict[str, AlertState], rule_id: str, new: AlertState) -> None:
    if new.idle:
        states.pop(rule_id, None)
    else:
        states[rule_id] = new


def _judge_device_rule(
    of: Judged,
    states: dict[str, AlertState],
    at: datetime,
    obs: Observation,
    seen: Observation | None,
    out: DeviceOutcome,
    fresh: bool = False,
) -> None:
    """Judge one device rule at ``at`` (``seen``: the new value, if any); ``obs`` names the
    device and metric of the alert."""
    rule_id, rule, kind, _ = of
    held = states.get(rule_id)
    state = held or _fresh(kind.name)
    judged = kind.judge(rule, state, at, seen)
    out.evaluations += 1
    if judged.level is None and (held is None or _quiet(held)):
        # Quiet and staying quiet (the usual case): only the kind's memory may move.
        if judged.memory is None:
            states.pop(rule_id, None)
        elif held is None or judged.memory is not held.memory:
            states[rule_id] = quiet(judged.memory, state.kind)
        return
    _step_device(rule, states, state, judged, obs, at, out, fresh)


_FRESH: dict[str, AlertState] = {}


def _fresh(kind: str) -> AlertState:
    """The state of a rule new to its subject (one per kind: a state is immutable)."""
    state = _FRESH.get(kind)
    if state is None:
        state = _FRESH[kind] = AlertState(kind=kind)
    return state


def _quiet(state: AlertState) -> bool:
    """Neither pending nor firing: nothing but the kind's memory (and kind) is held."""
    return state.pending_since is None and state.alert_id is None


def _step_device(
    rule: RuleBase,
    states: dict[str, AlertState],
    state: AlertState,
    judged: Judgement,
    obs: Observation,
    at: datetime,
    out: DeviceOutcome,
    fresh: bool = False,
    expired: timedelta | None = None,
) -> None:
    """Step a device rule's state by a judgement; the alert, if any, names ``obs`` (and,
    when the value ``expired``, how long none came)."""
    key = f"{rule.id}|{obs.device_id}|{obs.metric}"
    tr = _apply(rule, states, state, judged, at, key, (obs.device_id, obs.metric), fresh)
    if tr is not None:
        out.alerts.append(alert(rule, tr, at, obs, judged, silent=expired))


# --- devices: the last value between readings ---------------------------------------------------


def _rejudge(
    rules: RuleSet,
    states: dict[str, AlertState],
    now: datetime,
    subject: Observation,
    fresh: frozenset[str],
    out: DeviceOutcome,
) -> None:
    """Pending and firing ``reading`` rules whose metric has no new value at ``now`` (a clock
    tick, or a reading of other metrics): judge their last value again, as Prometheus judges
    the last sample at every evaluation, so ``for`` and ``keep_firing_for`` run out. A value
    the kind calls expired no longer holds; one older than the rule's stale horizon ends the
    episode: a pending alert is dropped, a firing one resolves as stale. ``fresh`` are the
    metrics that have just been judged."""
    for rule_id, state in list(states.items()):
        if state.pending_since is None and state.alert_id is None:
            continue  # first: most states are quiet (a rate or absence rule's memory)
        rule = rules.by_id.get(rule_id)
        if rule is None:
            continue
        kind = REGISTRY[rule.kind]
        if kind.role != "reading" or rule.metric in fresh:
            continue
        last = kind.last_value(rule, state)
        if last is None:
            continue
        seen, level, value, threshold = last
        obs = subject._replace(metric=rule.metric, value=value, ts=now)
        silent = now - seen
        out.evaluations += 1
        horizon = rules.stale_horizon(rule, subject.expected_interval_s)
        if silent >= horizon:
            # stale from when its last value ran out, not from when a tick noticed: a night's
            # readings sent in the morning end their episode in the night
            went = seen + horizon
            _stale(rule, states, state, obs._replace(ts=went), horizon, threshold, out)
            continue
        expired = kind.expired(rule, silent)
        judged = Judgement(None if expired else level, value, threshold, state.memory)
        _step_device(
            rule, states, state, judged, obs, now, out, expired=silent if expired else None
        )


def _stale(
    rule: RuleBase,
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
        new = state._replace(pending_since=None, sample=None)
    else:
        new, tr = resolve(state)
        judged = Judgement(None, obs.value, threshold, state.memory)
        stale = AlertResolution.STALE
        out.alerts.append(alert(rule, tr, obs.ts, obs, judged, stale, silent))
    _keep(states, rule.id, new)


def _device_stale(
    rules: RuleSet, scoped: frozenset[str]
) -> Callable[[str, AlertState], str | None]:
    def stale(rule_id: str, state: AlertState) -> str | None:
        rule = rules.by_id.get(rule_id)
        if rule is None:
            return "was removed from the rule set"
        if REGISTRY[rule.kind].role == "place" or (state.kind and state.kind != rule.kind):
            return f"is now a {rule.kind} rule"
        if rule_id not in scoped:
            return "no longer applies to this device"
        return None

    return stale


# --- devices ----------------------------------------------------------------------------------


def _arrival(
    rules: RuleSet, memory: DeviceMemory, reading: list[Observation]
) -> tuple[list[Observation], frozenset[str], Arrival]:
    """The observations still to judge, the metrics judged at this instant already, and how
    the reading arrived (only an in-order reading is judged)."""
    ts = reading[0].ts
    if memory.watermark is None or ts > memory.watermark:
        return reading, frozenset(), Arrival.IN_ORDER
    judged_now: frozenset[str] = frozenset()
    if ts == memory.watermark:  # the same instant: judge the metrics not judged yet
        reading = [o for o in reading if o.metric not in memory.metrics]
        judged_now = memory.metrics
        if reading:
            return reading, judged_now, Arrival.IN_ORDER
    late = ts < memory.watermark - rules.grace
    return reading, judged_now, Arrival.LATE if late else Arrival.OUT_OF_ORDER


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
    reading, judged_now, out.arrival = _arrival(rules, memory, reading)
    if out.arrival is not Arrival.IN_ORDER:
        return out
    states = dict(memory.rules)
    scope = (first.device_type, first.profile_id, first.place_path, first.tags)
    scoped = rules.scopes.get(scope)
    if scoped is None:
        scoped = rules.scoped(scope)
    if states:
        out.alerts.extend(retire(states, first.place_path, ts, _device_stale(rules, scoped)))
    for obs in reading:
        for of in rules.by_metric.get(obs.metric, ()):
            if of.rule_id in scoped and (not of.filters or of.kind.accepts(of.rule, obs)):
                _judge_device_rule(of, states, ts, obs, obs, out, fresh=True)
        out.for_places.extend(_for_places(rules, obs, scoped))
    metrics = judged_now | {o.metric for o in reading}
    if states:
        _rejudge(rules, states, ts, first, frozenset(metrics), out)
    for silence in rules.absence:
        if silence.rule_id in scoped:
            metric = silence.rule.metric
            obs = first if first.metric == metric else first._replace(metric=metric)
            seen = obs if metric in metrics else None
            _judge_device_rule(silence, states, ts, obs, seen, out)
    out.memory = DeviceMemory(ts, states, frozenset(metrics))
    return out


def _for_places(rules: RuleSet, obs: Observation, scoped: frozenset[str]) -> list[PlaceObservation]:
    """The observation, sent to each place rule that judges it at the device's place."""
    composite = rules.composite_by_metric.get(obs.metric, ())
    if not composite:
        return []
    sent = []
    for rule in composite:
        depth = rule.group_by.depth + 1
        if len(obs.place_path) >= depth and rule.id in scoped:
            # Not validated again (once per value a composite rule judges): the stream's
            # readings were validated on decode, the rules on load.
            fields = {
                "schema_version": SCHEMA_VERSION,
                "rule_id": rule.id,
                "place_path": obs.place_path[:depth],
                "device_id": obs.device_id,
                "device_type": obs.device_type,
                "metric": obs.metric,
                "value": obs.value,
                "confidence": obs.confidence,
                "ts": obs.ts.astimezone(UTC),  # the same object when it is UTC already
            }
            sent.append(trusted(PlaceObservation, fields))
    return sent


def sweep_device(
    rules: RuleSet, memory: DeviceMemory, subject: Observation, now: datetime
) -> DeviceOutcome:
    """A clock tick at ``now`` for a device that may have gone quiet: judge its ``silence``
    rules (absence), and its pending and firing rules on their last values (until stale).
    ``subject`` carries the device's id, type, place and expected interval (its metric and
    value are not used). The watermark does not move: a tick is no reading."""
    out = DeviceOutcome(memory)
    if not memory.rules and not rules.absence:
        return out
    states = dict(memory.rules)
    scoped = rules.scoped(
        (subject.device_type, subject.profile_id, subject.place_path, subject.tags)
    )
    if states:
        out.alerts.extend(retire(states, subject.place_path, now, _device_stale(rules, scoped)))
    for silence in rules.absence:
        rule_id, rule, kind, _ = silence
        state = states.get(rule_id)
        if state is None:
            seeded = kind.seed(rule, now)
            if seeded is not None and rule_id in scoped:
                states[rule_id] = quiet(seeded, kind.name)
            continue
        if kind.due(rule, state, now):
            obs = subject._replace(metric=rule.metric)
            _judge_device_rule(silence, states, now, obs, None, out)
    if states:
        _rejudge(rules, states, now, subject, frozenset(), out)
    if out.alerts or states != memory.rules:
        out.memory = DeviceMemory(memory.watermark, states, memory.metrics)
    return out


def withdraw_device(
    memory: DeviceMemory, place_path: tuple[str, ...], now: datetime, why: str
) -> DeviceOutcome:
    """Close every open alert of a device taken out of service (``why``: suspended,
    retired): no rule applies to it any more, and nothing it stops sending would resolve
    them. Its rules' states go with them; made active again, it starts afresh."""
    out = DeviceOutcome(memory)
    if not memory.rules:
        return out
    states = dict(memory.rules)
    out.alerts.extend(retire(states, place_path, now, lambda _rule, _state: why))
    out.memory = DeviceMemory(memory.watermark, states, memory.metrics)
    return out


# --- places -----------------------------------------------------------------------------------


def evaluate_place(
    rules: RuleSet, memory: PlaceMemory | None, update: PlaceObservation
) -> tuple[PlaceMemory, list[Alert]]:
    """Judge a place rule (composite) at a place after one of its devices reported."""
    memory = memory or PlaceMemory(place_path=update.place_path)
    rule = rules.by_id.get(update.rule_id)
    if rule is None or REGISTRY[rule.kind].role != "place":
        return memory, []  # the rule was removed or changed kind since the reading was sent
    clock = update.ts if memory.clock is None else max(memory.clock, update.ts)
    obs = Observation(
        update.device_id,
        update.device_type,
        update.place_path,
        update.metric,
        update.value,
        update.ts,
        update.confidence,
    )
    states = dict(memory.rules)
    alerts = _judge_place_rule(rule, states, clock, obs, obs)
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
        return None if REGISTRY[rule.kind].role == "place" else f"is now a {rule.kind} rule"

    alerts = retire(states, memory.place_path, clock, stale)
    for rule_id, state in memory.rules.items():
        rule = rules.by_id.get(rule_id)
        if rule is None or REGISTRY[rule.kind].role != "place":
            continue
        device_id, metric = (state.detail or (memory.place_path[-1], rule.conditions[0].metric))[:2]
        obs = Observation(str(device_id), None, memory.place_path, str(metric), 0.0, clock)
        alerts += _judge_place_rule(rule, states, clock, obs, None)
    return PlaceMemory(memory.place_path, clock, states), alerts


def _judge_place_rule(
    rule: RuleBase,
    states: dict[str, AlertState],
    clock: datetime,
    obs: Observation,
    update: Observation | None,
) -> list[Alert]:
    state = states.get(rule.id) or _fresh(rule.kind)
    judged = REGISTRY[rule.kind].judge(rule, state, clock, update)
    key = f"{rule.id}|{obs.place_path[-1]}"
    tr = _apply(rule, states, state, judged, clock, key, (obs.device_id, obs.metric))
    return [] if tr is None else [alert(rule, tr, clock, obs, judged)]
