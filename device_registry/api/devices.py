"""``/devices``: register (one or a file of them), read, change, move, and run the lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from cityvitals.contracts import Device, DeviceState
from device_registry.access import User
from device_registry.api.auth import (
    Caller,
    acting,
    check_scope,
    place_filter,
    require,
    visible,
)
from device_registry.api.bodies import (
    NOT_FOUND,
    REFUSED,
    RETRY_LATER,
    Credential,
    DeviceCreate,
    DeviceMove,
    DevicePatch,
    ExportFormat,
    FieldProblem,
    ImportResult,
    Onboarded,
    RefusedRow,
)
from device_registry.api.deps import (
    IdFilter,
    Limit,
    Offset,
    PathId,
    Reader,
    Tag,
    Writer,
    pool,
)
from device_registry.api.errors import FieldError, body_errors
from device_registry.api.pool import RegistryPool
from device_registry.importing import (
    CSV_COLUMNS,
    ParsedFile,
    RowError,
    export_csv,
    parse_device_csv,
    parse_device_json,
)
from device_registry.notes import (
    API_FIXES,
    department_notes,
    moved_notes,
    registration_notes,
)
from device_registry.registry import Registry

__all__ = ["router"]

router = APIRouter(prefix="/devices", tags=["devices"], responses=RETRY_LATER)

Reading = Annotated[User, require("devices.read")]
Writing = Annotated[Caller, acting("devices.write")]


def _device_in_scope(registry: Registry, user: User, device_id: str) -> Device:
    device = registry.get(device_id)
    check_scope(user, device.place_path, f"device {device_id!r}")
    return device


@router.get(
    "",
    response_model=list[Device],
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def list_devices(
    user: Reading,
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
    narrowed = place_filter(user, registry, place)
    if narrowed:
        place = narrowed[-1]  # place ids are unique in the tree
    found = registry.list(place, state, device_type, tag, profile_id, limit, offset)
    found = visible(user, found, lambda d: d.place_path)
    if format is ExportFormat.CSV:
        return PlainTextResponse(export_csv(found), media_type="text/csv")
    return found


@router.post("", status_code=201, response_model=Onboarded, responses=REFUSED)
def create_device(
    who: Writing, body: DeviceCreate, registry: Writer, response: Response, request: Request
) -> Onboarded:
    """Register a device; the answer carries its MQTT secret, shown this once, and notes on
    what the registration may not mean (``notes``: places it created, an unknown department
    or device type), as the command line gives them."""
    with body_errors():
        device = Device(**body.model_dump(), updated_at=datetime.now(UTC))
    check_scope(who.user, device.place_path, f"device {device.device_id!r}")
    known = registry.known_to([device])
    secret = registry.add(device, who.actor)
    types = request.app.state.device_types
    notes = registration_notes([device], *known, types, API_FIXES)
    response.headers["Location"] = f"/devices/{device.device_id}"
    return Onboarded(
        device=registry.get(device.device_id),
        mqtt_username=device.device_id,
        mqtt_secret=secret,
        notes=notes,
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


@router.post(
    "/import",
    response_model=ImportResult,
    openapi_extra={"requestBody": IMPORT_BODY},
    responses={
        415: {"model": FieldProblem, "description": "neither text/csv nor application/json"},
        422: {"model": FieldProblem, "description": "the file cannot be read at all"},
    },
)
async def import_devices(
    who: Writing,
    request: Request,
    known_types: Annotated[
        bool,
        Query(
            description="refuse a row whose device type no rule or indicator names (a typo, "
            "'waterlevel'); without it, such a row goes in with a note"
        ),
    ] = False,
    known_places: Annotated[
        bool,
        Query(
            description="refuse a row whose place is not in the registry (a typo, 'rv-qauy'), "
            "naming the nearest; without it, the places it names are created"
        ),
    ] = False,
    update: Annotated[
        bool,
        Query(
            description="a row of a device already registered changes it (its place, type, "
            "profile, department, tags, coordinates: an empty one leaves it as it is) instead "
            "of being refused; the device must be in the user's scope where it is"
        ),
    ] = False,
) -> ImportResult:
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
    types = request.app.state.device_types
    if known_types and types is None:
        raise FieldError(
            503, ("query", "known_types"), "the rule or indicator files cannot be read"
        )
    strict = types if known_types else None
    return await run_in_threadpool(
        _import,
        pool(request),
        text,
        media == "text/csv",
        who,
        types,
        strict,
        known_places,
        update,
    )


def _import(
    pool: RegistryPool,
    text: str,
    is_csv: bool,
    who: Caller,
    types: frozenset[str] | None,
    strict: frozenset[str] | None,
    known_places: bool = False,
    update: bool = False,
) -> ImportResult:
    now = datetime.now(UTC)
    parsed = parse_device_csv(text, now) if is_csv else parse_device_json(text, now)
    if parsed.unreadable:
        e = parsed.errors[0]
        raise FieldError(422, ("body", e.field), f"{e.unit} {e.line}: {e.message}")
    if strict is not None:
        parsed = parsed.of_types(strict)
    with pool.checkout(write=True) as registry:
        if known_places:
            parsed = parsed.at_places({p.path for p in registry.list_places()})
        mine = _in_scope(parsed, who.user)
        known = registry.known_to(mine.devices)

        def in_scope(current: Device) -> str | None:  # where it is, as where it goes
            if who.user.sees(current.place_path):
                return None
            where = "/".join(current.place_path)
            return f"{where} is outside the scope of {who.user.name}: {who.user.scope_text}"

        changes = in_scope if update else None
        report = registry.import_devices(mine, who.actor, update=changes)
    return ImportResult(
        added=[Credential(device_id=i, mqtt_username=i, mqtt_secret=s) for i, s in report.added],
        updated=report.updated,
        errors=[_refused(e) for e in report.errors],
        notes=registration_notes(report.imported, *known, types, API_FIXES),
    )


def _in_scope(parsed: ParsedFile, user: User) -> ParsedFile:
    """The rows at places in the user's scope; the others are refused rows."""
    kept = ParsedFile(errors=list(parsed.errors), unit=parsed.unit)
    for line, device in zip(parsed.lines, parsed.devices, strict=True):
        if user.sees(device.place_path):
            kept.devices.append(device)
            kept.lines.append(line)
        else:
            where = "/".join(device.place_path)
            message = f"{where} is outside the scope of {user.name}: {user.scope_text}"
            kept.errors.append(RowError(line, "place_path", message, parsed.unit))
    return kept


def _refused(error: RowError) -> RefusedRow:
    return RefusedRow(line=error.line, unit=error.unit, field=error.field, message=error.message)


@router.get("/{device_id}", response_model=Device, responses=NOT_FOUND)
def get_device(user: Reading, device_id: PathId, registry: Reader) -> Device:
    return _device_in_scope(registry, user, device_id)


class UpdatedDevice(Device):
    """The device as changed, with notes on what the change may not mean."""

    notes: list[str] = Field(
        default_factory=list,
        description="a department the registry does not know, as a registration notes it",
    )


@router.patch("/{device_id}", response_model=UpdatedDevice, responses={**NOT_FOUND, **REFUSED})
def update_device(
    who: Writing, device_id: PathId, body: DevicePatch, registry: Writer
) -> UpdatedDevice:
    """Change a device's type, profile, department, tags or coordinates; ``notes`` names a
    department the registry does not know."""
    _device_in_scope(registry, who.user, device_id)
    changes = body.model_dump(exclude_unset=True)
    with body_errors():
        device = registry.update(device_id, changes, who.actor)
    notes = []
    if "department" in changes:
        notes = department_notes([device], registry.known_to([device])[1], API_FIXES)
    return UpdatedDevice(**dict(device), notes=notes)


@router.post("/{device_id}/move", response_model=UpdatedDevice, responses={**NOT_FOUND, **REFUSED})
def move_device(
    who: Writing, device_id: PathId, body: DeviceMove, registry: Writer
) -> UpdatedDevice:
    """Move a device to another place (places the path names are created as needed), and to
    new coordinates (``lat``, ``lon``) if given; ``notes`` names its alerts firing, which stay
    with their incident at the old place, the places the path created, and the coordinates
    it keeps when given none."""
    _device_in_scope(registry, who.user, device_id)
    check_scope(who.user, body.place_path, f"the new place of device {device_id!r}")
    firing = registry.firing(device_id)
    with body_errors():
        before = registry.get(device_id)
        known = registry.known_to([before.model_copy(update={"place_path": body.place_path})])[0]
        device = registry.move(device_id, body.place_path, who.actor, body.location)
    notes = moved_notes(before, device, firing, known, body.location is not None, API_FIXES)
    return UpdatedDevice(**dict(device), notes=notes)


def _set_state(state: DeviceState) -> Callable[[Caller, str, Registry], Device]:
    def change(who: Writing, device_id: PathId, registry: Writer) -> Device:
        _device_in_scope(registry, who.user, device_id)
        return registry.set_state(device_id, state, who.actor)

    change.__doc__ = (
        f"Set the device's state to {state.value}; a provisioned or active device may connect."
    )
    return change


for _verb, _state in (
    ("suspend", DeviceState.SUSPENDED),
    ("activate", DeviceState.ACTIVE),
    ("retire", DeviceState.RETIRED),
):
    router.add_api_route(
        f"/{{device_id}}/{_verb}",
        _set_state(_state),
        methods=["POST"],
        response_model=Device,
        responses=NOT_FOUND,
        name=f"{_verb}_device",
        summary=f"{_verb.capitalize()} a device",
    )


@router.post("/{device_id}/rotate-secret", response_model=Credential, responses=NOT_FOUND)
def rotate_secret(who: Writing, device_id: PathId, registry: Writer) -> Credential:
    """Issue a new MQTT secret; the old one stops working at once. Shown this once."""
    _device_in_scope(registry, who.user, device_id)
    ((_, secret),) = registry.rotate_secrets([device_id], who.actor)
    return Credential(device_id=device_id, mqtt_username=device_id, mqtt_secret=secret)
