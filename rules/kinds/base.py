"""The interface every rule kind implements, and what a kind's judgement is.

A kind is one module: its spec (the pydantic model of the rule as a rule file writes it), its
memory (plain JSON types kept in :attr:`rules.alerting.AlertState.memory`) and its
:meth:`RuleKind.judge`. The engine drives a kind by its :attr:`RuleKind.role`:

- ``reading``: judged at each observation of the rule's ``metric``; between values the last
  judgement holds (until stale) at the device's other readings and at clock ticks;
- ``silence``: judged at each reading of the device and at each clock tick;
- ``place``: judged on the place's partition from the observations of the rule's ``metrics``.

Registering a kind is one line in :data:`rules.kinds.REGISTRY`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from cityvitals.contracts import Alert, AnomalyWhy, WarningLevel
from rules.alerting import AlertState
from rules.kinds.spec import RuleBase
from rules.observation import Observation

__all__ = ["Example", "Judgement", "LastValue", "Role", "RuleKind"]

Role = Literal["reading", "silence", "place"]
R = TypeVar("R", bound=RuleBase)
LastValue = tuple[datetime, WarningLevel | None, float, float]
"""A pending or firing rule's last judged value: its time, level, value and threshold."""


class Judgement(NamedTuple):
    """A kind's verdict on one input: the level (None: the condition does not hold), the value
    and threshold an alert reports, the kind's new memory and the devices that are evidence.
    A named tuple: one is made per rule at every reading (a frozen dataclass costs more)."""

    level: WarningLevel | None
    value: float
    threshold: float
    memory: Any
    evidence: tuple[str, ...] = ()
    why: str = ""
    """What the value is judged against, in people's words (an anomaly's expected range)."""
    anomaly: AnomalyWhy | None = None
    """An anomaly rule's ``why`` as numbers (only for a score that may alert)."""


@dataclass(frozen=True)
class Example:
    """A short story for the conformance test: a rule file, and the steps that make its alert
    fire and resolve. A step is ``("read", device, metric, value, minute)`` or
    ``("tick", minute)``."""

    rules: str
    steps: tuple[tuple[Any, ...], ...]


class RuleKind(ABC, Generic[R]):
    """One rule kind: its name, spec, role and judgement, with defaults a kind may override."""

    name: str
    spec: type[R]
    role: Role

    @abstractmethod
    def judge(self, rule: R, state: AlertState, at: datetime, obs: Observation | None) -> Judgement:
        """Judge at ``at``: ``obs`` is the new value (for ``silence``, one of the rule's metric
        if the device sent it; for ``place``, the device's observation, None at a tick)."""

    @abstractmethod
    def example(self) -> Example:
        """A story that fires and resolves an alert of this kind (see :class:`Example`)."""

    def accepts(self, rule: R, obs: Observation) -> bool:
        """Whether the observation is judged at all (a camera event below a confidence).
        Asked only of a rule for which :meth:`filters` is true: a kind that overrides one
        keeps the other in step."""
        return True

    def filters(self, rule: R) -> bool:
        """Whether :meth:`accepts` may refuse an observation for ``rule``: asked once, when
        the file loads, and ``accepts`` is not asked at every value when it may not. By
        default, whether the kind overrides ``accepts``."""
        return type(self).accepts is not RuleKind.accepts

    def wait(self, rule: R, stale: timedelta, grace: timedelta) -> timedelta:
        """How long after a device's last reading the rule may still act, before ``for`` and
        ``keep_firing_for``; ``stale`` is the rule's stale horizon."""
        return stale

    def last_value(self, rule: R, state: AlertState) -> LastValue | None:
        """The last value judged for a pending or firing rule, judged again at a tick."""
        if state.sample is None:
            return None
        ts, level, value, threshold = state.sample
        return datetime.fromisoformat(ts), WarningLevel(level) if level else None, value, threshold

    def expired(self, rule: R, silent: timedelta) -> bool:
        """Whether a last value this old no longer holds (the condition is false)."""
        return False

    def seed(self, rule: R, now: datetime) -> Any:
        """The memory of a rule new to a device at a clock tick (None: nothing to remember)."""
        return None

    def resumed(self, rule: R, alert: Alert) -> Any:
        """The memory that continues an alert still firing in the database, from its latest
        transition, for a stream that starts with no memory (:mod:`streams.seeds`). None: the
        kind's memory starts afresh."""
        return None

    def due(self, rule: R, state: AlertState, now: datetime) -> bool:
        """Whether a clock tick at ``now`` judges a ``silence`` rule's state."""
        return True

    def summary_fields(self, rule: R) -> dict[str, Any]:
        """Fields the kind adds to the summary template."""
        return {"per": ""}
