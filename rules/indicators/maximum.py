"""``max``: the largest of one metric's samples (water depth against the flood stages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rules.indicators.base import Detail, OneMetric

if TYPE_CHECKING:
    from rules.indicators.catalogue import IndicatorSpec

__all__ = ["Maximum"]


class Maximum(OneMetric):
    name = "max"
    in_its_unit = True
    highest = frozenset({"max"})
    rollup = "max"

    def add(self, state: dict[str, float], v: float, weight: float) -> None:
        state["max"] = max(state.get("max", v), v)

    def value(
        self, spec: IndicatorSpec, state: Mapping[str, float], weight: float
    ) -> tuple[float, Detail]:
        return state["max"], {}
