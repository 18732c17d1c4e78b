"""Incidents stored, read, shown and acted on, against the real PostgreSQL and tansu: the sinks
keep the highest revision once, the queries filter and measure a hand-made history, the CLI
and the API show it and send a valid Feedback / CitizenReport onto the real topics, and the
reports come out as Open311 GeoReport v2."""

from __future__ import annotations

import getpass
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from cityvitals import db, kafka
from cityvitals.contracts import (
    Action,
    Alert,
    AlertResolution,
    AlertStatus,
    CitizenReport,
    DispatchKind,
    DispatchOrder,
    Escalation,
    Feedback,
    Incident,
    IncidentSource,
    IncidentState,
    IncidentTransition,
    IncidentUpdate,
    Reading,
    ReportChannel,
    Tier,
    WarningLevel,
)
from cityvitals.settings import Settings
from cityvitals.topics import Topic
from rules.incidents import PLATFORM
from sinks import (
    AlertSink,
    DispatchSink,
    EscalationSink,
    IncidentFilter,
    IncidentSink,
    ReadingSink,
    ReportSink,
    get_incident,
    incident_detail,
    list_incidents,
    open311_requests,
    open311_services,
    performance,
)
from streams.resume import open_incidents
from tests.integration.conftest import TEST_DAY, Pipeline, api_client, at, wait_for
from wiring import cli_stack
from wiring.cli import app
from wiring.cli_stack import StepFeed

pytestmark = pytest.mark.integration

T0 = datetime.fromisoformat(at("08:00:00"))
DAY_AFTER = (TEST_DAY + timedelta(days=1)).isoformat()
Conn = psycopg.Connection[tuple[Any, ...]]


def hexid() -> str:
    return uuid.uuid4().hex


class History:
    """Builds incidents step by step, as the incident stage would, and stores them."""

    def __init__(self, conn: Conn, city: str) -> None:
        self.conn = conn
        self.city = city
        self.revisions: dict[str, Incident] = {}

    def open(self, category: str, street: str, level: WarningLevel, **fields: Any) -> Incident:
        incident = Incident(
            incident_id=fields.pop("incident_id", None) or hexid(),
            revision=0,
            category=category,
            state=IncidentState.NEW,
            level=level,
            source=fields.pop("source", IncidentSource.ALERT),
            place_id=street,
            place_path=(self.city, f"{self.city}-d", street),
            title=f"{category} at {street}",
            opened_at=fields.pop("at", T0),
            updated_at=T0,
            **fields,
        )
        self.step(incident, Action.OPEN, IncidentState.NEW, incident.opened_at)
        return incident

    def step(
        self,
        incident: Incident,
        action: Action,
        to: IncidentState,
        ts: datetime,
        actor: str | None = None,
        **fields: Any,
    ) -> Incident:
        before = self.revisions.get(incident.incident_id)
        now = incident.model_copy(
            update={
                "revision": 0 if before is None else before.revision + 1,
                "state": to,
                "updated_at": ts,
                **fields,
            }
        )
        transition = IncidentTransition(
            incident_id=now.incident_id,
            revision=now.revision,
            action=action,
            from_state=None if before is None else before.state,
            to_state=to,
            actor=actor or fields.get("department") or "platform",
            reason=f"{action.value} at {ts:%H:%M}",
            ts=ts,
            tier=now.tier,
            department=now.department,
        )
        IncidentSink(self.conn).write([IncidentUpdate(incident=now, transition=transition)])
        self.revisions[now.incident_id] = now
        return now

    def dispatch(
        self,
        incident: Incident,
        department: str,
        tier: Tier,
        ts: datetime,
        kind: DispatchKind = DispatchKind.ORDER,
    ) -> DispatchOrder:
        current = self.revisions[incident.incident_id]
        order = DispatchOrder(
            dispatch_id=hexid(),
            kind=kind,
            incident_id=incident.incident_id,
            department=department,
            tier=tier,
            tier_place_id=current.place_path[{"street": 2, "district": 1, "city": 0}[tier]],
            category=current.category,
            level=current.level,
            place_id=current.place_id,
            place_path=current.place_path,
            title=current.title,
            accept_by=ts + timedelta(minutes=10),
            handle_by=ts + timedelta(hours=8),
            ts=ts,
        )
        DispatchSink(self.conn).write([order])
        self.step(
            current,
            Action.ESCALATE if kind is DispatchKind.ESCALATION else Action.DISPATCH,
            IncidentState.DISPATCHED,
            ts,
            department=department,
            tier=tier,
            dispatch_id=order.dispatch_id,
            accept_by=order.accept_by,
            handle_by=order.handle_by,
        )
        return order

    def go(self, incident: Incident, *steps: tuple[Action, IncidentState, datetime]) -> Incident:
        current = self.revisions[incident.incident_id]
        for action, to, ts in steps:
            current = self.step(current, action, to, ts)
        return current


def closing(start: datetime) -> tuple[tuple[Action, IncidentState, datetime], ...]:
    return (
        (Action.HANDLED, IncidentState.HANDLED, start),
        (Action.VERIFY, IncidentState.VERIFIED, start + timedelta(minutes=15)),
        (Action.CLOSE, IncidentState.CLOSED, start + timedelta(minutes=15)),
    )


@pytest.fixture()
def town(pipeline: Pipeline) -> Iterator[Settings]:
    """A schema of its own with a city, a district and two streets, in Asia/Shanghai."""
    settings = pipeline.settings.model_copy(
        update={"database_schema": f"inc{uuid.uuid4().hex[:12]}", "timezone": "Asia/Shanghai"}
    )
    db.migrate(settings)
    try:
        with db.connect(settings) as conn:
            add_places(conn, "tc")
        yield settings
    finally:
        with db.connect(settings) as conn:
            conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def add_places(conn: Conn, city: str) -> None:
    conn.execute(
        "INSERT INTO places (place_id, level, name, path, lat, lon) VALUES"
        " (%(c)s, 'city', 'Town', ARRAY[%(c)s], NULL, NULL),"
        " (%(c)s || '-d', 'district', 'Down', ARRAY[%(c)s, %(c)s || '-d'], NULL, NULL),"
        " (%(c)s || '-s1', 'street', 'One', ARRAY[%(c)s, %(c)s || '-d', %(c)s || '-s1'],"
        "  31.25, 121.5),"
        " (%(c)s || '-s2', 'street', 'Two', ARRAY[%(c)s, %(c)s || '-d', %(c)s || '-s2'],"
        "  NULL, NULL)",
        {"c": city},
    )


# --- sinks ---------------------------------------------------------------------------------


def test_the_incident_sink_keeps_the_highest_revision_and_every_step_once(town: Settings) -> None:
    with db.connect(town) as conn:
        h = History(conn, "tc")
        first = h.open("flooding", "tc-s1", WarningLevel.ORANGE)
        h.dispatch(first, "street-ops", Tier.STREET, T0 + timedelta(minutes=1))
        later = h.go(first, (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=3)))
        stale = IncidentUpdate(
            incident=first,
            transition=IncidentTransition(
                incident_id=first.incident_id,
                revision=0,
                action=Action.OPEN,
                from_state=None,
                to_state=IncidentState.NEW,
                actor="platform",
                ts=T0,
            ),
        )
        assert IncidentSink(conn).write([stale, stale]) == 0  # a replay of revision 0
        row = conn.execute(
            "SELECT revision, state, department, dispatch_id FROM incidents WHERE incident_id = %s",
            (first.incident_id,),
        ).fetchone()
        assert row == (2, "accepted", "street-ops", later.dispatch_id)
        steps = conn.execute(
            "SELECT revision, action, from_state, to_state FROM incident_transitions"
            " WHERE incident_id = %s ORDER BY revision",
            (first.incident_id,),
        ).fetchall()
        assert steps == [
            (0, "open", None, "new"),
            (1, "dispatch", "new", "dispatched"),
            (2, "accept", "dispatched", "accepted"),
        ]


def test_escalations_and_reports_are_stored_once(town: Settings) -> None:
    report = CitizenReport(
        report_id=hexid(),
        channel=ReportChannel.HOTLINE,
        category="flooding",
        place_path=("tc", "tc-d", "tc-s1"),
        text="water up to the knees",
        reported_at=T0,
    )
    escalation = Escalation(
        incident_id=hexid(),
        from_tier=Tier.CITY,
        to_tier=None,
        department="flood-control",
        breach="handle",
        deadline=T0,
        ts=T0,
    )
    with db.connect(town) as conn:
        assert ReportSink(conn).write([report]) == 1
        assert ReportSink(conn).write([report, report]) == 0
        assert EscalationSink(conn).write([escalation]) == 1
        assert EscalationSink(conn).write([escalation]) == 0
        assert conn.execute("SELECT count(*) FROM escalations").fetchone() == (1,)
        assert conn.execute("SELECT to_tier FROM escalations").fetchone() == (None,)


# --- queries -------------------------------------------------------------------------------


def made_history(conn: Conn, city: str, street_ops: str, water: str) -> dict[str, Any]:
    """Three incidents for ``street_ops`` at the street tier: the first accepted and handled
    in time and closed; the second accepted late, closed; the third accepted in time, not
    handled in time, escalated to ``water`` at the district, which closes it in time."""
    h = History(conn, city)
    s1, s2 = f"{city}-s1", f"{city}-s2"
    one = h.open("flooding", s1, WarningLevel.ORANGE, at=T0)
    two = h.open("flooding", s2, WarningLevel.YELLOW, at=T0 + timedelta(minutes=1))
    three = h.open("traffic", s1, WarningLevel.RED, at=T0 + timedelta(minutes=2))
    for incident in (one, two, three):
        h.dispatch(incident, street_ops, Tier.STREET, T0 + timedelta(minutes=2))
    h.go(one, (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=5)))
    h.go(one, *closing(T0 + timedelta(hours=1)))
    h.go(two, (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=30)))
    h.go(two, *closing(T0 + timedelta(hours=2)))
    h.go(three, (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=6)))
    up = T0 + timedelta(hours=8, minutes=3)
    EscalationSink(conn).write(
        [
            Escalation(
                incident_id=three.incident_id,
                from_tier=Tier.STREET,
                to_tier=Tier.DISTRICT,
                department=water,
                from_department=street_ops,
                breach="handle",
                deadline=up - timedelta(minutes=1),
                ts=up,
            )
        ]
    )
    h.dispatch(three, water, Tier.DISTRICT, up, DispatchKind.ESCALATION)
    h.go(three, (Action.ACCEPT, IncidentState.ACCEPTED, up + timedelta(minutes=4)))
    h.go(three, *closing(up + timedelta(hours=1)))
    return {"one": one, "two": two, "three": three, "history": h}


def test_performance_per_department_and_tier_from_a_hand_made_history(town: Settings) -> None:
    with db.connect(town) as conn:
        made_history(conn, "tc", "street-ops", "water")
        rows = performance(conn, T0 - timedelta(days=1), T0 + timedelta(days=1))
    by = {(p.department, p.tier): p for p in rows}
    street = by[("street-ops", Tier.STREET)]
    assert (street.dispatches, street.incidents, street.closed) == (3, 3, 2)
    assert street.closure_rate == pytest.approx(2 / 3)
    assert street.flagged
    # accepted in time: the first and the third; handled in time: the first and the second
    # (the third was handled after its escalation, by the district)
    assert (street.accepted_on_time, street.handled_on_time, street.on_time) == (2, 2, 1)
    assert street.on_time_rate == pytest.approx(1 / 3)
    district = by[("water", Tier.DISTRICT)]
    assert (district.dispatches, district.closed, district.on_time) == (1, 1, 1)
    assert district.closure_rate == 1.0 and not district.flagged
    totals = by[("street-ops", None)]
    assert (totals.incidents, totals.closed, totals.flagged) == (3, 2, True)
    # accepted 3, 28 and 4 minutes after the orders; handled 58 and 118 minutes after two of
    # them (the third after its escalation, when it was no longer the street's order)
    assert (street.accept_median_s, street.accept_p90_s) == (240, pytest.approx(1392))
    assert (street.handle_median_s, street.handle_p90_s) == (5280, pytest.approx(6720))
    assert (district.accept_median_s, district.handle_median_s) == (240, 3600)
    assert (totals.accept_median_s, totals.handle_p90_s) == (240, pytest.approx(6720))
    assert [(p.department, p.tier) for p in rows] == [
        ("street-ops", Tier.STREET),
        ("street-ops", None),
        ("water", Tier.DISTRICT),
        ("water", None),
    ]
    with db.connect(town) as conn:
        assert performance(conn, T0 + timedelta(days=1), T0 + timedelta(days=2)) == []


def test_a_dispatch_running_or_withdrawn_before_its_deadline_is_not_judged(
    town: Settings,
) -> None:
    """Only a deadline that passed while the dispatch was the incident's order counts
    against its department: not one still ahead, nor one taken away before it came."""
    now = datetime.now(UTC)
    with db.connect(town) as conn:
        h = History(conn, "tc")
        running = h.open("flooding", "tc-s1", WarningLevel.ORANGE, at=now - timedelta(minutes=2))
        h.dispatch(running, "crew", Tier.STREET, now - timedelta(minutes=1))  # accept by +10 min
        moved = h.open("flooding", "tc-s2", WarningLevel.ORANGE, at=T0)
        first = h.dispatch(moved, "crew", Tier.STREET, T0)
        reassigned = T0 + timedelta(minutes=3)  # before the crew's accept_by
        # the crew is told (a withdrawal: no order, not counted), the other crew ordered
        withdrawal = first.model_copy(
            update={
                "dispatch_id": hexid(),
                "kind": DispatchKind.WITHDRAWAL,
                "withdraws": first.dispatch_id,
                "reason": "reassigned to other-crew (street tier)",
                "ts": reassigned,
            }
        )
        DispatchSink(conn).write([withdrawal])
        h.dispatch(moved, "other-crew", Tier.STREET, reassigned, DispatchKind.REASSIGNMENT)
        false_alarm = h.open("traffic", "tc-s1", WarningLevel.YELLOW, at=T0)
        work = h.dispatch(false_alarm, "crew", Tier.STREET, T0)
        h.go(
            false_alarm,
            (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=2)),
            (Action.CLOSE, IncidentState.CLOSED, T0 + timedelta(hours=1)),  # before handle_by
        )
        stopped = work.model_copy(  # as the desk tells the crew the work stops
            update={
                "dispatch_id": hexid(),
                "kind": DispatchKind.WITHDRAWAL,
                "withdraws": work.dispatch_id,
                "reason": "closed by duty: a false alarm",
                "ts": T0 + timedelta(hours=1),
            }
        )
        DispatchSink(conn).write([stopped])
        ignored = h.open("traffic", "tc-s2", WarningLevel.YELLOW, at=T0)
        h.dispatch(ignored, "crew", Tier.STREET, T0)  # never accepted: late
        rows = performance(conn, T0 - timedelta(days=1), now + timedelta(hours=1))
        shown = incident_detail(conn, moved.incident_id).dispatches
    assert [(d.kind, d.withdraws) for d in shown] == [
        (DispatchKind.ORDER, None),
        (DispatchKind.WITHDRAWAL, first.dispatch_id),
        (DispatchKind.REASSIGNMENT, None),
    ]
    by = {(p.department, p.tier): p for p in rows}
    crew = by[("crew", Tier.STREET)]
    assert (crew.dispatches, crew.running, crew.withdrawn, crew.judged) == (4, 1, 2, 1)
    assert (crew.accepted_on_time, crew.on_time, crew.on_time_rate) == (1, 0, 0.0)
    # its closure rate is of the one incident it is judged on, not of the four it was sent
    assert (crew.incidents, crew.incidents_judged, crew.closed, crew.closure_rate) == (4, 1, 0, 0)
    other = by[("other-crew", Tier.STREET)]  # the reassigned one, never accepted: late
    assert (other.running, other.withdrawn, other.judged, other.on_time_rate) == (0, 0, 1, 0.0)
    # closed before it was handled, its order withdrawn: nobody holds it any more
    closed = run(town, "show", false_alarm.incident_id).output
    assert "held by nobody: its order to crew (street tier) was withdrawn" in closed, closed
    held = run(town, "show", moved.incident_id).output  # its first order withdrawn, not its last
    assert "held by other-crew (street tier)" in held, held


def test_an_order_sent_up_in_the_same_instant_is_withdrawn_not_judged(town: Settings) -> None:
    """The desk sends an order and, in the same instant, sends the incident up (its level is
    beyond the tier) with a withdrawal naming the order: the first department is judged on
    nothing, and what the department above did (accept, handle, close) is not counted as its
    own (the order ended at the withdrawal, though the next order has the same time)."""
    with db.connect(town) as conn:
        h = History(conn, "tc")
        noise = h.open("noise", "tc-s1", WarningLevel.ORANGE, at=T0)
        first = h.dispatch(noise, "crew", Tier.STREET, T0)
        withdrawal = first.model_copy(
            update={
                "dispatch_id": hexid(),
                "kind": DispatchKind.WITHDRAWAL,
                "withdraws": first.dispatch_id,
                "reason": "escalated to eco (district tier): now orange, beyond crew",
            }
        )
        DispatchSink(conn).write([withdrawal])
        h.dispatch(noise, "eco", Tier.DISTRICT, T0, DispatchKind.ESCALATION)
        h.go(
            noise,
            (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=2)),
            *closing(T0 + timedelta(minutes=30)),
        )
        rows = performance(conn, T0 - timedelta(days=1), T0 + timedelta(days=1))
    by = {(p.department, p.tier): p for p in rows}
    crew = by[("crew", Tier.STREET)]
    assert (crew.dispatches, crew.withdrawn, crew.judged, crew.accepted_on_time) == (1, 1, 0, 0)
    assert (crew.incidents_judged, crew.closure_rate, crew.flagged) == (0, None, False)
    eco = by[("eco", Tier.DISTRICT)]
    assert (eco.on_time, eco.closed, eco.closure_rate, eco.flagged) == (1, 1, 1.0, False)


def test_work_handled_then_sent_out_again_is_not_judged_for_closing(town: Settings) -> None:
    """The street handled a flood in time; it turned red, reopened and went to the district,
    which closed it: the street is judged on time, and not for an incident it could not
    close (its closure rate would read 0 and be flagged)."""
    with db.connect(town) as conn:
        h = History(conn, "tc")
        flood = h.open("flooding", "tc-s1", WarningLevel.YELLOW, at=T0)
        h.dispatch(flood, "crew", Tier.STREET, T0)
        h.go(
            flood,
            (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=2)),
            (Action.HANDLED, IncidentState.HANDLED, T0 + timedelta(minutes=30)),
            (Action.REOPEN, IncidentState.NEW, T0 + timedelta(minutes=40)),
        )
        h.dispatch(flood, "water", Tier.DISTRICT, T0 + timedelta(minutes=40))
        h.go(
            flood,
            (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=42)),
            *closing(T0 + timedelta(minutes=60)),
        )
        rows = performance(conn, T0 - timedelta(days=1), T0 + timedelta(days=1))
    by = {(p.department, p.tier): p for p in rows}
    crew = by[("crew", Tier.STREET)]
    assert (crew.judged, crew.on_time, crew.incidents_judged, crew.closed) == (1, 1, 0, 0)
    assert (crew.closure_rate, crew.flagged) == (None, False)
    water = by[("water", Tier.DISTRICT)]
    assert (water.on_time, water.closed, water.closure_rate, water.flagged) == (1, 1, 1.0, False)


def test_revisions_of_one_instant_read_in_the_order_the_level_rose(town: Settings) -> None:
    """Orange then red within a second: shown so, the last line the level now, and the order
    judged by the red's limits, whichever id sorts first."""
    with db.connect(town) as conn:
        h = History(conn, "tr")
        rose = h.open("flooding", "tr-s1", WarningLevel.YELLOW, at=T0)
        order = h.dispatch(rose, "crew", Tier.STREET, T0)
        at = T0 + timedelta(minutes=1)
        orange, red = (
            order.model_copy(
                update={
                    "dispatch_id": dispatch_id,
                    "kind": DispatchKind.REVISION,
                    "revises": order.dispatch_id,
                    "level": level,
                    "accept_by": at + timedelta(minutes=limit),
                    "reason": f"now {level}",
                    "ts": at,
                }
            )
            for dispatch_id, level, limit in (
                ("f" * 32, WarningLevel.ORANGE, 10),
                ("0" * 32, WarningLevel.RED, 5),
            )
        )
        DispatchSink(conn).write([red, orange])
        shown = incident_detail(conn, rose.incident_id).dispatches
        h.go(rose, (Action.ACCEPT, IncidentState.ACCEPTED, at + timedelta(minutes=7)))
        rows = performance(conn, T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert [d.level for d in shown] == [WarningLevel.YELLOW, WarningLevel.ORANGE, WarningLevel.RED]
    crew = {(p.department, p.tier): p for p in rows}[("crew", Tier.STREET)]
    assert (crew.judged, crew.accepted_on_time) == (1, 0)  # 7 minutes: late for the red's 5


def test_an_order_is_judged_by_its_latest_revision_and_a_revision_is_no_order(
    town: Settings,
) -> None:
    """The level rose within the tier's reach: the department was sent a revision with
    sooner limits. Accepted after the revised limit (but before the first) is late; the
    revision is stored, shown after its order, and counts as no dispatch."""
    with db.connect(town) as conn:
        h = History(conn, "tc")
        rose = h.open("flooding", "tc-s1", WarningLevel.YELLOW, at=T0)
        order = h.dispatch(rose, "crew", Tier.STREET, T0)  # accept by +10 min
        revisions = [
            order.model_copy(
                update={
                    "dispatch_id": hexid(),
                    "kind": DispatchKind.REVISION,
                    "revises": order.dispatch_id,
                    "level": level,
                    "accept_by": T0 + timedelta(minutes=limit),
                    "reason": f"now {level}: accept by ...",
                    "ts": T0 + timedelta(minutes=minute),
                }
            )
            # the latest is the soonest here; an earlier one's limit (6) would be met
            for minute, level, limit in ((1, WarningLevel.ORANGE, 6), (2, WarningLevel.RED, 4))
        ]
        DispatchSink(conn).write(revisions)
        missed = Escalation(  # before the revisions: its order's accepting limit ran out
            incident_id=rose.incident_id,
            from_tier=Tier.STREET,
            to_tier=None,
            department="crew",
            breach="accept",
            deadline=T0,
            ts=T0 + timedelta(seconds=30),
        )
        EscalationSink(conn).write([missed])
        h.go(rose, (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=5)))
        kept = h.open("flooding", "tc-s2", WarningLevel.YELLOW, at=T0)
        h.dispatch(kept, "crew", Tier.STREET, T0)  # no revision: accepted at 5 is in time
        h.go(kept, (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=5)))
        seen_at = T0 + timedelta(minutes=7)
        h.step(
            kept,
            Action.ACKNOWLEDGE,
            IncidentState.ACCEPTED,
            seen_at,
            acknowledged_by="ana (duty_officer)",
            acknowledged_at=seen_at,
        )
        rows = performance(conn, T0 - timedelta(days=1), T0 + timedelta(days=1))
        shown = incident_detail(conn, rose.incident_id).dispatches
        seen = incident_detail(conn, kept.incident_id).incident
    assert [(d.kind, d.revises) for d in shown] == [
        (DispatchKind.ORDER, None),
        (DispatchKind.REVISION, order.dispatch_id),
        (DispatchKind.REVISION, order.dispatch_id),
    ]
    assert [d.dispatch_id for d in shown[1:]] == [d.dispatch_id for d in revisions]
    crew = {(p.department, p.tier): p for p in rows}[("crew", Tier.STREET)]
    # a revision neither counts as a dispatch nor ends its order: both orders are judged
    assert (crew.dispatches, crew.incidents, crew.withdrawn, crew.judged) == (2, 2, 0, 2)
    assert crew.accepted_on_time == 1  # the one not revised; the other missed 4 minutes
    assert (seen.acknowledged_by, seen.acknowledged_at) == ("ana (duty_officer)", seen_at)
    # A desk that continues it from the database knows the revisions (an answer may name one)
    # and that the order's accepting limit ran out: a revision is no new order to run out.
    back = {t.incident.incident_id: t for t in open_incidents(town)}[rose.incident_id]
    assert back.revisions == [d.dispatch_id for d in revisions]
    assert (back.breached, back.orders) == (["accept"], 3)
    listed = run(town, "show", rose.incident_id)
    assert listed.exit_code == 0, listed.output
    assert f"revision     {shown[1].dispatch_id} to crew (street One), order " in listed.output
    assert "  not acknowledged" in listed.output
    acknowledged = run(town, "show", kept.incident_id).output
    local = seen_at.astimezone(town.zone)
    assert f"acknowledged by ana (duty_officer) at {local:%Y-%m-%d %H:%M:%S}" in acknowledged
    # every step's "from -> to" in one column, after the longest action (acknowledge)
    steps = [line for line in acknowledged.splitlines() if " -> " in line]
    assert (
        len(steps) >= 4 and len({line.index(" -> ") - len(line.split()[3]) for line in steps}) == 1
    )


def test_an_incident_handled_in_time_and_waiting_for_verification_is_not_yet_unclosed(
    town: Settings,
) -> None:
    """Handled a minute ago, verified in 15 minutes: the department is not flagged for an
    incident whose closing is not due; one still at work past its deadline counts."""
    with db.connect(town) as conn:
        h = History(conn, "tc")
        done = h.open("flooding", "tc-s1", WarningLevel.ORANGE, at=T0)
        h.dispatch(done, "crew", Tier.STREET, T0)
        h.go(
            done,
            (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=2)),
            (Action.HANDLED, IncidentState.HANDLED, T0 + timedelta(hours=1)),
        )
        stuck = h.open("flooding", "tc-s2", WarningLevel.ORANGE, at=T0)
        h.dispatch(stuck, "crew", Tier.STREET, T0)
        h.go(stuck, (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(minutes=2)))
        rows = performance(conn, T0 - timedelta(days=1), T0 + timedelta(days=1))
    crew = {(p.department, p.tier): p for p in rows}[("crew", Tier.STREET)]
    assert (crew.on_time, crew.incidents, crew.incidents_judged, crew.closed) == (1, 2, 1, 0)
    assert crew.closure_rate == 0.0  # of the one past its deadline, not of both


def test_a_desk_continued_from_the_database_knows_which_sensors_fell_silent(
    town: Settings,
) -> None:
    """The alerts table keeps why an episode ended; a desk continued from it knows a gauge
    whose latest episode ended stale (its sensors may not verify the incident), not one whose
    earlier episode did and whose latest ended on a measurement."""

    def episode(device: str, minute: int, resolution: AlertResolution) -> list[Alert]:
        fired = Alert(
            alert_id=hexid(),
            revision=0,
            rule_id="waterlogging-depth",
            status=AlertStatus.FIRING,
            level=WarningLevel.ORANGE,
            device_id=device,
            metric="water_level_cm",
            value=30,
            threshold=25,
            place_path=("tc", "tc-d", "tc-s1", "tc-s1-g"),
            started_at=T0 + timedelta(minutes=minute),
            ts=T0 + timedelta(minutes=minute),
            summary="water 30 cm",
        )
        ended = fired.model_copy(
            update={
                "revision": 1,
                "status": AlertStatus.RESOLVED,
                "resolution": resolution,
                "ts": T0 + timedelta(minutes=minute + 5),
            }
        )
        return [fired, ended]

    silent = episode("wl-silent", 0, AlertResolution.STALE)
    back = [
        *episode("wl-back", 0, AlertResolution.STALE),
        *episode("wl-back", 20, AlertResolution.CLEARED),
    ]
    with db.connect(town) as conn:
        for alert in (*silent, *back):
            AlertSink(conn).write([alert])
        stored = conn.execute(
            "SELECT device_id, resolution FROM alerts ORDER BY device_id, started_at"
        ).fetchall()
        h = History(conn, "tc")
        flood = h.open(
            "flooding",
            "tc-s1",
            WarningLevel.ORANGE,
            alerts=tuple(dict.fromkeys(a.alert_id for a in (*silent, *back))),
        )
        h.dispatch(flood, "crew", Tier.STREET, T0)
    assert stored == [("wl-back", "stale"), ("wl-back", "cleared"), ("wl-silent", "stale")]
    resumed = {t.incident.incident_id: t for t in open_incidents(town)}[flood.incident_id]
    assert resumed.blind == ["waterlogging-depth|wl-silent"]


def test_a_desk_continued_from_the_database_knows_since_when_a_closed_one_fires_again(
    town: Settings,
) -> None:
    """A closed incident whose gauge fires again after the close: a desk continued from the
    database counts the return from the new episode's start, so it reopens on time after a
    restart (an episode that fired before the close, and still fires, is no return)."""
    now = datetime.now(UTC).replace(microsecond=0)

    def firing(device: str, started: datetime) -> Alert:
        return Alert(
            alert_id=hexid(), revision=0, rule_id="waterlogging-depth",
            status=AlertStatus.FIRING, level=WarningLevel.YELLOW, device_id=device,
            metric="water_level_cm", value=16, threshold=15,
            place_path=("tc", "tc-d", "tc-s3", "tc-s3-g"), started_at=started, ts=started,
            summary=f"water 16 cm at {device}",
        )  # fmt: skip

    kept, back = firing("wl-kept", now - timedelta(minutes=30)), firing("wl-back", now)
    with db.connect(town) as conn:
        AlertSink(conn).write([kept, back])
        h = History(conn, "tc")
        closed = h.open(
            "flooding", "tc-s3", WarningLevel.YELLOW, at=now - timedelta(minutes=40),
            alerts=(kept.alert_id, back.alert_id),
        )  # fmt: skip
        h.go(closed, (Action.CLOSE, IncidentState.CLOSED, now - timedelta(minutes=10)))
        still = h.open("flooding", "tc-s4", WarningLevel.YELLOW, at=now - timedelta(minutes=40),
                       alerts=(kept.alert_id,))  # fmt: skip
        h.go(still, (Action.CLOSE, IncidentState.CLOSED, now - timedelta(minutes=10)))
    resumed = {t.incident.incident_id: t for t in open_incidents(town)}
    assert resumed[closed.incident_id].back_since == now
    assert resumed[still.incident_id].back_since is None


def test_a_desk_continued_from_the_database_knows_who_reassigned_an_incident(
    town: Settings,
) -> None:
    """A person's reassignment holds against a category taking the incident over; a desk
    continued from the database knows it was theirs when their move was the last, not when the
    platform moved it (a takeover) or it was escalated since."""
    later = T0 + timedelta(minutes=5)

    def reassigned(h: History, street: str, actor: str) -> Incident:
        incident = h.open("gas", street, WarningLevel.ORANGE)
        h.dispatch(incident, "gas-utility", Tier.STREET, T0)
        current = h.revisions[incident.incident_id]
        h.step(
            current, Action.REASSIGN, IncidentState.DISPATCHED, later, actor, department="hazmat"
        )
        return incident

    with db.connect(town) as conn:
        h = History(conn, "tc")
        by_ana = reassigned(h, "tc-s1", "ana")
        taken_over = reassigned(h, "tc-s2", PLATFORM)
        escalated = reassigned(h, "tc-s3", "ana")
        h.dispatch(escalated, "hazmat", Tier.DISTRICT, later, DispatchKind.ESCALATION)
        routed_again = reassigned(h, "tc-s4", "ana")  # refused, then in the routing's digest
        h.dispatch(routed_again, "gas-utility", Tier.STREET, later, DispatchKind.DIGEST)
    back = {t.incident.incident_id: t.assigned_by for t in open_incidents(town)}
    assert back[by_ana.incident_id] == "ana"
    assert back[taken_over.incident_id] is None
    assert back[escalated.incident_id] is None
    assert back[routed_again.incident_id] is None


def test_incidents_are_listed_by_filter_newest_first_and_shown_whole(town: Settings) -> None:
    with db.connect(town) as conn:
        made = made_history(conn, "tc", "street-ops", "water")
        h: History = made["history"]
        fresh = h.open("flooding", "tc-s2", WarningLevel.BLUE, at=T0 + timedelta(hours=1))
        alert = Alert(
            alert_id=hexid(),
            revision=0,
            rule_id="waterlogging-depth",
            status=AlertStatus.FIRING,
            level=WarningLevel.BLUE,
            device_id="wl-1",
            metric="water_level_cm",
            value=12,
            threshold=10,
            place_path=("tc", "tc-d", "tc-s2", "tc-s2-g"),
            started_at=T0,
            ts=T0,
            summary="water 12 cm above 10",
        )
        AlertSink(conn).write([alert])
        report = CitizenReport(
            report_id=hexid(),
            channel=ReportChannel.PHOTO,
            category="flooding",
            place_path=("tc", "tc-d", "tc-s2"),
            text="the underpass is flooded",
            photo_ref="photos/underpass.jpg",
            reported_at=T0 + timedelta(minutes=50),
        )
        ReportSink(conn).write([report])
        h.step(
            fresh,
            Action.ATTACH,
            IncidentState.NEW,
            T0 + timedelta(hours=1, minutes=1),
            alerts=(alert.alert_id,),
            reports=(report.report_id,),
        )

        def ids(**where: Any) -> list[str]:
            return [i.incident_id for i in list_incidents(conn, IncidentFilter(**where))]

        one, two, three = (made[k].incident_id for k in ("one", "two", "three"))
        assert ids() == [fresh.incident_id, three, two, one]
        assert ids(open_only=True) == [fresh.incident_id]
        assert ids(category="traffic") == [three]
        assert ids(place="tc-s2") == [fresh.incident_id, two]
        assert ids(place="tc/tc-d/tc-s1") == [three, one]
        assert ids(department="water") == [three]
        assert ids(level=WarningLevel.RED) == [three]
        assert ids(level=WarningLevel.ORANGE) == [three, one]  # that level or higher
        assert ids(state=IncidentState.CLOSED, limit=2) == [three, two]
        assert ids(since=T0 + timedelta(hours=9)) == [three]

        detail = incident_detail(conn, three)
        assert [t.action for t in detail.transitions][:3] == [
            Action.OPEN,
            Action.DISPATCH,
            Action.ACCEPT,
        ]
        assert [d.kind for d in detail.dispatches] == [DispatchKind.ORDER, DispatchKind.ESCALATION]
        assert [(e.from_tier, e.to_tier) for e in detail.escalations] == [
            (Tier.STREET, Tier.DISTRICT)
        ]
        shown = incident_detail(conn, fresh.incident_id)
        assert [a.alert_id for a in shown.alerts] == [alert.alert_id]
        assert shown.alerts[0].summary == "water 12 cm above 10"
        assert shown.alerts[0].latest_value is None  # its device has sent no reading yet
        # The alert is stored as it fired (12 cm); the water rose since: beside it, what its
        # device's metric reads now, its newest reading (one sent late is older).
        readings = [
            Reading(
                device_id="wl-1", ts=T0 + timedelta(minutes=m), seq=m, values={"water_level_cm": v}
            )
            for m, v in ((0, 12.0), (40, 18.5), (20, 15.0))
        ]
        with db.connect(town) as other:
            ReadingSink(other).write(readings)
        (now,) = incident_detail(conn, fresh.incident_id).alerts
        assert (now.latest_value, now.latest_ts) == (18.5, T0 + timedelta(minutes=40))
        assert now.latest_said(UTC) == (
            f"; newest water_level_cm 18.5 at {T0 + timedelta(minutes=40):%Y-%m-%d %H:%M:%S}"
        )
        assert [r.report_id for r in shown.reports] == [report.report_id]

        requests = {r.service_request_id: r for r in open311_requests(conn, town.zone)}
        assert requests[report.report_id].status == "open"
        assert requests[report.report_id].media_url == "photos/underpass.jpg"
        assert requests[report.report_id].requested_datetime.utcoffset() == timedelta(hours=8)
        assert [s.service_code for s in open311_services(conn)] == ["flooding", "traffic"]


# --- the CLI -------------------------------------------------------------------------------


def run(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, ["incidents", *args], env=settings.to_env())


def on_topic(settings: Settings, topic: Topic, match: Callable[[bytes], bool]) -> bytes:
    """The first message of ``topic`` (from its beginning) that ``match`` accepts."""
    consumer = kafka.consumer(settings, f"itest-{hexid()}")
    consumer.subscribe([settings.topic(topic)])
    try:

        def probe() -> bytes | None:
            for msg in kafka.consume_batch(consumer, 500, 1.0):
                value = msg.value() or b""
                if match(value):
                    return value
            return None

        return wait_for(probe, timeout=30, what=f"a message on {topic.value}")
    finally:
        consumer.close()


def test_the_cli_lists_shows_and_measures_in_the_city_zone(town: Settings) -> None:
    with db.connect(town) as conn:
        made = made_history(conn, "tc", "street-ops", "water")
    three = made["three"].incident_id

    listed = run(town, "list", "--department", "water")
    assert listed.exit_code == 0, listed.output
    assert three in listed.output and "Asia/Shanghai" in listed.output
    data = json.loads(run(town, "list", "--place", "tc-s1", "--json").output)
    assert [i["incident_id"] for i in data] == [three, made["one"].incident_id]
    typo = run(town, "list", "--place", "tc-s9")  # not "no incidents", read as all quiet
    assert typo.exit_code == 1 and "--place 'tc-s9': no such place" in typo.output
    for option, value, said in (
        ("--department", "watr", "--department 'watr': no department 'watr': one of"),
        ("--category", "lava", "--category 'lava': no category 'lava'; one of: general"),
    ):
        misspelt = run(town, "list", option, value)
        assert misspelt.exit_code == 1 and said in misspelt.output, misspelt.output
    # a department routed to (or registered) that has no incident lists none
    assert run(town, "list", "--department", "city-ops").output == "no incidents\n"
    assert data[0]["opened_at"].endswith("+08:00")

    shown = run(town, "show", three)
    assert shown.exit_code == 0, shown.output
    assert "street-ops (street) -> water (district): handle by" in shown.output
    # To the second, as the console shows them: deadlines of minutes are checked against it.
    assert re.search(r"opened \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, updated", shown.output)
    detail = json.loads(run(town, "show", three, "--json").output)
    assert detail["incident"]["state"] == "closed"
    assert len(detail["dispatches"]) == 2

    missing = run(town, "show", "f" * 32)
    assert missing.exit_code == 1 and f"incident {'f' * 32!r} does not exist" in missing.output

    since = (T0 - timedelta(hours=1)).isoformat()
    measured = run(town, "performance", "--since", since, "--until", DAY_AFTER)
    assert measured.exit_code == 0, measured.output
    assert "closed 2/3 (66.7%)" in measured.output and "UNDER 85%" in measured.output
    assert "on time 1/3 judged (33.3%; accepted 2, handled 2; 0 running, 0 withdrawn)" in (
        measured.output
    )
    backwards = run(town, "performance", "--since", "2026-12-06", "--until", "2026-12-01")
    assert backwards.exit_code == 1 and "is not before --until" in backwards.output
    rates = json.loads(run(town, "performance", "--since", since, "--json").output)
    assert {(r["department"], r["tier"], r["flagged"]) for r in rates} >= {
        ("street-ops", "street", True),
        ("water", "district", False),
    }


def test_cli_act_sends_a_valid_feedback_and_names_what_is_wrong(town: Settings) -> None:
    with db.connect(town) as conn:
        h = History(conn, "tc")
        incident = h.open("flooding", "tc-s1", WarningLevel.ORANGE)
        order = h.dispatch(incident, "street-ops", Tier.STREET, T0)

    sent = run(
        town, "act", incident.incident_id, "accept", "--dispatch", order.dispatch_id,
        "--actor", "duty-officer", "--reason", "crew on the way",
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    feedback_id = sent.output.split()[1].rstrip(":")
    value = on_topic(town, Topic.DISPATCH_FEEDBACK, lambda v: feedback_id.encode() in v)
    feedback = Feedback.model_validate_json(value)
    assert (feedback.incident_id, feedback.action, feedback.actor) == (
        incident.incident_id,
        Action.ACCEPT,
        f"duty-officer (via cli:{getpass.getuser()})",  # who acted, and through whom
    )
    assert feedback.dispatch_id == order.dispatch_id and feedback.reason == "crew on the way"
    with db.connect(town) as conn:  # reassigned since: the first order is an earlier one
        now = History(conn, "tc")
        now.revisions[incident.incident_id] = get_incident(conn, incident.incident_id)
        now.dispatch(incident, "drains", Tier.STREET, T0, DispatchKind.REASSIGNMENT)
    stale = run(town, "act", incident.incident_id, "on_site", "--dispatch", order.dispatch_id)
    assert stale.exit_code == 1 and "is an earlier dispatch" in stale.output, stale.output
    assert "nothing was sent" in stale.output
    # an action the incident's state does not take: refused at once, naming those it does
    early = run(town, "act", incident.incident_id, "verify")
    assert early.exit_code == 1, early.output
    assert "verify is not allowed while the incident is dispatched (people may send: accept," in (
        early.output
    )
    assert "nothing was sent" in early.output

    moved = run(
        town, "act", incident.incident_id, "reassign", "--department", "water-affairs",
        "--tier", "district",
    )  # fmt: skip
    assert moved.exit_code == 0, moved.output
    # A department nobody answers to is refused before anything is sent: neither the
    # incident routing's nor the registry's. One the registry holds is taken.
    stray = run(town, "act", incident.incident_id, "reassign", "--department", "stret-ops")
    assert stray.exit_code == 1, stray.output
    assert "no department 'stret-ops'" in stray.output and "street-ops" in stray.output
    assert "nothing was sent" in stray.output
    with db.connect(town) as conn:
        conn.execute("INSERT INTO departments (department_id, name) VALUES ('tc-parks', 'Parks')")
    parks = run(town, "act", incident.incident_id, "reassign", "--department", "tc-parks")
    assert parks.exit_code == 0, parks.output
    with db.connect(town) as conn:
        audited = conn.execute(
            "SELECT actor, action, after->>'feedback_id' FROM audit_log"
            " WHERE entity = 'incident' AND entity_id = %s ORDER BY id",
            (incident.incident_id,),
        ).fetchall()
    me = f"cli:{getpass.getuser()}"
    assert [(actor, action) for actor, action, _ in audited] == [
        (f"duty-officer (via {me})", "accept"),
        (me, "reassign"),
        (me, "reassign"),
    ]
    assert audited[0][2] == feedback_id
    short = run(town, "act", incident.incident_id[:3], "accept")
    assert short.exit_code == 1 and "the start of an id takes 4 digits" in short.output

    bad = run(town, "act", incident.incident_id, "dance")
    assert bad.exit_code == 1 and "action 'dance' is not one people send" in bad.output
    platform = run(town, "act", incident.incident_id, "escalate")
    assert platform.exit_code == 1 and "accept" in platform.output
    lacking = run(town, "act", incident.incident_id, "reassign")
    assert lacking.exit_code == 1 and "reassign needs the department" in lacking.output
    unknown = run(town, "act", "e" * 32, "accept")
    assert unknown.exit_code == 1 and f"incident {'e' * 32!r} does not exist" in unknown.output


def test_cli_takes_an_incidents_first_digits_and_asks_a_reason_for_an_early_close(
    town: Settings,
) -> None:
    """The run log shows an incident's first 8 digits: ``show`` and ``act`` take them (at least
    4, either case), and name the incidents a too short start fits. A close before
    verification without a reason is refused before anything is sent."""
    lead = hexid()[:6]
    with db.connect(town) as conn:
        h = History(conn, "tc")
        one = h.open("flooding", "tc-s1", WarningLevel.YELLOW, incident_id=lead + "0" * 26)
        two = h.open("flooding", "tc-s2", WarningLevel.YELLOW, incident_id=lead + "1" * 26)
        h.dispatch(one, "street-ops", Tier.STREET, T0)
        h.step(one, Action.ACCEPT, IncidentState.ACCEPTED, T0, department="street-ops")

    shown = run(town, "show", one.incident_id[:8])
    assert shown.exit_code == 0, shown.output
    assert f"incident {one.incident_id} (revision 2)" in shown.output
    several = run(town, "show", lead.upper())
    assert several.exit_code == 1, several.output
    assert one.incident_id in several.output and two.incident_id in several.output
    assert "give more of its digits" in several.output
    short = run(town, "show", lead[:3])
    assert short.exit_code == 1, short.output
    assert (
        f"incident {lead[:3]!r} does not exist (the start of an id takes 4 digits" in short.output
    )
    nothing = run(town, "show", lead + "ff")
    assert nothing.exit_code == 1 and f"incident {lead + 'ff'!r} does not exist" in nothing.output

    noted = run(town, "act", two.incident_id[:8], "note", "--reason", "crew asked")
    assert noted.exit_code == 0, noted.output
    assert f"on incident {two.incident_id} sent" in noted.output
    feedback_id = noted.output.split()[1].rstrip(":")
    value = on_topic(town, Topic.DISPATCH_FEEDBACK, lambda v: feedback_id.encode() in v)
    assert Feedback.model_validate_json(value).incident_id == two.incident_id

    early = run(town, "act", one.incident_id[:8], "close")
    assert early.exit_code == 1, early.output
    assert "closing an incident that is accepted, not verified, needs a reason" in early.output
    assert "--reason" in early.output and "nothing was sent" in early.output
    closed = run(town, "act", one.incident_id[:8], "close", "--reason", "a duplicate")
    assert closed.exit_code == 0, closed.output


def test_cli_report_sends_a_valid_citizen_report_and_open311_exports_it(town: Settings) -> None:
    sent = run(
        town, "report", "--place", "tc-s1", "--category", "general", "--text", "knee deep",
        "--photo", "photos/k.jpg", "--level", "yellow", "--lat", "31.2304", "--lon", "121.4737",
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    report_id = sent.output.split()[1]
    value = on_topic(town, Topic.REPORTS, lambda v: report_id.encode() in v)
    report = CitizenReport.model_validate_json(value)
    assert report.place_path == ("tc", "tc-d", "tc-s1")
    assert (report.category, report.text, report.level) == ("general", "knee deep", "yellow")
    assert report.channel is ReportChannel.HOTLINE and report.photo_ref == "photos/k.jpg"
    assert (report.lat, report.lon) == (31.2304, 121.4737)  # where it was seen, as Open311 says
    with db.connect(town) as conn:
        audited = conn.execute(
            "SELECT actor, action FROM audit_log WHERE entity = 'report' AND entity_id = %s",
            (report_id,),
        ).fetchall()
    assert audited == [(f"cli:{getpass.getuser()}", "report")]

    nowhere = run(town, "report", "--place", "atlantis", "--category", "general", "--text", "x")
    assert nowhere.exit_code == 1 and "--place 'atlantis': no such place" in nowhere.output
    channel = run(
        town, "report", "--place", "tc-s1", "--category", "general", "--text", "x",
        "--channel", "pigeon",
    )  # fmt: skip
    assert channel.exit_code == 1 and "--channel 'pigeon'" in channel.output
    off = run(
        town, "report", "--place", "tc-s1", "--category", "general", "--text", "x",
        "--lat", "91", "--lon", "0",
    )  # fmt: skip
    assert off.exit_code == 1 and "lat" in off.output, off.output
    half = run(town, "report", "--place", "tc-s1", "--category", "general", "--text", "x",
               "--lat", "31.2")  # fmt: skip
    assert half.exit_code == 1 and "--lat and --lon go together" in half.output, half.output

    with db.connect(town) as conn:  # the sinks would store it so; here, by hand
        bare = report.model_copy(update={"report_id": uuid.uuid4().hex, "lat": None, "lon": None})
        ReportSink(conn).write([report, bare])
    exported = run(town, "open311", "--json")
    assert exported.exit_code == 0, exported.output
    requests = {r["service_request_id"]: r for r in json.loads(exported.output)}
    assert len(requests) == 2
    request = requests[report_id]
    assert request["service_request_id"] == report_id and request["status"] == "open"
    assert request["service_code"] == "general" and request["media_url"] == "photos/k.jpg"
    assert request["requested_datetime"].endswith("+08:00")
    assert (request["lat"], request["long"]) == (31.2304, 121.4737)  # where it was seen
    unplaced = requests[bare.report_id]  # none given: the street's position
    assert (unplaced["lat"], unplaced["long"]) == (31.25, 121.5)
    services = json.loads(run(town, "open311", "--services", "--json").output)
    assert "general" in [s["service_code"] for s in services]


# --- the API -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(pipeline: Pipeline, admin_token: str) -> Iterator[httpx.Client]:
    with api_client(pipeline.settings, admin_token, timeout=60) as client:
        yield client


@pytest.fixture()
def city(pipeline: Pipeline) -> str:
    """A city of its own in the pipeline's registry (the API's database)."""
    name = f"ic{uuid.uuid4().hex[:8]}"
    with db.connect(pipeline.settings) as conn:
        add_places(conn, name)
    return name


def test_the_api_lists_shows_and_measures_incidents(
    pipeline: Pipeline, api: httpx.Client, city: str
) -> None:
    ops, water = f"ops-{city}", f"water-{city}"
    with db.connect(pipeline.settings) as conn:
        made = made_history(conn, city, ops, water)
    three = made["three"].incident_id

    listed = api.get("/incidents", params={"department": water})
    assert listed.status_code == 200, listed.text
    assert [i["incident_id"] for i in listed.json()] == [three]
    under = api.get("/incidents", params={"place": f"{city}-s1", "open": "true"})
    assert under.status_code == 200 and under.json() == []

    shown = api.get(f"/incidents/{three}")
    assert shown.status_code == 200, shown.text
    assert [d["department"] for d in shown.json()["dispatches"]] == [ops, water]
    missing = api.get(f"/incidents/{'a' * 32}")
    assert missing.status_code == 404 and f"incident {'a' * 32!r}" in missing.json()["detail"]
    assert "whole id" not in missing.json()["detail"]
    short = api.get(f"/incidents/{three[:8]}")  # as the CLI and 'up' show it
    assert short.status_code == 404
    assert short.json()["detail"].endswith("does not exist (give its whole id: 32 hex digits)")

    since = (T0 - timedelta(hours=1)).isoformat()
    rates = api.get("/incidents/performance", params={"since": since, "until": DAY_AFTER})
    assert rates.status_code == 200, rates.text
    mine = {(r["department"], r["tier"]): r for r in rates.json() if r["department"] == ops}
    assert mine[(ops, "street")]["closure_rate"] == pytest.approx(2 / 3)
    backwards = api.get(
        "/incidents/performance", params={"since": "2026-12-06", "until": "2026-12-01"}
    )
    assert backwards.status_code == 422 and "not before until" in backwards.text
    assert mine[(ops, "street")]["flagged"] is True
    assert mine[(ops, "street")]["on_time_rate"] == pytest.approx(1 / 3)


def test_api_actions_send_a_feedback_and_refuse_what_does_not_fit(
    pipeline: Pipeline, api: httpx.Client, city: str
) -> None:
    with db.connect(pipeline.settings) as conn:
        incident = History(conn, city).open("flooding", f"{city}-s1", WarningLevel.RED)
    path = f"/incidents/{incident.incident_id}/actions"

    # An action the incident's state (new) does not take is refused at once, naming those
    # it does, not sent for the stage to refuse.
    too_soon = api.post(path, json={"action": "verify", "reason": "seen it dry"})
    assert too_soon.status_code == 409, too_soon.text
    assert too_soon.json()["detail"][0]["msg"].startswith(
        "verify is not allowed while the incident is new "
        "(you may send: acknowledge, close, note, reassign)"
    )
    # one the stage may take by now is sent (its order may be out before the database shows
    # it dispatched: the department answers on receipt)
    lagging = api.post(path, json={"action": "accept"})
    assert lagging.status_code == 202, lagging.text
    sent = api.post(path, json={"action": "note", "reason": "seen it dry"})
    assert sent.status_code == 202, sent.text
    feedback_id = sent.json()["feedback_id"]
    value = on_topic(
        pipeline.settings, Topic.DISPATCH_FEEDBACK, lambda v: feedback_id.encode() in v
    )
    feedback = Feedback.model_validate_json(value)
    assert (feedback.action, feedback.actor, feedback.reason) == (
        Action.NOTE,
        "itest-api (admin)",
        "seen it dry",
    )
    # A sender's own id makes a request sent again (its answer lost) count once: the same
    # feedback_id, which the incident stage takes once.
    mine = uuid.uuid4().hex
    for _ in range(2):
        again = api.post(path, json={"action": "note", "reason": "again", "feedback_id": mine})
        assert (again.status_code, again.json()["feedback_id"]) == (202, mine), again.text
    # One the stage applied already (a step names it) is taken again, not judged on the state
    # it left: a handled sent again, its answer lost, is no 409 "not allowed while handled".
    done = uuid.uuid4().hex
    with db.connect(pipeline.settings) as conn:
        conn.execute(
            "INSERT INTO incident_transitions (incident_id, revision, action, from_state,"
            " to_state, actor, reason, ts, feedback_id) VALUES (%s, 90, 'handled', 'accepted',"
            " 'handled', 'crew', '', now(), %s)",
            (incident.incident_id, done),
        )
    retried = api.post(path, json={"action": "handled", "feedback_id": done})
    assert (retried.status_code, retried.json()["feedback_id"]) == (202, done), retried.text
    fresh = api.post(path, json={"action": "handled", "feedback_id": uuid.uuid4().hex})
    assert fresh.status_code == 409, fresh.text  # the state as stored (new) does not take it
    malformed = api.post(path, json={"action": "note", "feedback_id": "fb-1"})
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["loc"] == [
        "body",
        "feedback_id",
    ]

    bad = api.post(path, json={"action": "dispatch"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "action"]
    assert "not one people send" in bad.json()["detail"][0]["msg"]
    lacking = api.post(path, json={"action": "reassign"})
    assert lacking.status_code == 422 and "department" in lacking.text
    stray = api.post(path, json={"action": "reassign", "department": "stret-ops"})
    assert stray.status_code == 422, stray.text
    assert stray.json()["detail"][0]["loc"] == ["body", "department"]
    assert "no department 'stret-ops'" in stray.text and "street-ops" in stray.text
    moved = api.post(path, json={"action": "reassign", "department": "water-affairs"})
    assert moved.status_code == 202, moved.text
    early = api.post(path, json={"action": "close"})  # the incident is new: a reason is asked
    assert early.status_code == 422, early.text
    assert early.json()["detail"][0]["loc"] == ["body", "reason"]
    assert "needs a reason" in early.text
    assert api.post(path, json={"action": "close", "reason": "a duplicate"}).status_code == 202
    extra = api.post(path, json={"action": "note", "colour": "red"})
    assert extra.status_code == 422
    unknown = api.post(f"/incidents/{'b' * 32}/actions", json={"action": "accept"})
    assert unknown.status_code == 404 and "b" * 32 in unknown.text

    # An answer naming an earlier dispatch is refused here, as the stage would refuse it; one
    # naming the current order's revision is the order; an id not stored is the stage's to judge.
    with db.connect(pipeline.settings) as conn:
        h = History(conn, city)
        moving = h.open("flooding", f"{city}-s2", WarningLevel.ORANGE)
        first = h.dispatch(moving, "street-ops", Tier.STREET, T0)
        now = h.dispatch(moving, "drains", Tier.STREET, T0, DispatchKind.REASSIGNMENT)
        revision = now.model_copy(
            update={
                "dispatch_id": hexid(),
                "kind": DispatchKind.REVISION,
                "revises": now.dispatch_id,
            }
        )
        DispatchSink(conn).write([revision])
    answer = f"/incidents/{moving.incident_id}/actions"
    stale = api.post(answer, json={"action": "accept", "dispatch_id": first.dispatch_id})
    assert stale.status_code == 422, stale.text
    assert stale.json()["detail"][0]["loc"] == ["body", "dispatch_id"]
    assert f"its current order is {now.dispatch_id}" in stale.text
    for named in (revision.dispatch_id, now.dispatch_id, hexid()):
        taken = api.post(answer, json={"action": "accept", "dispatch_id": named})
        assert taken.status_code == 202, taken.text


def test_api_reports_are_sent_stored_by_the_sinks_and_exported_as_open311(
    pipeline: Pipeline, api: httpx.Client, city: str
) -> None:
    body = {
        "place_id": f"{city}-s2",
        "category": "general",  # a category whatever the incident configuration holds
        "text": "a hole the size of a bathtub",
        "channel": "app",
        "lat": 31.2,
        "lon": 121.4,
    }
    sent = api.post("/reports", json=body)
    assert sent.status_code == 202, sent.text
    report_id = sent.json()["report_id"]
    value = on_topic(pipeline.settings, Topic.REPORTS, lambda v: report_id.encode() in v)
    report = CitizenReport.model_validate_json(value)
    assert report.place_path == (city, f"{city}-d", f"{city}-s2")
    assert report.channel is ReportChannel.APP

    # The pipeline's sinks service stores it from the topic (route reports -> ReportSink).
    wait_for(
        lambda: pipeline.query("SELECT 1 FROM reports WHERE report_id = %s", report_id),
        what="the report stored by the sinks service",
    )
    requests = api.get("/open311/v2/requests.json", params={"service_code": "general"})
    assert requests.status_code == 200, requests.text
    (request,) = [r for r in requests.json() if r["service_request_id"] == report_id]
    assert request["status"] == "open"
    assert request["service_code"] == body["category"]
    assert (request["lat"], request["long"]) == (31.2, 121.4)
    for field in ("requested_datetime", "updated_datetime"):
        assert datetime.fromisoformat(request[field]).tzinfo is not None
    services = api.get("/open311/v2/services.json")
    assert services.status_code == 200
    assert body["category"] in {s["service_code"] for s in services.json()}

    nowhere = api.post("/reports", json={**body, "place_id": "atlantis"})
    assert nowhere.status_code == 422
    assert nowhere.json()["detail"][0]["loc"] == ["body", "place_id"]
    for bad in ({**body, "text": ""}, {**body, "category": "no spaces"}, {"text": "x"}):
        assert api.post("/reports", json=bad).status_code == 422
    half = api.post("/reports", json={**body, "lon": None})  # a latitude alone is no point
    assert half.status_code == 422 and "lat and lon together" in half.text

    # An incident file broken since the API started: 503 naming it, not a server error.
    path = pipeline.settings.incidents_file
    assert path is not None
    good = path.read_text()
    try:
        path.write_text("routes: [\n")
        for broken in (
            api.post("/reports", json=body),
            api.get("/open311/v2/services.json"),
            api.get("/open311/v2/requests.json"),
        ):
            assert broken.status_code == 503, broken.text
            assert f"the incident configuration cannot be read: {path}" in broken.text
    finally:
        path.write_text(good)


def test_up_prints_each_incident_step_once_those_stored_late_included(
    town: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'up' reads the steps by their own time: a step a slow stage stores after a read that
    already passed its time is printed all the same (up to 30 s late), and none twice; a
    burst larger than a page is read whole (pages of 2 here)."""
    monkeypatch.setattr(cli_stack, "PAGE", 2)
    feed = StepFeed(T0 - timedelta(minutes=1))
    with db.connect(town) as conn:
        h = History(conn, "tc")
        flood = h.open("flooding", "tc-s1", WarningLevel.ORANGE, at=T0)
        h.dispatch(flood, "crew", Tier.STREET, T0 + timedelta(seconds=20))
        h.go(
            flood,
            (Action.ACKNOWLEDGE, IncidentState.DISPATCHED, T0 + timedelta(seconds=20)),
            (Action.ACCEPT, IncidentState.ACCEPTED, T0 + timedelta(seconds=21)),
        )
    first = feed.lines(town)
    actions = [line.split(": ", 1)[1].split()[0] for line in first]
    assert actions == ["open", "dispatch", "acknowledge", "accept"]
    assert "flooding at tc-s1 (now orange)" in first[0]
    assert feed.lines(town) == []  # nothing new: nothing printed again
    with db.connect(town) as conn:  # stored now, its time 10 s before the last step read
        h.conn = conn
        h.go(flood, (Action.NOTE, IncidentState.ACCEPTED, T0 + timedelta(seconds=10)))
    (late,) = feed.lines(town)
    assert ": note " in late and "[accepted]" in late
    assert feed.lines(town) == []
