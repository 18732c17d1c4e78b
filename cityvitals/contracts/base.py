"""The base of every contract: versioned frozen models and the field types they share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

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
_LAST_ISO: list[tuple[datetime | None, str]] = [(None, "")]


def iso(ts: datetime) -> str:
    """``ts.isoformat()``, remembered for the last datetime asked: a stage formats the same
    reading's instant several times (its rule memories, its marks), and it costs.

    >>> iso(datetime(2026, 7, 1, tzinfo=UTC))
    '2026-07-01T00:00:00+00:00'
    """
    last, text = _LAST_ISO[0]
    if last is not ts:
        text = ts.isoformat()
        _LAST_ISO[0] = (ts, text)  # one store: a pair is never torn
    return text


Identifier = Annotated[str, Field(pattern=IDENTIFIER)]
MetricName = Annotated[str, Field(pattern=METRIC)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A number that is neither NaN nor infinite (checked inside pydantic's core)."""


class Contract(BaseModel):
    """Base of every message: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
