"""The duty officer's console: a page served by this API (``/console`` and its assets, all
local), its settings (``/console/config``), and a live stream of what the user may see
(``/console/events``, server-sent events).

The stream polls the database every :data:`POLL_S` seconds through the sinks' reads
(:mod:`sinks.incidents`, :mod:`sinks.vitals`, :mod:`sinks.alerts`, :mod:`sinks.readings`) and
sends only what changed, each an SSE event whose data is JSON:

* ``incident``: an incident in the user's scope at a new revision, or when the level its
  alerts fire at changes (open ones at the start, and those closed in the last
  :data:`CLOSED_SHOWN`, for a shift's handover; one that closed once, then no more);
* ``tile``: a vital sign of the user's place or one of its children (value, unit, band and the
  colour it is shown in, coverage, window and the trend against the previous window);
* ``alerts``: the firing alerts in scope, counted by level;
* ``refusal``: a feedback on an incident in view that the incident stage refused, and why;
* ``devices``: the devices in scope by liveness status (``counts``), the offline and late
  ones (``silent``, offline first, the longest silent first, :data:`SILENT_SHOWN` at most)
  and the open place outages (``outages``: those in scope, and those of a place above it,
  which hold the scope, marked ``above_scope`` and without the devices they name), as the
  liveness service last judged them: sent at the start and whenever that changes;
* ``end``: the user's token stopped being valid (disabled, rotated): the stream closes.

A comment line keeps the connection alive every :data:`KEEPALIVE_S` seconds. The stream
checks the token again at every poll, so a disabled user stops receiving at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from cityvitals.contracts import (
    AlertStatus,
    Device,
    DeviceLiveness,
    Incident,
    IncidentState,
    WarningLevel,
)
from cityvitals.settings import Settings
from device_registry.access import User
from device_registry.api.auth import TOKEN_COOKIE, check_scope, require
from device_registry.api.bodies import NOT_FOUND, RETRY_LATER
from device_registry.api.deps import PathId, Reader, pool
from device_registry.api.errors import NotFound
from device_registry.incident_publisher import incident_categories, incident_departments
from device_registry.liveness_store import open_outages, silent_rows, status_counts
from device_registry.registry import Registry
from rules.indicators import Catalogue
from sinks import (
    ACTIVITY_LOOKBACK,
    AROUND,
    AlertFilter,
    AlertRow,
    CameraSeen,
    IncidentFilter,
    Refused,
    SeriesPoint,
    UnknownIncident,
    alert_rows,
    device_activity,
    get_incident,
    last_reopened,
    list_alerts,
    list_incidents,
    readings_around,
    refusals,
)
from sinks.vitals import PlaceVitals, current, history

__all__ = ["ASSETS", "KEEPALIVE_S", "POLL_S", "Watch", "router"]

router = APIRouter(tags=["console"])
Reading = Annotated[User, require("read")]

POLL_S = 1.5
"""How often the event stream reads the database."""
DEVICES_POLL_S = 5.0
"""How often the devices are read for a ``devices`` event: liveness judges every 5 s."""
SILENT_SHOWN = 50
"""The offline and late devices a ``devices`` event lists at most (it counts them all)."""
KEEPALIVE_S = 15.0
"""How long the stream may be silent before it sends a keep-alive comment."""
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
"""The page's own files (``/console/assets/{name}``); nothing is loaded from elsewhere."""
OPEN_INCIDENTS_MAX = 500
CLOSED_SHOWN = timedelta(hours=12)
"""How far back the stream's first snapshot lists closed incidents (a shift and its handover)."""


def _asset(name: str) -> str:
    return resources.files("device_registry.api").joinpath("console", name).read_text()


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    """The console (open: without a token it shows a login box that posts ``/session``)."""
    return HTMLResponse(_asset("index.html"), headers={"Cache-Control": "no-cache"})


@router.get("/console/assets/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    """The console's script and style sheet."""
    if name not in ASSETS:
        raise HTTPException(404, f"no console asset {name!r}; one of: {', '.join(ASSETS)}")
    return Response(_asset(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


class ConsoleConfig(BaseModel):
    """What the console needs to know besides ``/me``."""

    timezone: str
    """The city's time zone (IANA name): the page shows local time in it."""
    home: list[str]
    """The places whose vital signs (and their children's) the tiles show: the user's scope,
    or every city for a city-wide user."""
    poll_s: float
    server_time: datetime
    categories: dict[str, str] = {}
    """The incident categories a citizen report may name (id -> title; empty when the
    incident configuration cannot be read: the report form then offers none)."""
    positions: dict[str, list[float]] = {}
    """Places in the user's scope without coordinates of their own, at the mean position of
    their active devices (``[lat, lon]``): the map shows their incidents there."""
    departments: list[str] = []
    """The departments an incident may be reassigned to: those the incident routing names
    and those registered, sorted (the reassign form offers them)."""
    scope_names: dict[str, str] = {}
    """The names of the places of the user's scope path (id -> name), the city above a
    district's scope included: the console names them, not by their ids."""


def home_places(user: User, registry: Registry) -> list[str]:
    if user.scope:
        return [user.scope[-1]]
    return [p.place_id for p in registry.list_places() if len(p.path) == 1]


@router.get("/console/config", response_model=ConsoleConfig, responses=RETRY_LATER)
def config(user: Reading, registry: Reader, request: Request) -> ConsoleConfig:
    """The city's time zone and the user's home places for the console."""
    settings: Settings = request.app.state.settings
    try:
        categories = incident_categories(settings)
        routed = incident_departments(settings)
    except (OSError, ValueError):  # POST /reports names the file's fault (503)
        categories, routed = {}, frozenset()
    registered = {d.department_id for d in registry.list_departments()}
    places = registry.list_places()
    names = {p.place_id: p.name for p in places if p.place_id in user.scope}
    paths = {p.place_id: p.path for p in places}
    positions = {
        place_id: list(at)
        for place_id, at in registry.device_positions().items()
        if place_id in paths and user.sees(paths[place_id])
    }
    return ConsoleConfig(
        timezone=settings.timezone,
        home=home_places(user, registry),
        poll_s=POLL_S,
        server_time=datetime.now(UTC),
        categories=categories,
        positions=positions,
        departments=sorted(routed | registered),
        scope_names=names,
    )


class Series(BaseModel):
    device_id: str
    metric: str
    points: list[tuple[datetime, float]]


class IncidentReadings(BaseModel):
    """The readings of an incident's devices within ``span_s`` either side of its opening."""

    incident_id: str
    at: datetime
    span_s: float
    series: list[Series]


def _series(points: Iterable[SeriesPoint]) -> list[Series]:
    out: dict[tuple[str, str], Series] = {}
    for p in points:
        key = (p.device_id, p.metric)
        if key not in out:
            out[key] = Series(device_id=p.device_id, metric=p.metric, points=[])
        out[key].points.append((p.ts, p.value))
    return list(out.values())


@router.get(
    "/incidents/{incident_id}/readings",
    response_model=IncidentReadings,
    responses={**NOT_FOUND, **RETRY_LATER},
    tags=["incidents"],
)
def incident_readings(user: Reading, incident_id: PathId, registry: Reader) -> IncidentReadings:
    """The readings of the incident's devices within 30 minutes either side of its opening,
    per device and metric, oldest first."""
    try:
        found = get_incident(registry.conn, incident_id)
    except UnknownIncident as exc:
        raise NotFound(str(exc)) from exc
    check_scope(user, found.place_path, f"incident {incident_id!r}")
    points = readings_around(registry.conn, found.devices, found.opened_at)
    return IncidentReadings(
        incident_id=incident_id,
        at=found.opened_at,
        span_s=AROUND.total_seconds(),
        series=_series(points),
    )


class DeviceView(BaseModel):
    """One device for a person checking on it: as registered, as the liveness service last
    judged it, what it sent lately and what of it was refused."""

    device: Device
    liveness: DeviceLiveness | None
    """None: not judged (not active, or not heard yet)."""
    since: datetime
    span_s: float
    lookback_s: float
    """How far back :attr:`latest`, :attr:`camera_events` and :attr:`refused` look."""
    series: list[Series]
    """Its readings in the ``span_s`` before now, per metric, oldest first: the newest 500 of
    each at most (``cut`` says when a metric had more)."""
    cut: bool
    latest: list[SeriesPoint]
    """Each metric's newest reading in the ``lookback_s`` before now, by metric."""
    camera_events: list[CameraSeen]
    """A camera's newest events in the ``lookback_s`` before now, the newest first."""
    refused: int
    """The messages naming it that a stage refused in the ``lookback_s`` before now (dead
    letters), counted up to 10,000."""
    refused_newest: list[Refused]
    """The newest of those (``cityvitals deadletters --device ID`` lists them all)."""
    alerts: list[AlertRow]
    """Its alert episodes raised in the user's scope, the last changed first."""


DEVICE_ALERTS_SHOWN = 10
"""The alert episodes a device's view lists."""


@router.get(
    "/devices/{device_id}/activity",
    response_model=DeviceView,
    responses={**NOT_FOUND, **RETRY_LATER},
    tags=["devices"],
)
def device_view(
    user: Annotated[User, require("devices.read")],
    device_id: PathId,
    registry: Reader,
    minutes: Annotated[
        int,
        Query(
            ge=1,
            le=int(ACTIVITY_LOOKBACK.total_seconds() // 60),
            description="the span of readings shown",
        ),
    ] = 60,
) -> DeviceView:
    """One device: as registered, its liveness, its readings in the last ``minutes``, each
    metric's newest value, a camera's newest events, the messages naming it that were refused
    in the last week, and its alerts. Of what it sent, and of its alerts, what was taken and
    raised in the user's scope alone: a device moved in brings nothing from elsewhere."""
    device = registry.get(device_id)
    check_scope(user, device.place_path, f"device {device_id!r}")
    span = timedelta(minutes=minutes)
    seen = device_activity(registry.conn, device_id, span, datetime.now(UTC), user.scope)
    live = registry.liveness(device_id=device_id)
    alerts = list_alerts(
        registry.conn,
        AlertFilter(
            device=device_id,
            place="/".join(user.scope) or None,
            limit=DEVICE_ALERTS_SHOWN,
        ),
    )
    return DeviceView(
        device=device,
        liveness=live[0] if live else None,
        since=seen.since,
        span_s=span.total_seconds(),
        lookback_s=ACTIVITY_LOOKBACK.total_seconds(),
        series=_series(seen.points),
        cut=seen.cut,
        latest=list(seen.latest),
        camera_events=list(seen.camera_events),
        refused=seen.refused,
        refused_newest=list(seen.refused_newest),
        alerts=alerts,
    )


# --- the live stream ----------------------------------------------------------------------


@dataclass
class Watch:
    """What one console was last sent: the state the stream compares each poll against."""

    user: User
    home: list[str]
    started: datetime
    incidents: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    """Incident id -> the revision sent and the level its alerts fire at now."""
    tiles: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    alerts: dict[str, int] | None = None
    refusals_after: datetime = field(default_factory=lambda: datetime.now(UTC))
    catalogue: Catalogue | None = None
    devices: dict[str, Any] | None = None
    """The devices event last sent."""
    devices_due: float = 0.0
    """When (``time.monotonic``) the devices are read again."""
    closed_sent: bool = False
    """Whether the incidents closed lately were sent (once, with the first snapshot)."""


Event = tuple[str, Any]


def poll(registry: Registry, watch: Watch, settings: Settings) -> list[Event]:
    """The events since the last poll: changed incidents, tiles, alert counts, refusals."""
    return [
        *_incident_events(registry, watch),
        *_tile_events(registry, watch, settings),
        *_alert_events(registry, watch),
        *_refusal_events(registry, watch),
        *_device_events(registry, watch),
    ]


def _incident_json(
    incident: Incident, now: str | None = None, reopened: datetime | None = None
) -> dict[str, Any]:
    """The incident as the console shows it; one raised by alerts has ``level_now``, the
    highest level its alerts fire at now (null: none fires), beside ``level``, its peak; one
    that reopened has ``reopened_at``, when it last did (its age counts from then)."""
    out = incident.model_dump(mode="json")
    if incident.alerts:
        out["level_now"] = now
    if reopened is not None:
        out["reopened_at"] = reopened.isoformat()
    return out


def _levels_now(registry: Registry, incidents: list[Incident]) -> dict[str, str | None]:
    """Per incident, the highest level its alerts fire at now (None: none fires)."""
    ids = [a for i in incidents for a in i.alerts]
    firing = {
        a.alert_id: WarningLevel(a.level)
        for a in (alert_rows(registry.conn, ids) if ids else ())
        if a.status == AlertStatus.FIRING.value
    }
    out: dict[str, str | None] = {}
    for incident in incidents:
        levels = [firing[a] for a in incident.alerts if a in firing]
        out[incident.incident_id] = max(levels, key=lambda lv: lv.rank).value if levels else None
    return out


def _incident_events(registry: Registry, watch: Watch) -> list[Event]:
    user = watch.user
    where = IncidentFilter(
        open_only=True,
        place="/".join(user.scope) if user.scope else None,
        limit=OPEN_INCIDENTS_MAX,
    )
    now_open = [i for i in list_incidents(registry.conn, where) if user.sees(i.place_path)]
    levels = _levels_now(registry, now_open)
    changed = [  # sent again when it changed, or the level its alerts fire at
        i
        for i in now_open
        if watch.incidents.get(i.incident_id) != (i.revision, levels[i.incident_id])
    ]
    reopened = last_reopened(registry.conn, [i.incident_id for i in changed]) if changed else {}
    out: list[Event] = []
    for incident in changed:
        now = levels[incident.incident_id]
        watch.incidents[incident.incident_id] = (incident.revision, now)
        reopen = reopened.get(incident.incident_id)
        out.append(("incident", _incident_json(incident, now, reopen)))
    gone = set(watch.incidents) - {i.incident_id for i in now_open}
    for incident_id in sorted(gone):  # closed since: sent once more, then forgotten
        del watch.incidents[incident_id]
        try:
            closed = get_incident(registry.conn, incident_id)
        except UnknownIncident:
            continue
        if user.sees(closed.place_path):
            out.append(("incident", _incident_json(closed)))
    if not watch.closed_sent:  # the shift's closed ones, once: greyed, under the open ones
        watch.closed_sent = True
        lately = IncidentFilter(
            state=IncidentState.CLOSED,
            place=where.place,
            since=datetime.now(UTC) - CLOSED_SHOWN,
            limit=OPEN_INCIDENTS_MAX,
        )
        out += [
            ("incident", _incident_json(i))
            for i in list_incidents(registry.conn, lately)
            if user.sees(i.place_path)
        ]
    return out


def _tile_events(registry: Registry, watch: Watch, settings: Settings) -> list[Event]:
    grace = timedelta(seconds=settings.indicators_grace_s)
    out: list[Event] = []
    for place_id in watch.home:
        try:
            places = current(registry.conn, place_id, catalogue=watch.catalogue, grace=grace)
        except LookupError:
            continue
        for place in places:
            for tile in _tiles(registry, place, watch):
                out.append(("tile", tile))
    return out


def _tiles(registry: Registry, place: PlaceVitals, watch: Watch) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    base = {"place_id": place.place_id, "place_name": place.name, "level": place.level}
    for sign in place.signs:
        key = f"{place.place_id}/{sign.indicator}"
        signature: tuple[Any, ...] = (sign.window_start, sign.value, sign.band, sign.coverage)
        if watch.tiles.get(key) == signature:
            continue
        watch.tiles[key] = signature
        previous = _previous_value(registry, place.place_id, sign.indicator, sign.window_start)
        out.append(
            {
                **base,
                "key": key,
                "indicator": sign.indicator,
                "value": sign.value,
                "unit": sign.unit,
                "band": sign.band,
                "band_level": band_level(watch.catalogue, sign.indicator, sign.band),
                "coverage": sign.coverage,
                "quality": sign.quality,
                "window_start": sign.window_start.isoformat(),
                "window_end": None if sign.window_end is None else sign.window_end.isoformat(),
                "window_s": sign.window_s,
                "previous": previous,
                "trend": _trend(previous, sign.value),
            }
        )
    for pending in place.pending:
        key = f"{place.place_id}/{pending.indicator}"
        signature = ("pending", pending.next.due_at)
        if watch.tiles.get(key) == signature:
            continue
        watch.tiles[key] = signature
        out.append(
            {
                **base,
                "key": key,
                "indicator": pending.indicator,
                "value": None,
                "unit": pending.unit,
                "due_at": pending.next.due_at.isoformat(),
            }
        )
    return out


def _previous_value(
    registry: Registry, place_id: str, indicator: str, window_start: datetime
) -> float | None:
    earlier = history(
        registry.conn, place_id, indicator, window_start - timedelta(days=1), window_start
    )
    return earlier[-1].value if earlier else None


def band_level(catalogue: Catalogue | None, indicator: str, band: str | None) -> str | None:
    """The colour a tile's band is shown in: ``normal``, or the warning level the catalogue
    gives the band (``band_levels``); None without a band.

    >>> from device_registry.api.vitals import load_catalogue
    >>> shipped = load_catalogue(None)
    >>> [band_level(shipped, "congestion", b) for b in ("basically_free", "light", "severe")]
    ['normal', 'blue', 'orange']
    """
    spec = None if catalogue is None or band is None else catalogue.by_id.get(indicator)
    if spec is None or band is None:
        return None
    level = spec.level(band)
    return "normal" if level is None else level.value


def _trend(previous: float | None, value: float | None) -> str | None:
    """``up``, ``down`` or ``flat`` against the previous window; None without both.

    >>> _trend(1.0, 2.0), _trend(2.0, 2.0), _trend(None, 2.0)
    ('up', 'flat', None)
    """
    if previous is None or value is None:
        return None
    if value > previous:
        return "up"
    return "down" if value < previous else "flat"


def _alert_events(registry: Registry, watch: Watch) -> list[Event]:
    user = watch.user
    where = AlertFilter(
        status=AlertStatus.FIRING,
        place="/".join(user.scope) if user.scope else None,
        limit=10_000,
    )
    firing = [a for a in list_alerts(registry.conn, where) if user.sees(a.place_path)]
    counts = dict(Counter(a.level for a in firing))
    if counts == watch.alerts:
        return []
    watch.alerts = counts
    return [("alerts", {"firing": len(firing), "by_level": counts})]


def _refusal_events(registry: Registry, watch: Watch) -> list[Event]:
    found = refusals(registry.conn, watch.refusals_after)
    if found:
        watch.refusals_after = found[-1].received_at
    return [
        ("refusal", {**asdict(r), "received_at": r.received_at.isoformat()})
        for r in found
        if r.incident_id in watch.incidents
        or _visible_incident(registry, watch.user, r.incident_id)
    ]


def _device_events(registry: Registry, watch: Watch) -> list[Event]:
    if time.monotonic() < watch.devices_due:
        return []
    watch.devices_due = time.monotonic() + DEVICES_POLL_S
    user = watch.user
    place = user.scope[-1] if user.scope else None
    silent = [
        {
            "device_id": d.device_id,
            "status": d.status.value,
            "last_seen": d.last_seen and d.last_seen.isoformat(),
            "expected_interval_s": d.expected_interval_s,
            "place_path": list(d.place_path),
        }
        for d in silent_rows(registry.conn, place, SILENT_SHOWN)
        if user.sees(d.place_path)
    ]
    outages = [
        o.model_dump(mode="json", exclude={"ts"})
        if user.sees(o.place_path)
        # a place above the scope: its counts, not the devices it names elsewhere
        else {**o.model_dump(mode="json", exclude={"ts", "devices"}), "above_scope": True}
        for o in open_outages(registry.conn, holding=user.scope)
    ]
    counts = {s.value: n for s, n in status_counts(registry.conn, place).items()}
    sent = {"counts": counts, "silent": silent, "outages": outages}
    if sent == watch.devices:
        return []
    watch.devices = sent
    return [("devices", sent)]


def _visible_incident(registry: Registry, user: User, incident_id: str) -> bool:
    try:
        return user.sees(get_incident(registry.conn, incident_id).place_path)
    except UnknownIncident:
        return False


def _token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(TOKEN_COOKIE, "")


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.get("/console/events", include_in_schema=False)
async def events(
    user: Reading,
    request: Request,
    once: Annotated[bool, Query(description="send what there is now, then end")] = False,
) -> StreamingResponse:
    """Server-sent events of what the user may see (module docstring); ``once``: the first
    snapshot only (for scripts and tests)."""
    settings: Settings = request.app.state.settings
    catalogue: Catalogue = request.app.state.catalogue
    token = _token(request)

    def start() -> Watch:
        with pool(request).checkout() as registry:
            home = home_places(user, registry)
            return Watch(user, home, datetime.now(UTC), catalogue=catalogue)

    def step(watch: Watch) -> list[Event]:
        with pool(request).checkout() as registry:
            now = registry.user_for_token(token)
            if now is None:
                return [("end", {"reason": "the token is no longer valid"})]
            if now != user:  # its scope, role or department changed: the token still works
                changed = [
                    f
                    for f in ("role", "scope", "department")
                    if getattr(now, f) != getattr(user, f)
                ]
                said = f"{user.name}'s {' and '.join(changed) or 'access'} changed: the console reloads with it"
                return [("end", {"reason": said, "reload": True})]
            return poll(registry, watch, settings)

    watch = await run_in_threadpool(start)

    async def stream() -> AsyncIterator[bytes]:
        yield _sse("hello", {"user": user.name, "server_time": datetime.now(UTC).isoformat()})
        quiet_since = time.monotonic()
        while True:
            sent = await run_in_threadpool(step, watch)
            for event, data in sent:
                yield _sse(event, data)
            if sent:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            if once or any(event == "end" for event, _ in sent):
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
