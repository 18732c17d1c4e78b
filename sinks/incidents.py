"""Reading incidents back from the database, for the CLI and the API (the sinks write the
tables: :mod:`sinks.incident_sinks`).

- :func:`list_incidents`: incidents, newest first, filtered by state, place, category,
  department, level and time;
- :func:`incident_detail`: one incident with its transitions, dispatch orders, escalations,
  its alerts' rows (``alerts``) and its citizen reports;
- :func:`performance`: per department and tier over a period, the dispatches, how many were
  accepted and handled in time, the incidents dispatched and closed; the closure rate
  (closed / dispatched incidents) and the on-time rate (dispatches accepted by ``accept_by``
  and handled by ``handle_by`` / dispatches), flagged under the closure target (85%);
- :func:`recent_steps`: the steps taken since a time, for a screen that follows them.

Open311 exports: :mod:`sinks.open311`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, ValidationError

from cityvitals.contracts import (
    CitizenReport,
    DispatchKind,
    DispatchOrder,
    Escalation,
    Incident,
    IncidentState,
    IncidentTransition,
    Tier,
    WarningLevel,
)
from cityvitals.topics import Topic
from sinks.alerts import AlertRow, alert_rows, place_clause
from sinks.deadletters import owed
from sinks.ids import AmbiguousId, find_id, is_short_id
from sinks.webhook import notice

__all__ = [
    "CLOSURE_TARGET",
    "AlertRow",
    "AmbiguousIncident",
    "CameraSnapshot",
    "IncidentDetail",
    "IncidentFilter",
    "OpenWork",
    "Performance",
    "Undelivered",
    "UnknownIncident",
    "camera_snapshots",
    "find_incident",
    "get_incident",
    "incident_detail",
    "last_reopened",
    "list_incidents",
    "open_work",
    "performance",
    "recent_steps",
    "superseded_dispatch",
    "undelivered",
]

CLOSURE_TARGET = 0.85
"""Cities working this way hold departments to at least 85% closure (docs/incidents.md)."""

Conn = psycopg.Connection[Any]


class UnknownIncident(LookupError):
    def __init__(self, incident_id: str, hint: str = "") -> None:
        super().__init__(f"incident {incident_id!r} does not exist{hint}")
        self.incident_id = incident_id


class AmbiguousIncident(AmbiguousId):
    """A start of an id that several incidents' ids have."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        super().__init__("incident", prefix, matches)


@dataclass(frozen=True)
class IncidentFilter:
    """Which incidents :func:`list_incidents` gives; every field narrows (None: any)."""

    open_only: bool = False
    state: IncidentState | None = None
    place: str | None = None
    """A place id (incidents at or under it) or a place path prefix ``city/district``."""
    category: str | None = None
    department: str | None = None
    level: WarningLevel | None = None
    """This level or higher."""
    since: datetime | None = None
    """Incidents updated at or after this time."""
    limit: int | None = 100
    offset: int = 0
    """Matches skipped first, in the listing's order."""


def list_incidents(conn: Conn, where: IncidentFilter = IncidentFilter()) -> list[Incident]:
    """The incidents that match, newest (last opened) first."""
    clauses: list[str] = []
    params: list[object] = []
    if where.open_only:
        clauses.append("state <> 'closed'")
    for column, value in (
        ("state", None if where.state is None else where.state.value),
        ("category", where.category),
        ("department", where.department),
    ):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if where.level is not None:  # this level or higher, as for alerts
        clauses.append("level = ANY(%s)")
        params.append(where.level.and_above())
    if where.place:
        clause, values = place_clause(where.place)
        clauses.append(clause)
        params.extend(values)
    if where.since is not None:
        clauses.append("updated_at >= %s")
        params.append(where.since)
    query = "SELECT * FROM incidents"
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    query += " ORDER BY opened_at DESC, incident_id"
    if where.limit is not None:
        query += " LIMIT %s"
        params.append(where.limit)
    if where.offset:
        query += " OFFSET %s"
        params.append(where.offset)
    with conn.cursor(row_factory=dict_row) as cur:
        return [Incident.model_validate(row) for row in cur.execute(query.encode(), params)]


@dataclass(frozen=True)
class CameraSnapshot:
    """A camera event behind one of an incident's alerts that kept a snapshot: what the
    camera saw (the image is in the object store under ``snapshot_ref``)."""

    camera_id: str
    event_type: str
    ts: datetime
    value: float
    confidence: float
    snapshot_ref: str


SNAPSHOTS_SHOWN = 20
"""The newest camera snapshots an incident's detail lists."""

SNAPSHOT_LEAD = timedelta(minutes=5)
"""How long before an alert's start its cameras' snapshots count (a rule that waits ``for`` a
while starts its alert after the events that made it)."""


class Undelivered(BaseModel):
    """A dispatch order or escalation of an incident that the notifier gave up delivering to
    a webhook, and that ``cityvitals resend`` has not delivered since: the department may not
    know."""

    model_config = ConfigDict(frozen=True)

    event: str
    """``dispatch`` or ``escalation``."""
    delivery_id: str
    """Its ``X-Cityvitals-Delivery`` (a dispatch order's ``dispatch_id``)."""
    kind: str | None
    """A dispatch order's kind (order, escalation, reassignment, ...); None for an escalation."""
    department: str | None
    """Its department (an escalation past the top tier may name none)."""
    url: str
    """The webhook, without a login or key."""
    outcome: str
    """The last answer and the tries (``HTTP 503 after 700 attempts over 6 h``)."""
    given_up_at: datetime


class IncidentDetail(BaseModel):
    """One incident and everything stored about it, each list oldest first (the camera
    snapshots newest first)."""

    model_config = ConfigDict(frozen=True)

    incident: Incident
    transitions: tuple[IncidentTransition, ...]
    dispatches: tuple[DispatchOrder, ...]
    escalations: tuple[Escalation, ...]
    alerts: tuple[AlertRow, ...]
    reports: tuple[CitizenReport, ...]
    camera_snapshots: tuple[CameraSnapshot, ...] = ()
    """The snapshots of the camera events behind its alerts (of the alert's own camera and
    event type; a composite alert's: of its evidence), from a little before each alert
    started until it resolved; :data:`SNAPSHOTS_SHOWN` at most."""
    undelivered: tuple[Undelivered, ...] = ()
    """Its dispatch orders and escalations a webhook never got (:func:`undelivered`)."""


_KIND_RANK = {DispatchKind.ORDER: 0, DispatchKind.DIGEST: 0, DispatchKind.REASSIGNMENT: 1}


def withdrawn_first(orders: Iterable[DispatchOrder]) -> tuple[DispatchOrder, ...]:
    """Dispatches in time order, and within one instant as they were sent: a withdrawal of an
    earlier order first, then each order followed by its own withdrawal (an order sent and
    sent up at once: order, withdrawal, escalation; withdrawn orders before the one that
    stands, first orders before reassignments before escalations), revisions last."""
    out: list[DispatchOrder] = []
    by_ts: dict[datetime, list[DispatchOrder]] = {}
    for order in orders:
        by_ts.setdefault(order.ts, []).append(order)
    for group in by_ts.values():
        ids = {o.dispatch_id for o in group}
        ends = {o.withdraws: o for o in group if o.kind is DispatchKind.WITHDRAWAL and o.withdraws}
        sent = [o for o in group if o.kind not in (DispatchKind.WITHDRAWAL, DispatchKind.REVISION)]
        sent.sort(key=lambda o: (o.dispatch_id not in ends, _KIND_RANK.get(o.kind, 2)))
        out += [w for i, w in ends.items() if i not in ids]  # an order of an earlier instant
        for order in sent:
            out.append(order)
            if order.dispatch_id in ends:
                out.append(ends[order.dispatch_id])
        out += [o for o in group if o.kind is DispatchKind.WITHDRAWAL and not o.withdraws]
        out += [o for o in group if o.kind is DispatchKind.REVISION]
    return tuple(out)


def undelivered(conn: Conn, incident_id: str) -> list[Undelivered]:
    """The incident's dispatch orders (digests listing it included) and escalations the
    notifier gave up on, not delivered since, the oldest first."""
    found = []
    for one in owed(conn, holding=incident_id):
        letter = one.letter
        raw = base64.b64decode(letter.payload_b64)
        outcome = letter.reason.split(": ", 1)[-1]
        try:
            order = DispatchOrder.model_validate_json(raw)
        except ValidationError:
            try:
                raised = Escalation.model_validate_json(raw)
            except ValidationError:
                continue  # neither (held the id by chance): not this incident's
            if raised.incident_id != incident_id:
                continue
            delivery = notice(Topic.ESCALATIONS, raw).delivery_id
            found.append(
                Undelivered(
                    event="escalation",
                    delivery_id=delivery,
                    kind=None,
                    department=raised.department,
                    url=one.url,
                    outcome=outcome,
                    given_up_at=letter.received_at,
                )
            )
            continue
        if incident_id != order.incident_id and incident_id not in order.incidents:
            continue
        found.append(
            Undelivered(
                event="dispatch",
                delivery_id=order.dispatch_id,
                kind=order.kind.value,
                department=order.department,
                url=one.url,
                outcome=outcome,
                given_up_at=letter.received_at,
            )
        )
    return found


def camera_snapshots(conn: Conn, alerts: Sequence[AlertRow]) -> list[CameraSnapshot]:
    """What the cameras behind ``alerts`` saw while they fired (:attr:`IncidentDetail.camera_snapshots`)."""
    found: dict[tuple[str, str, datetime], CameraSnapshot] = {}
    for a in alerts:
        kind = a.metric.removeprefix("camera.") if a.metric.startswith("camera.") else None
        if kind is None and not a.evidence:
            continue  # a sensor's own alert: no camera is behind it (one query less each)
        cameras = [a.device_id, *a.evidence]
        rows = fetch(
            conn,
            "SELECT camera_id, event_type, ts, value, confidence, snapshot_ref FROM camera_events "
            "WHERE camera_id = ANY(%s) AND ts >= %s AND ts <= %s AND snapshot_ref IS NOT NULL "
            "AND (%s::text IS NULL OR event_type = %s) ORDER BY ts DESC LIMIT %s",
            cameras,
            a.started_at - SNAPSHOT_LEAD,
            a.resolved_at or datetime.now(UTC),
            kind,
            kind,
            SNAPSHOTS_SHOWN,
        )
        for row in rows:
            found[(row["camera_id"], row["event_type"], row["ts"])] = CameraSnapshot(**row)
    return sorted(found.values(), key=lambda c: c.ts, reverse=True)[:SNAPSHOTS_SHOWN]


def fetch(conn: Conn, query: str, *params: object) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query.encode(), params).fetchall()


def find_incident(conn: Conn, given: str) -> str:
    """The id of the incident whose id is ``given`` or starts with it (:func:`sinks.ids.find_id`);
    raises :class:`UnknownIncident` or :class:`AmbiguousIncident`."""
    return find_id(conn, given, "incidents", "incident_id", UnknownIncident, AmbiguousIncident)


def last_reopened(conn: Conn, incident_ids: Sequence[str]) -> dict[str, datetime]:
    """When each of these incidents last reopened (one that never did is left out)."""
    rows = fetch(
        conn,
        "SELECT incident_id, max(ts) AS at FROM incident_transitions"
        " WHERE incident_id = ANY(%s) AND action = 'reopen' GROUP BY incident_id",
        list(incident_ids),
    )
    return {r["incident_id"]: r["at"] for r in rows}


def get_incident(conn: Conn, incident_id: str) -> Incident:
    """The incident as stored (its latest revision); raises :class:`UnknownIncident`."""
    found = fetch(conn, "SELECT * FROM incidents WHERE incident_id = %s", incident_id)
    if not found:
        short = is_short_id(incident_id)  # the start of an id, as the CLI and 'up' show it
        raise UnknownIncident(incident_id, " (give its whole id: 32 hex digits)" if short else "")
    return Incident.model_validate(found[0])


def superseded_dispatch(conn: Conn, incident: Incident, dispatch_id: str | None) -> str | None:
    """Why an answer naming ``dispatch_id`` would be refused as naming an earlier dispatch of
    ``incident`` (neither its current order nor a revision of it), or None. An id the
    database does not hold for it is left to the incident stage: it may be an order sent a
    moment ago and not stored yet."""
    if dispatch_id is None or dispatch_id == incident.dispatch_id:
        return None
    rows = fetch(
        conn,
        "SELECT revises FROM dispatches WHERE dispatch_id = %s "
        "AND (incident_id = %s OR incidents @> ARRAY[%s]::text[])",
        dispatch_id,
        incident.incident_id,
        incident.incident_id,
    )
    if not rows or rows[0]["revises"] == incident.dispatch_id:
        return None
    return (
        f"dispatch {dispatch_id} is an earlier dispatch of incident {incident.incident_id}; "
        f"its current order is {incident.dispatch_id or 'none'}"
    )


def incident_detail(conn: Conn, incident_id: str) -> IncidentDetail:
    """The incident, its transitions, dispatches (also digests listing it), escalations, its
    alerts' rows and its reports; raises :class:`UnknownIncident`."""
    incident = get_incident(conn, incident_id)
    transitions = fetch(
        conn,
        "SELECT * FROM incident_transitions WHERE incident_id = %s ORDER BY revision",
        incident_id,
    )
    # At one instant: a withdrawal before the order after it, a revision after the order,
    # revisions by their level (a level that rose twice in a second reads in the order it rose).
    dispatches = fetch(
        conn,
        "SELECT * FROM dispatches WHERE incident_id = %s OR incidents @> ARRAY[%s]::text[] "
        "ORDER BY ts, kind <> 'withdrawal', kind = 'revision', "
        "array_position(ARRAY['blue', 'yellow', 'orange', 'red'], level), dispatch_id",
        incident_id,
        incident_id,
    )
    escalations = fetch(
        conn, "SELECT * FROM escalations WHERE incident_id = %s ORDER BY ts", incident_id
    )
    alerts = alert_rows(conn, list(incident.alerts), latest=True)
    reports = fetch(
        conn,
        "SELECT * FROM reports WHERE report_id = ANY(%s) ORDER BY reported_at, report_id",
        list(incident.reports),
    )
    return IncidentDetail(
        incident=incident,
        transitions=tuple(IncidentTransition.model_validate(t) for t in transitions),
        dispatches=withdrawn_first(DispatchOrder.model_validate(d) for d in dispatches),
        escalations=tuple(Escalation.model_validate(e) for e in escalations),
        alerts=tuple(alerts),
        reports=tuple(CitizenReport.model_validate(r) for r in reports),
        camera_snapshots=tuple(camera_snapshots(conn, alerts)),
        undelivered=tuple(undelivered(conn, incident_id)),
    )


@dataclass(frozen=True)
class OpenWork:
    """What is still going on at or under a place: its incidents not closed, newest first
    (id, category, level), and its alerts firing."""

    incidents: list[tuple[str, str, str]]
    firing_alerts: int

    def __bool__(self) -> bool:
        return bool(self.incidents or self.firing_alerts)

    def describe(self) -> str:
        """``2 open incidents (c7247071 flooding orange, ...) and 3 firing alerts``."""
        parts = []
        if self.incidents:
            named = ", ".join(f"{i[:8]} {c} {lv}" for i, c, lv in self.incidents[:5])
            more = f", {len(self.incidents) - 5} more" if len(self.incidents) > 5 else ""
            n = len(self.incidents)
            parts.append(f"{n} open incident{'s' if n != 1 else ''} ({named}{more})")
        if self.firing_alerts:
            n = self.firing_alerts
            parts.append(f"{n} firing alert{'s' if n != 1 else ''}")
        return " and ".join(parts) or "nothing open"


def open_work(conn: Conn, path: Sequence[str]) -> OpenWork:
    """The incidents not closed and the alerts firing at or under the place at ``path``."""
    n, at = len(path), list(path)
    incidents = conn.execute(
        "SELECT incident_id, category, level FROM incidents WHERE state <> 'closed'"
        " AND cardinality(place_path) >= %s AND place_path[1:%s] = %s ORDER BY opened_at DESC",
        (n, n, at),
    ).fetchall()
    row = conn.execute(
        "SELECT count(*) FROM alerts WHERE status = 'firing'"
        " AND cardinality(place_path) >= %s AND place_path[1:%s] = %s",
        (n, n, at),
    ).fetchone()
    return OpenWork(
        [(str(i), str(c), str(lv)) for i, c, lv in incidents], int(row[0]) if row else 0
    )


@dataclass(frozen=True)
class Performance:
    """How a department did at one tier (``tier`` None: over all its tiers) over a period.

    A digest counts as one dispatch per incident it lists; a withdrawal or a revision is no
    order and is not counted, but an order is judged by the limits of its latest revision (the
    level rose within the tier's reach). A dispatch is the incident's order until the
    withdrawal naming it, the incident's next dispatch or its close. It is accepted (handled)
    in time when the incident's ``accept`` (``handled``) step came by ``accept_by``
    (``handle_by``) while it was the order; on time when both. One not on time is judged only once its deadline has passed
    while it was the order: until then it is ``running``, and one that stopped being the
    order before its deadline (reassigned away, rejected, closed as a false alarm) is
    ``withdrawn``; neither counts against the department, nor does an incident all of whose
    orders to it were. An incident counts as closed for the department and tier that held it
    when it closed."""

    department: str
    tier: Tier | None
    dispatches: int
    accepted_on_time: int
    handled_on_time: int
    on_time: int
    """Accepted and handled in time."""
    running: int
    """Still the incident's order, its deadline ahead."""
    withdrawn: int
    """No longer the order, taken away before its deadline."""
    incidents: int
    """Incidents dispatched to it."""
    incidents_judged: int
    """Of those, the ones it is judged on: not those whose every order to it was withdrawn
    or is still running, nor those it handled that wait for verification (it did its part;
    the closing is not yet due)."""
    closed: int
    """Of those, the ones closed while it held them."""
    closure_rate: float | None
    """Closed of the incidents judged."""
    on_time_rate: float | None
    """On time of the dispatches judged (neither running nor withdrawn)."""
    flagged: bool
    """Closure rate under the target."""
    accept_median_s: float | None = None
    """Seconds from an order to the incident's ``accept`` step while it was the order (late
    ones included): the median of the orders accepted; None when none was."""
    accept_p90_s: float | None = None
    """Their 90th percentile (interpolated)."""
    handle_median_s: float | None = None
    """Seconds from an order to the ``handled`` step while it was the order, likewise."""
    handle_p90_s: float | None = None

    @property
    def judged(self) -> int:
        """The dispatches judged on time or late."""
        return self.dispatches - self.running - self.withdrawn


PERFORMANCE = """
WITH pairs AS (  -- each order to each incident, with its limits as last revised
    SELECT d.dispatch_id, d.department, d.tier, coalesce(r.accept_by, d.accept_by) AS accept_by,
           coalesce(r.handle_by, d.handle_by) AS handle_by, d.ts, x.incident_id
      FROM dispatches d
     CROSS JOIN LATERAL unnest(CASE WHEN cardinality(d.incidents) > 0 THEN d.incidents
                                    ELSE ARRAY[d.incident_id] END) AS x(incident_id)
      LEFT JOIN LATERAL (
           SELECT r.accept_by, r.handle_by FROM dispatches r
            WHERE r.revises = d.dispatch_id AND r.incident_id = x.incident_id
            ORDER BY r.ts DESC, r.accept_by, r.handle_by LIMIT 1) r ON true  -- (revisions only
                                                          -- tighten: in one instant, the soonest)
     WHERE d.ts >= %(since)s AND d.ts < %(until)s AND d.kind NOT IN ('withdrawal', 'revision')
), ended AS (  -- when each stopped being the incident's order: the withdrawal naming it (the
               -- next order may come in the same instant), its next order, or its close
    SELECT p.*, (
           SELECT min(e.ts) FROM (
               SELECT w.ts FROM dispatches w
                WHERE w.withdraws = p.dispatch_id AND w.incident_id = p.incident_id
                  AND w.kind = 'withdrawal'
               UNION ALL
               SELECT n.ts FROM dispatches n
                WHERE (n.incident_id = p.incident_id OR n.incidents @> ARRAY[p.incident_id])
                  AND n.ts > p.ts AND n.kind NOT IN ('withdrawal', 'revision')
               UNION ALL
               SELECT t.ts FROM incident_transitions t
                WHERE t.incident_id = p.incident_id AND t.to_state = 'closed' AND t.ts > p.ts
           ) e) AS ended
      FROM pairs p
), judged AS (
    SELECT p.*, EXISTS (
               SELECT 1 FROM incident_transitions t
                WHERE t.incident_id = p.incident_id AND t.action = 'accept'
                  AND t.ts >= p.ts AND t.ts <= p.accept_by
                  AND (p.ended IS NULL OR t.ts < p.ended)) AS accepted,
           EXISTS (
               SELECT 1 FROM incident_transitions t
                WHERE t.incident_id = p.incident_id AND t.action = 'handled'
                  AND t.ts >= p.ts AND t.ts <= p.handle_by
                  AND (p.ended IS NULL OR t.ts < p.ended)) AS handled,
           (SELECT extract(epoch FROM min(t.ts) - p.ts) FROM incident_transitions t
             WHERE t.incident_id = p.incident_id AND t.action = 'accept'
               AND t.ts >= p.ts AND (p.ended IS NULL OR t.ts < p.ended)) AS to_accept,
           (SELECT extract(epoch FROM min(t.ts) - p.ts) FROM incident_transitions t
             WHERE t.incident_id = p.incident_id AND t.action = 'handled'
               AND t.ts >= p.ts AND (p.ended IS NULL OR t.ts < p.ended)) AS to_handle,
           EXISTS (  -- the incident went out again after this order
               SELECT 1 FROM dispatches n
                WHERE (n.incident_id = p.incident_id OR n.incidents @> ARRAY[p.incident_id])
                  AND n.ts > p.ts AND n.kind NOT IN ('withdrawal', 'revision')) AS sent_again
      FROM ended p
), verdicts AS (
    SELECT j.*, CASE
           WHEN j.accepted AND j.handled THEN 'on_time'
           -- the deadline it was working to had not passed while it was the order
           WHEN coalesce(j.ended, now()) <= CASE WHEN j.accepted THEN j.handle_by
                                                 ELSE j.accept_by END
           THEN CASE WHEN j.ended IS NULL THEN 'running' ELSE 'withdrawn' END
           ELSE 'late' END AS verdict
      FROM judged j
)
SELECT v.department, v.tier, count(*), count(*) FILTER (WHERE v.accepted),
       count(*) FILTER (WHERE v.handled), count(*) FILTER (WHERE v.verdict = 'on_time'),
       count(*) FILTER (WHERE v.verdict = 'running'),
       count(*) FILTER (WHERE v.verdict = 'withdrawn'),
       count(DISTINCT v.incident_id),
       -- judged for closing: not while it waits for verification of work it handled, nor
       -- once that work was done and the incident, reopened, went out again
       count(DISTINCT v.incident_id) FILTER (
           WHERE v.verdict NOT IN ('running', 'withdrawn')
             AND NOT (v.to_handle IS NOT NULL AND v.sent_again)
             AND NOT coalesce(i.state IN ('handled', 'verified') AND i.department = v.department
                              AND i.tier = v.tier, false)),
       count(DISTINCT v.incident_id) FILTER (
           WHERE i.state = 'closed' AND i.department = v.department AND i.tier = v.tier
             AND v.verdict NOT IN ('running', 'withdrawn')),
       -- how long the order took to be accepted, and handled (late ones too; none: NULL)
       percentile_cont(0.5) WITHIN GROUP (ORDER BY v.to_accept),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY v.to_accept),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY v.to_handle),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY v.to_handle)
  FROM verdicts v LEFT JOIN incidents i ON i.incident_id = v.incident_id
 GROUP BY GROUPING SETS ((v.department, v.tier), (v.department))
 ORDER BY v.department, array_position(ARRAY['building', 'grid', 'street', 'district', 'city'], v.tier) NULLS LAST
"""


def performance(
    conn: Conn, since: datetime, until: datetime, target: float = CLOSURE_TARGET
) -> list[Performance]:
    """Each department at each tier it was dispatched to in ``[since, until)``, then the
    department over all its tiers; flagged when its closure rate is under ``target``."""
    rows = conn.execute(PERFORMANCE.encode(), {"since": since, "until": until}).fetchall()
    out = []
    for row in rows:
        department, tier, dispatches, accepted, handled, on_time, running, withdrawn = row[:8]
        incidents, judged_incidents, closed = row[8:11]
        to_accept, to_accept_p90, to_handle, to_handle_p90 = row[11:]
        closure = closed / judged_incidents if judged_incidents else None
        judged = dispatches - running - withdrawn  # Performance.judged, before it is made
        out.append(
            Performance(
                department=department,
                tier=None if tier is None else Tier(tier),
                dispatches=dispatches,
                accepted_on_time=accepted,
                handled_on_time=handled,
                on_time=on_time,
                running=running,
                withdrawn=withdrawn,
                incidents=incidents,
                incidents_judged=judged_incidents,
                closed=closed,
                closure_rate=closure,
                on_time_rate=on_time / judged if judged else None,
                flagged=closure is not None and closure < target,
                accept_median_s=to_accept,
                accept_p90_s=to_accept_p90,
                handle_median_s=to_handle,
                handle_p90_s=to_handle_p90,
            )
        )
    return out


def recent_steps(
    conn: Conn, after: datetime, limit: int = 50, past: tuple[str, int] | None = None
) -> list[tuple[IncidentTransition, Incident]]:
    """The steps recorded after ``after`` (oldest first), each with its incident as it is now;
    with ``past`` (an incident id and revision), the steps of the instant ``after`` that come
    after that step too, so that pages of steps neither skip nor repeat one."""
    where = "t.ts > %s"
    args: list[object] = [after]
    if past is not None:
        where = "(t.ts, t.incident_id, t.revision) > (%s, %s, %s)"
        args = [after, *past]
    rows = fetch(
        conn,
        "SELECT t.incident_id AS t_incident_id, t.revision AS t_revision, t.action, t.from_state,"
        " t.to_state, t.actor, t.reason, t.ts, t.tier AS t_tier, t.department AS t_department,"
        " t.feedback_id AS t_feedback_id,"
        f" i.* FROM incident_transitions t JOIN incidents i USING (incident_id) WHERE {where}"
        " ORDER BY t.ts, t.incident_id, t.revision LIMIT %s",
        *args,
        limit,
    )
    out = []
    for row in rows:
        step = IncidentTransition(
            incident_id=row["t_incident_id"],
            revision=row["t_revision"],
            action=row["action"],
            from_state=row["from_state"],
            to_state=row["to_state"],
            actor=row["actor"],
            reason=row["reason"],
            ts=row["ts"],
            tier=row["t_tier"],
            department=row["t_department"],
            feedback_id=row["t_feedback_id"],
        )
        incident = {
            k: v for k, v in row.items() if not k.startswith("t_") and k in Incident.model_fields
        }
        out.append((step, Incident.model_validate(incident)))
    return out
