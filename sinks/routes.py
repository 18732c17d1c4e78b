"""The sink routing table: which topic's messages, decoded how, go to which sink.

A decoder takes one Kafka message (:class:`Envelope`) and returns the items for its sink, or
raises pydantic's ``ValidationError`` (the message is then dead-lettered, and none of its items
is written). A topic may feed several sinks (one line each); a message is decoded for all of
them before any item is kept. Adding a sink is one class (:mod:`sinks.postgres`,
:mod:`sinks.incident_sinks`) and one line in
:data:`ROUTES`.

>>> sorted({route.topic.value for route in ROUTES})
['alerts', 'deadletter', 'dispatch', 'escalations', 'incidents', 'indicators', 'readings', 'reports']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from cityvitals.contracts import (
    Alert,
    CameraEvent,
    CitizenReport,
    DeadLetter,
    DispatchOrder,
    Escalation,
    IncidentUpdate,
    Indicator,
    Reading,
    ReadingBatch,
)
from cityvitals.topics import Topic
from sinks.base import Connection, Sink
from sinks.incident_sinks import DispatchSink, EscalationSink, IncidentSink, ReportSink
from sinks.postgres import (
    AlertSink,
    CameraEventSink,
    DeadLetterSink,
    IndicatorSink,
    KafkaPlaced,
    ReadingSink,
)

__all__ = ["ROUTES", "Envelope", "Route"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One Kafka message as a decoder sees it: its bytes and where it sits."""

    topic: str
    partition: int
    offset: int
    value: bytes


class Route(NamedTuple):
    topic: Topic
    decode: Callable[[Envelope], Sequence[Any]]
    sink: Callable[[Connection], Sink[Any]]


@lru_cache(maxsize=1)
def _reading_batch(value: bytes) -> ReadingBatch:
    # Two routes read each message of ``readings``: it is parsed once.
    return ReadingBatch.model_validate_json(value)


def decode_readings(msg: Envelope) -> tuple[Reading, ...]:
    return _reading_batch(msg.value).readings


def decode_camera_events(msg: Envelope) -> tuple[CameraEvent, ...]:
    return _reading_batch(msg.value).camera_events


def decode_alert(msg: Envelope) -> list[Alert]:
    return [Alert.model_validate_json(msg.value)]


def decode_indicator(msg: Envelope) -> list[Indicator]:
    return [Indicator.model_validate_json(msg.value)]


def decode_dead_letter(msg: Envelope) -> list[KafkaPlaced]:
    return [(msg.topic, msg.partition, msg.offset, DeadLetter.model_validate_json(msg.value))]


def decode_incident(msg: Envelope) -> list[IncidentUpdate]:
    return [IncidentUpdate.model_validate_json(msg.value)]


def decode_dispatch(msg: Envelope) -> list[DispatchOrder]:
    return [DispatchOrder.model_validate_json(msg.value)]


def decode_escalation(msg: Envelope) -> list[Escalation]:
    return [Escalation.model_validate_json(msg.value)]


def decode_report(msg: Envelope) -> list[CitizenReport]:
    return [CitizenReport.model_validate_json(msg.value)]


ROUTES: tuple[Route, ...] = (
    Route(Topic.READINGS, decode_readings, ReadingSink),
    Route(Topic.READINGS, decode_camera_events, CameraEventSink),
    Route(Topic.ALERTS, decode_alert, AlertSink),
    Route(Topic.INDICATORS, decode_indicator, IndicatorSink),
    Route(Topic.DEADLETTER, decode_dead_letter, DeadLetterSink),
    Route(Topic.INCIDENTS, decode_incident, IncidentSink),
    Route(Topic.DISPATCH, decode_dispatch, DispatchSink),
    Route(Topic.ESCALATIONS, decode_escalation, EscalationSink),
    Route(Topic.REPORTS, decode_report, ReportSink),
)
