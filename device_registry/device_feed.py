"""The registry's compacted ``devices`` topic, followed from its beginning: the latest state of
every device, then each change as the registry publishes it.

Every partition is assigned (no consumer group shares it out, no offset is committed): each
reader sees the whole fleet. :meth:`DeviceFeed.read_to_end` returns what the topic held at the
start; :meth:`DeviceFeed.poll` the changes since, without waiting.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from pydantic import ValidationError

from cityvitals import kafka
from cityvitals.contracts import Device
from cityvitals.settings import Settings
from cityvitals.topics import Topic

__all__ = ["DeviceFeed"]

log = logging.getLogger("cityvitals.devices")
BATCH = 1000


class DeviceFeed:
    def __init__(self, settings: Settings, group: str) -> None:
        self.topic = settings.topic(Topic.DEVICES)
        self.consumer: Consumer = kafka.consumer(settings, group, **{"enable.partition.eof": True})
        self._partitions = kafka.partition_count(self.consumer, self.topic)
        self.consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self._partitions)]
        )
        self.rejected = 0

    def read_to_end(self, stop: threading.Event) -> list[Device]:
        """Every device change on the topic up to its end now, in order per device."""
        devices: list[Device] = []
        ended: set[int] = set()
        while len(ended) < self._partitions and not stop.is_set():
            for msg in self.consumer.consume(BATCH, timeout=0.5):
                if _at_end(msg):
                    ended.add(msg.partition() or 0)
                else:
                    devices.extend(self._decode(msg))
        return devices

    def poll(self) -> list[Device]:
        """The changes published since the last call (none waited for)."""
        return [d for msg in self.consumer.consume(BATCH, timeout=0) for d in self._decode(msg)]

    def _decode(self, msg: Message) -> list[Device]:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: %s", self.topic, error)
            return []
        try:
            return [Device.model_validate_json(msg.value() or b"")]
        except ValidationError as exc:
            self.rejected += 1
            log.warning("%s@%s is not a Device: %s", self.topic, msg.offset(), exc)
            return []

    def close(self) -> None:
        self.consumer.close()


def _at_end(msg: Message) -> bool:
    error = msg.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF
