"""Each stage's Python work per reading, without the stack: CPU readings/s of one core.

- ``gateway``: decode MQTT payloads, group them into one batch message per partition, encode;
- ``streams``: a ``readings.raw`` message decoded, :func:`streams.pipeline.process_batch` run
  with the shipped rules and indicators (memories carried from batch to batch, as the
  tables keep them), and its outputs encoded, as the Faust agent does;
- ``sink``: a ``readings`` message decoded and turned into COPY rows (no database).

Readings come from air-quality, water-level and noise devices (``--job full``, the shipped rules
and indicators), or from air-quality devices sending PM2.5 alone, judged by the small job's rule
file and indicator catalogue (``--job small``, :mod:`benchmarks.small_job`). Each stage runs
under the services' garbage collector settings (:func:`wiring.services.steady_gc`). ``--only``
runs one stage, and ``--passes`` runs the streams stage over its input that many times, each
pass afresh: under ``valgrind --tool=callgrind`` the instructions of two and of one pass differ
by the instructions of one pass of the stage, a count that, unlike time, does not move with
what else the machine does (``--now`` fixes the clock, and with it where the readings' windows
fall: the count then repeats exactly). Prints figures (JSON with ``--json``); asserts nothing.

    python -m benchmarks.stages [--readings 30000] [--batch 300] [--devices 300]
        [--job full|small] [--only gateway|streams] [--passes 1] [--now ISO]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import small_job
from benchmarks.quix_job import ALERT_ABOVE
from cityvitals.contracts import Device, Reading, ReadingBatch
from cityvitals.settings import Settings
from ingest.decode import decode
from rules import RuleSet, parse_rules
from rules.indicators import Catalogue, parse_catalogue
from sinks.postgres import ReadingSink
from sinks.routes import Envelope, decode_readings
from streams.pipeline import ParsedMemories, process_batch
from streams.validation import registry_entry
from wiring.services import load_catalogue, load_rules, steady_gc

Kinds = tuple[tuple[str, Callable[[int, int], dict[str, float]]], ...]
KINDS: Kinds = (
    ("air_quality", lambda n, i: {"pm25": 30.0 + (n + i) % 9, "pm10": 60.0 + i % 5}),
    ("water_level", lambda n, i: {"water_level_cm": 2.0 + (n + i) % 3}),
    ("noise", lambda n, i: {"laeq_db": 55.0 + (n + i) % 7}),
)
SMALL_KINDS: Kinds = (
    (
        "air_quality",
        lambda n, i: {"pm25": ALERT_ABOVE + 25 if n % small_job.ALERT_EVERY == 0 else 30.0 + n % 9},
    ),
)
"""Readings shaped like the small job's: PM2.5 alone, one reading in ``ALERT_EVERY`` over its
threshold (with 30 devices, all from three of them; the small job spreads them over all)."""


def job(name: str) -> tuple[Kinds, RuleSet, Catalogue]:
    """The readings' kinds, the rules and the indicators of the ``full`` or ``small`` job."""
    if name == "small":
        return SMALL_KINDS, parse_rules(small_job.RULES), parse_catalogue(small_job.INDICATORS)
    return KINDS, load_rules(Settings()), load_catalogue(Settings())


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no zone (e.g. 2026-12-04T12:00:00Z)")
    return value


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {value}")
    return value


def fleet(count: int, now: datetime, kinds: Kinds = KINDS) -> list[Device]:
    return [
        Device(
            device_id=f"dev-{i:05d}",
            device_type=kinds[i % len(kinds)][0],
            place_path=(
                "c",
                f"c-d{i % 3}",
                f"c-d{i % 3}-s{i % 6}",
                f"c-d{i % 3}-s{i % 6}-g{i % 12}",
            ),
            updated_at=now - timedelta(days=1),
        )
        for i in range(count)
    ]


def payloads(
    devices: list[Device], count: int, start: datetime, kinds: Kinds = KINDS
) -> list[tuple[str, bytes]]:
    """(MQTT topic, payload) of ``count`` readings, round robin over the devices, 1 s apart."""
    out = []
    for n in range(count):
        i = n % len(devices)
        kind = kinds[i % len(kinds)]
        ts = start + timedelta(seconds=n // len(devices), microseconds=i)
        body = {"ts": ts.isoformat(), "seq": n, "values": kind[1](n, i)}
        out.append((f"cityvitals/{devices[i].device_id}/readings", json.dumps(body).encode()))
    return out


def rate(work: Callable[[], int]) -> float:
    """Items per CPU second of ``work`` (which returns how many it handled)."""
    started = time.process_time()
    items = work()
    return items / max(time.process_time() - started, 1e-9)


def gateway_stage(messages: list[tuple[str, bytes]], batch: int, now: datetime) -> int:
    for i in range(0, len(messages), batch):
        group = [decode("cityvitals", t, p, now) for t, p in messages[i : i + batch]]
        readings = tuple(g for g in group if isinstance(g, Reading))
        ReadingBatch(readings=readings).to_json()
    return len(messages)


def raw_batches(messages: list[tuple[str, bytes]], batch: int, now: datetime) -> list[bytes]:
    out = []
    for i in range(0, len(messages), batch):
        group = [decode("cityvitals", t, p, now) for t, p in messages[i : i + batch]]
        out.append(ReadingBatch(readings=tuple(group)).to_json())
    return out


def streams_stage(
    raw: list[bytes], devices: list[Device], now: datetime, rules: RuleSet, catalogue: Catalogue
) -> tuple[int, list[bytes]]:
    entries: dict[str, Any] = {d.device_id: registry_entry(d) for d in devices}
    states: dict[str, Any] = {}
    marks: dict[str, Any] = {}
    parsed = ParsedMemories()
    out, count = [], 0
    for offset, value in enumerate(raw):
        batch = ReadingBatch.model_validate_json(value)
        ids = {r.device_id for r in batch.readings}
        outcome = process_batch(
            batch,
            {d: entries.get(d) for d in ids},
            {d: states.get(d) for d in ids},
            rules,
            "readings.raw/0",
            now,
            catalogue,
            {d: marks.get(d) for d in ids},
            offset,
            parsed,
        )
        out.append(outcome.enriched.to_json())
        for alert in outcome.alerts:
            alert.model_dump_json().encode()
        for partial in outcome.partials:
            partial.model_dump_json().encode()
        states.update(outcome.changed_states)
        marks.update(outcome.changed_marks)
        count += len(batch)
    return count, out


def sink_stage(enriched: list[bytes]) -> int:
    sink = ReadingSink.__new__(ReadingSink)
    count = 0
    for offset, value in enumerate(enriched):
        readings = decode_readings(Envelope("readings", 0, offset, value))
        for _row in sink.rows(readings):
            pass
        count += len(readings)
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=300, help="readings per Kafka message")
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--job", choices=("full", "small"), default="full")
    parser.add_argument("--only", choices=("gateway", "streams"))
    parser.add_argument(
        "--passes", type=_at_least_one, default=1, help="passes of the streams stage"
    )
    parser.add_argument(
        "--now",
        type=_instant,
        default=None,
        help="the stage's clock (ISO, with its zone; default: now): the readings' windows and "
        "so the work done repeat exactly from run to run",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="S",
        help="every device's profile interval in seconds (default: none); with it, the vital "
        "signs count a device online in the windows up to two intervals after each reading",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    now = args.now or datetime.now(UTC).replace(microsecond=0)
    kinds, rules, catalogue = job(args.job)
    devices = fleet(args.devices, now, kinds)
    if args.interval is not None:
        devices = [d.model_copy(update={"expected_interval_s": args.interval}) for d in devices]
    start = now - timedelta(seconds=args.readings // args.devices + 5)
    messages = payloads(devices, args.readings, start, kinds)
    raw = raw_batches(messages, args.batch, now)
    enriched: list[bytes] = []
    steady_gc()  # what exists now is frozen out of collections, as in a service

    def streams() -> int:
        total = 0
        for _ in range(args.passes):
            count, out = streams_stage(raw, devices, now, rules, catalogue)
            total += count
        enriched.extend(out)
        return total

    figures: dict[str, float] = {}
    if args.only in (None, "gateway"):
        figures["gateway"] = rate(lambda: gateway_stage(messages, args.batch, now))
    if args.only in (None, "streams"):
        figures["streams"] = rate(streams)
    if args.only is None:
        figures["sink_rows"] = rate(lambda: sink_stage(enriched))
    if args.json:
        print(json.dumps({k: round(v) for k, v in figures.items()}))
        return
    for name, value in figures.items():
        print(f"{name:<10} {value:>10,.0f} readings per CPU second")


if __name__ == "__main__":
    main()
