"""Deliveries the stream stage waits for: sent again until Kafka confirms them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError, NodeNotReadyError

from streams.delivery import confirmed, hand_over


class Producer:
    """Hands out deliveries: the first ``failing`` sends fail (as while a broker restarts)."""

    def __init__(self, failing: int, error: Exception) -> None:
        self.failing = failing
        self.error = error
        self.sends = 0

    async def send(self) -> list[Awaitable[Any]]:
        self.sends += 1
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.sends <= self.failing:
            done.set_exception(self.error)
        else:
            done.set_result("confirmed")
        ok: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ok.set_result("confirmed")
        return [ok, done]


def test_what_kafka_did_not_confirm_is_sent_again_until_it_is() -> None:
    producer = Producer(failing=2, error=NodeNotReadyError("node 111"))
    asyncio.run(confirmed(producer.send, "a group"))
    assert producer.sends == 3


def test_the_deliveries_handed_over_first_are_awaited_before_anything_is_sent_again() -> None:
    producer = Producer(failing=0, error=NodeNotReadyError("node 111"))

    async def run() -> None:
        await confirmed(producer.send, "a group", await producer.send())

    asyncio.run(run())
    assert producer.sends == 1


def test_a_record_kafka_can_never_take_is_not_sent_again() -> None:
    producer = Producer(failing=5, error=MessageSizeTooLargeError("too large"))
    with pytest.raises(MessageSizeTooLargeError):
        asyncio.run(confirmed(producer.send, "a group"))
    assert producer.sends == 1


def test_records_the_producer_could_not_take_are_handed_over_again() -> None:
    """The first hand-over itself may fail (a broker down past the producer's patience):
    nothing is lost, confirmed sends them again."""
    calls = 0
    ok = Producer(failing=0, error=NodeNotReadyError("node 111"))

    async def send() -> list[Awaitable[Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise NodeNotReadyError("node 111")
        return await ok.send()

    async def run() -> None:
        sent = await hand_over(send)
        assert sent is None
        await confirmed(send, "a group", sent)

    asyncio.run(run())
    assert calls == 2 and ok.sends == 1
