"""Kafka → PostgreSQL: the sinks (``write(batch)`` / ``close()``), their routing table and the
sink service; the storage upkeep is in :mod:`sinks.maintenance`."""

from sinks.base import Sink, SinkUnavailable
from sinks.postgres import AlertSink, CameraEventSink, DeadLetterSink, IndicatorSink, ReadingSink
from sinks.routes import ROUTES, Route
from sinks.runner import SinkRunner

__all__ = [
    "ROUTES",
    "AlertSink",
    "CameraEventSink",
    "DeadLetterSink",
    "IndicatorSink",
    "ReadingSink",
    "Route",
    "Sink",
    "SinkRunner",
    "SinkUnavailable",
]
