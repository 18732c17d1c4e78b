"""Kafka → PostgreSQL: the sinks (``write(batch)`` / ``close()``), their routing table and the
sink service; the storage upkeep is in :mod:`sinks.maintenance`. Kafka → webhooks: the
notifier (:mod:`sinks.notifier`, :mod:`sinks.webhook`)."""

from sinks.base import Sink, SinkUnavailable
from sinks.notifier import Notifier
from sinks.postgres import AlertSink, CameraEventSink, DeadLetterSink, IndicatorSink, ReadingSink
from sinks.routes import ROUTES, Route
from sinks.runner import SinkRunner
from sinks.webhook import verify_signature

__all__ = [
    "ROUTES",
    "AlertSink",
    "CameraEventSink",
    "DeadLetterSink",
    "IndicatorSink",
    "Notifier",
    "ReadingSink",
    "Route",
    "Sink",
    "SinkRunner",
    "SinkUnavailable",
    "verify_signature",
]
