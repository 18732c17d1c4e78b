"""Kafka → PostgreSQL: the sinks (``write(batch)`` / ``close()``), their routing table and the
sink service; the storage upkeep is in :mod:`sinks.maintenance`; the reads of the incident
tables (:mod:`sinks.incidents`) and of the alert tables (:mod:`sinks.alerts`) for the CLI and
the API, and the console's (:mod:`sinks.readings`: an incident's readings, refused feedback).
Kafka → webhooks: the notifier
(:mod:`sinks.notifier`, :mod:`sinks.webhook`)."""

from sinks.alerts import (
    AlertDetail,
    AlertFilter,
    AlertRow,
    UnknownAlert,
    alert_detail,
    alert_rows,
    list_alerts,
)
from sinks.base import Sink, SinkUnavailable
from sinks.incident_sinks import DispatchSink, EscalationSink, IncidentSink, ReportSink
from sinks.incidents import (
    CLOSURE_TARGET,
    IncidentDetail,
    IncidentFilter,
    OpenWork,
    Performance,
    UnknownIncident,
    get_incident,
    incident_detail,
    last_reopened,
    list_incidents,
    open_work,
    performance,
    superseded_dispatch,
)
from sinks.notifier import Notifier
from sinks.open311 import ServiceRequest, ServiceType, open311_requests, open311_services
from sinks.postgres import AlertSink, CameraEventSink, DeadLetterSink, IndicatorSink, ReadingSink
from sinks.readings import (
    ACTIVITY_LOOKBACK,
    AROUND,
    CameraSeen,
    DeviceActivity,
    OutOfRange,
    Refusal,
    Refused,
    SeriesPoint,
    device_activity,
    outside_range,
    readings_around,
    recent_metrics,
    refusals,
)
from sinks.routes import ROUTES, Route
from sinks.runner import SinkRunner
from sinks.webhook import verify_signature

__all__ = [
    "ACTIVITY_LOOKBACK",
    "AROUND",
    "CLOSURE_TARGET",
    "ROUTES",
    "AlertDetail",
    "AlertFilter",
    "AlertRow",
    "AlertSink",
    "CameraEventSink",
    "CameraSeen",
    "DeadLetterSink",
    "DeviceActivity",
    "DispatchSink",
    "EscalationSink",
    "IncidentDetail",
    "IncidentFilter",
    "IncidentSink",
    "IndicatorSink",
    "Notifier",
    "OpenWork",
    "OutOfRange",
    "Performance",
    "ReadingSink",
    "Refusal",
    "Refused",
    "ReportSink",
    "Route",
    "SeriesPoint",
    "ServiceRequest",
    "ServiceType",
    "Sink",
    "SinkRunner",
    "SinkUnavailable",
    "UnknownAlert",
    "UnknownIncident",
    "alert_detail",
    "alert_rows",
    "device_activity",
    "get_incident",
    "incident_detail",
    "last_reopened",
    "list_alerts",
    "list_incidents",
    "open311_requests",
    "open311_services",
    "open_work",
    "outside_range",
    "performance",
    "readings_around",
    "recent_metrics",
    "refusals",
    "superseded_dispatch",
    "verify_signature",
]
