"""What a route asks for: a registry to read or to write with, ids and filters (the user and
the actor: :mod:`device_registry.api.auth`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, TypeVar, cast

from fastapi import Depends, Path, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BeforeValidator

from cityvitals.contracts import IDENTIFIER
from device_registry.api.errors import FieldError
from device_registry.api.pool import RegistryPool
from device_registry.registry import Registry

__all__ = [
    "IdFilter",
    "Limit",
    "Offset",
    "PathId",
    "Reader",
    "Tag",
    "Time",
    "Writer",
    "as_utc",
    "in_order",
    "known_query",
    "pool",
]


def _iso_time(value: object) -> object:
    # pydantic would take a number as seconds since 1970; the document says an ISO time.
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("give an ISO time (e.g. 2026-11-22T08:00:00Z), not a number")
    return value


Time = Annotated[datetime | None, BeforeValidator(_iso_time)]
"""An ISO time or date in a query; without a zone, UTC."""


def as_utc(value: datetime | None) -> datetime | None:
    """A query's time as UTC: a time without a zone is taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def in_order(since: datetime, until: datetime) -> None:
    """422 unless ``since`` is before ``until``: a range that ends before it begins holds
    nothing, which is a mistake worth naming rather than an empty answer."""
    if since >= until:
        raise FieldError(
            422, ("query", "since"), f"not before until ({until.isoformat()})", since.isoformat()
        )


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take (422 naming it and those it takes):
    a misspelt filter would otherwise be ignored and answer as if none was given."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    takes = _query_names(route.dependant)  # a few fields: cheaper than any cache key
    unknown = sorted(set(request.query_params) - takes)
    if unknown:
        offers = ", ".join(sorted(takes)) or "none"
        raise FieldError(
            422,
            ("query", unknown[0]),
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; {route.path} takes: {offers}",
            request.query_params[unknown[0]],
        )


def pool(request: Request) -> RegistryPool:
    return cast(RegistryPool, request.app.state.registries)


def _reader(request: Request) -> Iterator[Registry]:
    with pool(request).checkout() as registry:
        yield registry


def _writer(request: Request) -> Iterator[Registry]:
    with pool(request).checkout(write=True) as registry:
        yield registry


Reader = Annotated[Registry, Depends(_reader)]
Writer = Annotated[Registry, Depends(_writer)]
PathId = Annotated[str, Path(pattern=IDENTIFIER)]
IdFilter = Annotated[str | None, Query(pattern=IDENTIFIER)]
Tag = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]
Limit = Annotated[int | None, Query(ge=1, le=1_000_000, description="absent: all")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
PageSize = Annotated[
    int,
    Query(
        ge=1,
        le=10_000,
        description="at most this many; a page that has more after it carries a Link header "
        'to the next (rel="next")',
    ),
]

T = TypeVar("T")


def page(rows: list[T], limit: int, offset: int, request: Request, response: Response) -> list[T]:
    """The first ``limit`` of ``rows``, read with one more than ``limit`` to tell whether
    more follow: then a ``Link: <...>; rel="next"`` header gives the next page's address
    (the same query, ``offset`` past this page). A full page without it is the last."""
    if len(rows) <= limit:
        return rows
    following = request.url.include_query_params(offset=offset + limit)
    response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return rows[:limit]
