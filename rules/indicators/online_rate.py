"""``online_rate``: the devices online in the window / the devices expected (a device counts
where it reports, and in the windows up to two of its profile's intervals after: see
:data:`streams.partials.ONLINE_FOR`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rules.indicators.base import NO_GAPS, Detail, Formula

if TYPE_CHECKING:
    from rules.indicators.catalogue import IndicatorSpec

__all__ = ["OnlineRate"]


class OnlineRate(Formula):
    name = "online_rate"
    needs_metric = False
    counts_devices = True

    def fold(
        self,
        spec: IndicatorSpec,
        state: dict[str, float],
        values: Mapping[str, float],
        gaps: Mapping[str, float] = NO_GAPS,
        most: float = math.inf,
    ) -> None:
        return  # the devices that report are counted by the caller

    def finish(
        self, spec: IndicatorSpec, state: Mapping[str, float], reporting: int, expected: int
    ) -> tuple[float | None, Detail]:
        return (reporting / expected if expected else None), {}
