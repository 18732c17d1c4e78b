"""Warning levels, alert episodes and the observations composite rules judge per place."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from cityvitals.contracts.base import Contract, FiniteFloat, Identifier, MetricName, UtcDatetime


class WarningLevel(StrEnum):
    """The four-level public warning scale, lowest first (blue IV ... red I)."""

    BLUE = "blue"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"

    @property
    def rank(self) -> int:
        """1 for blue up to 4 for red."""
        return _WARNING_RANK[self]

    def and_above(self) -> list[str]:
        """This level and those above it, by value (a filter's "this level or higher").

        >>> WarningLevel.ORANGE.and_above()
        ['orange', 'red']
        """
        return [lv.value for lv in WarningLevel if lv.rank >= self.rank]


_WARNING_RANK = {level: i for i, level in enumerate(WarningLevel, start=1)}


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertResolution(StrEnum):
    """Why an episode ended."""

    CLEARED = "cleared"
    """The condition was false for ``keep_firing_for``."""
    STALE = "stale"
    """The device sent no value of the metric for the rule's ``stale_after`` intervals."""
    RETIRED = "retired"
    """The rule was removed, changed kind, or no longer applies to the device."""


Baseline = Literal["level", "hour of day", "hour of week"]
"""An anomaly detector's forecast: the series' level, its hour of the day or of the week."""


class AnomalyCause(StrEnum):
    """What set an anomaly score, in the order the novelty detector judges a reading."""

    NOVEL = "novel"
    """A value the series has never taken (a bin of its values never visited)."""
    RUN = "run"
    """A run of readings in one tail of the values, longer than any lately."""
    NEW_TO_HOUR = "new_to_hour"
    """A usual value at an unusual hour: outside what its hour of the day has taken."""
    FAMILIAR = "familiar"
    """A deviation from the forecast, damped: the series took values like this often lately."""
    NOISE = "noise"
    """The forecast's errors lately, louder than usual."""
    DEVIATION = "deviation"
    """The deviation from the forecast."""


class AnomalyWhy(Contract):
    """Why an anomaly rule's score was what it was, as numbers (the alert's summary says the
    same in words, cut at 500 characters): the novelty detector's explanation of the reading,
    against what it had learned before it."""

    cause: AnomalyCause
    measured: FiniteFloat
    """The reading's value (the alert's ``value`` is the score)."""
    expected: FiniteFloat
    """The baseline the forecast gave for this reading."""
    low: FiniteFloat
    high: FiniteFloat
    """The expected range: the baseline plus or minus three spreads."""
    baseline: Baseline
    """Which forecast: the series' level, its hour of the day or its hour of the week."""
    rarity: FiniteFloat | None = Field(ge=1.0)
    """About one reading in this many deviates as much from the forecast; null: past the top
    of the scale (rarer than any the detector tells apart)."""
    damped: bool = False
    """The deviation's score was damped: it came within days of a higher one."""
    usual_low: FiniteFloat | None = None
    usual_high: FiniteFloat | None = None
    """The range of the values the series took lately, the rarest at each end left out (null
    while the detector still learns it)."""
    new_every: FiniteFloat | None = Field(default=None, ge=1.0)
    """Lately something new came about once in this many readings (a value never taken; for
    ``new_to_hour``, a value outside its hour's range): how rare the novelty is."""
    hour: int = Field(ge=0, le=23)
    """The reading's hour of the day, UTC."""
    hour_low: FiniteFloat | None = None
    hour_high: FiniteFloat | None = None
    """The range of the values that hour took (null while none)."""
    run: int = Field(default=0, ge=0)
    """``run``: the readings in a row in one tail."""
    noise: FiniteFloat = Field(default=0.0, ge=0.0)
    """``noise``: the forecast's errors lately, this many times the usual spread."""


class Alert(Contract):
    """A transition of one alert episode: it fired, changed level, or resolved.

    ``alert_id`` is the same for every transition of one episode and is derived from the rule,
    the device, the metric and the episode's start, so a replayed reading never makes a
    second alert. ``revision`` counts the transitions of the episode (0 = fired).
    """

    alert_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    revision: int = Field(ge=0)
    rule_id: Identifier
    status: AlertStatus
    level: WarningLevel
    device_id: Identifier
    metric: MetricName
    value: FiniteFloat
    """What the rule judged, in its kind's terms: a threshold rule's metric value; a rate
    rule's change per its ``per``; an absence rule's silence in seconds; an anomaly rule's
    score (0 to 1); a composite rule's count of devices whose readings hold its conditions."""
    threshold: FiniteFloat
    """What ``value`` was judged against (a composite rule: the devices it needs)."""
    place_path: tuple[Identifier, ...] = ()
    device_type: Identifier | None = None
    started_at: UtcDatetime
    ts: UtcDatetime
    summary: str = Field(max_length=500)
    evidence: tuple[Identifier, ...] = ()
    """Composite rules: the devices whose readings make the condition hold."""
    peak_level: WarningLevel | None = None
    """The highest level of the episode so far; a resolved alert's ``level`` is this peak."""
    resolution: AlertResolution | None = None
    """Resolved alerts: why the episode ended."""
    anomaly: AnomalyWhy | None = Field(default=None, exclude_if=lambda why: why is None)
    """Anomaly rules (the novelty detector), when the alert fired or changed level: why the
    reading scored as it did. Left out of the message when there is none, so a consumer of an
    earlier version, which refuses fields it does not know, takes every other alert."""


class PlaceObservation(Contract):
    """A reading's value that a composite rule judges together with other devices of a place.

    The stream sends it keyed and partitioned by the place at the rule's ``group_by`` level, so
    one worker holds all of one place's composite state.
    """

    rule_id: Identifier
    place_path: tuple[Identifier, ...] = Field(min_length=1)
    device_id: Identifier
    device_type: Identifier | None = None
    metric: MetricName
    value: FiniteFloat
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    ts: UtcDatetime


class PlaceBatch(Contract):
    """Place observations of one partition, in one message; or a clock tick for its places."""

    observations: tuple[PlaceObservation, ...] = ()
    tick: UtcDatetime | None = None
