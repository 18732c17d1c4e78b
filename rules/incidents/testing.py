"""Helpers to test incident configurations and the desk in a few lines.

Times are minutes after :data:`T0`; places are paths as tuples.

>>> desk = desk_with(EXAMPLE)
>>> out = desk.handle(alert("waterlogging-depth", "wl-1", STREET + ("g1",), level="orange"))
>>> out.dispatches[0].department
'street-ops'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cityvitals.contracts import (
    Action,
    Alert,
    AlertStatus,
    CitizenReport,
    Feedback,
    IncidentInput,
    OutageStatus,
    PlaceOutage,
    ReportChannel,
    Tier,
    WarningLevel,
)
from rules.incidents.book import derive_id
from rules.incidents.config import parse_incident_config
from rules.incidents.desk import Desk

__all__ = [
    "EXAMPLE",
    "STREET",
    "T0",
    "alert",
    "at",
    "desk_with",
    "feedback",
    "outage",
    "report",
    "tick",
]

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
STREET = ("sh", "pd", "lj")
"""A street: city sh, district pd, street lj."""

EXAMPLE = """
categories:
  flooding: {rules: [waterlogging-*, water-*, camera-waterlogging, street-flash-flood], group_by: street, window: 2h}
  fire: {rules: [camera-smoke-fire, smoke-fire-confirmed], group_by: grid, related: [gas], takes_over: [gas]}
  gas: {rules: [gas-*], group_by: grid, related: [fire]}
  device_health: {rules: ["*-missing"], group_by: street}
routes:
  - {category: flooding, tier: street, department: street-ops, up_to: orange}
  - {category: flooding, tier: district, department: water}
  - {category: flooding, tier: city, department: flood-control}
  - {category: fire, tier: district, department: fire-rescue}
  - {category: device_health, tier: district, department: iot-ops}
  - {category: "*", tier: city, department: city-ops}
sla:
  street: {accept: {blue: 30m, yellow: 20m, orange: 10m, red: 5m}, handle: {blue: 8h, yellow: 4h, orange: 2h, red: 1h}}
  district: {accept: {blue: 30m, yellow: 20m, orange: 10m, red: 5m}, handle: {blue: 8h, yellow: 4h, orange: 2h, red: 1h}}
  city: {accept: {blue: 30m, yellow: 20m, orange: 10m, red: 5m}, handle: {blue: 8h, yellow: 4h, orange: 2h, red: 1h}}
storm: {budget: {street: 3}, per: 10m}
verify: {quiet: 15m}
"""


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def desk_with(text: str = EXAMPLE) -> Desk:
    return Desk(parse_incident_config(text, source="<test>"))


def alert(
    rule_id: str,
    device_id: str,
    place_path: tuple[str, ...],
    minutes: float = 0,
    *,
    level: str = "yellow",
    status: str = "firing",
    revision: int = 0,
    episode: int = 0,
    resolution: str | None = None,
) -> IncidentInput:
    """An alert transition of ``rule_id`` at ``device_id``; ``episode`` tells episodes apart;
    a resolved one ends ``resolution`` (by default: cleared)."""
    return IncidentInput(
        alert=Alert(
            alert_id=derive_id(rule_id, device_id, episode),
            revision=revision,
            rule_id=rule_id,
            status=AlertStatus(status),
            level=WarningLevel(level),
            device_id=device_id,
            metric="m",
            value=1.0,
            threshold=1.0,
            place_path=place_path,
            started_at=at(minutes),
            ts=at(minutes),
            summary=f"{rule_id} at {device_id} ({level})",
            resolution=(resolution or "cleared") if status == "resolved" else None,
        )
    )


def feedback(
    incident_id: str,
    action: str,
    minutes: float = 0,
    *,
    actor: str = "dept",
    dispatch_id: str | None = None,
    department: str | None = None,
    tier: str | None = None,
    feedback_id: str | None = None,
    reason: str = "",
) -> IncidentInput:
    return IncidentInput(
        feedback=Feedback(
            feedback_id=feedback_id or derive_id(incident_id, action, minutes)[:16],
            incident_id=incident_id,
            dispatch_id=dispatch_id,
            action=Action(action),
            actor=actor,
            reason=reason,
            department=department,
            tier=Tier(tier) if tier else None,
            ts=at(minutes),
        )
    )


def report(
    category: str, place_path: tuple[str, ...], text: str, minutes: float = 0, n: int = 0
) -> IncidentInput:
    return IncidentInput(
        report=CitizenReport(
            report_id=derive_id("report", n, text),
            channel=ReportChannel.HOTLINE,
            category=category,
            place_path=place_path,
            text=text,
            reported_at=at(minutes),
        )
    )


def outage(
    place_path: tuple[str, ...],
    minutes: float = 0,
    *,
    status: str = "started",
    n: int = 0,
    silent: tuple[str, ...] = (),
    total: int = 10,
) -> IncidentInput:
    """An outage of ``total`` devices at ``place_path``: 8 silent, or as many as ``silent``
    names."""
    return IncidentInput(
        outage=PlaceOutage(
            outage_id=derive_id("outage", place_path, n),
            place_id=place_path[-1],
            place_path=place_path,
            status=OutageStatus(status),
            devices_total=total,
            devices_silent=len(silent) if silent else min(8, total),
            started_at=at(minutes),
            ts=at(minutes),
            devices=silent,
        )
    )


def tick(minutes: float) -> IncidentInput:
    return IncidentInput(tick=at(minutes))
