"""Devices, places, profiles, departments and MQTT credentials; every change audited and
published on ``devices``."""

from device_registry.credentials import BrokerFiles, hash_secret, new_secret, verify_secret
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
    Fixes,
    registration_notes,
    unjudged_type,
)
from device_registry.registry import (
    UPDATABLE,
    AuditEntry,
    DeviceExists,
    ImportReport,
    PlaceConflict,
    ProfileMismatch,
    Registry,
    RegistryError,
    ServiceLogin,
    UnknownDevice,
    UnknownPlace,
    UnknownProfile,
    UnknownUser,
)

__all__ = [
    "API_FIXES",
    "CSV_COLUMNS",
    "UPDATABLE",
    "AuditEntry",
    "BrokerFiles",
    "DeviceExists",
    "Fixes",
    "ImportReport",
    "ParsedFile",
    "PlaceConflict",
    "ProfileMismatch",
    "Registry",
    "RegistryError",
    "RowError",
    "ServiceLogin",
    "UnknownDevice",
    "UnknownPlace",
    "UnknownProfile",
    "UnknownUser",
    "export_csv",
    "hash_secret",
    "new_secret",
    "parse_device_csv",
    "parse_device_json",
    "registration_notes",
    "unjudged_type",
    "verify_secret",
]
