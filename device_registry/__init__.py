"""Devices, places and their MQTT credentials; every change published on ``devices``."""

from device_registry.credentials import BrokerFiles, hash_secret, new_secret, verify_secret
from device_registry.registry import (
    CSV_COLUMNS,
    DeviceExists,
    ImportReport,
    Registry,
    RowError,
    UnknownDevice,
    parse_device_csv,
)

__all__ = [
    "CSV_COLUMNS",
    "BrokerFiles",
    "DeviceExists",
    "ImportReport",
    "Registry",
    "RowError",
    "UnknownDevice",
    "hash_secret",
    "new_secret",
    "parse_device_csv",
    "verify_secret",
]
