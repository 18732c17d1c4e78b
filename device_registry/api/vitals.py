"""``/vitals``: each place's indicators now and over time, through :mod:`sinks.vitals`
(the sinks own the indicators and alerts tables; this module writes no SQL of its own)."""

from __future__ import annotations

from datetime import MAXYEAR, MINYEAR, UTC, datetime, timedelta, tzinfo
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from cityvitals.contracts import IDENTIFIER
from cityvitals.settings import Settings
from device_registry.access import User
from device_registry.api.auth import check_scope, require
from device_registry.api.bodies import NOT_FOUND, RETRY_LATER, FieldProblem
from device_registry.api.deps import PathId, Reader
from device_registry.api.errors import FieldError, NotFound
from device_registry.errors import UnknownPlace as UnknownRegistryPlace
from rules.indicators import Catalogue, parse_catalogue
from sinks.vitals import HistoryPoint, PlaceVitals, current, history
from sinks.vitals import UnknownPlace as UnknownVitalsPlace

__all__ = ["load_catalogue", "router"]

router = APIRouter(responses=RETRY_LATER, tags=["vitals"])
Reading = Annotated[User, require("read")]


def _in_scope(registry: Reader, user: User, place_id: str) -> None:
    """403 for a place outside the user's scope (an unknown place: 404 as before)."""
    try:
        place = registry.get_place(place_id)
    except UnknownRegistryPlace:
        return  # the vitals query answers 404 naming it
    check_scope(user, place.path, f"place {place_id!r}")


def load_catalogue(path: Path | None) -> Catalogue:
    """The indicator catalogue at ``path`` (the settings' ``indicators_file``), or the shipped
    one; raises RuleFileError."""
    if path is None:
        shipped = resources.files("rules").joinpath("indicators.yaml")
        return parse_catalogue(shipped.read_text(), "rules/indicators.yaml")
    return parse_catalogue(path.read_text(), str(path))


def _in_city(value: datetime, zone: tzinfo) -> datetime:
    """A time without a zone read as the city's (a history's days are the city's)."""
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


@router.get("/vitals/{place_id}", response_model=list[PlaceVitals], responses=NOT_FOUND)
def vitals_now(
    user: Reading, place_id: PathId, registry: Reader, request: Request
) -> list[PlaceVitals]:
    """The place, then its children: each indicator's latest value with its unit, window,
    age, coverage and quality, when the next value is due, the indicators with no value yet,
    and the open alerts under each by level."""
    _in_scope(registry, user, place_id)
    settings: Settings = request.app.state.settings
    try:
        return current(
            registry.conn,
            place_id,
            catalogue=request.app.state.catalogue,
            grace=timedelta(seconds=settings.indicators_grace_s),
        )
    except UnknownVitalsPlace as exc:
        raise NotFound(str(exc)) from exc


@router.get(
    "/vitals/{place_id}/history",
    response_model=list[HistoryPoint],
    responses={
        **NOT_FOUND,
        422: {"model": FieldProblem, "description": "an unknown indicator, or a bad parameter"},
    },
)
def vitals_history(
    user: Reading,
    place_id: PathId,
    registry: Reader,
    request: Request,
    indicator: Annotated[str, Query(pattern=IDENTIFIER)],
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    resolution: Literal["raw", "1h", "1d"] = "raw",
) -> list[HistoryPoint]:
    """One indicator of one place over ``[from, to)`` (ISO times or dates; without a zone, the
    city's (CITYVITALS_TIMEZONE), as the buckets are its hours and days; default: the last
    day), as stored or rolled up to hours or days, widened to whole buckets. An indicator the
    catalogue does not have answers 422, listing those it has."""
    _in_scope(registry, user, place_id)
    known: tuple[str, ...] = request.app.state.indicators
    if indicator not in known:
        raise FieldError(
            422,
            ("query", "indicator"),
            f"no indicator {indicator!r}; the catalogue has: {', '.join(known)}",
            indicator,
        )
    city = request.app.state.settings.zone  # a date here is the city's, as its buckets are
    last = _in_city(end, city) if end else datetime.now(UTC)
    try:
        first = _in_city(start, city) if start else last - timedelta(days=1)
    except OverflowError as exc:
        raise FieldError(422, ("query", "to"), "too early: give from", last.isoformat()) from exc
    if first >= last:  # holds nothing: a mistake to name, not an empty answer
        raise FieldError(
            422, ("query", "from"), f"not before to ({last.isoformat()})", first.isoformat()
        )
    try:
        rollup = request.app.state.catalogue.by_id[indicator].rollup
        zone = request.app.state.settings.timezone
        return history(
            registry.conn, place_id, indicator, first, last, resolution, rollup=rollup, zone=zone
        )
    except UnknownVitalsPlace as exc:
        raise NotFound(str(exc)) from exc
    except OverflowError as exc:  # widened to whole buckets past the calendar's ends
        late = last.year >= MAXYEAR
        name, at = ("to", last) if late else ("from", first)
        said = f"too {'late' if late else 'early'}: its whole {resolution} buckets are past year "
        said += str(MAXYEAR if late else MINYEAR)
        raise FieldError(422, ("query", name), said, at.isoformat()) from exc
