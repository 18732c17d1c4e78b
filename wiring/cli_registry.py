"""``cityvitals devices | places | profiles | departments | audit``: the registry from a shell.

The same operations as the HTTP API. Every change is audited with the actor
``cli:<OS user>``.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import BaseModel, ValidationError

from cityvitals.contracts import Department, Device, DeviceState, Place, PlaceLevel, Profile
from cityvitals.kafka import KafkaUnavailable
from cityvitals.settings import Settings
from wiring.cli_common import fail, settings

__all__ = ["departments_app", "devices_app", "places_app", "profiles_app", "registry_apps"]

devices_app = typer.Typer(help="Onboard and manage devices.", no_args_is_help=True)
places_app = typer.Typer(
    help="The place tree: city > district > street > grid > building.", no_args_is_help=True
)
profiles_app = typer.Typer(
    help="Device profiles: metrics, units, valid ranges, cadence.", no_args_is_help=True
)
departments_app = typer.Typer(
    help="Departments that own devices and incidents.", no_args_is_help=True
)

M = TypeVar("M", bound=BaseModel)


def actor() -> str:
    return f"cli:{getpass.getuser()}"


def _settings() -> Settings:
    return settings()


@contextmanager
def registry() -> Iterator[Any]:
    """An open registry; registry errors become one clear line and exit code 1."""
    from cityvitals.db import DatabaseUnavailable
    from device_registry import RegistryError, UnknownDevice, UnknownPlace
    from wiring.services import open_registry

    s = _settings()
    try:
        with open_registry(s) as reg:
            if reg.broker is None:
                typer.echo(
                    f"note: no local stack in {Path(s.state_dir).resolve()}: MQTT logins are "
                    "stored but no broker is told. Run this where 'cityvitals up' runs, or set "
                    "CITYVITALS_STATE_DIR to its folder (deployed: see deploy/README.md).",
                    err=True,
                )
            yield reg
    except (
        RegistryError,
        UnknownDevice,
        UnknownPlace,
        KafkaUnavailable,
        DatabaseUnavailable,
    ) as exc:
        raise fail(str(exc)) from None


def build(model: type[M], **data: Any) -> M:
    try:
        return model(**data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise fail(f"{'.'.join(map(str, err['loc'])) or 'input'}: {err['msg']}") from None


def path_of(text: str) -> tuple[str, ...]:
    return tuple(p for p in text.split("/") if p)


def _echo_device(d: Device, as_json: bool) -> None:
    if as_json:
        typer.echo(d.model_dump_json())
    else:
        typer.echo(
            f"{d.device_id:<28} {d.device_type:<14} {d.state.value:<11} {'/'.join(d.place_path)}"
        )


# --- devices -------------------------------------------------------------------------------


@devices_app.command("add")
def devices_add(
    device_id: str,
    device_type: Annotated[str, typer.Option("--type", help="e.g. air_quality, water_level")],
    place: Annotated[str, typer.Option(help="Place ids from the city down, joined by '/'")],
    profile: Annotated[str | None, typer.Option(help="Profile id")] = None,
    department: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A free tag; repeat for more")] = None,
    lat: Annotated[float | None, typer.Option()] = None,
    lon: Annotated[float | None, typer.Option()] = None,
    state: Annotated[
        DeviceState,
        typer.Option(help="provisioned: not expected until its first valid reading"),
    ] = DeviceState.ACTIVE,
) -> None:
    """Register one device; prints its MQTT secret once."""
    device = build(
        Device,
        device_id=device_id,
        device_type=device_type,
        profile_id=profile,
        state=state,
        place_path=path_of(place),
        department=department,
        tags=tuple(tag or ()),
        lat=lat,
        lon=lon,
        updated_at=datetime.now(UTC),
    )
    with registry() as reg:
        secret = reg.add(device, actor())
        root = reg.settings.mqtt_topic_root
    typer.echo(f"registered {device_id}; MQTT username {device_id}, secret {secret} (shown once)")
    typer.echo(f"publish to {root}/{device_id}/readings")


@devices_app.command("import")
def devices_import(
    file: Path,
    credentials_out: Annotated[
        Path | None, typer.Option(help="CSV of device_id,secret (shown once)")
    ] = None,
) -> None:
    """Import devices from CSV or JSON (by extension); bad rows are reported by line and field."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    from device_registry import parse_device_csv, parse_device_json

    parse = parse_device_json if file.suffix.lower() == ".json" else parse_device_csv
    parsed = parse(text, datetime.now(UTC))
    if parsed.unreadable:
        raise fail(f"{file}:{parsed.errors[0]}")
    with registry() as reg, typer.progressbar(length=1, label="importing") as bar:

        def progress(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        report = reg.import_devices(parsed, actor(), progress)
    for error in report.errors:
        typer.echo(f"{file}:{error}", err=True)
    if credentials_out is not None:
        credentials_out.write_text(
            "device_id,secret\n" + "".join(f"{d},{s}\n" for d, s in report.added)
        )
        credentials_out.chmod(0o600)
    typer.echo(f"imported {len(report.added)} devices, {len(report.errors)} rows refused")
    if report.errors:
        raise typer.Exit(1)


@devices_app.command("list")
def devices_list(
    place: Annotated[str | None, typer.Option(help="Only devices at or under this place")] = None,
    state: Annotated[DeviceState | None, typer.Option()] = None,
    device_type: Annotated[str | None, typer.Option("--type")] = None,
    tag: Annotated[str | None, typer.Option()] = None,
    profile: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List registered devices."""
    with registry() as reg:
        found = reg.list(
            place=place, state=state, device_type=device_type, tag=tag, profile_id=profile
        )
    for d in found:
        _echo_device(d, as_json)
    if not as_json:
        typer.echo(f"{len(found)} devices", err=True)


@devices_app.command("export")
def devices_export(
    out: Path,
    place: Annotated[str | None, typer.Option(help="Only devices at or under this place")] = None,
) -> None:
    """Export devices to CSV or JSON (by extension), in the format 'import' reads."""
    from device_registry import export_csv

    with registry() as reg:
        found = reg.list(place=place)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps([json.loads(d.model_dump_json()) for d in found], indent=1))
    else:
        out.write_text(export_csv(found))
    typer.echo(f"exported {len(found)} devices to {out}")


@devices_app.command("update")
def devices_update(
    device_id: str,
    device_type: Annotated[str | None, typer.Option("--type")] = None,
    profile: Annotated[str | None, typer.Option()] = None,
    department: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="Replaces the tags; repeat for more")
    ] = None,
    lat: Annotated[float | None, typer.Option()] = None,
    lon: Annotated[float | None, typer.Option()] = None,
) -> None:
    """Change a device's type, profile, department, tags or coordinates."""
    changes = {
        k: v
        for k, v in {
            "device_type": device_type,
            "profile_id": profile,
            "department": department,
            "tags": tuple(tag) if tag is not None else None,
            "lat": lat,
            "lon": lon,
        }.items()
        if v is not None
    }
    if not changes:
        raise fail("nothing to change: give at least one option")
    with registry() as reg:
        try:
            device = reg.update(device_id, changes, actor())
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise fail(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    _echo_device(device, False)


@devices_app.command("move")
def devices_move(
    device_id: str, place: Annotated[str, typer.Argument(help="New place path")]
) -> None:
    """Move a device to another place."""
    with registry() as reg:
        try:
            device = reg.move(device_id, path_of(place), actor())
        except ValidationError as exc:
            raise fail(f"place_path: {exc.errors(include_url=False)[0]['msg']}") from None
    _echo_device(device, False)


def _set_state(device_id: str, state: DeviceState) -> None:
    with registry() as reg:
        reg.set_state(device_id, state, actor())
    typer.echo(f"{device_id} is now {state.value}")


@devices_app.command("suspend")
def devices_suspend(device_id: str) -> None:
    """Suspend a device: the broker refuses it at once and its readings are not processed."""
    _set_state(device_id, DeviceState.SUSPENDED)


@devices_app.command("activate")
def devices_activate(device_id: str) -> None:
    """Activate a provisioned or suspended device."""
    _set_state(device_id, DeviceState.ACTIVE)


@devices_app.command("retire")
def devices_retire(device_id: str) -> None:
    """Retire a device for good; its credentials stop working."""
    _set_state(device_id, DeviceState.RETIRED)


@devices_app.command("rotate-secret")
def devices_rotate(device_id: str) -> None:
    """Issue a new MQTT secret; the old one stops working at once."""
    with registry() as reg:
        ((_, secret),) = reg.rotate_secrets([device_id], actor())
    typer.echo(f"new secret for {device_id}: {secret} (shown once)")


# --- places, profiles, departments, audit ---------------------------------------------------


@places_app.command("add")
def places_add(
    path: Annotated[
        str, typer.Argument(help="Ids from the city down to the new place, joined by '/'")
    ],
    name: Annotated[str, typer.Option(help="The place's name")],
    lat: Annotated[float | None, typer.Option()] = None,
    lon: Annotated[float | None, typer.Option()] = None,
) -> None:
    """Create (or rename) a place; its level follows from its depth. Missing ancestors are
    created too, named by their ids."""
    ids = path_of(path)
    if not 1 <= len(ids) <= 5:
        raise fail("place path: 1 to 5 ids, from the city down")
    place = build(
        Place,
        place_id=ids[-1],
        level=list(PlaceLevel)[len(ids) - 1],
        name=name,
        path=ids,
        lat=lat,
        lon=lon,
    )
    with registry() as reg:
        reg.put_places([place], actor())
    typer.echo(f"{place.level.value} {'/'.join(ids)}: {name}")


@places_app.command("list")
def places_list(
    under: Annotated[str | None, typer.Option(help="Only this place's subtree")] = None,
) -> None:
    """List places (indented by level)."""
    with registry() as reg:
        places = reg.list_places(under)
    for p in places:
        typer.echo(f"{'  ' * p.level.depth}{p.place_id:<24} {p.level.value:<9} {p.name}")


@places_app.command("move")
def places_move(
    place_id: str, parent: Annotated[str, typer.Argument(help="New parent place id")]
) -> None:
    """Move a place, with its subtree and devices, under another parent."""
    with registry() as reg:
        moved = reg.move_place(place_id, parent, actor())
    typer.echo(f"moved {len(moved)} places; {place_id} is now at {'/'.join(moved[0].path)}")


def _load_file(file: Path) -> Any:
    try:
        return yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"{file}: {exc}") from None


@profiles_app.command("put")
def profiles_put(
    file: Annotated[Path, typer.Argument(help="YAML or JSON: one profile or a list")],
) -> None:
    """Create or replace profiles from a file."""
    data = _load_file(file)
    items = data if isinstance(data, list) else [data]
    profiles = [
        build(Profile, **item) if isinstance(item, dict) else build(Profile) for item in items
    ]
    with registry() as reg:
        for p in profiles:
            reg.put_profile(p, actor())
    typer.echo(f"stored {len(profiles)} profiles")


@profiles_app.command("list")
def profiles_list() -> None:
    """List profiles as JSON lines."""
    with registry() as reg:
        for p in reg.list_profiles():
            typer.echo(p.model_dump_json())


@departments_app.command("add")
def departments_add(department_id: str, name: Annotated[str, typer.Option()]) -> None:
    """Create or rename a department."""
    with registry() as reg:
        reg.put_department(build(Department, department_id=department_id, name=name), actor())
    typer.echo(f"department {department_id}: {name}")


@departments_app.command("list")
def departments_list() -> None:
    with registry() as reg:
        for d in reg.list_departments():
            typer.echo(f"{d.department_id:<20} {d.name}")


def audit(
    entity: Annotated[str | None, typer.Option(help="device, place, profile, department")] = None,
    entity_id: Annotated[str | None, typer.Option("--id")] = None,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """Who changed what, newest first."""
    with registry() as reg:
        entries = reg.audit_log(entity, entity_id, limit)
    for e in entries:
        typer.echo(
            f"{e.at:%Y-%m-%d %H:%M:%S} {e.actor:<20} {e.action:<14} {e.entity}:{e.entity_id}"
        )


def registry_apps() -> list[tuple[typer.Typer | Callable[..., None], str]]:
    return [
        (devices_app, "devices"),
        (places_app, "places"),
        (profiles_app, "profiles"),
        (departments_app, "departments"),
        (audit, "audit"),
    ]
