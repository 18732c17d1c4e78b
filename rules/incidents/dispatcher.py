"""Dispatch orders, limits and escalation, storm budgets and digests; and the record of each
step. The base of :class:`rules.incidents.desk.Desk`, which decides what happens to signals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from cityvitals.contracts import (
    Action,
    Alert,
    DispatchKind,
    DispatchOrder,
    Escalation,
    Feedback,
    IncidentState,
    IncidentTransition,
    IncidentUpdate,
    PlaceOutage,
    Tier,
)
from rules.incidents.book import Book, Tracked, derive_id
from rules.incidents.config import IncidentConfig
from rules.incidents.routing import Assignment, route, tier_place

__all__ = ["PLATFORM", "Dispatcher", "Outcome", "Refusal"]

PLATFORM = "cityvitals"
"""The actor of the platform's own steps (open, attach, dispatch, escalate, verify by sensors)."""

AT_WORK = (IncidentState.DISPATCHED, IncidentState.ACCEPTED, IncidentState.ON_SITE)
"""The states in which a department holds the incident's order and works to it."""

NO_DEPARTMENT = "no department left to route it to"

UNASSIGNED: dict[str, object] = {
    "department": None,
    "dispatch_id": None,
    "accept_by": None,
    "handle_by": None,
}
"""An incident's update when no department is left to route it to (every one refused it):
it is nobody's, its last holder's limits no longer run, and a duty officer reassigns it."""

UNSEEN: dict[str, object] = {"acknowledged_by": None, "acknowledged_at": None}
"""An incident's update when nobody who follows it now has acknowledged it (it reopened, or
went to another tier: escalated, or rerouted by a rejection or a reassignment)."""


@dataclass(frozen=True)
class Refusal:
    """An input that did not fit (a feedback out of turn, an alert with no place), and why:
    it changed nothing."""

    item: Feedback | Alert | PlaceOutage
    reason: str


@dataclass
class Outcome:
    updates: list[IncidentUpdate] = field(default_factory=list)
    dispatches: list[DispatchOrder] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    ignored: int = 0
    """Inputs already seen (replays, resent feedback) or of nothing to follow."""


SIGNALS_SENT = 50
"""The most firing alerts' summaries, and devices, an order carries."""


def _dispatch(
    t: Tracked,
    kind: DispatchKind,
    to: Assignment,
    now: datetime,
    others: Sequence[Tracked] = (),
    /,
    **fields: Any,
) -> DispatchOrder:
    """The incident's next dispatch (numbered: a replay gives the same id) to ``to``; a
    digest's (``others``: the other incidents it lists) says what each incident's latest
    signal said, and carries all their alerts firing and devices."""
    inc = t.incident
    listed = (t, *others)
    summary = t.worst_said
    if others:
        summary = "; ".join(f"{x.incident.title}: {x.worst_said}" for x in listed if x.worst_said)
    signals = tuple(said[:2000] for x in listed for said in x.firing_said.values())
    alerts = tuple(alert_id for x in listed for alert_id in x.firing_said)
    devices = tuple(dict.fromkeys(d for x in listed for d in x.incident.devices))
    dispatch = DispatchOrder(
        dispatch_id=derive_id(inc.incident_id, t.orders),
        kind=kind,
        incident_id=inc.incident_id,
        department=to.department,
        tier=to.tier,
        tier_place_id=to.tier_place_id,
        category=inc.category,
        level=inc.level,
        place_id=inc.place_id,
        place_path=inc.place_path,
        title=inc.title,
        summary=summary[:2000],
        signals=signals[:SIGNALS_SENT],
        devices=devices[:SIGNALS_SENT],
        alerts=alerts[:SIGNALS_SENT],
        opened_at=inc.opened_at,
        ts=now,
        **fields,
    )
    t.orders += 1
    return dispatch


class Dispatcher:
    """Sends incidents to departments and records their steps."""

    def __init__(
        self,
        config: IncidentConfig,
        book: Book | None = None,
        zone: tzinfo = UTC,
        places: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.book = book or Book()
        self.zone = zone
        """The city's time zone: the instants the steps' reasons name are in it."""
        self.places: Mapping[str, str] = places if places is not None else {}
        """Place names by place id (the registry's): titles and reasons name a place by its
        name, or by its id when it has none here."""

    def named(self, place_id: str) -> str:
        """A place as titles and reasons name it: its name, or its id when it has none.

        >>> from rules.incidents.testing import EXAMPLE
        >>> from rules.incidents.config import parse_incident_config
        >>> desk = Dispatcher(parse_incident_config(EXAMPLE), places={"lj": "Canal Street"})
        >>> desk.named("lj"), desk.named("g1")
        ('Canal Street', 'g1')
        """
        return self.places.get(place_id) or place_id

    def when(self, at: datetime) -> str:
        """An instant as a step's reason names it, in the city's zone, named.

        >>> from zoneinfo import ZoneInfo
        >>> from rules.incidents.testing import EXAMPLE, at
        >>> from rules.incidents.config import parse_incident_config
        >>> config = parse_incident_config(EXAMPLE)
        >>> Dispatcher(config).when(at(17)), Dispatcher(config, zone=ZoneInfo("Asia/Shanghai")).when(at(17))
        ('2026-07-01 08:17:00 UTC', '2026-07-01 16:17:00 Asia/Shanghai')
        """
        local = at.astimezone(self.zone)
        return f"{local:%Y-%m-%d %H:%M:%S} {getattr(self.zone, 'key', None) or local.tzname()}"

    def _deadlines(self, t: Tracked, now: datetime, out: Outcome) -> None:
        inc = t.incident
        if inc.state is IncidentState.DISPATCHED and inc.accept_by and now > inc.accept_by:
            self._escalate(t, "accept", inc.accept_by, now, out)
            return
        working = inc.state in (IncidentState.ACCEPTED, IncidentState.ON_SITE)
        if working and inc.handle_by and now > inc.handle_by:
            self._escalate(t, "handle", inc.handle_by, now, out)

    def _escalate(
        self, t: Tracked, breach: str, deadline: datetime, now: datetime, out: Outcome
    ) -> None:
        if breach in t.breached:
            return
        t.breached.append(breach)
        inc = t.incident
        assert inc.tier is not None
        up = route(self.config, inc.category, inc.place_path, inc.level, above=inc.tier)
        dispatch_id = None
        late = f"{inc.department} ({inc.tier.value} tier)" if inc.department else inc.tier.value
        reason = f"{late} did not {breach} by {self.when(deadline)}"
        if up is not None:
            t.incident = inc.model_copy(update={"escalations": inc.escalations + 1})
            order = self._order(t, up, DispatchKind.ESCALATION, now, out, PLATFORM, reason)
            dispatch_id = order.dispatch_id
        else:
            t.incident = inc.model_copy(update={"escalations": inc.escalations + 1})
            self._step(t, Action.NOTE, now, out, reason=f"{reason}; nothing above the city tier")
        out.escalations.append(
            Escalation(
                incident_id=inc.incident_id,
                from_tier=inc.tier,
                to_tier=up.tier if up else None,
                department=up.department if up else inc.department,
                from_department=inc.department,
                breach=breach,
                deadline=deadline,
                dispatch_id=dispatch_id,
                ts=now,
            )
        )

    # -- dispatch ------------------------------------------------------------------------

    def _dispatch(
        self,
        t: Tracked,
        now: datetime,
        out: Outcome,
        kind: DispatchKind = DispatchKind.ORDER,
        at_least: Tier | None = None,
        why: str = "",
    ) -> None:
        """Send a new (or rejected, or reopened) incident to the lowest tier that handles it
        (not below ``at_least``), unless that tier place's storm budget is spent: then it
        waits for the digest. ``why``: the order's reason (a rejection's)."""
        inc = t.incident
        exclude = set(t.refused_by)
        assignment = route(
            self.config, inc.category, inc.place_path, inc.level, exclude=exclude, at_least=at_least
        )
        if assignment is None:
            t.incident = inc.model_copy(update=UNASSIGNED)
            self._step(t, Action.NOTE, now, out, reason=NO_DEPARTMENT)
            return
        key = f"{assignment.tier.value}:{assignment.tier_place_id}"
        budget = self.config.storm.budget.get(assignment.tier)
        sent = [s for s in self.book.meta.budgets.get(key, []) if now - s < self.config.storm.per]
        self.book.meta.budgets[key] = sent
        if budget is not None and len(sent) >= budget:
            t.held, t.floor = key, at_least
            waiting = self.book.meta.held.setdefault(key, [])
            if inc.incident_id not in waiting:  # (held here before, then sent another way)
                waiting.append(inc.incident_id)
            reason = f"{key} used its budget of {budget} per {self.config.storm.per}: in the digest"
            reason = f"{why}; {reason}" if why else reason
            self._step(t, Action.NOTE, now, out, reason=reason)
            return
        sent.append(now)
        self._order(t, assignment, kind, now, out, PLATFORM, why)

    def _order(
        self,
        t: Tracked,
        to: Assignment,
        kind: DispatchKind,
        now: datetime,
        out: Outcome,
        actor: str,
        reason: str,
        incidents: tuple[str, ...] = (),
        others: Sequence[Tracked] = (),
    ) -> DispatchOrder:
        inc = t.incident
        if kind in (DispatchKind.ESCALATION, DispatchKind.REASSIGNMENT) and (
            (inc.department, inc.tier) != (to.department, to.tier)
        ):
            went = {DispatchKind.ESCALATION: "escalated", DispatchKind.REASSIGNMENT: "reassigned"}
            why = f"{went[kind]} to {to.department} ({to.tier.value} tier)"
            self._withdraw(t, now, out, f"{why}: {reason}" if reason else why)
            inc = t.incident
        accept, handle = self.config.limits(to.tier, inc.level, inc.category)
        order = _dispatch(
            t,
            kind,
            to,
            now,
            others,
            accept_by=now + accept,
            handle_by=now + handle,
            incidents=incidents,
            reason=reason[:2000],
        )
        t.breached = []
        t.revisions = []
        t.held = t.floor = None
        # a person's reassignment holds against a category taking it over; the routing's not
        t.assigned_by = actor if kind is DispatchKind.REASSIGNMENT and actor != PLATFORM else None
        action = {
            DispatchKind.ESCALATION: Action.ESCALATE,
            DispatchKind.REASSIGNMENT: Action.REASSIGN,
        }.get(kind, Action.DISPATCH)
        t.incident = inc.model_copy(
            update={
                "tier": to.tier,
                "department": to.department,
                "dispatch_id": order.dispatch_id,
                "accept_by": order.accept_by,
                "handle_by": order.handle_by,
                # those who follow it at another tier have not seen it
                **(UNSEEN if inc.tier is not None and to.tier is not inc.tier else {}),
            }
        )
        text = where = f"to {to.department} at {to.tier.value} {self.named(to.tier_place_id)}"
        if reason:  # the routing's (after a rejection, a reopening) says where and why
            routed = kind in (DispatchKind.REASSIGNMENT, DispatchKind.ORDER) and actor == PLATFORM
            text = f"{where}: {reason}" if routed else reason
        self._step(t, action, now, out, actor=actor, reason=text, to=IncidentState.DISPATCHED)
        out.dispatches.append(order)
        return order

    def _withdraw(self, t: Tracked, now: datetime, out: Outcome, reason: str) -> None:
        """Tell the department that holds the incident's order to stop work on it: the order
        goes elsewhere, or the incident closes before it was handled. Nothing when nobody
        works to an order (new, handled, verified, closed)."""
        inc = t.incident
        if inc.state not in AT_WORK or inc.dispatch_id is None:
            return
        self._notice(t, DispatchKind.WITHDRAWAL, now, out, reason, withdraws=inc.dispatch_id)

    def _notice(
        self, t: Tracked, kind: DispatchKind, now: datetime, out: Outcome, reason: str, **of: str
    ) -> DispatchOrder:
        """A withdrawal or a revision of the order the incident's department works to, sent
        to that department with the incident's limits now."""
        inc = t.incident
        assert inc.department is not None and inc.tier is not None
        assert inc.accept_by is not None and inc.handle_by is not None
        held = Assignment(inc.department, inc.tier, tier_place(inc.place_path, inc.tier))
        notice = _dispatch(
            t,
            kind,
            held,
            now,
            accept_by=inc.accept_by,
            handle_by=inc.handle_by,
            reason=reason[:2000],
            **of,
        )
        out.dispatches.append(notice)
        return notice

    def _digests(self, now: datetime, out: Outcome) -> None:
        """At the end of a tier place's period, its waiting incidents go out as one digest per
        department."""
        per = self.config.storm.per
        for key, waiting in list(self.book.meta.held.items()):
            sent = self.book.meta.budgets.get(key, [])
            if sent and now - min(sent) < per:
                continue  # the period is not over
            del self.book.meta.held[key]
            by_department: dict[Assignment, list[Tracked]] = {}
            for incident_id in waiting:
                t = self.book.incidents.get(incident_id)
                if t is None or t.held != key or t.incident.state is not IncidentState.NEW:
                    continue
                inc = t.incident
                to = route(
                    self.config,
                    inc.category,
                    inc.place_path,
                    inc.level,
                    exclude=set(t.refused_by),
                    at_least=t.floor,
                )
                if to is None:  # (the routing changed while it waited)
                    t.held = t.floor = None
                    t.incident = t.incident.model_copy(update=UNASSIGNED)
                    self._step(t, Action.NOTE, now, out, reason=NO_DEPARTMENT)
                else:
                    by_department.setdefault(to, []).append(t)
            if by_department:
                self.book.meta.budgets[key] = [now] * len(by_department)
            for to, held in by_department.items():
                self._digest(to, held, key, now, out)

    def _digest(
        self, to: Assignment, held: list[Tracked], key: str, now: datetime, out: Outcome
    ) -> None:
        ids = tuple(t.incident.incident_id for t in held)
        reason = f"digest of {len(ids)} incidents at {key}"
        first, *rest = held
        order = self._order(
            first, to, DispatchKind.DIGEST, now, out, PLATFORM, reason, ids, others=rest
        )
        for t in rest:
            t.held = t.floor = None
            t.breached = []
            t.assigned_by = None  # the routing sent it, as _order says of the first
            t.incident = t.incident.model_copy(
                update={
                    "tier": order.tier,
                    "department": order.department,
                    "dispatch_id": order.dispatch_id,
                    "accept_by": order.accept_by,
                    "handle_by": order.handle_by,
                }
            )
            self._step(t, Action.DISPATCH, now, out, reason=reason, to=IncidentState.DISPATCHED)

    def _step(
        self,
        t: Tracked,
        action: Action,
        now: datetime,
        out: Outcome,
        *,
        actor: str = PLATFORM,
        reason: str = "",
        to: IncidentState | None = None,
        new: bool = False,
        muted: int | None = None,
    ) -> None:
        """Record one step: the incident's next revision and its transition."""
        inc = t.incident
        before = None if new else inc.state
        state = to or inc.state
        update: dict[str, object] = {"state": state, "updated_at": now}
        if not new:
            update["revision"] = inc.revision + 1
        if muted is not None:
            update["muted"] = muted
        t.incident = inc = inc.model_copy(update=update)
        self.book.dirty.add(inc.incident_id)
        transition = IncidentTransition(
            incident_id=inc.incident_id,
            revision=inc.revision,
            action=action,
            from_state=before,
            to_state=state,
            actor=actor,
            reason=reason[:2000],
            ts=now,
            tier=inc.tier,
            department=inc.department,
        )
        out.updates.append(IncidentUpdate(incident=inc, transition=transition))
