"""Kafka deliveries the stage waits for: confirmed, or sent again until they are.

An agent that ends on a failed delivery loses what its input made: Faust acknowledges the
input anyway (closing a group's generator acknowledges its events), and the offset committed
past it is never read again. So the stage waits for every delivery with :func:`confirmed`,
which sends the records again while Kafka cannot take them (a broker restarting, a leader
moving, a request timed out); a record sent twice is stored once downstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from aiokafka.errors import KafkaError, KafkaTimeoutError
from pydantic import BaseModel

__all__ = ["RESEND_MAX_S", "Sending", "confirmed", "hand_over", "resendable", "send_one"]

log = logging.getLogger("cityvitals.streams")

Sending = Callable[[], Awaitable[list[Awaitable[Any]]]]
"""Hands records to the producer; returns their deliveries."""

RESEND_MAX_S = 5.0
"""The longest wait before outputs Kafka did not confirm are sent again."""


def resendable(exc: BaseException) -> bool:
    """Whether outputs Kafka did not confirm may be sent again: a retriable error (no
    leader, a lost connection) or a time-out (a batch that waited out a restarting broker);
    not a record too large, or a producer closed.

    >>> from aiokafka.errors import MessageSizeTooLargeError, NotLeaderForPartitionError, ProducerClosed
    >>> resendable(KafkaTimeoutError()), resendable(NotLeaderForPartitionError())
    (True, True)
    >>> resendable(MessageSizeTooLargeError()), resendable(ProducerClosed())
    (False, False)
    """
    if isinstance(exc, KafkaTimeoutError | TimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


async def confirmed(send: Sending, what: str, sent: Sequence[Awaitable[Any]] | None = None) -> None:
    """Wait until Kafka confirms the deliveries ``sent`` (None: ``send()`` first); when one
    fails (a broker restarting, a request timed out), send every record again (``send``),
    after a wait that doubles up to :data:`RESEND_MAX_S`, until Kafka confirms them all.
    The input they came from is acknowledged only after: had the failure ended the agent,
    Faust would have acknowledged that input anyway, and what it made would be lost."""
    attempt = 0
    pending = sent
    while True:
        try:
            if pending is None:
                pending = await send()
            await asyncio.gather(*pending)
            return
        except (KafkaError, TimeoutError) as exc:
            if not resendable(exc):
                raise
            attempt += 1
            wait = min(0.1 * 2**attempt, RESEND_MAX_S)
            log.warning("%s: Kafka did not confirm (%r); sent again in %.1f s", what, exc, wait)
            await asyncio.sleep(wait)
            pending = None


async def hand_over(send: Sending) -> list[Awaitable[Any]] | None:
    """``send()``: the deliveries of records handed to the producer, or None when Kafka could
    not take them yet (a resendable error): :func:`confirmed` then sends them again."""
    try:
        return await send()
    except (KafkaError, TimeoutError) as exc:
        if not resendable(exc):
            raise
        log.warning("records not handed to the producer (%r): sent again", exc)
        return None


async def send_one(
    topic: faust.TopicT, message: BaseModel, partition: int | None = None
) -> list[Awaitable[Any]]:
    """One message, as JSON, handed to the producer (a :data:`Sending` once its arguments are
    bound); its delivery."""
    return [await topic.send(value=message.model_dump_json().encode(), partition=partition)]
