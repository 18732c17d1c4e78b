"""``/places``, ``/profiles`` and ``/departments``: the catalogue devices refer to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel

from cityvitals.contracts import Department, Place, PlaceLevel, Profile
from cityvitals.settings import Settings
from device_registry.access import User
from device_registry.api.auth import (
    Caller,
    acting,
    check_scope,
    place_filter,
    require,
    require_city,
    visible,
)
from device_registry.api.bodies import (
    BAD_INPUT,
    NOT_FOUND,
    REFUSED,
    RETRY_LATER,
    DepartmentBody,
    PlaceBody,
    PlaceMove,
    ProfileBody,
)
from device_registry.api.deps import IdFilter, PathId, Reader, Writer
from device_registry.api.errors import FieldError, NotFound, body_errors
from device_registry.errors import UnknownPlace, UnknownProfile
from device_registry.incident_publisher import incident_departments, named_places, routing_name
from rules.indicators import unit_problems

__all__ = ["router"]

F = TypeVar("F", bound=Callable[..., Any])

router = APIRouter(responses=RETRY_LATER)
Responses = dict[int | str, dict[str, Any]]
Reading = Annotated[User, require("read")]
Writing = Annotated[Caller, acting("places.write")]


def _put(path: str, model: type[BaseModel], tag: str, refused: Responses) -> Callable[[F], F]:
    """A create-or-replace route: 201 when it created, 200 when it replaced."""
    created: Responses = {201: {"model": model, "description": "created"}}
    return router.put(path, response_model=model, tags=[tag], responses={**created, **refused})


@router.get("/places", response_model=list[Place], tags=["places"], responses=NOT_FOUND)
def list_places(user: Reading, registry: Reader, under: IdFilter = None) -> list[Place]:
    """Every place, or a place and all its descendants, in path order (those in scope)."""
    narrowed = place_filter(user, registry, under, "under")
    found = registry.list_places(narrowed[-1] if narrowed else under)
    return visible(user, found, lambda p: p.path)


@router.get("/places/{place_id}", response_model=Place, tags=["places"], responses=NOT_FOUND)
def get_place(user: Reading, place_id: PathId, registry: Reader) -> Place:
    place = registry.get_place(place_id)
    check_scope(user, place.path, f"place {place_id!r}")
    return place


@_put("/places/{place_id}", Place, "places", REFUSED)
def put_place(
    who: Writing, place_id: PathId, body: PlaceBody, registry: Writer, response: Response
) -> Place:
    """Create a place under its parent, or rename it (``POST /places/{id}/move`` moves it)."""
    path: tuple[str, ...] = (place_id,)
    if body.parent_id is not None:
        try:
            parent = registry.get_place(body.parent_id)
        except UnknownPlace as exc:
            raise FieldError(422, ("body", "parent_id"), str(exc), body.parent_id) from exc
        if parent.level is PlaceLevel.BUILDING:
            raise FieldError(422, ("body", "parent_id"), "a building has no places under it")
        path = (*parent.path, place_id)
    check_scope(who.user, path, f"place {place_id!r}")
    try:
        current: Place | None = registry.get_place(place_id)
    except UnknownPlace:
        current = None
    if current is not None and current.path != path:
        raise FieldError(
            409,
            ("body", "parent_id"),
            f"place {place_id!r} is at {'/'.join(current.path)}; "
            f"POST /places/{place_id}/move moves it",
            body.parent_id,
        )
    with body_errors():
        place = Place(
            place_id=place_id,
            level=list(PlaceLevel)[len(path) - 1],
            name=body.name,
            path=path,
            lat=body.lat,
            lon=body.lon,
        )
    registry.put_places([place], who.actor)
    response.status_code = 200 if current is not None else 201
    return place


@router.post(
    "/places/{place_id}/move",
    response_model=list[Place],
    tags=["places"],
    responses={**NOT_FOUND, **REFUSED},
)
def move_place(who: Writing, place_id: PathId, body: PlaceMove, registry: Writer) -> list[Place]:
    """Move a place and its subtree (devices included) under another parent; the users whose
    scope lies there keep it at its new path. Refused (422, naming them) while incidents not
    closed or alerts firing lie under the place, unless ``with_open``: they would stay at the
    old path, with its officers and escalations."""
    place = registry.get_place(place_id)
    check_scope(who.user, place.path, f"place {place_id!r}")
    try:
        parent = registry.get_place(body.parent_id)
    except UnknownPlace as exc:
        raise FieldError(422, ("body", "parent_id"), str(exc), body.parent_id) from exc
    check_scope(who.user, (*parent.path, place_id), f"the new place of {place_id!r}")
    return registry.move_place(place_id, body.parent_id, who.actor, body.with_open).places


IN_USE: Responses = {409: {"description": "still in use: the detail names what uses it"}}


@router.delete(
    "/places/{place_id}", status_code=204, tags=["places"], responses={**NOT_FOUND, **IN_USE}
)
def remove_place(who: Writing, place_id: PathId, registry: Writer, request: Request) -> Response:
    """Remove a place nothing uses (one made by mistake). Refused (409, naming them) while
    places lie under it, devices of any state are at or under it, users are scoped to it,
    incidents not closed or alerts firing are there, or the rule file or the incident routing
    in force names it; what was stored at it stays stored."""
    check_scope(who.user, registry.get_place(place_id).path, f"place {place_id!r}")
    settings: Settings = request.app.state.settings
    try:
        named = named_places(settings)
    except (OSError, ValueError) as exc:
        raise HTTPException(503, f"cannot check what names the place: {exc}") from exc
    registry.remove_place(place_id, who.actor, named.of)
    return Response(status_code=204)


@router.get("/profiles", response_model=list[Profile], tags=["profiles"])
def list_profiles(user: Reading, registry: Reader) -> list[Profile]:
    return registry.list_profiles()


@router.get(
    "/profiles/{profile_id}", response_model=Profile, tags=["profiles"], responses=NOT_FOUND
)
def get_profile(user: Reading, profile_id: PathId, registry: Reader) -> Profile:
    try:
        return registry.get_profile(profile_id)
    except UnknownProfile as exc:
        raise NotFound(str(exc)) from exc


@_put("/profiles/{profile_id}", Profile, "profiles", BAD_INPUT)
def put_profile(
    who: Writing,
    profile_id: PathId,
    body: ProfileBody,
    registry: Writer,
    request: Request,
    response: Response,
) -> Profile:
    """Create or replace a profile; changed valid ranges reach its devices in the stream.
    A profile serves the whole city: it takes a city-wide scope. A metric in a unit other than
    the one a vital sign reads it in (the AQI's CO in mg/m³) is refused (422)."""
    require_city(who.user, f"profile {profile_id!r}")
    with body_errors():
        profile = Profile(profile_id=profile_id, **body.model_dump())
    catalogue = request.app.state.catalogue  # a vital sign takes values in its unit as given
    for metric, spec in profile.metrics.items():
        wrong = unit_problems(catalogue, profile.device_type, {metric: spec.unit})
        if wrong:
            raise FieldError(422, ("body", "metrics", metric, "unit"), wrong[0], spec.unit)
    try:
        existed = registry.get_profile(profile_id) is not None
    except UnknownProfile:
        existed = False
    registry.put_profile(profile, who.actor)
    response.status_code = 200 if existed else 201
    return registry.get_profile(profile_id)


@router.delete(
    "/profiles/{profile_id}",
    status_code=204,
    tags=["profiles"],
    responses={**NOT_FOUND, **IN_USE},
)
def remove_profile(who: Writing, profile_id: PathId, registry: Writer) -> Response:
    """Remove a profile no device uses (of any state). Refused (409) otherwise."""
    require_city(who.user, f"profile {profile_id!r}")
    try:
        registry.remove_profile(profile_id, who.actor)
    except UnknownProfile as exc:
        raise NotFound(str(exc)) from exc
    return Response(status_code=204)


@router.get("/departments", response_model=list[Department], tags=["departments"])
def list_departments(user: Reading, registry: Reader) -> list[Department]:
    return registry.list_departments()


@router.get(
    "/departments/{department_id}",
    response_model=Department,
    tags=["departments"],
    responses=NOT_FOUND,
)
def get_department(user: Reading, department_id: PathId, registry: Reader) -> Department:
    for department in registry.list_departments():
        if department.department_id == department_id:
            return department
    raise NotFound(f"department {department_id!r} does not exist")


@_put("/departments/{department_id}", Department, "departments", BAD_INPUT)
def put_department(
    who: Writing,
    department_id: PathId,
    body: DepartmentBody,
    registry: Writer,
    response: Response,
) -> Department:
    """Create or rename a department (it serves the whole city: a city-wide scope)."""
    require_city(who.user, f"department {department_id!r}")
    department = Department(department_id=department_id, name=body.name)
    existed = any(d.department_id == department_id for d in registry.list_departments())
    registry.put_department(department, who.actor)
    response.status_code = 200 if existed else 201
    return department


@router.delete(
    "/departments/{department_id}",
    status_code=204,
    tags=["departments"],
    responses={**NOT_FOUND, **IN_USE},
)
def remove_department(
    who: Writing, department_id: PathId, registry: Writer, request: Request
) -> Response:
    """Remove a department nothing names: refused (409) while the incident routing
    dispatches to it, devices of any state or users name it, or it holds incidents not
    closed."""
    require_city(who.user, f"department {department_id!r}")
    if not any(d.department_id == department_id for d in registry.list_departments()):
        raise NotFound(f"department {department_id!r} does not exist")
    settings: Settings = request.app.state.settings
    try:
        routed = incident_departments(settings)
    except (OSError, ValueError) as exc:
        raise HTTPException(503, f"the incident configuration cannot be read: {exc}") from exc
    registry.remove_department(department_id, who.actor, routed, routing_name(settings))
    return Response(status_code=204)
