"""The registry's change feed: every device change, to the compacted ``devices`` topic (keyed by
device id: the latest state of every device) and, in-band, to the device's partition of
``readings.raw``, so the stream sees a device's change before its next reading.

A published device carries its profile's facts (valid ranges, expected interval): the
stream and the liveness service need no query of their own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Producer

from cityvitals.contracts import Device, ReadingBatch
from cityvitals.kafka import KafkaUnavailable, partition_count
from cityvitals.settings import Settings
from cityvitals.topics import Topic, partition_for

__all__ = ["IN_BAND_BATCH", "ChangePublisher"]

"""Per profile id, the fields a device of that profile is published with."""
IN_BAND_BATCH = 1000
"""Devices per in-band batch on ``readings.raw``."""


class ChangePublisher:
    """Publishes device changes and waits for Kafka to confirm every one (or raises)."""

    def __init__(self, settings: Settings, producer: Producer) -> None:
        self.settings = settings
        self.producer = producer
        self.topic = settings.topic(Topic.DEVICES)
        self.raw = settings.topic(Topic.READINGS_RAW)

    def publish(self, devices: Iterable[Device]) -> int:
        """Send each device (as published: with its profile's facts); returns how many were
        sent."""
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        parts = partition_count(self.producer, self.raw)
        in_band: dict[int, list[Device]] = defaultdict(list)
        count = 0
        for device in devices:
            partition = partition_for(device.device_id, parts)
            self.producer.produce(
                self.topic,
                device.model_dump_json().encode(),
                key=device.device_id.encode(),
                partition=partition,
                on_delivery=delivered,
            )
            in_band[partition].append(device)
            count += 1
            if count % 10_000 == 0:
                self.producer.poll(0)
        for partition, group in in_band.items():
            for start in range(0, len(group), IN_BAND_BATCH):
                batch = ReadingBatch(devices=tuple(group[start : start + IN_BAND_BATCH]))
                self.producer.produce(
                    self.raw,
                    batch.model_dump_json().encode(),
                    partition=partition,
                    on_delivery=delivered,
                )
        left = self.producer.flush(30)
        if failures or left:
            raise KafkaUnavailable(
                self.settings.kafka_bootstrap,
                f"{left + len(failures)} device updates unconfirmed: {failures[:3]}",
            )
        return count
