"""City vital signs: the indicator catalogue and its formulas, as mergeable window states.

Each formula (``kind``) is a module behind :class:`~rules.indicators.base.Formula`
(``fold`` / ``merge`` / ``finish``), registered in :data:`~rules.indicators.formulas.FORMULAS`:
``aqi`` (:mod:`~rules.indicators.aqi`), ``mean``, ``max``, ``leq``, ``congestion``,
``online_rate``. Where a formula is non-linear the merge happens before it: a district's
noise Leq is the energy mean of all its samples, its congestion index uses the space-mean
speed of all of them.

>>> cat = parse_catalogue("indicators: [{id: aqi, kind: aqi, device_types: [air_quality], window: 1h}]")
>>> spec = cat.by_id["aqi"]
>>> state = {}
>>> fold(spec, state, {"pm25": 80.0, "pm10": 100.0})
>>> value, band, detail = finish(spec, state, reporting=1, expected=1)
>>> value, band, detail["primary"]
(119.0, 'light', 'pm25')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from rules.indicators.aqi import AQI_BANDS, IAQI_2026, iaqi
from rules.indicators.base import NO_GAPS, Detail, Formula, combine
from rules.indicators.catalogue import (
    Catalogue,
    IndicatorSpec,
    parse_catalogue,
    quality,
    samples,
    unit_problems,
    window_start,
)
from rules.indicators.formulas import FORMULAS

__all__ = [
    "AQI_BANDS",
    "FORMULAS",
    "IAQI_2026",
    "Catalogue",
    "Formula",
    "IndicatorSpec",
    "finish",
    "fold",
    "iaqi",
    "merge",
    "parse_catalogue",
    "quality",
    "samples",
    "unit_problems",
    "window_start",
]

_HIGHEST = frozenset().union(*(f.highest for f in FORMULAS.values()))


def fold(
    spec: IndicatorSpec,
    state: dict[str, float],
    values: Mapping[str, float],
    gaps: Mapping[str, float] = NO_GAPS,
    most: float = math.inf,
) -> None:
    """Add one reading's values to a window state, in place; ``gaps``: the seconds each metric's
    value stands for, at most ``most`` (see :mod:`rules.indicators.base`)."""
    FORMULAS[spec.kind].fold(spec, state, values, gaps, most)


def merge(into: dict[str, float], other: Mapping[str, float]) -> None:
    """Merge two states of the same formula, in place (whichever the formula)."""
    combine(into, other, _HIGHEST)


def finish(
    spec: IndicatorSpec,
    state: Mapping[str, float],
    reporting: int,
    expected: int,
    start: datetime | None = None,
) -> tuple[float | None, str | None, Detail]:
    """The indicator's value (to 4 decimals), its band (the night's for a window that
    ``start`` puts in the night; of the value before rounding, so 30 km/h, a travel time
    index of 4/3, is light congestion, not the 1.3333 under it) and details from a window's
    merged state. No value where the formula's arithmetic left the floats (its
    :meth:`~rules.indicators.base.Formula.refuses` keeps such readings out).

    >>> cat = parse_catalogue("indicators: [{id: c, kind: congestion, metric: speed_kmh, "
    ...                       "device_types: [traffic], window: 5m, free_flow_kmh: 40, edge: next, "
    ...                       "bands: [[free, 1.3333333333333333], [light, null]]}]")
    >>> finish(cat.by_id["c"], {"n": 1.0, "inv": 1 / 30}, 1, 1)[:2]
    (1.3333, 'light')
    """
    value, detail = FORMULAS[spec.kind].finish(spec, state, reporting, expected)
    if value is None or not math.isfinite(value):
        return None, None, detail
    return round(value, 4), spec.band(value, start), detail
