"""``devices``: each device's type, profile, place, state and tags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cityvitals.contracts import Device, DeviceState
from device_registry.errors import UnknownDevice
from device_registry.repositories.audit import Cursor

__all__ = [
    "DeviceFilter",
    "activate",
    "get",
    "insert",
    "known_ids",
    "move_under",
    "select",
    "types",
    "update",
]

COLUMNS = (
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


def get(cur: Cursor, device_id: str) -> Device:
    row = cur.execute(
        f"SELECT {COLUMNS} FROM devices WHERE device_id = %s", (device_id,)
    ).fetchone()
    if row is None:
        raise UnknownDevice(device_id)
    return _device(row)


def types(cur: Cursor) -> set[str]:
    """The device types of the registered devices and profiles."""
    rows = cur.execute("SELECT device_type FROM devices UNION SELECT device_type FROM profiles")
    return {str(r[0]) for r in rows}


def unprofiled_types(cur: Cursor) -> set[str]:
    """The device types of the registered devices that have no profile."""
    rows = cur.execute("SELECT DISTINCT device_type FROM devices WHERE profile_id IS NULL")
    return {str(r[0]) for r in rows}


def known_ids(cur: Cursor, device_ids: Sequence[str]) -> set[str]:
    rows = cur.execute(
        "SELECT device_id FROM devices WHERE device_id = ANY(%s)", (list(device_ids),)
    )
    return {str(r[0]) for r in rows}


def insert(cur: Cursor, devices: Sequence[Device]) -> None:
    cur.executemany(
        f"INSERT INTO devices ({COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
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


def update(cur: Cursor, device_id: str, columns: dict[str, Any]) -> Device:
    """Set the given columns of one device (it exists: the caller read it); returns it."""
    assignments = ", ".join(f"{c} = %s" for c in columns)
    values = tuple(list(v) if isinstance(v, tuple) else v for v in columns.values())
    row = cur.execute(
        f"UPDATE devices SET {assignments}, updated_at = now() WHERE device_id = %s "
        f"RETURNING {COLUMNS}",
        (*values, device_id),
    ).fetchone()
    assert row is not None
    return _device(row)


def move_under(cur: Cursor, old: list[str], new: list[str]) -> list[Device]:
    """Every device at or under the place path ``old`` now sits at or under ``new``."""
    n = len(old)
    rows = cur.execute(
        f"UPDATE devices SET place_path = %s || place_path[%s:], updated_at = now() "
        f"WHERE place_path[1:%s] = %s RETURNING {COLUMNS}",
        (new, n + 1, n, old),
    ).fetchall()
    return [_device(r) for r in rows]


def activate(cur: Cursor, device_ids: Sequence[str]) -> list[tuple[Device, Device]]:
    """Make active those of the devices still provisioned; (before, after) of each."""
    before = {
        d.device_id: d
        for d in map(
            _device,
            cur.execute(
                f"SELECT {COLUMNS} FROM devices WHERE device_id = ANY(%s) "
                "AND state = 'provisioned' FOR UPDATE",
                (list(device_ids),),
            ).fetchall(),
        )
    }
    rows = cur.execute(
        f"UPDATE devices SET state = 'active', updated_at = now() "
        f"WHERE device_id = ANY(%s) RETURNING {COLUMNS}",
        (list(before),),
    ).fetchall()
    return [(before[a.device_id], a) for a in map(_device, rows)]


@dataclass(frozen=True)
class DeviceFilter:
    """Which devices to list: under a place, in a state, of a type, with a tag and profile."""

    place: str | None = None
    state: DeviceState | None = None
    device_type: str | None = None
    tag: str | None = None
    profile_id: str | None = None


def select(cur: Cursor, where: DeviceFilter, limit: int | None, offset: int) -> list[Device]:
    """Devices matching every filter given, in id order."""
    clauses, params = ["true"], []
    for clause, value in (
        ("%s = ANY(place_path)", where.place),
        ("state = %s", where.state.value if where.state is not None else None),
        ("device_type = %s", where.device_type),
        ("%s = ANY(tags)", where.tag),
        ("profile_id = %s", where.profile_id),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    query = f"SELECT {COLUMNS} FROM devices WHERE {' AND '.join(clauses)} ORDER BY device_id"
    if limit is not None:
        query += f" LIMIT {int(limit)} OFFSET {int(offset)}"
    return [_device(r) for r in cur.execute(query.encode(), params)]
