"""Kafka → PostgreSQL batch writers (``write_batch(items)`` / ``close()``) and the sink service."""

from sinks.postgres import (
    AlertSink,
    CameraEventSink,
    DeadLetterSink,
    IndicatorSink,
    ReadingSink,
    Sink,
    SinkUnavailable,
)
from sinks.runner import SinkRunner

__all__ = [
    "AlertSink",
    "CameraEventSink",
    "DeadLetterSink",
    "IndicatorSink",
    "ReadingSink",
    "Sink",
    "SinkRunner",
    "SinkUnavailable",
]
