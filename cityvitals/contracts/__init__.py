"""Message contracts shared by every component.

Every message on a cityvitals Kafka topic is one of these frozen models, serialised as JSON.
Each carries ``schema_version`` so that consumers can refuse what they do not understand, and
every timestamp is timezone-aware (a naive timestamp is rejected). What devices and people send
is converted to UTC; the high-volume times stages exchange (a reading's) are only checked to
carry a zone, as the gateway has made them UTC already.

>>> p = ReadingPayload(ts="2026-11-22T08:00:00+08:00", seq=1, values={"pm25": 35.0})
>>> p.ts.isoformat()
'2026-11-22T00:00:00+00:00'
>>> Reading(device_id="aq-001", ts="2026-11-22T08:00:00+08:00", seq=1, values={"pm25": 35.0}).ts.hour
8

One module per subject; every name is importable from here.
"""

from __future__ import annotations

from pydantic import ValidationError

from cityvitals.contracts.alerts import (
    Alert,
    AlertResolution,
    AlertStatus,
    AnomalyCause,
    AnomalyWhy,
    PlaceBatch,
    PlaceObservation,
    WarningLevel,
)
from cityvitals.contracts.base import (
    IDENTIFIER,
    MEASURED_LIMIT,
    METRIC,
    SCHEMA_VERSION,
    Contract,
    Derived,
    FiniteFloat,
    Identifier,
    MeasuredFloat,
    MetricName,
    Text,
    UtcDatetime,
    ZoneName,
)
from cityvitals.contracts.health import (
    STAGE,
    DeadLetter,
    DeviceLiveness,
    Liveness,
    OutageStatus,
    PlaceOutage,
)
from cityvitals.contracts.incidents import (
    FEEDBACK_ACTIONS,
    HEX_ID,
    Action,
    CitizenReport,
    DispatchKind,
    DispatchOrder,
    Escalation,
    Feedback,
    Incident,
    IncidentInput,
    IncidentSource,
    IncidentState,
    IncidentTransition,
    IncidentUpdate,
    ReportChannel,
    Tier,
)
from cityvitals.contracts.indicators import (
    Indicator,
    IndicatorBatch,
    IndicatorQuality,
    MembershipChange,
    WindowPartial,
)
from cityvitals.contracts.places import (
    MAX_TAGS,
    Department,
    Device,
    DeviceState,
    MetricSpec,
    Place,
    PlaceLevel,
    Profile,
    Tag,
)
from cityvitals.contracts.readings import (
    MAX_PACK,
    SNAPSHOT_REF,
    CameraEvent,
    CameraEventPayload,
    CameraEventType,
    Reading,
    ReadingBatch,
    ReadingPack,
    ReadingPayload,
)
from cityvitals.contracts.trust import trusted
from cityvitals.instants import iso

__all__ = [
    "FEEDBACK_ACTIONS",
    "HEX_ID",
    "IDENTIFIER",
    "MAX_PACK",
    "MAX_TAGS",
    "MEASURED_LIMIT",
    "METRIC",
    "SCHEMA_VERSION",
    "SNAPSHOT_REF",
    "STAGE",
    "Action",
    "Alert",
    "AlertResolution",
    "AlertStatus",
    "AnomalyCause",
    "AnomalyWhy",
    "CameraEvent",
    "CameraEventPayload",
    "CameraEventType",
    "CitizenReport",
    "Contract",
    "DeadLetter",
    "Department",
    "Derived",
    "Device",
    "DeviceLiveness",
    "DeviceState",
    "DispatchKind",
    "DispatchOrder",
    "Escalation",
    "Feedback",
    "FiniteFloat",
    "Identifier",
    "Incident",
    "IncidentInput",
    "IncidentSource",
    "IncidentState",
    "IncidentTransition",
    "IncidentUpdate",
    "Indicator",
    "IndicatorBatch",
    "IndicatorQuality",
    "Liveness",
    "MeasuredFloat",
    "MembershipChange",
    "MetricName",
    "MetricSpec",
    "OutageStatus",
    "Place",
    "PlaceBatch",
    "PlaceLevel",
    "PlaceObservation",
    "PlaceOutage",
    "Profile",
    "Reading",
    "ReadingBatch",
    "ReadingPack",
    "ReadingPayload",
    "ReportChannel",
    "Tag",
    "Text",
    "Tier",
    "UtcDatetime",
    "ValidationError",
    "WarningLevel",
    "WindowPartial",
    "ZoneName",
    "iso",
    "trusted",
]
