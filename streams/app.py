"""The Faust application: agents and tables around :func:`streams.pipeline.process_batch`.

Two agents, on co-partitioned topics (every producer picks partitions with
``cityvitals.topics.partition_for``), so a device's registry entry, its readings and its rule
state are always on the same worker:

- ``devices`` → the ``device_registry`` table (the slice of each device a reading needs), which
  bootstraps a new deployment; the same changes also arrive in-band on ``readings.raw``;
- ``readings.raw`` → apply in-band registry changes, enrich, run rules → ``readings`` (one
  message per input batch, same partition), ``alerts`` and ``deadletter``; rule state lives
  in the ``rule_state`` table.

Every output of an input message is confirmed by Kafka before the agent takes the next one,
and Faust commits offsets only after that (at-least-once; sinks make it effectively once).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from cityvitals.contracts import DeadLetter, Device, ReadingBatch
from cityvitals.settings import Settings
from cityvitals.topics import Topic
from rules import RuleSet
from streams.pipeline import is_newer, process_batch, registry_entry

__all__ = ["StreamMetrics", "create_app"]

log = logging.getLogger("cityvitals.streams")


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "cityvitals_streams_received_total",
            "Readings and camera events received",
            registry=registry,
        )
        self.forwarded = Counter(
            "cityvitals_streams_forwarded_total",
            "Readings and events enriched and forwarded",
            registry=registry,
        )
        self.rejected = Counter(
            "cityvitals_streams_rejected_total",
            "Inputs sent to the dead-letter topic",
            ["reason"],
            registry=registry,
        )
        self.alerts = Counter(
            "cityvitals_streams_alert_transitions_total",
            "Alert transitions emitted",
            ["status", "level"],
            registry=registry,
        )
        self.ready = Gauge(
            "cityvitals_streams_ready",
            "1 while partitions are assigned and tables recovered",
            registry=registry,
        )
        self.devices = Gauge(
            "cityvitals_streams_devices", "Devices known to this worker", registry=registry
        )


def _dead_letter(reason: str, source: str, payload: bytes) -> bytes:
    letter = DeadLetter(
        stage="streams",
        reason=reason[:2000],
        source=source,
        payload_b64=base64.b64encode(payload).decode(),
        received_at=datetime.now(UTC),
    )
    return letter.model_dump_json().encode()


def create_app(settings: Settings, rules: RuleSet, registry: CollectorRegistry) -> faust.App:
    metrics = StreamMetrics(registry)
    app = faust.App(
        settings.topic(settings.streams_app_id),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        processing_guarantee="at_least_once",
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=max(settings.kafka_session_timeout_ms / 3000, 0.5),
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=4_000_000,
        logging_config=None,
    )

    def topic(name: Topic) -> faust.TopicT:
        return app.topic(
            settings.topic(name),
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.kafka_partitions,
        )

    raw_topic, readings_topic = topic(Topic.READINGS_RAW), topic(Topic.READINGS)
    devices_topic, alerts_topic = topic(Topic.DEVICES), topic(Topic.ALERTS)
    deadletter_topic = topic(Topic.DEADLETTER)

    devices = app.Table("device_registry", default=None, partitions=settings.kafka_partitions)
    rule_state = app.Table("rule_state", default=None, partitions=settings.kafka_partitions)

    @app.on_rebalance_complete.connect
    async def _ready(*_args: Any, **_kw: Any) -> None:
        metrics.ready.set(1)

    @app.on_partitions_revoked.connect
    async def _not_ready(*_args: Any, **_kw: Any) -> None:
        metrics.ready.set(0)

    @app.agent(devices_topic)
    async def registry_feed(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            source = f"{devices_topic.get_topic_name()}[{event.message.partition}]"
            try:
                device = Device.model_validate_json(event.value)
            except ValidationError as exc:
                metrics.rejected.labels("bad_device").inc()
                await (
                    await deadletter_topic.send(value=_dead_letter(str(exc), source, event.value))
                )
                continue
            if is_newer(device, devices.get(device.device_id)):
                devices[device.device_id] = registry_entry(device)
                metrics.devices.set(len(devices))

    @app.agent(raw_topic)
    async def process(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            partition = event.message.partition
            source = f"{raw_topic.get_topic_name()}[{partition}]"
            try:
                batch = ReadingBatch.model_validate_json(event.value)
            except ValidationError as exc:
                metrics.rejected.labels("bad_batch").inc()
                await (
                    await deadletter_topic.send(value=_dead_letter(str(exc), source, event.value))
                )
                continue
            metrics.received.inc(len(batch))
            ids = {d.device_id for d in batch.devices}
            ids.update(r.device_id for r in batch.readings)
            ids.update(e.camera_id for e in batch.camera_events)
            outcome = process_batch(
                batch,
                {d: devices.get(d) for d in ids},
                {d: rule_state.get(d) for d in ids},
                rules,
                source,
                datetime.now(UTC),
            )
            pending: list[Awaitable[Any]] = []
            if len(outcome.enriched):
                pending.append(
                    await readings_topic.send(
                        value=outcome.enriched.model_dump_json().encode(), partition=partition
                    )
                )
            for alert in outcome.alerts:
                metrics.alerts.labels(alert.status.value, alert.level.value).inc()
                pending.append(
                    await alerts_topic.send(
                        key=alert.device_id.encode(),
                        value=alert.model_dump_json().encode(),
                        partition=partition,
                    )
                )
            for letter in outcome.dead_letters:
                metrics.rejected.labels("unknown_or_inactive_device").inc()
                pending.append(
                    await deadletter_topic.send(
                        key=(letter.device_id or "").encode(),
                        value=letter.model_dump_json().encode(),
                    )
                )
            for device_id, entry in outcome.changed_devices.items():
                devices[device_id] = entry
            if outcome.changed_devices:
                metrics.devices.set(len(devices))
            for device_id, states in outcome.changed_states.items():
                if states:
                    rule_state[device_id] = states
                else:
                    rule_state.pop(device_id, None)
            await asyncio.gather(*pending)
            metrics.forwarded.inc(len(outcome.enriched))

    return app
