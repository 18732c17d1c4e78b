"""Incidents: one problem handled once, its dispatch orders, the departments' feedback,
escalations and citizen reports.

An incident gathers the alerts (and citizen reports, and a place outage) that are one problem
at one place. It is dispatched to one department at the lowest tier that can handle it, moves
through the states of :class:`IncidentState` on that department's feedback, and escalates to the
next tier up when a limit to accept or to handle runs out.

>>> IncidentState.ON_SITE.is_open, IncidentState.CLOSED.is_open
(True, False)
>>> Tier.DISTRICT.place_level.value, Tier.STREET.up, Tier.GRID.up
('district', <Tier.DISTRICT: 'district'>, <Tier.STREET: 'street'>)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, model_validator

from cityvitals.contracts.alerts import Alert, WarningLevel
from cityvitals.contracts.base import Contract, Identifier, Text, UtcDatetime
from cityvitals.contracts.health import PlaceOutage
from cityvitals.contracts.places import PlaceLevel
from cityvitals.contracts.readings import SNAPSHOT_REF

HEX_ID = r"^[0-9a-f]{32}$"
HexId = Annotated[str, Field(pattern=HEX_ID)]


class Tier(StrEnum):
    """The tiers of operations centres, lowest first: who handles an incident. One per level
    of the place tree: a building's management and a grid's officers below the street."""

    BUILDING = "building"
    GRID = "grid"
    STREET = "street"
    DISTRICT = "district"
    CITY = "city"

    @property
    def place_level(self) -> PlaceLevel:
        """The level of the place tree a centre of this tier stands for."""
        return PlaceLevel(self.value)

    @property
    def up(self) -> Tier | None:
        """The next tier up, None above the city."""
        tiers = list(Tier)
        i = tiers.index(self)
        return tiers[i + 1] if i + 1 < len(tiers) else None


class IncidentState(StrEnum):
    """The closed loop, in order. ``new`` waits for a dispatch (or a reassignment after a
    rejection); ``verified`` means the sensors stayed normal long enough, or an inspector saw it."""

    NEW = "new"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    ON_SITE = "on_site"
    HANDLED = "handled"
    VERIFIED = "verified"
    CLOSED = "closed"

    @property
    def is_open(self) -> bool:
        return self is not IncidentState.CLOSED


class IncidentSource(StrEnum):
    """What opened an incident."""

    ALERT = "alert"
    OUTAGE = "outage"
    REPORT = "report"


class Action(StrEnum):
    """What moves an incident: a department's feedback, a duty officer's or inspector's
    action, or the platform itself (``dispatch``, ``escalate``, ``attach``, ``open``)."""

    OPEN = "open"
    ATTACH = "attach"
    DISPATCH = "dispatch"
    ACCEPT = "accept"
    REJECT = "reject"
    ON_SITE = "on_site"
    HANDLED = "handled"
    VERIFY = "verify"
    CLOSE = "close"
    REOPEN = "reopen"
    REASSIGN = "reassign"
    ESCALATE = "escalate"
    NOTE = "note"
    ACKNOWLEDGE = "acknowledge"
    """A duty officer saw it: recorded with who and when, no change of state."""


FEEDBACK_ACTIONS = frozenset(
    {
        Action.ACCEPT,
        Action.REJECT,
        Action.ON_SITE,
        Action.HANDLED,
        Action.VERIFY,
        Action.CLOSE,
        Action.REOPEN,
        Action.REASSIGN,
        Action.NOTE,
        Action.ACKNOWLEDGE,
    }
)
"""The actions people send on ``dispatch.feedback``; the others are the platform's own."""


class Incident(Contract):
    """An incident as it is after its latest transition (``revision`` counts them).

    ``incident_id`` derives from the category, the place and the first signal, so a replayed
    alert never opens a second incident.
    """

    incident_id: HexId
    revision: int = Field(ge=0)
    category: Identifier
    state: IncidentState
    level: WarningLevel
    source: IncidentSource
    place_id: Identifier
    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    title: str = Field(max_length=500)
    tier: Tier | None = None
    department: Identifier | None = None
    dispatch_id: HexId | None = None
    """The dispatch order the department works on now."""
    opened_at: UtcDatetime
    updated_at: UtcDatetime
    accept_by: UtcDatetime | None = None
    handle_by: UtcDatetime | None = None
    alerts: tuple[HexId, ...] = ()
    open_alerts: int = Field(default=0, ge=0)
    devices: tuple[Identifier, ...] = ()
    reports: tuple[HexId, ...] = ()
    muted: int = Field(default=0, ge=0)
    """Per-device alerts beneath an area outage, folded into it instead of dispatched."""
    flaps: int = Field(default=0, ge=0)
    """Alerts that fired again after the incident closed and did not reopen it."""
    escalations: int = Field(default=0, ge=0)
    snapshot_refs: tuple[Annotated[str, Field(pattern=SNAPSHOT_REF)], ...] = ()
    acknowledged_by: str | None = Field(default=None, min_length=1, max_length=200)
    """Who last acknowledged it (a duty officer: seen, being followed), until it reopens or
    goes to another tier (those who follow it then have not seen it)."""
    acknowledged_at: UtcDatetime | None = None


class IncidentTransition(Contract):
    """One step of an incident: who did what, when and why. ``revision`` is the incident's
    revision after the step. A refused step changes nothing and is dead-lettered with its reason."""

    incident_id: HexId
    revision: int = Field(ge=0)
    action: Action
    from_state: IncidentState | None
    to_state: IncidentState
    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)
    ts: UtcDatetime
    tier: Tier | None = None
    department: Identifier | None = None
    feedback_id: HexId | None = None
    """The feedback whose action made this step (each step one makes, when it makes several:
    a reject and the new order), so its sender can tell it was applied; None for the
    platform's own steps."""


class DispatchKind(StrEnum):
    ORDER = "order"
    """A new incident sent to the department at its tier."""
    ESCALATION = "escalation"
    """The tier below ran out of time, or the incident's level rose beyond what it handles:
    the incident goes up (``reason`` says which)."""
    REASSIGNMENT = "reassignment"
    """A duty officer sent it to another department or tier."""
    DIGEST = "digest"
    """A storm: one order listing many incidents, instead of one each."""
    WITHDRAWAL = "withdrawal"
    """Not an order: the department named stops work on the incident. Its order (``withdraws``)
    went to another department or tier (a reassignment, an escalation), or the incident closed
    before it was handled; ``reason`` says which."""
    REVISION = "revision"
    """Not a new order: the department named works on to its order (``revises``) with new
    limits, those of the incident's level that rose within its tier's reach, counted from when
    it rose; ``reason`` names the level and the limits."""


class DispatchOrder(Contract):
    """What a department receives on ``dispatch``: an incident to handle, and by when.

    ``dispatch_id`` derives from the incident and the order's number within it, so a replay
    sends the same id again and a consumer can drop what it has seen.
    """

    dispatch_id: HexId
    kind: DispatchKind
    incident_id: HexId
    incidents: tuple[HexId, ...] = ()
    """A digest's incidents (the first is ``incident_id``)."""
    department: Identifier
    tier: Tier
    tier_place_id: Identifier
    """The place whose centre of ``tier`` handles it (the street, district or city)."""
    category: Identifier
    level: WarningLevel
    place_id: Identifier
    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    title: str = Field(max_length=500)
    accept_by: UtcDatetime
    handle_by: UtcDatetime
    ts: UtcDatetime
    opened_at: UtcDatetime | None = None
    """When the incident opened (the first time, for one reopened since): an escalation's
    ``ts`` is the escalation's, and the tier above reads here since when the problem runs.
    None in an order stored before it was kept."""
    withdraws: HexId | None = None
    """A withdrawal's order: the dispatch the department stops work on (its deadlines are
    that order's)."""
    revises: HexId | None = None
    """A revision's order: the dispatch whose limits become this one's."""
    reason: str = Field(default="", max_length=2000)
    """Why it was sent: a withdrawal's, a revision's, an escalation's (the breach) or a
    reassignment's reason, what a digest holds; empty for a first order."""
    summary: str = Field(default="", max_length=2000)
    """What the incident's latest signal said when the order was sent: an alert's summary
    ("water 36 cm at wl-17 reached 30 cm (yellow)"), an outage's silent devices, a citizen
    report's channel and text (a digest: each incident's title and latest signal, joined by
    ``; ``). A crew reads the figure without calling the API back; empty for an incident
    resumed from a database that held none."""
    signals: tuple[Annotated[str, Field(max_length=2000)], ...] = Field(default=(), max_length=50)
    """What each of the incident's alerts firing when the order was sent said last (the depth
    still, when its latest signal was the rate of the rise); empty when none fires: the
    sensors no longer see it, or it came from a report or an outage alone (a digest: of all
    the incidents it lists)."""
    devices: tuple[Identifier, ...] = Field(default=(), max_length=50)
    """The devices behind the incident (a digest: behind all it lists), as the registry knows
    them (their places and coordinates: ``GET /devices/{id}``)."""
    alerts: tuple[HexId, ...] = Field(default=(), max_length=50)
    """The alerts firing when the order was sent, in the order of ``signals`` (what each said
    last): their ``alert_id`` on the ``alerts`` topic."""


def _feedback_actions(schema: dict[str, Any]) -> None:
    """A feedback's ``action`` in its JSON schema: the actions people may send, not every
    step's (a schema that took ``escalate`` would pass what the stage refuses)."""
    schema.pop("$ref", None)
    schema.update(type="string", enum=sorted(a.value for a in FEEDBACK_ACTIONS))


class Feedback(Contract):
    """A department's answer on ``dispatch.feedback``, or a duty officer's or inspector's action.

    ``feedback_id`` is chosen by the sender and makes a resent message count once.
    ``department`` and ``tier`` name the new assignee of a ``reassign``.
    """

    feedback_id: Identifier
    incident_id: HexId
    dispatch_id: HexId | None = None
    action: Action = Field(json_schema_extra=_feedback_actions)
    actor: Text = Field(min_length=1, max_length=200)
    reason: Text = Field(default="", max_length=2000)
    department: Identifier | None = None
    tier: Tier | None = None
    ts: UtcDatetime

    @model_validator(mode="after")
    def _check(self) -> Feedback:
        if self.action not in FEEDBACK_ACTIONS:
            allowed = ", ".join(sorted(FEEDBACK_ACTIONS))
            raise ValueError(f"action {self.action.value!r} is not feedback; one of: {allowed}")
        if self.action is Action.REASSIGN and self.department is None:
            raise ValueError("reassign needs the department to reassign to")
        return self


class Escalation(Contract):
    """A tier did not accept or handle in time: the incident went up to ``to_tier`` (None when
    the city tier itself ran out of time: nothing is above it, the breach is still counted)."""

    incident_id: HexId
    from_tier: Tier
    to_tier: Tier | None
    department: Identifier | None
    """The department it went to; when nothing is above (``to_tier`` None), the one that
    stays with it: the one that let the deadline pass."""
    from_department: Identifier | None = None
    """The department that let the deadline pass (the one dispatched at ``from_tier``)."""
    breach: str = Field(pattern=r"^(accept|handle)$")
    deadline: UtcDatetime
    dispatch_id: HexId | None = None
    ts: UtcDatetime


class ReportChannel(StrEnum):
    HOTLINE = "hotline"
    PHOTO = "photo"
    APP = "app"
    OFFICER = "officer"


class CitizenReport(Contract):
    """A hotline call or a photo report: it joins correlation and dispatch like an alert.

    It carries no name, phone number or face: ``photo_ref`` points to an image kept elsewhere.
    """

    report_id: HexId
    channel: ReportChannel
    category: Identifier
    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    text: Text = Field(min_length=1, max_length=2000)
    photo_ref: Annotated[str, Field(pattern=SNAPSHOT_REF)] | None = None
    level: WarningLevel = WarningLevel.BLUE
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    reported_at: UtcDatetime


class IncidentUpdate(Contract):
    """What the ``incidents`` topic carries: the incident after a step, and the step."""

    incident: Incident
    transition: IncidentTransition


class IncidentInput(Contract):
    """What the incident stage reads, on its internal topic partitioned by city: exactly one
    of an alert, a place outage, a citizen report, a feedback, or a clock tick."""

    alert: Alert | None = None
    outage: PlaceOutage | None = None
    report: CitizenReport | None = None
    feedback: Feedback | None = None
    tick: UtcDatetime | None = None

    @model_validator(mode="after")
    def _one(self) -> IncidentInput:
        given = [self.alert, self.outage, self.report, self.feedback, self.tick]
        if sum(x is not None for x in given) != 1:
            raise ValueError("give exactly one of alert, outage, report, feedback, tick")
        return self
