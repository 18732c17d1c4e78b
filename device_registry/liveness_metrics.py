"""The liveness service's metrics: the stage toolkit's per-hop counters, plus the fleet's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from cityvitals.stage import StageMetrics

__all__ = ["LivenessMetrics"]


class LivenessMetrics(StageMetrics):
    """The stage's counters (Kafka messages of ``readings``; one that does not decode is
    refused under ``readings``, and the sinks dead-letter it), plus the fleet's gauges and
    what the service published, skipped and activated."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("liveness", registry, "Kafka messages")
        self.devices = self.gauge("devices", "Watched devices by status", "status")
        self.outages = self.gauge("outages_open", "Place outages now open")
        self.published = self.counter("published_total", "Changes published", "topic", "status")
        self.skipped = self.counter(
            "checks_skipped_total",
            "Checks not run because the consumer was behind or lacked partitions",
        )
        self.stalled = self.gauge(
            "upstream_stalled",
            "1 while the stream stage has stalled on a partition of readings.raw (committed "
            "nothing there for liveness_stall_s while messages wait), or works off its backlog",
        )
        self.intake_stalled = self.gauge(
            "intake_stalled",
            "1 while the gateway's heartbeats have stopped reaching a partition of readings "
            "(none for liveness_stall_s: the gateway hung or cut off from the broker), or came "
            "back less than liveness_stall_s ago",
        )
        self.held = self.gauge(
            "devices_held",
            "Watched devices not judged: their readings wait in a stalled partition, or their "
            "partition has no heartbeat of the gateway",
        )
        self.activated = self.counter(
            "activated_total", "Provisioned devices made active by their first valid reading"
        )
