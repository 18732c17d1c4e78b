"""The registration table of indicator formulas, by the catalogue's ``kind``.

A new formula is a module holding a :class:`~rules.indicators.base.Formula`, and one line here.

>>> sorted(FORMULAS)
['aqi', 'congestion', 'leq', 'max', 'mean', 'online_rate']
"""

from __future__ import annotations

from rules.indicators.aqi import Aqi
from rules.indicators.base import Formula
from rules.indicators.congestion import Congestion
from rules.indicators.leq import Leq
from rules.indicators.maximum import Maximum
from rules.indicators.mean import Mean
from rules.indicators.online_rate import OnlineRate

__all__ = ["FORMULAS"]

FORMULAS: dict[str, Formula] = {
    f.name: f
    for f in (
        Aqi(),
        Mean(),
        Maximum(),
        Leq(),
        Congestion(),
        OnlineRate(),
    )
}
