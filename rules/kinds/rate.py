"""Rate rules: a metric's rate of change against warning levels."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from cityvitals.contracts import iso
from rules.alerting import AlertState
from rules.kinds.base import Example, Judgement, RuleKind
from rules.kinds.spec import Duration, LevelledRule, PositiveDuration, Summary, human
from rules.kinds.threshold import judge_levelled
from rules.observation import Observation

__all__ = ["KIND", "RATE_POINTS", "RateRule"]

RATE_POINTS = 64
"""Most points a rate rule keeps per device (its window shortens beyond that)."""
_INSTANT = timedelta(microseconds=1)


class RateRule(LevelledRule):
    """A metric's rate of change against levels: (value now - oldest value within ``over``)
    scaled to ``per``. ``direction: below`` with negative levels catches a fast fall."""

    kind: Literal["rate"] = "rate"
    over: PositiveDuration = timedelta(minutes=15)
    per: PositiveDuration = timedelta(hours=1)
    min_span: Duration | None = None
    """The least time the values must span to be judged (default half of ``over``): a
    jitter between two readings seconds apart is no rate of change."""
    summary: Summary = "{metric} changing {value:+g} per {per} at {device_id} ({level})"

    @property
    def span(self) -> timedelta:
        return self.min_span if self.min_span is not None else self.over / 2


class RateKind(RuleKind[RateRule]):
    """Memory: ``[[ts, value], ...]`` within ``over``. Past :data:`RATE_POINTS` every other
    point is dropped (the oldest and newest stay), so the window keeps its span."""

    name = "rate"
    spec = RateRule
    role = "reading"

    def judge(
        self, rule: RateRule, state: AlertState, at: datetime, obs: Observation | None
    ) -> Judgement:
        assert obs is not None
        horizon = obs.ts - rule.over
        kept: list[list[Any]] = state.memory or []
        old = 0  # points are in time order: only the oldest may have left the window
        while old < len(kept) and datetime.fromisoformat(kept[old][0]) < horizon:
            old += 1
        points = kept[old:]
        first = points[0] if points else None
        points.append([iso(obs.ts), obs.value])
        if len(points) > RATE_POINTS:
            points = [*points[:-1:2], points[-1]]
        if first is None or obs.ts - datetime.fromisoformat(first[0]) < max(rule.span, _INSTANT):
            return Judgement(None, 0.0, rule.lowest[1], points)
        elapsed = (obs.ts - datetime.fromisoformat(first[0])) / rule.per
        rate = (obs.value - first[1]) / elapsed
        return judge_levelled(rule, rate, state.firing, points)

    def summary_fields(self, rule: RateRule) -> dict[str, Any]:
        return {"per": human(rule.per)}

    def example(self) -> Example:
        values = [0, 1, 2, 10, 20, 21, 21, 21]
        return Example(
            "rules: [{id: r, kind: rate, metric: m, over: 10m, per: 1h, levels: {yellow: 30}}]",
            tuple(("read", "dev-1", "m", v, 5 * i) for i, v in enumerate(values)),
        )


KIND = RateKind()
