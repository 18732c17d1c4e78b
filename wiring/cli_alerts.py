"""``cityvitals alerts ...``: list alert episodes by filter and show one with its transitions
and its incident. Times are shown in the city's time zone (``CITYVITALS_TIMEZONE``)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cityvitals.contracts import AlertStatus, WarningLevel
from cityvitals.settings import Settings
from wiring.cli_common import (
    echo_json,
    enum_option,
    fail,
    known_place,
    named_filters,
    settings,
    time_option,
)

if TYPE_CHECKING:
    from sinks.alerts import AlertRow

__all__ = ["alert_lines", "alerts_app"]

alerts_app = typer.Typer(help="Alerts: list them by filter, show one.", no_args_is_help=True)


def _when(ts: datetime | None, zone: tzinfo) -> str:
    return "-" if ts is None else f"{ts.astimezone(zone):%Y-%m-%d %H:%M:%S}"


def _connect(conf: Settings) -> Any:
    from cityvitals import db

    return db.connect(conf)


@alerts_app.command("list")
def list_command(
    firing: Annotated[bool, typer.Option("--firing", help="only those still firing")] = False,
    resolved: Annotated[bool, typer.Option("--resolved", help="only resolved ones")] = False,
    rule: Annotated[str | None, typer.Option(help="only of this rule id")] = None,
    level: Annotated[
        str | None, typer.Option(help="at least this level: blue, yellow, orange or red")
    ] = None,
    place: Annotated[
        str | None, typer.Option(help="at or under this place id (or path prefix a/b)")
    ] = None,
    device: Annotated[str | None, typer.Option(help="only of this device")] = None,
    since: Annotated[
        str | None, typer.Option(help="firing at or after (ISO time, 19:55, or 15m back)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="started before (ISO time, 19:55, or 15m back)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Alert episodes, each at its latest transition, the last changed first."""
    from sinks.alerts import AlertFilter, list_alerts

    if firing and resolved:
        raise fail("--firing and --resolved exclude each other: give one")
    status = AlertStatus.FIRING if firing else AlertStatus.RESOLVED if resolved else None
    where = AlertFilter(
        status=status,
        rule=rule,
        level=enum_option(WarningLevel, level, "--level"),
        place=place,
        device=device,
        since=time_option(since, "--since"),
        until=time_option(until, "--until"),
        limit=limit,
    )
    conf = settings()
    with _connect(conf) as conn:
        where = dataclasses.replace(where, place=known_place(conn, place))
        found = list_alerts(conn, where)
        if not found:
            named_filters(conn, conf, device=device)
    if as_json:
        echo_json(found, conf)
        return
    if not found:
        typer.echo("no alerts")
        return
    typer.echo(f"times in {conf.zone}")
    for line in alert_lines(found, conf.zone):
        typer.echo(line)


def alert_lines(found: list[AlertRow], zone: tzinfo) -> list[str]:
    """A line per alert of ``cityvitals alerts list``; each column as wide as its longest
    entry (rule ids, device ids and places differ in length from city to city)."""
    rows = [
        (
            a.alert_id,
            a.status,
            a.level,
            a.rule_id,
            f"({len(a.evidence)} device{'s' if len(a.evidence) > 1 else ''})"
            if a.evidence
            else a.device_id,
            "/".join(a.place_path),
            f"since {_when(a.started_at, zone)}  {a.summary}",
        )
        for a in found
    ]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(6)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:6], widths, strict=True))
        + "  "
        + row[6]
        for row in rows
    ]


def _kind(s: Settings, rule_id: str, evidence: tuple[str, ...]) -> str | None:
    """The kind of the rule in force named ``rule_id``; a place's alert (it has evidence) is a
    composite rule's whatever the file says now; None when the rule is gone or the file cannot
    be read."""
    if evidence:
        return "composite"
    from rules import RuleFileError
    from wiring.services import load_rules

    try:
        rule = load_rules(s).by_id.get(rule_id)
    except (RuleFileError, OSError):
        return None
    return None if rule is None else str(rule.kind)


def judged(metric: str, value: float, threshold: float, kind: str | None) -> str:
    """What an alert's value and threshold are, in the words of its rule's kind (its value is
    a score, a count, a silence or a rate as often as the metric's value).

    >>> judged("load_kw", 0.04, 0.9, "anomaly"), judged("w", 0, 2, "composite")
    ('load_kw: anomaly score 0.04 against 0.9', 'devices holding a condition: 0 (2 needed)')
    >>> judged("pm25", 1800, 1800, "absence"), judged("m", 3, 5, None)
    ('no pm25 for 1800 s (after 1800 s)', 'm: 3 against 5 (in the terms of its rule, no longer in force)')
    """
    if kind == "composite":
        return f"devices holding a condition: {value:g} ({threshold:g} needed)"
    if kind == "anomaly":
        return f"{metric}: anomaly score {value:.2f} against {threshold:g}"
    if kind == "absence":
        return f"no {metric} for {value:g} s (after {threshold:g} s)"
    if kind == "rate":
        return f"{metric} changing {value:+g} (limit {threshold:g})"
    if kind is None:
        return f"{metric}: {value:g} against {threshold:g} (in the terms of its rule, no longer in force)"
    return f"{metric} {value:g} against {threshold:g}"


@alerts_app.command("show")
def show(
    alert_id: Annotated[
        str, typer.Argument(help="the alert's id, or its first digits (at least 4)")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """One alert episode: what fired, every transition, and the incident holding it."""
    from sinks.alerts import AmbiguousAlert, UnknownAlert, alert_detail, find_alert

    conf = settings()
    try:
        with _connect(conf) as conn:
            detail = alert_detail(conn, find_alert(conn, alert_id))
    except (UnknownAlert, AmbiguousAlert) as exc:
        raise fail(str(exc)) from None
    if as_json:
        echo_json(detail, conf)
        return
    z, a = conf.zone, detail.alert
    lines = [
        f"alert {a.alert_id} (revision {a.revision}), times in {z}",
        f"  {a.summary}{a.latest_said(z)}",
        f"  rule {a.rule_id}, {a.status}, {a.level}, "
        + (
            f"place {'/'.join(a.place_path)}, last judged on a {a.metric} reading of {a.device_id}"
            if a.evidence
            else f"device {a.device_id} ({a.device_type or '-'}) at {'/'.join(a.place_path)}"
        ),
        f"  {judged(a.metric, a.value, a.threshold, _kind(conf, a.rule_id, a.evidence))}"
        + f"; started {_when(a.started_at, z)}, updated {_when(a.updated_at, z)}, "
        f"resolved {_when(a.resolved_at, z)}" + (f" ({a.resolution})" if a.resolution else ""),
    ]
    if a.evidence:
        lines.append(f"  evidence: {', '.join(a.evidence)}")
    lines.append("transitions:")
    for t in detail.transitions:
        lines.append(f"  {_when(t.ts, z)}  {t.revision:>3} {t.status:<8} {t.level:<6} {t.value:g}")
    i = detail.incident
    if i is None:
        lines.append("incident: none")
    else:
        lines.append(
            f"incident: {i.incident_id} {i.state.value} {i.level.value} {i.category} "
            f"at {i.place_id}: {i.title}"
        )
    for line in lines:
        typer.echo(line)
