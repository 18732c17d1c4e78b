"""The registry pool lets go of its connections and producer when closed."""

from __future__ import annotations

import gc
import weakref
from typing import Any, cast

import pytest

from device_registry.api.pool import RegistryPool
from device_registry.registry import Registry


class _Conn:
    closed = broken = False

    def close(self) -> None:
        self.closed = True


class _Producer:
    flushed = 0

    def flush(self, timeout: float) -> int:
        self.flushed += 1
        return 0


class _Registry:
    def __init__(self, producer: _Producer) -> None:
        self.conn = _Conn()
        self.producer = producer


def _pool(producer: _Producer) -> tuple[RegistryPool, list[_Registry]]:
    """Three registries sharing ``producer``, and a reconnect whose closure holds it too,
    as :meth:`RegistryPool.open` builds them."""
    registries = [_Registry(producer) for _ in range(3)]
    spare = _Registry(producer)
    pool = RegistryPool(cast(list[Registry], registries), reconnect=lambda _old: cast(Any, spare))
    return pool, registries


def test_a_closed_pool_flushes_its_producer_once_and_keeps_no_reference_to_it() -> None:
    producer = _Producer()
    pool, registries = _pool(producer)
    gone = weakref.ref(producer)
    pool.close()
    assert producer.flushed == 1
    assert all(r.conn.closed for r in registries)
    del producer, registries
    gc.collect()
    assert gone() is None, "the closed pool still holds the producer"
    with pytest.raises(RuntimeError, match="closed"), pool.checkout():
        pass
