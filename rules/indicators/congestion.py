"""``congestion``: the travel time index, free-flow speed / space-mean (harmonic) speed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rules.indicators.base import Detail, OneMetric

if TYPE_CHECKING:
    from rules.indicators.catalogue import IndicatorSpec

__all__ = ["Congestion"]


class Congestion(OneMetric):
    name = "congestion"

    def units(self, spec: IndicatorSpec) -> Mapping[str, str]:
        return {} if spec.metric is None else {spec.metric: "km/h"}  # as free_flow_kmh

    def add(self, state: dict[str, float], v: float, weight: float) -> None:
        # a stopped car counts as 0.1 km/h
        state["inv"] = state.get("inv", 0.0) + weight / max(v, 0.1)

    def value(
        self, spec: IndicatorSpec, state: Mapping[str, float], weight: float
    ) -> tuple[float, Detail]:
        speed = weight / state["inv"]
        return spec.free_flow_kmh / speed, {"speed_kmh": round(speed, 2)}
