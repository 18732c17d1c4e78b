"""``mean``: the mean of one metric's samples, each weighed by the time it stands for (a mean
load, say)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rules.indicators.base import Detail, OneMetric, beyond

if TYPE_CHECKING:
    from rules.indicators.catalogue import IndicatorSpec

__all__ = ["Mean"]


class Mean(OneMetric):
    name = "mean"
    in_its_unit = True

    def refuses(self, spec: IndicatorSpec, values: Mapping[str, float]) -> str | None:
        assert spec.metric is not None
        return beyond(spec, values, (spec.metric,))

    def add(self, state: dict[str, float], v: float, weight: float) -> None:
        state["s"] = state.get("s", 0.0) + weight * v

    def value(
        self, spec: IndicatorSpec, state: Mapping[str, float], weight: float
    ) -> tuple[float, Detail]:
        return state["s"] / weight, {}
