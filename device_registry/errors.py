"""What the registry refuses, each naming the field and value at fault."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg

from cityvitals.contracts import Device

__all__ = [
    "BadLogin",
    "DeviceExists",
    "InUse",
    "PlaceConflict",
    "ProfileMismatch",
    "RegistryError",
    "ServiceLogin",
    "UnknownDevice",
    "UnknownPlace",
    "UnknownProfile",
    "UnknownUser",
    "UserDisabled",
    "database_refused",
]


class RegistryError(ValueError):
    """A request the registry refuses; ``field`` and ``value`` name what is wrong."""

    def __init__(self, message: str, field: str, value: object) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class InUse(RegistryError):
    """A removal refused while something still uses what was to be removed (HTTP 409)."""

    def __init__(self, what: str, field: str, value: str, uses: Sequence[str]) -> None:
        super().__init__(
            f"{what} cannot be removed while {'; '.join(uses)}: move or remove them first",
            field,
            value,
        )
        self.uses = list(uses)


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


class BadLogin(RegistryError):
    """A device id that cannot be an MQTT login (``reason``: why)."""

    def __init__(self, device_id: str, reason: str) -> None:
        super().__init__(reason, "device_id", device_id)


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


class UserDisabled(RegistryError):
    def __init__(self, name: str, since: datetime) -> None:
        super().__init__(
            f"user {name!r} is disabled (since {since.isoformat(timespec='seconds')}): a token "
            "of theirs would never log in; add a user of another name",
            "name",
            name,
        )


class UnknownUser(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no user named {name!r}")
        self.name = name


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


def database_refused(exc: psycopg.Error, devices: Sequence[Device]) -> RegistryError:
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
