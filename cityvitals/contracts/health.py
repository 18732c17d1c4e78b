"""The platform's own health: device liveness, place outages and refused inputs."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field

from cityvitals.contracts.base import Contract, Identifier, UtcDatetime


class Liveness(StrEnum):
    ONLINE = "online"
    LATE = "late"
    OFFLINE = "offline"


class DeviceLiveness(Contract):
    """A device's liveness changed, judged against its own observed reporting cadence."""

    device_id: Identifier
    status: Liveness
    last_seen: UtcDatetime | None
    expected_interval_s: float = Field(gt=0)
    """The cadence the judgement used: observed, else the profile's."""
    place_path: tuple[Identifier, ...] = ()
    ts: UtcDatetime


class OutageStatus(StrEnum):
    STARTED = "started"
    ENDED = "ended"


class PlaceOutage(Contract):
    """Most devices under one place went silent together: one problem, not one per device."""

    outage_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    place_id: Identifier
    place_path: tuple[Identifier, ...]
    status: OutageStatus
    devices_total: int = Field(ge=0)
    """The active devices under the place when the event was raised: at its end 0 when none
    is left there (moved away, suspended or retired)."""
    devices_silent: int = Field(ge=0)
    started_at: UtcDatetime
    ts: UtcDatetime
    devices: tuple[Identifier, ...] = Field(
        default=(), max_length=50, exclude_if=lambda devices: not devices
    )
    """The offline devices under the place when the event was raised, by id (the first 50):
    at its start those to visit, at its end those still silent. Left out of the JSON when
    none (an event of before it was named has none)."""


STAGE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


def without_nul(text: str) -> str:
    r"""``text`` with each NUL character written as ``\x00``: PostgreSQL stores no NUL in
    text, and a refusal's reason may quote what a device sent (a JSON key ``"\u0000"``).

    >>> without_nul("values.a\x00b: Extra inputs are not permitted")
    'values.a\\x00b: Extra inputs are not permitted'
    """
    return text.replace("\x00", "\\x00")


Storable = Annotated[str, AfterValidator(without_nul)]
"""Text kept as it came except for NUL, which PostgreSQL cannot store."""


class DeadLetter(Contract):
    """An input that a stage refused, with the reason and the original bytes (base64): the
    message as the stage read it (the incident desk's refusals: the refused item as its own
    topic has it)."""

    stage: Annotated[str, Field(pattern=STAGE.pattern)]
    reason: Storable = Field(min_length=1, max_length=2000)
    cause: Annotated[str, Field(max_length=100)] | None = Field(
        default=None,
        description="what the stage counted the refusal as: the label of its counter "
        "(cityvitals_<stage>_rejected_total's reason, or field at ingest) or, at the sinks, "
        "database_refused or conflict; null in a letter written before causes were kept",
    )
    source: Storable = Field(max_length=500, description="MQTT topic or Kafka topic it came from")
    device_id: Storable | None = None
    payload_b64: str
    received_at: UtcDatetime
