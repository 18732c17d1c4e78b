"""The rule kinds: one module each (spec, memory, judgement), one line each in :data:`REGISTRY`.

Every rule has an ``id``, a ``kind`` (``threshold`` when left out), a scope (device types,
profiles, place subtrees, tags: a rule applies to a device that matches every list given, and
any one entry of a list), a ``summary`` template and two timers with the semantics of
Prometheus alerting rules, evaluated in event time at each reading:

- ``for``: the condition must hold this long before the alert fires (it is *pending* until then);
- ``keep_firing_for``: a firing alert resolves only once the condition has been false this long,
  and steps down to a lower level only once the lower level has held this long.

Both run out at a device's readings and at the stream's clock ticks: with no new value, a
threshold, rate or anomaly rule holds the judgement of the last value until that value is
stale (``stale_after`` expected intervals), when a firing alert resolves as stale.

Durations are seconds or strings such as ``90s``, ``15m``, ``2h``, ``1d``.

A new kind is a module holding its spec and a :class:`RuleKind`, and one line below.

>>> sorted(REGISTRY)
['absence', 'anomaly', 'composite', 'rate', 'threshold']
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from rules.kinds import absence, anomaly, composite, rate, threshold
from rules.kinds.absence import AbsenceRule
from rules.kinds.anomaly import AnomalyRule
from rules.kinds.base import Example, Judgement, Role, RuleKind
from rules.kinds.composite import CompositeRule, Condition
from rules.kinds.rate import RateRule
from rules.kinds.spec import (
    Duration,
    LevelledRule,
    PositiveDuration,
    RuleBase,
    human,
    parse_duration,
)
from rules.kinds.threshold import ThresholdRule

__all__ = [
    "REGISTRY",
    "AbsenceRule",
    "AnomalyRule",
    "CompositeRule",
    "Condition",
    "Duration",
    "Example",
    "Judgement",
    "LevelledRule",
    "PositiveDuration",
    "RateRule",
    "Role",
    "Rule",
    "RuleBase",
    "RuleKind",
    "ThresholdRule",
    "human",
    "parse_duration",
]

REGISTRY: dict[str, RuleKind[Any]] = {
    k.name: k
    for k in (
        threshold.KIND,
        rate.KIND,
        anomaly.KIND,
        absence.KIND,
        composite.KIND,
    )
}
"""Every rule kind by the name a rule file gives as ``kind``."""

Rule: Any = Annotated[
    Union[tuple(k.spec for k in REGISTRY.values())],  # noqa: UP007
    Field(discriminator="kind"),
]
"""A rule of any registered kind, told apart by ``kind`` (for pydantic)."""
