"""``cityvitals replay``: put the readings and camera events the stream stage refused back on
``readings.raw`` once their cause is mended (the device registered or activated, a metric
added to its profile, a range widened), the oldest first. The stream judges each again: it is
stored, or refused anew with a new dead letter. A letter replayed is recorded
(``deadletters_replayed``): a second run skips it, ``cityvitals deadletters`` says when and by
whom, a device's view counts it no more among its refusals, and ``audit --published`` counts
its item once. The gateway's refusals (payloads no device may send) are not replayed: the
device sends again. One replay runs at a time (a second, started meanwhile, is refused: both
would send the same letters)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cityvitals.contracts import CameraEvent, Reading, ReadingBatch
from cityvitals.settings import Settings
from cityvitals.topics import Topic, partition_for
from wiring.cli_common import fail, settings, time_option

if TYPE_CHECKING:
    from sinks.deadletters import LetterKey, Replayable

__all__ = ["replay"]

BATCH_ITEMS = 200
"""Items put on ``readings.raw`` in one message (the gateway's batches are of this order)."""


def replay(
    device: Annotated[str | None, typer.Option(help="only of this device")] = None,
    since: Annotated[
        str | None, typer.Option(help="only refused at or after (ISO time, 19:55, or 15m back)")
    ] = None,
    cause: Annotated[
        str | None,
        typer.Option(
            help="only counted as this (unknown_device, inactive_device, unlisted_metric, "
            "out_of_range, values_refused, late, ...)"
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="only whose reason holds this text")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many letters")] = 10_000,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list what would be replayed, send nothing")
    ] = False,
) -> None:
    """Put the readings and camera events the stream refused back on readings.raw, the oldest
    first, to be judged again now that their cause is mended. Exit 0 when every one was sent
    (or none was found), 1 when Kafka did not take some."""
    from cityvitals import db, kafka
    from sinks.deadletters import LetterFilter, mark_replayed, replayable
    from wiring.cli_registry_common import actor

    conf = settings()
    where = LetterFilter(
        stage="streams",
        device=device,
        since=time_option(since, "--since"),
        reason=reason,
        cause=cause,
        limit=limit,
    )
    raw = conf.topic(Topic.READINGS_RAW)
    with db.connect(conf) as conn:
        if not dry_run and not _alone(conn, conf.database_schema):
            raise fail("another cityvitals replay is running: run this one when it has ended")
        found, unusable = replayable(conn, where, raw)
        if unusable:
            typer.echo(
                f"{unusable} of the stream's refusals hold no reading or event: not replayed"
            )
        found, unmended = _mended(conf, found)
        for one, why in unmended[:20]:
            d = one.letter
            typer.echo(
                f"  not mended yet, kept: {d.received_at:%Y-%m-%d %H:%M:%S} UTC  {d.device_id}  "
                f"{why}"
            )
        if len(unmended) > 20:
            typer.echo(f"  ... and {len(unmended) - 20} more not mended yet")
        if not found:
            typer.echo("nothing to replay: no refusal of the stream's selected is left unreplayed")
            return
        typer.echo(f"{len(found)} to replay (oldest first):")
        for one in found[:20]:
            d = one.letter
            typer.echo(
                f"  {d.received_at:%Y-%m-%d %H:%M:%S} UTC  {d.device_id}  [{d.cause}] {d.reason}"
            )
        if len(found) > 20:
            typer.echo(f"  ... and {len(found) - 20} more")
        if dry_run:
            return
        producer = kafka.producer(conf)
        parts = kafka.partition_count(producer, raw)
        sent = _send(producer, raw, parts, found)
        if sent:
            mark_replayed(conn, sent, actor(), datetime.now(UTC))
            conn.commit()
    typer.echo(
        f"replayed {len(sent)} on {raw}: the stream judges them again (cityvitals deadletters "
        "--since 1m lists those it refuses anew)"
    )
    if len(sent) < len(found):
        raise fail(f"Kafka did not take {len(found) - len(sent)}: run replay again")


def _alone(conn: Any, schema: str) -> bool:
    """Whether this replay took the lock that makes it the deployment's only one running,
    held until its connection closes (after its letters are recorded as replayed)."""
    held = conn.execute(
        "SELECT pg_try_advisory_lock(hashtext(%s))", (f"cityvitals.replay:{schema}",)
    ).fetchone()
    return bool(held and held[0])


def _mended(
    conf: Settings, found: list[Replayable]
) -> tuple[list[Replayable], list[tuple[Replayable, str]]]:
    """Those of ``found`` the registry would let through now, and the others with why: the
    stream's own checks of a device and its profile (a replay before the cause is mended is
    refused again, and counts twice)."""
    from device_registry import UnknownDevice
    from streams.validation import problem, registry_entry, value_faults
    from wiring.services import open_registry

    entries: dict[str, dict[str, Any] | None] = {}
    with open_registry(conf) as registry:
        for device_id in {one.item.device_id for one in found}:
            try:
                entries[device_id] = registry_entry(registry.get(device_id))
            except UnknownDevice:
                entries[device_id] = None
    ready, kept = [], []
    for one in found:
        entry = entries[one.item.device_id]
        why, _kind = problem(one.item, entry)
        if why is None and entry is not None and isinstance(one.item, Reading):
            faults = value_faults(one.item.device_id, one.item.values, entry)
            why = "; ".join(f[1] for f in faults) or None
        if why is None:
            ready.append(one)
        else:
            kept.append((one, why))
    return ready, kept


def _as_sent(one: Replayable) -> Reading | CameraEvent:
    """The item as replayed. The values refused of a reading whose other values were stored
    go without a time of receipt: the audit counts that reading once, as stored, and the
    stream counts them as a backlog (its stream-to-database check, whose database side
    counts what was received since, leaves them out)."""
    from streams.validation import VALUES_REFUSED

    if one.letter.cause == VALUES_REFUSED:
        return one.item.model_copy(update={"received_at": None})
    return one.item


def _send(producer: Any, topic: str, parts: int, found: list[Replayable]) -> list[LetterKey]:
    """Put ``found`` on ``topic``, each on its device's partition in the order found, in
    messages of at most :data:`BATCH_ITEMS`; the keys of those Kafka confirmed."""
    by_partition: dict[int, list[Replayable]] = defaultdict(list)
    for one in found:
        by_partition[partition_for(one.item.device_id, parts)].append(one)
    confirmed: list[LetterKey] = []

    def delivered(keys: list[LetterKey]) -> Any:
        def report(err: Any, _msg: Any) -> None:
            if err is None:
                confirmed.extend(keys)

        return report

    for partition, items in by_partition.items():
        for start in range(0, len(items), BATCH_ITEMS):
            chunk = items[start : start + BATCH_ITEMS]
            sent = [_as_sent(o) for o in chunk]
            batch = ReadingBatch(
                readings=tuple(i for i in sent if isinstance(i, Reading)),
                camera_events=tuple(i for i in sent if isinstance(i, CameraEvent)),
            )
            producer.produce(
                topic,
                batch.model_dump_json().encode(),
                partition=partition,
                on_delivery=delivered([o.key for o in chunk]),
            )
    producer.flush(30)
    return confirmed
