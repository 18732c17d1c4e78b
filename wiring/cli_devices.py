"""``cityvitals devices``: onboard and manage devices, as the HTTP API does. Every change is
audited with the actor ``cli:<OS user>``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from pydantic import ValidationError

from cityvitals.contracts import AlertStatus, Device, DeviceLiveness, DeviceState, Liveness
from device_registry.notes import department_notes, moved_notes
from wiring.cli_common import fail, known_place, read_utf8, settings
from wiring.cli_registry_common import (
    CLI_FIXES,
    actor,
    build,
    notes_on,
    path_of,
    registry,
    type_notes,
)

if TYPE_CHECKING:
    from sinks import AlertRow, DeviceActivity

__all__ = ["devices_app"]

devices_app = typer.Typer(help="Onboard and manage devices.", no_args_is_help=True)


def _echo_device(d: Device, as_json: bool) -> None:
    if as_json:
        typer.echo(d.model_dump_json())
    else:
        typer.echo(
            f"{d.device_id:<28} {d.device_type:<14} {d.state.value:<11} {'/'.join(d.place_path)}"
        )


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
        notes = notes_on([device], reg.known_to([device]))
        secret = reg.add(device, actor())
        root = reg.settings.mqtt_topic_root
    typer.echo(f"registered {device_id}; MQTT username {device_id}, secret {secret} (shown once)")
    topic = f"{root}/{device_id}"
    events = f" (its events: {topic}/events)" if "camera" in device_type else ""
    typer.echo(f"publish readings to {topic}/readings{events}")
    for note in notes:
        typer.echo(note, err=True)


@devices_app.command("import")
def devices_import(
    file: Path,
    credentials_out: Annotated[
        str | None,
        typer.Option(
            help="CSV of device_id,secret, added to (never overwritten; '-': standard output). "
            "Required: the secrets are shown once, there"
        ),
    ] = None,
    known_types: Annotated[
        bool,
        typer.Option(
            "--known-types",
            help="Refuse a row whose device type no rule or indicator names (a typo, "
            "'waterlevel') as a bad row; without it, such a row is imported with a note",
        ),
    ] = False,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="A row of a device already registered changes it (its place, type, profile, "
            "department, tags, coordinates: an empty cell leaves one as it is) instead of "
            "being refused",
        ),
    ] = False,
    known_places: Annotated[
        bool,
        typer.Option(
            "--known-places",
            help="Refuse a row whose place is not in the registry (a typo, 'rv-qauy') as a "
            "bad row, naming the nearest; without it, the places it names are created",
        ),
    ] = False,
) -> None:
    """Import devices from CSV or JSON (by extension); bad rows are reported by line (CSV) or
    item (JSON) and field."""
    text = read_utf8(file)
    from device_registry import parse_device_csv, parse_device_json

    parse = parse_device_json if file.suffix.lower() == ".json" else parse_device_csv
    parsed = parse(text, datetime.now(UTC))
    if parsed.unreadable:
        raise fail(f"{file}:{parsed.errors[0]}")
    if known_types:
        from wiring.services import known_device_types

        types = known_device_types(settings())
        if types is None:
            raise fail(
                "--known-types: the rule or indicator files cannot be read (see 'cityvitals rules check')"
            )
        parsed = parsed.of_types(types)
    if credentials_out is None:
        raise fail(
            "give --credentials-out FILE (or -): each imported device's MQTT secret is shown "
            "once, there, and stored only as a hash"
        )
    with _secrets_file(credentials_out) as secrets_out:  # opened first: no secret is lost
        bar_on = sys.stderr  # standard output may be the secrets
        with registry() as reg, typer.progressbar(length=1, label="importing", file=bar_on) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = max(total, 1)
                bar.update(done - bar.pos)

            if known_places:
                parsed = parsed.at_places({p.path for p in reg.list_places()})
            known = reg.known_to(parsed.devices)
            changes = (lambda _current: None) if update else None
            report = reg.import_devices(parsed, actor(), progress, update=changes)
        secrets_out.write("".join(f"{d},{s}\n" for d, s in report.added))
    for error in report.errors:
        typer.echo(f"{file}:{error}", err=True)
    shown = "standard output" if credentials_out == "-" else credentials_out
    updated = f"updated {len(report.updated)}, {report.unchanged} unchanged, " if update else ""
    typer.echo(
        f"imported {_count(len(report.added), 'device')}, {updated}"
        f"{_count(len(report.errors), 'row')} refused; "
        f"their secrets added to {shown}",
        err=credentials_out == "-",
    )
    for note in notes_on(report.imported, known):
        typer.echo(note, err=True)
    if report.errors:
        raise typer.Exit(1)


def _count(n: int, thing: str) -> str:
    """``n`` things, in the singular for one.

    >>> _count(1, "row"), _count(2, "row")
    ('1 row', '2 rows')
    """
    return f"{n} {thing}{'' if n == 1 else 's'}"


@contextmanager
def _secrets_file(name: str) -> Iterator[TextIO]:
    """Where the secrets go: standard output for ``-``; else the file, created readable by
    its owner alone, added to (a second import into it keeps the first one's secrets), with
    the header ``device_id,secret`` once."""
    if name == "-":
        sys.stdout.write("device_id,secret\n")
        yield sys.stdout
        return
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise fail(f"--credentials-out {name}: {exc.strerror}") from None
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        if out.tell() == 0:
            out.write("device_id,secret\n")
        yield out


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
        place = known_place(reg.conn, place)
        found = reg.list(
            place=place, state=state, device_type=device_type, tag=tag, profile_id=profile
        )
    for d in found:
        _echo_device(d, as_json)
    if not as_json:
        typer.echo(f"{len(found)} device{'' if len(found) == 1 else 's'}", err=True)


@devices_app.command("show")
def devices_show(
    device_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="The device as one JSON object")] = False,
) -> None:
    """One device as registered, with what its profile gives it (the valid range of each
    metric: readings outside it are refused; the expected reporting interval), its liveness,
    each metric's newest value, the messages naming it that were refused lately and its
    firing alerts."""
    from sinks import ACTIVITY_LOOKBACK, AlertFilter, device_activity, list_alerts

    with registry() as reg:
        d = reg.get(device_id)
        if as_json:
            typer.echo(d.model_dump_json())
            return
        live = reg.liveness(device_id=device_id)
        seen = device_activity(reg.conn, device_id, timedelta(0), datetime.now(UTC))
        firing = list_alerts(reg.conn, AlertFilter(device=device_id, status=AlertStatus.FIRING))
    zone = settings().zone
    days = ACTIVITY_LOOKBACK.days
    ranges = ", ".join(
        f"{m} {'-' if lo is None else f'{lo:g}'}..{'-' if hi is None else f'{hi:g}'}"
        for m, (lo, hi) in sorted(d.valid_ranges.items())
    )
    every = f"every {d.expected_interval_s:g} s" if d.expected_interval_s else "no interval"
    rows = [
        ("place", "/".join(d.place_path)),
        ("profile", f"{d.profile_id} ({every}; {ranges or 'no ranges'})" if d.profile_id else "-"),
        ("department", d.department or "-"),
        ("tags", ", ".join(d.tags) or "-"),
        ("location", "-" if d.lat is None or d.lon is None else f"{d.lat}, {d.lon}"),
        ("updated", f"{d.updated_at.astimezone(zone):%Y-%m-%d %H:%M:%S} ({zone})"),
        ("liveness", _liveness(live[0], zone) if live else _unjudged(d)),
        ("latest", _latest(seen, zone) or f"nothing stored in the last {days} days"),
        ("refused", _refused(seen, device_id, zone, days)),
        ("alerts", _firing(firing, device_id, zone)),
    ]
    typer.echo(f"device {d.device_id} ({d.device_type}), {d.state.value}")
    for name, value in rows:
        typer.echo(f"  {name:<11}{value}")


def _liveness(live: DeviceLiveness, zone: tzinfo) -> str:
    """A device's liveness as last judged, in a line."""
    seen = (
        f"last seen {live.last_seen.astimezone(zone):%Y-%m-%d %H:%M:%S}"
        if live.last_seen is not None
        else "never heard"
    )
    judged = f"judged {live.ts.astimezone(zone):%H:%M:%S}"
    every = f"{float(f'{live.expected_interval_s:.3g}'):g}"  # learned: 4.99982 s reads 5 s
    return f"{live.status.value}, {seen}, every {every} s ({judged})"


def _latest(seen: DeviceActivity, zone: tzinfo) -> str:
    """Each metric's newest reading, or the camera's newest event, in a line."""
    values = [
        f"{p.metric} {p.value:g} at {p.ts.astimezone(zone):%m-%d %H:%M:%S}" for p in seen.latest
    ]
    values += [
        f"{e.event_type} {e.value:g} at {e.ts.astimezone(zone):%m-%d %H:%M:%S}"
        for e in seen.camera_events[:1]
    ]
    return "; ".join(values)


def _firing(firing: list[AlertRow], device_id: str, zone: tzinfo) -> str:
    """The device's firing alerts, in a line."""
    if not firing:
        return "none firing"
    shown = [  # the level now; the episode began at a level of its own
        f"{a.rule_id} {a.level} (began {a.started_at.astimezone(zone):%m-%d %H:%M})"
        for a in firing[:3]
    ]
    more = (
        f" and {len(firing) - 3} more (cityvitals alerts list --firing --device {device_id})"
        if len(firing) > 3
        else ""
    )
    return f"{len(firing)} firing: " + ", ".join(shown) + more


def _refused(seen: DeviceActivity, device_id: str, zone: tzinfo, days: int) -> str:
    """How many of the device's messages were refused lately, and the newest one's reason."""
    from sinks.readings import REFUSED_COUNTED

    if not seen.refused:
        return f"none in the last {days} days"
    newest = seen.refused_newest[0]
    counted = f"{seen.refused:,} or more" if seen.refused >= REFUSED_COUNTED else seen.refused
    return (
        f"{counted} in the last {days} days; newest "
        f"{newest.received_at.astimezone(zone):%m-%d %H:%M:%S} by {newest.stage}: {newest.reason}"
        f" (cityvitals deadletters --device {device_id})"
    )


def _unjudged(d: Device) -> str:
    """A device without a liveness judgement, in words: not watched, or not heard yet."""
    if d.state is not DeviceState.ACTIVE:
        return f"not judged ({d.state.value}: only active devices are watched)"
    return "not heard yet (judged late after two expected intervals of silence)"


@devices_app.command("liveness")
def devices_liveness(
    place: Annotated[str | None, typer.Option(help="Only devices at or under this place")] = None,
    status: Annotated[Liveness | None, typer.Option(help="Only devices of this status")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Each active device's liveness (online, late, offline) as the liveness service last
    judged it, with when it was last seen and the cadence it is judged by; without --status,
    the active devices not heard yet and the provisioned ones never heard (imported, not yet
    connected) too (with --json, the judged ones alone)."""
    from device_registry.liveness_store import unheard

    with registry() as reg:
        place = known_place(reg.conn, place)
        # before the judged ones: a device first heard in between is in both, then in one
        silent = unheard(reg.conn, place) if status is None and not as_json else []
        found = reg.liveness(place, status)
    judged = {live.device_id for live in found}
    silent = [row for row in silent if row[0] not in judged]
    zone = settings().zone
    for live in found:
        if as_json:
            typer.echo(live.model_dump_json())
        else:
            typer.echo(f"{live.device_id:<24}{_liveness(live, zone)}")
    if as_json:
        return
    for device_id, registered, provisioned in silent:
        said = "provisioned, never heard" if provisioned else "not heard yet"
        typer.echo(
            f"{device_id:<24}{said} (registered {registered.astimezone(zone):%Y-%m-%d %H:%M:%S})"
        )
    counts = {s.value: sum(1 for f in found if f.status is s) for s in Liveness}
    counts["not heard yet"] = sum(1 for *_, provisioned in silent if not provisioned)
    counts["provisioned, never heard"] = len(silent) - counts["not heard yet"]
    shown = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    total = len(found) + len(silent)
    many = "device" if total == 1 else "devices"
    typer.echo(f"{total} {many} ({shown or 'none'}); times in {zone}", err=True)


@devices_app.command("export")
def devices_export(
    out: Path,
    place: Annotated[str | None, typer.Option(help="Only devices at or under this place")] = None,
) -> None:
    """Export devices to CSV or JSON (by extension), in the format 'import' reads."""
    from device_registry import export_csv

    with registry() as reg:
        place = known_place(reg.conn, place)
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
        known = reg.known_to([device])[1] if department is not None else ()
    _echo_device(device, False)
    for note in type_notes([device_type] if device_type else []):
        typer.echo(note, err=True)
    for note in department_notes([device], known, CLI_FIXES) if department is not None else ():
        typer.echo(f"note: {note}", err=True)


@devices_app.command("move")
def devices_move(
    device_id: str,
    place: Annotated[str, typer.Argument(help="New place path")],
    lat: Annotated[float | None, typer.Option(help="New latitude, with --lon")] = None,
    lon: Annotated[float | None, typer.Option(help="New longitude, with --lat")] = None,
) -> None:
    """Move a device to another place, and to new coordinates with --lat and --lon (without
    them it keeps its own: a note says so). Its alerts firing stay with their incident at the
    old place (a note names them)."""
    if (lat is None) != (lon is None):
        raise fail("--lat and --lon go together: give both, or neither to keep the old")
    location = None if lat is None or lon is None else (lat, lon)
    with registry() as reg:
        firing = reg.firing(device_id)
        try:
            path = path_of(place)
            before = reg.get(device_id)
            known = reg.known_to([before.model_copy(update={"place_path": path})])[0]
            device = reg.move(device_id, path, actor(), location)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise fail(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    _echo_device(device, False)
    for note in moved_notes(before, device, firing, known, location is not None, CLI_FIXES):
        typer.echo(f"note: {note}", err=True)


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
