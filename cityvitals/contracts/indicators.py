"""Vital signs: one indicator of one place over one window, and the partials that build it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from cityvitals.contracts.base import Contract, FiniteFloat, Identifier, UtcDatetime
from cityvitals.contracts.places import PlaceLevel


class IndicatorQuality(StrEnum):
    """How far an indicator's value can be trusted, from its coverage."""

    GOOD = "good"
    PARTIAL = "partial"
    POOR = "poor"
    NO_DATA = "no_data"


class Indicator(Contract):
    """One vital sign of one place over one window: its value and how much it can be trusted.

    ``coverage`` is the share of the place's expected devices (active, of the indicator's
    device types, anywhere under the place) that reported in the window. ``value`` is None
    when none did. ``band`` names the value's category (an AQI level, a congestion level).
    """

    indicator: Identifier
    place_id: Identifier
    place_level: PlaceLevel
    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    window_start: UtcDatetime
    window_s: int = Field(gt=0)
    value: FiniteFloat | None
    band: str | None = None
    coverage: float = Field(ge=0.0, le=1.0)
    reporting: int = Field(ge=0)
    expected: int = Field(ge=0)
    quality: IndicatorQuality
    detail: dict[str, float | str] = {}  # noqa: RUF012 (pydantic copies defaults)
    computed_at: UtcDatetime
    samples: int = Field(default=0, ge=0)
    """Values folded into the window (0 for formulas without samples, e.g. devices online):
    with ``reporting``, how much data the value rests on. A report again carries at least
    as much; the sink never replaces a stored window with one of less."""


class WindowPartial(Contract):
    """Part of one indicator's window at one place, from one batch of one device partition:
    the formula's mergeable state (sums, counts, maxima) and how many devices it adds."""

    indicator: Identifier
    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    window_start: UtcDatetime
    state: dict[str, float]
    reporting: int = Field(ge=0)


class MembershipChange(Contract):
    """An active device of a type joined (+1) or left (-1) a place: expected devices."""

    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    device_type: Identifier
    delta: int
    at: UtcDatetime | None = Field(default=None, exclude_if=lambda at: at is None)
    """When the registry made the change, for a device it held before that joins (activated,
    or moved here): it is expected in no window that ended before (one activated by its
    first reading a minute after it sent it is not missing from that reading's window).
    Left out of the JSON for a device registered now (its readings may be of before)."""


class IndicatorBatch(Contract):
    """What one input message of a device partition adds to the places' indicator windows,
    sent on the place's partition of ``indicators.partials``. ``source`` and ``offset`` name
    that input message, so a replay of it is applied once. Or a clock tick that closes windows.

    ``more``: the batches of later input messages for the same place partition, in the same
    Kafka message (the stream stage sends one per place partition for each group of input
    messages it takes, not one per input message). Each is applied on its own, by its own
    source and offset: :meth:`each`."""

    source: str = ""
    offset: int = -1
    partials: tuple[WindowPartial, ...] = ()
    members: tuple[MembershipChange, ...] = ()
    tick: UtcDatetime | None = None
    more: tuple[IndicatorBatch, ...] = ()

    def each(self) -> tuple[IndicatorBatch, ...]:
        """This batch and those of ``more`` (theirs too), in order: apply each by its own
        source, offset, partials and members.

        >>> one = IndicatorBatch(source="raw/0", offset=7)
        >>> two = IndicatorBatch(source="raw/0", offset=8, more=(IndicatorBatch(offset=9),))
        >>> [b.offset for b in one.model_copy(update={"more": (two,)}).each()]
        [7, 8, 9]
        """
        return (self, *(b for batch in self.more for b in batch.each()))
