"""The indicator catalogue: which city vital signs are computed, by which formula, where.

Pure: no I/O. Coverage is reporting / expected devices, where expected are the active
devices of the indicator's types under the place; the quality flag follows from it.

>>> cat = parse_catalogue("indicators: [{id: noise, kind: leq, metric: laeq_db, device_types: [noise]}]")
>>> cat.by_id["noise"].metrics()
frozenset({'laeq_db'})
>>> cat.by_id["noise"].fed_by({"laeq_db": 61.0}), cat.by_id["noise"].fed_by({"battery_v": 3.6})
(True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from cityvitals.contracts import IDENTIFIER, IndicatorQuality, PlaceLevel, WarningLevel
from rules.indicators.base import Rollup
from rules.indicators.formulas import FORMULAS
from rules.kinds import Duration
from rules.kinds.spec import NightHours
from rules.ruleset import RuleFileError, RuleProblem, file_error, load_yaml

__all__ = [
    "Catalogue",
    "IndicatorSpec",
    "parse_catalogue",
    "quality",
    "same_unit",
    "samples",
    "unit_problems",
    "window_start",
]


BandBounds = tuple[tuple[str, float | None], ...]
"""Labels by upper bound, lowest first; the last may be unbounded (None)."""


def _rising(bands: BandBounds) -> BandBounds:
    bounds = [b for _, b in bands if b is not None]
    if bounds != sorted(bounds) or any(b is None for _, b in bands[:-1]):
        raise ValueError("bands must rise, and only the last may be unbounded")
    return bands


class NightBands(NightHours):
    """An indicator's bands at night (a window that starts in the night's hours), as a
    noise limit is lower at night: the labels may be other than the day's, and
    ``band_levels`` colours either."""

    bands: Annotated[BandBounds, AfterValidator(_rising)] = Field(min_length=1)


class IndicatorSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=IDENTIFIER)]
    kind: str
    """The formula, a name in :data:`rules.indicators.formulas.FORMULAS`."""
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
    bands: BandBounds = ()
    """Labels by upper bound, lowest first; the last may be unbounded (null)."""
    night: NightBands | None = None
    """Other bands for the windows that start at night (``starts``, ``ends``, ``bands``; in
    the city's time zone unless it names a ``zone``)."""
    edge: Literal["this", "next"] = "this"
    """Which band a value at a band's upper bound is in: ``this`` (AQI's tables: 50 is
    good), or ``next``, as a rule's threshold counts it (``>=``: 5 cm of water is the
    alarm the depth rule raises at 5)."""
    band_levels: dict[str, WarningLevel] | None = None
    """The warning level each band is shown at (``{lane_limit: yellow, ...}``); a band not
    named is normal. Absent: the formula's own, for its own bands."""
    free_flow_kmh: float = Field(default=40.0, gt=0)
    unit: str = ""
    description: str = ""
    _metrics: frozenset[str] = PrivateAttr(default=frozenset())
    _every_reading: bool = PrivateAttr(default=False)

    @field_validator("kind")
    @classmethod
    def _formula(cls, kind: str) -> str:
        if kind not in FORMULAS:
            raise ValueError(f"unknown formula {kind!r}: give one of {', '.join(FORMULAS)}")
        return kind

    @field_validator("window")
    @classmethod
    def _divides_a_day(cls, window: timedelta) -> timedelta:
        if window <= timedelta(0) or timedelta(days=1).total_seconds() % window.total_seconds():
            raise ValueError("window must divide a day (e.g. 1m, 5m, 15m, 1h)")
        return window

    @model_validator(mode="after")
    def _metric(self) -> IndicatorSpec:
        if FORMULAS[self.kind].needs_metric and not self.metric:
            raise ValueError(f"a {self.kind} indicator needs a metric")
        _rising(self.bands)
        labels = [label for label, _ in self.bands or FORMULAS[self.kind].bands]
        labels += [label for label, _ in self.night.bands] if self.night else []
        if unknown := sorted(set(self.band_levels or {}) - set(labels)):
            raise ValueError(
                f"band_levels name {', '.join(map(repr, unknown))}, not a band of it "
                f"({', '.join(labels) or 'it has none'})"
            )
        return self

    @property
    def window_s(self) -> int:
        return int(self.window.total_seconds())

    @property
    def rollup(self) -> Rollup:
        """How its windows make an hour or a day: :attr:`~rules.indicators.base.Formula.rollup`."""
        return FORMULAS[self.kind].rollup

    def metrics(self) -> frozenset[str]:
        """The metrics that feed it (computed once: this is asked per reading)."""
        return self._metrics

    def fed_by(self, values: Mapping[str, float]) -> bool:
        """Whether a reading of its device types carrying ``values`` feeds it: every one
        when its formula counts devices, else one carrying any of its metrics."""
        return self._every_reading or not self._metrics.isdisjoint(values)

    def model_post_init(self, context: Any, /) -> None:
        formula = FORMULAS[self.kind]
        self._metrics = formula.metrics(self)
        self._every_reading = formula.counts_devices

    def level(self, band: str) -> WarningLevel | None:
        """The warning level ``band`` is shown at; None when it is normal.

        >>> spec = parse_catalogue(
        ...     "indicators: [{id: depth, kind: max, metric: cm, device_types: [w],"
        ...     " bands: [[dry, 5], [wet, null]], band_levels: {wet: yellow}}]").by_id["depth"]
        >>> spec.level("wet"), spec.level("dry")
        (<WarningLevel.YELLOW: 'yellow'>, None)
        """
        if self.band_levels is not None:
            return self.band_levels.get(band)
        return None if self.bands else FORMULAS[self.kind].band_levels.get(band)

    def band(self, value: float, at: datetime | None = None) -> str | None:
        """The band ``value`` is in (see :attr:`edge`): the night's for a window that starts
        at ``at`` in the night's hours.

        >>> spec = parse_catalogue(
        ...     "indicators: [{id: depth, kind: max, metric: cm, device_types: [w],"
        ...     " bands: [[dry, 5], [wet, null]], edge: next}]").by_id["depth"]
        >>> spec.band(4.9), spec.band(5), spec.model_copy(update={"edge": "this"}).band(5)
        ('dry', 'wet', 'dry')
        """
        edge_in_this = self.edge == "this"
        bands = self.bands or FORMULAS[self.kind].bands
        if self.night is not None and at is not None and self.night.covers(at):
            bands = self.night.bands
        for label, upper in bands:
            if upper is None or value < upper or (value == upper and edge_in_this):
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


def parse_catalogue(text: str, source: str = "<indicators>", zone: str = "UTC") -> Catalogue:
    """Parse and validate an indicator file; raises RuleFileError naming each problem.
    ``zone`` (the city's, ``CITYVITALS_TIMEZONE``) is where an indicator's night is read
    unless it names its own."""
    data, lines = load_yaml(text, source, "an 'indicators' list")
    try:
        parsed = _CatalogueFile.model_validate(data, context={"zone": zone})
    except ValidationError as exc:
        raise file_error(exc, source, lines) from exc
    ids = [s.id for s in parsed.indicators]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise RuleFileError(
            [RuleProblem(source, None, "indicators", f"duplicate id {duplicates[0]!r}")]
        )
    return Catalogue(tuple(parsed.indicators))


def same_unit(a: str, b: str) -> bool:
    """Whether two spellings name one unit (case, spaces, µ or u, ³ or 3 or ^3, brackets).

    >>> same_unit("ug/m3", "µg/m³"), same_unit("μg/m^3", "µg/m³"), same_unit("dBA", "dB(A)")
    (True, True, True)
    >>> same_unit("ug/m3", "mg/m³"), same_unit("kph", "km/h"), same_unit("mm", "cm")
    (False, True, False)
    """
    return _unit(a) == _unit(b)


_UNIT_ALIASES = {"kph": "km/h", "kmh": "km/h", "km/hr": "km/h"}


def _unit(text: str) -> str:
    plain = text.strip().lower().replace(" ", "").replace("μ", "u").replace("µ", "u")
    plain = plain.replace("^", "").replace("³", "3").replace("(", "").replace(")", "")
    return _UNIT_ALIASES.get(plain, plain)


def unit_problems(catalogue: Catalogue, device_type: str, units: Mapping[str, str]) -> list[str]:
    """What a profile of ``device_type`` whose metrics come in ``units`` (metric: unit) would
    feed the indicators of ``catalogue`` in a unit their formulas do not read, a line each.

    >>> cat = parse_catalogue("indicators: [{id: aqi, kind: aqi, device_types: [air], window: 1h}]")
    >>> unit_problems(cat, "air", {"pm25": "ug/m3", "co": "ug/m3"})
    ["metric 'co' in 'ug/m3': the indicator 'aqi' reads it in mg/m³ (its values would be taken as such)"]
    """
    return [
        f"metric {metric!r} in {units[metric]!r}: the indicator {spec.id!r} reads it in "
        f"{unit} (its values would be taken as such)"
        for spec in catalogue.by_type.get(device_type, ())
        for metric, unit in FORMULAS[spec.kind].units(spec).items()
        if metric in units and not same_unit(units[metric], unit)
    ]


def window_start(ts: datetime, window_s: int) -> datetime:
    """The start of the window that holds ``ts`` (windows are aligned to UTC midnight)."""
    seconds = int(ts.timestamp())
    return datetime.fromtimestamp(seconds - seconds % window_s, UTC)


def samples(state: Mapping[str, float]) -> int:
    """The values folded into a window state (every pollutant's for AQI).

    >>> samples({"n.pm25": 3.0, "s.pm25": 90.0, "n.no2": 2.0, "s.no2": 40.0})
    5
    """
    return int(sum(v for k, v in state.items() if k == "n" or k.startswith("n.")))


def quality(
    reporting: int, expected: int, worst_of: bool = False
) -> tuple[float, IndicatorQuality]:
    """Coverage in [0, 1] and its flag: good from 0.8, partial from 0.5, poor below. A
    worst-of value (the deepest water) with a device missing is a lower bound: the silent one
    may be the deepest (a sensor under water, a power cut in a flood), so it is at most
    partial.

    >>> [quality(4, 5)[1].value, quality(4, 5, worst_of=True)[1].value, quality(5, 5, True)[1].value]
    ['good', 'partial', 'good']
    """
    if reporting == 0:
        return 0.0, IndicatorQuality.NO_DATA
    coverage = min(1.0, reporting / expected) if expected else 1.0
    if coverage >= 0.8 and not (worst_of and coverage < 1.0):
        return coverage, IndicatorQuality.GOOD
    if coverage >= 0.5:
        return coverage, IndicatorQuality.PARTIAL
    return coverage, IndicatorQuality.POOR
