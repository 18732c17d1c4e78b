"""The stage toolkit: what every consumer loop (ingest, streams, sinks, liveness) shares.

- :class:`StageMetrics`: per-hop counters named alike in every stage, which reconcile:
  ``cityvitals_<stage>_received_total`` = ``cityvitals_<stage>_forwarded_total`` +
  ``cityvitals_<stage>_rejected_total`` (summed over its label: what went to ``deadletter``),
  once nothing is in flight; and ``cityvitals_<stage>_ready``.
- :func:`dead_letter`: the one way to build a :class:`DeadLetter` (stage, reason, original
  bytes, where it came from).
- :class:`Transient` and :func:`retry`: a fault worth waiting out (the database or Kafka did not
  answer), carrying how long to wait; ``retry`` calls again until it succeeds or the stage stops.
- :func:`utc_now`, :func:`as_utc`, :func:`kafka_source`: the UTC and position helpers.

>>> from prometheus_client import CollectorRegistry
>>> m = StageMetrics("demo", CollectorRegistry(), "Messages")
>>> m.received.inc(3); m.forwarded.inc(2); m.refuse("payload")
>>> m.reconciles()
True
>>> letter = dead_letter("demo", "x: missing", b"{}", kafka_source("readings", 0, 7), cause="x")
>>> letter.source, letter.cause
('readings[0]@7', 'x')
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cityvitals.contracts import DeadLetter
from cityvitals.contracts.health import without_nul

__all__ = [
    "PAYLOAD_KEPT",
    "REASON_MAX",
    "SOURCE_MAX",
    "STARTED",
    "StageMetrics",
    "Transient",
    "as_utc",
    "dead_letter",
    "kafka_source",
    "mark_started",
    "retry",
    "utc_now",
]

log = logging.getLogger("cityvitals.stage")

REASON_MAX = 2000
"""A dead letter's reason is cut to this many characters (the contract's limit)."""

PAYLOAD_KEPT = 256 * 1024
"""Bytes of a refused input a dead letter keeps: any payload a device may send (64 KB) whole,
and every dead letter far under the 4 MB Kafka takes here. A longer input keeps its start,
and the reason says how long it was; kept whole, a payload of a few megabytes made a dead
letter Kafka refused, and the stage stopped on it at every start."""

NO_VALUE = "the message has no value (a tombstone: a key and no value)"
"""The reason a stage refuses a Kafka record without a value: no contract's JSON."""

CAUSE_MAX = 100
"""A dead letter's cause is cut to this many characters (the contract's limit)."""

SOURCE_MAX = 500
"""A dead letter's source is cut to this many characters (the contract's limit): an MQTT topic
may be far longer, and its dead letter must still be kept."""

T = TypeVar("T")

STARTED = "cityvitals_started_seconds"
"""The gauge that says when a process's counters started (Unix seconds, to the microsecond).
The audit counts the database from it after a restart, and the stream worker counts the
readings received before it as backlog: both must read the same instant, taken after the
process it replaced was gone. ``process_start_time_seconds`` is not that instant: Linux gives
the boot time in whole seconds, so it may fall up to a second early, before a crashed
worker's last writes (the fault test's audit then found 7 stored that the new worker had not
forwarded)."""


def mark_started(registry: CollectorRegistry) -> None:
    """Set :data:`STARTED` in ``registry`` to now.

    >>> r = CollectorRegistry()
    >>> mark_started(r)
    >>> r.get_sample_value(STARTED) > 1.7e9
    True
    """
    gauge = Gauge(STARTED, "When this process's counters started, Unix seconds", registry=registry)
    gauge.set_to_current_time()


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A timestamp in UTC; a naive one is taken to be UTC already.

    >>> as_utc(datetime(2026, 1, 2, 3)).isoformat()
    '2026-01-02T03:00:00+00:00'
    """
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def kafka_source(topic: str, partition: int, offset: int | None = None) -> str:
    """Where a Kafka message sits, as dead letters name it: ``topic[partition]@offset``.

    >>> kafka_source("alerts", 2), kafka_source("alerts", 2, 40)
    ('alerts[2]', 'alerts[2]@40')
    """
    where = f"{topic}[{partition}]"
    return where if offset is None else f"{where}@{offset}"


def dead_letter(
    stage: str,
    reason: str,
    payload: bytes | None,
    source: str,
    *,
    cause: str,
    device_id: str | None = None,
    received_at: datetime | None = None,
) -> DeadLetter:
    """The dead letter of an input ``stage`` refused: why, what the stage counted it as
    (``cause``), its original bytes (None, a Kafka record without a value: none) and its
    source.

    >>> letter = dead_letter("sinks", "not JSON", b"\\x00", "alerts[0]@3", cause="alerts")
    >>> letter.stage, letter.payload_b64, letter.device_id
    ('sinks', 'AA==', None)
    >>> len(dead_letter("ingest", "x" * 1990 + "\\x00" * 10, b"", "t", cause="x").reason)  # escaped, cut
    2000
    >>> huge = dead_letter("ingest", "too large", b"x" * 300_000, "t", cause="payload")
    >>> huge.reason, len(base64.b64decode(huge.payload_b64))
    ('too large (payload of 300,000 bytes: its first 262,144 kept)', 262144)
    >>> dead_letter("ingest", "300,000 bytes, past the 65,536", b"x" * 300_000, "t", cause="x").reason
    '300,000 bytes, past the 65,536 (its first 262,144 kept)'
    """
    # NUL written as \x00 before the cut: the contract escapes it too, and a text that grew
    # past its limit would be refused where the letter is read back.
    reason, source = without_nul(reason), without_nul(source)
    payload = payload or b""
    if len(payload) > PAYLOAD_KEPT:
        size = f"{len(payload):,} bytes"
        kept = f"its first {PAYLOAD_KEPT:,} kept"
        # a reason that says the size already (the gateway's "N bytes, past the ...")
        note = f" ({kept})" if size in reason else f" (payload of {size}: {kept})"
        reason = reason[: REASON_MAX - len(note)] + note
        payload = payload[:PAYLOAD_KEPT]
    return DeadLetter(
        stage=stage,
        reason=reason[:REASON_MAX],
        cause=cause[:CAUSE_MAX],
        source=source[:SOURCE_MAX],
        device_id=device_id,
        payload_b64=base64.b64encode(payload).decode(),
        received_at=utc_now() if received_at is None else received_at,
    )


class StageMetrics:
    """The counters of one hop. ``what`` says what is counted (``"MQTT messages"``);
    ``label`` names what a refusal is counted by (``reason``, or ``field`` at ingest)."""

    def __init__(
        self, stage: str, registry: CollectorRegistry, what: str, label: str = "reason"
    ) -> None:
        self.stage = stage
        self.registry = registry
        self.received = Counter(
            f"cityvitals_{stage}_received_total", f"{what} received", registry=registry
        )
        self.forwarded = Counter(
            f"cityvitals_{stage}_forwarded_total",
            f"{what} passed on (confirmed by Kafka or written)",
            registry=registry,
        )
        self.rejected = Counter(
            f"cityvitals_{stage}_rejected_total",
            f"{what} refused and sent to the dead-letter topic",
            [label],
            registry=registry,
        )
        self.ready = Gauge(
            f"cityvitals_{stage}_ready",
            "1 while the stage can do its work (connected, partitions assigned)",
            registry=registry,
        )

    def counter(self, name: str, doc: str, *labels: str) -> Counter:
        """Another counter of this stage: ``cityvitals_<stage>_<name>``."""
        return Counter(f"cityvitals_{self.stage}_{name}", doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        """Another gauge of this stage: ``cityvitals_<stage>_<name>``."""
        return Gauge(f"cityvitals_{self.stage}_{name}", doc, labels, registry=self.registry)

    def histogram(self, name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
        """Another histogram of this stage: ``cityvitals_<stage>_<name>``."""
        return Histogram(
            f"cityvitals_{self.stage}_{name}", doc, labels, buckets=buckets, registry=self.registry
        )

    def refuse(self, why: str, count: float = 1) -> None:
        """Count ``count`` refusals for ``why`` (a reason or a field name)."""
        self.rejected.labels(why).inc(count)

    def reconciles(self, in_flight: float = 0) -> bool:
        """received == forwarded + rejected + in_flight (a check for tests and probes)."""
        received, forwarded = _total(self.received), _total(self.forwarded)
        return received == forwarded + _total(self.rejected) + in_flight


def _total(counter: Counter) -> float:
    """A counter's value summed over its labels."""
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


class Transient(RuntimeError):
    """A fault worth waiting out (the database or Kafka did not answer); nothing was done.
    ``retry_after`` says how many seconds to wait before trying again."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry(call: Callable[[], T], stop: threading.Event) -> T:
    """``call()`` until it does not raise :class:`Transient`, waiting each ``retry_after``;
    only ``stop`` ends the wait, re-raising the last fault.

    >>> tries = []
    >>> def flaky() -> int:
    ...     tries.append(1)
    ...     if len(tries) < 3:
    ...         raise Transient("not yet", retry_after=0)
    ...     return len(tries)
    >>> retry(flaky, threading.Event())
    3
    """
    while True:
        try:
            return call()
        except Transient as exc:
            log.warning("%s; retrying in %.1f s", exc, exc.retry_after)
            if stop.wait(exc.retry_after):
                raise
