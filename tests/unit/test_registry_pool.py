"""The registry pool lets go of its connections and producer when closed."""

from __future__ import annotations

import gc
import weakref
from typing import Any, cast

import pytest

from device_registry.api.pool import PoolClosed, RegistryPool
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
    with pytest.raises(PoolClosed, match="closed"), pool.checkout():
        pass


def test_a_registry_handed_back_after_close_is_closed_not_kept() -> None:
    producer = _Producer()
    pool, _registries = _pool(producer)
    gone = weakref.ref(producer)
    del _registries
    with pool.checkout() as registry:  # a request that outlives the server's shutdown
        pool.close()
        lent = cast(_Registry, registry)
        lent.conn.closed = False  # as if still open when handed back
    assert lent.conn.closed
    del producer, lent, registry
    gc.collect()
    assert gone() is None, "the registry handed back went into the closed pool"


def test_a_reconnect_finished_after_close_closes_its_new_connection() -> None:
    producer = _Producer()
    broken = _Registry(producer)
    broken.conn.broken = True
    built: list[_Registry] = []

    def reconnect(_old: Registry) -> Registry:
        pool.close()  # the server shut down while the new connection was being made
        built.append(_Registry(producer))
        return cast(Registry, built[-1])

    pool = RegistryPool(cast(list[Registry], [broken]), reconnect=reconnect)
    with pytest.raises(PoolClosed), pool.checkout():
        pass
    assert built[0].conn.closed
