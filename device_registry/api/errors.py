"""Errors as HTTP answers: 404 for an unknown id in the path; 422 (409 when an id or a place is
taken) naming the field, in FastAPI's ``{"detail": [{"loc", "msg", "type"}]}`` shape; 503 with
``Retry-After`` when Kafka or the database is unreachable or the registry is busy."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityvitals.db import DatabaseUnavailable
from cityvitals.kafka import KafkaUnavailable
from device_registry.api.pool import PoolClosed, RegistryBusy
from device_registry.errors import (
    DeviceExists,
    InUse,
    PlaceConflict,
    RegistryError,
    ServiceLogin,
    UnknownDevice,
    UnknownPlace,
)

__all__ = [
    "MAX_BODY",
    "MAX_IMPORT",
    "RETRY_AFTER_S",
    "BodyLimit",
    "FieldError",
    "NotFound",
    "body_errors",
    "echoed",
    "install_error_handlers",
]

RETRY_AFTER_S = 5


class NotFound(LookupError):
    """Something the request names (in its path) does not exist."""


class FieldError(Exception):
    """A refused request, answered as ``{"detail": [{"loc", "msg", "type", "input"}]}``."""

    def __init__(
        self, status: int, loc: Sequence[str | int], msg: str, value: object = None
    ) -> None:
        super().__init__(msg)
        self.status = status
        self.loc = tuple(loc)
        self.msg = msg
        self.value = value


ECHOED = 300
"""The characters of a refused input an error answer echoes at most."""


def echoed(value: object) -> object:
    """What an error answer echoes of a refused input: the input itself when it is small and
    JSON can carry it; else as text (NaN and Infinity, which JSON cannot carry, or bytes that
    are not UTF-8), cut to :data:`ECHOED` characters, saying how long it was (a 20 MB body
    once came back three times over).

    >>> echoed({"lat": 1.5}), echoed(float("nan")), echoed("x" * 400)[-20:]
    ({'lat': 1.5}, 'nan', '... (400 characters)')
    >>> echoed({"lat": float("inf")}), echoed(bytes([255])) == chr(0xFFFD)
    ('{"lat": Infinity}', True)
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        return value
    else:
        try:
            encoded = jsonable_encoder(value)
            text = json.dumps(encoded, allow_nan=False)
        except (TypeError, ValueError):
            text = json.dumps(value, default=repr)
        else:
            if len(text) <= ECHOED:
                return encoded
    return text if len(text) <= ECHOED else f"{text[:ECHOED]}... ({len(text):,} characters)"


def _fields_only(errors: Sequence[Any]) -> list[Any]:
    """A field that may be null (``tags: [...] | None``) is a union to pydantic: its errors
    name the member in ``loc`` (``["body", "tags", "tuple[...]", 0]``), one per member,
    "Input should be None" too. Such a field's errors name the field alone, without the
    member, and the None one is dropped. (A field is such a union when an error names its
    ``none`` member: a key of a field's own, ``int`` in ``metrics``, stays.)

    >>> _fields_only([{"loc": ("body", "tags", "tuple[str, ...]", 0), "type": "x"},
    ...               {"loc": ("body", "tags", "none"), "type": "none_required"}])
    [{'loc': ('body', 'tags', 0), 'type': 'x'}]
    >>> _fields_only([{"loc": ("body", "metrics", "int", "unit"), "type": "x"}])
    [{'loc': ('body', 'metrics', 'int', 'unit'), 'type': 'x'}]
    """
    unions = {
        tuple(e["loc"][:-1])
        for e in errors
        if e.get("type") == "none_required" and len(e["loc"]) >= 2 and e["loc"][-1] == "none"
    }
    out = []
    for err in errors:
        loc = tuple(err["loc"])
        if err.get("type") == "none_required" and loc[:-1] in unions:
            continue
        for field in unions:
            if loc[: len(field)] == field and len(loc) > len(field):
                loc = loc[: len(field)] + loc[len(field) + 1 :]  # the member's name, gone
                break
        out.append({**err, "loc": loc})
    return out or list(errors)


def _field_error_response(err: FieldError) -> JSONResponse:
    item = {"loc": list(err.loc), "msg": err.msg, "type": "value_error", "input": echoed(err.value)}
    return JSONResponse({"detail": [item]}, status_code=err.status)


def _registry_error(err: RegistryError) -> FieldError:
    status = 409 if isinstance(err, DeviceExists | InUse | PlaceConflict | ServiceLogin) else 422
    where = "path" if isinstance(err, InUse) else "body"  # a removal: what the path names
    return FieldError(status, (where, err.field), str(err), err.value)


@contextmanager
def body_errors() -> Iterator[None]:
    """Validation of request data done past FastAPI's own becomes a 422 naming the field."""
    try:
        yield
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise FieldError(422, ("body", *err["loc"]), err["msg"], err.get("input")) from exc


def _unavailable(err: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": str(err)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def install_error_handlers(app: FastAPI) -> None:
    async def field_error(_request: Request, exc: Exception) -> JSONResponse:
        return _field_error_response(cast(FieldError, exc))

    async def registry_error(_request: Request, exc: Exception) -> JSONResponse:
        return _field_error_response(_registry_error(cast(RegistryError, exc)))

    async def not_found(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        return _unavailable(exc)

    async def refused_by_database(_request: Request, exc: Exception) -> JSONResponse:
        # Data the database refuses (a value out of its range, a row taken meanwhile) is the
        # client's; answer 4xx rather than 500. The registry validates most input before this.
        status = 409 if isinstance(exc, psycopg.IntegrityError) else 422
        return _field_error_response(FieldError(status, ("body",), str(exc).strip()))

    async def request_invalid(_request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own handler fails (a 500) on a body that is not UTF-8, or holds NaN, as it
        # echoes the input back; and echoes a large body whole with each error.
        errors = _fields_only(cast(RequestValidationError, exc).errors())
        for err in errors:
            if "input" in err:
                err["input"] = echoed(err["input"])
            if "ctx" in err:
                err["ctx"] = {k: echoed(v) for k, v in err["ctx"].items()}
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(FieldError, field_error)
    app.add_exception_handler(RegistryError, registry_error)
    app.add_exception_handler(UnknownDevice, not_found)
    app.add_exception_handler(UnknownPlace, not_found)
    app.add_exception_handler(NotFound, not_found)
    for unavailable_error in (
        KafkaUnavailable,
        DatabaseUnavailable,
        psycopg.OperationalError,
        psycopg.InterfaceError,
        RegistryBusy,
        PoolClosed,
    ):
        app.add_exception_handler(unavailable_error, unavailable)
    app.add_exception_handler(psycopg.DataError, refused_by_database)
    app.add_exception_handler(psycopg.IntegrityError, refused_by_database)


MAX_BODY = 1 << 20
"""The bytes a request's body may hold, a device file's import aside (:data:`MAX_IMPORT`)."""
MAX_IMPORT = 64 << 20
"""The bytes of a device file ``POST /devices/import`` takes (about 500,000 CSV rows)."""


class BodyLimit:
    """Refuses a request whose body is past what its route takes (413, naming the limit):
    by its ``Content-Length`` before it is read, or, sent in chunks, as soon as the chunks
    pass the limit (read here, then handed on whole) (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = MAX_IMPORT if path == "/devices/import" else MAX_BODY
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            size = int(length) if length.isdigit() else 0
            if size > limit:
                await _too_large(scope, receive, send, f"a body of {size:,} bytes", path, limit)
                return
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                said = f"a body in chunks past {size:,} bytes"
                await _too_large(scope, receive, send, said, path, limit)
                return
        body = b"".join(chunks)
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(
    scope: Scope, receive: Receive, send: Send, what: str, path: str, limit: int
) -> None:
    answer = JSONResponse({"detail": f"{what}: {path} takes {limit:,} at most"}, status_code=413)
    await answer(scope, receive, send)
