"""Threshold rules with warning levels and hysteresis, evaluated in event time.

A rule is pure data; :func:`evaluate` takes one observation and the series' previous state
and returns the new state and at most one alert transition: fired, level changed, resolved.

>>> from datetime import datetime, UTC
>>> rule = ThresholdRule(id="water-deep", metric="water_level_cm",
...                      levels={WarningLevel.BLUE: 5, WarningLevel.YELLOW: 15})
>>> obs = Observation("wl-1", "water_level", ("sh",), "water_level_cm", 18.0,
...                   datetime(2026, 7, 1, tzinfo=UTC))
>>> state, alert = evaluate(rule, None, obs)
>>> alert.status.value, alert.level.value
('firing', 'yellow')
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cityvitals.contracts import (
    IDENTIFIER,
    METRIC,
    Alert,
    AlertStatus,
    CameraEvent,
    Reading,
    UtcDatetime,
    WarningLevel,
)

__all__ = [
    "REPLAY_GUARD",
    "Observation",
    "ThresholdRule",
    "ThresholdState",
    "alert_id",
    "evaluate",
    "observations",
]


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


def observations(item: Reading | CameraEvent) -> list[Observation]:
    if isinstance(item, Reading):
        return [
            Observation(item.device_id, item.device_type, item.place_path, m, v, item.ts)
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
        )
    ]


class ThresholdRule(BaseModel):
    """Fires when a metric passes a level; the highest level passed is the alert's level.

    ``clear`` adds hysteresis: a firing alert resolves only once the value is back past it
    (below it for ``above`` rules). Without it the alert resolves below the lowest level.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=IDENTIFIER)]
    metric: Annotated[str, Field(pattern=METRIC)]
    levels: dict[WarningLevel, float] = Field(min_length=1)
    direction: Literal["above", "below"] = "above"
    clear: float | None = None
    device_types: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    """Place ids: the rule applies to devices at or under any of them; empty means everywhere."""
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    summary: str = "{metric} {value:g} at {device_id} passed {threshold:g} ({level})"

    @model_validator(mode="after")
    def _levels_ordered(self) -> ThresholdRule:
        ordered = [self.levels[lv] for lv in WarningLevel if lv in self.levels]
        rising = ordered if self.direction == "above" else [-v for v in ordered]
        if rising != sorted(rising) or len(set(rising)) != len(rising):
            word = "increase" if self.direction == "above" else "decrease"
            raise ValueError(f"levels must {word} strictly from blue to red, got {ordered}")
        if self.clear is not None:
            lowest = ordered[0]
            if (self.clear > lowest) if self.direction == "above" else (self.clear < lowest):
                raise ValueError(f"clear {self.clear} must not be past the lowest level {lowest}")
        return self

    def applies_to(self, obs: Observation) -> bool:
        return (
            obs.metric == self.metric
            and obs.confidence >= self.min_confidence
            and (not self.device_types or obs.device_type in self.device_types)
            and (not self.places or any(p in obs.place_path for p in self.places))
        )

    def _passes(self, value: float, threshold: float) -> bool:
        return value >= threshold if self.direction == "above" else value <= threshold

    def level_for(self, value: float) -> tuple[WarningLevel, float] | None:
        """The highest level the value passes, with its threshold."""
        passed = [(lv, t) for lv, t in self.levels.items() if self._passes(value, t)]
        return max(passed, key=lambda p: p[0].rank) if passed else None

    def lowest(self) -> tuple[WarningLevel, float]:
        level = min(self.levels, key=lambda lv: lv.rank)
        return level, self.levels[level]

    def cleared(self, value: float) -> bool:
        if self.clear is None:
            return self.level_for(value) is None
        return value < self.clear if self.direction == "above" else value > self.clear


class ThresholdState(BaseModel):
    """What a rule remembers about one device and metric between observations."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    last_ts: UtcDatetime
    alert_id: str | None = None
    level: WarningLevel | None = None
    started_at: UtcDatetime | None = None
    revision: int = 0


def alert_id(rule_id: str, device_id: str, metric: str, started_at: datetime) -> str:
    """The id of an alert episode: the same inputs always give the same id."""
    key = f"{rule_id}|{device_id}|{metric}|{started_at.isoformat()}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


REPLAY_GUARD = timedelta(hours=24)
"""How long (event time) a series remembers its last episode after it resolved."""


def evaluate(
    rule: ThresholdRule, state: ThresholdState | None, obs: Observation
) -> tuple[ThresholdState | None, Alert | None]:
    """Apply one observation; returns the new state and any transition.

    State is kept only around an episode: while it fires, and for :data:`REPLAY_GUARD` after it
    resolved (a watermark), so a quiet city costs no state writes, and a replayed or older
    observation (not newer than the watermark) changes nothing. The state object is returned
    unchanged (``is`` the same) when nothing needs to be stored.
    """
    if state is not None and obs.ts <= state.last_ts:
        return state, None
    passed = rule.level_for(obs.value)
    if state is None or state.alert_id is None:
        if passed is None:
            if state is not None and obs.ts - state.last_ts > REPLAY_GUARD:
                return None, None
            return state, None
        level, threshold = passed
        new_id = alert_id(rule.id, obs.device_id, obs.metric, obs.ts)
        new = ThresholdState(
            last_ts=obs.ts, alert_id=new_id, level=level, started_at=obs.ts, revision=0
        )
        return new, _alert(rule, new, obs, AlertStatus.FIRING, threshold)
    assert state.level is not None
    if rule.cleared(obs.value):
        resolved = state.model_copy(update={"revision": state.revision + 1})
        threshold = rule.levels[state.level]
        alert = _alert(rule, resolved, obs, AlertStatus.RESOLVED, threshold)
        return ThresholdState(last_ts=obs.ts), alert
    # Still firing. Inside the hysteresis band (past no level, not yet clear) it holds at the
    # lowest level, so an improving value steps down as a worsening one steps up.
    level, threshold = passed if passed is not None else rule.lowest()
    if level == state.level:
        return state.model_copy(update={"last_ts": obs.ts}), None
    changed = state.model_copy(
        update={"last_ts": obs.ts, "level": level, "revision": state.revision + 1}
    )
    return changed, _alert(rule, changed, obs, AlertStatus.FIRING, threshold)


def _alert(
    rule: ThresholdRule,
    state: ThresholdState,
    obs: Observation,
    status: AlertStatus,
    threshold: float,
) -> Alert:
    assert state.alert_id is not None and state.level is not None and state.started_at is not None
    summary = rule.summary.format(
        metric=obs.metric,
        value=obs.value,
        device_id=obs.device_id,
        threshold=threshold,
        level=state.level.value,
        rule_id=rule.id,
    )
    if status is AlertStatus.RESOLVED:
        summary = f"resolved: {summary}"
    return Alert(
        alert_id=state.alert_id,
        revision=state.revision,
        rule_id=rule.id,
        status=status,
        level=state.level,
        device_id=obs.device_id,
        metric=obs.metric,
        value=obs.value,
        threshold=threshold,
        place_path=obs.place_path,
        device_type=obs.device_type,
        started_at=state.started_at,
        ts=obs.ts,
        summary=summary[:500],
    )
