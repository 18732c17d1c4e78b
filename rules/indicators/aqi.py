"""``aqi``: China HJ 633-2026 IAQI per pollutant from the window's mean concentrations.

The AQI is the largest sub-index; the primary pollutant is in the details when AQI > 50;
bands I–VI (good ... severe). A place's AQI is the sub-index of its mean concentration of
each pollutant, over the samples of every station under it, each weighed by the time it stands
for: a station reporting every minute weighs as much as one reporting every hour, as the
national method averages each station's mean. Each window keeps those means in its details
(``mean.<pollutant>``), from which :func:`daily_aqi` makes the standard's daily AQI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

from cityvitals.contracts import WarningLevel
from rules.indicators.base import NO_GAPS, Band, Detail, Formula, beyond

if TYPE_CHECKING:
    from rules.indicators.catalogue import IndicatorSpec

__all__ = [
    "AQI_BANDS",
    "IAQI_24H",
    "IAQI_2026",
    "IAQI_NODES",
    "O3_8H",
    "Aqi",
    "daily_aqi",
    "hourly_aqi",
    "iaqi",
]

# IAQI nodes, HJ 633-2026 (PM) and HJ 633-2012 (gases, unchanged): concentration at IAQI
# 0, 50, 100, 150, 200, 300, 400, 500. µg/m³, CO in mg/m³. Real-time: hourly means.
IAQI_NODES = (0, 50, 100, 150, 200, 300, 400, 500)
IAQI_2026: dict[str, tuple[float, ...]] = {
    "pm25": (0, 35, 60, 115, 150, 250, 350, 500),
    "pm10": (0, 50, 120, 250, 350, 420, 500, 600),
    # 1 h up to 800 (IAQI 200), where its column stops; above, the 24 h table's nodes (800 is
    # IAQI 200 there too), as the standard's implementations read a 1 h value past 800
    "so2": (0, 150, 500, 650, 800, 1600, 2100, 2620),
    "no2": (0, 100, 200, 700, 1200, 2340, 3090, 3840),  # 1 h
    "co": (0, 5, 10, 35, 60, 90, 120, 150),  # 1 h, mg/m³
    "o3": (0, 160, 200, 300, 400, 800, 1000, 1200),  # 1 h
}
IAQI_24H: dict[str, tuple[float, ...]] = {
    "pm25": IAQI_2026["pm25"],
    "pm10": IAQI_2026["pm10"],
    "so2": (0, 50, 150, 475, 800, 1600, 2100, 2620),
    "no2": (0, 40, 80, 180, 280, 565, 750, 940),
    "co": (0, 2, 4, 14, 24, 36, 48, 60),
}
"""The daily report's nodes: 24-hour means (O3 apart: :data:`O3_8H`)."""
O3_8H = (0, 100, 160, 215, 265, 800)
"""O3's daily nodes, for its highest 8-hour moving mean of the day; the column stops at 800
(IAQI 300): above, the day's O3 is the sub-index of its highest hourly mean."""
UNITS = MappingProxyType({p: "mg/m³" if p == "co" else "µg/m³" for p in IAQI_2026})
"""The unit of each pollutant's concentration, as the nodes read them."""
AQI_BANDS: tuple[Band, ...] = (
    ("good", 50.0),
    ("moderate", 100.0),
    ("light", 150.0),
    ("medium", 200.0),
    ("heavy", 300.0),
    ("severe", None),
)


def iaqi(pollutant: str, concentration: float, nodes: tuple[float, ...] | None = None) -> float:
    """The sub-index of one pollutant, rounded up; pinned at the top node's above it (500 for
    a full column), 0 below zero (a sensor's offset near clean air). ``nodes`` default to the
    real-time (hourly) column of the pollutant.

    >>> iaqi("pm25", 75), iaqi("pm25", 35), iaqi("pm25", 900), iaqi("pm25", -5)
    (114.0, 50.0, 500.0, 0.0)
    >>> iaqi("pm25", 29.400000000000002), iaqi("pm25", 29.41)
    (42.0, 43.0)
    >>> iaqi("so2", 800), iaqi("so2", 1000), iaqi("so2", 2000), iaqi("so2", 3000)
    (200.0, 225.0, 380.0, 500.0)
    >>> iaqi("so2", 100, IAQI_24H["so2"]), iaqi("o3", 900, O3_8H)
    (75.0, 300.0)
    """
    nodes = IAQI_2026[pollutant] if nodes is None else nodes
    if concentration <= 0:
        return 0.0
    if concentration >= nodes[-1]:
        return float(IAQI_NODES[len(nodes) - 1])
    for i in range(1, len(nodes)):
        if concentration <= nodes[i]:
            lo, hi = nodes[i - 1], nodes[i]
            i_lo, i_hi = IAQI_NODES[i - 1], IAQI_NODES[i]
            # Rounded up from nine decimals: a mean that floating-point sums put a hair above a
            # whole sub-index (29.4 µg/m³ of PM2.5 is exactly 42) stays on it, whatever the order.
            exact = (i_hi - i_lo) / (hi - lo) * (concentration - lo) + i_lo
            return float(math.ceil(round(exact, 9)))
    return 500.0


_STATE_KEYS = tuple((p, f"n.{p}", f"w.{p}", f"s.{p}") for p in IAQI_2026)
"""Each pollutant with its count's, weight's and weighted sum's keys in a state (formatted once,
not per reading)."""


class Aqi(Formula):
    """State: ``n.<pollutant>``, ``w.<pollutant>`` and ``s.<pollutant>``: the count, the weight
    and the weighted sum of each."""

    name = "aqi"
    needs_metric = False
    rollup = "aqi"
    bands = AQI_BANDS
    # The standard's own colours (good green, moderate yellow, light orange, then red, purple
    # and maroon), capped at the warning scale's red.
    band_levels = MappingProxyType(
        {
            "moderate": WarningLevel.YELLOW,
            "light": WarningLevel.ORANGE,
            "medium": WarningLevel.RED,
            "heavy": WarningLevel.RED,
            "severe": WarningLevel.RED,
        }
    )

    def metrics(self, spec: IndicatorSpec) -> frozenset[str]:
        return frozenset(IAQI_2026)

    def units(self, spec: IndicatorSpec) -> Mapping[str, str]:
        return UNITS

    def fold(
        self,
        spec: IndicatorSpec,
        state: dict[str, float],
        values: Mapping[str, float],
        gaps: Mapping[str, float] = NO_GAPS,
        most: float = math.inf,
    ) -> None:
        for pollutant, n, w, s in _STATE_KEYS:
            v = values.get(pollutant)
            if v is not None:
                weight = min(gaps.get(pollutant, 1.0), most)
                state[n] = state.get(n, 0.0) + 1
                state[w] = state.get(w, 0.0) + weight
                state[s] = state.get(s, 0.0) + weight * v

    def refuses(self, spec: IndicatorSpec, values: Mapping[str, float]) -> str | None:
        """
        >>> from rules.indicators.catalogue import parse_catalogue
        >>> spec = parse_catalogue("indicators: [{id: aqi, kind: aqi, window: 1h, "
        ...                        "device_types: [air]}]").specs[0]
        >>> Aqi().refuses(spec, {"pm25": 80.0, "so2": 1e20})
        'so2 1e+20 is beyond any concentration the indicator aqi averages (at most 1e+15)'
        """
        return beyond(spec, values, IAQI_2026)

    def finish(
        self, spec: IndicatorSpec, state: Mapping[str, float], reporting: int, expected: int
    ) -> tuple[float | None, Detail]:
        means = {p: state[s] / state.get(w, state[n]) for p, n, w, s in _STATE_KEYS if state.get(n)}
        return hourly_aqi(means)


def hourly_aqi(means: Mapping[str, float]) -> tuple[float | None, Detail]:
    """The real-time AQI of mean concentrations (an hour's, or a window's), with them in the
    details (``mean.<pollutant>``).

    >>> hourly_aqi({"pm25": 75.0, "no2": 40.0})
    (114.0, {'iaqi.pm25': 114.0, 'iaqi.no2': 20.0, 'primary': 'pm25', 'mean.pm25': 75.0, 'mean.no2': 40.0})
    """
    value, detail = _largest({p: iaqi(p, c) for p, c in means.items()})
    detail.update({f"mean.{p}": c for p, c in means.items()})
    return value, detail


def _largest(subs: Mapping[str, float]) -> tuple[float | None, Detail]:
    """The AQI of the sub-indices, with each of them and the primary pollutant (above 50)."""
    if not subs:
        return None, {}
    primary = max(subs, key=lambda p: subs[p])
    detail: Detail = {f"iaqi.{p}": v for p, v in subs.items()}
    if subs[primary] > 50:
        detail["primary"] = primary
    return subs[primary], detail


def daily_aqi(hours: Sequence[Mapping[str, float]]) -> tuple[float | None, Detail]:
    """A day's AQI as the daily report gives it (HJ 633): the sub-index of each pollutant's
    24-hour mean, O3's of its highest 8-hour moving mean within the day (of the eight-hour
    spans from midnight that hold at least six of its hourly means, and of its highest hourly
    mean: the larger of the two is O3's). ``hours`` are the day's
    hourly mean concentrations, from its first hour (24 of them; 23 or 25 on a day the clocks
    change); an hour without a pollutant lacks its key. With the 24-hour means in the details
    (``mean.<pollutant>``; O3's highest 8-hour mean as ``mean8h.o3``, its highest hourly mean
    as ``max1h.o3``), and ``hours.<pollutant>``:
    how many hourly means made each (the standard wants 20 of a day for a valid daily mean).

    Twenty-three clean hours and one of 250 µg/m³ of PM2.5: the 24-hour mean is 20, sub-index
    29; the mean of the hourly AQIs would be 27.

    >>> value, detail = daily_aqi([{"pm25": 10.0}] * 23 + [{"pm25": 250.0}])
    >>> value, detail["mean.pm25"], detail["hours.pm25"]
    (29.0, 20.0, 24)

    Ozone peaks in the afternoon: 180 µg/m³ from 12:00 to 19:00, 40 otherwise. Its highest
    8-hour mean is 180 (IAQI 119, primary); the 24-hour mean would be 86.7.

    >>> day = [{"o3": 180.0 if 12 <= h < 20 else 40.0, "no2": 30.0} for h in range(24)]
    >>> value, detail = daily_aqi(day)
    >>> value, detail["primary"], detail["mean8h.o3"], detail["iaqi.no2"]
    (119.0, 'o3', 180.0, 38.0)

    Two hours of ozone at 350 µg/m³: its highest 8-hour mean is 117.5 (IAQI 65), its highest
    hourly mean gives 175, the day's.

    >>> day = [{"o3": 350.0 if h in (14, 15) else 40.0} for h in range(24)]
    >>> value, detail = daily_aqi(day)
    >>> value, detail["mean8h.o3"], detail["max1h.o3"]
    (175.0, 117.5, 350.0)
    """
    subs: dict[str, float] = {}
    detail: Detail = {}
    for pollutant, nodes in IAQI_24H.items():
        values = [h[pollutant] for h in hours if pollutant in h]
        if values:
            mean = sum(values) / len(values)
            subs[pollutant] = iaqi(pollutant, mean, nodes)
            detail[f"mean.{pollutant}"] = mean
            detail[f"hours.{pollutant}"] = len(values)
    ozone = [h.get("o3") for h in hours]
    measured = [v for v in ozone if v is not None]
    if measured:
        # O3's daily items: its highest hourly mean (the 1-hour column) and its highest 8-hour
        # moving mean (the 8-hour column, which stops at 800: above, the 1-hour one stands)
        peak = max(measured)
        subs["o3"] = iaqi("o3", peak)
        detail["max1h.o3"] = peak
        detail["hours.o3"] = len(measured)
        spans = [
            [v for v in ozone[start : start + 8] if v is not None]
            for start in range(len(ozone) - 7)
        ]
        highest = max((sum(s) / len(s) for s in spans if len(s) >= 6), default=None)
        if highest is not None:
            detail["mean8h.o3"] = highest
            if highest <= O3_8H[-1]:
                subs["o3"] = max(subs["o3"], iaqi("o3", highest, O3_8H))
    value, indices = _largest(subs)
    return value, {**indices, **detail}
