"""``cityvitals replay``: put the readings and camera events the stream stage refused back on
``readings.raw`` once their cause is mended (the device registered or activated, a metric
added to its profile, a range widened), the oldest first. The stream judges each again: it is
stored, or refused anew with a new dead letter. A letter replayed is recorded
(``deadletters_replayed``): a second run skips it, ``cityvitals deadletters`` says when and by
whom, a device's view counts it no more among its refusals, and ``audit --published`` counts
its item once. The gateway's refusals (payloads no device may send) are not replayed: the
device sends again."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cityvitals.contracts import CameraEvent, ReadingBatch
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
        typer.Option(help="only counted as this (unknown_device, inactive_device, metric, ...)"),
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
        found, unusable = replayable(conn, where, raw)
        if unusable:
            typer.echo(
                f"{unusable} of the stream's refusals hold no reading or event: not replayed"
            )
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
            batch = ReadingBatch(
                readings=tuple(o.item for o in chunk if not isinstance(o.item, CameraEvent)),
                camera_events=tuple(o.item for o in chunk if isinstance(o.item, CameraEvent)),
            )
            producer.produce(
                topic,
                batch.model_dump_json().encode(),
                partition=partition,
                on_delivery=delivered([o.key for o in chunk]),
            )
    producer.flush(30)
    return confirmed
