"""``cityvitals vitals``: the current vital signs of a place and its children, or the history
of one indicator at a chosen resolution."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from cityvitals.cli_rules import parse_utc

__all__ = ["vitals"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def vitals(
    place: Annotated[str, typer.Argument(help="a place id (the city's id for the whole city)")],
    indicator: Annotated[
        str | None, typer.Option(help="show this indicator's history instead")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="history from (ISO time; default a day ago)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="history up to (ISO time; now)")] = None,
    resolution: Annotated[str, typer.Option(help="raw, 1h or 1d")] = "raw",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The city's vital signs: each indicator's latest value, coverage and quality, for a
    place and its children, with the open alerts under each."""
    from cityvitals import db
    from cityvitals.cli import fail, settings
    from cityvitals.vitals import RESOLUTIONS, UnknownPlace, current, history

    if resolution not in RESOLUTIONS:
        raise fail(f"--resolution {resolution!r}: give one of {', '.join(RESOLUTIONS)}")
    try:
        first = parse_utc(start) if start else datetime.now(UTC) - timedelta(days=1)
        last = parse_utc(end) if end else datetime.now(UTC)
    except ValueError as exc:
        raise fail(f"--from/--to: {exc}") from None
    try:
        with db.connect(settings()) as conn:
            if indicator is not None:
                from cityvitals.services import load_catalogue

                catalogue = load_catalogue(settings())
                if indicator not in catalogue.by_id:
                    raise fail(
                        f"no indicator {indicator!r}; the catalogue has: {', '.join(catalogue.by_id)}"
                    )
                points = history(conn, place, indicator, first, last, resolution)  # type: ignore[arg-type]
                if as_json:
                    typer.echo(json.dumps([vars(point) for point in points], default=str))
                    return
                typer.echo(f"{indicator} at {place}, {resolution}:")
                if not points:
                    width = catalogue.by_id[indicator].window
                    typer.echo(
                        f"  no windows reported between {first:%Y-%m-%d %H:%M}Z and "
                        f"{last:%Y-%m-%d %H:%M}Z ({indicator} is reported every {width}, a "
                        "little after each window ends)"
                    )
                for point in points:
                    typer.echo(
                        f"  {point.start.isoformat()}  {_fmt(point.value):>10}  "
                        f"[{_fmt(point.low)} .. {_fmt(point.high)}]  "
                        f"coverage {point.coverage:.0%}"
                    )
                return
            places = current(conn, place)
    except UnknownPlace as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(
            json.dumps(
                [p.__dict__ for p in places], default=lambda o: getattr(o, "__dict__", str(o))
            )
        )
        return
    for p in places:
        alerts = ", ".join(f"{n} {lv}" for lv, n in sorted(p.open_alerts.items())) or "none"
        typer.echo(f"{p.level} {p.place_id} ({p.name}): open alerts {alerts}")
        for s in p.signs:
            typer.echo(
                f"  {s.indicator:<16} {_fmt(s.value):>10} {s.band or '':<16} "
                f"coverage {s.coverage:>4.0%} ({s.reporting}/{s.expected}, {s.quality})  "
                f"{s.window_start:%Y-%m-%d %H:%M}Z"
            )
