"""The seasonal detector's parameters and constants.

See :mod:`rules.detectors.seasonal` for the method; the state
(:class:`~rules.detectors.seasonal.AnomalyState`) is a native class of that compiled module.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from cityvitals.contracts import Derived

__all__ = ["AnomalyParams"]

_DAY = 86400.0
_HOUR = 3600.0
_WEEK = 7 * _DAY
_DAY_BINS = 24
_WEEK_BINS = 168
_HIST_BINS = 48  # half-octaves of a deviation, from 1 to 2**24
_Z_MAX = 2.0**24 - 1.0
_CLAMP = 1e150  # values are clamped here so no sum or difference can overflow
_SQRT_HALF = 0.7071067811865476
_VERSION = 2
_NEW_IN_2: dict[str, Any] = {
    "hist_l": [0.0] * _HIST_BINS,
    "hist_lb": [0.0] * _HIST_BINS,
    "hist_lw": 1.0,
    "hist_ln": 0.0,
    "model": 0,
}
"""What a version 1 state lacks: the long calibration starts empty."""
_NEW_NOISE: dict[str, Any] = {
    "noise": 0.0,
    "noise_recent": 0.0,
    "noise_score": 0.0,
    "hist_v": [0.0] * _HIST_BINS,
    "noise_n": 0.0,
    "hist_lv": [0.0] * _HIST_BINS,
    "noise_ln": 0.0,
    "noise_age": 0.0,
}
"""What a version 2 state written before the noise statistic lacks: its calibration starts
empty (its own counts, so an adopted state does not find every noise rare). Code that predates
it reads a state that has it (the fields are ignored): a rollback keeps its anomaly rules."""
_NOISE_CAP = 16.0
"""A squared standardised error counts for at most this much in the noise statistic (an error
of 4 spreads): one spike far out does not make a series look noisy for days."""
_NOISE_AGE = _WEEK
"""The noise scores nothing before it has learned this much of a series' history (counted from
when it began, each gap at most ``gap_reset_hours``): a week holds the rhythm of its noise over
the days of a week, and a young series' first busy afternoons are no noisier than usual (NAB's
tweet series: 27 more false positives without this wait, 18 of them in a series' first
week)."""
_NOISE_LOUDER = 0.1
"""Within the refractory period of a noise score, a later one alerts only when it is this much
louder: the statistic is smooth, so it would otherwise rise past its own last high at each
reading of a noisy day."""


def _rate(halflife: float) -> float:
    """The EWMA weight of a new value for a half-life in readings."""
    return 1.0 - math.pow(0.5, 1.0 / halflife)


SURPRISE_FULL = 6.0
"""The seasonal detector's ``surprise_full`` when a rule leaves it unset."""
REFRACTORY_HALFLIFE = 288.0
"""The seasonal detector's ``refractory_halflife`` when a rule leaves it unset."""


class AnomalyParams(Derived):
    """How series are scored. Half-lives are counted in readings unless the name says otherwise.

    The defaults suit sensors read every few minutes (air quality, noise, traffic counts, water
    levels): a level that follows the last half hour, spreads and calibration over a day.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    warmup: int = Field(default=96, ge=1)
    """Readings learned before the first non-zero score."""
    level_halflife: float = Field(default=6.0, gt=0)
    """How fast the level and the seasonal level follow the series."""
    scale_halflife: float = Field(default=288.0, gt=0)
    """Memory of the error spreads and of the model choice."""
    season: Literal["auto", "none", "daily", "weekly"] = "auto"
    """``auto`` lets the data choose between no season, a daily and a weekly profile."""
    season_level_halflife: float = Field(default=6.0, gt=0)
    """How fast the level under the seasonal profiles follows the series. Fast (the default)
    leaves the profiles mostly the hour-of-day *spreads* and transitions; slow (a day of
    readings) makes them learn the daily shape too, and flags a missing daily peak."""
    season_halflife_days: float = Field(default=3.0, gt=0)
    """Memory of the hour-of-day profile, in days."""
    season_halflife_weeks: float = Field(default=2.0, gt=0)
    """Memory of the hour-of-week offsets, in weeks."""
    select_margin: float = Field(default=0.05, ge=0)
    """Log-likelihood a richer model must gain per reading to be chosen."""
    outlier_clip: float = Field(default=3.0, gt=0)
    """Errors beyond this many spreads move a baseline only by the clip."""
    shift_run: int = Field(default=3, ge=1)
    """Clipped errors in a row, on one side, that make a level shift."""
    drift_halflife: float = Field(default=6.0, ge=0)
    """Half-life of the change (EWMA chart) statistic; 0 switches it off."""
    surprise_halflife: float = Field(default=300.0, gt=0)
    """Memory of the calibration histograms."""
    surprise_long_halflife: float | None = Field(default=None, ge=0)
    """Memory of a second, long calibration (weeks of readings); a deviation scores by the less
    surprising of the two, so one the series gave several times lately does not alert each time
    it comes back. 0 switches it off; None leaves it to the detector: off for ``seasonal`` (alone,
    it would miss new levels whose size it saw before), 10,000 readings for ``novelty`` (which
    catches those as new values)."""
    surprise_prior: float = Field(default=10.0, gt=0)
    """Weight, in readings, of the Gaussian tail prior of the calibration."""
    surprise_full: float | None = Field(default=None, gt=0)
    """``-log10`` of the chance that gives score 1. None leaves it to the detector: 6 (one in a
    million) for ``seasonal``, 7.25 for ``novelty`` (values never seen are what it alerts on)."""
    noise_halflife: float | None = Field(default=None, ge=0)
    """Half-life of the noise statistic: an EWMA of the squared standardised errors (each
    counted for at most 4 spreads), calibrated as the deviations are, so a series that turns
    noisier than usual scores without any one reading far out. 0 switches it off. None leaves it
    to the detector: off for ``seasonal``, 72 readings for ``novelty``."""
    refractory_halflife: float | None = Field(default=None, ge=0)
    """Half-life of the recent high score that damps repeats; 0 switches it off. None leaves it
    to the detector: 288 readings for ``seasonal``, 600 for ``novelty``."""
    gap_reset_hours: float = Field(default=6.0, gt=0)
    """A gap longer than this restarts the change statistics."""
    rel_floor: float = Field(default=0.05, ge=0)
    """Smallest spread, as a share of the series' overall spread. It guards constant series,
    and series flat between spikes, whose spread would otherwise shrink until each spike of the
    same size looked larger than the last."""

    @field_validator("surprise_long_halflife", "noise_halflife")
    @classmethod
    def _off_or_a_reading(cls, halflife: float | None) -> float | None:
        if halflife is not None and 0 < halflife < 1:
            raise ValueError("a half-life is 0 (off) or at least 1 reading")
        return halflife

    @cached_property
    def _d(self) -> _Derived:
        return _Derived(self)


class _Derived:
    """Per-reading constants computed once per parameter set (:attr:`AnomalyParams._d`), and
    the parameters :func:`~rules.detectors.seasonal.score` reads at every reading."""

    __slots__ = (
        "a_drift",
        "a_hist",
        "a_long",
        "a_lvl",
        "a_noise",
        "a_scale",
        "a_season_lvl",
        "drift_gain",
        "full",
        "g_day",
        "g_week",
        "gap",
        "hist_grow",
        "long_grow",
        "noise_gain",
        "outlier_clip",
        "refractory",
        "rel_floor",
        "season",
        "select_margin",
        "shift_run",
        "surprise_prior",
        "warmup",
    )

    def __init__(self, p: AnomalyParams) -> None:
        self.a_lvl = _rate(p.level_halflife)
        self.a_scale = _rate(p.scale_halflife)
        self.a_season_lvl = _rate(p.season_level_halflife)
        self.g_day = _rate(p.season_halflife_days)
        self.g_week = _rate(p.season_halflife_weeks)
        self.a_hist = _rate(p.surprise_halflife)
        self.hist_grow = 1.0 / (1.0 - self.a_hist)
        h = p.surprise_long_halflife or 0.0
        self.a_long = _rate(h) if h > 0 else 0.0
        self.long_grow = 1.0 / (1.0 - self.a_long)
        self.a_drift = _rate(p.drift_halflife) if p.drift_halflife > 0 else 0.0
        # puts the EWMA of unit-variance errors back on the scale of one error
        self.drift_gain = math.sqrt((2.0 - self.a_drift) / self.a_drift) if self.a_drift else 0.0
        h = p.noise_halflife or 0.0
        self.a_noise = _rate(h) if h > 0 else 0.0
        # puts the EWMA of (squared errors - 1) on the scale of one error's standard deviation
        self.noise_gain = (
            1.0 / math.sqrt(2.0 * self.a_noise / (2.0 - self.a_noise)) if self.a_noise else 0.0
        )
        self.full = SURPRISE_FULL if p.surprise_full is None else p.surprise_full
        h = REFRACTORY_HALFLIFE if p.refractory_halflife is None else p.refractory_halflife
        self.refractory = math.pow(0.5, 1.0 / h) if h else 0.0
        self.gap = p.gap_reset_hours * _HOUR
        self.rel_floor, self.season = p.rel_floor, p.season
        self.select_margin, self.warmup = p.select_margin, p.warmup
        self.surprise_prior, self.outlier_clip = p.surprise_prior, p.outlier_clip
        self.shift_run = p.shift_run
