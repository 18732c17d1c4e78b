"""The novelty detector's state and its step (score a reading, then learn it): compiled.

See :mod:`rules.detectors.novelty` for the method, the parameters and the detector. This module
holds what runs at every reading, as native classes of a compiled module (mypyc): the state
(:class:`NoveltyState`), the parameters one step reads (:class:`Knobs`) and :func:`step`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, NamedTuple

from rules.detectors.seasonal import AnomalyParams, AnomalyState, by_noise, score
from rules.detectors.seasonal_state import _DAY, _HOUR

__all__ = ["Knobs", "NoveltyState", "Step", "hour_of_day", "step"]

_VERSION = 2
"""Version 2 states written before the counts of new values (``readings``, ``new_bins``,
``new_to_hour``, ``hours``) are adopted; code that predates them reads these states too. So
are those written before the runs in the tails (``run``, ``run_side``, ``run_best``,
``loudest``, ``judged``: absent, no run is judged until a quiet period has passed), and code
that predates the runs reads a state that has them (a rollback keeps its anomaly rules)."""
_TAIL = 0.002
_ONCE = 1.5
"""The visits at each end of the bins that do not widen them: a share of all visits, and at
least a single visit."""
_KEPT = 4
"""Bins kept, in spans of ``max_span``: past it, the least visited are forgotten."""
_PRIOR_NEW, _PRIOR_READINGS = 1.0, 10.0
"""The prior of the chance of something new: one in ten readings."""
_RUN_GROWTH = 2
"""A run in the tails is novel when it grows past this many times the longest run lately."""
_LOUDER = 0.1
"""In a quiet period, a novel run still alerts when it scores this much more than the novelty
that began the period: a sustained excursion after a weak first sign of it."""
_HOUR_RELAX = 0.003
"""How far the edges of an hour's range move toward each value the hour takes inside them: a
glitch or a level left behind is half forgotten after about 230 readings at that hour (three
weeks of readings every 5 minutes, eight months of hourly ones)."""


class Knobs:
    """What one step reads of :class:`~rules.detectors.novelty.NoveltyParams`, with the
    constants derived from it: made once per parameter set (``NoveltyParams._knobs``), a native
    class whose fields cost less to read than a pydantic model's attributes."""

    seasonal: AnomalyParams
    """The seasonal parameters in force (``NoveltyParams.in_force``)."""
    levels: int
    range_readings: int
    quiet_readings: int
    quiet_s: float
    """``quiet_days`` in seconds."""
    novel_floor: float
    log_every: float
    """``log10(novel_every)``: the rarity, in powers of ten, that earns the full floor."""
    max_span: int
    familiar_visits: float
    familiar_damp: float
    tail_share: float
    run_readings: int
    gap_s: float
    """The seasonal ``gap_reset_hours`` in seconds: a longer gap ends a run in the tails."""
    grow: float
    """The growth of the weight of a visit from one reading to the next."""
    memory: float
    """The most a decayed count of readings reaches: about 1.44 half-lives of readings."""

    def __init__(
        self,
        seasonal: AnomalyParams,
        levels: int,
        range_readings: int,
        quiet_readings: int,
        quiet_days: float,
        novel_floor: float,
        novel_every: float,
        max_span: int,
        familiar_visits: float,
        familiar_halflife: float,
        familiar_damp: float,
        tail_share: float,
        run_readings: int,
    ) -> None:
        self.seasonal, self.levels, self.range_readings = seasonal, levels, range_readings
        self.quiet_readings, self.quiet_s = quiet_readings, quiet_days * _DAY
        self.novel_floor, self.log_every = novel_floor, math.log10(novel_every)
        self.max_span, self.familiar_visits = max_span, familiar_visits
        self.familiar_damp = familiar_damp
        self.tail_share, self.run_readings = tail_share, run_readings
        self.gap_s = seasonal.gap_reset_hours * _HOUR
        self.grow = math.pow(2.0, 1.0 / familiar_halflife)
        self.memory = self.grow / (self.grow - 1.0)


class NoveltyState:
    """The seasonal state, the range, the visited bins with their decayed visit counts (in units
    of ``w``, the weight of the latest visit), the readings since the last novelty, the decayed
    counts (in units of ``w`` too) of the readings since the range was fixed and of those that
    were new (to the bins, to their hour), the range each hour of the day took, and the runs of
    readings in the tails of the visits."""

    seasonal: AnomalyState | None
    n: int
    lo: float
    hi: float
    width: float  # 0 until the range is fixed
    bins: dict[int, float]
    w: float
    since: int  # readings since the last novel one (or since the range was fixed)
    readings: float
    """Readings since the range was fixed (decayed, as the counts below)."""
    new_bins: float
    """Readings that visited a new bin."""
    new_to_hour: float
    """Readings more than a bin outside their hour's range."""
    hour_lo: list[float]
    """The lowest value each hour of the day (UTC) took since the range was fixed, relaxed
    toward its later values (``_HOUR_RELAX``); inf while none."""
    hour_hi: list[float]
    """The highest, likewise; -inf while none."""
    run: int
    """Readings in a row, up to the last, in one tail of the visits (``tail``)."""
    run_side: int
    """Which tail the run is in: -1 the lowest, 1 the highest, 0 none."""
    run_best: float
    """The longest run in the tails that has ended (a novel one included), forgotten as the
    visits are: halved every ``familiar_halflife`` readings outside the tails."""
    loudest: float
    """The score of the novelty that began the quiet period (0 for the quiet after the range
    is fixed)."""
    judged: int
    """Readings counted since runs began to be counted (the range fixed, or a state adopted
    that had no runs), up to the end of a quiet period: no run is judged before."""

    def __init__(
        self,
        seasonal: AnomalyState | None,
        n: int,
        lo: float,
        hi: float,
        width: float,
        bins: dict[int, float],
        w: float,
        since: int,
        readings: float = 0.0,
        new_bins: float = 0.0,
        new_to_hour: float = 0.0,
        hour_lo: list[float] | None = None,
        hour_hi: list[float] | None = None,
        run: int = 0,
        run_side: int = 0,
        run_best: float = 0.0,
        loudest: float = 0.0,
        judged: int = 0,
    ) -> None:
        self.seasonal, self.n, self.lo, self.hi, self.width = seasonal, n, lo, hi, width
        self.bins, self.w, self.since = bins, w, since
        self.readings, self.new_bins, self.new_to_hour = readings, new_bins, new_to_hour
        self.hour_lo = [math.inf] * 24 if hour_lo is None else hour_lo
        self.hour_hi = [-math.inf] * 24 if hour_hi is None else hour_hi
        self.run, self.run_side, self.run_best = run, run_side, run_best
        self.loudest, self.judged = loudest, judged

    @classmethod
    def new(cls) -> NoveltyState:
        return NoveltyState(None, 0, math.inf, -math.inf, 0.0, {}, 1.0, 0)

    def copy(self) -> NoveltyState:
        return NoveltyState(
            None if self.seasonal is None else self.seasonal.copy(),
            self.n,
            self.lo,
            self.hi,
            self.width,
            dict(self.bins),
            self.w,
            self.since,
            self.readings,
            self.new_bins,
            self.new_to_hour,
            list(self.hour_lo),
            list(self.hour_hi),
            self.run,
            self.run_side,
            self.run_best,
            self.loudest,
            self.judged,
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

    def tail(self, q: int, share: float) -> int:
        """-1 if bin ``q`` lies in the lowest ``share`` of the visits (its own included), 1 if in
        the highest, else 0: the tails, before a reading in ``q`` is counted."""
        own = self.bins.get(q, 0.0)
        if own >= share * self.readings:  # most readings: a bin this visited is in no tail
            return 0  # (the bins hold at most the readings: forgotten bins, adopted states)
        below = above = own
        for b, c in self.bins.items():
            if b < q:
                below += c
            elif b > q:
                above += c
        most = share * (below + above - own)
        if below < most:
            return -1 if below <= above else 1
        return 1 if above < most else 0

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
            "run": self.run,
            "run_side": self.run_side,
            "run_best": self.run_best,
            "loudest": self.loudest,
            "judged": self.judged,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], knobs: Knobs) -> NoveltyState:
        """The state :meth:`to_json` gave; ``knobs`` scale the counts of new values adopted
        from a state that predates them."""
        if "seasonal" not in data and "lvl_n" in data:  # a seasonal detector's state: adopt it
            adopted = AnomalyState.from_json(data)
            return NoveltyState(adopted, 0, math.inf, -math.inf, 0.0, {}, 1.0, 0)
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
            state = NoveltyState(
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
            counted = n - knobs.range_readings  # readings since the range was fixed
            if width and counted > 0:
                state.readings = w * knobs.memory * (1.0 - knobs.grow**-counted)
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
            if not isinstance(taken, list) or len(taken) != 2:
                raise ValueError(f"novelty state: hours[{h}]: malformed, got {taken!r:.80}")
            lo, hi = taken
            if not _valid(lo, -math.inf, math.inf):
                raise ValueError(f"novelty state: hours[{h}]: malformed, got {lo!r:.80}")
            if not _valid(hi, lo, math.inf):
                raise ValueError(f"novelty state: hours[{h}]: malformed, got {hi!r:.80}")
            state.hour_lo[h], state.hour_hi[h] = float(lo), float(hi)
        if "run" in data:  # else before the runs: none is judged until a quiet period passed
            state.run = _integer(data, "run", 0)
            state.run_side = _integer(data, "run_side", -1, 1)
            state.run_best = _number(data, "run_best", 0.0, _MOST)
            state.loudest = _number(data, "loudest", 0.0, 1.0)
            state.judged = _integer(data, "judged", 0)
        return state


def _number(data: dict[str, Any], key: str, least: float, most: float) -> float:
    """``data[key]``: a finite number from ``least`` to ``most``, or a ValueError naming it."""
    if key not in data:
        raise ValueError(f"novelty state: {key}: missing")
    return _checked(data[key], key, least, most)


_MOST = 2**31
"""The most a count of readings in a state may be."""


def _integer(data: dict[str, Any], key: str, least: int, most: int = _MOST) -> int:
    """``data[key]``: an integer (not a bool) from ``least`` to ``most``, or a ValueError naming
    it."""
    if key not in data:
        raise ValueError(f"novelty state: {key}: missing")
    value = data[key]
    if not (isinstance(value, int) and not isinstance(value, bool) and least <= value <= most):
        raise ValueError(f"novelty state: {key}: malformed, got {value!r:.80}")
    return value


def _checked(value: Any, key: str, least: float, most: float) -> float:
    """``value`` (the state's ``key``): a finite number from ``least`` to ``most``."""
    if not _valid(value, least, most):
        raise ValueError(f"novelty state: {key}: malformed, got {value!r:.80}")
    return float(value)


def _valid(value: Any, least: float, most: float) -> bool:
    """Whether ``value`` is a finite number (not a bool) from ``least`` to ``most``. The error
    that names it is made only when it is not: a state's 24 hours are read at every reading of
    an anomaly rule, and making each hour's name cost a third of reading the state."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and least <= value <= most
        and math.isfinite(value)
    )


class Step(NamedTuple):
    """One step's scores and why."""

    score: float
    seasonal: float
    novel: bool
    familiar: bool
    new_to_hour: bool = False
    run: int = 0
    """The run in the tails this reading made novel (0 when it made none)."""


_NOTHING = Step(0.0, 0.0, False, False)


def hour_of_day(ts: datetime) -> int:
    """The hour of the day in UTC, as the seasonal detector counts it."""
    return int(ts.timestamp() % _DAY // _HOUR)


def _novel(p: Knobs, chance: float, seasonal: float) -> float:
    """The score of something new that came with ``chance`` a reading lately: at least a floor
    that shrinks with the log of its rarity, ranked by the seasonal score above it (a chance of
    0: the floor in full)."""
    floor = p.novel_floor
    if chance > 0.0:
        floor *= min(1.0, -math.log10(chance) / p.log_every)
    return floor + (1.0 - floor) * seasonal


def _ran(p: Knobs, s: NoveltyState, q: int) -> int:
    """Count a reading in bin ``q`` in the run of readings in one tail: the run's length if
    it just grew past ``_RUN_GROWTH`` times the longest run lately (and to ``run_readings`` at
    least), else 0. The bins are those before the reading is counted. A reading outside the
    tails, or in the other one, ends the run; so does a gap of more than ``gap_reset_hours``
    between readings (:func:`step`)."""
    side = s.tail(q, p.tail_share)
    if side != s.run_side:
        _end_run(s)
        s.run_side = side
    if side == 0:
        s.run_best /= p.grow  # forgotten as the visits are
        return 0
    s.run += 1
    return s.run if s.run == max(p.run_readings, math.floor(_RUN_GROWTH * s.run_best) + 1) else 0


def _end_run(s: NoveltyState) -> None:
    s.run_best = max(s.run_best, float(s.run))
    s.run, s.run_side = 0, 0


def step(p: Knobs, s: NoveltyState, ts: datetime, value: float) -> Step:
    """Score ``value`` then learn it (mutates ``s``)."""
    learned, last = (0, 0.0) if s.seasonal is None else (s.seasonal.n, s.seasonal.t_last)
    s.seasonal, seasonal = score(p.seasonal, s.seasonal, ts, value)
    if s.seasonal.n == learned:  # not newer than the last reading: nothing learned
        return _NOTHING
    if s.seasonal.t_last - last > p.gap_s:  # a gap ends a run, as it restarts the seasonal
        _end_run(s)  # detector's change statistics
    s.n += 1
    if s.width == 0.0:
        s.lo, s.hi = min(s.lo, value), max(s.hi, value)
        if s.n >= p.range_readings:
            span = s.hi - s.lo
            s.width = max(span / p.levels, 1e-9 * max(abs(s.lo), abs(s.hi), 1.0), 1e-12)
        return Step(seasonal, seasonal, False, False)
    q = s.bin(value)
    visits = s.visits(q)
    h = hour_of_day(ts)
    outside_hour = s.outside_hour(h, value)
    # the chances before this reading is counted, only where they may be needed
    p_bin = s.chance(s.new_bins) if visits == 0.0 else 1.0
    p_hour = s.chance(s.new_to_hour) if outside_hour else 1.0
    run = _ran(p, s, q)
    s.visit(q, p.grow, p.max_span)
    if outside_hour:
        s.new_to_hour += s.w
    s.take(h, value)
    s.since += 1
    # quiet until quiet_readings readings or quiet_days at its usual interval have passed
    loud = s.since > p.quiet_readings or s.since * s.seasonal.dt > p.quiet_s
    # runs are judged after such a quiet period since they began to be counted: the tails of
    # bins that have just begun to fill (or of a state adopted without runs) say little
    ripe = s.judged > p.quiet_readings or s.judged * s.seasonal.dt > p.quiet_s
    if not ripe:
        s.judged += 1
    # Both kinds of novelty share the quiet period: one excursion, one alert (an hour's own
    # quiet period gave 82.7 on the NAB tuning half, against 83.3).
    if visits == 0.0 and loud:
        s.since, s.loudest = 0, _novel(p, p_bin, seasonal)
        return Step(s.loudest, seasonal, True, False)
    if run and ripe:  # a run in a tail longer than any lately: as rare as novelty gets
        scored = _novel(p, 0.0, seasonal)
        if loud or scored > s.loudest + _LOUDER:
            s.since, s.loudest = 0, scored
            return Step(scored, seasonal, False, False, False, run)
    if outside_hour and s.seasonal.model != 0 and loud:
        s.since = 0  # a usual value at an unusual hour: novel on a seasonal series
        s.loudest = _novel(p, p_hour, seasonal)
        return Step(s.loudest, seasonal, False, False, True)
    # a familiar value on a series without season is damped, unless the score is the noise
    # lately's: noise is no matter of the value
    if visits >= p.familiar_visits and s.seasonal.model == 0 and not by_noise(s.seasonal, seasonal):
        return Step(seasonal * p.familiar_damp, seasonal, False, True)
    return Step(seasonal, seasonal, False, False)
