"""Citizen reports and their incidents as Open311 GeoReport v2 service requests, and the
services (incident categories) they belong to; read from the tables the sinks write."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from cityvitals.contracts import IncidentState
from sinks.incidents import Conn, fetch

__all__ = ["ServiceRequest", "ServiceType", "open311_requests", "open311_services"]


class ServiceRequest(BaseModel):
    """An Open311 GeoReport v2 service request: a citizen report and its incident's state."""

    model_config = ConfigDict(frozen=True)

    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str
    service_code: str
    service_name: str
    description: str
    agency_responsible: str | None
    service_notice: str | None = None
    requested_datetime: datetime
    updated_datetime: datetime
    expected_datetime: datetime | None
    address_id: str
    """The report's place id."""
    lat: float | None
    long: float | None
    media_url: str | None


class ServiceType(BaseModel):
    """An Open311 GeoReport v2 service: one incident category."""

    model_config = ConfigDict(frozen=True)

    service_code: str
    service_name: str
    description: str
    metadata: bool = False
    type: Literal["realtime", "batch", "blackbox"] = "realtime"
    keywords: str = ""
    group: str = "incidents"


def service_name(category: str, titles: Mapping[str, str] | None = None) -> str:
    """How people name a category: its title in the configuration, else its id in words.

    >>> service_name("street_flooding"), service_name("noise", {"noise": "Noise at night"})
    ('Street flooding', 'Noise at night')
    """
    title = (titles or {}).get(category)
    return title or category.replace("_", " ").replace("-", " ").capitalize()


OPEN311 = """
SELECT r.report_id, r.category, r.text, r.photo_ref, r.reported_at, r.lat, r.lon,
       r.place_path[cardinality(r.place_path)] AS place_id, i.incident_id, i.state,
       i.department, i.tier, i.updated_at, i.handle_by, p.lat AS place_lat, p.lon AS place_lon
  FROM reports r
  LEFT JOIN LATERAL (
       SELECT * FROM incidents i WHERE i.reports @> ARRAY[r.report_id]
        ORDER BY i.updated_at DESC LIMIT 1) i ON true
  LEFT JOIN places p ON p.place_id = r.place_path[cardinality(r.place_path)]
"""


def _notes(row: Mapping[str, Any]) -> str:
    if row["incident_id"] is None:
        return "received; not yet part of an incident"
    note = f"incident {row['incident_id']} is {row['state']}"
    if row["department"]:
        note += f" ({row['department']}, {row['tier']} tier)"
    return note


def open311_requests(
    conn: Conn,
    zone: tzinfo,
    *,
    status: Literal["open", "closed"] | None = None,
    service_code: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    titles: Mapping[str, str] | None = None,
    limit: int = 1000,
) -> list[ServiceRequest]:
    """Citizen reports, newest first, as service requests with their incident's state (closed
    when the incident is); times in ``zone``. A report's position is its own, else its place's."""
    clauses: list[str] = []
    params: list[object] = []
    if status == "closed":
        clauses.append("i.state = 'closed'")
    elif status == "open":
        clauses.append("i.state IS DISTINCT FROM 'closed'")
    for clause, value in (
        ("r.category = %s", service_code),
        ("r.reported_at >= %s", start),
        ("r.reported_at < %s", end),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    query = OPEN311 + (" WHERE " + " AND ".join(clauses) if clauses else "")
    query += " ORDER BY r.reported_at DESC, r.report_id LIMIT %s"
    params.append(limit)
    out = []
    for row in fetch(conn, query, *params):
        closed = row["state"] == IncidentState.CLOSED.value
        updated = row["updated_at"] or row["reported_at"]
        out.append(
            ServiceRequest(
                service_request_id=row["report_id"],
                status="closed" if closed else "open",
                status_notes=_notes(row),
                service_code=row["category"],
                service_name=service_name(row["category"], titles),
                description=row["text"],
                agency_responsible=row["department"],
                requested_datetime=row["reported_at"].astimezone(zone),
                updated_datetime=updated.astimezone(zone),
                expected_datetime=None
                if row["handle_by"] is None or closed
                else row["handle_by"].astimezone(zone),
                address_id=row["place_id"],
                lat=row["lat"] if row["lat"] is not None else row["place_lat"],
                long=row["lon"] if row["lon"] is not None else row["place_lon"],
                media_url=row["photo_ref"],
            )
        )
    return out


def open311_services(conn: Conn, categories: Mapping[str, str] | None = None) -> list[ServiceType]:
    """One service per incident category. ``categories`` (id -> title) comes from the incident
    configuration file; without it, the categories that reports and incidents have used."""
    if categories is None:
        rows = conn.execute(
            "SELECT category FROM reports UNION SELECT category FROM incidents ORDER BY 1"
        ).fetchall()
        categories = {str(row[0]): "" for row in rows}
    return [
        ServiceType(
            service_code=code,
            service_name=service_name(code, categories),
            description=f"Report a problem of the category {code!r}; it joins the incidents "
            "of its place and is dispatched to the department responsible.",
        )
        for code in sorted(categories)
    ]
