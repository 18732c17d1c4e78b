"""The incident configuration file: categories (correlation), routes, limits and storm budgets.

Pure: the caller reads the file and passes its text. Errors name the file, the line and the
field, like the rule file's (:class:`rules.RuleFileError`).

>>> config = parse_incident_config('''
... categories:
...   flooding: {rules: [waterlogging-*], group_by: street, window: 2h}
... routes:
...   - {category: flooding, tier: street, department: street-ops, up_to: orange}
...   - {category: "*", tier: city, department: city-ops}
... ''', source="incidents.yaml")
>>> config.category_of("waterlogging-depth"), config.category_of("pm25-high")
('flooding', 'general')
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable
from datetime import timedelta
from functools import cached_property
from typing import Annotated

from pydantic import ConfigDict, Field, ValidationError, model_validator

from cityvitals.contracts import IDENTIFIER, Derived, PlaceLevel, Tier, WarningLevel
from rules.kinds import Duration, PositiveDuration
from rules.ruleset import file_error, load_yaml

__all__ = [
    "GENERAL",
    "OUTAGE_CATEGORY",
    "Category",
    "IncidentConfig",
    "Limits",
    "Route",
    "parse_incident_config",
    "uncategorised",
    "unmatched_rules",
]

GENERAL = "general"
"""The category of an alert no category lists."""
OUTAGE_CATEGORY = "device_health"
"""The category of an area outage's incident."""

Name = Annotated[str, Field(pattern=IDENTIFIER)]


class _Strict(Derived):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Category(_Strict):
    """Alerts that are one problem: the rules that raise them, how they group by place, and
    how long an incident keeps taking them after its last one."""

    rules: tuple[str, ...] = ()
    """Rule ids, ``*`` patterns allowed (``water-*``)."""
    group_by: PlaceLevel = PlaceLevel.STREET
    window: PositiveDuration = timedelta(hours=2)
    related: tuple[Name, ...] = ()
    """Open incidents of these categories at the same place take this category's alerts too."""
    takes_over: tuple[Name, ...] = ()
    """Related categories whose incident this category's signal makes its own (a fire that
    joins a gas leak makes it a fire): its category and title, and its routing while no
    department has accepted it and no person reassigned it."""
    title: str = Field(default="", max_length=200)
    """How people name it (the category's id when empty)."""
    sla: dict[Tier, Limits] = Field(default_factory=dict)
    """Limits of this category at a tier, instead of the file's (a fire is faster than noise)."""


class Route(_Strict):
    """Who handles a category at a tier: the lowest matching tier gets the incident."""

    category: str = Field(pattern=rf"^(\*|{IDENTIFIER[1:-1]})$")
    tier: Tier
    department: Name
    up_to: WarningLevel | None = None
    """The highest level this tier handles; above it the next tier up is chosen."""
    places: tuple[tuple[Name, ...], ...] = ()
    """Place-path prefixes (``sh/pd``) this route is for; empty: everywhere."""

    @model_validator(mode="before")
    @classmethod
    def _split_places(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("places"), list):
            data = {**data, "places": [_path(p) for p in data["places"]]}
        return data

    def covers(self, category: str, place_path: tuple[str, ...], level: WarningLevel) -> bool:
        if self.category not in ("*", category):
            return False
        if self.up_to is not None and level.rank > self.up_to.rank:
            return False
        return not self.places or any(place_path[: len(p)] == p for p in self.places)

    def specificity(self) -> tuple[int, int]:
        """Exact category before ``*``, then the longest place prefix."""
        return (self.category != "*", max((len(p) for p in self.places), default=0))


def _path(value: object) -> object:
    return tuple(value.split("/")) if isinstance(value, str) else value


LevelTimes = dict[WarningLevel, PositiveDuration]


class Limits(_Strict):
    """How long a tier has to accept and to handle an incident, by its level."""

    accept: LevelTimes
    handle: LevelTimes

    @model_validator(mode="after")
    def _every_level(self) -> Limits:
        for name, times in (("accept", self.accept), ("handle", self.handle)):
            missing = [level.value for level in WarningLevel if level not in times]
            if missing:
                raise ValueError(f"{name} has no limit for {', '.join(missing)}")
        return self


class Storm(_Strict):
    budget: dict[Tier, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    """Dispatch orders per tier place per period; a tier not named has no budget."""
    per: PositiveDuration = timedelta(minutes=10)
    reopen_after: Duration = timedelta(hours=1)
    """After an incident closed, alerts of its place and category this soon join it as flaps
    (unless of a higher level, which reopens it)."""


class Verify(_Strict):
    quiet: Duration = timedelta(minutes=15)
    """A handled incident is verified when its alerts stayed resolved this long."""
    close_after: Duration = timedelta(0)
    """A verified incident closes this long after verification."""


class Outage(_Strict):
    mutes: tuple[Name, ...] = (OUTAGE_CATEGORY,)
    """Categories of per-device alerts folded into an area outage's incident beneath it."""


class IncidentConfig(_Strict):
    """A validated incident configuration file; ``version`` names the text it came from."""

    categories: dict[Name, Category] = Field(default_factory=dict)
    routes: tuple[Route, ...] = Field(min_length=1)
    sla: dict[Tier, Limits] = Field(default_factory=dict)
    storm: Storm = Storm()
    verify: Verify = Verify()
    outage: Outage = Outage()
    version: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> IncidentConfig:
        known = {*self.categories, GENERAL, OUTAGE_CATEGORY}
        for name, category in self.categories.items():
            for other in category.related:
                if other not in known:
                    raise ValueError(f"category {name!r} is related to unknown {other!r}")
            for other in category.takes_over:
                if other not in category.related:
                    raise ValueError(
                        f"category {name!r} takes over {other!r}, which is not in its "
                        f"related ({', '.join(category.related) or 'none'}): its signals "
                        "would never join such an incident"
                    )
        for route in self.routes:
            if route.category != "*" and route.category not in known:
                raise ValueError(f"a route names unknown category {route.category!r}")
        if not any(r.category == "*" and not r.places and r.up_to is None for r in self.routes):
            raise ValueError(
                "no catch-all route: add one with category '*', no places and no up_to, "
                "so that every incident has a department"
            )
        return self

    @cached_property
    def _patterns(self) -> tuple[tuple[str, str], ...]:
        return tuple((p, name) for name, c in self.categories.items() for p in c.rules)

    def category_of(self, rule_id: str) -> str:
        """The first category listing the rule (exact ids before patterns), else general."""
        for pattern, name in self._patterns:
            if pattern == rule_id:
                return name
        for pattern, name in self._patterns:
            if fnmatch.fnmatchcase(rule_id, pattern):
                return name
        return GENERAL

    def category(self, name: str) -> Category:
        """The category of that name; one the file does not list has the defaults (``general``
        titled "General", as the API's category lists name it)."""
        return self.categories.get(name) or (_GENERAL if name == GENERAL else Category())

    def limits(
        self, tier: Tier, level: WarningLevel, category: str = GENERAL
    ) -> tuple[timedelta, timedelta]:
        """(to accept, to handle) at this tier for this level: the category's, else the file's;
        a day and a week when neither sets them."""
        limits = self.category(category).sla.get(tier) or self.sla.get(tier)
        if limits is None:
            return timedelta(days=1), timedelta(days=7)
        return limits.accept[level], limits.handle[level]


def parse_incident_config(text: str, source: str = "<incidents>") -> IncidentConfig:
    """Parse and validate an incident file; raises RuleFileError naming every problem."""
    data, lines = load_yaml(text, source, "'categories' and 'routes'")
    version = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    try:
        return IncidentConfig.model_validate({**data, "version": version})
    except ValidationError as exc:
        raise file_error(exc, source, lines) from exc


def unmatched_rules(config: IncidentConfig, rule_ids: Iterable[str]) -> list[str]:
    """Each rule id or pattern a category lists that names no rule of ``rule_ids`` (the rule
    file in force), described: its alerts would never come (a misspelt id).

    >>> config = parse_incident_config(
    ...     "{categories: {air: {rules: [pm25-polution, aqi-*]}, water: {rules: [depth]}},"
    ...     " routes: [{category: '*', tier: street, department: ops}]}")
    >>> unmatched_rules(config, ["pm25-pollution", "aqi-hourly", "depth"])
    ["categories.air.rules: 'pm25-polution' names no rule of the rule file"]
    """
    ids = set(rule_ids)
    return [
        f"categories.{name}.rules: {listed!r} names no rule of the rule file"
        for name, category in config.categories.items()
        for listed in category.rules
        if not any(fnmatch.fnmatchcase(rule_id, listed) for rule_id in ids)
    ]


def uncategorised(config: IncidentConfig, rule_ids: Iterable[str]) -> list[str]:
    """The rules of ``rule_ids`` no category lists: their alerts open general incidents for
    the catch-all route (not wrong, but seldom meant: a category listing a misspelt id
    leaves the rule it meant here)."""
    return [r for r in rule_ids if config.category_of(r) == GENERAL]


def unlimited_tiers(config: IncidentConfig) -> list[str]:
    """The tiers a route dispatches to that neither the file's ``sla`` nor the category's
    give limits for: their orders get a day to accept and a week to handle (a grid route
    added without ``sla: {grid: ...}``), each as ``tier`` or ``category at tier``.

    >>> config = parse_incident_config('''
    ... categories: {noise: {rules: [noise-*]}}
    ... routes:
    ...   - {category: noise, tier: grid, department: grid-officers}
    ...   - {category: "*", tier: city, department: city-ops}
    ... sla: {city: {accept: {blue: 30m, yellow: 20m, orange: 10m, red: 5m},
    ...              handle: {blue: 8h, yellow: 4h, orange: 2h, red: 1h}}}
    ... ''')
    >>> unlimited_tiers(config)
    ['noise at grid']
    """
    out = []
    for r in config.routes:
        if r.tier in config.sla:
            continue
        if r.category == "*":
            out.append(r.tier.value)
        elif r.tier not in config.category(r.category).sla:
            out.append(f"{r.category} at {r.tier.value}")
    return list(dict.fromkeys(out))


Category.model_rebuild()


_GENERAL = Category(title="General")
"""``general``, where the file does not list it: what no category takes."""
