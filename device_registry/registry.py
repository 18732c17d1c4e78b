"""The device registry: devices, places, profiles and departments in PostgreSQL.

Every device change is published to the compacted ``devices`` topic and, in-band, to the
device's partition of ``readings.raw``, so streams never query the database per reading.
Every change is written to ``audit_log`` (who, what, before, after) in the same transaction.
A change is published after its transaction committed and before the broker accepts the
device, so a device's readings always come after its registration in the stream.
"""

from __future__ import annotations

import builtins
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Producer
from psycopg.types.json import Jsonb

from cityvitals.contracts import (
    Department,
    Device,
    DeviceState,
    Place,
    PlaceLevel,
    Profile,
    ReadingBatch,
)
from cityvitals.kafka import KafkaUnavailable, partition_count
from cityvitals.settings import Settings
from cityvitals.topics import Topic, partition_for
from device_registry.credentials import BrokerFiles, hash_secret, new_secret
from device_registry.importing import ParsedFile, RowError, parse_device_csv, parse_device_json

__all__ = [
    "UPDATABLE",
    "AuditEntry",
    "DeviceExists",
    "ImportReport",
    "PlaceConflict",
    "ProfileMismatch",
    "Registry",
    "RegistryError",
    "ServiceLogin",
    "UnknownDevice",
    "UnknownPlace",
    "UnknownProfile",
]

UPDATABLE = frozenset({"device_type", "profile_id", "department", "tags", "lat", "lon"})
Progress = Callable[[int, int], None]
MAY_CONNECT = frozenset({DeviceState.PROVISIONED, DeviceState.ACTIVE})
"""States whose MQTT login works: a provisioned device may connect and publish, and its first
valid reading makes it active."""
FIRST_READING = "activate_on_first_reading"
"""The audit action of a provisioned device made active by its first valid reading."""


class RegistryError(ValueError):
    """A request the registry refuses; ``field`` and ``value`` name what is wrong."""

    def __init__(self, message: str, field: str, value: object) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class DeviceExists(RegistryError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is already registered", "device_id", device_id)


class PlaceConflict(RegistryError):
    def __init__(self, place_id: str, existing: Sequence[str], given: Sequence[str]) -> None:
        super().__init__(
            f"place {place_id!r} is at {'/'.join(existing)}, not {'/'.join(given)}",
            "place_path",
            "/".join(given),
        )


class ServiceLogin(RegistryError):
    def __init__(self, device_id: str) -> None:
        super().__init__(
            f"{device_id!r} is the MQTT login of a service; a device cannot take it",
            "device_id",
            device_id,
        )


class ProfileMismatch(RegistryError):
    def __init__(self, profile_id: str, profile_type: str, device_type: str) -> None:
        super().__init__(
            f"profile {profile_id!r} is for device_type {profile_type!r}, not {device_type!r}",
            "profile_id",
            profile_id,
        )


class UnknownDevice(LookupError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is not registered")
        self.device_id = device_id


class UnknownPlace(LookupError):
    def __init__(self, place_id: str) -> None:
        super().__init__(f"place {place_id!r} does not exist")
        self.place_id = place_id


class UnknownProfile(RegistryError):
    def __init__(self, profile_id: str) -> None:
        super().__init__(
            f"profile {profile_id!r} does not exist; add it first "
            "('cityvitals profiles put FILE' or PUT /profiles/{id})",
            "profile_id",
            profile_id,
        )


@dataclass
class ImportReport:
    added: list[tuple[str, str]] = field(default_factory=list)
    """(device id, MQTT secret) of each device added; secrets are not stored in clear."""
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


DEVICE_COLUMNS = (
    "device_id, device_type, profile_id, place_path, state, department, tags, lat, lon, updated_at"
)


def _device(row: Sequence[Any]) -> Device:
    device_id, device_type, profile_id, path, state, department, tags, lat, lon, updated = row
    return Device(
        device_id=device_id,
        device_type=device_type,
        profile_id=profile_id,
        place_path=tuple(path),
        state=state,
        department=department,
        tags=tuple(tags),
        lat=lat,
        lon=lon,
        updated_at=updated,
    )


def _place(row: Sequence[Any]) -> Place:
    place_id, level, name, path, lat, lon = row
    return Place(place_id=place_id, level=level, name=name, path=tuple(path), lat=lat, lon=lon)


def _database_refused(exc: psycopg.Error, devices: Sequence[Device]) -> RegistryError:
    """A database refusal of a device write, in the registry's words (never psycopg's)."""
    diag = exc.diag
    detail = diag.message_detail or ""
    value = detail.split("=(", 1)[1].split(")", 1)[0] if "=(" in detail else None
    if isinstance(exc, psycopg.errors.UniqueViolation):
        if diag.table_name == "devices" and value is not None:
            return DeviceExists(value)
        return RegistryError(
            f"{diag.table_name or 'a record'} {value!r} was registered meanwhile; try again",
            diag.column_name or "device_id",
            value,
        )
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        missing = value or next((d.profile_id for d in devices if d.profile_id), "?")
        return UnknownProfile(str(missing))
    field = diag.column_name or "row"
    if isinstance(exc, psycopg.DataError):
        return RegistryError(f"{field}: a value the database cannot store", field, None)
    return RegistryError(
        f"the database refused the device (SQLSTATE {exc.sqlstate or '?'}); nothing was stored",
        field,
        None,
    )


def _json(model: Any) -> Jsonb | None:
    return None if model is None else Jsonb(json.loads(model.model_dump_json()))


class Registry:
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
        self._topic = settings.topic(Topic.DEVICES)
        self._raw = settings.topic(Topic.READINGS_RAW)

    def close(self) -> None:
        self.producer.flush(30)
        self.conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- publishing and the broker --------------------------------------------------------

    def publish(self, devices: Iterable[Device]) -> int:
        """Send device changes and wait for Kafka to confirm them (see the module docstring)."""
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        parts = partition_count(self.producer, self._raw)
        in_band: dict[int, list[Device]] = defaultdict(list)
        count = 0
        profiles = self._profile_facts()
        for device in devices:
            device = device.model_copy(update=profiles.get(device.profile_id, {}))
            partition = partition_for(device.device_id, parts)
            self.producer.produce(
                self._topic,
                device.model_dump_json().encode(),
                key=device.device_id.encode(),
                partition=partition,
                on_delivery=delivered,
            )
            in_band[partition].append(device)
            count += 1
            if count % 10_000 == 0:
                self.producer.poll(0)
        for partition, group in in_band.items():
            for start in range(0, len(group), 1000):
                batch = ReadingBatch(devices=tuple(group[start : start + 1000]))
                self.producer.produce(
                    self._raw,
                    batch.model_dump_json().encode(),
                    partition=partition,
                    on_delivery=delivered,
                )
        left = self.producer.flush(30)
        if failures or left:
            raise KafkaUnavailable(
                self.settings.kafka_bootstrap,
                f"{left + len(failures)} device updates unconfirmed: {failures[:3]}",
            )
        return count

    def publish_all(self) -> int:
        return self.publish(self.list())

    def _profile_facts(self) -> dict[str | None, dict[str, Any]]:
        """What a published device carries of its profile: the (min, max) of each metric and
        the expected reporting interval (the rules' staleness). Profiles are few, devices many."""
        return {
            str(pid): {
                "valid_ranges": {
                    m: (spec.get("min"), spec.get("max")) for m, spec in metrics.items()
                },
                "expected_interval_s": float(interval),
            }
            for pid, metrics, interval in self.conn.execute(
                "SELECT profile_id, metrics, expected_interval_s FROM profiles"
            )
        }

    def _sync_broker(self) -> None:
        if self.broker is None:
            return
        rows = self.conn.execute(
            "SELECT username, password_hash FROM mqtt_credentials WHERE enabled"
        ).fetchall()
        self.broker.apply((str(u), str(h)) for u, h in rows)

    def _audit(
        self,
        cur: psycopg.Cursor[Any],
        actor: str,
        action: str,
        entity: str,
        entity_id: str,
        before: Any,
        after: Any,
    ) -> None:
        cur.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_id, before, after) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (actor, action, entity, entity_id, _json(before), _json(after)),
        )

    # --- places -----------------------------------------------------------------------------

    def put_places(self, places: Iterable[Place], actor: str) -> None:
        """Create places or rename them; a place cannot change its path here (see move_place).
        Ancestors the path names that do not exist yet are created too (audited)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            for p in places:
                row = cur.execute(
                    "SELECT place_id, level, name, path, lat, lon FROM places WHERE place_id = %s",
                    (p.place_id,),
                ).fetchone()
                before = _place(row) if row else None
                if before is not None and before.path != p.path:
                    raise PlaceConflict(p.place_id, before.path, p.path)
                if p.parent_id is not None:  # missing ancestors are created, as for devices
                    self._ensure_places(cur, [p.path[:-1]], actor)
                cur.execute(
                    "INSERT INTO places (place_id, level, name, path, lat, lon) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (place_id) DO UPDATE SET "
                    "name = EXCLUDED.name, lat = EXCLUDED.lat, lon = EXCLUDED.lon, updated_at = now()",
                    (p.place_id, p.level.value, p.name, list(p.path), p.lat, p.lon),
                )
                if before != p:
                    self._audit(cur, actor, "put", "place", p.place_id, before, p)

    def get_place(self, place_id: str) -> Place:
        row = self.conn.execute(
            "SELECT place_id, level, name, path, lat, lon FROM places WHERE place_id = %s",
            (place_id,),
        ).fetchone()
        if row is None:
            raise UnknownPlace(place_id)
        return _place(row)

    def list_places(self, under: str | None = None) -> list[Place]:
        """Every place, or a place and all its descendants."""
        if under is None:
            rows = self.conn.execute(
                "SELECT place_id, level, name, path, lat, lon FROM places ORDER BY path"
            ).fetchall()
        else:
            self.get_place(under)
            rows = self.conn.execute(
                "SELECT place_id, level, name, path, lat, lon FROM places "
                "WHERE %s = ANY(path) ORDER BY path",
                (under,),
            ).fetchall()
        return [_place(r) for r in rows]

    def move_place(self, place_id: str, new_parent_id: str, actor: str) -> list[Place]:
        """Move a place and its whole subtree under another parent of the same level."""
        place = self.get_place(place_id)
        parent = self.get_place(new_parent_id)
        if parent.level.depth != place.level.depth - 1:
            raise RegistryError(
                f"a {place.level.value} must sit under a "
                f"{list(PlaceLevel)[place.level.depth - 1].value}, not a {parent.level.value}",
                "parent_id",
                new_parent_id,
            )
        old, new = list(place.path), [*parent.path, place_id]
        n = len(old)
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                "UPDATE places SET path = %s || path[%s:], updated_at = now() "
                "WHERE path[1:%s] = %s",
                (new, n + 1, n, old),
            )
            devices = [
                _device(r)
                for r in cur.execute(
                    f"UPDATE devices SET place_path = %s || place_path[%s:], updated_at = now() "
                    f"WHERE place_path[1:%s] = %s RETURNING {DEVICE_COLUMNS}",
                    (new, n + 1, n, old),
                ).fetchall()
            ]
            moved = self.list_places(place_id)
            self._audit(cur, actor, "move", "place", place_id, place, moved[0])
        self.publish(devices)
        return moved

    def _check_paths(self, cur: psycopg.Cursor[Any], devices: Sequence[Device], actor: str) -> None:
        """Create the places the devices' paths name (audited)."""
        self._ensure_places(cur, [d.place_path for d in devices], actor)

    def _ensure_places(
        self, cur: psycopg.Cursor[Any], paths: Sequence[Sequence[str]], actor: str
    ) -> None:
        """Create every place on the paths that does not exist yet (audited, named by its id);
        a known place must sit where a path says, and one new id cannot sit at two paths."""
        prefixes = {tuple(path[: i + 1]) for path in paths for i in range(len(path))}
        known = {
            str(r[0]): tuple(r[1])
            for r in cur.execute(
                "SELECT place_id, path FROM places WHERE place_id = ANY(%s)",
                ([p[-1] for p in prefixes],),
            ).fetchall()
        }
        existing = set(known)
        for prefix in sorted(prefixes):
            where = known.setdefault(prefix[-1], prefix)
            if where != prefix:
                raise PlaceConflict(prefix[-1], where, prefix)
        new = sorted((p for p in prefixes if p[-1] not in existing), key=len)
        created = [
            Place(place_id=p[-1], level=list(PlaceLevel)[len(p) - 1], name=p[-1], path=p)
            for p in new
        ]
        cur.executemany(
            "INSERT INTO places (place_id, level, name, path) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (place_id) DO NOTHING",
            [(p.place_id, p.level.value, p.name, list(p.path)) for p in created],
        )
        cur.executemany(
            "INSERT INTO audit_log (actor, action, entity, entity_id, after) "
            "VALUES (%s, 'create', 'place', %s, %s)",
            [(actor, p.place_id, _json(p)) for p in created],
        )

    # --- profiles and departments -----------------------------------------------------------

    def put_profile(self, profile: Profile, actor: str) -> None:
        """Create or replace a profile. Its device_type cannot change while devices of another
        type use it."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            before = self._profile(cur, profile.profile_id)
            others = cur.execute(
                "SELECT device_id, device_type FROM devices WHERE profile_id = %s "
                "AND device_type <> %s ORDER BY device_id LIMIT 3",
                (profile.profile_id, profile.device_type),
            ).fetchall()
            if others:
                raise RegistryError(
                    f"profile {profile.profile_id!r} is used by devices of another type "
                    f"({', '.join(f'{d} ({t})' for d, t in others)}); it cannot become "
                    f"{profile.device_type!r}",
                    "device_type",
                    profile.device_type,
                )
            cur.execute(
                "INSERT INTO profiles (profile_id, device_type, description, metrics, "
                "expected_interval_s) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (profile_id) DO "
                "UPDATE SET device_type = EXCLUDED.device_type, description = EXCLUDED.description, "
                "metrics = EXCLUDED.metrics, expected_interval_s = EXCLUDED.expected_interval_s, "
                "updated_at = now()",
                (
                    profile.profile_id,
                    profile.device_type,
                    profile.description,
                    Jsonb({m: s.model_dump(mode="json") for m, s in profile.metrics.items()}),
                    profile.expected_interval_s,
                ),
            )
            self._audit(cur, actor, "put", "profile", profile.profile_id, before, profile)
        if before is not None and before.metrics != profile.metrics:
            self.publish(self.list(profile_id=profile.profile_id))  # new ranges reach the stream

    @staticmethod
    def _profile(cur: psycopg.Cursor[Any], profile_id: str) -> Profile | None:
        row = cur.execute(
            "SELECT profile_id, device_type, description, metrics, expected_interval_s "
            "FROM profiles WHERE profile_id = %s",
            (profile_id,),
        ).fetchone()
        if row is None:
            return None
        return Profile(
            profile_id=row[0],
            device_type=row[1],
            description=row[2],
            metrics=row[3],
            expected_interval_s=row[4],
        )

    def get_profile(self, profile_id: str) -> Profile:
        with self.conn.cursor() as cur:
            profile = self._profile(cur, profile_id)
        if profile is None:
            raise UnknownProfile(profile_id)
        return profile

    def list_profiles(self) -> list[Profile]:
        ids = [str(r[0]) for r in self.conn.execute("SELECT profile_id FROM profiles ORDER BY 1")]
        return [self.get_profile(i) for i in ids]

    def put_department(self, department: Department, actor: str) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            row = cur.execute(
                "SELECT department_id, name FROM departments WHERE department_id = %s",
                (department.department_id,),
            ).fetchone()
            before = Department(department_id=row[0], name=row[1]) if row else None
            cur.execute(
                "INSERT INTO departments (department_id, name) VALUES (%s, %s) "
                "ON CONFLICT (department_id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()",
                (department.department_id, department.name),
            )
            self._audit(
                cur, actor, "put", "department", department.department_id, before, department
            )

    def list_departments(self) -> list[Department]:
        return [
            Department(department_id=r[0], name=r[1])
            for r in self.conn.execute("SELECT department_id, name FROM departments ORDER BY 1")
        ]

    # --- devices ------------------------------------------------------------------------------

    @staticmethod
    def _check_profiles(cur: psycopg.Cursor[Any], devices: Sequence[Device]) -> None:
        """Each device's profile exists and is of the device's type (a profile of another type
        would let it send another type's metrics, unchecked)."""
        wanted = sorted({d.profile_id for d in devices if d.profile_id is not None})
        if not wanted:
            return
        types = {
            str(pid): str(t)
            for pid, t in cur.execute(
                "SELECT profile_id, device_type FROM profiles WHERE profile_id = ANY(%s)",
                (wanted,),
            )
        }
        for d in devices:
            if d.profile_id is None:
                continue
            if d.profile_id not in types:
                raise UnknownProfile(d.profile_id)
            if types[d.profile_id] != d.device_type:
                raise ProfileMismatch(d.profile_id, types[d.profile_id], d.device_type)

    def add_many(self, devices: Sequence[Device], actor: str) -> list[tuple[str, str]]:
        """Register new devices and issue each an MQTT secret; returns (device id, secret)."""
        issued = [(d.device_id, new_secret()) for d in devices]
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                self._check_profiles(cur, devices)
                service = cur.execute(
                    "SELECT username FROM mqtt_credentials "
                    "WHERE role <> 'device' AND username = ANY(%s) LIMIT 1",
                    ([d.device_id for d in devices],),
                ).fetchone()
                if service is not None:  # a device of that name would take the login over
                    raise ServiceLogin(str(service[0]))
                self._check_paths(cur, devices, actor)
                cur.executemany(
                    f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    [
                        (
                            d.device_id,
                            d.device_type,
                            d.profile_id,
                            list(d.place_path),
                            d.state.value,
                            d.department,
                            list(d.tags),
                            d.lat,
                            d.lon,
                            d.updated_at,
                        )
                        for d in devices
                    ],
                )
                cur.executemany(
                    "INSERT INTO mqtt_credentials (username, password_hash, role, enabled) "
                    "VALUES (%s, %s, 'device', %s) ON CONFLICT (username) DO UPDATE SET "
                    "password_hash = EXCLUDED.password_hash, enabled = EXCLUDED.enabled, "
                    "updated_at = now() WHERE mqtt_credentials.role = 'device'",
                    [
                        (device_id, hash_secret(secret), d.state in MAY_CONNECT)
                        for (device_id, secret), d in zip(issued, devices, strict=True)
                    ],
                )
                cur.executemany(
                    "INSERT INTO audit_log (actor, action, entity, entity_id, after) "
                    "VALUES (%s, 'add', 'device', %s, %s)",
                    [(actor, d.device_id, _json(d)) for d in devices],
                )
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            raise _database_refused(exc, devices) from exc
        self.publish(devices)  # before the broker accepts the device: its readings come after
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
    ) -> ImportReport:
        """Add a parsed file's devices in chunks; a refused row is reported by its line, not fatal."""
        report = ImportReport(errors=list(parsed.errors))
        existing = {
            str(r[0])
            for r in self.conn.execute(
                "SELECT device_id FROM devices WHERE device_id = ANY(%s)",
                ([d.device_id for d in parsed.devices],),
            )
        }
        fresh: dict[str, tuple[int, Device]] = {}
        for line, d in zip(parsed.lines, parsed.devices, strict=True):
            if d.device_id in existing or d.device_id in fresh:
                report.errors.append(
                    RowError(line, "device_id", f"{d.device_id!r} is already registered")
                )
            else:
                fresh[d.device_id] = (line, d)
        todo = list(fresh.values())
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            try:
                report.added.extend(self.add_many([d for _, d in part], actor))
            except RegistryError:
                for line, d in part:  # find the culprits one by one; the rest still go in
                    try:
                        report.added.extend(self.add_many([d], actor))
                    except RegistryError as exc:
                        report.errors.append(RowError(line, exc.field, str(exc)))
            if progress is not None:
                progress(min(start + chunk, len(todo)), len(todo))
        report.errors.sort(key=lambda e: e.line)
        return report

    def import_csv(self, text: str, actor: str, progress: Progress | None = None) -> ImportReport:
        return self.import_devices(parse_device_csv(text, datetime.now(UTC)), actor, progress)

    def import_json(self, text: str, actor: str, progress: Progress | None = None) -> ImportReport:
        return self.import_devices(parse_device_json(text, datetime.now(UTC)), actor, progress)

    def _change(
        self, device_id: str, actor: str, action: str, sql: str, params: tuple[Any, ...]
    ) -> Device:
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                before = self._get(cur, device_id)
                row = cur.execute(
                    f"UPDATE devices SET {sql}, updated_at = now() WHERE device_id = %s "
                    f"RETURNING {DEVICE_COLUMNS}",
                    (*params, device_id),
                ).fetchone()
                assert row is not None
                after = _device(row)
                self._check_profiles(cur, [after])
                if action == "state":
                    cur.execute(
                        "UPDATE mqtt_credentials SET enabled = %s, updated_at = now() "
                        "WHERE username = %s",
                        (after.state in MAY_CONNECT, device_id),
                    )
                self._audit(cur, actor, action, "device", device_id, before, after)
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            raise _database_refused(exc, []) from exc
        self.publish([after])
        if action == "state":
            self._sync_broker()
        return after

    def update(self, device_id: str, changes: dict[str, Any], actor: str) -> Device:
        """Change a device's type, profile, department, tags or coordinates."""
        unknown = sorted(set(changes) - UPDATABLE)
        if unknown:
            raise RegistryError(
                f"{unknown[0]} cannot be updated here", unknown[0], changes[unknown[0]]
            )
        current = self.get(device_id)
        merged = Device.model_validate({**current.model_dump(), **changes})  # validates fields
        cols = sorted(changes)
        values = tuple(
            list(v) if isinstance(v, tuple) else v for v in (getattr(merged, c) for c in cols)
        )
        if not cols:
            return current
        return self._change(
            device_id, actor, "update", ", ".join(f"{c} = %s" for c in cols), values
        )

    def move(self, device_id: str, place_path: Sequence[str], actor: str) -> Device:
        current = self.get(device_id)
        moved = current.model_copy(update={"place_path": tuple(place_path)})
        Device.model_validate(moved.model_dump())
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._check_paths(cur, [moved], actor)
        return self._change(device_id, actor, "move", "place_path = %s", (list(place_path),))

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
        return self._change(device_id, actor, "state", "state = %s", (state.value,))

    def activate_on_first_reading(self, device_ids: Sequence[str], actor: str) -> list[Device]:
        """Make active those of ``device_ids`` that are still provisioned (audited as
        :data:`FIRST_READING`); returns them. Others (already active, suspended meanwhile,
        unknown) are left as they are. The liveness service calls this for devices it sees
        report, since a reading on ``readings`` has passed the stream's checks."""
        if not device_ids:
            return []
        with self.conn.transaction(), self.conn.cursor() as cur:
            before = {
                d.device_id: d
                for d in map(
                    _device,
                    cur.execute(
                        f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ANY(%s) "
                        "AND state = 'provisioned' FOR UPDATE",
                        (list(device_ids),),
                    ).fetchall(),
                )
            }
            rows = cur.execute(
                f"UPDATE devices SET state = 'active', updated_at = now() "
                f"WHERE device_id = ANY(%s) RETURNING {DEVICE_COLUMNS}",
                (list(before),),
            ).fetchall()
            activated = [_device(r) for r in rows]
            for after in activated:
                self._audit(
                    cur,
                    actor,
                    FIRST_READING,
                    "device",
                    after.device_id,
                    before[after.device_id],
                    after,
                )
        self.publish(activated)
        return activated

    def rotate_secrets(self, device_ids: Sequence[str], actor: str) -> list[tuple[str, str]]:
        """Issue new MQTT secrets (the old ones stop working at once); returns (id, secret)."""
        issued = [(device_id, new_secret()) for device_id in device_ids]
        with self.conn.transaction(), self.conn.cursor() as cur:
            for device_id, secret in issued:
                cur.execute(
                    "UPDATE mqtt_credentials SET password_hash = %s, updated_at = now() "
                    "WHERE username = %s AND role = 'device'",
                    (hash_secret(secret), device_id),
                )
                if cur.rowcount != 1:
                    raise UnknownDevice(device_id)
                self._audit(cur, actor, "rotate_secret", "device", device_id, None, None)
        self._sync_broker()
        return issued

    def _get(self, cur: psycopg.Cursor[Any], device_id: str) -> Device:
        row = cur.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = %s", (device_id,)
        ).fetchone()
        if row is None:
            raise UnknownDevice(device_id)
        return _device(row)

    def get(self, device_id: str) -> Device:
        with self.conn.cursor() as cur:
            return self._get(cur, device_id)

    def list(
        self,
        place: str | None = None,
        state: DeviceState | None = None,
        device_type: str | None = None,
        tag: str | None = None,
        profile_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Device]:
        """Devices, filtered by place subtree, state, type, tag and profile, in id order."""
        where, params = ["true"], []
        for clause, value in (
            ("%s = ANY(place_path)", place),
            ("state = %s", state.value if state is not None else None),
            ("device_type = %s", device_type),
            ("%s = ANY(tags)", tag),
            ("profile_id = %s", profile_id),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        query = (
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE {' AND '.join(where)} ORDER BY device_id"
        )
        if limit is not None:
            query += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return [_device(r) for r in self.conn.execute(query.encode(), params)]

    def audit_log(
        self, entity: str | None = None, entity_id: str | None = None, limit: int = 100
    ) -> builtins.list[AuditEntry]:
        where, params = ["true"], []
        if entity is not None:
            where.append("entity = %s")
            params.append(entity)
        if entity_id is not None:
            where.append("entity_id = %s")
            params.append(entity_id)
        rows = self.conn.execute(
            f"SELECT at, actor, action, entity, entity_id, before, after FROM audit_log "
            f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT {int(limit)}".encode(),
            params,
        ).fetchall()
        return [AuditEntry(*r) for r in rows]

    def set_service_credential(self, username: str, secret: str, actor: str = "system") -> None:
        """A service's own MQTT login (the gateway reads every device topic)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO mqtt_credentials (username, password_hash, role) "
                "VALUES (%s, %s, 'service') ON CONFLICT (username) DO UPDATE SET "
                "password_hash = EXCLUDED.password_hash, enabled = true, updated_at = now()",
                (username, hash_secret(secret)),
            )
            self._audit(cur, actor, "set_service_credential", "mqtt_login", username, None, None)
        self._sync_broker()
