"""Errors as HTTP answers: 404 for an unknown id in the path; 422 (409 when an id or a place is
taken) naming the field, in FastAPI's ``{"detail": [{"loc", "msg", "type"}]}`` shape; 503 with
``Retry-After`` when Kafka or the database is unreachable or the registry is busy."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

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

__all__ = ["RETRY_AFTER_S", "FieldError", "NotFound", "body_errors", "install_error_handlers"]

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


def _field_error_response(err: FieldError) -> JSONResponse:
    try:
        value = jsonable_encoder(err.value)
    except (TypeError, ValueError):
        value = repr(err.value)
    item = {"loc": list(err.loc), "msg": err.msg, "type": "value_error", "input": value}
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
        # FastAPI's own handler fails (a 500) on a body that is not UTF-8: it decodes the
        # input bytes to echo them back. Echo undecodable bytes as text with replacements.
        errors = cast(RequestValidationError, exc).errors()
        for err in errors:
            if isinstance(err.get("input"), bytes):
                err["input"] = err["input"].decode("utf-8", errors="replace")
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
