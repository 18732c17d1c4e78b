"""The novelty detector: the seasonal detector plus a long memory of what a series has done.

The seasonal detector (:mod:`rules.detectors.seasonal`) judges a reading by its deviation from a
forecast, calibrated on the series' last few hundred deviations. That memory is short on purpose
(a noisy day must not stay alarming for weeks), but it forgets too: a level the series has never
reached in months scores no higher than one it reached last week. The published leaders on the
Numenta Anomaly Benchmark judge novelty against everything learned so far instead: ARTime raises
an anomaly when a new adaptive-resonance category has to be created and then masks further
anomalies for a while; CAD OSE scores the share of contexts never seen before. This detector
borrows that idea in its simplest form, one value at a time:

- *long calibration*: unless a rule sets ``surprise_long_halflife``, the seasonal detector
  underneath calibrates its deviations a second time over about ``LONG_HALFLIFE`` readings and
  scores by the less surprising of the two: a deviation the series gives every few days does
  not score as rare each time;
- *rarer deviations, one alert a couple of days*: unless a rule sets them, the seasonal score
  underneath reaches 1 at one chance in ``10 ** SURPRISE_FULL`` (about one in 18 million, not
  one in a million) and its refractory period has a half-life of ``REFRACTORY_HALFLIFE``
  readings (two days of readings every 5 minutes, not one): values never seen (below) are
  what this detector is for, and a deviation from the forecast alone, which on a noisy series
  comes once in a few thousand readings, alerts less;
- *range*: the first ``range_readings`` readings fix a bin width, ``1 / levels`` of their range
  (values outside it fall in further bins of the same width). When the usual values (the
  rarest visits at each end left out) come to span more than ``max_span`` bins, neighbouring
  bins merge in pairs and the width doubles, so a bin stays at least ``1 / max_span`` of the
  usual range: a series nearly flat while its range was fixed (zeros, then bursts) would
  otherwise find every later value novel, and one glitch far out does not coarsen the bins;
- *novelty*: a reading whose bin the series has never visited is novel; its score is raised to
  ``floor + (1 - floor) * seasonal`` (the seasonal score still ranks novel readings). The floor
  is ``novel_floor`` on a series that lately visits a new bin at most once in ``novel_every``
  readings, and shrinks with the log of that rarity on one that finds new values more often
  (``p``, new bins per reading, decayed over ``familiar_halflife`` readings, with a prior of one
  new bin in ten readings): ``novel_floor * min(1, log(1/p) / log(novel_every))``. A young
  series, still exploring its range, finds a new value less surprising than one that has kept
  to its range for weeks (Good and Turing's estimate of the chance of something unseen, in its
  simplest form: how often unseen things turned up so far);
- *new to its hour*: on a seasonal series (the seasonal detector forecasts by the hour of the
  day or of the week), a reading more than a bin outside the range its hour of the day (UTC)
  took since the range was fixed is novel too, with a floor from how often readings fell
  outside their hour's range lately: a usual value at an unusual hour, such as a daily peak
  that does not come. The range's edges move toward the values the hour takes
  (``_HOUR_RELAX``), so a glitch is forgotten. Only while the seasonal detector judges by the
  hours: a square daily wave may go back to its level forecast after a few weeks;
- *quiet*: after a novel reading, and for the first ``quiet_readings`` readings after the range
  is fixed, new values are learned without raising the score, so one excursion gives one alert
  (ARTime's mask, as a count of readings), but for no more than ``quiet_days`` of readings at
  the series' usual interval: 200 readings are 17 hours of readings every 5 minutes but over
  8 days of hourly ones, which hid a second, separate anomaly days later (NAB's hourly ad
  exchange series: 41.5 with the count alone, 59.2 with a day at most);
- *familiar*: each bin keeps a decayed count of its visits (half-life ``familiar_halflife``
  readings). On a series with no season (the seasonal detector's level forecast explains it
  best), a value whose bin was visited at least ``familiar_visits`` times lately is familiar,
  and its seasonal score is multiplied by ``familiar_damp``: a spike to a height the series
  keeps returning to is how that series behaves. On a seasonal series a familiar value at an
  unusual hour is still judged by the season in full.

Otherwise the score is the seasonal detector's. The memory is the seasonal state (433 numbers),
the visited bins with their counts (at most ``4 * max_span`` of them), each hour's range and
three counts: about 9 KB of JSON.
A score is computed before the reading is learned; the detector is deterministic and keeps no
clock.

>>> from datetime import UTC, datetime, timedelta
>>> d = NoveltyDetector(NoveltyParams(range_readings=100, quiet_readings=50))
>>> t0 = datetime(2026, 7, 1, tzinfo=UTC)
>>> for i in range(400):
...     x = (t0 + timedelta(minutes=5 * i), 20.0 + (i * 7919 % 13) / 13)
...     _ = d.score_one(x); d.learn_one(x)
>>> x = (t0 + timedelta(minutes=5 * 400), 24.0)  # a value never seen
>>> why = d.explain_one(x)
>>> why.novel, why.score >= 0.6, round(why.new_every)  # new values were common lately
(True, True, 27)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

from pydantic import ConfigDict, Field

from cityvitals.contracts import Derived
from rules.detectors.base import Point
from rules.detectors.seasonal import AnomalyParams, AnomalyState, expectation, score
from rules.detectors.seasonal_state import _DAY, _HOUR

__all__ = ["Explanation", "NoveltyDetector", "NoveltyParams", "NoveltyState"]

_VERSION = 2
"""Version 2 states written before the counts of new values (``readings``, ``new_bins``,
``new_to_hour``, ``hours``) are adopted; code that predates them reads these states too."""
_TAIL = 0.002
_ONCE = 1.5
"""The visits at each end of the bins that do not widen them: a share of all visits, and at
least a single visit."""
_KEPT = 4
"""Bins kept, in spans of ``max_span``: past it, the least visited are forgotten."""
_PRIOR_NEW, _PRIOR_READINGS = 1.0, 10.0
"""The prior of the chance of something new: one in ten readings."""
_HOUR_RELAX = 0.003
"""How far the edges of an hour's range move toward each value the hour takes inside them: a
glitch or a level left behind is half forgotten after about 230 readings at that hour (three
weeks of readings every 5 minutes, eight months of hourly ones)."""
LONG_HALFLIFE = 10_000.0
"""The seasonal detector's long calibration memory under this one, unless a rule sets it."""
SURPRISE_FULL = 7.25
"""``-log10`` of the chance at which the seasonal score under this one reaches 1, unless a rule
sets it (the seasonal detector alone: 6)."""
REFRACTORY_HALFLIFE = 600.0
"""The half-life of the seasonal detector's refractory period under this one, unless a rule
sets it (the seasonal detector alone: 288 readings)."""
_OWN_DEFAULTS: dict[str, float] = {
    "surprise_long_halflife": LONG_HALFLIFE,
    "surprise_full": SURPRISE_FULL,
    "refractory_halflife": REFRACTORY_HALFLIFE,
}
"""The seasonal parameters this detector sets for itself where a rule does not."""


class NoveltyParams(Derived):
    """How novelty is judged; ``seasonal`` sets the seasonal detector underneath."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seasonal: AnomalyParams = AnomalyParams()
    levels: int = Field(default=10, ge=1)
    """Bins across the range of the first ``range_readings`` readings."""
    range_readings: int = Field(default=400, ge=1)
    """Readings whose range fixes the bin width (no novelty before them)."""
    quiet_readings: int = Field(default=200, ge=0)
    """Readings after a novel one (and after the range is fixed) that learn without alerting."""
    quiet_days: float = Field(default=1.0, gt=0)
    """The quiet period lasts at most this many days of readings (at the series' interval)."""
    novel_floor: float = Field(default=0.6, gt=0, le=1)
    """The least score of a novel reading, on a series where new values are rare."""
    novel_every: float = Field(default=400.0, gt=1)
    """New values at most once in this many readings (lately) are rare: the floor in full."""
    max_span: int = Field(default=20, ge=2)
    """Bins the usual values may span; past it, bins merge in pairs (the width doubles)."""
    familiar_visits: float = Field(default=2.0, gt=0)
    """Visits (decayed) that make a bin's values familiar."""
    familiar_halflife: float = Field(default=2000.0, ge=1)
    """Half-life, in readings, of the visit counts and of the counts of new values."""
    familiar_damp: float = Field(default=0.5, ge=0, le=1)
    """What a familiar value's seasonal score is multiplied by, on a series with no season."""

    @cached_property
    def in_force(self) -> AnomalyParams:
        """The seasonal parameters in force: ``seasonal`` with this detector's own defaults
        (``_OWN_DEFAULTS``) where it leaves them to the detector (None)."""
        own = {
            name: value
            for name, value in _OWN_DEFAULTS.items()
            if getattr(self.seasonal, name) is None
        }
        return AnomalyParams(**{**self.seasonal.model_dump(), **own}) if own else self.seasonal

    @cached_property
    def _quiet_s(self) -> float:
        """``quiet_days`` in seconds."""
        return self.quiet_days * _DAY

    @cached_property
    def _log_every(self) -> float:
        """``log10(novel_every)``: the rarity, in powers of ten, that earns the full floor."""
        return math.log10(self.novel_every)

    @cached_property
    def _grow(self) -> float:
        """The growth of the weight of a visit from one reading to the next."""
        return math.pow(2.0, 1.0 / self.familiar_halflife)

    @cached_property
    def _memory(self) -> float:
        """The most a decayed count of readings reaches: about 1.44 half-lives of readings."""
        return self._grow / (self._grow - 1.0)


@dataclass(slots=True)
class NoveltyState:
    """The seasonal state, the range, the visited bins with their decayed visit counts (in units
    of ``w``, the weight of the latest visit), the readings since the last novelty, the decayed
    counts (in units of ``w`` too) of the readings since the range was fixed and of those that
    were new (to the bins, to their hour), and the range each hour of the day took."""

    seasonal: AnomalyState | None
    n: int
    lo: float
    hi: float
    width: float  # 0 until the range is fixed
    bins: dict[int, float]
    w: float
    since: int  # readings since the last novel one (or since the range was fixed)
    readings: float = 0.0
    """Readings since the range was fixed (decayed, as the counts below)."""
    new_bins: float = 0.0
    """Readings that visited a new bin."""
    new_to_hour: float = 0.0
    """Readings more than a bin outside their hour's range."""
    hour_lo: list[float] = field(default_factory=lambda: [math.inf] * 24)
    """The lowest value each hour of the day (UTC) took since the range was fixed, relaxed
    toward its later values (``_HOUR_RELAX``); inf while none."""
    hour_hi: list[float] = field(default_factory=lambda: [-math.inf] * 24)
    """The highest, likewise; -inf while none."""

    @classmethod
    def new(cls) -> NoveltyState:
        return cls(None, 0, math.inf, -math.inf, 0.0, {}, 1.0, 0)

    def copy(self) -> NoveltyState:
        return replace(
            self,
            seasonal=None if self.seasonal is None else self.seasonal.copy(),
            bins=dict(self.bins),
            hour_lo=list(self.hour_lo),
            hour_hi=list(self.hour_hi),
        )

    def bin(self, value: float) -> int:
        return math.floor((value - self.lo) / self.width)

    def visits(self, q: int) -> float:
        """The decayed visits of bin ``q`` so far."""
        return self.bins.get(q, 0.0) / self.w

    def chance(self, new: float) -> float:
        """The chance of something new in a reading, from its decayed count ``new``
        (``new_bins`` or ``new_to_hour``) against the readings, with a prior of one in ten."""
        return (new / self.w + _PRIOR_NEW) / (self.readings / self.w + _PRIOR_READINGS)

    def outside_hour(self, h: int, value: float) -> bool:
        """Whether ``value`` lies more than a bin outside what hour ``h`` has taken (False
        while the hour has taken nothing)."""
        lo, hi = self.hour_lo[h], self.hour_hi[h]
        return lo <= hi and not lo - self.width <= value <= hi + self.width

    def take(self, h: int, value: float) -> None:
        """Widen hour ``h``'s range to ``value``; the edges it lies within move toward it."""
        lo, hi = self.hour_lo[h], self.hour_hi[h]
        if lo <= hi:
            lo += _HOUR_RELAX * max(value - lo, 0.0)
            hi -= _HOUR_RELAX * max(hi - value, 0.0)
        self.hour_lo[h], self.hour_hi[h] = min(lo, value), max(hi, value)

    def visit(self, q: int, grow: float, max_span: int) -> None:
        """Count a reading in bin ``q``. A new bin may widen the bins: while the bins holding all
        but the rarest ``_TAIL`` of the visits (at each end) span over ``max_span``, they merge in
        pairs. So a single glitch, far out and visited once, does not coarsen them."""
        self.w *= grow
        if self.w > 1e6:  # keep the decayed counts in range
            self.bins = {b: c / self.w for b, c in self.bins.items()}
            self.readings /= self.w
            self.new_bins /= self.w
            self.new_to_hour /= self.w
            self.w = 1.0
        self.readings += self.w
        if q in self.bins:
            self.bins[q] += self.w
            return
        self.bins[q] = self.w
        self.new_bins += self.w
        low, high = self.usual()
        while high - low + 1 > max_span:
            merged: dict[int, float] = {}
            for b, c in self.bins.items():
                merged[b // 2] = merged.get(b // 2, 0.0) + c
            self.bins = merged
            self.width *= 2.0
            low, high, q = low // 2, high // 2, q // 2
        while len(self.bins) > _KEPT * max_span:  # forget the least visited (not this one)
            del self.bins[min((b for b in self.bins if b != q), key=self.bins.__getitem__)]

    def usual(self) -> tuple[int, int]:
        """The lowest and highest bin once the rarest visits at each end are left out (``_TAIL``
        of them, and at least ``_ONCE``): inverted while there are too few visits."""
        ordered = sorted(self.bins)
        tail = max(_TAIL * sum(self.bins.values()), _ONCE * self.w)
        seen, low = 0.0, ordered[0]
        for low in ordered:
            seen += self.bins[low]
            if seen > tail:
                break
        seen, high = 0.0, ordered[-1]
        for high in reversed(ordered):
            seen += self.bins[high]
            if seen > tail:
                break
        return low, high

    def to_json(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "seasonal": None if self.seasonal is None else self.seasonal.to_json(),
            "n": self.n,
            "lo": self.lo if self.n else None,
            "hi": self.hi if self.n else None,
            "width": self.width,
            "bins": [[b, self.bins[b]] for b in sorted(self.bins)],
            "w": self.w,
            "since": self.since,
            "readings": self.readings,
            "new_bins": self.new_bins,
            "new_to_hour": self.new_to_hour,
            "hours": [
                [lo, hi] if lo <= hi else None
                for lo, hi in zip(self.hour_lo, self.hour_hi, strict=True)
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], params: NoveltyParams) -> NoveltyState:
        """The state :meth:`to_json` gave; ``params`` scale the counts of new values adopted
        from a state that predates them."""
        if "seasonal" not in data and "lvl_n" in data:  # a seasonal detector's state: adopt it
            seasonal = AnomalyState.from_json(data)
            return cls(seasonal, 0, math.inf, -math.inf, 0.0, {}, 1.0, 0)
        version = data.get("v")
        if version not in (1, _VERSION):
            raise ValueError(f"novelty state: v: expected 1 or {_VERSION}, got {version!r}")
        try:
            seasonal = data["seasonal"]
            if version == 1:  # visited bins without counts: one visit each
                bins, w = {int(b): 1.0 for b in data["bins"]}, 1.0
            else:
                bins, w = {int(b): float(c) for b, c in data["bins"]}, float(data["w"])
            n, width = int(data["n"]), float(data["width"])
            state = cls(
                None if seasonal is None else AnomalyState.from_json(seasonal),
                n,
                math.inf if data["lo"] is None else float(data["lo"]),
                -math.inf if data["hi"] is None else float(data["hi"]),
                width,
                bins,
                w,
                int(data["since"]),
            )
        except KeyError as exc:
            raise ValueError(f"novelty state: {exc.args[0]}: missing") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"novelty state: malformed: {exc}") from None
        if "readings" not in data:  # before the counts (the hours go with them): adopt
            counted = n - params.range_readings  # readings since the range was fixed
            if width and counted > 0:
                state.readings = w * params._memory * (1.0 - params._grow**-counted)
                state.new_bins = len(bins) * state.readings / counted  # each bin new once
            return state
        state.readings = _number(data, "readings", 0.0, math.inf)
        state.new_bins = _number(data, "new_bins", 0.0, state.readings)
        state.new_to_hour = _number(data, "new_to_hour", 0.0, state.readings)
        hours = data.get("hours")
        if not isinstance(hours, list) or len(hours) != 24:
            raise ValueError(f"novelty state: hours: expected a list of 24, got {hours!r:.80}")
        for h, taken in enumerate(hours):
            if taken is None:
                continue
            key = f"hours[{h}]"
            if not isinstance(taken, list) or len(taken) != 2:
                raise ValueError(f"novelty state: {key}: malformed, got {taken!r:.80}")
            lo = _checked(taken[0], key, -math.inf, math.inf)
            state.hour_lo[h] = lo
            state.hour_hi[h] = _checked(taken[1], key, lo, math.inf)
        return state


def _number(data: dict[str, Any], key: str, least: float, most: float) -> float:
    """``data[key]``: a finite number from ``least`` to ``most``, or a ValueError naming it."""
    if key not in data:
        raise ValueError(f"novelty state: {key}: missing")
    return _checked(data[key], key, least, most)


def _checked(value: Any, key: str, least: float, most: float) -> float:
    """``value`` (the state's ``key``): a finite number from ``least`` to ``most``."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not (least <= value <= most and math.isfinite(value))
    ):
        raise ValueError(f"novelty state: {key}: malformed, got {value!r:.80}")
    return float(value)


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
    familiar: bool
    """The series has no season and took values like this one often lately: its seasonal score
    was damped."""
    seen_low: float | None
    seen_high: float | None
    """The usual range of the visited bins, the rarest visits at each end left out (None before
    the range is fixed)."""
    new_to_hour: bool
    """On a seasonal series, the value lies more than a bin outside what its hour of the day
    (UTC) has taken: a usual value at an unusual hour."""
    new_every: float | None
    """Lately something new came about once in this many readings: a value in a new bin, or
    for a value new to its hour, a value outside its hour's range (None before the range is
    fixed)."""
    hour: int
    """The reading's hour of the day (UTC): from ``hour``:00 to the next."""
    hour_low: float | None
    hour_high: float | None
    """The range that hour took (None while none)."""
    damped: bool = False
    """The seasonal score was damped by the refractory period (the reading came within days of
    a higher score); ``rarity`` is that of the deviation itself, before the damping."""

    @property
    def text(self) -> str:
        full = self.seasonal_score >= 1.0 and not self.damped
        parts = [
            f"expected {self.expected:.4g} ({self.model} baseline), "
            f"usual range {self.low:.4g} to {self.high:.4g}",
            ("a deviation rarer than" if full else "a deviation about")
            + f" once in {self.rarity:,.0f} readings"
            + (" (its score damped: it came within days of a higher one)" if self.damped else ""),
        ]
        lately = (
            ""
            if self.new_every is None
            else f", such values about once in {self.new_every:,.0f} readings lately"
        )
        if self.novel and self.seen_low is not None and self.seen_high is not None:
            parts.append(
                f"a value never seen before (seen {self.seen_low:.4g} to {self.seen_high:.4g}"
                f"{lately})"
            )
        if self.new_to_hour and self.hour_low is not None and self.hour_high is not None:
            parts.append(
                f"a value new to this hour of the day (between {self.hour:02d}:00 and "
                f"{(self.hour + 1) % 24:02d}:00 UTC it took {self.hour_low:.4g} to "
                f"{self.hour_high:.4g}{lately})"
            )
        if self.familiar:
            parts.append("a value the series took often lately (its score is damped)")
        return "; ".join(parts)


class _Step(NamedTuple):
    score: float
    seasonal: float
    novel: bool
    familiar: bool
    new_to_hour: bool = False


_NOTHING = _Step(0.0, 0.0, False, False)


def _hour_of_day(ts: datetime) -> int:
    """The hour of the day in UTC, as the seasonal detector counts it."""
    return int(ts.timestamp() % _DAY // _HOUR)


def _undamped(refractory: float, before: AnomalyState | None, score: float) -> tuple[float, bool]:
    """The seasonal ``score`` before the refractory period damped it, and whether it did. The
    period multiplies a score ``u`` by ``1 - r`` when ``u <= r`` (``r`` the recent high score,
    before this reading), so a damped score is at most ``r * (1 - r)`` and an undamped one is
    over ``r``: the two never overlap, and the damping can be undone (except at ``r = 1``,
    where every score was damped to 0).

    >>> _undamped(0.99, None, 0.3), _undamped(0.0, None, 0.3)
    ((0.3, False), (0.3, False))
    """
    if before is None or not refractory:
        return score, False
    r = before.recent
    if score > r * (1.0 - r):
        return score, False
    return (score, True) if r >= 1.0 else (score / (1.0 - r), True)


def _novel(p: NoveltyParams, chance: float, seasonal: float) -> float:
    """The score of something new that came with ``chance`` a reading lately: at least a floor
    that shrinks with the log of its rarity, ranked by the seasonal score above it."""
    floor = p.novel_floor * min(1.0, -math.log10(chance) / p._log_every)
    return floor + (1.0 - floor) * seasonal


def _step(p: NoveltyParams, s: NoveltyState, ts: datetime, value: float) -> _Step:
    """Score ``value`` then learn it (mutates ``s``)."""
    learned = 0 if s.seasonal is None else s.seasonal.n
    s.seasonal, seasonal = score(p.in_force, s.seasonal, ts, value)
    if s.seasonal.n == learned:  # not newer than the last reading: nothing learned
        return _NOTHING
    s.n += 1
    if s.width == 0.0:
        s.lo, s.hi = min(s.lo, value), max(s.hi, value)
        if s.n >= p.range_readings:
            span = s.hi - s.lo
            s.width = max(span / p.levels, 1e-9 * max(abs(s.lo), abs(s.hi), 1.0), 1e-12)
        return _Step(seasonal, seasonal, False, False)
    q = s.bin(value)
    visits = s.visits(q)
    h = _hour_of_day(ts)
    outside_hour = s.outside_hour(h, value)
    # the chances before this reading is counted, only where they may be needed
    p_bin = s.chance(s.new_bins) if visits == 0.0 else 1.0
    p_hour = s.chance(s.new_to_hour) if outside_hour else 1.0
    s.visit(q, p._grow, p.max_span)
    if outside_hour:
        s.new_to_hour += s.w
    s.take(h, value)
    s.since += 1
    # quiet until quiet_readings readings or quiet_days at its usual interval have passed
    loud = s.since > p.quiet_readings or s.since * s.seasonal.dt > p._quiet_s
    # Both kinds of novelty share the quiet period: one excursion, one alert (an hour's own
    # quiet period gave 82.7 on the NAB tuning half, against 83.3).
    if visits == 0.0 and loud:
        s.since = 0
        return _Step(_novel(p, p_bin, seasonal), seasonal, True, False)
    if outside_hour and s.seasonal.model != 0 and loud:
        s.since = 0  # a usual value at an unusual hour: novel on a seasonal series
        return _Step(_novel(p, p_hour, seasonal), seasonal, False, False, True)
    if visits >= p.familiar_visits and s.seasonal.model == 0:
        return _Step(seasonal * p.familiar_damp, seasonal, False, True)
    return _Step(seasonal, seasonal, False, False)


class NoveltyDetector:
    """The seasonal detector plus value novelty behind the
    :class:`~rules.detectors.base.Detector` interface; ``state`` is what :meth:`to_json` gave."""

    def __init__(self, params: NoveltyParams | None = None, state: Any = None) -> None:
        self.params = params or NoveltyParams()
        self._state = (
            NoveltyState.new() if state is None else NoveltyState.from_json(state, self.params)
        )
        self._scored: tuple[Point, NoveltyState, _Step] | None = None

    def _score(self, x: Point) -> tuple[NoveltyState, _Step]:
        if self._scored is not None and self._scored[0] == x:
            return self._scored[1], self._scored[2]
        after = self._state.copy()
        step = _step(self.params, after, *x)
        self._scored = (x, after, step)
        return after, step

    def score_one(self, x: Point) -> float:
        return self._score(x)[1].score

    def learn_one(self, x: Point) -> None:
        self._state = self._score(x)[0]
        self._scored = None

    def step(self, x: Point) -> float:
        """Score then learn one point in one go (what a stream does; no copy of the state)."""
        self._scored = None
        return _step(self.params, self._state, *x).score

    def explain_one(self, x: Point) -> Explanation:
        """Why ``x`` scores as it does, against what was learned before it (learns nothing)."""
        step = self._score(x)[1]
        s = self._state
        expected, spread, model = expectation(self.params.in_force, s.seasonal, x[0], x[1])
        derived = self.params.in_force._d
        seasonal, damped = _undamped(derived.refractory, s.seasonal, step.seasonal)
        seen = None
        if s.bins:
            low, high = s.usual()
            if low > high:
                low, high = min(s.bins), max(s.bins)
            seen = (s.lo + low * s.width, s.lo + (high + 1) * s.width)
        h = _hour_of_day(x[0])
        taken = s.hour_lo[h] <= s.hour_hi[h]
        new = None
        if s.width:
            new = 1.0 / s.chance(s.new_to_hour if step.new_to_hour else s.new_bins)
        return Explanation(
            score=step.score,
            seasonal_score=step.seasonal,
            expected=expected,
            low=expected - 3.0 * spread,
            high=expected + 3.0 * spread,
            model=model,
            rarity=10.0 ** (seasonal * derived.full),
            novel=step.novel,
            familiar=step.familiar,
            seen_low=None if seen is None else seen[0],
            seen_high=None if seen is None else seen[1],
            new_to_hour=step.new_to_hour,
            new_every=new,
            hour=h,
            hour_low=s.hour_lo[h] if taken else None,
            hour_high=s.hour_hi[h] if taken else None,
            damped=damped,
        )

    def to_json(self) -> dict[str, Any] | None:
        return (
            None if self._state.n == 0 and self._state.seasonal is None else self._state.to_json()
        )
