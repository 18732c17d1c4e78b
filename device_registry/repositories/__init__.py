"""The registry's tables, one module each: the SQL of the registry lives here and nowhere else.

Each function takes a cursor, so the :class:`~device_registry.Registry` facade decides what
one transaction holds. ``devices`` (devices), ``places`` (places), ``profiles`` (profiles and
departments), ``credentials`` (mqtt_credentials) and ``audit`` (audit_log).
"""

from device_registry.repositories import audit, credentials, devices, places, profiles

__all__ = ["Cursor", "audit", "credentials", "devices", "places", "profiles"]

from device_registry.repositories.audit import Cursor
