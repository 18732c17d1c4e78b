"""Rate rules: a metric's rate of change against warning levels."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import ValidationInfo, field_validator

from cityvitals.contracts import iso
from rules.alerting import AlertState
from rules.kinds.base import Example, Judgement, RuleKind
from rules.kinds.levels import judge_levelled
from rules.kinds.spec import Duration, LevelledRule, PositiveDuration, Summary, human
from rules.observation import Observation

__all__ = ["KIND", "RATE_POINTS", "RateRule"]

RATE_POINTS = 64
"""Slots of a rate rule's window (``over`` / 64 each): it keeps a device's first point in each,
and its newest, so at most 66 points, the oldest within two slots of ``over`` ago."""
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
    summary: Summary = (
        "{metric} changing {value:+.4g} per {per} at {device_id}, past {threshold:+g} ({level})"
    )

    @field_validator("min_span")
    @classmethod
    def _spannable(cls, min_span: timedelta | None, info: ValidationInfo) -> timedelta | None:
        over = info.data.get("over")
        if min_span is not None and over is not None and min_span > over:
            raise ValueError(
                f"min_span {human(min_span)} is longer than over {human(over)}: the values "
                "kept never span it, so the rule would never fire"
            )
        return min_span

    @cached_property
    def span(self) -> timedelta:
        """The least span judged: ``min_span``, else half of ``over``; at least a microsecond.
        Made once per rule (judged at every reading: made each time, it took 3 µs of 8)."""
        return max(self.min_span if self.min_span is not None else self.over / 2, _INSTANT)


class RateKind(RuleKind[RateRule]):
    """Memory: ``[[ts, value], ...]`` within ``over``: the first point of each of the
    window's :data:`RATE_POINTS` slots, and the newest. So the point judged against lies
    within two slots (a thirty-second of ``over``) of ``over`` ago, however many readings the
    window holds: a rule ``over: 24h`` on readings every 5 minutes compares with about the
    same hour yesterday (halving the points kept, as before, had left it 13 to 24 hours)."""

    name = "rate"
    spec = RateRule
    role = "reading"

    def judge(
        self, rule: RateRule, state: AlertState, at: datetime, obs: Observation | None
    ) -> Judgement:
        assert obs is not None
        ts = obs.ts
        horizon = ts - rule.over
        kept: list[list[Any]] = state.memory or []
        old, since = 0, None  # in time order: only the oldest points may have left the window
        for point in kept:
            when = datetime.fromisoformat(point[0])
            if when >= horizon:
                since = when
                break
            old += 1
        points = kept[old:]
        newest = [iso(ts), obs.value]
        if len(points) >= 2 and _slot(rule, points[-1][0]) == _slot(rule, points[-2][0]):
            points[-1] = newest  # the newest so far was no slot's first: it gives way
        else:
            points.append(newest)
        if since is None or ts - since < rule.span:
            # every field given, not the class called: see rules.kinds.levels.judge_levelled
            return _make(Judgement, (None, 0.0, rule.lowest[1], points, (), "", None))
        elapsed = (ts - since) / rule.per
        rate = (obs.value - kept[old][1]) / elapsed
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


def _slot(rule: RateRule, when: str) -> int:
    """The slot of the window (``over`` / :data:`RATE_POINTS`) an instant falls in."""
    return int(datetime.fromisoformat(when).timestamp() * RATE_POINTS // rule.over.total_seconds())


_make = tuple.__new__
