"""``cityvitals places | profiles | departments | audit``: the registry's other resources, as
the HTTP API serves them. Every change is audited with the actor ``cli:<OS user>``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from cityvitals.contracts import Department, Place, PlaceLevel, Profile
from wiring.cli_common import echo_json, fail, in_order, read_utf8, settings, time_option
from wiring.cli_registry_common import actor, build, path_of, registry

if TYPE_CHECKING:
    from rules.indicators import Catalogue

__all__ = ["audit", "departments_app", "places_app", "profiles_app"]

places_app = typer.Typer(
    help="The place tree: city > district > street > grid > building.", no_args_is_help=True
)
profiles_app = typer.Typer(
    help="Device profiles: metrics, units, valid ranges, cadence.", no_args_is_help=True
)
departments_app = typer.Typer(
    help="Departments that own devices and incidents.", no_args_is_help=True
)


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
        known = {p.place_id for p in reg.list_places()}
        reg.put_places([place], actor())
    typer.echo(f"{place.level.value} {'/'.join(ids)}: {name}")
    for n, place_id in enumerate(ids[:-1], start=1):
        if place_id not in known:  # as a device's path notes the places it creates
            named = "/".join(ids[:n])
            typer.echo(
                f"note: creates place {named}, named by its id (cityvitals places add {named} "
                "--name NAME names it)",
                err=True,
            )


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
    place_id: str,
    parent: Annotated[str, typer.Argument(help="New parent place id")],
    with_open: Annotated[
        bool,
        typer.Option(
            "--with-open",
            help="move it even with incidents not closed or alerts firing under it (they stay "
            "at the old path, with its officers and escalations)",
        ),
    ] = False,
) -> None:
    """Move a place, with its subtree and devices, under another parent; users scoped to it
    keep their scope at its new path. Refused while incidents not closed or alerts firing lie
    under it (they would stay at the old path), unless --with-open."""
    from device_registry.incident_publisher import named_places

    with registry() as reg:
        old = reg.get_place(place_id).path
        moved = reg.move_place(place_id, parent, actor(), with_open)
    at = "/".join(moved.places[0].path)
    typer.echo(f"moved {len(moved.places)} places; {place_id} is now at {at}")
    if moved.users:
        typer.echo(f"scopes moved with it: {', '.join(moved.users)}")
    if moved.left_open:
        typer.echo(f"note: {moved.left_open.describe()} stay at the old path")
    try:
        routes = named_places(settings()).moved(old, moved.places[0].path)
    except (OSError, ValueError) as exc:
        routes = f"the incident routing was not checked for routes to its old path: {exc}"
    if routes:
        typer.echo(f"note: {routes}")


@places_app.command("remove")
def places_remove(place_id: str) -> None:
    """Remove a place nothing uses (one made by mistake). Refused, naming them, while places
    lie under it, devices of any state are at or under it, users are scoped to it, incidents
    not closed or alerts firing are there, or the rule file or the incident routing in force
    names it. What was stored at it stays stored; the change log keeps it (cityvitals history
    --entity place)."""
    from device_registry.incident_publisher import named_places

    try:
        named = named_places(settings())
    except (OSError, ValueError) as exc:
        raise fail(f"cannot check what names the place: {exc}") from None
    with registry() as reg:
        place = reg.remove_place(place_id, actor(), named.of)
    typer.echo(f"removed {place.level.value} {'/'.join(place.path)}: {place.name}")


def _load_file(file: Path) -> Any:
    from rules.ruleset import MAX_VALUES, expanded_values

    text = read_utf8(file)
    try:
        node = yaml.compose(text)
        if node is not None and (size := expanded_values(node)) > MAX_VALUES:
            raise fail(
                f"{file}: its aliases (*name) expand it to {size:,} values, past {MAX_VALUES:,}"
            )
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise fail(f"{file}: {exc}") from None
    except RecursionError:  # as a rule file's (rules.ruleset.load_yaml)
        raise fail(
            f"{file}: nested too deeply to read (lists or mappings inside one another)"
        ) from None


@profiles_app.command("put")
def profiles_put(
    file: Annotated[Path, typer.Argument(help="YAML or JSON: one profile or a list")],
) -> None:
    """Create or replace profiles from a file. Every item is checked first: one that is not a
    valid profile, or gives a metric in a unit other than the one a vital sign reads it in
    (AQI: µg/m³, CO mg/m³), is named (item, profile id, field) and nothing is stored. A metric that no
    rule or indicator of the stream reads is noted (a misspelt name reads as one)."""
    data = _load_file(file)
    items = data if isinstance(data, list) else [data]
    profiles, problems = [], []
    for n, item in enumerate(items, 1):
        try:
            if not isinstance(item, dict):
                raise ValueError(f"a mapping of profile fields, not {type(item).__name__}")
            profiles.append(Profile(**item))
        except ValidationError as exc:
            which = f"item {n}" + (f" ({item['profile_id']!r})" if "profile_id" in item else "")
            for err in exc.errors(include_url=False):
                where = ".".join(map(str, err["loc"])) or "input"
                problems.append(f"{file}: {which}: {where}: {err['msg']}")
        except ValueError as exc:
            problems.append(f"{file}: item {n}: {exc}")
    catalogue = _catalogue()
    problems += [
        f"{file}: profile {p.profile_id!r}: {problem}"
        for p in profiles
        for problem in _unit_problems(catalogue, p)
    ]
    if problems:
        raise fail("\n".join(problems) + "\nnothing was stored")
    read = _metrics_read()
    for p in profiles:
        for metric in sorted(set(p.metrics) - read) if read else ():
            typer.echo(
                f"note: {file}: profile {p.profile_id!r}: no rule or indicator reads {metric!r}",
                err=True,
            )
    with registry() as reg:
        narrowed = [note for p in profiles for note in _refused_from_now(reg, p)]
        for p in profiles:
            reg.put_profile(p, actor())
    typer.echo(f"stored {len(profiles)} profile{'' if len(profiles) == 1 else 's'}")
    for note in narrowed:
        typer.echo(note, err=True)


LOOK_BACK = timedelta(hours=1)
"""How far back ``profiles put`` looks for readings a new range would refuse."""


def _refused_from_now(reg: Any, profile: Profile) -> list[str]:
    """Notes on the readings of the last hour, from the devices using ``profile``, that its
    new ranges lie outside: the stream refuses such values from now on (dead letters)."""
    from sinks import outside_range

    ids = [d.device_id for d in reg.list(profile_id=profile.profile_id)]
    since = datetime.now(UTC) - LOOK_BACK
    notes = []
    for metric, spec in sorted(profile.metrics.items()):
        out = outside_range(reg.conn, ids, metric, spec.min, spec.max, since)
        if out is None:
            continue
        notes.append(
            f"note: profile {profile.profile_id!r}: {out.readings} {metric} readings of the last "
            f"hour from {out.devices} of its devices ({out.low:g} to {out.high:g}) lie outside "
            f"[{'' if spec.min is None else f'{spec.min:g}'}, "
            f"{'' if spec.max is None else f'{spec.max:g}'}]: such values are refused from "
            "now on (cityvitals deadletters --stage streams)"
        )
    return notes


def _catalogue() -> Catalogue | None:
    """The stream's indicator catalogue (None when it does not load: the stream would refuse
    it, and nothing is checked against it)."""
    from wiring.services import load_catalogue

    try:
        return load_catalogue(settings())
    except ValueError:
        return None


def _unit_problems(catalogue: Catalogue | None, profile: Profile) -> list[str]:
    """The profile's metrics in a unit the catalogue's indicators do not read."""
    from rules.indicators import unit_problems

    if catalogue is None:
        return []
    units = {metric: spec.unit for metric, spec in profile.metrics.items()}
    return [
        f"{problem}: send it in that unit, or change the indicator (CITYVITALS_INDICATORS_FILE)"
        for problem in unit_problems(catalogue, profile.device_type, units)
    ]


def _metrics_read() -> frozenset[str]:
    """The metrics the stream's rules and indicators read (empty when a file of theirs does not
    load: the stream would refuse it, and 'rules check' says why)."""
    from wiring.services import load_catalogue, load_rules

    try:
        conf = settings()
        rules, catalogue = load_rules(conf), load_catalogue(conf)
    except ValueError:
        return frozenset()
    read = {m for r in rules.rules if isinstance(m := getattr(r, "metric", None), str)}
    read |= set(rules.composite_by_metric)  # a composite's conditions
    for spec in catalogue.by_id.values():
        read |= spec.metrics()
    return frozenset(read)


@profiles_app.command("remove")
def profiles_remove(profile_id: str) -> None:
    """Remove a profile no device uses (of any state: a decommissioned device's history names
    it); refused, naming them, otherwise."""
    with registry() as reg:
        profile = reg.remove_profile(profile_id, actor())
    typer.echo(f"removed profile {profile.profile_id} ({profile.device_type})")


@profiles_app.command("list")
def profiles_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one a profile")] = False,
) -> None:
    """List profiles: id, device type, reporting interval and metrics (unit, valid range)."""
    with registry() as reg:
        profiles = reg.list_profiles()
    if not profiles and not as_json:
        typer.echo("no profiles (cityvitals profiles put FILE makes them)", err=True)
    for p in profiles:
        if as_json:
            typer.echo(p.model_dump_json())
            continue
        metrics = "; ".join(
            f"{name} {spec.unit} [{_bound(spec.min)}, {_bound(spec.max)}]"
            for name, spec in sorted(p.metrics.items())
        )
        typer.echo(
            f"{p.profile_id}  {p.device_type}  every {p.expected_interval_s:g} s  "
            f"{metrics or 'no metrics'}{'  ' + p.description if p.description else ''}"
        )


def _bound(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@departments_app.command("add")
def departments_add(department_id: str, name: Annotated[str, typer.Option()]) -> None:
    """Create or rename a department."""
    with registry() as reg:
        reg.put_department(build(Department, department_id=department_id, name=name), actor())
    typer.echo(f"department {department_id}: {name}")


@departments_app.command("remove")
def departments_remove(department_id: str) -> None:
    """Remove a department nothing names: refused, naming them, while the incident routing
    dispatches to it, devices of any state or users name it, or it holds incidents not
    closed."""
    from device_registry.incident_publisher import incident_departments, routing_name

    conf = settings()
    try:
        routed = incident_departments(conf)
    except (OSError, ValueError) as exc:
        raise fail(f"the incident configuration: {exc}") from None
    with registry() as reg:
        department = reg.remove_department(department_id, actor(), routed, routing_name(conf))
    typer.echo(f"removed department {department.department_id}: {department.name}")


@departments_app.command("list")
def departments_list() -> None:
    with registry() as reg:
        for d in reg.list_departments():
            typer.echo(f"{d.department_id:<20} {d.name}")


AUDITED = ("device", "place", "profile", "department", "user", "mqtt_login", "incident", "report")
"""The kinds of entity the audit log holds entries of."""


def audit(
    entity: Annotated[str | None, typer.Option(help=", ".join(AUDITED))] = None,
    entity_id: Annotated[
        str | None, typer.Option("--id", help="the entity's id; for a user, its name too")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--actor", help="who acted: as listed (cli:root), or a user's name"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="ISO time or date, 19:55 or 15m back (no zone: the city's, CITYVITALS_TIMEZONE)"
        ),
    ] = None,
    until: Annotated[str | None, typer.Option(help="before this (no zone: the city's)")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON, each entry with its before and after")
    ] = False,
) -> None:
    """Who changed what, newest first: under each entry, each field it changed, old -> new."""
    if entity is not None and entity not in AUDITED:
        raise fail(f"--entity {entity!r}: the audit log holds {', '.join(AUDITED)}")
    start, end = time_option(since, "--since"), time_option(until, "--until")
    if start is not None and end is not None:
        in_order(start, end, "--since", "--until")
    with registry() as reg:
        entries = reg.audit_log(entity, entity_id, limit, by, start, end)
        if entity_id and entity in (None, "user"):  # users are keyed by an id, named by a name
            named = [r.user.user_id for r in reg.list_users() if r.user.name == entity_id]
            for user_id in named:
                entries = [*entries, *reg.audit_log("user", user_id, limit, by, start, end)]
            entries = sorted(entries, key=lambda e: e.at, reverse=True)[:limit]
    conf = settings()
    if as_json:
        echo_json(entries, conf)
        return
    zone = conf.zone
    typer.echo(f"times in {zone}")
    for e in entries:
        name = (e.after or e.before or {}).get("name") if e.entity == "user" else None
        typer.echo(
            f"{e.at.astimezone(zone):%Y-%m-%d %H:%M:%S} {e.actor:<20} {e.action:<14} "
            f"{e.entity}:{e.entity_id}{f' ({name})' if name else ''}"
        )
        for line in changes(e.before, e.after):
            typer.echo(f"    {line}")


SHOWN_CHARS = 60
"""A changed value is cut to this many characters."""
UNCOMPARED = frozenset({"updated_at", "created_at"})
"""Fields every change moves: not listed."""


def changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """What an audit entry changed, a field a line (``name: 'District 4' -> 'District Four'``);
    nothing for an addition or a removal (the entry's action says it), one line when a change
    left everything as it was.

    >>> changes({"name": "D4", "lat": 1.0, "updated_at": "x"}, {"name": "D Four", "lat": 1.0,
    ...         "updated_at": "y"})
    ["name: 'D4' -> 'D Four'"]
    >>> changes({"path": ["c", "d1"]}, {"path": ["c", "d1"]}), changes(None, {"name": "x"})
    (['nothing changed'], [])
    """
    if before is None or after is None:
        return []
    out = []
    for key in sorted(before.keys() | after.keys()):
        if key in UNCOMPARED or before.get(key) == after.get(key):
            continue
        old, new = repr(before.get(key)), repr(after.get(key))
        cut = [v if len(v) <= SHOWN_CHARS else v[: SHOWN_CHARS - 3] + "..." for v in (old, new)]
        out.append(f"{key}: {cut[0]} -> {cut[1]}")
    return out or ["nothing changed"]
