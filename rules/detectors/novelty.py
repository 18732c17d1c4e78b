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
- *noise*: unless a rule sets ``noise_halflife``, the seasonal detector underneath scores the
  noise lately as well (an EWMA of its squared standardised errors, half-life
  ``NOISE_HALFLIFE`` readings, calibrated on its own history and with a refractory period of
  its own): a series that turns noisier than usual, every value inside the range it has
  taken, scores without any one reading far out (NAB's ad exchange series: two days of cost
  per click swinging three and five times as far from hour to hour), and a level shift soon
  after a spike is seen by the errors of its first readings though the spike's refractory
  period damps their deviation (a sharp shift may so give a second alert, from the noise, a
  few readings after the first). The noise scores nothing before a series is a week old;
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
- *runs in the tails*: a reading whose bin and those beyond it hold under ``tail_share`` of the
  visits (decayed) is in a tail, the lowest or the highest. A run of such readings in a row, in
  one tail, is novel when it grows past twice the longest run lately, and to ``run_readings``
  at least, with the floor in full: a sustained excursion is rarer than any single value in it
  (a road slow for an hour where it used to dip for minutes). The longest run is forgotten as
  the visits are (halved every ``familiar_halflife`` readings outside the tails); a reading
  outside the tails, in the other one, or after a gap of more than the seasonal
  ``gap_reset_hours`` ends a run. Runs are judged once a quiet period (below) has passed since
  they began to be counted (the range fixed, or a state adopted that had none), and a run
  alerts in a quiet period too when it scores ``_LOUDER`` (0.1) over the novelty that began
  the period: a weak first sign of the excursion does not hide the excursion;
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
  keeps returning to is how that series behaves. A seasonal score that is the noise lately's
  is not damped: noise is no matter of the value. On a seasonal series a familiar value at an
  unusual hour is still judged by the season in full.

Otherwise the score is the seasonal detector's. The memory is the seasonal state (534 numbers),
the visited bins with their counts (at most ``4 * max_span`` of them), each hour's range and
a few counts: about 10 KB of JSON.
A score is computed before the reading is learned; the detector is deterministic and keeps no
clock. What runs at every reading (the state and the step) is in
:mod:`rules.detectors.novelty_step`, compiled: callgrind counts 51,760 instructions a score on
NAB's ``nyc_taxi``, 40,880 with the noise off (2026-12-06), where the step interpreted, over
the seasonal state of an interpreted module, took 92,440 (before the noise).

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
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import ConfigDict, Field

from cityvitals.contracts import Derived
from rules.detectors import novelty_step
from rules.detectors.base import Point
from rules.detectors.novelty_step import Knobs, NoveltyState, Step, hour_of_day
from rules.detectors.seasonal import AnomalyParams, AnomalyState, by_noise, expectation, score
from rules.detectors.seasonal_state import _NOISE_LOUDER

__all__ = ["Explanation", "NoveltyDetector", "NoveltyParams", "NoveltyState"]

LONG_HALFLIFE = 10_000.0
"""The seasonal detector's long calibration memory under this one, unless a rule sets it."""
SURPRISE_FULL = 7.25
"""``-log10`` of the chance at which the seasonal score under this one reaches 1, unless a rule
sets it (the seasonal detector alone: 6)."""
REFRACTORY_HALFLIFE = 600.0
"""The half-life of the seasonal detector's refractory period under this one, unless a rule
sets it (the seasonal detector alone: 288 readings)."""
NOISE_HALFLIFE = 72.0
"""The half-life of the seasonal detector's noise statistic under this one, unless a rule sets
it (the seasonal detector alone: off): six hours of readings every 5 minutes, three days of
hourly ones."""
_OWN_DEFAULTS: dict[str, float] = {
    "surprise_long_halflife": LONG_HALFLIFE,
    "noise_halflife": NOISE_HALFLIFE,
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
    tail_share: float = Field(default=0.03, gt=0, lt=0.5)
    """The share of the visits (decayed) at each end that makes the tails."""
    run_readings: int = Field(default=4, ge=2)
    """The shortest run of readings in the tails that may be novel."""

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
    def _deviations(self) -> AnomalyParams:
        """The seasonal parameters in force with the noise off: what an explanation scores a
        reading's deviation by, when the noise set its score."""
        return self.in_force.model_copy(update={"noise_halflife": 0.0})

    @cached_property
    def _knobs(self) -> Knobs:
        """What a step reads of these parameters, with its derived constants: made once per
        parameter set, not once per reading."""
        return Knobs(
            self.in_force,
            self.levels,
            self.range_readings,
            self.quiet_readings,
            self.quiet_days,
            self.novel_floor,
            self.novel_every,
            self.max_span,
            self.familiar_visits,
            self.familiar_halflife,
            self.familiar_damp,
            self.tail_share,
            self.run_readings,
        )


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
    """About one reading in this many deviates as much (from the deviation's own score)."""
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
    run: int = 0
    """The reading made a run of this many readings in a row in one tail of the visits, over
    twice as long as any lately (0: it made none). The run may go on after it."""
    run_before: int = 0
    """The longest such run lately (0: none)."""
    run_s: float = 0.0
    """How long the run has lasted, in seconds (its readings at the series' usual interval)."""
    tail: str = ""
    """Which tail: ``lowest`` or ``highest`` (the share ``tail_share``), when ``run``."""
    tail_share: float = 0.0
    top: bool = False
    """The deviation's own score reached 1 (and was not damped): past the top of the scale."""
    noise: float = 0.0
    """The seasonal score is that of the noise lately, over the deviation's: the forecast's
    errors, each counted for at most 4 spreads, averaged this many times the usual spread
    (their root mean square, decayed with a half-life of ``noise_s`` seconds; 0: the score is
    the deviation's)."""
    noise_s: float = 0.0
    noise_rarity: float = 0.0
    """About one reading in this many was as noisy (before the noise's refractory damping)."""
    noise_top: bool = False
    """The noise's score reached 1 (and was not damped)."""
    noise_damped: bool = False
    """The noise's score was damped by its own refractory period (within days of a louder
    noise); ``noise_rarity`` is that of the noise itself."""

    @property
    def kind(self) -> str:
        """What set the score, as the step judges in turn: ``novel`` (a value never seen),
        ``run`` (a run in a tail), ``new to its hour``, ``familiar`` (a damped deviation),
        ``noise`` (the noise lately) or ``deviation`` (from the forecast)."""
        if self.novel:
            return "novel"
        if self.run:
            return "run"
        if self.new_to_hour:
            return "new to its hour"
        if self.familiar:
            return "familiar"
        return "noise" if self.noise else "deviation"

    @property
    def text(self) -> str:
        parts = []
        if self.run:  # what raised the score first, then what the forecast said
            before = (
                f"the longest such run lately: {self.run_before}"
                if self.run_before
                else "no such run lately"
            )
            parts.append(
                f"{self.run} readings in a row ({_span(self.run_s)}) among the {self.tail} "
                f"{self.tail_share * 100:.3g}% of the values seen lately ({before})"
            )
        parts.append(
            f"expected {self.expected:.4g} ({self.model} baseline), "
            f"usual range {self.low:.4g} to {self.high:.4g}"
        )
        parts.append(
            (
                "a deviation past the top of the scale"
                if self.top
                else f"a deviation about once in {about(self.rarity)} readings"
                if self.rarity >= 2.0
                else "a usual deviation"
            )
            + (" (its score damped: it came within days of a higher one)" if self.damped else "")
        )
        if self.noise:  # the score is the noise's: say what it was and how rare
            parts.append(
                "the noise lately set the score: the forecast's errors, each counted to 4 "
                f"spreads and averaged with a half-life of {_span(self.noise_s)}, came to "
                f"about {self.noise:.2g} times the usual spread, "
                + (
                    "past the top of the scale"
                    if self.noise_top
                    else f"noise like this about once in {about(self.noise_rarity)} readings"
                )
                + (
                    " (its score damped: it came within days of louder noise)"
                    if self.noise_damped
                    else ""
                )
            )
        lately = (
            ""
            if self.new_every is None
            else f", such values about once in {about(self.new_every)} readings lately"
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


def about(n: float) -> str:
    """A rarity as people say one, to two significant digits (a seven-digit count reads as
    a precision the estimate does not have).

    >>> about(5_838_358.4), about(699.2), about(12.4)
    ('5,800,000', '700', '12')
    """
    if n < 100:
        return f"{n:,.0f}"
    return f"{round(n, 1 - math.floor(math.log10(n))):,.0f}"


def _span(seconds: float) -> str:
    """A duration in the unit a duty officer reads it in.

    >>> _span(65 * 60), _span(3.5 * 3600), _span(2 * 86400), _span(40)
    ('about 65 minutes', 'about 3.5 hours', 'about 2 days', 'about 1 minute')
    """
    if seconds < 2 * 3600:
        minutes = max(round(seconds / 60), 1)
        return f"about {minutes} minute" + ("" if minutes == 1 else "s")
    if seconds < 2 * 86400:
        return f"about {seconds / 3600:.2g} hours"
    return f"about {seconds / 86400:.2g} days"


def _undamped(
    refractory: float, before: AnomalyState | None, score: float, noise: bool = False
) -> tuple[float, bool]:
    """The seasonal ``score`` before the refractory period damped it, and whether it did (with
    ``noise``, the noise's score and its own period). The period multiplies a score ``u`` by
    ``1 - r`` when ``u <= r + m`` (``r`` the recent high score before this reading, ``m`` 0 or
    for the noise ``_NOISE_LOUDER``), so a damped score is at most ``(r + m) * (1 - r)`` and an
    undamped one is over ``r + m``: the two never overlap, and the damping can be undone (except
    at ``r = 1``, where every such score was damped to 0).

    >>> _undamped(0.99, None, 0.3), _undamped(0.0, None, 0.3)
    ((0.3, False), (0.3, False))
    >>> before = AnomalyState(0.0, 1.0)
    >>> before.noise_recent = 0.5
    >>> _undamped(0.99, before, 0.3, noise=True), _undamped(0.99, before, 0.7, noise=True)
    ((0.6, True), (0.7, False))
    """
    if before is None or not refractory or score <= 0.0:
        return score, False
    r, louder = (before.noise_recent, _NOISE_LOUDER) if noise else (before.recent, 0.0)
    if r <= 0.0 or score > (r + louder) * (1.0 - r):
        return score, False
    return (score, True) if r >= 1.0 else (score / (1.0 - r), True)


class NoveltyDetector:
    """The seasonal detector plus value novelty behind the
    :class:`~rules.detectors.base.Detector` interface; ``state`` is what :meth:`to_json` gave."""

    def __init__(self, params: NoveltyParams | None = None, state: Any = None) -> None:
        self.params = params or NoveltyParams()
        self._state = (
            NoveltyState.new()
            if state is None
            else NoveltyState.from_json(state, self.params._knobs)
        )
        self._scored: tuple[Point, NoveltyState, Step] | None = None

    def _score(self, x: Point) -> tuple[NoveltyState, Step]:
        if self._scored is not None and self._scored[0] == x:
            return self._scored[1], self._scored[2]
        after = self._state.copy()
        judged = novelty_step.step(self.params._knobs, after, *x)
        self._scored = (x, after, judged)
        return after, judged

    def score_one(self, x: Point) -> float:
        return self._score(x)[1].score

    def learn_one(self, x: Point) -> None:
        self._state = self._score(x)[0]
        self._scored = None

    def step(self, x: Point) -> float:
        """Score then learn one point in one go (what a stream does; no copy of the state)."""
        self._scored = None
        return novelty_step.step(self.params._knobs, self._state, *x).score

    def explain_one(self, x: Point) -> Explanation:
        """Why ``x`` scores as it does, against what was learned before it (learns nothing)."""
        after, step = self._score(x)
        s = self._state
        expected, spread, model = expectation(self.params.in_force, s.seasonal, x[0], x[1])
        derived = self.params.in_force._d
        noisy = after.seasonal is not None and by_noise(after.seasonal, step.seasonal)
        deviation, noise = step.seasonal, (0.0, False)
        if noisy and s.seasonal is not None:  # the deviation's own score, as with the noise off
            deviation = score(self.params._deviations, s.seasonal.copy(), *x)[1]
            noise = _undamped(derived.refractory, s.seasonal, step.seasonal, noise=True)
        seasonal, damped = _undamped(derived.refractory, s.seasonal, deviation)
        seen = None
        if s.bins:
            low, high = s.usual()
            if low > high:
                low, high = min(s.bins), max(s.bins)
            seen = (s.lo + low * s.width, s.lo + (high + 1) * s.width)
        h = hour_of_day(x[0])
        taken = s.hour_lo[h] <= s.hour_hi[h]
        side = 0
        if step.run:
            side = s.tail(s.bin(x[1]), self.params.tail_share)
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
            top=seasonal >= 1.0 and not damped,
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
            run=step.run,
            run_before=math.floor(s.run_best) if step.run else 0,
            run_s=step.run * s.seasonal.dt if step.run and s.seasonal is not None else 0.0,
            tail={-1: "lowest", 1: "highest"}.get(side, ""),
            tail_share=self.params.tail_share,
            noise=math.sqrt(1.0 + after.seasonal.noise) if noisy and after.seasonal else 0.0,
            noise_s=(
                self.params.in_force.noise_halflife * after.seasonal.dt
                if noisy and after.seasonal and self.params.in_force.noise_halflife
                else 0.0
            ),
            noise_rarity=10.0 ** (noise[0] * derived.full) if noisy else 0.0,
            noise_top=noisy and noise[0] >= 1.0 and not noise[1],
            noise_damped=noise[1],
        )

    def to_json(self) -> dict[str, Any] | None:
        return (
            None if self._state.n == 0 and self._state.seasonal is None else self._state.to_json()
        )
