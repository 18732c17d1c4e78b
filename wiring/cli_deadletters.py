"""``cityvitals deadletters``: what the stages refused and why, newest first, with the refused
bytes on request. Times are shown in the city's time zone (``CITYVITALS_TIMEZONE``)."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Annotated

import typer

from cityvitals.contracts import STAGE
from wiring.cli_common import echo_json, fail, settings, time_option

if TYPE_CHECKING:
    from sinks.deadletters import StoredLetter

__all__ = ["deadletters", "letter_lines"]


def deadletters(
    stage: Annotated[
        str | None,
        typer.Option(help="only refused by this stage (ingest, streams, incidents, sinks, ...)"),
    ] = None,
    device: Annotated[str | None, typer.Option(help="only of this device")] = None,
    since: Annotated[
        str | None, typer.Option(help="received at or after (ISO time, 19:55, or 15m back)")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="only whose reason holds this text")] = None,
    cause: Annotated[
        str | None,
        typer.Option(
            help="only counted as this: a label of cityvitals_<stage>_rejected_total "
            "(unknown_device, late, ts, ...), database_refused or conflict"
        ),
    ] = None,
    payload: Annotated[
        bool, typer.Option("--payload", help="also show the refused bytes (200 characters)")
    ] = False,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (bytes in base64)")] = False,
) -> None:
    """Dead letters: each input a stage refused, with the reason, the newest first."""
    from cityvitals import db
    from sinks.deadletters import LetterFilter, list_letters

    if stage is not None and not STAGE.fullmatch(stage):
        raise fail(
            f"--stage {stage!r} is not a stage name (a lower case letter, then letters, digits, _ . -)"
        )
    after = time_option(since, "--since")
    where = LetterFilter(
        stage=stage, device=device, since=after, reason=reason, cause=cause, limit=limit
    )
    conf = settings()
    with db.connect(conf) as conn:
        found = list_letters(conn, where)
    if as_json:
        echo_json(found, conf)
        return
    if not found:
        from wiring.audit import DEAD_LETTERING

        known = stage is None or stage in DEAD_LETTERING
        typer.echo(
            "no dead letters"
            if known
            else f"no dead letters of a stage {stage!r} (the stages that refuse inputs: "
            f"{', '.join(DEAD_LETTERING)})"
        )
        return
    typer.echo(f"times in {conf.zone}")
    for line in letter_lines(found, conf.zone, payload):
        typer.echo(line)


def letter_lines(found: list[StoredLetter], zone: tzinfo, payload: bool = False) -> list[str]:
    """Two lines per letter (when, stage, device, source; then what it was counted as and its
    reason), a line with the action, its actor and its incident for a refused feedback, and one
    with the refused bytes when ``payload``."""
    from sinks.deadletters import shown_payload
    from sinks.readings import refusal_of

    lines = []
    for stored in found:
        d = stored.letter
        lines.append(
            f"{_when(d.received_at, zone)}  {d.stage:<14} {d.device_id or '-':<16} {d.source}"
        )
        lines.append(f"    [{d.cause}] {d.reason}" if d.cause else f"    {d.reason}")
        feedback = refusal_of(d.payload_b64, d.reason, d.received_at) if not d.device_id else None
        if feedback is not None:  # a person's action the incident stage refused: whose, on what
            lines.append(
                f"    {feedback.action} by {feedback.actor} on incident {feedback.incident_id}"
                f" (feedback {feedback.feedback_id})"
            )
        if stored.replayed_at is not None:
            lines.append(
                f"    replayed {_when(stored.replayed_at, zone)} by {stored.replayed_by}"
                " (judged again: stored, or refused anew)"
            )
        if payload:
            lines.append(f"    payload: {shown_payload(d.payload_b64)}")
    return lines


def _when(ts: datetime, zone: tzinfo) -> str:
    return f"{ts.astimezone(zone):%Y-%m-%d %H:%M:%S}"
