"""``leq``: 10·log10 of the mean of 10^(L/10) of the samples, the energy mean (ISO 1996-1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rules.indicators.base import Detail, OneMetric

if TYPE_CHECKING:
    from rules.indicators.catalogue import IndicatorSpec

__all__ = ["Leq"]


class Leq(OneMetric):
    name = "leq"

    def add(self, state: dict[str, float], v: float) -> None:
        state["e"] = state.get("e", 0.0) + 10 ** (v / 10)

    def value(
        self, spec: IndicatorSpec, state: Mapping[str, float], n: float
    ) -> tuple[float, Detail]:
        return 10 * math.log10(state["e"] / n), {}
