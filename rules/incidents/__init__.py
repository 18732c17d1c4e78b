"""Incidents, pure: correlation of alerts, outages and reports into incidents, routing to a
department and tier, the closed loop, limits and escalation, storm control.

See ``docs/incidents.md``. The stream (``streams/incidents.py``) feeds a :class:`Desk` one
:class:`~cityvitals.contracts.IncidentInput` at a time and publishes its :class:`Outcome`.
"""

from __future__ import annotations

from pathlib import Path

from rules.incidents.book import META_KEY, Book, Tracked, derive_id, resumed
from rules.incidents.config import (
    GENERAL,
    OUTAGE_CATEGORY,
    Category,
    IncidentConfig,
    Route,
    parse_incident_config,
    uncategorised,
    unlimited_tiers,
    unmatched_rules,
)
from rules.incidents.desk import Desk
from rules.incidents.dispatcher import PLATFORM, Outcome, Refusal
from rules.incidents.lifecycle import MOVES, Refused, move
from rules.incidents.routing import Assignment, route

__all__ = [
    "DEFAULT_INCIDENTS",
    "GENERAL",
    "META_KEY",
    "MOVES",
    "OUTAGE_CATEGORY",
    "PLATFORM",
    "Assignment",
    "Book",
    "Category",
    "Desk",
    "IncidentConfig",
    "Outcome",
    "Refusal",
    "Refused",
    "Route",
    "Tracked",
    "derive_id",
    "load_incident_config",
    "move",
    "parse_incident_config",
    "resumed",
    "route",
    "uncategorised",
    "unlimited_tiers",
    "unmatched_rules",
]

DEFAULT_INCIDENTS = Path(__file__).resolve().parent.parent / "incidents.yaml"


def load_incident_config(path: Path | None = None) -> IncidentConfig:
    """Read and validate an incident file (the shipped default when ``path`` is None)."""
    path = path or DEFAULT_INCIDENTS
    return parse_incident_config(path.read_text(encoding="utf-8"), source=str(path))
