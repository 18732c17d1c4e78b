"""``cityvitals incidents ...``: list and show incidents, act on one (a duty officer's or an
inspector's feedback), the departments' performance, take a citizen report, and export the
reports as Open311 GeoReport v2. Times are shown in the city's time zone
(``CITYVITALS_TIMEZONE``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from cityvitals.contracts import (
    HEX_ID,
    Action,
    DispatchKind,
    Feedback,
    IncidentState,
    ReportChannel,
    Tier,
    WarningLevel,
)
from cityvitals.settings import Settings
from wiring.cli_common import (
    echo_json,
    end_on_problems,
    enum_option,
    fail,
    in_order,
    known_place,
    named_filters,
    parse_when,
    settings,
    time_option,
    to_json,
)
from wiring.cli_registry_common import actor as os_actor

__all__ = ["incidents_app", "to_json"]

incidents_app = typer.Typer(
    help="Incidents: list, show, act on them, performance, citizen reports, Open311.",
    no_args_is_help=True,
)


ACTION_WIDTH = max(len(a.value) for a in Action)
"""The steps' actions in one column, the longest (acknowledge) too."""


def _when(ts: datetime | None, zone: tzinfo) -> str:
    return "-" if ts is None else f"{ts.astimezone(zone):%Y-%m-%d %H:%M:%S}"


@contextmanager
def _database(conf: Settings) -> Iterator[Any]:
    from cityvitals import db

    with db.connect(conf) as conn:
        yield conn


def _field_problem(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"]) or "value"
    if err.get("ctx", {}).get("pattern") == HEX_ID:  # an incident's or a dispatch order's id
        name = field.replace("_", " ")
        return f"{name} {err['input']!r} is not an id (32 hexadecimal digits, 0-9 a-f)"
    return f"{field}: {err['msg']}"


@incidents_app.command("defaults")
def defaults() -> None:
    """Print the shipped incident file: the categories, routes, deadlines (sla) and
    verification in force when CITYVITALS_INCIDENTS_FILE names none. It is part of the package
    and does not reload; to change it while the stream runs (shorter deadlines for a trial,
    a department of the city's own), start from a copy (cityvitals incidents defaults >
    incidents.yaml) and name it."""
    from importlib import resources

    typer.echo(resources.files("rules").joinpath("incidents.yaml").read_text(), nl=False)


@incidents_app.command("check")
def check(
    file: Path,
    against_registry: Annotated[
        bool,
        typer.Option(
            "--registry",
            help="also check that the departments its routes name are in the registry (the "
            "settings' database)",
        ),
    ] = False,
) -> None:
    """Validate an incident configuration file (CITYVITALS_INCIDENTS_FILE); every problem is
    printed with its line and field. Then a rule id a category lists that names no rule of
    the rule file in force (CITYVITALS_RULES_FILE, else the shipped one) is named: its alerts
    would never come. The streams service re-reads the file when it changes (and keeps the
    configuration in force when the change is broken)."""
    from rules import RuleFileError
    from rules.incidents import uncategorised, unlimited_tiers, unmatched_rules
    from rules.incidents.config import GENERAL
    from wiring.services import load_incidents, load_rules

    conf = settings()
    try:
        config = load_incidents(conf.model_copy(update={"incidents_file": file}))
        rules = load_rules(conf)
    except RuleFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{file}: {len(config.categories)} categories, {len(config.routes)} routes, "
        f"limits for {len(config.sla)} tiers; version {config.version}"
    )
    problems = unmatched_rules(config, [r.id for r in rules])
    general = uncategorised(config, [r.id for r in rules])
    unlimited = unlimited_tiers(config)
    if unlimited:  # not wrong, but a day to accept is seldom what a route to a tier meant
        typer.echo(
            f"note: no limits (sla) for {', '.join(unlimited)}: their orders get a day to "
            "accept and a week to handle",
            err=True,
        )
    if general:  # not wrong (the catch-all route takes them), but seldom meant
        typer.echo(
            f"note: in no category, so their alerts open '{GENERAL}' incidents for the "
            f"catch-all route: {', '.join(general)}",
            err=True,
        )
    if against_registry:
        from wiring.cli_registry_common import registry

        with registry() as reg:
            known = {d.department_id for d in reg.list_departments()}
        problems += [
            f"routes: department {d!r} is not in the registry (misspelt? "
            "'cityvitals departments add' registers one)"
            for d in sorted({route.department for route in config.routes} - known)
        ]
    end_on_problems(file, problems, ("problem", "problems"))
    typer.echo("OK")


@incidents_app.command("list")
def list_command(
    open_only: Annotated[bool, typer.Option("--open", help="only incidents not closed")] = False,
    state: Annotated[str | None, typer.Option(help="only in this state")] = None,
    place: Annotated[
        str | None, typer.Option(help="at or under this place id (or path prefix a/b)")
    ] = None,
    category: Annotated[str | None, typer.Option()] = None,
    department: Annotated[str | None, typer.Option()] = None,
    level: Annotated[
        str | None, typer.Option(help="this level or higher: blue, yellow, orange or red")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="updated since (ISO time, 19:55, or 15m back)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Incidents, newest first."""
    from sinks.incidents import IncidentFilter, list_incidents

    after = time_option(since, "--since")
    where = IncidentFilter(
        open_only=open_only,
        state=enum_option(IncidentState, state, "--state"),
        place=place,
        category=category,
        department=department,
        level=enum_option(WarningLevel, level, "--level"),
        since=after,
        limit=limit,
    )
    conf = settings()
    with _database(conf) as conn:
        where = dataclasses.replace(where, place=known_place(conn, place))
        found = list_incidents(conn, where)
        if not found:
            named_filters(conn, conf, department=department, category=category)
    if as_json:
        echo_json(found, conf)
        return
    if not found:
        typer.echo("no incidents")
        return
    typer.echo(f"times in {conf.zone}")
    for i in found:
        holder = f"{i.department}/{i.tier}" if i.department else "-"
        typer.echo(
            f"{i.incident_id}  {i.state.value:<10} {i.level.value:<6} {i.category:<16} "
            f"{i.place_id:<14} {holder:<24} opened {_when(i.opened_at, conf.zone)}  {i.title}"
        )


@incidents_app.command("show")
def show(
    incident_id: Annotated[
        str, typer.Argument(help="the incident's id, or its first digits (at least 4)")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """One incident: its state, who holds it, every step, its dispatch orders, escalations,
    alerts and citizen reports."""
    from sinks.incidents import AmbiguousIncident, UnknownIncident, find_incident, incident_detail

    conf = settings()
    try:
        with _database(conf) as conn:
            detail = incident_detail(conn, find_incident(conn, incident_id))
            path = list(detail.incident.place_path)
            names: dict[str, str] = dict(
                conn.execute(
                    "SELECT place_id, name FROM places WHERE place_id = ANY(%s)", (path,)
                ).fetchall()
            )
    except (UnknownIncident, AmbiguousIncident) as exc:
        raise fail(str(exc)) from None
    if as_json:
        echo_json(detail, conf)
        return
    z, i = conf.zone, detail.incident

    def named(place_id: str) -> str:
        return names.get(place_id) or place_id

    from rules.incidents.dispatcher import NO_DEPARTMENT

    holder = f"{i.department} ({i.tier} tier)" if i.department else "nobody yet"
    withdrawn = {d.withdraws for d in detail.dispatches if d.kind is DispatchKind.WITHDRAWAL}
    if i.department and i.dispatch_id in withdrawn:  # closed before it was handled, say
        holder = f"nobody: its order to {holder} was withdrawn"
    refused_by_all = any(t.reason == NO_DEPARTMENT for t in detail.transitions)
    if not i.department and i.state is IncidentState.NEW and refused_by_all:
        holder = "nobody: every department refused it (a duty officer reassigns it)"
    lines = [
        f"incident {i.incident_id} (revision {i.revision}), times in {z}",
        f"  {i.title}",
        f"  {i.category}, {i.level.value}, at {'/'.join(i.place_path)}, from {i.source.value}",
        f"  state {i.state.value}, held by {holder}, dispatch {i.dispatch_id or '-'}",
        f"  acknowledged by {i.acknowledged_by} at {_when(i.acknowledged_at, z)}"
        if i.acknowledged_by
        else "  not acknowledged",
        f"  opened {_when(i.opened_at, z)}, updated {_when(i.updated_at, z)}, "
        f"accept by {_when(i.accept_by, z)}, handle by {_when(i.handle_by, z)}",
        f"  alerts {len(i.alerts)} ({i.open_alerts} open), reports {len(i.reports)}, "
        f"muted {i.muted}, flaps {i.flaps}, limits missed {i.escalations}",
        f"  devices {', '.join(i.devices) if i.devices else '-'}",
        "steps:",
    ]
    for t in detail.transitions:
        step = f"{t.from_state.value if t.from_state else '-'} -> {t.to_state.value}"
        why = f": {t.reason}" if t.reason else ""
        lines.append(
            f"  {_when(t.ts, z)}  {t.action.value:<{ACTION_WIDTH}} {step:<22} by {t.actor}{why}"
        )
    lines.append("dispatch orders:")
    for d in detail.dispatches:
        if d.kind is DispatchKind.WITHDRAWAL:
            lines.append(
                f"  {_when(d.ts, z)}  {d.kind.value:<12} {d.dispatch_id} from {d.department} "
                f"({d.tier.value} {named(d.tier_place_id)}), order {d.withdraws}: {d.reason}"
            )
            continue
        if d.kind is DispatchKind.REVISION:
            lines.append(
                f"  {_when(d.ts, z)}  {d.kind.value:<12} {d.dispatch_id} to {d.department} "
                f"({d.tier.value} {named(d.tier_place_id)}), order {d.revises}: {d.reason}"
            )
            continue
        lines.append(
            f"  {_when(d.ts, z)}  {d.kind.value:<12} {d.dispatch_id} to {d.department} "
            f"({d.tier.value} {named(d.tier_place_id)}), accept by {_when(d.accept_by, z)}, "
            f"handle by {_when(d.handle_by, z)}" + (f': "{d.summary}"' if d.summary else "")
        )
    if detail.undelivered:
        lines.append("not delivered (the notifier gave up; cityvitals resend sends them again):")
    for u in detail.undelivered:
        lines.append(
            f"  {_when(u.given_up_at, z)}  {u.kind or u.event:<12} {u.delivery_id} for "
            f"{u.department or '-'} -> {u.url}: {u.outcome}"
        )
    lines.append("limits missed (escalations; a rise beyond a tier is an order above):")
    for e in detail.escalations:
        missed = (
            f"{e.from_department} ({e.from_tier.value})" if e.from_department else e.from_tier.value
        )
        if e.to_tier is None:
            up = f"nothing above, stays with {e.department}" if e.department else "nothing above"
        else:
            up = f"{e.department} ({e.to_tier.value})" if e.department else e.to_tier.value
        lines.append(
            f"  {_when(e.ts, z)}  {missed} -> {up}: {e.breach} by {_when(e.deadline, z)} missed"
        )
    lines.append("alerts:")
    for a in detail.alerts:
        lines.append(
            f"  {a.alert_id} {a.status:<8} {a.level:<6} {a.device_id}: {a.summary}"
            + a.latest_said(z)
        )
    lines.append("reports:")
    for r in detail.reports:
        photo = f" (photo {r.photo_ref})" if r.photo_ref else ""
        lines.append(
            f"  {_when(r.reported_at, z)}  {r.report_id} {r.channel.value}: {r.text}{photo}"
        )
    if detail.camera_snapshots:
        lines.append("camera snapshots (newest first):")
    for c in detail.camera_snapshots:
        lines.append(
            f"  {_when(c.ts, z)}  {c.camera_id} {c.event_type} {c.value:g}: {c.snapshot_ref}"
        )
    for line in lines:
        typer.echo(line)


@incidents_app.command("act")
def act(
    incident_id: Annotated[
        str, typer.Argument(help="the incident's id, or its first digits (at least 4)")
    ],
    action: Annotated[
        str,
        typer.Argument(
            help="accept, reject, on_site, handled, verify, close, reopen, reassign, acknowledge "
            "or note"
        ),
    ],
    reason: Annotated[str, typer.Option(help="why")] = "",
    department: Annotated[str | None, typer.Option(help="reassign: to this department")] = None,
    tier: Annotated[
        str | None,
        typer.Option(
            help="reassign: at this tier (default: where the routing has the department for "
            "the incident, else the incident's tier)"
        ),
    ] = None,
    dispatch: Annotated[str | None, typer.Option(help="the dispatch order answered")] = None,
    actor: Annotated[
        str | None,
        typer.Option(
            help="who acts, if not you: recorded as 'NAME (via cli:USER)' (default: cli:USER, "
            "the account running the command)"
        ),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            help="wait up to this many seconds for the incident stage's answer: applied (and "
            "the state it left), or refused (why: exit 1); no answer in time: exit 2"
        ),
    ] = 0.0,
) -> None:
    """Send a feedback on the incident (on dispatch.feedback); prints its feedback id. The
    incident stage applies it, or refuses it with a reason (dead letter): --wait says which. A
    close before verification without ``--reason`` is refused here, as the stage would refuse
    it, and so is a reassignment to a department that neither the incident routing nor the
    registry knows. The action sent is in the audit log."""
    from device_registry.incident_publisher import (
        BadAction,
        IncidentPublisher,
        answered_order,
        incident_departments,
        make_feedback,
        unknown_department,
    )
    from rules.incidents.lifecycle import not_now, verify_while_firing, without_reason
    from sinks.ids import is_short_id, too_short
    from sinks.incidents import (
        AmbiguousIncident,
        UnknownIncident,
        find_incident,
        get_incident,
        superseded_dispatch,
    )
    from wiring.services import open_registry

    chosen_tier = enum_option(Tier, tier, "--tier")
    actor = os_actor() if actor is None else f"{actor} (via {os_actor()})"

    def feedback_on(incident_id: str, shown: str | None = None) -> Feedback:
        try:
            return make_feedback(
                incident_id,
                action,
                actor=actor,
                reason=reason,
                department=department,
                tier=chosen_tier,
                dispatch_id=dispatch or shown,
            )
        except BadAction as exc:
            raise fail(str(exc)) from None
        except ValidationError as exc:
            raise fail(_field_problem(exc)) from None

    if not is_short_id(incident_id) and not too_short(incident_id):
        feedback_on(incident_id)  # what is wrong with it named before the database is asked
    conf = settings()
    with open_registry(conf) as registry:
        try:
            incident = get_incident(registry.conn, find_incident(registry.conn, incident_id))
        except (UnknownIncident, AmbiguousIncident) as exc:
            raise fail(str(exc)) from None
        feedback = feedback_on(incident.incident_id, answered_order(incident, action))
        # The state as stored may be a step behind the stage: a close it thinks early only
        # asks for a reason the stage would not need.
        unexplained = without_reason(incident.state, feedback.action, reason)
        if unexplained is not None:
            raise fail(f"{unexplained}: give it with --reason; nothing was sent")
        earlier = superseded_dispatch(registry.conn, incident, feedback.dispatch_id)
        if earlier is not None:
            raise fail(f"--dispatch: {earlier}; nothing was sent")
        ours = feedback.dispatch_id is not None and feedback.dispatch_id == incident.dispatch_id
        too_soon = not_now(incident.state, feedback.action, ours)  # first, as the stage judges
        if too_soon is not None:
            raise fail(f"{too_soon}; nothing was sent")
        still = verify_while_firing(incident, feedback.action)
        if still is not None:
            raise fail(f"{still}; nothing was sent")
        if feedback.action is Action.REASSIGN and feedback.department is not None:
            try:
                routed = incident_departments(conf)
            except (OSError, ValueError) as exc:
                raise fail(f"the incident configuration: {exc}") from None
            listed = (d.department_id for d in registry.list_departments())
            unknown = unknown_department(feedback.department, routed, listed)
            if unknown is not None:
                raise fail(f"--department: {unknown}; nothing was sent")
        IncidentPublisher(conf, registry.producer).send_feedback(feedback)
        registry.record(
            actor,
            action,
            "incident",
            incident.incident_id,
            {"feedback_id": feedback.feedback_id, "reason": reason, "user": os_actor()},
        )
    typer.echo(f"feedback {feedback.feedback_id}: {action} on incident {incident.incident_id} sent")
    if wait > 0:
        _answer(conf, feedback, incident.revision, wait)


def _answer(conf: Settings, feedback: Feedback, revision: int, wait: float) -> None:
    """Wait up to ``wait`` s for what the incident stage did with ``feedback``, sent on the
    incident at ``revision``: the first step it made (applied; the state that step left), or
    a dead letter of it (refused: exit 1); neither in time: exit 2."""
    import time

    from cityvitals import db
    from sinks.readings import refusals

    deadline = time.monotonic() + wait
    since = feedback.ts - timedelta(minutes=1)  # the stage's clock may differ a little
    while True:
        with db.connect(conf) as conn:
            step = conn.execute(
                "SELECT t.revision, t.to_state FROM incident_transitions t"
                " WHERE t.incident_id = %s AND t.revision > %s AND t.feedback_id = %s"
                " ORDER BY t.revision LIMIT 1",
                (feedback.incident_id, revision, feedback.feedback_id),
            ).fetchone()
            found = refusals(conn, since, limit=10_000)
            refused = [r for r in found if r.feedback_id == feedback.feedback_id]
        if step is not None:
            at, state = step
            typer.echo(f"applied: {feedback.action} (revision {at}); the step left it {state}")
            return
        if refused:
            raise fail(f"refused by the incident stage: {refused[0].reason}")
        if time.monotonic() >= deadline:
            typer.echo(
                f"no answer from the incident stage within {wait:g} s (behind, or not running):"
                f" 'cityvitals incidents show {feedback.incident_id[:8]}' tells later",
                err=True,
            )
            raise typer.Exit(2)
        time.sleep(0.5)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


@incidents_app.command("performance")
def performance_command(
    since: Annotated[
        str | None, typer.Option(help="from (ISO time, 19:55, or 7d back; 30 days ago)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="up to (ISO time, 19:55, or 1h back; now)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Closure rate, on-time rate and the times to accept and to handle (median, 90th
    percentile) per department and tier, for the dispatches of a period; a department under
    the closure target is flagged."""
    from sinks.incidents import CLOSURE_TARGET, performance

    conf = settings()
    try:
        last = parse_when(until, conf.zone) if until else datetime.now(UTC)
        first = parse_when(since, conf.zone) if since else last - timedelta(days=30)
    except (ValueError, OverflowError) as exc:
        raise fail(f"--since/--until: {exc}") from None
    in_order(first, last, "--since", "--until")
    with _database(conf) as conn:
        rows = performance(conn, first, last)
    if as_json:
        echo_json(rows, conf)
        return
    z = conf.zone
    typer.echo(
        f"dispatches from {_when(first, z)} to {_when(last, z)} ({z}); "
        f"closure target {CLOSURE_TARGET:.0%}"
    )
    if not rows:
        typer.echo("no dispatches in this period")
    for p in rows:
        flag = f"  UNDER {CLOSURE_TARGET:.0%}" if p.flagged else ""
        typer.echo(
            f"{p.department:<20} {p.tier.value if p.tier else 'all tiers':<10} "
            f"closed {p.closed}/{p.incidents_judged} ({_rate(p.closure_rate)})  "
            f"on time {p.on_time}/{p.judged} judged ({_rate(p.on_time_rate)}; accepted "
            f"{p.accepted_on_time}, handled {p.handled_on_time}; {p.running} running, "
            f"{p.withdrawn} withdrawn); to accept {_took(p.accept_median_s, p.accept_p90_s)}, "
            f"to handle {_took(p.handle_median_s, p.handle_p90_s)}{flag}"
        )


def _took(median: float | None, p90: float | None) -> str:
    """A median time and its 90th percentile, as ``performance`` prints them.

    >>> _took(240, 1392.0), _took(5280, 6720), _took(None, None)
    ('4 min (p90 23 min)', '88 min (p90 112 min)', '-')
    """
    from streams.validation import span  # here: the stream's modules take 0.2 s to import

    if median is None or p90 is None:
        return "-"
    return f"{span(median)} (p90 {span(p90)})"


@incidents_app.command("report")
def report(
    place: Annotated[str, typer.Option(help="the place id")],
    category: Annotated[str, typer.Option(help="the incident category")],
    text: Annotated[str, typer.Option(help="what was reported")],
    photo: Annotated[str | None, typer.Option(help="reference of a photo kept elsewhere")] = None,
    channel: Annotated[str, typer.Option(help="hotline, photo, app or officer")] = "hotline",
    level: Annotated[str, typer.Option(help="blue, yellow, orange or red")] = "blue",
    lat: Annotated[float | None, typer.Option(help="where it was seen: latitude")] = None,
    lon: Annotated[float | None, typer.Option(help="and longitude (with --lat)")] = None,
) -> None:
    """Send a citizen report (on reports); prints its report id. It joins the incidents of its
    place like an alert. The report sent is in the audit log."""
    from device_registry import UnknownPlace
    from device_registry.incident_publisher import (
        IncidentPublisher,
        incident_categories,
        make_report,
    )
    from wiring.services import open_registry

    if (lat is None) != (lon is None):
        raise fail("--lat and --lon go together: give both, or neither")
    chosen_channel = enum_option(ReportChannel, channel, "--channel")
    chosen_level = enum_option(WarningLevel, level, "--level")
    conf = settings()
    try:
        known = incident_categories(conf)
    except (OSError, ValueError) as exc:
        raise fail(f"the incident configuration: {exc}") from None
    if category not in known:
        raise fail(f"--category {category!r} is not a category; one of: {', '.join(known)}")
    with open_registry(conf) as registry:
        try:
            where = registry.get_place(place)
        except UnknownPlace:
            raise fail(f"--place {place!r}: no such place in the registry") from None
        try:
            sent = make_report(
                where.path,
                category,
                text,
                channel=chosen_channel,
                level=chosen_level,
                photo_ref=photo,
                lat=lat,
                lon=lon,
            )
        except ValidationError as exc:
            raise fail(_field_problem(exc)) from None
        IncidentPublisher(conf, registry.producer).send_report(sent)
        registry.record(
            os_actor(),
            "report",
            "report",
            sent.report_id,
            {"place_id": place, "category": category, "user": os_actor()},
        )
    typer.echo(f"report {sent.report_id} sent ({category} at {'/'.join(where.path)})")


@incidents_app.command("open311")
def open311(
    services: Annotated[bool, typer.Option(help="list the services (categories)")] = False,
    status: Annotated[str | None, typer.Option(help="open or closed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Citizen reports and their incidents as Open311 GeoReport v2 service requests (times in
    the city's zone), or the services with --services."""
    from device_registry.incident_publisher import incident_categories
    from sinks.open311 import open311_requests, open311_services

    if status not in (None, "open", "closed"):
        raise fail(f"--status {status!r}: give open or closed")
    conf = settings()
    try:
        titles = incident_categories(conf)
    except (OSError, ValueError) as exc:
        raise fail(f"the incident configuration: {exc}") from None
    with _database(conf) as conn:
        if services:
            found: list[Any] = open311_services(conn, titles)
        else:
            found = open311_requests(conn, conf.zone, status=status, titles=titles)  # type: ignore[arg-type]
    if as_json:
        echo_json(found, conf)
        return
    for item in found:
        if services:
            typer.echo(f"{item.service_code:<20} {item.service_name}")
        else:
            typer.echo(
                f"{item.service_request_id}  {item.status:<6} {item.service_code:<16} "
                f"{item.requested_datetime.isoformat()}  {item.status_notes}"
            )
