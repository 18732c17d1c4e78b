"""Absence rules: no value of a metric from a device for a while."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal

from cityvitals.contracts import Alert, WarningLevel, iso
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
    summary: Summary = (
        "no {metric} from {device_id} for {value:.0f} s, past {threshold:.0f} s ({level})"
    )

    @cached_property
    def after_s(self) -> float:
        """``after`` in seconds: judged at every reading of the device."""
        return self.after.total_seconds()


class AbsenceKind(RuleKind[AbsenceRule]):
    """Memory: when the metric was last seen (or the device first met the rule)."""

    name = "absence"
    spec = AbsenceRule
    role = "silence"

    def judge(
        self, rule: AbsenceRule, state: AlertState, at: datetime, obs: Observation | None
    ) -> Judgement:
        seen = obs is not None
        last = at if seen or state.memory is None else datetime.fromisoformat(state.memory)
        silent, after = (at - last).total_seconds(), rule.after_s
        level = rule.level if silent >= after else None
        # every field given, not the class called: see rules.kinds.levels.judge_levelled
        return _make(Judgement, (level, silent, after, iso(last), (), "", None))

    def wait(self, rule: AbsenceRule, stale: timedelta, grace: timedelta) -> timedelta:
        return rule.after

    def seed(self, rule: AbsenceRule, now: datetime) -> Any:
        return now.isoformat()  # a rule new to the device: its silence counts from now

    def resumed(self, rule: AbsenceRule, alert: Alert) -> Any:
        # The alert's value is the silence at its latest transition: the metric was last seen
        # that long before. Without it, the next reading of any metric would end the alert
        # as if the metric had come back.
        return (alert.ts - timedelta(seconds=alert.value)).isoformat()

    def due(self, rule: AbsenceRule, state: AlertState, now: datetime) -> bool:
        return state.memory is not None and now > datetime.fromisoformat(state.memory)

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


KIND = AbsenceKind()


_make = tuple.__new__
