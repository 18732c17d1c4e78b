"""Faust's Kafka transport with a fetch wait of our choosing and a seek that cannot lose
messages.

Faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500``, fixed. A broker that
holds a fetch finding no data for the whole wait (tansu does) then delays a message that
arrives meanwhile by up to 1.5 s at each hop. This transport is Faust's own with the wait set
to :attr:`Transport.fetch_wait_ms` (``Settings.fetch_wait_ms``).

When a worker has recovered its tables, Faust resumes the input partitions, seeks them back to
the committed offsets and then resumes flow control, which empties every stream's buffer
(``FlowControlEvent.resume`` clears its queues). Faust leaves the consumer's flow running
through all of it, so what the fetcher hands to the streams between the seek and that clearing
is thrown away, while Faust has already counted those offsets as read: they are never fetched
again, and the next commit passes them (faust-streaming issue #596). A worker restarted with
a backlog lost about a second of readings that way. Here a seek first stops the flow and waits
until the fetch loop has let go of the records it fetched, so nothing reaches a stream between
the seek and the clearing; the flow starts again when Faust resumes the consumer, after the
clearing, from the committed offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from faust.transport.drivers import aiokafka as driver

__all__ = ["Transport"]


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: driver.Transport) -> Any:
        assert isinstance(transport, Transport)
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = transport.fetch_wait_ms  # read by aiokafka at start
        return consumer


class _Consumer(driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.released = asyncio.Event()
        """Set while the fetch loop holds no fetched records it has yet to hand on."""
        self.released.set()

    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """Seek every partition back to its committed offset with the flow stopped: the
        caller resumes it (``resume_flow``) once the streams' buffers are cleared."""
        self.stop_flow()
        await self.released.wait()  # its last record handed on, its read offset recorded
        await super().perform_seek()

    async def _wait_next_records(self, timeout: float) -> Any:
        fetched = await super()._wait_next_records(timeout)
        records, _active = fetched
        if records and self.flow_active:  # getmany hands them on one by one
            self.released.clear()
        return fetched

    async def getmany(self, timeout: float) -> AsyncIterator[Any]:
        try:
            async for item in super().getmany(timeout):
                yield item
        finally:
            self.released.set()


class Transport(driver.Transport):
    Consumer = _Consumer

    def __init__(self, *args: Any, fetch_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_wait_ms = fetch_wait_ms
        """Longest a fetch that finds nothing waits at the broker (``fetch_max_wait_ms``)."""
