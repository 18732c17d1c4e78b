"""The registry pool: each request borrows one registry (one database connection); writers
also take the pool's one write turn, so changes reach Kafka and the broker in commit order."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from cityvitals import db, kafka
from cityvitals.settings import Settings
from device_registry.credentials import local_broker
from device_registry.registry import Registry

__all__ = ["POOL_SIZE", "PoolClosed", "RegistryBusy", "RegistryPool"]

POOL_SIZE = 4


class RegistryBusy(RuntimeError):
    """No registry (or no write turn) came free in time; the caller may retry."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"the registry is busy (waited {waited_s:.0f} s); retry shortly")
        self.waited_s = waited_s


class PoolClosed(RuntimeError):
    """The pool was closed (the server is shutting down): it lends nothing."""

    def __init__(self) -> None:
        super().__init__("the registry pool is closed")


class RegistryPool:
    """A fixed set of registries, each lent to one request at a time.

    A registry whose connection broke is rebuilt (``reconnect``) when it is next lent.
    Writers also take the pool's one write turn, so changes reach Kafka and the broker in
    the order they were committed.
    """

    def __init__(
        self,
        registries: Iterable[Registry],
        reconnect: Callable[[Registry], Registry] | None = None,
        wait_s: float = 30.0,
    ) -> None:
        self._all = list(registries)
        if not self._all:
            raise ValueError("a registry pool needs at least one registry")
        self._idle: queue.Queue[Registry] = queue.Queue()
        for registry in self._all:
            self._idle.put(registry)
        self._reconnect = reconnect
        self._write_turn = threading.Lock()
        self._lock = threading.Lock()
        """Guards ``_all``, ``_reconnect`` and ``_closed`` against :meth:`close`."""
        self._closed = False
        self.wait_s = wait_s

    @classmethod
    def open(cls, settings: Settings, size: int = POOL_SIZE) -> RegistryPool:
        """``size`` registries on their own connections and one shared (thread-safe) producer."""
        producer = kafka.producer(settings)
        broker = local_broker(settings.state_dir)

        def build() -> Registry:
            return Registry(settings, db.connect(settings), producer, broker)

        return cls([build() for _ in range(size)], reconnect=lambda _old: build())

    @contextmanager
    def checkout(self, write: bool = False) -> Iterator[Registry]:
        """A registry lent for the block. A registry handed back after :meth:`close` (its
        request outlived the server's shutdown) is closed, not kept."""
        if self._closed:
            raise PoolClosed()
        if write and not self._write_turn.acquire(timeout=self.wait_s):
            raise RegistryBusy(self.wait_s)
        try:
            try:
                registry = self._idle.get(timeout=self.wait_s)
            except queue.Empty:
                raise RegistryBusy(self.wait_s) from None
            try:
                reconnect = self._reconnect
                if (registry.conn.closed or registry.conn.broken) and reconnect:
                    registry = self._replace(registry, reconnect(registry))
                yield registry
            finally:
                if self._closed:
                    registry.conn.close()
                else:
                    self._idle.put(registry)
        finally:
            if write:
                self._write_turn.release()

    def _replace(self, old: Registry, new: Registry) -> Registry:
        with self._lock:
            if self._closed:  # closed while the new one was being built
                new.conn.close()
                raise PoolClosed()
            self._all[self._all.index(old)] = new
        return new

    def close(self) -> None:
        """Close every connection, flush the producer, and let go of both: librdkafka's
        threads and sockets end now, not whenever the pool itself is collected (an API app
        built in a test kept a closed pool's producer alive, reconnecting to a stopped
        broker, until the interpreter exited). A closed pool lends nothing."""
        with self._lock:
            self._closed = True
            registries, self._all, self._reconnect = self._all, [], None
        while not self._idle.empty():
            self._idle.get_nowait()
        for registry in registries:
            registry.conn.close()
        for producer in {id(r.producer): r.producer for r in registries}.values():
            producer.flush(30)
