"""The base of every contract: versioned frozen models and the field types they share."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal, NoReturn, Self

from orjson import dumps as _dumps
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""Device, place and rule ids: safe inside an MQTT topic level, a Kafka key and a file name."""

METRIC = r"^[a-z][a-z0-9_.]{0,63}$"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (e.g. 2026-11-22T08:00:00Z)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
"""A timestamp that must carry its zone, converted to UTC (what devices and people send)."""
Instant = AwareDatetime
"""A timestamp that must carry its zone, not converted: the high-volume fields stages
exchange (a reading's time), which the gateway made UTC already. Checked inside pydantic's
core: a Python validator per field would cost more than the rest of the reading's decode."""
_ISO: dict[int, tuple[datetime, str]] = {}
ISO_KEPT = 4096
"""Instants whose ISO form :func:`iso` remembers (a bound on memory)."""


def iso(ts: datetime) -> str:
    """``ts.isoformat()``, remembered for the last few thousand datetime objects asked: a
    stage formats each reading's instant several times in a batch (its rule memories, its
    marks), and formatting costs several times what a look-up does. A ``datetime`` in the
    standard library's UTC zone (every instant a stage has enriched) is written by orjson,
    which gives the same text in under a third of the time (a unit test holds them equal).

    >>> iso(datetime(2026, 7, 1, tzinfo=UTC)), iso(datetime(2026, 7, 1, 0, 0, 1, 5, tzinfo=UTC))
    ('2026-07-01T00:00:00+00:00', '2026-07-01T00:00:01.000005+00:00')
    """
    held = _ISO.get(id(ts))
    if held is not None and held[0] is ts:  # held, so its id cannot have been reused
        return held[1]
    # orjson refuses subclasses of datetime (a pandas Timestamp): they keep isoformat
    plain = type(ts) is datetime and ts.tzinfo is UTC
    text = _dumps(ts)[1:-1].decode() if plain else ts.isoformat()
    if len(_ISO) >= ISO_KEPT:
        _ISO.clear()
    _ISO[id(ts)] = (ts, text)
    return text


Identifier = Annotated[str, Field(pattern=IDENTIFIER)]
MetricName = Annotated[str, Field(pattern=METRIC)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A number that is neither NaN nor infinite (checked inside pydantic's core)."""


class Derived(BaseModel):
    """A model with cached properties derived from its fields (``functools.cached_property``,
    kept in the instance's ``__dict__``, which pydantic copies): a copy with other fields
    (``model_copy(update=...)``) derives them afresh instead of keeping the original's.

    >>> from functools import cached_property
    >>> class Span(Derived):
    ...     low: float
    ...     high: float
    ...     @cached_property
    ...     def width(self) -> float:
    ...         return self.high - self.low
    >>> span = Span(low=1, high=3)
    >>> span.width, span.model_copy(update={"high": 9}).width, span.model_copy().width
    (2.0, 8.0, 2.0)
    """

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        if update:
            for klass in type(self).__mro__:
                for name, value in vars(klass).items():
                    if isinstance(value, cached_property):
                        copied.__dict__.pop(name, None)
        return copied


class Contract(BaseModel):
    """Base of every message: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION


class AllFields(set[str]):
    """The fields set of the models :func:`trusted` makes of one class: all of them, one set
    shared by every such model. A set of eight names built for each model, and collected
    after it, took about 1 µs (a scratch script: 1.65 µs a Reading made, 0.54 with the set
    shared). Contracts are frozen, so pydantic never adds to it; a copy (``model_copy``,
    ``copy.copy``) is a plain set of its own, and changing the shared one is refused."""

    def __copy__(self) -> set[str]:
        return set(self)

    def _shared(self, *_args: object) -> NoReturn:
        raise TypeError("the fields set of trusted models is shared: change a copy of it")

    add = discard = remove = pop = clear = update = _shared
    intersection_update = difference_update = symmetric_difference_update = _shared
    __ior__ = __iand__ = __isub__ = __ixor__ = _shared
