"""The registry over HTTP: devices, places, profiles, departments, the audit log and liveness.

A FastAPI app (OpenAPI at ``/openapi.json``, docs at ``/docs``) in front of
:class:`~device_registry.Registry`. A registry holds one database connection, so requests
check one out of a small :class:`RegistryPool`; every registry of the pool shares one Kafka
producer. Changes are serialised (one writer at a time): each is published to Kafka and
applied to the broker's password file in the order it was committed.

Errors: a request that names something unknown gets 404; input the registry refuses gets 422
(409 for an id or a place that is taken) in FastAPI's ``{"detail": [{"loc", "msg", "type"}]}``
shape, naming the field; an unreachable Kafka or database gets 503 with ``Retry-After``.
The actor of every change is the ``X-Actor`` header (``api`` when absent).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, cast

import psycopg
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, ValidationError
from pydantic.json_schema import SkipJsonSchema
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityvitals import db, kafka
from cityvitals.contracts import (
    IDENTIFIER,
    METRIC,
    Department,
    Device,
    DeviceLiveness,
    DeviceState,
    Liveness,
    Place,
    PlaceLevel,
    PlaceOutage,
    Profile,
)
from cityvitals.db import DatabaseUnavailable
from cityvitals.kafka import KafkaUnavailable
from cityvitals.settings import Settings
from device_registry.credentials import BrokerFiles
from device_registry.importing import (
    CSV_COLUMNS,
    RowError,
    export_csv,
    parse_device_csv,
    parse_device_json,
)
from device_registry.registry import (
    AuditEntry,
    DeviceExists,
    PlaceConflict,
    Registry,
    RegistryError,
    ServiceLogin,
    UnknownDevice,
    UnknownPlace,
    UnknownProfile,
)
from sinks.vitals import HistoryPoint, PlaceVitals, current, history
from sinks.vitals import UnknownPlace as UnknownVitalsPlace
from wiring.services import load_catalogue

__all__ = [
    "POOL_SIZE",
    "FieldError",
    "NotFound",
    "RegistryBusy",
    "RegistryPool",
    "create_api",
    "serve",
]

POOL_SIZE = 4
RETRY_AFTER_S = 5
DESCRIPTION = """\
Onboard and manage the city's devices, its place tree (city > district > street > grid >
building), device profiles and departments; read the audit log and device liveness.

* Every change is audited with the actor named by the `X-Actor` header (`api` when absent).
* A device's MQTT secret is in the answer that registers it (or rotates it), and nowhere else.
* A refused field answers 422 (409 when an id or a place is taken) with
  `{"detail": [{"loc": [..., field], "msg": ...}]}`; an unknown id in the path answers 404;
  Kafka or the database unreachable answers 503 with `Retry-After`.
"""


# --- the pool ---------------------------------------------------------------------------------


class RegistryBusy(RuntimeError):
    """No registry (or no write turn) came free in time; the caller may retry."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"the registry is busy (waited {waited_s:.0f} s); retry shortly")
        self.waited_s = waited_s


class RegistryPool:
    """A fixed set of registries, each lent to one request at a time.

    A registry whose connection broke is rebuilt (``reconnect``) when it is next lent.
    Writers also take the pool's one write turn, so changes reach Kafka and the broker in
    the order they were committed.
    """

    def __init__(
        self,
        registries: Iterable[Registry],
        reconnect: Callable[[Registry], Registry] | None = None,
        wait_s: float = 30.0,
    ) -> None:
        self._all = list(registries)
        if not self._all:
            raise ValueError("a registry pool needs at least one registry")
        self._idle: queue.Queue[Registry] = queue.Queue()
        for registry in self._all:
            self._idle.put(registry)
        self._reconnect = reconnect
        self._write_turn = threading.Lock()
        self.wait_s = wait_s

    @classmethod
    def open(cls, settings: Settings, size: int = POOL_SIZE) -> RegistryPool:
        """``size`` registries on their own connections and one shared (thread-safe) producer."""
        producer = kafka.producer(settings)
        broker = _broker_files(settings)

        def build() -> Registry:
            return Registry(settings, db.connect(settings), producer, broker)

        return cls([build() for _ in range(size)], reconnect=lambda _old: build())

    @contextmanager
    def checkout(self, write: bool = False) -> Iterator[Registry]:
        if write and not self._write_turn.acquire(timeout=self.wait_s):
            raise RegistryBusy(self.wait_s)
        try:
            try:
                registry = self._idle.get(timeout=self.wait_s)
            except queue.Empty:
                raise RegistryBusy(self.wait_s) from None
            try:
                if (registry.conn.closed or registry.conn.broken) and self._reconnect:
                    registry = self._replace(registry, self._reconnect(registry))
                yield registry
            finally:
                self._idle.put(registry)
        finally:
            if write:
                self._write_turn.release()

    def _replace(self, old: Registry, new: Registry) -> Registry:
        self._all[self._all.index(old)] = new
        return new

    def close(self) -> None:
        for registry in self._all:
            registry.conn.close()
        for producer in {id(r.producer): r.producer for r in self._all}.values():
            producer.flush(30)


def _broker_files(settings: Settings) -> BrokerFiles | None:
    """The local stack's Mosquitto files, as :func:`wiring.services.open_registry` finds them."""
    from wiring.stack import StackPaths, mqtt_password_file

    paths = StackPaths(settings.state_dir)
    if not paths.mosquitto.is_dir():
        return None
    return BrokerFiles(mqtt_password_file(settings.state_dir), paths.pids / "mosquitto.pid")


# --- errors -----------------------------------------------------------------------------------


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
    status = 409 if isinstance(err, DeviceExists | PlaceConflict | ServiceLogin) else 422
    return FieldError(status, ("body", err.field), str(err), err.value)


@contextmanager
def _body_errors() -> Iterator[None]:
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


def _install_error_handlers(app: FastAPI) -> None:
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
    ):
        app.add_exception_handler(unavailable_error, unavailable)
    app.add_exception_handler(psycopg.DataError, refused_by_database)
    app.add_exception_handler(psycopg.IntegrityError, refused_by_database)


# --- request and response bodies ------------------------------------------------------------


def _distinct(path: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(path)) != len(path):
        raise ValueError("a place id may appear only once in a path")
    return path


Id = Annotated[str, Field(pattern=IDENTIFIER)]
Text = Annotated[str, Field(pattern=r"^[^\x00]*$")]
"""Free text; PostgreSQL cannot store NUL characters."""
PlacePath = Annotated[
    tuple[Id, ...],
    Field(min_length=1, max_length=5, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_distinct),
]
Lat = Annotated[StrictFloat | None, Field(ge=-90, le=90)]
Lon = Annotated[StrictFloat | None, Field(ge=-180, le=180)]
"""Strict: a JSON ``true`` is not a coordinate (nor any other number in a request)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceCreate(_Body):
    """A device to register; ``place_path`` lists place ids from the city down."""

    device_id: Id
    device_type: Id
    place_path: PlacePath
    profile_id: Id | None = None
    state: DeviceState = DeviceState.ACTIVE
    department: Annotated[Text, Field(max_length=100)] | None = None
    tags: tuple[Text, ...] = ()
    lat: Lat = None
    lon: Lon = None


class DevicePatch(_Body):
    """The fields to change; the others stay as they are (``null`` clears an optional one)."""

    device_type: Id | SkipJsonSchema[None] = None
    profile_id: Id | None = None
    department: Annotated[Text, Field(max_length=100)] | None = None
    tags: tuple[Text, ...] | SkipJsonSchema[None] = None
    lat: Lat = None
    lon: Lon = None


class DeviceMove(_Body):
    place_path: PlacePath


class Onboarded(BaseModel):
    """A registered device and its MQTT login. The secret is shown only here, once."""

    device: Device
    mqtt_username: str
    mqtt_secret: str


class Credential(BaseModel):
    device_id: str
    mqtt_username: str
    mqtt_secret: str


class RefusedRow(BaseModel):
    line: int = Field(description="CSV line (the header is line 1) or JSON item (from 1)")
    field: str
    message: str


class ImportResult(BaseModel):
    """Devices added (with their secrets, shown once) and every refused row."""

    added: list[Credential]
    errors: list[RefusedRow]


class PlaceBody(_Body):
    """A place under its parent; its level is one below the parent's (a city has none)."""

    name: Annotated[Text, Field(min_length=1, max_length=200)]
    parent_id: Id | None = None
    lat: Lat = None
    lon: Lon = None


class PlaceMove(_Body):
    parent_id: Id


class MetricSpecBody(_Body):
    unit: Annotated[Text, Field(min_length=1, max_length=32)]
    min: StrictFloat | None = None
    max: StrictFloat | None = Field(default=None, description="above min")


class ProfileBody(_Body):
    device_type: Id
    description: Annotated[Text, Field(max_length=500)] = ""
    metrics: dict[Annotated[str, Field(pattern=METRIC)], MetricSpecBody] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False}
    )
    expected_interval_s: StrictFloat = Field(gt=0, le=7 * 24 * 3600)


class DepartmentBody(_Body):
    name: Annotated[Text, Field(min_length=1, max_length=200)]


class ExportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


class Problem(BaseModel):
    detail: str


class FieldProblem(BaseModel):
    detail: list[dict[str, Any]]


RETRY_LATER: dict[int | str, dict[str, Any]] = {
    503: {
        "model": Problem,
        "description": "Kafka or the database is unavailable, or the registry is busy",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    }
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "unknown id"}}
BAD_INPUT: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body cannot be parsed"},
    422: {"model": FieldProblem, "description": "a field is refused; `loc` names it"},
}
REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": FieldProblem, "description": "the id or the place is taken"},
    **BAD_INPUT,
}


# --- dependencies ---------------------------------------------------------------------------


def _pool(request: Request) -> RegistryPool:
    return cast(RegistryPool, request.app.state.registries)


def _reader(request: Request) -> Iterator[Registry]:
    with _pool(request).checkout() as registry:
        yield registry


def _writer(request: Request) -> Iterator[Registry]:
    with _pool(request).checkout(write=True) as registry:
        yield registry


Reader = Annotated[Registry, Depends(_reader)]
Writer = Annotated[Registry, Depends(_writer)]
Actor = Annotated[
    str,
    Header(
        alias="X-Actor",
        min_length=1,
        max_length=200,
        description="who makes the change (recorded in the audit log)",
    ),
]
PathId = Annotated[str, Path(pattern=IDENTIFIER)]
IdFilter = Annotated[str | None, Query(pattern=IDENTIFIER)]
Tag = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]
Limit = Annotated[int | None, Query(ge=1, le=1_000_000, description="absent: all")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]


# --- devices ------------------------------------------------------------------------------------

devices = APIRouter(prefix="/devices", tags=["devices"], responses=RETRY_LATER)


@devices.get(
    "",
    response_model=list[Device],
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def list_devices(
    registry: Reader,
    place: IdFilter = None,
    state: DeviceState | None = None,
    device_type: IdFilter = None,
    tag: Tag = None,
    profile_id: IdFilter = None,
    limit: Limit = None,
    offset: Offset = 0,
    format: ExportFormat = ExportFormat.JSON,
) -> Any:
    """Devices in id order, filtered by place subtree, state, type, tag and profile.

    ``format=csv`` exports them in the import format (``POST /devices/import`` reads it back).
    """
    found = registry.list(place, state, device_type, tag, profile_id, limit, offset)
    if format is ExportFormat.CSV:
        return PlainTextResponse(export_csv(found), media_type="text/csv")
    return found


@devices.post("", status_code=201, response_model=Onboarded, responses=REFUSED)
def create_device(
    body: DeviceCreate, registry: Writer, response: Response, actor: Actor = "api"
) -> Onboarded:
    """Register a device; the answer carries its MQTT secret, shown this once."""
    with _body_errors():
        device = Device(**body.model_dump(), updated_at=datetime.now(UTC))
    secret = registry.add(device, actor)
    response.headers["Location"] = f"/devices/{device.device_id}"
    return Onboarded(
        device=registry.get(device.device_id), mqtt_username=device.device_id, mqtt_secret=secret
    )


IMPORT_BODY = {
    "required": True,
    "description": (
        "CSV with a header line (columns: " + ", ".join(CSV_COLUMNS) + "; `place_path` joined "
        "by `/`, `tags` by `;`), or a JSON array of devices shaped as for `POST /devices` "
        "(`place_path` may be a `/`-joined string). Each row or item is judged on its own: "
        "a refused one is reported, never fatal to the others. A device without `state` is "
        "registered `provisioned`: its credentials work, and its first valid reading makes it "
        "active."
    ),
    "content": {
        "text/csv": {
            "schema": {"type": "string"},
            "example": "device_id,device_type,place_path,tags\nwl-1,water_level,sh/sh-pd,river\n",
        },
        "application/json": {"schema": {"type": "array", "items": {}}},
    },
}


@devices.post(
    "/import",
    response_model=ImportResult,
    openapi_extra={"requestBody": IMPORT_BODY},
    responses={
        415: {"model": FieldProblem, "description": "neither text/csv nor application/json"},
        422: {"model": FieldProblem, "description": "the file cannot be read at all"},
    },
)
async def import_devices(request: Request, actor: Actor = "api") -> ImportResult:
    """Register many devices. Bad rows are reported by line and field; good rows go in."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("text/csv", "application/json"):
        raise FieldError(
            415, ("header", "content-type"), "send text/csv or application/json", media
        )
    try:
        text = (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FieldError(422, ("body",), f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    if "\x00" in text or "\\u0000" in text:
        raise FieldError(422, ("body",), "the file contains NUL characters")
    return await run_in_threadpool(_import, _pool(request), text, media == "text/csv", actor)


def _import(pool: RegistryPool, text: str, is_csv: bool, actor: str) -> ImportResult:
    now = datetime.now(UTC)
    parsed = parse_device_csv(text, now) if is_csv else parse_device_json(text, now)
    if parsed.unreadable:
        e = parsed.errors[0]
        raise FieldError(422, ("body", e.field), f"line {e.line}: {e.message}")
    with pool.checkout(write=True) as registry:
        report = registry.import_devices(parsed, actor)
    return ImportResult(
        added=[Credential(device_id=i, mqtt_username=i, mqtt_secret=s) for i, s in report.added],
        errors=[_refused(e) for e in report.errors],
    )


def _refused(error: RowError) -> RefusedRow:
    return RefusedRow(line=error.line, field=error.field, message=error.message)


@devices.get("/{device_id}", response_model=Device, responses=NOT_FOUND)
def get_device(device_id: PathId, registry: Reader) -> Device:
    return registry.get(device_id)


@devices.patch("/{device_id}", response_model=Device, responses={**NOT_FOUND, **REFUSED})
def update_device(
    device_id: PathId, body: DevicePatch, registry: Writer, actor: Actor = "api"
) -> Device:
    """Change a device's type, profile, department, tags or coordinates."""
    changes = body.model_dump(exclude_unset=True)
    with _body_errors():
        return registry.update(device_id, changes, actor)


@devices.post("/{device_id}/move", response_model=Device, responses={**NOT_FOUND, **REFUSED})
def move_device(
    device_id: PathId, body: DeviceMove, registry: Writer, actor: Actor = "api"
) -> Device:
    """Move a device to another place (places the path names are created as needed)."""
    with _body_errors():
        return registry.move(device_id, body.place_path, actor)


def _set_state(state: DeviceState) -> Callable[[str, Registry, str], Device]:
    def change(device_id: PathId, registry: Writer, actor: Actor = "api") -> Device:
        return registry.set_state(device_id, state, actor)

    change.__doc__ = (
        f"Set the device's state to {state.value}; a provisioned or active device may connect."
    )
    return change


for _verb, _state in (
    ("suspend", DeviceState.SUSPENDED),
    ("activate", DeviceState.ACTIVE),
    ("retire", DeviceState.RETIRED),
):
    devices.add_api_route(
        f"/{{device_id}}/{_verb}",
        _set_state(_state),
        methods=["POST"],
        response_model=Device,
        responses=NOT_FOUND,
        name=f"{_verb}_device",
        summary=f"{_verb.capitalize()} a device",
    )


@devices.post("/{device_id}/rotate-secret", response_model=Credential, responses=NOT_FOUND)
def rotate_secret(device_id: PathId, registry: Writer, actor: Actor = "api") -> Credential:
    """Issue a new MQTT secret; the old one stops working at once. Shown this once."""
    ((_, secret),) = registry.rotate_secrets([device_id], actor)
    return Credential(device_id=device_id, mqtt_username=device_id, mqtt_secret=secret)


# --- places, profiles, departments ---------------------------------------------------------

catalogue = APIRouter(responses=RETRY_LATER)


@catalogue.get("/places", response_model=list[Place], tags=["places"], responses=NOT_FOUND)
def list_places(registry: Reader, under: IdFilter = None) -> list[Place]:
    """Every place, or a place and all its descendants, in path order."""
    return registry.list_places(under)


@catalogue.get("/places/{place_id}", response_model=Place, tags=["places"], responses=NOT_FOUND)
def get_place(place_id: PathId, registry: Reader) -> Place:
    return registry.get_place(place_id)


@catalogue.put(
    "/places/{place_id}",
    response_model=Place,
    tags=["places"],
    responses={201: {"model": Place, "description": "created"}, **REFUSED},
)
def put_place(
    place_id: PathId, body: PlaceBody, registry: Writer, response: Response, actor: Actor = "api"
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
    with _body_errors():
        place = Place(
            place_id=place_id,
            level=list(PlaceLevel)[len(path) - 1],
            name=body.name,
            path=path,
            lat=body.lat,
            lon=body.lon,
        )
    registry.put_places([place], actor)
    response.status_code = 200 if current is not None else 201
    return place


@catalogue.post(
    "/places/{place_id}/move",
    response_model=list[Place],
    tags=["places"],
    responses={**NOT_FOUND, **REFUSED},
)
def move_place(
    place_id: PathId, body: PlaceMove, registry: Writer, actor: Actor = "api"
) -> list[Place]:
    """Move a place and its subtree (devices included) under another parent."""
    registry.get_place(place_id)
    try:
        registry.get_place(body.parent_id)
    except UnknownPlace as exc:
        raise FieldError(422, ("body", "parent_id"), str(exc), body.parent_id) from exc
    return registry.move_place(place_id, body.parent_id, actor)


@catalogue.get("/profiles", response_model=list[Profile], tags=["profiles"])
def list_profiles(registry: Reader) -> list[Profile]:
    return registry.list_profiles()


@catalogue.get(
    "/profiles/{profile_id}", response_model=Profile, tags=["profiles"], responses=NOT_FOUND
)
def get_profile(profile_id: PathId, registry: Reader) -> Profile:
    try:
        return registry.get_profile(profile_id)
    except UnknownProfile as exc:
        raise NotFound(str(exc)) from exc


@catalogue.put(
    "/profiles/{profile_id}",
    response_model=Profile,
    tags=["profiles"],
    responses={201: {"model": Profile, "description": "created"}, **BAD_INPUT},
)
def put_profile(
    profile_id: PathId,
    body: ProfileBody,
    registry: Writer,
    response: Response,
    actor: Actor = "api",
) -> Profile:
    """Create or replace a profile; changed valid ranges reach its devices in the stream."""
    with _body_errors():
        profile = Profile(profile_id=profile_id, **body.model_dump())
    try:
        existed = registry.get_profile(profile_id) is not None
    except UnknownProfile:
        existed = False
    registry.put_profile(profile, actor)
    response.status_code = 200 if existed else 201
    return registry.get_profile(profile_id)


@catalogue.get("/departments", response_model=list[Department], tags=["departments"])
def list_departments(registry: Reader) -> list[Department]:
    return registry.list_departments()


@catalogue.get(
    "/departments/{department_id}",
    response_model=Department,
    tags=["departments"],
    responses=NOT_FOUND,
)
def get_department(department_id: PathId, registry: Reader) -> Department:
    for department in registry.list_departments():
        if department.department_id == department_id:
            return department
    raise NotFound(f"department {department_id!r} does not exist")


@catalogue.put(
    "/departments/{department_id}",
    response_model=Department,
    tags=["departments"],
    responses={201: {"model": Department, "description": "created"}, **BAD_INPUT},
)
def put_department(
    department_id: PathId,
    body: DepartmentBody,
    registry: Writer,
    response: Response,
    actor: Actor = "api",
) -> Department:
    department = Department(department_id=department_id, name=body.name)
    existed = any(d.department_id == department_id for d in registry.list_departments())
    registry.put_department(department, actor)
    response.status_code = 200 if existed else 201
    return department


# --- audit log and liveness (read-only) -----------------------------------------------------

watch = APIRouter(responses=RETRY_LATER)


@watch.get("/audit", response_model=list[AuditEntry], tags=["audit"])
def audit_log(
    registry: Reader,
    entity: Annotated[
        str | None, Query(pattern=r"^[a-z_]{1,40}$", description="device, place, ...")
    ] = None,
    entity_id: IdFilter = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[AuditEntry]:
    """Registry changes, newest first: who changed what, before and after."""
    return registry.audit_log(entity, entity_id, limit)


@watch.get("/liveness/devices", response_model=list[DeviceLiveness], tags=["liveness"])
def device_liveness(
    registry: Reader,
    place: IdFilter = None,
    status: Liveness | None = None,
    limit: Limit = None,
    offset: Offset = 0,
) -> list[DeviceLiveness]:
    """Each device's liveness as the liveness service last judged it, in id order."""
    rows = registry.conn.execute(
        "SELECT device_id, status, last_seen, expected_interval_s, place_path, updated_at "
        "FROM device_liveness WHERE (%(place)s::text IS NULL OR %(place)s = ANY(place_path)) "
        "AND (%(status)s::text IS NULL OR status = %(status)s) "
        "ORDER BY device_id LIMIT %(limit)s OFFSET %(offset)s",
        {
            "place": place,
            "status": status.value if status else None,
            "limit": limit,
            "offset": offset,
        },
    ).fetchall()
    return [
        DeviceLiveness(
            device_id=r[0],
            status=r[1],
            last_seen=r[2],
            expected_interval_s=r[3],
            place_path=tuple(r[4]),
            ts=r[5],
        )
        for r in rows
    ]


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@watch.get(
    "/vitals/{place_id}", response_model=list[PlaceVitals], responses=NOT_FOUND, tags=["vitals"]
)
def vitals_now(place_id: PathId, registry: Reader, request: Request) -> list[PlaceVitals]:
    """The place, then its children: each indicator's latest value with its unit, window,
    age, coverage and quality, when the next value is due, the indicators with no value yet,
    and the open alerts under each by level."""
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


@watch.get(
    "/vitals/{place_id}/history",
    response_model=list[HistoryPoint],
    responses={
        **NOT_FOUND,
        422: {"model": FieldProblem, "description": "an unknown indicator, or a bad parameter"},
    },
    tags=["vitals"],
)
def vitals_history(
    place_id: PathId,
    registry: Reader,
    request: Request,
    indicator: Annotated[str, Query(pattern=IDENTIFIER)],
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    resolution: Literal["raw", "1h", "1d"] = "raw",
) -> list[HistoryPoint]:
    """One indicator of one place over ``[from, to)`` (ISO times or dates; without a zone, UTC;
    default: the last day), as stored or rolled up to hours or days. An indicator the
    catalogue does not have answers 422, listing those it has."""
    known: tuple[str, ...] = request.app.state.indicators
    if indicator not in known:
        raise FieldError(
            422,
            ("query", "indicator"),
            f"no indicator {indicator!r}; the catalogue has: {', '.join(known)}",
            indicator,
        )
    last = _as_utc(end) if end else datetime.now(UTC)
    first = _as_utc(start) if start else last - timedelta(days=1)
    try:
        return history(registry.conn, place_id, indicator, first, last, resolution)
    except UnknownVitalsPlace as exc:
        raise NotFound(str(exc)) from exc


@watch.get("/liveness/outages", response_model=list[PlaceOutage], tags=["liveness"])
def open_outages(registry: Reader, place: IdFilter = None) -> list[PlaceOutage]:
    """Places whose devices went silent together and have not come back, oldest first."""
    rows = registry.conn.execute(
        "SELECT outage_id, place_id, place_path, status, devices_total, devices_silent, "
        "started_at, updated_at FROM place_outages WHERE status = 'started' "
        "AND (%(place)s::text IS NULL OR %(place)s = ANY(place_path)) ORDER BY started_at",
        {"place": place},
    ).fetchall()
    return [
        PlaceOutage(
            outage_id=r[0],
            place_id=r[1],
            place_path=tuple(r[2]),
            status=r[3],
            devices_total=r[4],
            devices_silent=r[5],
            started_at=r[6],
            ts=r[7],
        )
        for r in rows
    ]


# --- the app, its metrics and the server ------------------------------------------------------


class _RequestMetrics:
    """Counts requests by route template and status, and times them (pure ASGI)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "cityvitals_api_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "cityvitals_api_request_seconds",
            "Time to answer an HTTP request, by method and route",
            ["method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:  # /openapi.json and /docs are plain routes; a 404 is none
                route = scope["path"] if "endpoint" in scope else "unmatched"
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.seconds.labels(scope["method"], route).observe(time.perf_counter() - start)


def create_api(
    settings: Settings, registries: RegistryPool, metrics: CollectorRegistry | None = None
) -> FastAPI:
    """The HTTP API on a pool of registries; ``metrics`` receives request counts and times."""
    app = FastAPIOffline(  # /docs and /redoc load their scripts and styles from this server
        title="cityvitals device registry",
        version="1",
        description=DESCRIPTION,
    )
    app.state.settings = settings
    app.state.catalogue = load_catalogue(settings)
    app.state.indicators = tuple(app.state.catalogue.by_id)
    app.state.registries = registries
    _install_error_handlers(app)
    for router in (devices, catalogue, watch):
        app.include_router(router)
    if metrics is not None:
        app.add_middleware(_RequestMetrics, registry=metrics)
    return app


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: Gauge) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set(1)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self.ready.set(0)
        await super().shutdown(sockets)


def serve(settings: Settings, metrics: CollectorRegistry) -> None:
    """Serve the API on ``api_host:api_port`` until SIGTERM or SIGINT.

    ``cityvitals_api_ready`` is 1 while the socket accepts requests.
    """
    ready = Gauge("cityvitals_api_ready", "1 while the registry API serves", registry=metrics)
    pool = RegistryPool.open(settings)
    try:
        config = uvicorn.Config(
            create_api(settings, pool, metrics),
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
        _Server(config, ready).run()
    finally:
        pool.close()
