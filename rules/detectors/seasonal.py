"""The seasonal detector: online anomaly scores for one series (baselines, seasons, shifts).

:func:`score` takes one reading and the series' state and returns the new state and a score in
[0, 1]. The reading is scored against what the state knew *before* it, and only then learned, so
a score never uses the reading itself or anything later. The function is pure and deterministic:
no I/O, no clock, no randomness.

**Method.** Three forecasts of the next value are kept side by side:

- *level*: a robust exponentially weighted level (half-life ``level_halflife`` readings);
- *daily*: additive Holt-Winters on 24 hour-of-day bins (UTC), each bin with its own robust
  spread, so a swing that is usual at 09:00 is judged by the spread of 09:00;
- *weekly*: the daily forecast plus a learned offset for each of the 168 hours of the week.

With the default ``season_level_halflife`` (as fast as the level) the daily bins mostly carry
hour-of-day *spreads* and the daily rise and fall; a slow one (about a day of readings) makes
them carry the daily shape as well.

Updates are robust: an error beyond ``outlier_clip`` spreads moves a level or a bin only by the
clip, so an isolated spike does not drag the baseline; ``shift_run`` such errors in a row on the
same side are a level shift, and the level jumps to their mean (the shift is flagged, then
absorbed). Each forecast's running Laplace log-likelihood picks the one that explains the
series best (seasonal forecasts compete after 2 days, the weekly one after 8).

Two statistics are read off the chosen forecast's standardised error ``u = error / spread``:
the point deviation ``|u|`` (spikes and dips) and an EWMA control chart of the signed ``u``
(half-life ``drift_halflife``), a CUSUM-like change statistic that catches small sustained shifts
and drifts the point deviation misses. Each is *calibrated* on the series' own history: a decayed
histogram of past values (half-octave bins) gives the chance ``p`` of a deviation at least this
large, with a Gaussian tail as a prior of ``surprise_prior`` pseudo-readings, and the score is
``-log10(p) / surprise_full``, clipped to 1. So the same score means the same rarity on a noisy
and on a quiet series, and one threshold serves all series. A second pair of histograms with a
long memory (``surprise_long_halflife``, weeks of readings) calibrates the same deviations
again, and the score is the less surprising of the two: the short memory adapts to a noisier
week, the long one remembers that a deviation of this size comes back every few days (a
short memory alone gives a constant rate of alerts per reading however long the series has
run). The spread has a floor (``rel_floor`` of the series' overall spread), so a series flat
between spikes does not see each spike grow in spreads. Finally a refractory period
(half-life ``refractory_halflife``) damps scores that do not exceed a recent high score, so one
event gives one alert rather than a burst.

A third statistic, off unless ``noise_halflife`` is set (the novelty detector sets it), is the
*noise*: an EWMA of ``u ** 2 - 1``, each ``u ** 2`` counted for at most 16 (4 spreads), so one
spike far out does not make a series look noisy for days. It is calibrated as the deviations
are, in histograms of its own (an exponential tail as the prior, the tail of a sum of squares),
and scored after the refractory period with a refractory period of its own, in which a later
noise score alerts only when it is 0.1 louder than the recent high (the statistic is smooth:
it would otherwise rise past its own last high at each reading of a noisy day); it scores
nothing before the series is a week old (a week holds the rhythm of its noise). The score is
the larger of the two (a tie is the deviation's), and ``noise_score`` keeps it when it is the
noise's (:func:`by_noise`). So a series that turns noisier than usual scores without any one
reading far out, and the errors of a level shift's first readings are seen even within the
refractory period of an earlier spike; the cost is that a sharp shift may give a second alert,
from the noise, a few readings after its first. Switched off, the noise is forgotten (a count
kept without its decaying histograms would find all noise rare when it is switched on again).
A state's lists must have their lengths and its numbers be finite: :meth:`AnomalyState.from_json`
refuses one that does not by the field's name (it would fail every later reading).

The score is 0.0 while the series warms up (its first ``warmup`` readings), for a reading whose
``ts`` is not newer than the last learned one (the state is then returned untouched, so replays
are idempotent), and after a gap of more than ``gap_reset_hours`` the change statistics restart.

**Memory.** The state is fixed-size whatever the series length: 24 + 24 + 168 seasonal floats,
six histograms of 48 floats and 30 scalars, 534 numbers in all; ``json.dumps(state.to_json())``
stays under 10 KB (after 22,695 readings of a NAB series: 7.4 KB, 8.0 KB with the long memory
in use and 8.4 KB with the noise as well).

**Speed.** One call is a few dozen float operations and up to six 48-bin tail sums, compiled
(mypyc). The state (:class:`AnomalyState`) is a native class of this module, so :func:`score`
reads and writes its fields directly, not through attribute look-ups: as a slotted class of
an interpreted module it cost about a third of all the instructions of a novelty score.
``python -m benchmarks.nab`` measures the speed through the novelty detector. :func:`score`
mutates the state in place and returns the same object: callers must not keep the old one
(:meth:`AnomalyState.copy` gives an independent one).

>>> from datetime import UTC, datetime, timedelta
>>> params = AnomalyParams(warmup=50)
>>> state, t0 = None, datetime(2026, 7, 1, tzinfo=UTC)
>>> scores = []
>>> for i in range(300):
...     value = 20.0 + (i * 7919 % 13) / 13  # a noisy flat series
...     state, s = score(params, state, t0 + timedelta(minutes=5 * i), value)
...     scores.append(s)
>>> max(scores[:50]), max(scores) < 0.5
(0.0, True)
>>> state, s = score(params, state, t0 + timedelta(minutes=5 * 300), 35.0)  # a spike
>>> s
1.0
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from rules.detectors.base import Point
from rules.detectors.seasonal_state import (
    _CLAMP,
    _DAY,
    _DAY_BINS,
    _HIST_BINS,
    _HOUR,
    _NEW_IN_2,
    _NEW_NOISE,
    _NOISE_AGE,
    _NOISE_CAP,
    _NOISE_LOUDER,
    _SQRT_HALF,
    _VERSION,
    _WEEK,
    _WEEK_BINS,
    _Z_MAX,
    AnomalyParams,
    _Derived,
)

__all__ = [
    "AnomalyParams",
    "AnomalyState",
    "SeasonalDetector",
    "by_noise",
    "expectation",
    "score",
]


_FIELDS = (
    "drift",
    "dt",
    "err_d",
    "err_n",
    "err_w",
    "hist",
    "hist_b",
    "hist_l",
    "hist_lb",
    "hist_ln",
    "hist_lw",
    "hist_n",
    "hist_w",
    "lvl_d",
    "lvl_n",
    "mad_d",
    "mean",
    "model",
    "n",
    "nll_d",
    "nll_n",
    "nll_w",
    "recent",
    "run_d",
    "run_n",
    "seas_d",
    "spread",
    "sum_d",
    "sum_n",
    "t_first",
    "t_last",
    "week_d",
    "noise",
    "noise_recent",
    "noise_score",
    "hist_v",
    "noise_n",
    "hist_lv",
    "noise_ln",
    "noise_age",
)
"""The state's fields, in the order :meth:`AnomalyState.to_json` writes them."""
_INTS = frozenset({"n", "run_n", "run_d", "model"})
_LISTS = {
    "seas_d": _DAY_BINS,
    "mad_d": _DAY_BINS,
    "week_d": _WEEK_BINS,
    **dict.fromkeys(("hist", "hist_b", "hist_l", "hist_lb", "hist_v", "hist_lv"), _HIST_BINS),
}
"""The lists of a state and their lengths: a state whose list is short (or holds a NaN) would
fail every later reading of its series, so :meth:`AnomalyState.from_json` refuses it."""
_COUNTS = frozenset({"hist_n", "hist_ln", "noise_n", "noise_ln", "noise_age"})
_WEIGHTS = frozenset({"hist_w", "hist_lw"})
"""Must be positive: every rarity divides by them."""


class AnomalyState:
    """What the detector remembers about one series: a fixed number of floats.

    :func:`score` mutates it in place. :meth:`to_json` gives plain JSON types (to store in a
    table), and :meth:`from_json` restores a state that scores exactly as the original. A
    native class of this compiled module: :func:`score` reads and writes its fields directly.
    """

    n: int
    t_first: float
    t_last: float
    dt: float
    lvl_n: float
    err_n: float
    nll_n: float
    run_n: int
    sum_n: float
    lvl_d: float
    seas_d: list[float]
    mad_d: list[float]
    err_d: float
    nll_d: float
    run_d: int
    sum_d: float
    week_d: list[float]
    err_w: float
    nll_w: float
    mean: float
    spread: float
    drift: float
    hist: list[float]
    hist_b: list[float]
    hist_w: float
    hist_n: float
    hist_l: list[float]
    hist_lb: list[float]
    hist_lw: float
    hist_ln: float
    recent: float
    model: int
    noise: float
    """The noise statistic: an EWMA of the squared standardised errors less 1."""
    noise_recent: float
    """The noise score's own recent high (its refractory period)."""
    noise_score: float
    """The last reading's score when the noise set it (over the deviation's), else 0."""
    hist_v: list[float]
    noise_n: float
    hist_lv: list[float]
    noise_ln: float
    """The noise statistic's calibration histograms (short and long memory, the weights of the
    deviations' own) and their decayed counts."""
    noise_age: float
    """Seconds of the series' history the noise has learned (each gap at most
    ``gap_reset_hours``), since it began or was last switched on."""

    def __init__(self, t: float, x: float) -> None:
        """The state after one reading at ``t`` (epoch seconds) of value ``x``."""
        self.n, self.t_first, self.t_last, self.dt = 1, t, t, 0.0
        self.lvl_n, self.err_n, self.nll_n, self.run_n, self.sum_n = x, 0.0, 0.0, 0, 0.0
        self.lvl_d, self.err_d, self.nll_d, self.run_d, self.sum_d = x, 0.0, 0.0, 0, 0.0
        self.seas_d, self.mad_d = [0.0] * _DAY_BINS, [0.0] * _DAY_BINS
        self.week_d, self.err_w, self.nll_w = [0.0] * _WEEK_BINS, 0.0, 0.0
        self.mean, self.spread, self.drift = x, 0.0, 0.0
        self.hist, self.hist_b = [0.0] * _HIST_BINS, [0.0] * _HIST_BINS
        self.hist_w, self.hist_n, self.recent = 1.0, 0.0, 0.0
        self.hist_l, self.hist_lb = [0.0] * _HIST_BINS, [0.0] * _HIST_BINS
        self.hist_lw, self.hist_ln, self.model = 1.0, 0.0, 0
        self.noise, self.noise_recent, self.noise_score = 0.0, 0.0, 0.0
        self.hist_v, self.noise_n = [0.0] * _HIST_BINS, 0.0
        self.hist_lv, self.noise_ln, self.noise_age = [0.0] * _HIST_BINS, 0.0, 0.0

    def copy(self) -> AnomalyState:
        """An independent copy (the lists are copied too)."""
        s = AnomalyState(0.0, 0.0)
        for name in _FIELDS:
            value = getattr(self, name)
            setattr(s, name, list(value) if isinstance(value, list) else value)
        return s

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"v": _VERSION}
        for name in _FIELDS:
            value = getattr(self, name)
            data[name] = list(value) if isinstance(value, list) else value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnomalyState:
        if data.get("v") == 1:
            data = {**_NEW_IN_2, **data}
        elif data.get("v") != _VERSION:
            raise ValueError(f"anomaly state: v: expected 1 or {_VERSION}, got {data.get('v')!r}")
        if "noise" not in data:  # written before the noise statistic: it starts empty
            data = {**_NEW_NOISE, **data}
        s = AnomalyState(0.0, 0.0)
        for name in _FIELDS:
            if name not in data:
                raise ValueError(f"anomaly state: {name}: missing")
            value = data[name]
            try:
                if isinstance(value, list):
                    numbers = [float(v) for v in value]
                    if len(numbers) != _LISTS.get(name) or not all(map(math.isfinite, numbers)):
                        raise ValueError(name)
                    setattr(s, name, numbers)
                elif name in _LISTS:  # a number where a list belongs (the interpreted class
                    raise ValueError(name)  # would take it)
                elif name in _INTS:
                    count = int(value)
                    if name == "n" and count < 1:
                        raise ValueError(name)
                    setattr(s, name, count)
                else:
                    number = float(value)
                    if (
                        not math.isfinite(number)
                        or (name in _COUNTS and number < 0.0)
                        or (name in _WEIGHTS and number <= 0.0)
                    ):
                        raise ValueError(name)
                    setattr(s, name, number)
            except (TypeError, ValueError):
                raise ValueError(f"anomaly state: {name}: malformed, got {value!r:.80}") from None
        return s


_SPREAD_CLIP = 30.0
"""A reading's deviation counts for at most this many spreads in the overall mean and spread
(the floor's scale): a glitch millions of spreads out does not raise the floor for weeks, real
spikes and shifts stay well within. A series exactly flat so far has no spread to clip by: its
first change counts in full (clipping against a tiny scale instead made series that start flat,
then vary, learn their spread too slowly: 67.3 against 71.3 on the NAB sample)."""


def _above(hist: list[float], w: float, z: float) -> float:
    """The decayed count of past values of at least ``z`` (over 1) in a histogram. The bins are
    added in a loop, not summed from a slice: the slice was a new list at every call."""
    pos = 2.0 * math.log2(z)
    j = int(pos)
    if j >= _HIST_BINS:
        return 0.0
    total = 0.0
    for k in range(j + 1, _HIST_BINS):
        total += hist[k]
    return (total + hist[j] * (1.0 - (pos - j))) / w


def _surprise(hist: list[float], w: float, n: float, z: float, prior: float, full: float) -> float:
    """Score a deviation ``z`` by its rarity in a decayed histogram of past deviations."""
    if z <= 1.0:
        return 0.0
    p = (_above(hist, w, z) + prior * math.erfc(z * _SQRT_HALF)) / (n + prior)
    return min(-math.log10(max(p, 1e-300)) / full, 1.0)


def _noise_surprise(
    hist: list[float], w: float, n: float, z: float, prior: float, full: float
) -> float:
    """Score the noise statistic ``z`` as :func:`_surprise` scores a deviation, with an
    exponential tail for the prior: the statistic is a sum of squares, whose tail is far heavier
    than a Gaussian's (with the Gaussian prior a young series found each noisier hour rare)."""
    if z <= 1.0:
        return 0.0
    p = (_above(hist, w, z) + prior * math.exp(-z)) / (n + prior)
    return min(-math.log10(max(p, 1e-300)) / full, 1.0)


def _remember(hist: list[float], w: float, z: float) -> None:
    if z > 1.0:
        hist[min(int(2.0 * math.log2(z)), _HIST_BINS - 1)] += w


def _rarity(
    hist: list[float],
    hist_b: list[float],
    w: float,
    n: float,
    z: float,
    zb: float,
    drift: bool,
    prior: float,
    full: float,
) -> float:
    """The score of a deviation ``z`` (and of the change statistic ``zb``, when ``drift``) in
    one calibration memory: the rarer of the two."""
    out = _surprise(hist, w, n, z, prior, full)
    if drift:
        out = max(out, _surprise(hist_b, w, n, zb, prior, full))
    return out


def _fold(
    hist: list[float],
    hist_b: list[float],
    hist_v: list[float],
    w: float,
    n: float,
    z: float,
    zb: float,
    zv: float,
    a: float,
    grow: float,
) -> tuple[list[float], list[float], list[float], float, float]:
    """One reading's ``z``, ``zb`` and ``zv`` learned by one calibration memory (decay ``a``):
    its histograms, the weight of the next reading and the decayed count of deviations."""
    _remember(hist, w, z)
    _remember(hist_b, w, zb)
    _remember(hist_v, w, zv)
    n = n * (1.0 - a) + 1.0
    w *= grow
    if w > 1e6:  # keep the decayed counts in range
        hist = [v / w for v in hist]
        hist_b = [v / w for v in hist_b]
        hist_v = [v / w for v in hist_v]
        w = 1.0
    return hist, hist_b, hist_v, w, n


def _noisier(d: _Derived, s: AnomalyState, zv: float) -> float:
    """The noise statistic ``zv`` scored by its rarity in both memories (the less surprising),
    then damped by its own refractory period unless it is ``_NOISE_LOUDER`` over its recent
    high; 0 until it has learned ``_NOISE_AGE`` of the series' history."""
    prior, full = d.surprise_prior, d.full
    out = _noise_surprise(s.hist_v, s.hist_w, s.noise_n, zv, prior, full)
    if d.a_long and s.noise_ln > 0.0:
        out = min(out, _noise_surprise(s.hist_lv, s.hist_lw, s.noise_ln, zv, prior, full))
    if s.n < d.warmup or s.noise_age < _NOISE_AGE:
        out = 0.0
    if d.refractory:
        recent = s.noise_recent
        s.noise_recent = max(out, recent * d.refractory)
        if out <= recent + _NOISE_LOUDER:
            out *= 1.0 - recent
    return out


def _forget_noise(s: AnomalyState) -> None:
    """The noise switched off: forget it, so switching it on again starts young (a count kept
    without its histograms, which decay meanwhile, would find all noise rare)."""
    for name, empty in _NEW_NOISE.items():  # as a state from before the noise is adopted
        setattr(s, name, list(empty) if isinstance(empty, list) else empty)


def score(
    params: AnomalyParams, state: AnomalyState | None, ts: datetime, value: float
) -> tuple[AnomalyState, float]:
    """Score one reading (UTC-aware ts) against earlier data, then learn it.

    Returns the new state and the score in [0, 1]. The state is mutated in place and returned
    (``is`` the argument); pass ``None`` for a new series. Raises ``ValueError`` for a naive
    ``ts`` or a non-finite ``value``.
    """
    if ts.tzinfo is None:
        raise ValueError(f"ts: must be timezone-aware, got {ts!r}")
    if not math.isfinite(value):
        raise ValueError(f"value: must be finite, got {value!r}")
    t = ts.timestamp()
    x = min(max(value, -_CLAMP), _CLAMP)
    if state is None:
        return AnomalyState(t, x), 0.0
    s = state
    if t <= s.t_last:
        return s, 0.0
    d = params._d
    gap = t - s.t_last
    s.dt = gap if s.dt == 0.0 else s.dt + 0.05 * (min(gap, 10.0 * s.dt) - s.dt)
    if gap > d.gap:
        s.drift, s.run_n, s.sum_n, s.run_d, s.sum_d = 0.0, 0, 0.0, 0, 0.0
        s.noise = 0.0
    h = int(t % _DAY // _HOUR)
    b = int((t // _DAY + 3) % 7) * 24 + h  # hour of the week, Monday 00:00 UTC first
    age = t - s.t_first

    # --- forecasts and their errors, from what was known before this reading
    floor = d.rel_floor * s.spread + 1e-12 * abs(s.mean) + 1e-300
    e_n = x - s.lvl_n
    e_d = x - s.lvl_d - s.seas_d[h]
    e_w = e_d - s.week_d[b]
    sc_n = max(1.2533 * s.err_n, floor)  # mean absolute error to standard deviation
    sc_d = max(1.2533 * s.mad_d[h], floor)
    ratio = min(max(s.err_w / s.err_d, 0.1), 10.0) if s.err_d > 0.0 else 1.0
    sc_w = max(sc_d * ratio, floor)
    z_n, z_d, z_w = abs(e_n) / sc_n, abs(e_d) / sc_d, abs(e_w) / sc_w

    e, sc, s.model = e_n, sc_n, 0
    season, m = d.season, d.select_margin
    if season != "none" and age >= 2 * _DAY:
        if season == "daily" or (season == "auto" and s.nll_d + m < s.nll_n):
            e, sc, s.model = e_d, sc_d, 1
            if season == "auto" and age >= 8 * _DAY and s.nll_w + m < s.nll_d:
                e, sc, s.model = e_w, sc_w, 2
        elif season == "weekly":
            e, sc, s.model = (e_w, sc_w, 2) if age >= 8 * _DAY else (e_d, sc_d, 1)
    u = min(max(e / sc, -_Z_MAX), _Z_MAX)
    z = abs(u)
    s.drift += d.a_drift * (u - s.drift)
    zb = min(abs(s.drift) * d.drift_gain, _Z_MAX)
    zv = 0.0
    if d.a_noise:
        s.noise_age += min(gap, d.gap)
        s.noise += d.a_noise * (min(u * u, _NOISE_CAP) - 1.0 - s.noise)
        zv = min(max(s.noise, 0.0) * d.noise_gain, _Z_MAX)

    # --- calibrate on the series' own history, damp repeats
    prior, full = d.surprise_prior, d.full
    drift = d.a_drift > 0.0
    out = _rarity(s.hist, s.hist_b, s.hist_w, s.hist_n, z, zb, drift, prior, full)
    if d.a_long and s.hist_ln > 0.0:  # as surprising as the long memory finds it, at most
        long = _rarity(s.hist_l, s.hist_lb, s.hist_lw, s.hist_ln, z, zb, drift, prior, full)
        out = min(out, long)
    if s.n < d.warmup:
        out = 0.0
    if d.refractory:
        recent = s.recent
        s.recent = max(out, recent * d.refractory)
        if out <= recent:
            out *= 1.0 - recent
    if d.a_noise:  # its own refractory period: a noisy day and a spike in it are two events
        noisy = _noisier(d, s, zv)
        s.noise_score = noisy if noisy > out else 0.0  # a tie is the deviation's
        out = max(out, noisy)
    elif s.noise_n or s.noise or s.noise_age:
        _forget_noise(s)

    # --- learn
    _learn(d, s, x, h, b, age, floor, e_n, e_d, e_w, sc_n, sc_d, sc_w, z_n, z_d, z_w)
    if 2 * s.n >= d.warmup:  # the first spreads are too young to calibrate with
        s.hist, s.hist_b, s.hist_v, s.hist_w, s.hist_n = _fold(
            s.hist, s.hist_b, s.hist_v, s.hist_w, s.hist_n, z, zb, zv, d.a_hist, d.hist_grow
        )
        if d.a_noise:  # counted only while on: a count without its histogram finds all rare
            s.noise_n = s.noise_n * (1.0 - d.a_hist) + 1.0
        if d.a_long:
            s.hist_l, s.hist_lb, s.hist_lv, s.hist_lw, s.hist_ln = _fold(
                s.hist_l,
                s.hist_lb,
                s.hist_lv,
                s.hist_lw,
                s.hist_ln,
                z,
                zb,
                zv,
                d.a_long,
                d.long_grow,
            )
            if d.a_noise:
                s.noise_ln = s.noise_ln * (1.0 - d.a_long) + 1.0
    s.n += 1
    s.t_last = t
    return s, out


def by_noise(state: AnomalyState, out: float) -> bool:
    """Whether ``out``, the score :func:`score` gave last with ``state``, is the noise's (over
    the deviation's), not a deviation's."""
    return 0.0 < out == state.noise_score


def expectation(
    params: AnomalyParams, state: AnomalyState | None, ts: datetime, value: float
) -> tuple[float, float, str]:
    """What :func:`score` expected at ``ts``: the baseline, its spread (a standard deviation) and
    the model (``level``, ``hour of day`` or ``hour of week``), as it would choose them now."""
    if state is None:
        return value, 0.0, "level"
    s, t = state, ts.timestamp()
    h = int(t % _DAY // _HOUR)
    b = int((t // _DAY + 3) % 7) * 24 + h
    floor = params.rel_floor * s.spread + 1e-12 * abs(s.mean) + 1e-300
    sc_d = max(1.2533 * s.mad_d[h], floor)
    ratio = min(max(s.err_w / s.err_d, 0.1), 10.0) if s.err_d > 0.0 else 1.0
    level = (s.lvl_n, max(1.2533 * s.err_n, floor), "level")
    daily = (s.lvl_d + s.seas_d[h], sc_d, "hour of day")
    weekly = (daily[0] + s.week_d[b], max(sc_d * ratio, floor), "hour of week")
    age, season, m = t - s.t_first, params.season, params.select_margin
    if season == "none" or age < 2 * _DAY:
        return level
    if season == "daily":
        return daily
    if season == "weekly":
        return weekly if age >= 8 * _DAY else daily
    if s.nll_d + m < s.nll_n:
        return weekly if age >= 8 * _DAY and s.nll_w + m < s.nll_d else daily
    return level


def _learn(
    d: _Derived,
    s: AnomalyState,
    x: float,
    h: int,
    b: int,
    age: float,
    floor: float,
    e_n: float,
    e_d: float,
    e_w: float,
    sc_n: float,
    sc_d: float,
    sc_w: float,
    z_n: float,
    z_d: float,
    z_w: float,
) -> None:
    """Fold one reading into the forecasts, their spreads and their log-likelihoods."""
    if s.n < d.warmup:  # young spreads are too small to clip with
        clip_n = clip_d = _CLAMP * 4.0
    else:
        # a bin seen a few times has a young spread: clip at least at the overall spread
        clip_n = d.outlier_clip * sc_n
        clip_d = d.outlier_clip * max(sc_d, 1.2533 * s.err_d)
    # a run of same-side outliers is a level shift: jump to its mean
    if abs(e_n) > clip_n and s.run_n * e_n >= 0:
        s.run_n += 1 if e_n > 0 else -1
        s.sum_n += x
    else:
        s.run_n, s.sum_n = 0, 0.0
    if abs(e_d) > clip_d and s.run_d * e_d >= 0:
        s.run_d += 1 if e_d > 0 else -1
        s.sum_d += x - s.seas_d[h]
    else:
        s.run_d, s.sum_d = 0, 0.0
    a = d.a_lvl
    if abs(s.run_n) >= d.shift_run:
        s.lvl_n = s.sum_n / abs(s.run_n)
        s.run_n, s.sum_n = 0, 0.0
    else:
        s.lvl_n += a * min(max(e_n, -clip_n), clip_n)
    ed = min(max(e_d, -clip_d), clip_d)
    if abs(s.run_d) >= d.shift_run:
        s.lvl_d = s.sum_d / abs(s.run_d)
        s.run_d, s.sum_d = 0, 0.0
    else:
        s.lvl_d += d.a_season_lvl * ed
    # a reading stands for its share of its hour; young profiles learn as running means
    cover = min(s.dt, _HOUR) / _HOUR
    g = cover * max(d.g_day, 1.0 / (1.0 + age // _DAY))
    s.seas_d[h] += g * (1.0 - d.a_season_lvl) * ed
    s.week_d[b] += cover * max(d.g_week, 1.0 / (1.0 + age // _WEEK)) * (ed - s.week_d[b])
    ae = max(d.a_scale, 1.0 / s.n)
    s.err_n += ae * (min(abs(e_n), clip_n + floor) - s.err_n)
    s.mad_d[h] += max(g, ae) * (min(abs(e_d), clip_d + floor) - s.mad_d[h])
    s.err_d += ae * (min(abs(e_d), clip_d + floor) - s.err_d)
    s.err_w += ae * (min(abs(e_w), clip_d + floor) - s.err_w)
    # Laplace negative log-likelihood, deviations capped so one outlier cannot decide
    s.nll_n += ae * (math.log(sc_n) + min(z_n, 20.0) - s.nll_n)
    s.nll_d += ae * (math.log(sc_d) + min(z_d, 20.0) - s.nll_d)
    s.nll_w += ae * (math.log(sc_w) + min(z_w, 20.0) - s.nll_w)
    dev = x - s.mean
    if s.spread > 0.0 and s.n >= d.warmup:  # one glitch must not raise the floor for weeks
        dev = min(max(dev, -_SPREAD_CLIP * s.spread), _SPREAD_CLIP * s.spread)
    s.mean += ae * dev
    s.spread += ae * (min(abs(x - s.mean), abs(dev)) - s.spread)  # |dev| when it was clipped


class SeasonalDetector:
    """:func:`score` behind the :class:`~rules.detectors.base.Detector` interface.

    ``state`` is what :meth:`to_json` gave (None for a new series). :meth:`score_one` scores
    without learning; a :meth:`learn_one` of the same point right after reuses that work.

    >>> from datetime import UTC, datetime
    >>> d = SeasonalDetector(AnomalyParams(warmup=2))
    >>> x = (datetime(2026, 7, 1, tzinfo=UTC), 20.0)
    >>> d.score_one(x), d.learn_one(x), d.to_json()["n"]
    (0.0, None, 1)
    """

    def __init__(self, params: AnomalyParams | None = None, state: Any = None) -> None:
        self.params = params or AnomalyParams()
        if isinstance(state, dict) and "seasonal" in state and "lvl_n" not in state:
            state = state["seasonal"]  # a novelty detector's state: adopt its seasonal part
        self._state = None if state is None else AnomalyState.from_json(state)
        self._scored: tuple[Point, AnomalyState] | None = None

    def score_one(self, x: Point) -> float:
        before = None if self._state is None else self._state.copy()
        after, out = score(self.params, before, *x)
        self._scored = (x, after)
        return out

    def learn_one(self, x: Point) -> None:
        if self._scored is not None and self._scored[0] == x:
            self._state = self._scored[1]
        else:
            self._state, _ = score(self.params, self._state, *x)
        self._scored = None

    def step(self, x: Point) -> float:
        """Score then learn one point in one go (what a stream does; no copy of the state)."""
        self._scored = None
        self._state, out = score(self.params, self._state, *x)
        return out

    def to_json(self) -> dict[str, Any] | None:
        return None if self._state is None else self._state.to_json()
