"""Numenta Anomaly Benchmark (NAB) scoring, pure: windows, scaled sigmoid, threshold, normalisation.

This follows the published method (Lavin & Ahmad 2015) as the NAB repository's ``sweeper.py`` and
``runner.py`` implement it (NAB 1.1):

- A detector gives every row a score in [0, 1]; a row is a *detection* when its score is at
  least the threshold. One threshold serves every file of the corpus; :func:`best_threshold`
  picks the one that maximises the corpus total.
- The first 15% of each file, at most 750 rows, is a probation period: its rows count for
  nothing, and a window inside it is neither credited nor charged (:func:`probation_length`).
- Inside a labelled window only the earliest detection counts: it is worth
  ``A_TP * σ(p) / σ(-1)`` where ``σ`` is :func:`scaled_sigmoid` and
  ``p = -(end - i + 1) / width``, so a detection on the window's first row earns the full
  ``A_TP`` and one on its last row a little more than nothing. A window without detection costs
  ``A_FN``.
- A detection outside every window costs ``A_FP`` times ``-σ(p)``, ``p`` the distance past the end
  of the previous window in window widths: just after a window it is nearly free, farther on the
  full ``A_FP``. Before the first window it always costs the full ``A_FP``.
- :func:`normalised` maps a raw total to 0 for the detector that never fires and 100 for the
  perfect one (the earliest detection in every window and nothing else).

>>> from datetime import datetime, timedelta
>>> t0 = datetime(2026, 1, 1)
>>> ts = [t0 + timedelta(minutes=5 * i) for i in range(100)]
>>> window = (ts[40], ts[49])
>>> perfect = [1.0 if i == 40 else 0.0 for i in range(100)]
>>> rows = sweep("f", ts, perfect, [window])
>>> round(score_at(rows, 0.5), 3), normalised(score_at(rows, 0.5), windows=1)
(1.0, 100.0)
>>> never = sweep("f", ts, [0.0] * 100, [window])
>>> score_at(never, 0.5), normalised(score_at(never, 0.5), windows=1)
(-1.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "STANDARD",
    "CostProfile",
    "Row",
    "ThresholdScore",
    "best_threshold",
    "normalised",
    "probation_length",
    "scaled_sigmoid",
    "score_at",
    "sweep",
    "threshold_scores",
    "window_rows",
]


@dataclass(frozen=True, slots=True)
class CostProfile:
    """NAB's cost matrix: what a true positive earns and a false positive or a miss costs."""

    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


STANDARD = CostProfile()
"""The standard profile: ``A_TP = 1``, ``A_FP = -0.11``, ``A_FN = -1``."""


@dataclass(frozen=True, slots=True)
class Row:
    """One scorable row (past probation): the detector's score and what a detection here is worth.

    ``window`` names the labelled window the row lies in, ``None`` outside every window;
    ``value`` is a true positive's credit inside a window, a false positive's (negative) cost
    outside.
    """

    score: float
    window: str | None
    value: float


@dataclass(frozen=True, slots=True)
class ThresholdScore:
    """The corpus total when every row scoring at least ``threshold`` is a detection."""

    threshold: float
    score: float
    tp: int
    fp: int


def scaled_sigmoid(position: float) -> float:
    """NAB's weight of a detection at a relative ``position`` to a window's right edge.

    -1 is the window's left edge, 0 its right edge, positive values lie past it.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), round(scaled_sigmoid(1.0), 5)
    (0.98661, 0.0, -0.98661)
    >>> scaled_sigmoid(3.5)
    -1.0
    """
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_length(rows: int, percent: float = 0.15) -> int:
    """Rows at the start of a file that are not scored: 15% of the file, at most 750 rows.

    >>> probation_length(4032), probation_length(22695)
    (604, 750)
    """
    return int(min(math.floor(percent * rows), percent * 5000))


def window_rows(
    timestamps: Sequence[datetime], windows: Iterable[tuple[datetime, datetime]]
) -> list[tuple[int, int]]:
    """The first and last row index of each window, in time order.

    A window starts at the first row stamped with its start and ends at the first row stamped
    with its end, as NAB looks them up; a limit that is not a row's stamp falls back to the first
    row at or after the start and the last row at or before the end. Windows with no row are
    dropped.
    """
    first: dict[datetime, int] = {}
    for i, ts in enumerate(timestamps):
        first.setdefault(ts, i)
    out: list[tuple[int, int]] = []
    for start, end in sorted(windows):
        lo = first.get(start)
        if lo is None:
            lo = next((i for i, ts in enumerate(timestamps) if ts >= start), None)
        hi = first.get(end)
        if hi is None:
            hi = max((i for i, ts in enumerate(timestamps) if ts <= end), default=None)
        if lo is not None and hi is not None and lo <= hi:
            out.append((lo, hi))
    return out


def sweep(
    name: str,
    timestamps: Sequence[datetime],
    scores: Sequence[float],
    windows: Iterable[tuple[datetime, datetime]],
    profile: CostProfile = STANDARD,
    probation_percent: float = 0.15,
) -> list[Row]:
    """The scorable rows of one file, each with what a detection there is worth.

    ``name`` makes the window names unique across a corpus (rows of many files are pooled).
    """
    if len(timestamps) != len(scores):
        raise ValueError(f"{name}: {len(timestamps)} timestamps but {len(scores)} scores")
    spans = window_rows(timestamps, windows)
    probation = probation_length(len(timestamps), probation_percent)
    max_tp = scaled_sigmoid(-1.0)
    rows: list[Row] = []
    k = 0  # the next window
    prev_end: int | None = None
    prev_width = 0
    for i, score in enumerate(scores):
        while k < len(spans) and spans[k][1] < i:
            prev_end, prev_width = spans[k][1], spans[k][1] - spans[k][0] + 1
            k += 1
        inside = k < len(spans) and spans[k][0] <= i
        if inside:
            lo, hi = spans[k]
            value = scaled_sigmoid(-(hi - i + 1) / (hi - lo + 1)) * profile.tp / max_tp
            window: str | None = f"{name}|{k}"
        else:
            if prev_end is None or prev_width <= 1:
                weight = -1.0
            else:
                weight = scaled_sigmoid((i - prev_end) / (prev_width - 1))
            value = weight * profile.fp
            window = None
        if i >= probation:
            rows.append(Row(float(score), window, value))
    return rows


def _windows(rows: Iterable[Row]) -> set[str]:
    return {r.window for r in rows if r.window is not None}


def threshold_scores(rows: Iterable[Row], profile: CostProfile = STANDARD) -> list[ThresholdScore]:
    """The corpus total at every distinct score, highest threshold first.

    The first entry, threshold 1.1, detects nothing: every window is a miss.
    """
    ordered = sorted(rows, key=lambda r: r.score, reverse=True)
    best: dict[str, float] = dict.fromkeys(_windows(ordered), -profile.fn)
    total = -profile.fn * len(best)
    fp_sum = 0.0
    tp = fp = 0
    out: list[ThresholdScore] = []
    threshold = 1.1
    for row in ordered:
        if row.score != threshold:
            out.append(ThresholdScore(threshold, total + fp_sum, tp, fp))
            threshold = row.score
        if row.window is None:
            fp += 1
            fp_sum += row.value
        else:
            tp += 1
            old = best[row.window]
            if row.value > old:
                best[row.window] = row.value
                total += row.value - old
    out.append(ThresholdScore(threshold, total + fp_sum, tp, fp))
    return out


def best_threshold(rows: Iterable[Row], profile: CostProfile = STANDARD) -> ThresholdScore:
    """The threshold with the highest corpus total (the highest such threshold on a tie)."""
    return max(threshold_scores(rows, profile), key=lambda s: s.score)


def score_at(rows: Iterable[Row], threshold: float, profile: CostProfile = STANDARD) -> float:
    """The raw NAB total of some rows (one file or many) at one threshold."""
    rows = list(rows)
    best: dict[str, float] = dict.fromkeys(_windows(rows), -profile.fn)
    fp_sum = 0.0
    for row in rows:
        if row.score < threshold:
            continue
        if row.window is None:
            fp_sum += row.value
        elif row.value > best[row.window]:
            best[row.window] = row.value
    return sum(best.values()) + fp_sum


def normalised(raw: float, windows: int, profile: CostProfile = STANDARD) -> float:
    """A raw total on NAB's 0..100 scale: the null detector scores 0, the perfect one 100.

    The null detector misses every window (``-A_FN`` each); the perfect one earns ``A_TP`` in
    each. With no window the scale is undefined and the result is NaN.
    """
    null, perfect = -profile.fn * windows, profile.tp * windows
    if perfect == null:
        return math.nan
    return 100.0 * (raw - null) / (perfect - null)
