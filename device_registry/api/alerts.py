"""``/alerts``: alert episodes as the alert sink stored them (through :mod:`sinks.alerts`; this
module writes no SQL of its own)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from cityvitals.contracts import IDENTIFIER, AlertStatus, WarningLevel
from device_registry.access import User
from device_registry.api.auth import check_scope, place_filter, refuse_unnamed, require, visible
from device_registry.api.bodies import NOT_FOUND, RETRY_LATER
from device_registry.api.deps import Offset, PageSize, PathId, Reader, Time, as_utc, page
from device_registry.api.errors import NotFound
from sinks import AlertDetail, AlertFilter, AlertRow, UnknownAlert, alert_detail, list_alerts

__all__ = ["router"]

router = APIRouter(responses=RETRY_LATER)


@router.get("/alerts", response_model=list[AlertRow], tags=["alerts"])
def alerts(
    user: Annotated[User, require("read")],
    registry: Reader,
    request: Request,
    response: Response,
    status: Annotated[AlertStatus | None, Query(description="firing or resolved")] = None,
    rule: Annotated[str | None, Query(pattern=IDENTIFIER)] = None,
    level: Annotated[WarningLevel | None, Query(description="this level or higher")] = None,
    place: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,700}$", description="place id or a/b"),
    ] = None,
    device: Annotated[str | None, Query(pattern=IDENTIFIER)] = None,
    since: Annotated[Time, Query(description="firing at or after (no zone: UTC)")] = None,
    until: Annotated[Time, Query(description="started before (no zone: UTC)")] = None,
    limit: PageSize = 100,
    offset: Offset = 0,
) -> list[AlertRow]:
    """Alert episodes in the user's scope, each at its latest transition, the last changed
    first; ``offset`` skips that many (the ``Link`` header names the next page)."""
    narrowed = place_filter(user, registry, place)
    where = AlertFilter(
        status=status,
        rule=rule,
        level=level,
        place="/".join(narrowed) if narrowed else place,
        device=device,
        since=as_utc(since),
        until=as_utc(until),
        limit=limit + 1,
        offset=offset,
    )
    found = page(list_alerts(registry.conn, where), limit, offset, request, response)
    if not found and device and user.may("devices.read") and not user.scope:
        # an empty list must not hide a misspelling (said to whom may know every device)
        refuse_unnamed(registry, request, device=device)
    return visible(user, found, lambda a: a.place_path)


@router.get("/alerts/{alert_id}", response_model=AlertDetail, responses=NOT_FOUND, tags=["alerts"])
def alert(
    alert_id: PathId, user: Annotated[User, require("read")], registry: Reader
) -> AlertDetail:
    """One alert episode with every transition and the incident holding it (null if none);
    403 outside the user's scope."""
    try:
        detail = alert_detail(registry.conn, alert_id)
    except UnknownAlert as exc:
        raise NotFound(str(exc)) from exc
    check_scope(user, detail.alert.place_path, f"alert {alert_id!r}")
    return detail
