"""Access control on the pipeline's API service: every route of the app (read from
``app.routes``, so a new one cannot be forgotten) answers 401 without a valid token and 403 to
a role without its permission or for a place outside the user's scope; lists hold only what is
in scope; every change and action is in the audit log under the user's name."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from cityvitals import db
from cityvitals.contracts import (
    Action,
    Alert,
    AlertStatus,
    Incident,
    IncidentSource,
    IncidentState,
    IncidentTransition,
    IncidentUpdate,
    WarningLevel,
)
from device_registry.access import PERMISSIONS, Role
from device_registry.api import RegistryPool, create_api
from device_registry.api.auth import OPEN_PATHS, TOKEN_COOKIE
from device_registry.errors import UserDisabled
from sinks import AlertSink, IncidentSink
from tests.integration.conftest import Pipeline, add_user, at, bearer
from wiring.services import open_registry

pytestmark = pytest.mark.integration

T0 = datetime.fromisoformat(at("08:00:00"))
DEPARTMENT = "acc-water"


def uid() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class World:
    """A city with districts d1 and d2, a device, an incident and a report place in each;
    users of every role, scoped to d1 where the test needs it."""

    settings: Any
    city: str
    tokens: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    incidents: dict[str, str] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)

    def d(self, n: int) -> str:
        return f"{self.city}-d{n}"

    def s(self, n: int) -> str:
        return f"{self.city}-d{n}-s1"

    def client(self, who: str | None, **headers: str) -> httpx.Client:
        auth = bearer(self.tokens[who]) if who else {}
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.settings.api_port}",
            timeout=60,
            headers={**auth, **headers},
        )

    def call(self, who: str | None, request: Request, **headers: str) -> httpx.Response:
        with self.client(who, **headers) as c:
            return c.request(request.method, request.path, **request.kwargs)

    def spare(self, kind: str, n: int = 1) -> str:
        """A new place (a street of d``n``), profile or department that nothing uses, made by
        the admin: what a removal's request removes."""
        made = f"acc-{kind[:4]}-{uid()}"
        body: dict[str, Any] = {
            "places": {"name": "spare", "parent_id": self.d(n)},
            "profiles": {"device_type": "water_level", "expected_interval_s": 60},
            "departments": {"name": "spare"},
        }[kind]
        with self.client("admin") as admin:
            put = admin.put(f"/{kind}/{made}", json=body)
        assert put.status_code == 201, put.text
        return made


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def store_incident(
    conn: Any,
    path: tuple[str, ...],
    department: str | None,
    state: IncidentState = IncidentState.NEW,
    open_alerts: int = 0,
    acknowledged_by: str | None = None,
    dispatch_id: str | None = None,
) -> str:
    incident = Incident(
        incident_id=uuid.uuid4().hex,
        revision=0,
        category="flooding",
        state=state,
        level=WarningLevel.RED,
        source=IncidentSource.ALERT,
        place_id=path[-1],
        place_path=path,
        title=f"flooding at {path[-1]}",
        department=department,
        dispatch_id=dispatch_id,
        opened_at=T0,
        updated_at=T0,
        open_alerts=open_alerts,
        acknowledged_by=acknowledged_by,
        acknowledged_at=None if acknowledged_by is None else T0,
    )
    transition = IncidentTransition(
        incident_id=incident.incident_id,
        revision=0,
        action=Action.OPEN,
        from_state=None,
        to_state=state,
        actor="platform",
        ts=T0,
    )
    IncidentSink(conn).write([IncidentUpdate(incident=incident, transition=transition)])
    return incident.incident_id


def store_alert(conn: Any, path: tuple[str, ...], device_id: str) -> str:
    alert = Alert(
        alert_id=uuid.uuid4().hex,
        revision=0,
        rule_id="waterlogging-depth",
        status=AlertStatus.FIRING,
        level=WarningLevel.YELLOW,
        device_id=device_id,
        metric="water_level_cm",
        value=16.0,
        threshold=15.0,
        place_path=path,
        started_at=T0,
        ts=T0,
        summary="water 16 cm",
    )
    AlertSink(conn).write([alert])
    return alert.alert_id


@pytest.fixture(scope="module")
def world(pipeline: Pipeline, admin_token: str) -> Iterator[World]:
    w = World(pipeline.settings, f"acc{uid()}")
    w.tokens["admin"] = admin_token
    with w.client("admin") as admin:
        put = admin.put(f"/places/{w.city}", json={"name": "C"})
        assert put.status_code == 201, put.text
        for n in (1, 2):
            put = admin.put(f"/places/{w.d(n)}", json={"name": f"D{n}", "parent_id": w.city})
            assert put.status_code == 201, put.text
            put = admin.put(f"/places/{w.s(n)}", json={"name": f"S{n}", "parent_id": w.d(n)})
            assert put.status_code == 201, put.text
            device = f"acc-{n}-{uid()}"
            body = {"device_id": device, "device_type": "water_level"}
            made = admin.post("/devices", json={**body, "place_path": [w.city, w.d(n), w.s(n)]})
            assert made.status_code == 201, made.text
            w.devices[f"d{n}"] = device
        spare = {"device_id": f"acc-r-{uid()}", "device_type": "water_level"}
        made = admin.post("/devices", json={**spare, "place_path": [w.city, w.d(1)]})
        assert made.status_code == 201, made.text
        w.devices["d1r"] = spare["device_id"]
        assert admin.put(f"/departments/{DEPARTMENT}", json={"name": "W"}).status_code in (200, 201)
    with db.connect(pipeline.settings) as conn:
        for n in (1, 2):
            w.incidents[f"d{n}"] = store_incident(  # dispatched: a department may answer
                conn,
                (w.city, w.d(n), w.s(n)),
                DEPARTMENT if n == 1 else "other-dept",
                IncidentState.DISPATCHED,
            )
            w.alerts[f"d{n}"] = store_alert(conn, (w.city, w.d(n), w.s(n)), w.devices[f"d{n}"])
    d1 = (w.city, w.d(1))
    s = pipeline.settings
    w.tokens["officer_d1"] = add_user(s, f"officer-{uid()}", Role.DUTY_OFFICER, d1)
    w.tokens["engineer_d1"] = add_user(s, f"engineer-{uid()}", Role.IOT_ENGINEER, d1)
    w.tokens["engineer"] = add_user(s, f"engineer-{uid()}", Role.IOT_ENGINEER)
    w.tokens["officer"] = add_user(s, f"officer-{uid()}", Role.DUTY_OFFICER)
    w.tokens["reader"] = add_user(s, f"reader-{uid()}", Role.READ_ONLY)
    w.tokens["operator"] = add_user(
        s, f"operator-{uid()}", Role.DEPARTMENT_OPERATOR, department=DEPARTMENT
    )
    disabled = f"gone-{uid()}"
    w.tokens["disabled"] = add_user(s, disabled, Role.ADMIN)
    rotated = f"rotated-{uid()}"
    w.tokens["rotated"] = add_user(s, rotated, Role.ADMIN)
    with open_registry(s) as registry:
        registry.disable_user(disabled, "itest")
        w.tokens["rotated_new"] = registry.rotate_token(rotated, "itest")
        # A disabled user's token would never log in: none is issued, and it says why.
        with pytest.raises(UserDisabled, match=f"user '{disabled}' is disabled"):
            registry.rotate_token(disabled, "itest")
    yield w


# --- every route: who may call it, and an example request inside and outside d1 -------------


@dataclass(frozen=True)
class Guard:
    """A route's permission; a request to it; one naming a place of d2 (a d1 user gets 403),
    ``"city"`` when the route spans the city (a scoped user gets 403), or None."""

    permission: str
    request: Callable[[World], Request]
    outside: Callable[[World], Request] | str | None = None


def _somewhere() -> float:
    """A latitude not given before (a move to where a device is changes nothing)."""
    return 31.0 + uuid.uuid4().int % 100_000 / 1_000_000


def _device_body(w: World, n: int) -> dict[str, Any]:
    return {
        "device_id": f"acc-new-{uid()}",
        "device_type": "water_level",
        "place_path": [w.city, w.d(n)],
    }


def _action(w: World, n: int, action: str = "acknowledge") -> Request:
    body = {"action": action, "reason": "r"}
    return Request("POST", f"/incidents/{w.incidents[f'd{n}']}/actions", {"json": body})


def _lifecycle(verb: str) -> Guard:
    # retire is final: it retires a device of its own, so the others can still act on d1's
    mine = "d1r" if verb == "retire" else "d1"
    return Guard(
        "devices.write",
        lambda w: Request("POST", f"/devices/{w.devices[mine]}/{verb}"),
        lambda w: Request("POST", f"/devices/{w.devices['d2']}/{verb}"),
    )


GUARDS: dict[tuple[str, str], Guard] = {
    ("GET", "/me"): Guard("read", lambda w: Request("GET", "/me")),
    ("GET", "/devices"): Guard(
        "devices.read",
        lambda w: Request("GET", "/devices"),
        lambda w: Request("GET", "/devices", {"params": {"place": w.d(2)}}),
    ),
    ("POST", "/devices"): Guard(
        "devices.write",
        lambda w: Request("POST", "/devices", {"json": _device_body(w, 1)}),
        lambda w: Request("POST", "/devices", {"json": _device_body(w, 2)}),
    ),
    ("POST", "/devices/import"): Guard(
        "devices.write",
        lambda w: Request("POST", "/devices/import", {"json": [_device_body(w, 1)]}),
    ),
    ("GET", "/devices/{device_id}"): Guard(
        "devices.read",
        lambda w: Request("GET", f"/devices/{w.devices['d1']}"),
        lambda w: Request("GET", f"/devices/{w.devices['d2']}"),
    ),
    ("GET", "/devices/{device_id}/activity"): Guard(
        "devices.read",
        lambda w: Request("GET", f"/devices/{w.devices['d1']}/activity"),
        lambda w: Request("GET", f"/devices/{w.devices['d2']}/activity"),
    ),
    ("PATCH", "/devices/{device_id}"): Guard(
        "devices.write",
        lambda w: Request("PATCH", f"/devices/{w.devices['d1']}", {"json": {"tags": ["x"]}}),
        lambda w: Request("PATCH", f"/devices/{w.devices['d2']}", {"json": {"tags": ["x"]}}),
    ),
    ("POST", "/devices/{device_id}/move"): Guard(
        "devices.write",
        lambda w: Request(  # where it is, at new coordinates: a move that changes something
            "POST",
            f"/devices/{w.devices['d1']}/move",
            {"json": {"place_path": [w.city, w.d(1)], "lat": _somewhere(), "lon": 121.4}},
        ),
        lambda w: Request(
            "POST", f"/devices/{w.devices['d1']}/move", {"json": {"place_path": [w.city, w.d(2)]}}
        ),
    ),
    **{
        ("POST", f"/devices/{{device_id}}/{verb}"): _lifecycle(verb)
        for verb in ("suspend", "activate", "retire", "rotate-secret")
    },
    ("GET", "/places"): Guard(
        "read",
        lambda w: Request("GET", "/places", {"params": {"under": w.city}}),
        lambda w: Request("GET", "/places", {"params": {"under": w.d(2)}}),
    ),
    ("GET", "/places/{place_id}"): Guard(
        "read",
        lambda w: Request("GET", f"/places/{w.d(1)}"),
        lambda w: Request("GET", f"/places/{w.d(2)}"),
    ),
    ("PUT", "/places/{place_id}"): Guard(
        "places.write",
        lambda w: Request(
            "PUT", f"/places/{w.s(1)}", {"json": {"name": f"S1 {uid()}", "parent_id": w.d(1)}}
        ),
        lambda w: Request(
            "PUT", f"/places/{w.s(2)}", {"json": {"name": "S2", "parent_id": w.d(2)}}
        ),
    ),
    ("POST", "/places/{place_id}/move"): Guard(
        "places.write",
        # the world's incident lies under s1: moved with it left there, as it stays in d1
        lambda w: Request(
            "POST", f"/places/{w.s(1)}/move", {"json": {"parent_id": w.d(1), "with_open": True}}
        ),
        lambda w: Request(
            "POST", f"/places/{w.s(1)}/move", {"json": {"parent_id": w.d(2), "with_open": True}}
        ),
    ),
    ("DELETE", "/places/{place_id}"): Guard(
        "places.write",
        lambda w: Request("DELETE", f"/places/{w.spare('places', 2)}"),
        lambda w: Request("DELETE", f"/places/{w.spare('places', 2)}"),
    ),
    ("GET", "/profiles"): Guard("read", lambda w: Request("GET", "/profiles")),
    ("DELETE", "/profiles/{profile_id}"): Guard(
        "places.write", lambda w: Request("DELETE", f"/profiles/{w.spare('profiles')}"), "city"
    ),
    ("GET", "/profiles/{profile_id}"): Guard("read", lambda w: Request("GET", "/profiles/none")),
    ("PUT", "/profiles/{profile_id}"): Guard(
        "places.write",
        lambda w: Request(
            "PUT",
            f"/profiles/acc-{uid()}",
            {"json": {"device_type": "water_level", "expected_interval_s": 60}},
        ),
        "city",
    ),
    ("GET", "/departments"): Guard("read", lambda w: Request("GET", "/departments")),
    ("GET", "/departments/{department_id}"): Guard(
        "read", lambda w: Request("GET", f"/departments/{DEPARTMENT}")
    ),
    ("PUT", "/departments/{department_id}"): Guard(
        "places.write",
        lambda w: Request("PUT", f"/departments/acc-{uid()}", {"json": {"name": "X"}}),
        "city",
    ),
    ("DELETE", "/departments/{department_id}"): Guard(
        "places.write",
        lambda w: Request("DELETE", f"/departments/{w.spare('departments')}"),
        "city",
    ),
    ("GET", "/audit"): Guard("audit.read", lambda w: Request("GET", "/audit"), "city"),
    ("GET", "/liveness/devices"): Guard(
        "read",
        lambda w: Request("GET", "/liveness/devices"),
        lambda w: Request("GET", "/liveness/devices", {"params": {"place": w.d(2)}}),
    ),
    ("GET", "/liveness/outages"): Guard(
        "read",
        lambda w: Request("GET", "/liveness/outages"),
        lambda w: Request("GET", "/liveness/outages", {"params": {"place": w.d(2)}}),
    ),
    ("GET", "/vitals/{place_id}"): Guard(
        "read",
        lambda w: Request("GET", f"/vitals/{w.d(1)}"),
        lambda w: Request("GET", f"/vitals/{w.d(2)}"),
    ),
    ("GET", "/vitals/{place_id}/history"): Guard(
        "read",
        lambda w: Request("GET", f"/vitals/{w.d(1)}/history", {"params": {"indicator": "aqi"}}),
        lambda w: Request("GET", f"/vitals/{w.d(2)}/history", {"params": {"indicator": "aqi"}}),
    ),
    ("GET", "/incidents"): Guard(
        "read",
        lambda w: Request("GET", "/incidents"),
        lambda w: Request("GET", "/incidents", {"params": {"place": f"{w.city}/{w.d(2)}"}}),
    ),
    ("GET", "/incidents/performance"): Guard(
        "read", lambda w: Request("GET", "/incidents/performance"), "city"
    ),
    ("GET", "/alerts"): Guard(
        "read",
        lambda w: Request("GET", "/alerts"),
        lambda w: Request("GET", "/alerts", {"params": {"place": w.d(2)}}),
    ),
    ("GET", "/alerts/{alert_id}"): Guard(
        "read",
        lambda w: Request("GET", f"/alerts/{w.alerts['d1']}"),
        lambda w: Request("GET", f"/alerts/{w.alerts['d2']}"),
    ),
    ("GET", "/incidents/{incident_id}"): Guard(
        "read",
        lambda w: Request("GET", f"/incidents/{w.incidents['d1']}"),
        lambda w: Request("GET", f"/incidents/{w.incidents['d2']}"),
    ),
    ("POST", "/incidents/{incident_id}/actions"): Guard(
        "incidents.act", lambda w: _action(w, 1), lambda w: _action(w, 2)
    ),
    ("POST", "/reports"): Guard(
        "reports.create",
        lambda w: Request(
            "POST", "/reports", {"json": {"place_id": w.s(1), "category": "general", "text": "t"}}
        ),
        lambda w: Request(
            "POST", "/reports", {"json": {"place_id": w.s(2), "category": "general", "text": "t"}}
        ),
    ),
    ("GET", "/incidents/{incident_id}/readings"): Guard(
        "read",
        lambda w: Request("GET", f"/incidents/{w.incidents['d1']}/readings"),
        lambda w: Request("GET", f"/incidents/{w.incidents['d2']}/readings"),
    ),
    ("GET", "/console/config"): Guard("read", lambda w: Request("GET", "/console/config")),
    ("GET", "/console/events"): Guard(
        "read", lambda w: Request("GET", "/console/events", {"params": {"once": "true"}})
    ),
    ("GET", "/open311/v2/requests.json"): Guard(
        "read", lambda w: Request("GET", "/open311/v2/requests.json")
    ),
    ("GET", "/open311/v2/services.json"): Guard(
        "read", lambda w: Request("GET", "/open311/v2/services.json")
    ),
}
"""Every route but OPEN_PATHS. A route missing here fails test_every_route_is_guarded."""

DENIED = {
    "devices.read": "operator",
    "devices.write": "officer",
    "places.write": "officer",
    "incidents.act": "operator",
    "reports.create": "reader",
    "audit.read": "operator",
}
"""A user whose role lacks the permission ("read": every role has it)."""

IN_D1 = {
    "devices.read": "engineer_d1",
    "devices.write": "engineer_d1",
    "places.write": "engineer_d1",
    "audit.read": "engineer_d1",
}
"""The d1 user who has the permission (else ``officer_d1``)."""


def routes(settings: Any) -> set[tuple[str, str]]:
    pool = RegistryPool.open(settings, size=1)
    try:
        app = create_api(settings, pool)
    finally:
        pool.close()
    return set(_flat(app.routes, ""))


def _flat(routes: list[Any], prefix: str) -> Iterator[tuple[str, str]]:
    """(method, path) of each API route, also inside included routers (which this FastAPI
    keeps as one route each)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield from ((m, prefix + route.path) for m in route.methods)
        elif hasattr(route, "original_router"):
            inner = prefix + route.include_context.prefix
            yield from _flat(route.original_router.routes, inner)


DOCS = {"/docs", "/docs/oauth2-redirect", "/redoc"}


def test_every_route_is_guarded(world: World) -> None:
    served = {(m, p) for m, p in routes(world.settings) if p not in DOCS}
    open_ = {(m, p) for m, p in served if p in OPEN_PATHS}
    assert open_ == {
        ("POST", "/session"),
        ("DELETE", "/session"),
        ("GET", "/health"),
        ("GET", "/console"),
        ("GET", "/console/assets/{name}"),
    }
    assert served - open_ == set(GUARDS), "a route without a guard in GUARDS (or a stale one)"
    assert set(DENIED) == set(PERMISSIONS) - {"read", "incidents.feedback", "users.admin"}


@pytest.mark.parametrize("route", sorted(GUARDS), ids=" ".join)
def test_without_a_valid_token_every_route_answers_401(
    world: World, route: tuple[str, str]
) -> None:
    request = GUARDS[route].request(world)
    none = world.call(None, request)
    assert none.status_code == 401, none.text
    assert none.headers["www-authenticate"] == "Bearer"
    assert "no token" in none.json()["detail"]
    for who in ("disabled", "rotated"):
        answer = world.call(who, request)
        assert answer.status_code == 401, (who, answer.text)
        assert "not valid" in answer.json()["detail"]
        assert world.tokens[who] not in answer.text
    wrong = world.call(None, request, Authorization="Bearer not-a-token")
    assert wrong.status_code == 401 and "not-a-token" not in wrong.text
    basic = world.call(None, request, Authorization="Basic dXNlcjpwdw==")
    assert basic.status_code == 401 and "Bearer <token>" in basic.json()["detail"]


@pytest.mark.parametrize(
    "route", sorted(r for r, g in GUARDS.items() if g.permission != "read"), ids=" ".join
)
def test_a_role_without_the_permission_gets_403(world: World, route: tuple[str, str]) -> None:
    guard = GUARDS[route]
    answer = world.call(DENIED[guard.permission], guard.request(world))
    assert answer.status_code == 403, answer.text
    assert guard.permission in answer.json()["detail"]


@pytest.mark.parametrize(
    "route", sorted(r for r, g in GUARDS.items() if g.outside is not None), ids=" ".join
)
def test_a_place_outside_the_scope_gets_403(world: World, route: tuple[str, str]) -> None:
    guard = GUARDS[route]
    who = IN_D1.get(guard.permission, "officer_d1")
    if guard.outside == "city":
        answer = world.call(who, guard.request(world))
        assert answer.status_code == 403, answer.text
        assert "whole city" in answer.json()["detail"]
        return
    assert callable(guard.outside)
    answer = world.call(who, guard.outside(world))
    assert answer.status_code == 403, answer.text
    detail = answer.json()["detail"]
    assert world.d(2) in detail and f"{world.city}/{world.d(1)}" in detail, detail


def test_the_admin_passes_every_guard(world: World) -> None:
    for route, guard in sorted(GUARDS.items()):
        answer = world.call("admin", guard.request(world))
        assert answer.status_code not in (401, 403), (route, answer.text)
        assert answer.status_code < 500, (route, answer.text)


# --- lists hold what is in scope --------------------------------------------------------------


def test_a_district_officer_sees_only_its_district(world: World) -> None:
    with world.client("officer_d1") as officer:
        incidents = {
            i["incident_id"] for i in officer.get("/incidents", params={"limit": 10_000}).json()
        }
        assert world.incidents["d1"] in incidents and world.incidents["d2"] not in incidents
        everyone = officer.get("/incidents", params={"place": world.city, "limit": 10_000}).json()
        assert all(i["place_path"][:2] == [world.city, world.d(1)] for i in everyone)
        assert world.incidents["d1"] in {i["incident_id"] for i in everyone}
        places = [p["place_id"] for p in officer.get("/places").json()]
        assert places == [world.d(1), world.s(1)]
        liveness = officer.get("/liveness/devices").json()
        assert all(d["place_path"][:2] == [world.city, world.d(1)] for d in liveness)
        vitals = officer.get(f"/vitals/{world.d(1)}")
        assert vitals.status_code == 200, vitals.text
    with world.client("engineer_d1") as engineer:
        devices = {d["device_id"] for d in engineer.get("/devices").json()}
        assert devices and world.devices["d2"] not in devices and world.devices["d1"] in devices
        at_city = engineer.get("/devices", params={"place": world.city}).json()
        assert {d["device_id"] for d in at_city} == devices
        imported = engineer.post("/devices/import", json=[_device_body(world, 2)]).json()
        assert imported["added"] == [] and imported["errors"][0]["field"] == "place_path"
    with world.client("admin") as admin:
        both = {
            i["incident_id"] for i in admin.get("/incidents", params={"place": world.city}).json()
        }
        assert set(world.incidents.values()) <= both


def sse_events(text: str) -> list[tuple[str, Any]]:
    """The (event, data) pairs of a server-sent event stream's text."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_the_console_stream_keeps_to_the_scope(world: World) -> None:
    def incidents_seen(who: str) -> set[str]:
        with world.client(who) as c:
            answer = c.get("/console/events", params={"once": "true"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/event-stream")
        return {
            data["incident_id"] for event, data in sse_events(answer.text) if event == "incident"
        }

    d1, d2 = world.incidents["d1"], world.incidents["d2"]
    seen = incidents_seen("officer_d1")
    assert d1 in seen and d2 not in seen
    assert {d1, d2} <= incidents_seen("officer")
    with world.client("officer_d1") as c:
        config = c.get("/console/config").json()
    assert config["home"] == [world.d(1)]
    # the reassign form offers the departments: the routing's and those registered
    assert {"street-ops", "water-affairs", DEPARTMENT} <= set(config["departments"])
    assert config["departments"] == sorted(config["departments"])
    # its scope's places by name, the city above the district it may see included
    with open_registry(world.settings) as registry:
        names = {p.place_id: p.name for p in registry.list_places()}
    assert config["scope_names"] == {world.city: names[world.city], world.d(1): names[world.d(1)]}


def test_a_scope_changed_while_the_console_streams_ends_it_to_reload_not_to_log_in(
    world: World,
) -> None:
    """It ended with 'the token is no longer valid', and the officer asked for a new token:
    the token still works, the console reloads with the new scope."""
    name = f"officer-{uid()}"
    token = add_user(world.settings, name, Role.DUTY_OFFICER, (world.city, world.d(1)))
    api = f"http://127.0.0.1:{world.settings.api_port}"
    with (
        httpx.Client(base_url=api, timeout=60, headers=bearer(token)) as c,
        c.stream("GET", "/console/events") as answer,
    ):
        assert answer.status_code == 200
        seen: list[str] = []
        for line in answer.iter_lines():
            seen.append(line)
            if line == "event: hello":
                with open_registry(world.settings) as registry:
                    registry.set_scope(name, (world.city, world.d(2)), "itest")
            if line.startswith("data: ") and seen[-2:-1] == ["event: end"]:
                end = json.loads(line.removeprefix("data: "))
                break
    assert end == {"reason": f"{name}'s scope changed: the console reloads with it", "reload": True}
    with httpx.Client(base_url=api, timeout=60, headers=bearer(token)) as c:
        assert c.get("/console/config").json()["home"] == [world.d(2)]  # the same token


def test_the_console_stream_shows_an_outage_above_the_scope_without_its_devices(
    world: World,
) -> None:
    """A district officer sees the city's outage, which holds their district (its counts,
    not the devices it names elsewhere), and not another district's."""
    from datetime import UTC, datetime

    from device_registry.liveness_store import LivenessStore
    from device_registry.outages import outage_id

    now = datetime.now(UTC).replace(microsecond=0)
    rows = {
        "city": ([world.city], ["far-1", "far-2"]),
        "d2": ([world.city, world.d(2)], ["d2-dev"]),
    }
    with db.connect(world.settings) as conn:
        for place_path, devices in rows.values():
            ident = outage_id(place_path[-1], now)
            conn.execute(
                LivenessStore.UPSERT_OUTAGE,
                (ident, place_path[-1], place_path, "started", 9, 7, now, now, devices),
            )
    try:

        def outages_seen(who: str) -> dict[str, dict[str, Any]]:
            with world.client(who) as c:
                answer = c.get("/console/events", params={"once": "true"})
            [devices] = [d for event, d in sse_events(answer.text) if event == "devices"]
            return {o["place_id"]: o for o in devices["outages"]}

        mine = outages_seen("officer_d1")
        assert set(mine) == {world.city}  # not d2's
        assert mine[world.city]["above_scope"] is True and "devices" not in mine[world.city]
        assert (mine[world.city]["devices_silent"], mine[world.city]["devices_total"]) == (7, 9)
        every = outages_seen("officer")
        assert set(every) == {world.city, world.d(2)}
        assert every[world.city]["devices"] == ["far-1", "far-2"]
        assert "above_scope" not in every[world.city]
    finally:
        with db.connect(world.settings) as conn:
            conn.execute(
                "DELETE FROM place_outages WHERE place_id = ANY(%s)", [[world.city, world.d(2)]]
            )


def test_the_console_page_is_open_and_its_data_is_not(world: World) -> None:
    with world.client(None) as anyone:
        page = anyone.get("/console")
        assert page.status_code == 200 and "/console/assets/console.js" in page.text
        for name, kind in (("console.js", "javascript"), ("console.css", "css")):
            asset = anyone.get(f"/console/assets/{name}")
            assert asset.status_code == 200 and kind in asset.headers["content-type"]
        assert anyone.get("/console/assets/secrets.txt").status_code == 404
        assert anyone.get("/console/events").status_code == 401


def test_reports_and_open311_keep_to_the_scope(world: World) -> None:
    made = {}
    with world.client("officer") as officer:
        for n in (1, 2):
            body = {"place_id": world.s(n), "category": "general", "text": f"r{n}"}
            sent = officer.post("/reports", json=body)
            assert sent.status_code == 202, sent.text
            made[n] = sent.json()["report_id"]
    with world.client("admin") as admin:
        for n in (1, 2):
            entries = admin.get("/audit", params={"entity": "report", "entity_id": made[n]}).json()
            assert [e["action"] for e in entries] == ["report"]
            assert entries[0]["actor"].endswith("(duty_officer)")
    # The sinks store reports as the stage forwards them: wait until both are served.
    from tests.integration.conftest import wait_for

    def served(who: str) -> set[str]:
        with world.client(who) as c:
            return {r["service_request_id"] for r in c.get("/open311/v2/requests.json").json()}

    wait_for(lambda: set(made.values()) <= served("admin"), what="both reports in Open311")
    mine = served("officer_d1")
    assert made[1] in mine and made[2] not in mine


# --- actions and their actors -----------------------------------------------------------------


def test_department_operators_answer_only_their_own_dispatches(world: World) -> None:
    own, other = _action(world, 1, "accept"), _action(world, 2, "accept")
    assert world.call("operator", own).status_code == 202
    refused = world.call("operator", other)
    assert refused.status_code == 403 and "other-dept" in refused.json()["detail"]
    note = world.call("operator", _action(world, 1, "note"))  # progress, on its own: taken
    assert note.status_code == 202, note.text
    assert world.call("operator", _action(world, 2, "note")).status_code == 403
    close = world.call("operator", _action(world, 1, "close"))  # a duty officer's
    assert close.status_code == 403, close.text
    assert close.json()["detail"].startswith(  # not "may not incidents.act": it may act
        "close is not a department's to send but a duty officer's (incidents.act: admin, "
        "duty_officer); "
    )
    assert "may send accept, handled, note, on_site, reject on its department's" in close.text
    unknown = world.call("operator", _action(world, 1, "extinguish"))  # no action at all
    assert unknown.status_code == 422 and "is not one people send" in unknown.text
    assert world.call("reader", own).status_code == 403
    someone = world.call("officer", _action(world, 1), **{"X-Actor": "someone-else"})
    assert someone.status_code == 403 and "someone-else" in someone.json()["detail"]


def test_the_detail_lists_the_actions_the_user_may_send_now(world: World) -> None:
    """The console's buttons: what the incident's state allows that the role may send, a
    department operator's only on an incident with its department."""
    path = (world.city, world.d(1), world.s(1))
    with db.connect(world.settings) as conn:
        ours = store_incident(conn, path, DEPARTMENT, IncidentState.DISPATCHED)
        theirs = store_incident(conn, path, "other-dept", IncidentState.DISPATCHED)
        on_site = store_incident(conn, path, DEPARTMENT, IncidentState.ON_SITE)
        closed = store_incident(conn, path, DEPARTMENT, IncidentState.CLOSED)

    def actions(who: str, incident_id: str) -> list[str]:
        with world.client(who) as c:
            got = c.get(f"/incidents/{incident_id}")
        assert got.status_code == 200, got.text
        return list(got.json()["actions"])

    answers = ["accept", "reject"]
    assert actions("officer", ours) == [*answers, "close", "reassign", "note", "acknowledge"]
    # a department notes its progress on its own incidents ("pump 2 failed, two hours more")
    assert actions("operator", ours) == [*answers, "note"]
    assert actions("operator", theirs) == []
    assert actions("operator", on_site) == ["handled", "note"]
    assert actions("reader", ours) == []
    assert actions("officer", closed) == ["reopen", "note"]
    assert actions("operator", closed) == ["note"]
    # handled, its alert still firing: no verify (it would close), until the sensors agree
    with db.connect(world.settings) as conn:
        wet = store_incident(conn, path, DEPARTMENT, IncidentState.HANDLED, open_alerts=1)
        dry = store_incident(conn, path, DEPARTMENT, IncidentState.HANDLED)
    assert actions("officer", wet) == ["close", "reopen", "note", "acknowledge"]
    assert actions("officer", dry) == ["verify", "close", "reopen", "note", "acknowledge"]
    with db.connect(world.settings) as conn:  # seen already: no second acknowledgement
        seen = store_incident(conn, path, DEPARTMENT, IncidentState.HANDLED, acknowledged_by="ana")
    assert actions("officer", seen) == ["verify", "close", "reopen", "note"]
    refused = world.call(
        "officer", Request("POST", f"/incidents/{wet}/actions", {"json": {"action": "verify"}})
    )
    assert refused.status_code == 422 and "1 of its alerts still fires" in refused.text
    with db.connect(world.settings) as conn:  # not handled yet: the state is the reason first
        early = store_incident(conn, path, DEPARTMENT, IncidentState.DISPATCHED, open_alerts=1)
    refused = world.call(
        "officer", Request("POST", f"/incidents/{early}/actions", {"json": {"action": "verify"}})
    )
    assert refused.status_code == 409, refused.text
    assert "verify is not allowed while the incident is dispatched" in refused.text
    # a second accept of the order it holds: with that order it only moves on, so refused
    # now (it was taken, 202, and refused later by the stage, a dead letter nobody saw)
    order = uuid.uuid4().hex
    with db.connect(world.settings) as conn:
        taken = store_incident(conn, path, DEPARTMENT, IncidentState.ACCEPTED, dispatch_id=order)
    again = world.call(
        "operator", Request("POST", f"/incidents/{taken}/actions", {"json": {"action": "accept"}})
    )
    assert again.status_code == 409, again.text
    assert "accept is not allowed while the incident is accepted (you may send: " in again.text
    on_site = world.call(
        "operator", Request("POST", f"/incidents/{taken}/actions", {"json": {"action": "on_site"}})
    )
    assert on_site.status_code == 202, on_site.text


def _user_name(world: World, who: str) -> str:
    with world.client(who) as c:
        return str(c.get("/me").json()["name"])


def test_every_write_and_action_is_audited_with_the_user(world: World) -> None:
    """Each guarded write, made by a city-wide user of the role that may make it."""
    writers = {
        "devices.write": "engineer",
        "places.write": "engineer",
        "incidents.act": "officer",
        "reports.create": "officer",
    }
    for route, guard in sorted(GUARDS.items()):
        if route[0] == "GET":
            continue
        who = writers[guard.permission]
        name = _user_name(world, who)
        with world.client("admin") as admin:
            before = admin.get("/audit", params={"limit": 1}).json()[0]
        answer = world.call(who, guard.request(world))
        assert answer.status_code in (200, 201, 202, 204), (route, answer.text)
        with world.client("admin") as admin:
            entries = admin.get("/audit", params={"limit": 50}).json()
        new = entries[: entries.index(before)] if before in entries else entries
        mine = [e for e in new if e["actor"].startswith(f"{name} (")]
        assert mine, (route, new[:3])
        if route[1].startswith("/incidents"):
            assert mine[0]["action"] == "acknowledge" and mine[0]["entity"] == "incident"
            assert mine[0]["after"]["user"] == name


def test_the_feedback_names_the_user_and_role(world: World, pipeline: Pipeline) -> None:
    from cityvitals import kafka
    from cityvitals.contracts import Feedback
    from cityvitals.topics import Topic
    from tests.integration.conftest import wait_for

    sent = world.call("officer_d1", _action(world, 1, "acknowledge"))
    assert sent.status_code == 202, sent.text
    feedback_id = sent.json()["feedback_id"]
    consumer = kafka.consumer(pipeline.settings, f"itest-{uuid.uuid4().hex}")
    consumer.subscribe([pipeline.settings.topic(Topic.DISPATCH_FEEDBACK)])
    found: list[Feedback] = []

    def seen() -> bool:
        for message in consumer.consume(1000, 0.5):
            value = message.value()
            if value and feedback_id.encode() in value:
                found.append(Feedback.model_validate_json(value))
        return bool(found)

    try:
        wait_for(seen, what="the feedback on dispatch.feedback")
    finally:
        consumer.close()
    name = _user_name(world, "officer_d1")
    assert found[0].actor == f"{name} (duty_officer)"


# --- the console's login ----------------------------------------------------------------------


def test_a_session_cookie_stands_for_the_token(world: World) -> None:
    base = f"http://127.0.0.1:{world.settings.api_port}"
    with httpx.Client(base_url=base, timeout=30) as browser:
        assert browser.get("/me").status_code == 401
        refused = browser.post("/session", json={"token": "wrong"})
        assert refused.status_code == 401 and TOKEN_COOKIE not in browser.cookies
        login = browser.post("/session", json={"token": world.tokens["officer_d1"]})
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        me = browser.get("/me").json()
        assert me["role"] == "duty_officer" and me["scope"] == [world.city, world.d(1)]
        assert "incidents.act" in me["permissions"] and "devices.write" not in me["permissions"]
        assert world.tokens["officer_d1"] not in json.dumps(me)
        assert browser.get(f"/incidents/{world.incidents['d2']}").status_code == 403
        assert browser.delete("/session").status_code == 204
        assert browser.get("/me").status_code == 401
    assert world.call("rotated_new", Request("GET", "/me")).status_code == 200
    for open_path in ("/health", "/docs", "/openapi.json"):
        assert httpx.get(base + open_path, timeout=30).status_code == 200, open_path


# --- cityvitals users -------------------------------------------------------------------------


def users(world: World, *args: str) -> Any:
    from typer.testing import CliRunner

    from wiring.cli import app

    return CliRunner().invoke(app, ["users", *args], env=world.settings.to_env())


def test_the_users_command_shows_a_token_once_and_the_api_takes_it(world: World) -> None:
    name, scope = f"cli-{uid()}", f"{world.city}/{world.d(1)}"
    added = users(world, "add", name, "--role", "duty_officer", "--scope", scope)
    assert added.exit_code == 0, added.output
    (token,) = [line.split(": ", 1)[1] for line in added.stdout.splitlines() if "token:" in line]
    assert "only its hash is stored" in added.stderr
    world.tokens[name] = token
    me = world.call(name, Request("GET", "/me")).json()
    assert (me["name"], me["role"], me["scope"]) == (name, "duty_officer", scope.split("/"))
    listed = users(world, "list")
    assert name in listed.stdout and token not in listed.stdout

    rotated = users(world, "token", name)
    assert rotated.exit_code == 0, rotated.output
    token_line, console = rotated.stdout.splitlines()[:2]
    world.tokens[f"{name}-new"] = token_line.removeprefix("token: ")
    port = world.settings.api_port
    assert (
        console == f"console: http://127.0.0.1:{port}/console#token={world.tokens[f'{name}-new']}"
    )
    assert world.call(name, Request("GET", "/me")).status_code == 401
    assert world.call(f"{name}-new", Request("GET", "/me")).status_code == 200

    assert users(world, "disable", name).exit_code == 0
    assert world.call(f"{name}-new", Request("GET", "/me")).status_code == 401
    with world.client("admin") as admin:
        entries = admin.get("/audit", params={"entity": "user", "limit": 1000}).json()
    mine = [e["action"] for e in entries if (e["after"] or e["before"] or {}).get("name") == name]
    assert mine[-1:] == ["add"] and "disable" in mine
    assert not any(token in json.dumps(e) for e in entries)

    bad = users(world, "add", f"x-{uid()}", "--role", "duty_officer", "--scope", "nowhere/x")
    assert bad.exit_code == 1 and "scope 'nowhere/x'" in bad.output
    no_dept = users(world, "add", f"x-{uid()}", "--role", "department_operator")
    assert no_dept.exit_code == 1 and "department" in no_dept.output
    taken = users(world, "add", name, "--role", "read_only")
    assert taken.exit_code == 1 and "exists" in taken.output
