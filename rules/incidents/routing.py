"""Routing: which department at which tier handles an incident.

>>> from rules.incidents.config import parse_incident_config
>>> config = parse_incident_config('''
... categories: {flooding: {rules: [waterlogging-*]}}
... routes:
...   - {category: flooding, tier: street, department: street-ops, up_to: orange}
...   - {category: flooding, tier: district, department: water}
...   - {category: "*", tier: city, department: city-ops}
... ''')
>>> path = ("sh", "pd", "lj")
>>> route(config, "flooding", path, WarningLevel.ORANGE)
Assignment(department='street-ops', tier=<Tier.STREET: 'street'>, tier_place_id='lj')
>>> route(config, "flooding", path, WarningLevel.RED).department
'water'
>>> route(config, "flooding", path, WarningLevel.RED, above=Tier.DISTRICT).department
'city-ops'
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from cityvitals.contracts import Tier, WarningLevel
from rules.incidents.config import IncidentConfig

__all__ = ["Assignment", "route", "routed_tier", "tier_place"]


class Assignment(NamedTuple):
    department: str
    tier: Tier
    tier_place_id: str


def tier_place(place_path: tuple[str, ...], tier: Tier) -> str:
    """The place whose centre of ``tier`` stands for an incident at ``place_path`` (the
    incident's own place when it sits above that tier's level)."""
    depth = tier.place_level.depth
    return place_path[min(depth, len(place_path) - 1)]


def route(
    config: IncidentConfig,
    category: str,
    place_path: tuple[str, ...],
    level: WarningLevel,
    *,
    above: Tier | None = None,
    exclude: Collection[tuple[str, Tier]] = (),
    at_least: Tier | None = None,
) -> Assignment | None:
    """The lowest tier (above ``above``, if given; else not below ``at_least``) with a route
    for the incident, and its most specific route's department; ``exclude`` skips
    (department, tier) pairs that refused it. A tier whose ``up_to`` is below the level is
    passed over; escalation (``above``) ignores ``up_to``, since the tier below has already
    failed. None when nothing is left."""
    tiers = list(Tier)
    if above is not None:
        start = tiers.index(above) + 1
    else:
        start = tiers.index(at_least) if at_least is not None else 0
    for tier in tiers[start:]:
        candidates = [
            r
            for r in config.routes
            if r.tier is tier
            and (r.department, tier) not in exclude
            and r.covers(category, place_path, level if above is None else WarningLevel.BLUE)
        ]
        if candidates:
            best = max(candidates, key=lambda r: r.specificity())
            return Assignment(best.department, tier, tier_place(place_path, tier))
    return None


def routed_tier(
    config: IncidentConfig, department: str, category: str, place_path: tuple[str, ...]
) -> Tier | None:
    """The lowest tier at which ``department`` has a route for an incident of ``category`` at
    ``place_path`` (any level), or None: where a reassignment that names no tier sends it.

    >>> from rules.incidents.testing import STREET, desk_with
    >>> config = desk_with().config  # flooding: street-ops at the street, water at the district
    >>> routed_tier(config, "water", "flooding", STREET), routed_tier(config, "x", "flooding", STREET)
    (<Tier.DISTRICT: 'district'>, None)
    """
    for tier in Tier:
        for r in config.routes:
            mine = r.tier is tier and r.department == department
            if mine and r.covers(category, place_path, WarningLevel.BLUE):
                return tier
    return None
