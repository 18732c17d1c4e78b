"""What a route asks for: a registry to read or to write with, ids and filters (the user and
the actor: :mod:`device_registry.api.auth`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, cast

from fastapi import Depends, Path, Query, Request
from pydantic import BeforeValidator

from cityvitals.contracts import IDENTIFIER
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
