"""``profiles`` (what a device type sends, its valid ranges and interval) and ``departments``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from cityvitals.contracts import Department, Device, Profile
from device_registry.errors import ProfileMismatch, UnknownProfile
from device_registry.repositories.audit import Cursor

__all__ = [
    "check_fit",
    "delete",
    "delete_department",
    "department_uses",
    "departments",
    "devices_of",
    "facts",
    "find",
    "find_department",
    "ids",
    "upsert",
    "upsert_department",
    "users_of_another_type",
]


def find(cur: Cursor, profile_id: str, lock: bool = False) -> Profile | None:
    """The profile, or None; ``lock``: its row locked until the transaction ends."""
    query = (
        "SELECT profile_id, device_type, description, metrics, expected_interval_s "
        "FROM profiles WHERE profile_id = %s" + (" FOR UPDATE" if lock else "")
    )
    row = cur.execute(query.encode(), (profile_id,)).fetchone()
    if row is None:
        return None
    return Profile(
        profile_id=row[0],
        device_type=row[1],
        description=row[2],
        metrics=row[3],
        expected_interval_s=row[4],
    )


def ids(cur: Cursor) -> list[str]:
    return [str(r[0]) for r in cur.execute("SELECT profile_id FROM profiles ORDER BY 1")]


def upsert(cur: Cursor, profile: Profile) -> None:
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


def users_of_another_type(cur: Cursor, profile: Profile) -> list[tuple[str, str]]:
    """Up to three (device id, device type) using the profile with another device type."""
    rows = cur.execute(
        "SELECT device_id, device_type FROM devices WHERE profile_id = %s "
        "AND device_type <> %s ORDER BY device_id LIMIT 3",
        (profile.profile_id, profile.device_type),
    ).fetchall()
    return [(str(d), str(t)) for d, t in rows]


def check_fit(cur: Cursor, devices: Sequence[Device]) -> None:
    """Each device's profile exists and is of the device's type (a profile of another type
    would let it send another type's metrics, unchecked)."""
    wanted = sorted({d.profile_id for d in devices if d.profile_id is not None})
    if not wanted:
        return
    types = {
        str(pid): str(t)
        for pid, t in cur.execute(
            "SELECT profile_id, device_type FROM profiles WHERE profile_id = ANY(%s)", (wanted,)
        )
    }
    for d in devices:
        if d.profile_id is None:
            continue
        if d.profile_id not in types:
            raise UnknownProfile(d.profile_id)
        if types[d.profile_id] != d.device_type:
            raise ProfileMismatch(d.profile_id, types[d.profile_id], d.device_type)


def facts(cur: Cursor) -> dict[str | None, dict[str, Any]]:
    """What a published device carries of its profile: the (min, max) of each metric and
    the expected reporting interval (the rules' staleness). Profiles are few, devices many."""
    return {
        str(pid): {
            "valid_ranges": {m: (spec.get("min"), spec.get("max")) for m, spec in metrics.items()},
            "expected_interval_s": float(interval),
        }
        for pid, metrics, interval in cur.execute(
            "SELECT profile_id, metrics, expected_interval_s FROM profiles"
        )
    }


def find_department(cur: Cursor, department_id: str, lock: bool = False) -> Department | None:
    """The department, or None; ``lock``: its row locked until the transaction ends."""
    query = "SELECT department_id, name FROM departments WHERE department_id = %s" + (
        " FOR UPDATE" if lock else ""
    )
    row = cur.execute(query.encode(), (department_id,)).fetchone()
    return Department(department_id=row[0], name=row[1]) if row else None


def upsert_department(cur: Cursor, department: Department) -> None:
    cur.execute(
        "INSERT INTO departments (department_id, name) VALUES (%s, %s) "
        "ON CONFLICT (department_id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()",
        (department.department_id, department.name),
    )


def departments(cur: Cursor) -> list[Department]:
    return [
        Department(department_id=r[0], name=r[1])
        for r in cur.execute("SELECT department_id, name FROM departments ORDER BY 1")
    ]


def devices_of(cur: Cursor, profile_id: str) -> list[str]:
    """The devices (of any state) whose profile it is."""
    rows = cur.execute(
        "SELECT device_id FROM devices WHERE profile_id = %s ORDER BY device_id", (profile_id,)
    )
    return [r[0] for r in rows]


def department_uses(cur: Cursor, department_id: str) -> tuple[list[str], list[str], list[str]]:
    """What names a department: its devices (of any state), its users, and the incidents not
    closed that it holds."""
    devices = [
        r[0]
        for r in cur.execute(
            "SELECT device_id FROM devices WHERE department = %s ORDER BY device_id",
            (department_id,),
        )
    ]
    users = [
        r[0]
        for r in cur.execute(
            "SELECT name FROM users WHERE department = %s ORDER BY name", (department_id,)
        )
    ]
    incidents = [
        r[0][:8]
        for r in cur.execute(
            "SELECT incident_id FROM incidents WHERE department = %s AND state <> 'closed' "
            "ORDER BY opened_at DESC",
            (department_id,),
        )
    ]
    return devices, users, incidents


def delete(cur: Cursor, profile_id: str) -> None:
    cur.execute("DELETE FROM profiles WHERE profile_id = %s", (profile_id,))


def delete_department(cur: Cursor, department_id: str) -> None:
    cur.execute("DELETE FROM departments WHERE department_id = %s", (department_id,))
