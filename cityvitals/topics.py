"""Kafka topic names, their configuration, and the partitioner every stage shares.

All producers pick the partition of a device's messages with :func:`partition_for`, so a
device's raw readings, its registry entry and its rule state all live on the same partition
number and so on the same stream worker.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from cityvitals.data_classes import DataClass, capped

__all__ = ["TOPICS", "Topic", "TopicSpec", "partition_for"]


class Topic(StrEnum):
    """Logical topic names; :meth:`Settings.topic` applies the deployment's prefix."""

    READINGS_RAW = "readings.raw"
    READINGS = "readings"
    DEVICES = "devices"
    ALERTS = "alerts"
    DEADLETTER = "deadletter"
    LIVENESS = "liveness"
    OUTAGES = "outages"
    PLACE_OBSERVATIONS = "observations.places"
    INDICATOR_PARTIALS = "indicators.partials"
    INDICATORS = "indicators"
    INCIDENT_INPUTS = "incidents.inputs"
    INCIDENTS = "incidents"
    DISPATCH = "dispatch"
    DISPATCH_FEEDBACK = "dispatch.feedback"
    ESCALATIONS = "escalations"
    REPORTS = "reports"


@dataclass(frozen=True)
class TopicSpec:
    topic: Topic
    compacted: bool
    retention_ms: int
    description: str
    data_class: DataClass
    """What kind of data it holds (docs/privacy.md); its retention caps ``retention_ms``."""
    partitions: int | None = None
    """A fixed partition count (a stage that must see every message in order); else the
    deployment's ``kafka_partitions``."""

    def config(self, cap: timedelta | None = None) -> dict[str, str]:
        """The topic's configuration at creation; ``cap``: its data class's retention, which
        shortens a longer ``retention_ms`` (a compacted topic keeps each key's latest value).

        >>> spec = TopicSpec(Topic.REPORTS, False, 90 * DAY_MS, "", DataClass.CITIZEN)
        >>> spec.config(timedelta(days=30))["retention.ms"] == str(30 * DAY_MS)
        True
        """
        retention_ms = self.retention_ms
        if cap is not None and not self.compacted:
            own = None if retention_ms < 0 else timedelta(milliseconds=retention_ms)
            kept = capped(own, cap)
            retention_ms = -1 if kept is None else int(kept.total_seconds() * 1000)
        # retention.bytes is given explicitly: some brokers report only what was set at creation.
        return {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(retention_ms),
            "retention.bytes": "-1",
        }


DAY_MS = 24 * 3600 * 1000

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        Topic.READINGS_RAW,
        False,
        3 * DAY_MS,
        "ReadingBatch as forwarded by the gateway, one message per partition group",
        DataClass.TELEMETRY,
    ),
    TopicSpec(
        Topic.READINGS,
        False,
        7 * DAY_MS,
        "ReadingBatch validated and enriched with the device's type and place",
        DataClass.TELEMETRY,
    ),
    TopicSpec(
        Topic.DEVICES,
        True,
        -1,
        "Device, keyed by device id; the registry's change feed",
        DataClass.OPERATIONAL,
    ),
    TopicSpec(
        Topic.ALERTS,
        False,
        30 * DAY_MS,
        "Alert transitions, keyed by device id (a composite rule's: by place id)",
        DataClass.OPERATIONAL,
    ),
    TopicSpec(
        Topic.DEADLETTER,
        False,
        30 * DAY_MS,
        "DeadLetter: refused inputs with reasons",
        DataClass.DIAGNOSTIC,
    ),
    TopicSpec(
        Topic.LIVENESS,
        False,
        30 * DAY_MS,
        "DeviceLiveness changes, keyed by device id",
        DataClass.OPERATIONAL,
    ),
    TopicSpec(
        Topic.OUTAGES,
        False,
        30 * DAY_MS,
        "PlaceOutage: a place whose devices went silent",
        DataClass.OPERATIONAL,
    ),
    TopicSpec(
        Topic.PLACE_OBSERVATIONS,
        False,
        1 * DAY_MS,
        "PlaceBatch: values for composite rules, partitioned by the rule's place (internal)",
        DataClass.TELEMETRY,
    ),
    TopicSpec(
        Topic.INDICATOR_PARTIALS,
        False,
        1 * DAY_MS,
        "IndicatorBatch: window partials and expected devices, partitioned by place (internal)",
        DataClass.TELEMETRY,
    ),
    TopicSpec(
        Topic.INDICATORS,
        False,
        30 * DAY_MS,
        "Indicator: a place's vital sign over one window, with its coverage, keyed by place id",
        DataClass.OPERATIONAL,
    ),
    TopicSpec(
        Topic.INCIDENT_INPUTS,
        False,
        1 * DAY_MS,
        "IncidentInput: alerts, outages, reports, feedback and ticks for the incident stage "
        "(internal, one partition)",
        DataClass.CITIZEN,  # among its inputs are citizen reports: the strictest class held
        partitions=1,
    ),
    TopicSpec(
        Topic.INCIDENTS,
        False,
        90 * DAY_MS,
        "IncidentUpdate: an incident after each step, and the step; keyed by incident id",
        DataClass.OPERATIONAL,
    ),
    TopicSpec(
        Topic.DISPATCH,
        False,
        90 * DAY_MS,
        "DispatchOrder: an incident (or a digest of many) sent to a department at a tier",
        DataClass.OPERATIONAL,
    ),
    TopicSpec(
        Topic.DISPATCH_FEEDBACK,
        False,
        90 * DAY_MS,
        "Feedback: departments' answers and duty officers' actions on incidents",
        DataClass.OPERATIONAL,
    ),
    TopicSpec(
        Topic.ESCALATIONS,
        False,
        90 * DAY_MS,
        "Escalation: a tier ran out of time to accept or handle an incident",
        DataClass.OPERATIONAL,
    ),
    TopicSpec(
        Topic.REPORTS,
        False,
        90 * DAY_MS,
        "CitizenReport: hotline and photo reports joining the incidents",
        DataClass.CITIZEN,
    ),
)


def partition_for(key: str, partitions: int) -> int:
    """The partition of a device id: CRC-32 of its UTF-8 bytes modulo the partition count.

    >>> partition_for("aq-001", 4) == partition_for("aq-001", 4)
    True
    """
    return zlib.crc32(key.encode()) % partitions
