"""Composite rules: conditions over several metrics or devices of one place, in a window."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cityvitals.contracts import PlaceLevel, WarningLevel, iso
from rules.alerting import AlertState
from rules.kinds.base import Example, Judgement, RuleKind
from rules.kinds.spec import Finite, Metric, PositiveDuration, RuleBase, Summary
from rules.observation import Observation

__all__ = ["KIND", "CompositeRule", "Condition"]


class Condition(BaseModel):
    """One member of a composite rule: a metric above or below a value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Metric
    above: Finite | None = None
    below: Finite | None = None
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_bound(self) -> Condition:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        return self

    @property
    def threshold(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    def holds(self, value: float, confidence: float) -> bool:
        if confidence < self.min_confidence:
            return False
        return value >= self.above if self.above is not None else value <= self.threshold


class CompositeRule(RuleBase):
    """Conditions over several metrics or devices of one place, within a time window.

    Devices are grouped by their place at ``group_by`` (a street, say). The condition holds
    when ``all`` (or ``any``) of ``conditions`` hold, each on the latest reading within
    ``window`` of some device of the place, and at least ``min_devices`` distinct devices
    take part: ``min_devices: 2`` with ``require: any`` makes a smoke event from one camera
    wait for confirmation by a second camera or a sensor.
    """

    kind: Literal["composite"] = "composite"
    group_by: PlaceLevel = PlaceLevel.STREET
    window: PositiveDuration = timedelta(minutes=15)
    require: Literal["all", "any"] = "all"
    min_devices: int = Field(default=1, ge=1, le=100)
    conditions: tuple[Condition, ...] = Field(min_length=1, max_length=16)
    anchor: Metric | None = None
    """A metric whose condition must hold whatever ``require`` says: with ``require: any``,
    a camera's smoke event is the anchor and the other conditions confirm it."""
    level: WarningLevel = WarningLevel.ORANGE
    summary: Summary = "{rule_id} at {place}: {evidence} ({level})"

    @model_validator(mode="after")
    def _anchor(self) -> CompositeRule:
        if self.anchor is not None and self.anchor not in self.metrics:
            raise ValueError(f"anchor {self.anchor!r} is not the metric of any condition")
        return self

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(c.metric for c in self.conditions)


class CompositeKind(RuleKind[CompositeRule]):
    """Memory: ``[[condition index, device, ts, value, holds], ...]``, the latest per pair
    within the window. The judgement's evidence is the devices whose readings hold; its value
    is how many they are, its threshold how many are needed (``min_devices``): a place's alert
    is not one reading against one condition."""

    name = "composite"
    spec = CompositeRule
    role = "place"

    def judge(
        self, rule: CompositeRule, state: AlertState, at: datetime, obs: Observation | None
    ) -> Judgement:
        entries: dict[tuple[int, str], list[Any]] = {(e[0], e[1]): e for e in (state.memory or [])}
        if obs is not None:
            _remember(rule, entries, obs)
        horizon = at - rule.window
        kept = [e for e in entries.values() if datetime.fromisoformat(e[2]) >= horizon]
        holding = [e for e in kept if e[4]]
        met = {e[0] for e in holding}
        devices = tuple(sorted({e[1] for e in holding}))
        anchored = rule.anchor is None or any(rule.conditions[i].metric == rule.anchor for i in met)
        enough = len(met) == len(rule.conditions) if rule.require == "all" else bool(met)
        ok = anchored and enough and len(devices) >= rule.min_devices
        kept.sort(key=lambda e: (e[0], e[1]))
        level = rule.level if ok else None
        return Judgement(level, float(len(devices)), float(rule.min_devices), kept or None, devices)

    def wait(self, rule: CompositeRule, stale: timedelta, grace: timedelta) -> timedelta:
        return rule.window + grace

    def example(self) -> Example:
        return Example(
            "rules: [{id: r, kind: composite, group_by: grid, window: 10m, min_devices: 2,"
            " conditions: [{metric: rain, above: 20}, {metric: water, above: 10}]}]",
            (
                ("read", "rain-1", "rain", 30, 0),
                ("read", "wl-1", "water", 12, 3),
                ("read", "wl-1", "water", 13, 6),
                ("tick", 9),
                ("tick", 11),
                ("read", "rain-1", "rain", 25, 12),
                ("read", "wl-1", "water", 2, 13),
            ),
        )


def _remember(
    rule: CompositeRule, entries: dict[tuple[int, str], list[Any]], obs: Observation
) -> None:
    """Keep the observation as the latest of its device for each condition on its metric."""
    for i, cond in enumerate(rule.conditions):
        if cond.metric != obs.metric:
            continue
        held = cond.holds(obs.value, obs.confidence)
        now = entries.get((i, obs.device_id))
        if now is None or datetime.fromisoformat(now[2]) <= obs.ts:
            entries[(i, obs.device_id)] = [i, obs.device_id, iso(obs.ts), obs.value, held]


KIND = CompositeKind()
