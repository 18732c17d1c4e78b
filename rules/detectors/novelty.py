"""The novelty detector: the seasonal detector plus a long memory of the values a series has taken.

The seasonal detector (:mod:`rules.detectors.seasonal`) judges a reading by its deviation from a
forecast, calibrated on the series' last few hundred deviations. That memory is short on purpose
(a noisy day must not stay alarming for weeks), but it forgets too: a level the series has never
reached in months scores no higher than one it reached last week. The published leaders on the
Numenta Anomaly Benchmark judge novelty against everything learned so far instead: ARTime raises
an anomaly when a new adaptive-resonance category has to be created and then masks further
anomalies for a while; CAD OSE scores the share of contexts never seen before. This detector
borrows that idea in its simplest form, one value at a time:

- *range*: the first ``range_readings`` readings fix a bin width, ``1 / levels`` of their range
  (values outside it fall in further bins of the same width, so the bins are unbounded);
- *novelty*: a reading whose bin the series has never visited is novel; its score is raised to
  ``novel_floor + (1 - novel_floor) * seasonal`` (the seasonal score still ranks novel readings);
- *quiet*: after a novel reading, and for the first ``quiet_readings`` readings after the range
  is fixed, new bins are learned without raising the score, so one excursion gives one alert
  (ARTime's mask, as a count of readings).

Otherwise the score is the seasonal detector's. The memory is the seasonal state (334 numbers)
plus at most ``max_bins`` visited bins (farthest from the latest reading dropped first): about
8 KB of JSON at most. A score is computed before the reading is learned; the detector is
deterministic and keeps no clock.

>>> from datetime import UTC, datetime, timedelta
>>> d = NoveltyDetector(NoveltyParams(range_readings=100, quiet_readings=50))
>>> t0 = datetime(2026, 7, 1, tzinfo=UTC)
>>> for i in range(400):
...     x = (t0 + timedelta(minutes=5 * i), 20.0 + (i * 7919 % 13) / 13)
...     _ = d.score_one(x); d.learn_one(x)
>>> x = (t0 + timedelta(minutes=5 * 400), 24.0)  # a value never seen
>>> d.score_one(x) >= 0.6, d.explain_one(x).novel
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rules.detectors.base import Point
from rules.detectors.seasonal import AnomalyParams, AnomalyState, expectation, score

__all__ = ["Explanation", "NoveltyDetector", "NoveltyParams", "NoveltyState"]

_VERSION = 1


class NoveltyParams(BaseModel):
    """How novelty is judged; ``seasonal`` sets the seasonal detector underneath."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seasonal: AnomalyParams = AnomalyParams()
    levels: int = Field(default=10, ge=1)
    """Bins across the range of the first ``range_readings`` readings."""
    range_readings: int = Field(default=400, ge=1)
    """Readings whose range fixes the bin width (no novelty before them)."""
    quiet_readings: int = Field(default=200, ge=0)
    """Readings after a novel one (and after the range is fixed) that learn without alerting."""
    novel_floor: float = Field(default=0.6, gt=0, le=1)
    """The least score of a novel reading."""
    max_bins: int = Field(default=256, ge=8)
    """Visited bins kept; past it the bin farthest from the latest reading is forgotten."""


@dataclass(slots=True)
class NoveltyState:
    """The seasonal state, the range, the visited bins and the readings since the last novelty."""

    seasonal: AnomalyState | None
    n: int
    lo: float
    hi: float
    width: float  # 0 until the range is fixed
    bins: set[int]
    since: int  # readings since the last novel one (or since the range was fixed)

    @classmethod
    def new(cls) -> NoveltyState:
        return cls(None, 0, math.inf, -math.inf, 0.0, set(), 0)

    def copy(self) -> NoveltyState:
        seasonal = None if self.seasonal is None else self.seasonal.copy()
        return NoveltyState(
            seasonal, self.n, self.lo, self.hi, self.width, set(self.bins), self.since
        )

    def bin(self, value: float) -> int:
        return math.floor((value - self.lo) / self.width)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "seasonal": None if self.seasonal is None else self.seasonal.to_json(),
            "n": self.n,
            "lo": self.lo if self.n else None,
            "hi": self.hi if self.n else None,
            "width": self.width,
            "bins": sorted(self.bins),
            "since": self.since,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NoveltyState:
        if "seasonal" not in data and "lvl_n" in data:  # a seasonal detector's state: adopt it
            seasonal = AnomalyState.from_json(data)
            return cls(seasonal, 0, math.inf, -math.inf, 0.0, set(), 0)
        if data.get("v") != _VERSION:
            raise ValueError(f"novelty state: v: expected {_VERSION}, got {data.get('v')!r}")
        try:
            seasonal = data["seasonal"]
            return cls(
                None if seasonal is None else AnomalyState.from_json(seasonal),
                int(data["n"]),
                math.inf if data["lo"] is None else float(data["lo"]),
                -math.inf if data["hi"] is None else float(data["hi"]),
                float(data["width"]),
                {int(b) for b in data["bins"]},
                int(data["since"]),
            )
        except KeyError as exc:
            raise ValueError(f"novelty state: {exc.args[0]}: missing") from None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a reading scored as it did, in the words a duty officer needs."""

    score: float
    seasonal_score: float
    expected: float
    """The baseline the seasonal detector forecast for this reading."""
    low: float
    high: float
    """The expected range: the baseline plus or minus three spreads."""
    model: str
    """Which baseline: ``level``, ``hour of day`` or ``hour of week``."""
    rarity: float
    """About one reading in this many deviates as much (from the seasonal score)."""
    novel: bool
    """The value lies in a bin the series has never visited."""
    seen_low: float | None
    seen_high: float | None
    """The range of the visited bins (None before the range is fixed)."""

    @property
    def text(self) -> str:
        parts = [
            f"expected {self.expected:.4g} ({self.model} baseline), "
            f"usual range {self.low:.4g} to {self.high:.4g}",
            ("a deviation rarer than" if self.seasonal_score >= 1.0 else "a deviation about")
            + f" once in {self.rarity:,.0f} readings",
        ]
        if self.novel and self.seen_low is not None and self.seen_high is not None:
            parts.append(
                f"a value never seen before (seen {self.seen_low:.4g} to {self.seen_high:.4g})"
            )
        return "; ".join(parts)


def _step(
    p: NoveltyParams, s: NoveltyState, ts: datetime, value: float
) -> tuple[float, float, bool]:
    """Score ``value`` then learn it (mutates ``s``): the score, the seasonal score, novel or not."""
    learned = 0 if s.seasonal is None else s.seasonal.n
    s.seasonal, seasonal = score(p.seasonal, s.seasonal, ts, value)
    if s.seasonal.n == learned:  # not newer than the last reading: nothing learned
        return 0.0, 0.0, False
    s.n += 1
    if s.width == 0.0:
        s.lo, s.hi = min(s.lo, value), max(s.hi, value)
        if s.n >= p.range_readings:
            span = s.hi - s.lo
            s.width = max(span / p.levels, 1e-9 * max(abs(s.lo), abs(s.hi), 1.0), 1e-12)
        return seasonal, seasonal, False
    q = s.bin(value)
    novel = q not in s.bins
    if novel:
        s.bins.add(q)
        if len(s.bins) > p.max_bins:
            s.bins.remove(max(s.bins, key=lambda b: abs(b - q)))
    s.since += 1
    if novel and s.since > p.quiet_readings:
        s.since = 0
        return p.novel_floor + (1.0 - p.novel_floor) * seasonal, seasonal, True
    return seasonal, seasonal, False


class NoveltyDetector:
    """The seasonal detector plus value novelty behind the
    :class:`~rules.detectors.base.Detector` interface; ``state`` is what :meth:`to_json` gave."""

    def __init__(self, params: NoveltyParams | None = None, state: Any = None) -> None:
        self.params = params or NoveltyParams()
        self._state = NoveltyState.new() if state is None else NoveltyState.from_json(state)
        self._scored: tuple[Point, NoveltyState, float, float, bool] | None = None

    def _score(self, x: Point) -> tuple[NoveltyState, float, float, bool]:
        if self._scored is not None and self._scored[0] == x:
            return self._scored[1:]
        after = self._state.copy()
        out, seasonal, novel = _step(self.params, after, *x)
        self._scored = (x, after, out, seasonal, novel)
        return after, out, seasonal, novel

    def score_one(self, x: Point) -> float:
        return self._score(x)[1]

    def learn_one(self, x: Point) -> None:
        self._state = self._score(x)[0]
        self._scored = None

    def step(self, x: Point) -> float:
        """Score then learn one point in one go (what a stream does; no copy of the state)."""
        self._scored = None
        return _step(self.params, self._state, *x)[0]

    def explain_one(self, x: Point) -> Explanation:
        """Why ``x`` scores as it does, against what was learned before it (learns nothing)."""
        _, out, seasonal, novel = self._score(x)
        s = self._state
        expected, spread, model = expectation(self.params.seasonal, s.seasonal, x[0], x[1])
        full = self.params.seasonal.surprise_full
        seen = (
            (s.lo + min(s.bins) * s.width, s.lo + (max(s.bins) + 1) * s.width) if s.bins else None
        )
        return Explanation(
            score=out,
            seasonal_score=seasonal,
            expected=expected,
            low=expected - 3.0 * spread,
            high=expected + 3.0 * spread,
            model=model,
            rarity=10.0 ** (seasonal * full),
            novel=novel,
            seen_low=None if seen is None else seen[0],
            seen_high=None if seen is None else seen[1],
        )

    def to_json(self) -> dict[str, Any] | None:
        return (
            None if self._state.n == 0 and self._state.seasonal is None else self._state.to_json()
        )
