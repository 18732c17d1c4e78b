"""Faust's Kafka transport with a short fetch wait.

Faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500``, fixed. A broker that
holds a fetch finding no data for the whole wait (tansu does) then delays a message that
arrives meanwhile by up to 1.5 s at each hop. This transport is Faust's own with the wait set
to :data:`FETCH_MAX_WAIT_MS`.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as driver

__all__ = ["FETCH_MAX_WAIT_MS", "Transport"]

FETCH_MAX_WAIT_MS = 20
"""Longest a fetch that finds nothing waits at the broker."""


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by aiokafka at start
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = _Consumer
