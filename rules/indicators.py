"""City vital signs: the indicator catalogue and its formulas, as mergeable window states.

Pure: no I/O. Every formula keeps, per place and window, a small state that *merges* (sums,
counts, maxima), so a district's value is computed from the merged samples of every device
under it, never as an average of its streets' values. Where the formula is non-linear the
merge happens before it: a district's AQI is the sub-index of the district's mean
concentration of each pollutant (as the national method averages stations), a noise Leq is
the energy mean of all samples, a congestion index uses the space-mean (harmonic) speed.

Formulas (``kind``):

- ``aqi``: China HJ 633-2026 IAQI per pollutant from the window's mean concentrations, AQI the
  largest, the primary pollutant in ``detail`` when AQI > 50; bands I–VI (good ... severe);
- ``mean``, ``max``: of one metric (``max`` of water depth against the flood stages);
- ``leq``: 10·log10 of the mean of 10^(L/10) of the metric's samples (ISO 1996-1);
- ``congestion``: travel time index, free-flow speed / space-mean speed;
- ``online_rate``: reporting devices / expected devices.

Coverage is reporting / expected devices, where expected are the active devices of the
indicator's types under the place; the quality flag follows from it.

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
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from cityvitals.contracts import IDENTIFIER, IndicatorQuality, PlaceLevel
from rules.kinds import Duration
from rules.ruleset import RuleFileError, RuleProblem, line_of, load_yaml

__all__ = [
    "AQI_BANDS",
    "IAQI_2026",
    "Catalogue",
    "IndicatorSpec",
    "finish",
    "fold",
    "iaqi",
    "merge",
    "parse_catalogue",
    "quality",
    "samples",
    "window_start",
]

# IAQI nodes, HJ 633-2026 (PM) and HJ 633-2012 (gases, unchanged): concentration at IAQI
# 0, 50, 100, 150, 200, 300, 400, 500. µg/m³, CO in mg/m³. Real-time: hourly means.
IAQI_NODES = (0, 50, 100, 150, 200, 300, 400, 500)
IAQI_2026: dict[str, tuple[float, ...]] = {
    "pm25": (0, 35, 60, 115, 150, 250, 350, 500),
    "pm10": (0, 50, 120, 250, 350, 420, 500, 600),
    "so2": (0, 150, 500, 650, 800),  # 1 h; above 800 the 24 h table applies
    "no2": (0, 100, 200, 700, 1200, 2340, 3090, 3840),  # 1 h
    "co": (0, 5, 10, 35, 60, 90, 120, 150),  # 1 h, mg/m³
    "o3": (0, 160, 200, 300, 400, 800, 1000, 1200),  # 1 h
}
AQI_BANDS = (
    ("good", 50.0),
    ("moderate", 100.0),
    ("light", 150.0),
    ("medium", 200.0),
    ("heavy", 300.0),
    ("severe", None),
)


def iaqi(pollutant: str, concentration: float) -> float:
    """The sub-index of one pollutant, rounded up; pinned at 500 above the top node.

    Rounded up from the sub-index at nine decimals, so a mean that floating-point sums put a
    hair above a whole sub-index (29.4 µg/m³ of PM2.5 is exactly 42) does not round up to the
    next one: the same concentration gives the same AQI whichever order it was summed in.

    >>> iaqi("pm25", 75), iaqi("pm25", 35), iaqi("pm25", 900)
    (114.0, 50.0, 500.0)
    >>> iaqi("pm25", 29.400000000000002), iaqi("pm25", 29.41)
    (42.0, 43.0)
    """
    nodes = IAQI_2026[pollutant]
    if concentration >= nodes[-1]:
        return float(IAQI_NODES[len(nodes) - 1])
    for i in range(1, len(nodes)):
        if concentration <= nodes[i]:
            lo, hi = nodes[i - 1], nodes[i]
            i_lo, i_hi = IAQI_NODES[i - 1], IAQI_NODES[i]
            exact = (i_hi - i_lo) / (hi - lo) * (concentration - lo) + i_lo
            return float(math.ceil(round(exact, 9)))
    return 500.0


Band = tuple[str, float | None]


class IndicatorSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=IDENTIFIER)]
    kind: Literal["aqi", "mean", "max", "leq", "congestion", "online_rate"]
    metric: str | None = None
    """The metric of single-metric formulas (``mean``, ``max``, ``leq``, ``congestion``)."""
    device_types: tuple[str, ...] = Field(min_length=1)
    """The devices that feed it; the expected devices are the active ones of these types."""
    window: Duration = timedelta(minutes=5)
    levels: tuple[PlaceLevel, ...] = (
        PlaceLevel.CITY,
        PlaceLevel.DISTRICT,
        PlaceLevel.STREET,
        PlaceLevel.GRID,
    )
    """The levels of the place tree it is computed for."""
    bands: tuple[tuple[str, float | None], ...] = ()
    """Labels by upper bound, lowest first; the last may be unbounded (null)."""
    free_flow_kmh: float = Field(default=40.0, gt=0)
    unit: str = ""
    description: str = ""
    _metrics: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("window")
    @classmethod
    def _divides_a_day(cls, window: timedelta) -> timedelta:
        if window <= timedelta(0) or timedelta(days=1).total_seconds() % window.total_seconds():
            raise ValueError("window must divide a day (e.g. 1m, 5m, 15m, 1h)")
        return window

    @model_validator(mode="after")
    def _metric(self) -> IndicatorSpec:
        needs = self.kind in ("mean", "max", "leq", "congestion")
        if needs and not self.metric:
            raise ValueError(f"a {self.kind} indicator needs a metric")
        bounds = [b for _, b in self.bands if b is not None]
        if bounds != sorted(bounds) or any(b is None for _, b in self.bands[:-1]):
            raise ValueError("bands must rise, and only the last may be unbounded")
        return self

    @property
    def window_s(self) -> int:
        return int(self.window.total_seconds())

    def metrics(self) -> frozenset[str]:
        """The metrics that feed it (computed once: this is asked per reading)."""
        return self._metrics

    def model_post_init(self, context: Any, /) -> None:
        if self.kind == "aqi":
            self._metrics = frozenset(IAQI_2026)
        else:
            self._metrics = frozenset() if self.metric is None else frozenset({self.metric})

    def band(self, value: float) -> str | None:
        bands = AQI_BANDS if self.kind == "aqi" and not self.bands else self.bands
        for label, upper in bands:
            if upper is None or value <= upper:
                return label
        return None


class _CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    indicators: list[IndicatorSpec]


class Catalogue:
    """The indicators in force, indexed by id and by device type."""

    def __init__(self, specs: tuple[IndicatorSpec, ...]) -> None:
        self.specs = specs
        self.by_id = {s.id: s for s in specs}
        self.by_type: dict[str, tuple[IndicatorSpec, ...]] = {}
        for spec in specs:
            for t in spec.device_types:
                self.by_type[t] = (*self.by_type.get(t, ()), spec)

    def __iter__(self) -> Any:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


def parse_catalogue(text: str, source: str = "<indicators>") -> Catalogue:
    """Parse and validate an indicator file; raises RuleFileError naming each problem."""
    data, lines = load_yaml(text, source, "an 'indicators' list")
    try:
        parsed = _CatalogueFile.model_validate(data)
    except ValidationError as exc:
        problems = [
            RuleProblem(
                source,
                line_of(tuple(e["loc"]), lines),
                ".".join(str(p) for p in e["loc"]),
                e["msg"],
            )
            for e in exc.errors()
        ]
        raise RuleFileError(problems) from exc
    ids = [s.id for s in parsed.indicators]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise RuleFileError(
            [RuleProblem(source, None, "indicators", f"duplicate id {duplicates[0]!r}")]
        )
    return Catalogue(tuple(parsed.indicators))


def window_start(ts: datetime, window_s: int) -> datetime:
    """The start of the window that holds ``ts`` (windows are aligned to UTC midnight)."""
    seconds = int(ts.timestamp())
    return datetime.fromtimestamp(seconds - seconds % window_s, UTC)


# --- mergeable state --------------------------------------------------------------------------
# A state is a flat dict of floats: "n" counts samples, other keys by formula.


def fold(spec: IndicatorSpec, state: dict[str, float], values: Mapping[str, float]) -> None:
    """Add one reading's values to a window state, in place."""
    if spec.kind == "aqi":
        for pollutant in IAQI_2026:
            v = values.get(pollutant)
            if v is not None:
                state[f"n.{pollutant}"] = state.get(f"n.{pollutant}", 0.0) + 1
                state[f"s.{pollutant}"] = state.get(f"s.{pollutant}", 0.0) + v
        return
    if spec.kind == "online_rate":
        return
    assert spec.metric is not None
    v = values.get(spec.metric)
    if v is None:
        return
    state["n"] = state.get("n", 0.0) + 1
    if spec.kind == "mean":
        state["s"] = state.get("s", 0.0) + v
    elif spec.kind == "max":
        state["max"] = max(state.get("max", v), v)
    elif spec.kind == "leq":
        state["e"] = state.get("e", 0.0) + 10 ** (v / 10)
    elif spec.kind == "congestion":
        state["inv"] = state.get("inv", 0.0) + 1 / max(v, 0.1)  # a stopped car counts as 0.1 km/h


def merge(into: dict[str, float], other: Mapping[str, float]) -> None:
    """Merge two states of the same formula, in place."""
    for key, value in other.items():
        if key == "max":
            into[key] = max(into.get(key, value), value)
        else:
            into[key] = into.get(key, 0.0) + value


def finish(
    spec: IndicatorSpec, state: Mapping[str, float], reporting: int, expected: int
) -> tuple[float | None, str | None, dict[str, float | str]]:
    """The indicator's value, its band and details from a window's merged state."""
    detail: dict[str, float | str] = {}
    value: float | None = None
    if spec.kind == "aqi":
        subs = {
            p: iaqi(p, state[f"s.{p}"] / state[f"n.{p}"]) for p in IAQI_2026 if state.get(f"n.{p}")
        }
        if subs:
            primary = max(subs, key=lambda p: subs[p])
            value = subs[primary]
            detail = {f"iaqi.{p}": v for p, v in subs.items()}
            if value > 50:
                detail["primary"] = primary
    elif spec.kind == "online_rate":
        value = reporting / expected if expected else None
    elif state.get("n"):
        n = state["n"]
        if spec.kind == "mean":
            value = state["s"] / n
        elif spec.kind == "max":
            value = state["max"]
        elif spec.kind == "leq":
            value = 10 * math.log10(state["e"] / n)
        elif spec.kind == "congestion":
            speed = n / state["inv"]
            value = spec.free_flow_kmh / speed
            detail["speed_kmh"] = round(speed, 2)
    if value is not None:
        value = round(value, 4)
    return value, (None if value is None else spec.band(value)), detail


def samples(state: Mapping[str, float]) -> int:
    """The values folded into a window state (every pollutant's for AQI).

    >>> samples({"n.pm25": 3.0, "s.pm25": 90.0, "n.no2": 2.0, "s.no2": 40.0})
    5
    """
    return int(sum(v for k, v in state.items() if k == "n" or k.startswith("n.")))


def quality(reporting: int, expected: int) -> tuple[float, IndicatorQuality]:
    """Coverage in [0, 1] and its flag: good from 0.8, partial from 0.5, poor below."""
    if reporting == 0:
        return 0.0, IndicatorQuality.NO_DATA
    coverage = min(1.0, reporting / expected) if expected else 1.0
    if coverage >= 0.8:
        return coverage, IndicatorQuality.GOOD
    if coverage >= 0.5:
        return coverage, IndicatorQuality.PARTIAL
    return coverage, IndicatorQuality.POOR
