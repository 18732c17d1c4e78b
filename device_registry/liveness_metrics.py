"""The liveness service's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["LivenessMetrics"]


class LivenessMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ready = Gauge(
            "cityvitals_liveness_ready",
            "1 once partitions are assigned and the state is loaded",
            registry=registry,
        )
        self.devices = Gauge(
            "cityvitals_liveness_devices",
            "Watched devices by status",
            ["status"],
            registry=registry,
        )
        self.outages = Gauge(
            "cityvitals_liveness_outages_open", "Place outages now open", registry=registry
        )
        self.messages = Counter(
            "cityvitals_liveness_messages_total", "Kafka messages consumed", registry=registry
        )
        self.rejected = Counter(
            "cityvitals_liveness_rejected_total",
            "Messages that did not decode (the sinks dead-letter them)",
            registry=registry,
        )
        self.published = Counter(
            "cityvitals_liveness_published_total",
            "Changes published",
            ["topic", "status"],
            registry=registry,
        )
        self.skipped = Counter(
            "cityvitals_liveness_checks_skipped_total",
            "Checks not run because the consumer was behind or lacked partitions",
            registry=registry,
        )
        self.activated = Counter(
            "cityvitals_liveness_activated_total",
            "Provisioned devices made active by their first valid reading",
            registry=registry,
        )
