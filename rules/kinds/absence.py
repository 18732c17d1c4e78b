"""Absence rules: no value of a metric from a device for a while."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from cityvitals.contracts import WarningLevel
from cityvitals.instants import from_micros, micros
from rules.alerting import AlertState
from rules.kinds.base import Example, Judgement, RuleKind
from rules.kinds.spec import Metric, PositiveDuration, RuleBase, Summary
from rules.observation import Observation

__all__ = ["KIND", "AbsenceRule"]


class AbsenceRule(RuleBase):
    """No reading of ``metric`` from a device for ``after``: judged at each reading of the
    device and at each clock tick of the stream (so a silent device is caught too)."""

    kind: Literal["absence"] = "absence"
    metric: Metric
    after: PositiveDuration
    level: WarningLevel = WarningLevel.YELLOW
    summary: Summary = "no {metric} from {device_id} for {value:.0f} s ({level})"


class AbsenceKind(RuleKind[AbsenceRule]):
    """Memory: when the metric was last seen (or the device first met the rule), in
    microseconds since 1970 (memories written before hold it in ISO form: read as well)."""

    name = "absence"
    spec = AbsenceRule
    role = "silence"

    def judge(
        self, rule: AbsenceRule, state: AlertState, at: datetime, obs: Observation | None
    ) -> Judgement:
        seen = obs is not None
        last = at if seen or state.memory is None else _instant(state.memory)
        silent = (at - last).total_seconds()
        level = rule.level if silent >= rule.after.total_seconds() else None
        # every field given, not the class called: see rules.kinds.threshold.judge_levelled
        return _make(Judgement, (level, silent, rule.after.total_seconds(), micros(last), (), ""))

    def wait(self, rule: AbsenceRule, stale: timedelta, grace: timedelta) -> timedelta:
        return rule.after

    def seed(self, rule: AbsenceRule, now: datetime) -> Any:
        return micros(now)  # a rule new to the device: its silence counts from now

    def due(self, rule: AbsenceRule, state: AlertState, now: datetime) -> bool:
        return state.memory is not None and now > _instant(state.memory)

    def example(self) -> Example:
        return Example(
            "rules: [{id: r, kind: absence, metric: m, after: 10m}]",
            (
                ("read", "dev-1", "m", 1, 0),
                ("read", "dev-1", "other", 1, 5),
                ("tick", 12),
                ("tick", 13),
                ("read", "dev-1", "m", 1, 14),
                ("tick", 20),
            ),
        )


def _instant(memory: int | str) -> datetime:
    """The instant an absence memory holds (in ISO form in memories written before).

    >>> _instant("1970-01-01T00:00:01+00:00") == _instant(1_000_000)
    True
    """
    return datetime.fromisoformat(memory) if isinstance(memory, str) else from_micros(memory)


KIND = AbsenceKind()


_make = tuple.__new__
