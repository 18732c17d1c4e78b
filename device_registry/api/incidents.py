"""``/incidents``, ``/reports`` and ``/open311/v2``: incidents as the sinks stored them (through
:mod:`sinks.incidents`; this module writes no SQL of its own), a duty officer's action sent as
a feedback on ``dispatch.feedback``, a citizen report sent on ``reports``, and the reports as
Open311 GeoReport v2 service requests.

Sending answers 202: the incident stage applies the action (or refuses it with a reason, as
a dead letter) and takes the report into correlation after the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    ValidationError,
    model_validator,
)

from cityvitals.contracts import (
    FEEDBACK_ACTIONS,
    IDENTIFIER,
    Action,
    Incident,
    IncidentState,
    ReportChannel,
    Text,
    Tier,
    WarningLevel,
)
from cityvitals.contracts.readings import SNAPSHOT_REF
from cityvitals.settings import Settings
from device_registry.access import FEEDBACK_ACTIONS as DEPARTMENT_SENDS
from device_registry.access import PERMISSIONS, Role, User, action_permission
from device_registry.api.auth import (
    CurrentUser,
    actor_for,
    check_permission,
    check_scope,
    place_filter,
    refuse_unnamed,
    require,
    require_city,
    visible,
)
from device_registry.api.bodies import BAD_INPUT, NOT_FOUND, RETRY_LATER
from device_registry.api.deps import (
    Offset,
    PageSize,
    PathId,
    Reader,
    Time,
    as_utc,
    in_order,
    page,
)
from device_registry.api.errors import FieldError, NotFound
from device_registry.incident_publisher import (
    BadAction,
    IncidentPublisher,
    answered_order,
    incident_categories,
    incident_departments,
    make_feedback,
    make_report,
    unknown_department,
)
from device_registry.registry import UnknownPlace
from rules.incidents.lifecycle import (
    not_now,
    sendable,
    verify_while_firing,
    without_reason,
)
from sinks import (
    IncidentDetail,
    IncidentFilter,
    Performance,
    ServiceRequest,
    ServiceType,
    UnknownIncident,
    get_incident,
    incident_detail,
    list_incidents,
    open311_requests,
    open311_services,
    performance,
    superseded_dispatch,
)

__all__ = ["ActionBody", "IncidentView", "ReportBody", "router"]

T = TypeVar("T")

router = APIRouter(responses=RETRY_LATER)
Reading = Annotated[User, require("read")]

Id = Annotated[str, Field(pattern=IDENTIFIER)]
PEOPLE_SEND = frozenset(a.value for a in FEEDBACK_ACTIONS)
"""The actions people send (the platform takes the others itself)."""


def _true_or_false(value: object) -> object:
    # pydantic would take 1, yes, on...; the document says a boolean: true or false.
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("give true or false")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActionBody(_Body):
    """A duty officer's or inspector's action: accept, reject, on_site, handled, verify,
    close, reopen, reassign (with ``department``, optionally ``tier``) or note."""

    action: Annotated[str, Field(max_length=40)]
    reason: Annotated[Text, Field(max_length=2000)] = ""
    department: Id | None = None
    tier: Tier | None = None
    dispatch_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None
    actor: Annotated[Text, Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="an admin acting for someone names them (else the X-Actor header, "
        "else the user)",
    )
    feedback_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = Field(
        default=None,
        description="the sender's own id of this action (32 hex digits; else a fresh one): "
        "a request sent again with it, after an answer that never came, counts once",
    )


class Sent(BaseModel):
    feedback_id: str
    incident_id: str
    action: str


class ReportBody(_Body):
    """A hotline or photo report at a place of the registry."""

    place_id: Id
    category: Id
    text: Annotated[Text, Field(min_length=1, max_length=2000)]
    photo_ref: Annotated[str, Field(pattern=SNAPSHOT_REF)] | None = None
    channel: ReportChannel = ReportChannel.HOTLINE
    level: WarningLevel = WarningLevel.BLUE
    lat: Annotated[StrictFloat | None, Field(ge=-90, le=90)] = None
    lon: Annotated[StrictFloat | None, Field(ge=-180, le=180)] = None

    @model_validator(mode="after")
    def _a_point_or_none(self) -> ReportBody:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give lat and lon together, or neither (the place's point is used)")
        return self


class Received(BaseModel):
    report_id: str


@router.get("/incidents", response_model=list[Incident], tags=["incidents"])
def incidents(
    user: Reading,
    registry: Reader,
    request: Request,
    response: Response,
    open_only: Annotated[
        bool,
        BeforeValidator(_true_or_false),
        Query(alias="open", description="only those not closed"),
    ] = False,
    state: IncidentState | None = None,
    place: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,700}$", description="place id or a/b"),
    ] = None,
    category: Annotated[str | None, Query(pattern=IDENTIFIER)] = None,
    department: Annotated[str | None, Query(pattern=IDENTIFIER)] = None,
    level: Annotated[WarningLevel | None, Query(description="this level or higher")] = None,
    since: Annotated[Time, Query(description="updated since (no zone: UTC)")] = None,
    limit: PageSize = 100,
    offset: Offset = 0,
) -> list[Incident]:
    """Incidents in the user's scope, newest (last opened) first; ``offset`` skips that many
    (the ``Link`` header names the next page)."""
    narrowed = place_filter(user, registry, place)
    where = IncidentFilter(
        open_only=open_only,
        state=state,
        place="/".join(narrowed) if narrowed else place,
        category=category,
        department=department,
        level=level,
        since=as_utc(since),
        limit=limit + 1,
        offset=offset,
    )
    found = page(list_incidents(registry.conn, where), limit, offset, request, response)
    if not found and (department or category):  # an empty list must not hide a misspelling
        refuse_unnamed(registry, request, department=department, category=category)
    return visible(user, found, lambda i: i.place_path)


@router.get("/incidents/performance", response_model=list[Performance], tags=["incidents"])
def incidents_performance(
    user: Reading,
    registry: Reader,
    since: Annotated[Time, Query(description="default: 30 days before until")] = None,
    until: Annotated[Time, Query(description="default: now")] = None,
) -> list[Performance]:
    """Per department and tier (then per department), for the dispatches of ``[since, until)``:
    closure rate (closed / dispatched incidents) and on-time rate (dispatches accepted and
    handled in time / dispatches); ``flagged`` under the closure target (85%). It spans the
    whole city: it takes a city-wide scope."""
    require_city(user, "incident performance")
    last = as_utc(until) or datetime.now(UTC)
    try:
        first = as_utc(since) or last - timedelta(days=30)
    except OverflowError as exc:
        raise FieldError(422, ("query", "until"), "too early: give since", until) from exc
    in_order(first, last)
    return performance(registry.conn, first, last)


class IncidentView(IncidentDetail):
    """An incident as :class:`IncidentDetail` has it, with what the asking user may do."""

    actions: tuple[Action, ...]
    """The actions the user may send now, in the loop's order: those the incident's state
    allows (:func:`rules.incidents.lifecycle.sendable`) that the user's role may send, a
    department operator's only on an incident with its department, no verify while its
    alerts still fire, and no acknowledge once someone acknowledged it (until it reopens or
    goes to another tier). The console shows a button for each."""
    withheld: dict[Action, str] = Field(default_factory=dict)
    """Actions the incident's state allows and the user may send that wait on the sensors,
    each with why and what comes instead (verify while its alerts still fire: it verifies
    by itself once they are quiet). The console shows the reason where the button would be."""


def not_theirs(user: User, incident: Incident) -> str | None:
    """Why ``user`` may send nothing on ``incident`` though the role may (a department
    operator and an incident with another department); None when the user may."""
    if user.role is Role.DEPARTMENT_OPERATOR and incident.department != user.department:
        return (
            f"incident {incident.incident_id!r} is with department {incident.department!r}, "
            f"not {user.department!r} of {user.name}"
        )
    return None


def applied(conn: Any, incident_id: str, feedback_id: str) -> bool:
    """Whether the incident stage applied the feedback ``feedback_id`` (a step names it)."""
    step = conn.execute(
        "SELECT 1 FROM incident_transitions WHERE incident_id = %s AND feedback_id = %s LIMIT 1",
        (incident_id, feedback_id),
    ).fetchone()
    return step is not None


def may_send(user: User, incident: Incident) -> tuple[Action, ...]:
    """:attr:`IncidentView.actions`."""
    if not_theirs(user, incident) is not None:
        return ()
    seen = incident.acknowledged_by is not None
    return tuple(
        a
        for a in sendable(incident.state)
        if user.may(action_permission(a))
        and verify_while_firing(incident, a) is None
        and not (seen and a is Action.ACKNOWLEDGE)
    )


def withheld(user: User, incident: Incident) -> dict[Action, str]:
    """:attr:`IncidentView.withheld`."""
    if not_theirs(user, incident) is not None:
        return {}
    out = {}
    for action in sendable(incident.state):
        why = verify_while_firing(incident, action)
        if why is not None and user.may(action_permission(action)):
            out[action] = why
    return out


@router.get(
    "/incidents/{incident_id}",
    response_model=IncidentView,
    responses=NOT_FOUND,
    tags=["incidents"],
)
def incident(user: Reading, incident_id: PathId, registry: Reader) -> IncidentView:
    """One incident with its steps, dispatch orders, escalations, alerts and reports, and
    the actions the user may send on it now."""
    try:
        detail = incident_detail(registry.conn, incident_id)
    except UnknownIncident as exc:
        raise NotFound(str(exc)) from exc
    check_scope(user, detail.incident.place_path, f"incident {incident_id!r}")
    found = detail.incident
    return IncidentView(
        **dict(detail), actions=may_send(user, found), withheld=withheld(user, found)
    )


@router.post(
    "/incidents/{incident_id}/actions",
    status_code=202,
    response_model=Sent,
    responses={
        **NOT_FOUND,
        **BAD_INPUT,
        409: {"description": "the incident's state does not take the action"},
    },
    tags=["incidents"],
)
def act(
    user: CurrentUser,
    incident_id: PathId,
    body: ActionBody,
    registry: Reader,
    request: Request,
    x_actor: Annotated[str | None, Header(alias="X-Actor", max_length=200)] = None,
) -> Sent:
    """Send the action as a feedback on ``dispatch.feedback``; answers its ``feedback_id``.
    An action the incident's state does not take answers 409, naming those it does (the
    state as stored, or any the stage's own moves could have taken it to since); one people
    cannot send answers 422 listing those they can; so do a close before
    verification without a reason and a reassignment to a department that neither the
    incident routing nor the registry knows (listing those there are).

    accept, reject, on_site and handled take ``incidents.feedback`` (a department operator:
    only for an incident dispatched to its department); the others ``incidents.act``. The
    feedback's actor is the user (``name (role)``); the action is in the audit log."""
    if body.action not in PEOPLE_SEND:  # not an action at all: said before whose it is
        raise FieldError(422, ("body", "action"), str(BadAction(body.action)), body.action)
    needed = action_permission(body.action)
    if not user.may(needed) and user.may("incidents.feedback"):  # a department's operator
        roles = ", ".join(r.value for r in Role if r in PERMISSIONS[needed])
        raise HTTPException(
            403,
            f"{body.action} is not a department's to send but a duty officer's ({needed}: "
            f"{roles}); "
            f"{user.actor} may send {', '.join(sorted(DEPARTMENT_SENDS))} on its "
            "department's incidents",
        )
    check_permission(user, needed)
    try:
        found = get_incident(registry.conn, incident_id)
    except UnknownIncident as exc:
        raise NotFound(str(exc)) from exc
    check_scope(user, found.place_path, f"incident {incident_id!r}")
    if body.feedback_id is not None and applied(registry.conn, incident_id, body.feedback_id):
        # sent again after its answer was lost: applied already, so taken, not judged again
        return Sent(feedback_id=body.feedback_id, incident_id=incident_id, action=body.action)
    foreign = not_theirs(user, found)
    if foreign is not None:
        raise HTTPException(403, foreign)
    actor = actor_for(user, body.actor or x_actor)
    try:
        feedback = make_feedback(
            incident_id,
            body.action,
            actor=actor,
            reason=body.reason,
            department=body.department,
            tier=body.tier,
            dispatch_id=body.dispatch_id or answered_order(found, body.action),
            feedback_id=body.feedback_id,
        )
    except BadAction as exc:
        raise FieldError(422, ("body", "action"), str(exc), body.action) from exc
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise FieldError(422, ("body", *err["loc"]), err["msg"], err.get("input")) from exc
    settings: Settings = request.app.state.settings
    # Refused here as the stage would refuse it, or as nobody would answer it.
    unexplained = without_reason(found.state, feedback.action, body.reason)
    if unexplained is not None:
        raise FieldError(422, ("body", "reason"), unexplained, body.reason)
    earlier = superseded_dispatch(registry.conn, found, feedback.dispatch_id)
    if earlier is not None:
        raise FieldError(422, ("body", "dispatch_id"), earlier, body.dispatch_id)
    ours = feedback.dispatch_id is not None and feedback.dispatch_id == found.dispatch_id
    too_soon = not_now(found.state, feedback.action, ours)  # nor in any state it may be in
    if too_soon is not None:  # naming what this user may send, not what anyone may
        yours = ", ".join(sorted(a.value for a in may_send(user, found))) or "nothing"
        said = f"{too_soon.split(' (people may send')[0]} (you may send: {yours})"
        raise FieldError(409, ("body", "action"), said, body.action)
    still = verify_while_firing(found, feedback.action)  # after the state, as the stage judges
    if still is not None:
        raise FieldError(422, ("body", "action"), still, body.action)
    if feedback.action is Action.REASSIGN and feedback.department is not None:
        listed = (d.department_id for d in registry.list_departments())
        routed = _configured(incident_departments, settings)
        unknown = unknown_department(feedback.department, routed, listed)
        if unknown is not None:
            raise FieldError(422, ("body", "department"), unknown, feedback.department)
    IncidentPublisher(settings, registry.producer).send_feedback(feedback)
    registry.record(
        actor,
        body.action,
        "incident",
        incident_id,
        {"feedback_id": feedback.feedback_id, "reason": body.reason, "user": user.name},
    )
    return Sent(feedback_id=feedback.feedback_id, incident_id=incident_id, action=body.action)


def _configured(read: Callable[[Settings], T], settings: Settings) -> T:
    """What ``read`` takes from the incident configuration; 503 naming the file when it
    cannot be read (changed since the API started)."""
    try:
        return read(settings)
    except (OSError, ValueError) as exc:
        raise HTTPException(503, f"the incident configuration cannot be read: {exc}") from exc


@router.post(
    "/reports", status_code=202, response_model=Received, responses=BAD_INPUT, tags=["incidents"]
)
def report(
    user: Annotated[User, require("reports.create")],
    body: ReportBody,
    registry: Reader,
    request: Request,
) -> Received:
    """Send a citizen report on ``reports``; answers its ``report_id``. A place the registry
    does not have, or a category the incident configuration does not, answers 422."""
    settings: Settings = request.app.state.settings
    known = _configured(incident_categories, settings)
    if body.category not in known:
        raise FieldError(
            422,
            ("body", "category"),
            f"no category {body.category!r}; one of: {', '.join(known)}",
            body.category,
        )
    try:
        place = registry.get_place(body.place_id)
    except UnknownPlace as exc:
        raise FieldError(
            422, ("body", "place_id"), f"place {body.place_id!r} does not exist", body.place_id
        ) from exc
    check_scope(user, place.path, f"place {body.place_id!r}")
    sent = make_report(
        place.path,
        body.category,
        body.text,
        channel=body.channel,
        level=body.level,
        photo_ref=body.photo_ref,
        lat=body.lat,
        lon=body.lon,
    )
    IncidentPublisher(settings, registry.producer).send_report(sent)
    registry.record(
        user.actor,
        "report",
        "report",
        sent.report_id,
        {"place_id": body.place_id, "category": body.category, "user": user.name},
    )
    return Received(report_id=sent.report_id)


@router.get("/open311/v2/requests.json", response_model=list[ServiceRequest], tags=["open311"])
def open311_service_requests(
    user: Reading,
    registry: Reader,
    request: Request,
    status: Literal["open", "closed"] | None = None,
    service_code: Annotated[str | None, Query(pattern=IDENTIFIER)] = None,
    start_date: Annotated[Time, Query()] = None,
    end_date: Annotated[Time, Query()] = None,
) -> list[ServiceRequest]:
    """Citizen reports and their incidents as Open311 GeoReport v2 service requests, newest
    first (at most 1000), at places in the user's scope; times in the city's time zone."""
    settings: Settings = request.app.state.settings
    found = open311_requests(
        registry.conn,
        settings.zone,
        status=status,
        service_code=service_code,
        start=as_utc(start_date),
        end=as_utc(end_date),
        titles=_configured(incident_categories, settings),
    )
    if not user.scope:
        return found
    mine = {p.place_id for p in registry.list_places(user.scope[-1])}
    return [r for r in found if r.address_id in mine]


@router.get("/open311/v2/services.json", response_model=list[ServiceType], tags=["open311"])
def open311_service_list(user: Reading, registry: Reader, request: Request) -> list[ServiceType]:
    """One Open311 service per incident category."""
    categories = _configured(incident_categories, request.app.state.settings)
    return open311_services(registry.conn, categories)
