"""``cityvitals vitals``: the current vital signs of a place and its children, or the history
of one indicator at a chosen resolution. Times are shown in the city's time zone
(``CITYVITALS_TIMEZONE``)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Annotated, Any

import typer

from sinks.vitals import NextValue, PlaceVitals
from wiring.cli_common import fail, in_order, settings, time_option

__all__ = ["ago", "render_now", "vitals"]


def _exact(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _share(value: float | None) -> str:
    """A ratio as the share a person reads: 0.6667 is 66.7 (per cent)."""
    return "-" if value is None else f"{value * 100:.1f}".removesuffix(".0")


def _fmt(value: float | None) -> str:
    """A value as a duty officer reads it: at most three significant digits below 100,
    whole numbers above (the JSON output keeps every digit).

    >>> [_fmt(v) for v in (0.957912, 53.3054, 200.864, 17.5, 12345.6, 0.0, -4.26, None)]
    ['0.958', '53.3', '201', '17.5', '12,346', '0', '-4.26', '-']
    """
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def ago(seconds: float) -> str:
    """How long ago, for people.

    >>> ago(20), ago(300), ago(4000), ago(200000)
    ('just now', '5 min ago', '1 h 6 min ago', '2 d 7 h ago')
    """
    minutes = int(seconds // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h ago" if hours else f"{days} d ago"


def _clock(ts: datetime, zone: tzinfo, now: datetime) -> str:
    """A time in the city's zone: the time of day, with the date when it is not today."""
    local = ts.astimezone(zone)
    if local.date() == now.astimezone(zone).date():
        return f"{local:%H:%M}"
    return f"{local:%Y-%m-%d %H:%M}"


def _next(n: NextValue, zone: tzinfo, now: datetime) -> str:
    window = f"window {_clock(n.window_start, zone, now)}-{_clock(n.window_end, zone, now)}"
    state = "in progress" if n.in_progress else "ended, being reported"
    text = f"next value at {_clock(n.due_at, zone, now)} ({window} {state})"
    if n.overdue:
        text = f"no newer value came when due: the stream is behind or stopped; {text}"
    return text


def render_now(places: list[PlaceVitals], zone: tzinfo, now: datetime) -> list[str]:
    """The lines of ``cityvitals vitals PLACE``: each value with its unit, its window (in the
    city's time zone), how long ago that window ended, and when the next value is due."""
    offset = now.astimezone(zone).strftime("%z")
    lines = [f"times in {zone} (UTC{offset[:3]}:{offset[3:]}), now {_clock(now, zone, now)}"]
    for p in places:
        alerts = ", ".join(f"{n} {lv}" for lv, n in sorted(p.open_alerts.items())) or "none"
        lines.append(f"{p.level} {p.place_id} ({p.name}): open alerts {alerts}")
        for s in p.signs:
            end = s.window_end or s.window_start + timedelta(seconds=s.window_s)
            window = f"{_clock(s.window_start, zone, now)}-{_clock(end, zone, now)}"
            value, unit = _fmt(s.value), s.unit
            if unit == "ratio":  # a share, as the console shows it
                value, unit = _share(s.value), "%"
            line = (
                f"  {s.indicator:<16} {value:>7} {unit:<6} {s.band or '':<16} "
                f"coverage {s.coverage:>4.0%} ({s.reporting}/{s.expected}, {s.quality})  "
                f"window {window}, ended {ago(s.age_s)}"
            )
            if s.next is not None:
                line += f"; {_next(s.next, zone, now)}"
            lines.append(line)
        for pending in p.pending:
            lines.append(
                f"  {pending.indicator:<16} no value yet: {_next(pending.next, zone, now)}"
            )
    return lines


def _bucket_s(start: datetime, resolution: str, zone: tzinfo) -> float:
    """How long the bucket that begins at ``start`` is, in seconds: an hour, or the city's day
    (23 or 25 hours when its clocks change).

    >>> from zoneinfo import ZoneInfo
    >>> berlin = ZoneInfo("Europe/Berlin")
    >>> _bucket_s(datetime(2026, 10, 25, tzinfo=berlin), "1d", berlin) / 3600
    25.0
    """
    if resolution != "1d":
        return 3600.0
    day = start.astimezone(zone).date()
    after = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    return (after - datetime.combine(day, time(), zone).astimezone(UTC)).total_seconds()


def _local(value: Any, zone: tzinfo) -> Any:
    """A JSON-ready copy of dataclasses, with times in the city's zone (ISO, with offset)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _local(getattr(value, f.name), zone) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat()
    if isinstance(value, dict):
        return {k: _local(v, zone) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_local(v, zone) for v in value]
    return value


def vitals(
    place: Annotated[str, typer.Argument(help="a place id (the city's id for the whole city)")],
    indicator: Annotated[
        str | None, typer.Option(help="show this indicator's history instead")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from", help="history from (ISO time, 19:55, or 6h back; default a day ago)"
        ),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="history up to (ISO time, 19:55, or 1h back; now)")
    ] = None,
    resolution: Annotated[str, typer.Option(help="raw, 1h or 1d")] = "raw",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The city's vital signs: each indicator's latest value, coverage and quality, for a
    place and its children, with the open alerts under each."""
    from cityvitals import db
    from sinks.vitals import RESOLUTIONS, UnknownPlace, current, history
    from wiring.services import load_catalogue

    if resolution not in RESOLUTIONS:
        raise fail(f"--resolution {resolution!r}: give one of {', '.join(RESOLUTIONS)}")
    if indicator is None and (start or end or resolution != "raw"):
        raise fail("--from, --to and --resolution are for a history: give --indicator too")
    first = time_option(start, "--from") or datetime.now(UTC) - timedelta(days=1)
    last = time_option(end, "--to") or datetime.now(UTC)
    in_order(first, last, "--from", "--to")
    conf = settings()
    try:
        with db.connect(conf) as conn:
            catalogue = load_catalogue(conf)
            if indicator is not None:
                if indicator not in catalogue.by_id:
                    raise fail(
                        f"no indicator {indicator!r}; the catalogue has: {', '.join(catalogue.by_id)}"
                    )
                rollup = catalogue.by_id[indicator].rollup
                points = history(
                    conn, place, indicator, first, last,
                    resolution,  # type: ignore[arg-type]
                    rollup=rollup, zone=conf.timezone,
                )  # fmt: skip
                if as_json:
                    typer.echo(json.dumps(_local(points, conf.zone)))
                    return
                zone = conf.zone
                unit = catalogue.by_id[indicator].unit
                share = unit == "ratio"  # shown as a share, as the console does
                shown = _share if share else _exact
                units = ", in %" if share else f", in {unit}" if unit else ""
                typer.echo(f"{indicator} at {place}, {resolution}{units} (times in {zone}):")
                if not points:
                    width = catalogue.by_id[indicator].window
                    typer.echo(
                        f"  no windows reported between {first.astimezone(zone):%Y-%m-%d %H:%M} "
                        f"and {last.astimezone(zone):%Y-%m-%d %H:%M} ({indicator} is reported "
                        f"every {width}, a little after each window ends)"
                    )
                window_s = catalogue.by_id[indicator].window_s
                for point in points:
                    # a bucket of fewer windows than it holds rests on part of its time (a
                    # day the clocks change is 23 or 25 hours long)
                    per = int(_bucket_s(point.start, resolution, zone)) // window_s
                    if resolution == "raw":  # a window is whole: no share of a bucket
                        per = 1
                    part = f"  ({point.windows} of {per} windows)" if point.windows < per else ""
                    typer.echo(
                        f"  {point.start.astimezone(zone).isoformat()}  {shown(point.value):>10}  "
                        f"[{shown(point.low)} .. {shown(point.high)}]  "
                        f"coverage {point.coverage:.0%}{part}"
                    )
                return
            places = current(
                conn,
                place,
                catalogue=catalogue,
                now=datetime.now(UTC),
                grace=timedelta(seconds=conf.indicators_grace_s),
            )
    except UnknownPlace as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(_local(places, conf.zone)))
        return
    for line in render_now(places, conf.zone, places[0].now or datetime.now(UTC)):
        typer.echo(line)
