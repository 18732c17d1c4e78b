"""``leq``: 10·log10 of the mean of 10^(L/10) of the samples, the energy mean (ISO 1996-1), each
sample weighed by the time it stands for (the energy mean of unequal durations)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rules.indicators.base import Detail, OneMetric

if TYPE_CHECKING:
    from rules.indicators.catalogue import IndicatorSpec

__all__ = ["Leq"]


LEVEL_MAX = 300.0
"""The largest sound level (dB, either sign) folded: the loudest sound in air is about 194 dB,
and past about 3,000 dB the energy 10^(L/10) is beyond a float (past -3,000, zero)."""


class Leq(OneMetric):
    name = "leq"
    in_its_unit = True
    rollup = "energy"

    def refuses(self, spec: IndicatorSpec, values: Mapping[str, float]) -> str | None:
        """
        >>> from rules.indicators.catalogue import parse_catalogue
        >>> spec = parse_catalogue("indicators:\\n  - {id: leq, kind: leq, metric: laeq_db, "
        ...                        "device_types: [noise], window: 5m}\\n").specs[0]
        >>> Leq().refuses(spec, {"laeq_db": 62.5}), Leq().refuses(spec, {"pm25": 5000})
        (None, None)
        >>> Leq().refuses(spec, {"laeq_db": 5000})
        'laeq_db 5000 dB is beyond any sound level (at most 300 dB either way; indicator leq)'
        """
        assert spec.metric is not None
        v = values.get(spec.metric)
        if v is not None and not -LEVEL_MAX <= v <= LEVEL_MAX:
            return (
                f"{spec.metric} {v:g} dB is beyond any sound level "
                f"(at most {LEVEL_MAX:g} dB either way; indicator {spec.id})"
            )
        return None

    def add(self, state: dict[str, float], v: float, weight: float) -> None:
        state["e"] = state.get("e", 0.0) + weight * 10 ** (v / 10)

    def value(
        self, spec: IndicatorSpec, state: Mapping[str, float], weight: float
    ) -> tuple[float, Detail]:
        return 10 * math.log10(state["e"] / weight), {}
