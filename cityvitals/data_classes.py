"""Data classes: what kind of data each Kafka topic and each PostgreSQL table holds, and how long
a class of data may be kept (docs/privacy.md).

Every topic (:data:`cityvitals.topics.TOPICS`, its ``data_class``) and every table
(:data:`TABLES`) is in one class. A class's retention (``CITYVITALS_RETENTION_<CLASS>_DAYS``)
is the longest any topic or table of that class keeps data: a topic or table whose own
retention is shorter keeps its own; unset (the default), every one keeps its own, as before.

>>> from cityvitals.settings import Settings
>>> retention_cap(Settings(retention_citizen_days=30), DataClass.CITIZEN)
datetime.timedelta(days=30)
>>> retention_cap(Settings(), DataClass.CITIZEN) is None
True
>>> capped(timedelta(days=90), timedelta(days=30)), capped(None, timedelta(days=30))
(datetime.timedelta(days=30), datetime.timedelta(days=30))
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from cityvitals.settings import Settings

__all__ = ["TABLES", "DataClass", "capped", "retention_cap"]


class DataClass(StrEnum):
    TELEMETRY = "telemetry"
    """What devices measure and detect, and its roll-ups: no personal data (camera events
    carry a type, a value, a confidence and a snapshot reference, never a face or a plate)."""
    OPERATIONAL = "operational"
    """What the city runs on: the registry, alerts, vital signs, incidents, dispatch orders,
    liveness and the audit log; staff names as actors, no data about residents."""
    CITIZEN = "citizen"
    """What residents send: report text and a photo reference (no name, no phone number)."""
    DIAGNOSTIC = "diagnostic"
    """Refused inputs kept with their original bytes, to find what sent them and why."""


TABLES: dict[str, DataClass] = {
    # telemetry
    "readings": DataClass.TELEMETRY,
    "camera_events": DataClass.TELEMETRY,
    "readings_1m": DataClass.TELEMETRY,
    "readings_1h": DataClass.TELEMETRY,
    "readings_1d": DataClass.TELEMETRY,
    # operational: the registry
    "places": DataClass.OPERATIONAL,
    "devices": DataClass.OPERATIONAL,
    "profiles": DataClass.OPERATIONAL,
    "departments": DataClass.OPERATIONAL,
    "mqtt_credentials": DataClass.OPERATIONAL,
    "audit_log": DataClass.OPERATIONAL,
    "users": DataClass.OPERATIONAL,
    "device_liveness": DataClass.OPERATIONAL,
    "place_outages": DataClass.OPERATIONAL,
    # operational: what the pipeline concludes
    "alerts": DataClass.OPERATIONAL,
    "alert_transitions": DataClass.OPERATIONAL,
    "indicators": DataClass.OPERATIONAL,
    "indicators_1h": DataClass.OPERATIONAL,
    "indicators_1d": DataClass.OPERATIONAL,
    "incidents": DataClass.OPERATIONAL,
    "incident_transitions": DataClass.OPERATIONAL,
    "dispatches": DataClass.OPERATIONAL,
    "escalations": DataClass.OPERATIONAL,
    # citizen
    "reports": DataClass.CITIZEN,
    # diagnostic
    "deadletters": DataClass.DIAGNOSTIC,
    "deadletters_resent": DataClass.DIAGNOSTIC,
    "deadletters_replayed": DataClass.DIAGNOSTIC,
}
"""The class of every table the migrations create (partitions are their parent's)."""


def retention_cap(settings: Settings, data_class: DataClass) -> timedelta | None:
    """The longest the class's data may be kept; ``None``: as each topic and table says."""
    days: int | None = getattr(settings, f"retention_{data_class.value}_days")
    return None if days is None else timedelta(days=days)


def capped(own: timedelta | None, cap: timedelta | None) -> timedelta | None:
    """A topic's or table's retention (``None``: for ever) under its class's cap."""
    if cap is None:
        return own
    return cap if own is None else min(own, cap)
