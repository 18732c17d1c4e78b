"""The device registry: devices, places, profiles and departments in PostgreSQL.

A thin facade: the SQL of each table is in :mod:`device_registry.repositories`, the change
feed in :mod:`device_registry.publisher`; a method here decides what one transaction holds.

Every device change is published to the compacted ``devices`` topic and, in-band, to the
device's partition of ``readings.raw``, so streams never query the database per reading.
Every change is written to ``audit_log`` (who, what, before, after) in the same transaction.
A change is published after its transaction committed and before the broker accepts the
device, so a device's readings always come after its registration in the stream.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Producer

from cityvitals.contracts import (
    AlertStatus,
    Department,
    Device,
    DeviceLiveness,
    DeviceState,
    Liveness,
    Place,
    PlaceLevel,
    Profile,
)
from cityvitals.settings import Settings
from device_registry.credentials import BrokerFiles, hash_secret, login_problem, new_secret
from device_registry.errors import (
    BadLogin,
    DeviceExists,
    InUse,
    PlaceConflict,
    ProfileMismatch,
    RegistryError,
    ServiceLogin,
    UnknownDevice,
    UnknownPlace,
    UnknownProfile,
    UnknownUser,
    database_refused,
)
from device_registry.importing import ParsedFile, RowError, parse_device_csv, parse_device_json
from device_registry.liveness_store import device_rows
from device_registry.notes import path_prefixes
from device_registry.publisher import ChangePublisher
from device_registry.repositories import audit, credentials, devices, places, profiles, users
from device_registry.repositories.audit import AuditEntry, Cursor
from device_registry.repositories.users import UserRow
from device_registry.user_accounts import UserAccounts
from sinks import AlertFilter, OpenWork, list_alerts, open_work

__all__ = [
    "UPDATABLE",
    "AuditEntry",
    "DeviceExists",
    "ImportReport",
    "InUse",
    "PlaceConflict",
    "PlaceMove",
    "ProfileMismatch",
    "Registry",
    "RegistryError",
    "ServiceLogin",
    "UnknownDevice",
    "UnknownPlace",
    "UnknownProfile",
    "UnknownUser",
    "UserRow",
]

UPDATABLE = frozenset({"device_type", "profile_id", "department", "tags", "lat", "lon"})
Progress = Callable[[int, int], None]
MAY_CONNECT = frozenset({DeviceState.PROVISIONED, DeviceState.ACTIVE})
"""States whose MQTT login works: a provisioned device may connect and publish, and its first
valid reading makes it active."""
FIRST_READING = "activate_on_first_reading"
"""The audit action of a provisioned device made active by its first valid reading."""


@dataclass(frozen=True)
class PlaceMove:
    """What a place's move did: the places moved (the place first), the users whose scope
    moved with them, and what was left open at the old path (moved ``with_open``)."""

    places: list[Place]
    users: list[str]
    left_open: OpenWork


@dataclass
class ImportReport:
    added: list[tuple[str, str]] = field(default_factory=list)
    """(device id, MQTT secret) of each device added; secrets are not stored in clear."""
    errors: list[RowError] = field(default_factory=list)
    imported: list[Device] = field(default_factory=list)
    """The devices added, as their rows gave them."""
    updated: list[str] = field(default_factory=list)
    """The devices already registered that an import with ``update`` changed, by id."""
    unchanged: int = 0
    """The devices already registered whose rows change nothing."""


class Registry(UserAccounts):
    def __init__(
        self,
        settings: Settings,
        conn: psycopg.Connection[tuple[Any, ...]],
        producer: Producer,
        broker: BrokerFiles | None,
    ) -> None:
        self.settings = settings
        self.conn = conn
        self.producer = producer
        self.broker = broker
        self.broker_untold = False
        """A change of MQTT logins was stored that no broker was told of (``broker`` None)."""
        self.publisher = ChangePublisher(settings, producer)

    def close(self) -> None:
        self.producer.flush(30)
        self.conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _read(self) -> Cursor:
        return self.conn.cursor()

    # --- publishing and the broker --------------------------------------------------------

    def publish(self, changed: Iterable[Device]) -> int:
        """Send device changes, each with its profile's facts (:meth:`_as_published`), and wait
        for Kafka to confirm them (see the module docstring)."""
        with self._read() as cur:
            return self.publisher.publish(self._as_published(cur, list(changed)))

    def publish_all(self) -> int:
        return self.publish(self.list())

    def _sync_broker(self) -> None:
        if self.broker is None:
            self.broker_untold = True
            return
        with self._read() as cur:
            self.broker.apply(credentials.enabled(cur))

    # --- places -----------------------------------------------------------------------------

    def put_places(self, new: Iterable[Place], actor: str) -> None:
        """Create places or rename them; a place cannot change its path here (see move_place).
        Ancestors the path names that do not exist yet are created too (audited)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            for p in new:
                before = places.find(cur, p.place_id)
                if before is not None and before.path != p.path:
                    raise PlaceConflict(p.place_id, before.path, p.path)
                if p.parent_id is not None:  # missing ancestors are created, as for devices
                    places.ensure(cur, [p.path[:-1]], actor)
                places.upsert(cur, p)
                if before != p:
                    audit.record(cur, actor, "put", "place", p.place_id, before, p)

    def get_place(self, place_id: str) -> Place:
        with self._read() as cur:
            return places.get(cur, place_id)

    def list_places(self, under: str | None = None) -> list[Place]:
        """Every place, or a place and all its descendants."""
        with self._read() as cur:
            return places.subtree(cur, under)

    def device_positions(self) -> dict[str, tuple[float, float]]:
        """:func:`~device_registry.repositories.places.positions`."""
        with self._read() as cur:
            return places.positions(cur)

    def move_place(
        self, place_id: str, new_parent_id: str, actor: str, with_open: bool = False
    ) -> PlaceMove:
        """Move a place and its whole subtree under another parent of the same level; the
        users whose scope lies there keep it, at its new path. Refused while incidents not
        closed or alerts firing lie under the place, unless ``with_open``: those keep the
        path they were raised at (their district's officers and escalations), so a move
        waits for them or says it does not."""
        place = self.get_place(place_id)
        parent = self.get_place(new_parent_id)
        if place.level.depth == 0:
            raise RegistryError(
                f"{place_id} is a city: a city sits under nothing", "place_id", place_id
            )
        if parent.level.depth != place.level.depth - 1:
            raise RegistryError(
                f"a {place.level.value} must sit under a "
                f"{list(PlaceLevel)[place.level.depth - 1].value}, not a {parent.level.value}",
                "parent_id",
                new_parent_id,
            )
        old, new = list(place.path), [*parent.path, place_id]
        going_on = open_work(self.conn, old)
        if going_on and not with_open:
            raise RegistryError(
                f"{place_id} has {going_on.describe()} under it; they would stay at "
                f"{'/'.join(old)} (its officers and escalations there): move it once they are "
                "closed, or move it with them left there (--with-open; with_open in the API)",
                "place_id",
                place_id,
            )
        with self.conn.transaction(), self.conn.cursor() as cur:
            places.move_subtree(cur, old, new)
            moved_devices = devices.move_under(cur, old, new)
            moved = places.subtree(cur, place_id)
            audit.record(cur, actor, "move", "place", place_id, place, moved[0])
            scoped = users.move_scopes(cur, old, new)
            for before, after in scoped:
                audit.record(
                    cur, actor, "move_scope", "user", after.user.user_id, before.user, after.user
                )
        self.publish(moved_devices)
        return PlaceMove(moved, [after.user.name for _, after in scoped], going_on)

    def remove_place(
        self, place_id: str, actor: str, named: Callable[[Place], list[str]] | None = None
    ) -> Place:
        """Remove a place nothing uses (one made by mistake); returns it. Refused
        (:class:`InUse`, naming them) while places lie under it, devices of any state are at
        or under it, users are scoped to it, incidents not closed or alerts firing are there,
        or ``named`` says what else names it (the rule file and the incident routing in
        force: :meth:`~device_registry.incident_publisher.NamedPlaces.of`). What was stored at
        it stays (readings, alerts and vital signs keep their paths), and the audit log keeps
        the place as it was."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            place = places.get(cur, place_id, lock=True)
            under, at, scoped = places.uses(cur, place_id)
            found = [
                *_counted(under, "place lies under it", "places lie under it"),
                *_counted(at, "device is at or under it", "devices are at or under it"),
                *_counted(scoped, "user is scoped to it", "users are scoped to it", shown=0),
            ]
            going_on = open_work(self.conn, place.path)
            if going_on:
                found.append(f"it has {going_on.describe()}")
            if named is not None:
                found.extend(named(place))
            if found:
                raise InUse(f"place {place_id!r}", "place_id", place_id, found)
            places.delete(cur, place_id)
            audit.record(cur, actor, "remove", "place", place_id, place, None)
        return place

    # --- profiles and departments -----------------------------------------------------------

    def remove_profile(self, profile_id: str, actor: str) -> Profile:
        """Remove a profile no device uses (of any state: a decommissioned device's history
        names it); returns it. Refused (:class:`InUse`) otherwise."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            profile = profiles.find(cur, profile_id, lock=True)
            if profile is None:
                raise UnknownProfile(profile_id)
            used = profiles.devices_of(cur, profile_id)
            if used:
                found = _counted(used, "device uses it", "devices use it")
                raise InUse(f"profile {profile_id!r}", "profile_id", profile_id, found)
            try:
                with self.conn.transaction():  # a device given it since: the key refuses
                    profiles.delete(cur, profile_id)
            except psycopg.errors.ForeignKeyViolation:
                raise InUse(
                    f"profile {profile_id!r}", "profile_id", profile_id, ["a device uses it now"]
                ) from None
            audit.record(cur, actor, "remove", "profile", profile_id, profile, None)
        return profile

    def remove_department(
        self,
        department_id: str,
        actor: str,
        routed: Collection[str] = (),
        routing: str = "the incident routing",
    ) -> Department:
        """Remove a department nothing names; returns it. Refused (:class:`InUse`) while the
        incident routing (``routing``, which dispatches to ``routed``) dispatches to it, devices
        of any state or users name it, or it holds incidents not closed."""
        if department_id in routed:
            found = [f"{routing} dispatches to it (take it out there first)"]
            raise InUse(f"department {department_id!r}", "department_id", department_id, found)
        with self.conn.transaction(), self.conn.cursor() as cur:
            department = profiles.find_department(cur, department_id, lock=True)
            if department is None:
                raise RegistryError(
                    f"department {department_id!r} does not exist (cityvitals departments list)",
                    "department_id",
                    department_id,
                )
            devices_, users_, incidents = profiles.department_uses(cur, department_id)
            found = [
                *_counted(devices_, "device names it", "devices name it"),
                *_counted(users_, "user is of it", "users are of it", shown=0),
                *_counted(
                    incidents,
                    "incident not closed is held by it",
                    "incidents not closed are held by it",
                ),
            ]
            if found:
                raise InUse(f"department {department_id!r}", "department_id", department_id, found)
            profiles.delete_department(cur, department_id)
            audit.record(cur, actor, "remove", "department", department_id, department, None)
        return department

    def put_profile(self, profile: Profile, actor: str) -> None:
        """Create or replace a profile. Its device_type cannot change while devices of another
        type use it. Its devices are published again when what they carry of it changed."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            before = profiles.find(cur, profile.profile_id)
            others = profiles.users_of_another_type(cur, profile)
            if others:
                raise RegistryError(
                    f"profile {profile.profile_id!r} is used by devices of another type "
                    f"({', '.join(f'{d} ({t})' for d, t in others)}); it cannot become "
                    f"{profile.device_type!r}",
                    "device_type",
                    profile.device_type,
                )
            profiles.upsert(cur, profile)
            audit.record(cur, actor, "put", "profile", profile.profile_id, before, profile)
        if before is not None and (
            before.metrics != profile.metrics
            or before.expected_interval_s != profile.expected_interval_s
        ):  # new ranges reach the stream, a new interval the stream and liveness
            self.publish(self.list(profile_id=profile.profile_id))

    def get_profile(self, profile_id: str) -> Profile:
        with self._read() as cur:
            profile = profiles.find(cur, profile_id)
        if profile is None:
            raise UnknownProfile(profile_id)
        return profile

    def list_profiles(self) -> list[Profile]:
        with self._read() as cur:
            ids = profiles.ids(cur)
        return [self.get_profile(i) for i in ids]

    def put_department(self, department: Department, actor: str) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            before = profiles.find_department(cur, department.department_id)
            profiles.upsert_department(cur, department)
            audit.record(
                cur, actor, "put", "department", department.department_id, before, department
            )

    def device_types(self) -> set[str]:
        """The device types of the registered devices and profiles."""
        with self._read() as cur:
            return devices.types(cur)

    def unprofiled_types(self) -> set[str]:
        """The device types of the registered devices that have no profile."""
        with self._read() as cur:
            return devices.unprofiled_types(cur)

    def add_missing_departments(self, department_ids: Iterable[str], actor: str) -> list[str]:
        """Register those of ``department_ids`` the registry lacks, named by their id (the
        incident routing's departments, which operators answer for); returns them."""
        known = {d.department_id for d in self.list_departments()}
        added = sorted(set(department_ids) - known)
        for department_id in added:
            self.put_department(Department(department_id=department_id, name=department_id), actor)
        return added

    def list_departments(self) -> list[Department]:
        with self._read() as cur:
            return profiles.departments(cur)

    def known_to(
        self, devices: Sequence[Device]
    ) -> tuple[builtins.set[tuple[str, ...]], builtins.set[str]]:
        """Of the place paths ``devices`` name (each path's every prefix), those the registry
        has; and its departments: what :func:`~device_registry.notes.registration_notes`
        compares with. A few devices' places are looked up one by one, a file's read whole."""
        wanted = path_prefixes(devices)
        with self._read() as cur:
            if len(wanted) > 20:
                known = {p.path for p in places.subtree(cur, None)} & wanted
            else:
                known = set()
                for path in wanted:
                    try:
                        if places.get(cur, path[-1]).path == path:
                            known.add(path)
                    except UnknownPlace:
                        pass
            departments = {d.department_id for d in profiles.departments(cur)}
        return known, departments

    def liveness(
        self,
        place: str | None = None,
        status: Liveness | None = None,
        device_id: str | None = None,
    ) -> list[DeviceLiveness]:
        """Active devices' liveness as the liveness service last judged it, in id order."""
        return device_rows(self.conn, place, status, device_id=device_id)

    # --- devices ------------------------------------------------------------------------------

    def add_many(self, new: Sequence[Device], actor: str) -> list[tuple[str, str]]:
        """Register new devices and issue each an MQTT secret; returns (device id, secret)."""
        for d in new:
            if (problem := login_problem(d.device_id)) is not None:
                raise BadLogin(d.device_id, problem)
        issued = [(d.device_id, new_secret()) for d in new]
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                profiles.check_fit(cur, new)
                service = credentials.service_login_among(cur, [d.device_id for d in new])
                if service is not None:  # a device of that name would take the login over
                    raise ServiceLogin(service)
                places.ensure(cur, [d.place_path for d in new], actor)
                devices.insert(cur, new)
                credentials.issue(
                    cur,
                    [
                        (device_id, hash_secret(secret), d.state in MAY_CONNECT)
                        for (device_id, secret), d in zip(issued, new, strict=True)
                    ],
                )
                audit.record_many(
                    cur, actor, "add", "device", [(d.device_id, None, d) for d in new]
                )
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            raise database_refused(exc, new) from exc
        self.publish(new)  # before the broker accepts the device: its readings come after
        self._sync_broker()
        return issued

    def add(self, device: Device, actor: str) -> str:
        return self.add_many([device], actor)[0][1]

    def import_devices(
        self,
        parsed: ParsedFile,
        actor: str,
        progress: Progress | None = None,
        chunk: int = 1000,
        update: Callable[[Device], str | None] | None = None,
    ) -> ImportReport:
        """Add a parsed file's devices in chunks; a refused row is reported by its line, not
        fatal. With ``update``, a row of a device already registered changes it instead
        (:meth:`update_from_row`) when ``update(current)`` says nothing against it (a user's
        scope)."""
        report = ImportReport(errors=list(parsed.errors))
        with self._read() as cur:
            existing = devices.known_ids(cur, [d.device_id for d in parsed.devices])
        fresh: dict[str, tuple[int, Device]] = {}
        seen: set[str] = set()
        for line, d in zip(parsed.lines, parsed.devices, strict=True):
            if d.device_id in existing and update is not None and d.device_id not in seen:
                seen.add(d.device_id)
                try:
                    current = self.get(d.device_id)
                    refused = update(current)
                    if refused is not None:
                        raise RegistryError(refused, "place_path", "/".join(current.place_path))
                    if self.update_from_row(current, d, actor):
                        report.updated.append(d.device_id)
                    else:
                        report.unchanged += 1
                except RegistryError as exc:
                    report.errors.append(RowError(line, exc.field, str(exc), parsed.unit))
            elif d.device_id in existing and update is not None:  # a second row of it
                message = f"an earlier {parsed.unit} has the same id: only the first row of an id is taken"
                report.errors.append(RowError(line, "device_id", message, parsed.unit))
            elif d.device_id in existing:
                message = (
                    f"{d.device_id!r} is already registered (an import with --update, "
                    "update=true in the API, changes it to its row)"
                )
                report.errors.append(RowError(line, "device_id", message, parsed.unit))
            elif d.device_id in fresh:
                first = fresh[d.device_id][0]
                message = (
                    f"{parsed.unit} {first} has the same id: only the first row of an id is taken"
                )
                report.errors.append(RowError(line, "device_id", message, parsed.unit))
            else:
                fresh[d.device_id] = (line, d)
        todo = list(fresh.values())
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            try:
                report.added.extend(self.add_many([d for _, d in part], actor))
                report.imported.extend(d for _, d in part)
            except RegistryError:
                for line, d in part:  # find the culprits one by one; the rest still go in
                    try:
                        report.added.extend(self.add_many([d], actor))
                        report.imported.append(d)
                    except RegistryError as exc:
                        report.errors.append(RowError(line, exc.field, str(exc), parsed.unit))
            if progress is not None:
                progress(min(start + chunk, len(todo)), len(todo))
        report.errors.sort(key=lambda e: e.line)
        return report

    def update_from_row(self, current: Device, row: Device, actor: str) -> bool:
        """Change a registered device to what an import's row says: its place (a move), and
        each of its type, profile, department, tags and coordinates the row gives (an empty
        cell leaves it as it is; its state stays: suspend, activate and retire change that).
        Whether anything changed."""
        changes = {
            name: getattr(row, name)
            for name in sorted(UPDATABLE)
            if getattr(row, name) not in (None, (), "")
            and getattr(row, name) != getattr(current, name)
        }
        moved = row.place_path != current.place_path
        if changes:  # first: what it may refuse (a profile of another type) moves nothing
            self.update(current.device_id, changes, actor)
        if moved:
            self.move(current.device_id, row.place_path, actor)
        return moved or bool(changes)

    def import_csv(self, text: str, actor: str, progress: Progress | None = None) -> ImportReport:
        return self.import_devices(parse_device_csv(text, datetime.now(UTC)), actor, progress)

    def import_json(self, text: str, actor: str, progress: Progress | None = None) -> ImportReport:
        return self.import_devices(parse_device_json(text, datetime.now(UTC)), actor, progress)

    def _change(self, device_id: str, actor: str, action: str, columns: dict[str, Any]) -> Device:
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                before = devices.get(cur, device_id)
                after = devices.update(cur, device_id, columns)
                profiles.check_fit(cur, [after])
                if action == "state":
                    credentials.set_enabled(cur, device_id, after.state in MAY_CONNECT)
                audit.record(cur, actor, action, "device", device_id, before, after)
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            raise database_refused(exc, []) from exc
        with self._read() as cur:
            (published,) = self._as_published(cur, [after])
        self.publisher.publish([published])
        if action == "state":
            self._sync_broker()
        return published

    def update(self, device_id: str, changes: dict[str, Any], actor: str) -> Device:
        """Change a device's type, profile, department, tags or coordinates."""
        unknown = sorted(set(changes) - UPDATABLE)
        if unknown:
            raise RegistryError(
                f"{unknown[0]} cannot be updated here", unknown[0], changes[unknown[0]]
            )
        current = self.get(device_id)
        merged = Device.model_validate({**current.model_dump(), **changes})  # validates fields
        if not changes:
            return current
        return self._change(
            device_id, actor, "update", {c: getattr(merged, c) for c in sorted(changes)}
        )

    def firing(self, device_id: str) -> list[tuple[str, str, tuple[str, ...]]]:
        """The device's alerts firing (rule, level, the path each was raised at), as the
        database holds them: what a move leaves at the old place
        (:func:`~device_registry.notes.move_notes`)."""
        rows = list_alerts(self.conn, AlertFilter(status=AlertStatus.FIRING, device=device_id))
        return [(a.rule_id, a.level, a.place_path) for a in rows]

    def move(
        self,
        device_id: str,
        place_path: Sequence[str],
        actor: str,
        location: tuple[float, float] | None = None,
    ) -> Device:
        """Move a device to ``place_path`` (its places made as needed), and to ``location``
        (latitude, longitude) when given; without, it keeps its coordinates. A move to where
        the device is (at its coordinates) changes nothing: the device is returned as it is."""
        current = self.get(device_id)
        columns: dict[str, Any] = {"place_path": list(place_path)}
        if location is not None:
            columns["lat"], columns["lon"] = location
        moved = current.model_copy(update={**columns, "place_path": tuple(place_path)})
        Device.model_validate(moved.model_dump())
        if moved == current:  # where it is, at its coordinates: nothing to audit or publish
            return current
        with self.conn.transaction(), self.conn.cursor() as cur:
            places.ensure(cur, [moved.place_path], actor)
        return self._change(device_id, actor, "move", columns)

    def set_state(self, device_id: str, state: DeviceState, actor: str) -> Device:
        """Move a device through its lifecycle; only a provisioned or active device may
        connect. Retired is final: a device put back in service is registered anew, under a
        new id."""
        current = self.get(device_id)
        if current.state is DeviceState.RETIRED and state is not DeviceState.RETIRED:
            raise RegistryError(
                f"device {device_id!r} is retired, and retired is final; register the "
                "hardware anew under a new id",
                "state",
                state.value,
            )
        return self._change(device_id, actor, "state", {"state": state.value})

    def activate_on_first_reading(self, device_ids: Sequence[str], actor: str) -> list[Device]:
        """Make active those of ``device_ids`` that are still provisioned (audited as
        :data:`FIRST_READING`); returns them. Others (already active, suspended meanwhile,
        unknown) are left as they are. The liveness service calls this for devices it sees
        report, since a reading on ``readings`` has passed the stream's checks."""
        if not device_ids:
            return []
        with self.conn.transaction(), self.conn.cursor() as cur:
            changes = devices.activate(cur, device_ids)
            audit.record_many(
                cur, actor, FIRST_READING, "device", [(a.device_id, b, a) for b, a in changes]
            )
        activated = [after for _, after in changes]
        self.publish(activated)
        return activated

    def rotate_secrets(self, device_ids: Sequence[str], actor: str) -> list[tuple[str, str]]:
        """Issue new MQTT secrets (the old ones stop working at once); returns (id, secret)."""
        issued = [(device_id, new_secret()) for device_id in device_ids]
        with self.conn.transaction(), self.conn.cursor() as cur:
            for device_id, secret in issued:
                if devices.get(cur, device_id).state is DeviceState.RETIRED:
                    raise RegistryError(
                        f"device {device_id!r} is retired, and retired is final: no secret "
                        "would ever log it in; register the hardware anew under a new id",
                        "device_id",
                        device_id,
                    )
                if not credentials.rotate(cur, device_id, hash_secret(secret)):
                    raise UnknownDevice(device_id)
                audit.record(cur, actor, "rotate_secret", "device", device_id, None, None)
        self._sync_broker()
        return issued

    def get(self, device_id: str) -> Device:
        with self._read() as cur:
            return self._as_published(cur, [devices.get(cur, device_id)])[0]

    def list(
        self,
        place: str | None = None,
        state: DeviceState | None = None,
        device_type: str | None = None,
        tag: str | None = None,
        profile_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[Device]:
        """Devices, filtered by place subtree, state, type, tag and profile, in id order."""
        with self._read() as cur:
            where = devices.DeviceFilter(place, state, device_type, tag, profile_id)
            return self._as_published(cur, devices.select(cur, where, limit, offset))

    @staticmethod
    def _as_published(cur: Cursor, found: builtins.list[Device]) -> builtins.list[Device]:
        """``found`` as they are published, and as the stream judges their readings: each
        with its profile's valid ranges and expected reporting interval."""
        known = profiles.facts(cur)
        return [d.model_copy(update=known.get(d.profile_id, {})) for d in found]

    def audit_log(
        self,
        entity: str | None = None,
        entity_id: str | None = None,
        limit: int = 100,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
    ) -> builtins.list[AuditEntry]:
        """The audit log, newest first (filters: :func:`.repositories.audit.entries`)."""
        with self._read() as cur:
            return audit.entries(cur, entity, entity_id, limit, actor, since, until, offset)

    def set_service_credential(self, username: str, secret: str, actor: str = "system") -> None:
        """A service's own MQTT login (the gateway reads every device topic)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            credentials.set_service(cur, username, hash_secret(secret))
            audit.record(cur, actor, "set_service_credential", "mqtt_login", username, None, None)
        self._sync_broker()


def _counted(ids: Sequence[str], one: str, many: str, shown: int = 5) -> list[str]:
    """``["3 devices name it (a, b, c)"]`` (the first ``shown`` named), or nothing when
    ``ids`` is empty."""
    if not ids:
        return []
    counted = f"{len(ids)} {one if len(ids) == 1 else many}"
    if not shown:  # named to no one who may not list them (users: cityvitals users list)
        return [counted]
    named = ", ".join(ids[:shown]) + (f", {len(ids) - shown} more" if len(ids) > shown else "")
    return [f"{counted} ({named})"]
