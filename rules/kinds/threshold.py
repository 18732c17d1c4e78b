"""Threshold rules: a metric's value against warning levels, by day and at night.

>>> from rules.ruleset import parse_rules
>>> rule = parse_rules("rules: [{id: deep, metric: water_cm, levels: {yellow: 15}}]").by_id["deep"]
>>> KIND.judge(rule, AlertState(), T0, Observation("wl-1", None, (), "water_cm", 18.0, T0)).level
<WarningLevel.YELLOW: 'yellow'>

A rule may set other levels for the night (``night``: from ``starts`` to ``ends``, 22:00 to
06:00 unless it says, in the city's time zone, ``CITYVITALS_TIMEZONE``), as noise limits are
set (GB 3096-2008: 70 dB(A) by day and 55 at night beside a main road). A reading is judged by
the levels of its own local time, and an alert at night says so:

>>> rules = parse_rules(
...     "rules: [{id: noise, metric: laeq_db, levels: {blue: 70}, night: {levels: {blue: 55}}}]",
...     zone="Asia/Shanghai",
... )
>>> noise = rules.by_id["noise"]
>>> at = lambda hour: datetime(2026, 7, 1, hour, tzinfo=UTC)  # Shanghai is 8 hours ahead
>>> [KIND.judge(noise, AlertState(), at(h), Observation("n-1", None, (), "laeq_db", 60.0, at(h)))
...  .level for h in (4, 14)]  # 12:00 and 22:00 in Shanghai
[None, <WarningLevel.BLUE: 'blue'>]
>>> KIND.judge(noise, AlertState(), at(14), Observation("n-1", None, (), "laeq_db", 60.0, at(14))).why
'the night levels, 22:00-06:00 Asia/Shanghai'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cityvitals.contracts import WarningLevel, iso
from rules.alerting import AlertState
from rules.kinds.base import Example, Judgement, LastValue, RuleKind
from rules.kinds.levels import judge_bands
from rules.kinds.spec import (
    Bands,
    Finite,
    LevelledRule,
    NightHours,
    PositiveDuration,
    Summary,
    clear_before,
    highest_first,
    levels_ordered,
)
from rules.observation import Observation

__all__ = ["KIND", "Night", "ThresholdRule"]

T0 = datetime(2026, 7, 1, tzinfo=UTC)


class Night(NightHours):
    """The levels in force from ``starts`` to ``ends`` (past midnight when ``ends`` is the
    earlier), in the local time of ``zone``: the city's (``CITYVITALS_TIMEZONE``, given to
    :func:`rules.ruleset.parse_rules`) unless the rule names one."""

    levels: dict[WarningLevel, Finite] = Field(min_length=1)
    clear: Finite | None = None


BELOW_SUMMARY = "{metric} {value:g} at {device_id}, at or below {threshold:g} ({level})"
"""What a ``below`` rule's alerts say when it says nothing of its own."""


class ThresholdRule(LevelledRule):
    """A metric's value against levels; ``min_confidence`` filters camera events."""

    kind: Literal["threshold"] = "threshold"
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    expires_after: PositiveDuration | None = None
    """For a metric sent only while something is seen (a camera's smoke event): with no new
    value for this long, the condition is false (judged at the device's other readings and
    at clock ticks), so the alert can resolve."""
    night: Night | None = None
    """Stricter levels (and their all-clear) at night: a reading in its hours takes the higher
    of its level by them and by the day's (a night listing blue alone still raises the day's
    red). The night's hysteresis is its own ``clear``: without one, none at night."""
    summary: Summary = "{metric} {value:g} at {device_id} reached {threshold:g} ({level})"
    """What its alerts say; a ``below`` rule's own default says "at or below"."""

    @model_validator(mode="before")
    @classmethod
    def _below_says_so(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("direction") == "below" and "summary" not in data:
            return {**data, "summary": BELOW_SUMMARY}
        return data

    @field_validator("night")
    @classmethod
    def _night_levels(cls, night: Night | None, info: ValidationInfo) -> Night | None:
        if night is not None:
            above = info.data.get("direction", "above") == "above"
            levels_ordered(night.levels, above)
            if night.clear is not None:
                clear_before(night.clear, night.levels, above)
        return night

    @cached_property
    def night_bands(self) -> Bands:
        """The night's levels as a value is judged by them (the day's, when it has none)."""
        night = self.night
        if night is None:
            return self.bands
        ordered = highest_first(night.levels)
        return Bands(self.direction == "above", ordered, ordered[-1], night.clear)


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
        night = rule.night
        if night is None or not night.covers(obs.ts):
            return judge_bands(rule.bands, obs.value, state.firing, seen)
        # the night only adds strictness: a level the day's levels give stands at night too
        by_day = judge_bands(rule.bands, obs.value, state.firing, seen)
        judged = judge_bands(rule.night_bands, obs.value, state.firing, seen)
        if judged.level is None or (
            by_day.level is not None and by_day.level.rank > judged.level.rank
        ):
            return by_day if by_day.level is not None else judged
        held = f"{judged.why}; " if judged.why else ""
        return judged._replace(why=f"{held}the night levels, {night.hours}")

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
