"""Threshold rules: a metric's value against warning levels.

>>> from rules.ruleset import parse_rules
>>> rule = parse_rules("rules: [{id: deep, metric: water_cm, levels: {yellow: 15}}]").by_id["deep"]
>>> KIND.judge(rule, AlertState(), T0, Observation("wl-1", None, (), "water_cm", 18.0, T0)).level
<WarningLevel.YELLOW: 'yellow'>
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field

from cityvitals.contracts import iso
from rules.alerting import AlertState
from rules.kinds.base import Example, Judgement, LastValue, RuleKind
from rules.kinds.levels import judge_levelled
from rules.kinds.spec import LevelledRule, PositiveDuration, Summary
from rules.observation import Observation

__all__ = ["KIND", "ThresholdRule"]

T0 = datetime(2026, 7, 1, tzinfo=UTC)


class ThresholdRule(LevelledRule):
    """A metric's value against levels; ``min_confidence`` filters camera events."""

    kind: Literal["threshold"] = "threshold"
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    expires_after: PositiveDuration | None = None
    """For a metric sent only while something is seen (a camera's smoke event): with no new
    value for this long, the condition is false (judged at the device's other readings and
    at clock ticks), so the alert can resolve."""
    summary: Summary = "{metric} {value:g} at {device_id} passed {threshold:g} ({level})"


class ThresholdKind(RuleKind[ThresholdRule]):
    """Memory: when the last value was seen, for a rule with ``expires_after`` (else none)."""

    name = "threshold"
    spec = ThresholdRule
    role = "reading"

    def judge(
        self, rule: ThresholdRule, state: AlertState, at: datetime, obs: Observation | None
    ) -> Judgement:
        assert obs is not None
        seen = None if rule.expires_after is None else iso(obs.ts)
        return judge_levelled(rule, obs.value, state.firing, seen)

    def accepts(self, rule: ThresholdRule, obs: Observation) -> bool:
        return obs.confidence >= rule.min_confidence

    def filters(self, rule: ThresholdRule) -> bool:
        return rule.min_confidence > 0  # every confidence is at least 0

    def wait(self, rule: ThresholdRule, stale: timedelta, grace: timedelta) -> timedelta:
        return stale if rule.expires_after is None else max(stale, rule.expires_after)

    def last_value(self, rule: ThresholdRule, state: AlertState) -> LastValue | None:
        last = super().last_value(rule, state)
        if last is None and rule.expires_after and isinstance(state.memory, str):
            value, threshold = (state.detail[2], state.detail[3]) if state.detail else (0.0, 0.0)
            return datetime.fromisoformat(state.memory), state.level, value, threshold
        return last

    def expired(self, rule: ThresholdRule, silent: timedelta) -> bool:
        return rule.expires_after is not None and silent >= rule.expires_after

    def example(self) -> Example:
        values = [1, 8, 9, 25, 10, 2, 2, 1, 1]
        return Example(
            "rules: [{id: r, metric: m, levels: {blue: 5, red: 20}, clear: 3,"
            " for: 2m, keep_firing_for: 2m}]",
            tuple(("read", "dev-1", "m", v, i) for i, v in enumerate(values)),
        )


KIND = ThresholdKind()
