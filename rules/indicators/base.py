"""The interface of an indicator formula: ``fold`` / ``merge`` / ``finish`` over a window state.

A state is a flat dict of floats that *merges* (sums, counts, maxima), so a district's value
is computed from the merged samples of every device under it, never as an average of its
streets' values: merging the states of any split of the samples, in any order, then
finishing, gives the value of folding them all. ``n`` counts samples (``n.<metric>`` per
metric where a formula reads several).

A sample comes with its *weight*, the seconds it stands for (the time since its device's
previous value of the metric, at most the window): a formula that averages weighs each value
by it
(``w``, ``w.<metric>``: the weights' sums), so a device counts for the time it covers, and a
station reporting every minute weighs as much as one reporting every hour, as the national
method averages each station's mean. A state written before weights has no ``w``: its
samples weigh one each.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from cityvitals.contracts import WarningLevel

if TYPE_CHECKING:
    from rules.indicators.catalogue import IndicatorSpec

__all__ = [
    "NO_GAPS",
    "SUMMED_MAX",
    "Band",
    "Detail",
    "Formula",
    "OneMetric",
    "Rollup",
    "beyond",
    "combine",
]

Band = tuple[str, float | None]
Detail = dict[str, float | str]


def combine(into: dict[str, float], other: Mapping[str, float], highest: frozenset[str]) -> None:
    """Merge ``other`` into ``into``: the maximum for the keys in ``highest``, else the sum.

    >>> s = {"n": 1.0, "max": 3.0}
    >>> combine(s, {"n": 2.0, "max": 2.0}, frozenset({"max"})); s
    {'n': 3.0, 'max': 3.0}
    """
    for key, value in other.items():
        if key in highest:
            into[key] = max(into.get(key, value), value)
        else:
            into[key] = into.get(key, 0.0) + value


NO_GAPS: Mapping[str, float] = MappingProxyType({})
"""No weights given: every value weighs one."""

SUMMED_MAX = 1e15
"""The largest value (either sign) a formula that sums values folds: far past any quantity a
city's sensors measure in their units, and a sum of such values stays exact enough and finite
(two finite readings near a float's limit made a window's sum infinite, which no message can
carry)."""


def beyond(spec: IndicatorSpec, values: Mapping[str, float], metrics: Iterable[str]) -> str | None:
    """Why one of ``metrics`` in ``values`` cannot be summed (past :data:`SUMMED_MAX`)."""
    for metric in metrics:
        v = values.get(metric)
        if v is not None and not -SUMMED_MAX <= v <= SUMMED_MAX:
            return (
                f"{metric} {v:g} is beyond any {'concentration' if spec.kind == 'aqi' else 'value'}"
                f" the indicator {spec.id} averages (at most {SUMMED_MAX:g})"
            )
    return None


Rollup = Literal["mean", "max", "energy", "aqi"]
"""How windows of an indicator make a longer span: :attr:`Formula.rollup`."""


class Formula(ABC):
    """One formula of the catalogue, by the name an indicator gives as ``kind``."""

    name: str
    needs_metric: bool = True
    """Whether an indicator of this formula must name its ``metric``."""
    bands: tuple[Band, ...] = ()
    """Bands used when the indicator gives none."""
    band_levels: Mapping[str, WarningLevel] = MappingProxyType({})
    """The warning level each of those bands is shown at; a band not named is normal."""
    highest: frozenset[str] = frozenset()
    """State keys that merge as a maximum (the others add up)."""
    rollup: Rollup = "mean"
    """How its windows make a longer span (the hours and days of the history): the mean of
    their values; their maximum (the deepest water of the hour, not the mean of each window's
    deepest); or their energy mean (sound levels in decibels, 10·log10 of the mean of
    10^(L/10), as ISO 1996-1 adds levels up); or, for the AQI, the standard's AQI of the span's
    mean concentrations (a day's of its 24-hour means and ozone's highest 8-hour mean)."""
    counts_devices: bool = False
    """Whether the value comes of the devices that report and are expected (membership and
    liveness), not of the readings' values: then every reading of the indicator's device
    types feeds it, whatever metrics it carries; otherwise only one carrying its metrics."""

    def metrics(self, spec: IndicatorSpec) -> frozenset[str]:
        """The metrics that feed the indicator."""
        return frozenset() if spec.metric is None else frozenset({spec.metric})

    @abstractmethod
    def fold(
        self,
        spec: IndicatorSpec,
        state: dict[str, float],
        values: Mapping[str, float],
        gaps: Mapping[str, float] = NO_GAPS,
        most: float = math.inf,
    ) -> None:
        """Add one reading's values to a window state, in place, each weighing the seconds
        ``gaps`` gives its metric (one, where it gives none), at most ``most``."""

    def units(self, spec: IndicatorSpec) -> Mapping[str, str]:
        """The unit each metric it reads must come in (a profile's ``unit`` of the metric),
        where its arithmetic or its bands fix one: a CO profile in µg/m³ made AQI 500 of a
        clean 1.2 mg/m³. None fixed: ``{}``."""
        return {}

    def refuses(self, spec: IndicatorSpec, values: Mapping[str, float]) -> str | None:
        """Why a reading's values cannot be folded (its sums would overflow or vanish); None
        when they can. Asked before anything is folded or counted, so a refused reading
        leaves no trace in any window."""
        return None

    def merge(self, into: dict[str, float], other: Mapping[str, float]) -> None:
        """Merge another state of the same formula into ``into``, in place."""
        combine(into, other, self.highest)

    @abstractmethod
    def finish(
        self, spec: IndicatorSpec, state: Mapping[str, float], reporting: int, expected: int
    ) -> tuple[float | None, Detail]:
        """The value (None: no data) and details from a merged state, before rounding."""


class OneMetric(Formula):
    """A formula of one metric's samples: :meth:`add` folds a value, :meth:`value` finishes."""

    keys: tuple[str, ...] = ()
    in_its_unit: bool = False
    """Whether the value is in the metric's unit (a mean, a maximum): then the metric must come
    in the indicator's ``unit``, which its bands are in."""

    def units(self, spec: IndicatorSpec) -> Mapping[str, str]:
        if self.in_its_unit and spec.metric is not None and spec.unit:
            return {spec.metric: spec.unit}
        return {}

    def fold(
        self,
        spec: IndicatorSpec,
        state: dict[str, float],
        values: Mapping[str, float],
        gaps: Mapping[str, float] = NO_GAPS,
        most: float = math.inf,
    ) -> None:
        assert spec.metric is not None
        v = values.get(spec.metric)
        if v is not None:
            weight = min(gaps.get(spec.metric, 1.0), most)
            self.add(state, v, weight)  # first: a value it raises on is not counted
            state["n"] = state.get("n", 0.0) + 1
            state["w"] = state.get("w", 0.0) + weight

    @abstractmethod
    def add(self, state: dict[str, float], v: float, weight: float) -> None:
        """Fold one value of ``weight`` (``n`` and ``w`` are counted after it)."""

    def finish(
        self, spec: IndicatorSpec, state: Mapping[str, float], reporting: int, expected: int
    ) -> tuple[float | None, Detail]:
        if not state.get("n"):
            return None, {}
        return self.value(spec, state, state.get("w", state["n"]))

    @abstractmethod
    def value(
        self, spec: IndicatorSpec, state: Mapping[str, float], weight: float
    ) -> tuple[float, Detail]:
        """The value of a state whose samples weigh ``weight`` in all."""
