"""What a route asks for: a registry to read or to write with, ids and filters (the user and
the actor: :mod:`device_registry.api.auth`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, cast

from fastapi import Depends, Path, Query, Request

from cityvitals.contracts import IDENTIFIER
from device_registry.api.pool import RegistryPool
from device_registry.registry import Registry

__all__ = ["IdFilter", "Limit", "Offset", "PathId", "Reader", "Tag", "Writer", "pool"]


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
