"""Anomaly rules: an online anomaly score in [0, 1] of a metric, judged against levels."""

from __future__ import annotations

import math
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, cast

from pydantic import Field, field_validator

from cityvitals.contracts import AnomalyCause, AnomalyWhy, WarningLevel
from cityvitals.contracts.alerts import Baseline
from rules.alerting import AlertState
from rules.detectors.novelty import Explanation, NoveltyDetector, NoveltyParams
from rules.detectors.seasonal import AnomalyParams, SeasonalDetector
from rules.kinds.base import Example, Judgement, RuleKind
from rules.kinds.levels import judge_levelled
from rules.kinds.spec import LevelledRule, Summary
from rules.observation import Observation

__all__ = ["KIND", "AnomalyRule", "anomaly_why"]


class AnomalyRule(LevelledRule):
    """An online anomaly score in [0, 1] for the metric, judged against levels."""

    kind: Literal["anomaly"] = "anomaly"
    detector: Literal["novelty", "seasonal"] = "novelty"
    """``novelty`` (the seasonal detector plus a memory of the values seen) or ``seasonal``."""
    params: AnomalyParams = AnomalyParams()
    """The seasonal detector's parameters (under ``novelty`` too, which takes its own defaults
    for ``surprise_full``, ``refractory_halflife``, ``surprise_long_halflife`` and
    ``noise_halflife`` where they are left unset)."""
    levels: dict[WarningLevel, float] = Field(
        default_factory=lambda: {WarningLevel.BLUE: 0.9, WarningLevel.YELLOW: 0.99}, min_length=1
    )
    summary: Summary = "{metric} at {device_id} is unusual (score {value:.2f}, {level})"

    @cached_property
    def novelty(self) -> NoveltyParams:
        """The novelty detector's parameters, made once per rule (not once per reading); a
        ``model_copy`` with other ``params`` makes them afresh (:class:`cityvitals.contracts.Derived`)."""
        return NoveltyParams(seasonal=self.params)

    @field_validator("levels")
    @classmethod
    def _scores(cls, levels: dict[WarningLevel, float]) -> dict[WarningLevel, float]:
        if not all(0 < t <= 1 for t in levels.values()):
            raise ValueError("anomaly levels are scores in (0, 1]")
        return levels

    @field_validator("direction")
    @classmethod
    def _above(cls, direction: str) -> str:
        if direction != "above":
            raise ValueError("an anomaly score is judged above its levels")
        return direction


class AnomalyKind(RuleKind[AnomalyRule]):
    """Memory: the detector's state (see :mod:`rules.detectors.novelty`). Either detector takes
    over the other's state, after a rule changed its ``detector``."""

    name = "anomaly"
    spec = AnomalyRule
    role = "reading"

    def judge(
        self, rule: AnomalyRule, state: AlertState, at: datetime, obs: Observation | None
    ) -> Judgement:
        assert obs is not None
        detector = _detector(rule, state.memory)
        x = (obs.ts, obs.value)
        score = detector.step(x)  # scored, then learned: the state is not copied
        why, numbers = "", None
        if rule.detector == "novelty" and score >= min(rule.levels.values()):
            # Only for a score that may alert (it costs): against the state before the
            # reading, read again from the memory (which reading a state leaves as it was).
            explained = NoveltyDetector(rule.novelty, state.memory).explain_one(x)
            why = f"{obs.metric} {obs.value:.4g} measured, {explained.text}"
            numbers = anomaly_why(explained, obs.value)
        judged = judge_levelled(rule, score, state.firing, detector.to_json())
        return judged._replace(why=why, anomaly=numbers)

    def example(self) -> Example:
        """A daily-looking wave sampled every 5 minutes, a spike, then the wave again."""
        n = 600
        steps = []
        for i in range(n):
            value = 50 + 10 * math.sin(2 * math.pi * i / 288) + (i * 7919 % 13) / 13
            if i == n - 40:
                value = 400.0
            steps.append(("read", "dev-1", "load", value, 5 * i))
        return Example(
            "rules: [{id: r, kind: anomaly, metric: load, levels: {yellow: 0.9}}]", tuple(steps)
        )


_CAUSES = {
    "novel": AnomalyCause.NOVEL,
    "run": AnomalyCause.RUN,
    "new to its hour": AnomalyCause.NEW_TO_HOUR,
    "familiar": AnomalyCause.FAMILIAR,
    "noise": AnomalyCause.NOISE,
    "deviation": AnomalyCause.DEVIATION,
}


def anomaly_why(e: Explanation, measured: float) -> AnomalyWhy:
    """An explanation as the alert's numbers (``measured``: the reading's value)."""
    return AnomalyWhy(
        cause=_CAUSES[e.kind],
        measured=measured,
        expected=e.expected,
        low=e.low,
        high=e.high,
        baseline=cast(Baseline, e.model),
        rarity=None if e.top else max(1.0, e.rarity),
        damped=e.damped,
        usual_low=e.seen_low,
        usual_high=e.seen_high,
        new_every=None if e.new_every is None else max(1.0, e.new_every),
        hour=e.hour,
        hour_low=e.hour_low,
        hour_high=e.hour_high,
        run=e.run,
        noise=e.noise,
    )


def _detector(rule: AnomalyRule, memory: Any) -> NoveltyDetector | SeasonalDetector:
    if rule.detector == "novelty":
        return NoveltyDetector(rule.novelty, memory)
    return SeasonalDetector(rule.params, memory)


KIND = AnomalyKind()
