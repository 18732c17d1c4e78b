"""Read-only views: ``/audit`` (the registry's audit log) and ``/liveness`` (as the liveness
service last judged devices and places; :mod:`device_registry.liveness_store` reads them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from cityvitals.contracts import DeviceLiveness, Liveness, PlaceOutage
from device_registry.access import User
from device_registry.api.auth import place_filter, require, require_city, visible
from device_registry.api.bodies import RETRY_LATER
from device_registry.api.deps import (
    IdFilter,
    Limit,
    Offset,
    PageSize,
    Reader,
    Time,
    as_utc,
    in_order,
    page,
)
from device_registry.liveness_store import device_rows, open_outages
from device_registry.repositories.audit import AuditEntry

__all__ = ["router"]

router = APIRouter(responses=RETRY_LATER)


@router.get("/audit", response_model=list[AuditEntry], tags=["audit"])
def audit_log(
    user: Annotated[User, require("audit.read")],
    registry: Reader,
    request: Request,
    response: Response,
    entity: Annotated[
        str | None, Query(pattern=r"^[a-z_]{1,40}$", description="device, place, ...")
    ] = None,
    entity_id: IdFilter = None,
    actor: Annotated[
        str | None,
        Query(max_length=200, pattern=r"^[^\x00]+$", description="as recorded, or a user's name"),
    ] = None,
    since: Annotated[Time, Query(description="at or after (no zone: UTC)")] = None,
    until: Annotated[Time, Query(description="before (no zone: UTC)")] = None,
    limit: PageSize = 100,
    offset: Offset = 0,
) -> list[AuditEntry]:
    """Registry changes and API actions, newest first: who changed what, before and after;
    ``offset`` skips that many (the ``Link`` header names the next page). It spans the whole
    city: it takes a city-wide scope."""
    require_city(user, "the audit log")
    start, end = as_utc(since), as_utc(until)
    if start is not None and end is not None:
        in_order(start, end)
    found = registry.audit_log(
        entity, entity_id, limit + 1, actor=actor, since=start, until=end, offset=offset
    )
    return page(found, limit, offset, request, response)


@router.get("/liveness/devices", response_model=list[DeviceLiveness], tags=["liveness"])
def device_liveness(
    user: Annotated[User, require("read")],
    registry: Reader,
    place: IdFilter = None,
    status: Liveness | None = None,
    limit: Limit = None,
    offset: Offset = 0,
) -> list[DeviceLiveness]:
    """Each device's liveness as the liveness service last judged it, in id order."""
    narrowed = place_filter(user, registry, place)
    found = device_rows(registry.conn, narrowed[-1] if narrowed else place, status, limit, offset)
    return visible(user, found, lambda d: d.place_path)


@router.get("/liveness/outages", response_model=list[PlaceOutage], tags=["liveness"])
def outages(
    user: Annotated[User, require("read")], registry: Reader, place: IdFilter = None
) -> list[PlaceOutage]:
    """Places whose devices went silent together and have not come back, oldest first."""
    narrowed = place_filter(user, registry, place)
    found = open_outages(registry.conn, narrowed[-1] if narrowed else place)
    return visible(user, found, lambda o: o.place_path)
