"""``cityvitals audit``: does every hop's count reconcile, end to end? Reads the running
services' metrics (the ports a ``cityvitals up`` recorded in its state folder) and the
database, and prints a line per check (:mod:`wiring.audit`). Exit 0 when everything
reconciles, 1 with a gap, 2 when a service or the database cannot be read."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import typer

from cityvitals.settings import Settings
from cityvitals.topics import Topic
from wiring import audit as checks
from wiring.audit import Figures, Hop, Line, Stored, exit_code, hops_from_exposition
from wiring.cli_common import parse_when, settings

__all__ = ["read_hops", "read_stored", "reconcile"]

COUNTED = ("ingest", "streams", "sinks", "liveness")
"""The services whose counters the audit reads (the stream's process also counts incidents)."""

RESTART_NOTE = (
    "Counters start at zero with their process (a check is skipped when a process it "
    "compares restarted; the stream → database check counts the database from the stream's "
    "start); the database side is durable."
)


class Unreadable(RuntimeError):
    """A service's metrics or the database did not answer."""


def read_hops(s: Settings) -> dict[str, Hop]:
    """Every counted stage of the running services, from their metrics endpoints."""
    from wiring.localstack import recorded_metrics_port, scrape

    hops: dict[str, Hop] = {}
    for service in COUNTED:
        port = recorded_metrics_port(s.state_dir, service)
        if port is None:
            raise Unreadable(
                f"no metrics port recorded for {service} in {s.state_dir} (is 'cityvitals up' running?)"
            )
        try:
            text = scrape(port, s.metrics_host)
        except OSError as exc:
            raise Unreadable(f"{service}'s metrics on port {port} cannot be read: {exc}") from None
        hops.update(hops_from_exposition(text))
    return hops


def read_stored(s: Settings, since: datetime | None, devices: Sequence[str] = ()) -> Stored:
    """What the database holds, received since ``since`` (everything when None), of
    ``devices`` alone when some are named (their readings, camera events and dead letters). A
    reading is a row per metric: its rows share the device, instant, sequence number and time
    of receipt (two messages of one instant are two readings; a replay or a redelivery that
    the table's key turned away is none)."""
    from cityvitals import db
    from sinks.deadletters import REPLAYED, count_owed

    since_sql = "received_at >= %(since)s" if since is not None else "true"
    of = " AND {} = ANY(%(devices)s)" if devices else ""
    raw, enriched = s.topic(Topic.READINGS_RAW) + "[", s.topic(Topic.READINGS) + "["
    try:
        with db.connect(s) as conn:
            params = {"since": since, "raw": raw, "enriched": enriched, "devices": list(devices)}
            row = conn.execute(
                f"SELECT (SELECT count(*) FROM (SELECT DISTINCT device_id, ts, seq, received_at "
                f"FROM readings WHERE {since_sql}{of.format('device_id')}) r), "
                f"(SELECT count(*) FROM camera_events WHERE {since_sql}{of.format('camera_id')})".encode(),
                params,
            ).fetchone()
            # a letter replayed counts once as its item: stored, or refused again; a reading
            # taken whose other values were refused counts once, as stored
            by_stage = conn.execute(
                f"SELECT stage, count(*), count(*) FILTER (WHERE (stage = 'ingest' OR "
                f"(stage = 'streams' AND left(source, length(%(raw)s)) = %(raw)s) OR "
                f"(stage = 'sinks' AND left(source, length(%(enriched)s)) = %(enriched)s)) "
                f"AND NOT {REPLAYED} AND cause IS DISTINCT FROM 'values_refused') "
                f"FROM deadletters d "
                f"WHERE {since_sql}{of.format('device_id')} GROUP BY stage".encode(),
                params,
            ).fetchall()
            owed = count_owed(conn, since)
    except Exception as exc:  # psycopg's errors and the connection's: the database is unreadable
        raise Unreadable(f"the database cannot be read: {exc}") from None
    readings, events = row or (0, 0)
    return Stored(
        readings=_count(readings),
        camera_events=_count(events),
        deadletters={str(stage): _count(n) for stage, n, _ in by_stage},
        device_deadletters=sum(_count(d) for _, _, d in by_stage),
        owed=owed,
    )


def _count(value: object) -> int:
    """A count(*) the database returned."""
    assert isinstance(value, int), value
    return value


def _figures(
    s: Settings, since: datetime | None, published: int | None, devices: Sequence[str] = ()
) -> Figures:
    hops = read_hops(s)
    starts = [h.started for h in hops.values() if h.started is not None]
    first = min(starts) if starts else None
    since_start = read_stored(s, first)
    if devices:  # the published check counts what of theirs is stored or dead-lettered
        window = read_stored(s, since or first, devices)
    else:
        window = since_start if since is None or since == first else read_stored(s, since)
    stream = hops["streams"].started if "streams" in hops else None
    since_stream = since_start if stream is None or stream == first else read_stored(s, stream)
    return Figures(hops, since_start, window, published, since_stream)


def _mark(line: Line) -> str:
    return {True: "OK  ", False: "GAP ", None: "SKIP"}[line.ok]


def _as_json(figures: Figures, lines: list[Line], code: int) -> dict[str, Any]:
    def hop(h: Hop) -> dict[str, Any]:
        out = asdict(h)
        out["started"] = h.started.isoformat() if h.started else None
        out["refused"] = h.refused
        return out

    return {
        "exit": code,
        "published": figures.published,
        "hops": {stage: hop(h) for stage, h in figures.hops.items()},
        "database_since_start": asdict(figures.since_start),
        "database_since_stream": asdict(figures.since_stream or figures.since_start),
        "database_window": asdict(figures.window),
        "lines": [asdict(line) for line in lines],
        "note": RESTART_NOTE,
    }


def reconcile(
    since: Annotated[
        str | None,
        typer.Option(
            help="Count the database from this time (ISO, 19:55, or 15m back) for --published "
            "(default: since the services started)."
        ),
    ] = None,
    published: Annotated[
        int | None,
        typer.Option(
            help="What the devices published (a resend of the same reading counts once): "
            "check published = stored + dead-lettered."
        ),
    ] = None,
    device: Annotated[
        list[str] | None,
        typer.Option(
            help="Only this device's readings, events and dead letters count for --published "
            "(repeat it for several): the check holds while other devices send."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to keep re-reading while a gap remains (in flight).")
    ] = 0.0,
) -> None:
    """Reconcile every hop's counts with the database: received = forwarded + refused per hop,
    forwarded = stored (a replay stored once), refused = dead letters stored, with
    --published, published = stored + dead-lettered, and no dispatch order or escalation owed
    to a webhook (cityvitals resend). Exit 0 reconciled, 1 a gap, 2 unreadable."""
    s = settings()
    try:
        start = parse_when(since, s.zone) if since else None
    except ValueError as exc:
        typer.echo(f"error: --since: {exc}", err=True)
        raise typer.Exit(2) from None
    deadline = time.monotonic() + wait
    while True:
        try:
            figures = _figures(s, start, published, device or ())
        except Unreadable as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        lines = checks.reconcile(figures)
        code = exit_code(lines)
        if code == 0 or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if as_json:
        typer.echo(json.dumps(_as_json(figures, lines, code), indent=2, default=str))
        raise typer.Exit(code)
    starts = sorted({h.started for h in figures.hops.values() if h.started})
    if starts:
        typer.echo(f"counters since {starts[0].isoformat(timespec='seconds')}; {RESTART_NOTE}")
    for line in lines:
        typer.echo(f"{_mark(line)}  {line.check}" + ("" if line.ok else f": {line.detail}"))
        if line.ok and line.detail != "OK":
            typer.echo(f"      {line.detail.removeprefix('OK ')}")
    typer.echo(checks.verdict(lines, published))
    if code == 1:
        from wiring.localstack import Drained
        from wiring.stack import StackPaths

        stop = Drained.kept(StackPaths(s.state_dir))
        if stop is not None and not stop.complete:  # a known cause of a gap: say it
            typer.echo(f"note: the local stack's last stop said: {stop.said}")
        if not wait:  # a gap read once may be what is still on its way
            typer.echo(
                "note: read once, a gap may be messages still in flight while devices send: "
                "--wait 15 reads again until it closes (a loss stays)"
            )
    raise typer.Exit(code)
