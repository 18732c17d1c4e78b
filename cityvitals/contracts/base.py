"""The base of every contract: versioned frozen models and the field types they share."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal, NoReturn, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

SCHEMA_VERSION: Literal[1] = 1

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""Device, place and rule ids: safe inside an MQTT topic level, a Kafka key and a file name."""

METRIC = r"^[a-z][a-z0-9_.]{0,63}$"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (e.g. 2026-11-22T08:00:00Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{value.isoformat()} is outside years 1 to 9999 in UTC") from None


_TIME = TypeAdapter(datetime)
_EXTENDED = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")
"""A calendar date and a time of hours and minutes, written with their separators: what
Python's reader and pydantic's agree on (Python's alone would take a week date, 2026-W47-1,
the basic form, 20261122T0800, or a time of hours alone, which RFC 3339 refuses)."""
_NUMBER = re.compile(r"\s*[+-]?\d+(\.\d*)?\s*")


def _as_time(value: object) -> object:
    """A text read as an ISO 8601 time; a number, or a number in a text ("1796639470"),
    refused: read as seconds or milliseconds since 1970, it would be taken for a time. What is
    not a text (a datetime) is left to the type."""
    if isinstance(value, str):
        if _NUMBER.fullmatch(value) is None:
            if _EXTENDED.match(value):  # the quick way, where it reads what pydantic reads
                try:
                    return datetime.fromisoformat(value)
                except ValueError:
                    pass
            try:  # what is left (RFC 3339's lower-case "z", or no time at all) as pydantic reads it
                return _TIME.validate_python(value)
            except ValidationError:
                raise ValueError(
                    f"{value!r} is not a time as RFC 3339 writes it (e.g. 2026-11-22T08:00:00Z)"
                ) from None
    elif not isinstance(value, int | float):
        return value
    raise ValueError(
        f"{value!r} is a number, not a time: ISO 8601 with a zone (e.g. 2026-11-22T08:00:00Z)"
    )


UtcDatetime = Annotated[datetime, BeforeValidator(_as_time), AfterValidator(_utc)]
"""A timestamp that must carry its zone, converted to UTC (what devices and people send)."""
Instant = AwareDatetime
"""A timestamp that must carry its zone, not converted: the high-volume fields stages
exchange (a reading's time), which the gateway made UTC already. Checked inside pydantic's
core: a Python validator per field would cost more than the rest of the reading's decode."""
Identifier = Annotated[str, Field(pattern=IDENTIFIER)]
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Field(pattern=NO_NUL)]
"""Free text a person wrote: refused with a NUL character, which no PostgreSQL text column
stores (a feedback's actor, a report's text: the incident's title holds it for its life)."""
MetricName = Annotated[str, Field(pattern=METRIC)]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
"""A device's sequence number: what PostgreSQL's ``bigint`` holds (a larger one, passed on,
would stop the sinks at every start)."""
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A number that is neither NaN nor infinite (checked inside pydantic's core)."""


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not an IANA time zone name (e.g. UTC, Europe/Paris, Asia/Shanghai)"
        ) from None
    return name


ZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name (``Asia/Shanghai``): the city's, or where a rule's hours are read."""

MEASURED_LIMIT = 1e15
"""The largest magnitude a device may report. No city sensor measures near it, and sums of
such values stay far from a float's range: two values of 1e308 overflowed an indicator's sum
to infinity, and its window could no longer be sent."""

MeasuredFloat = Annotated[float, Field(allow_inf_nan=False, ge=-MEASURED_LIMIT, le=MEASURED_LIMIT)]
"""A value a device reports: finite, and within :data:`MEASURED_LIMIT` either way."""


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
    """Base of every message: frozen, strict about unknown fields, versioned; each field's
    docstring is its description in the message's JSON schema (what downstream teams read)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

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
