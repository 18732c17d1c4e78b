"""Alerts read back, against the real PostgreSQL: episodes written through the alert sink (as
the sinks service writes them) are listed by filter and shown with every transition and their
incident, by the queries, the CLI (in the city's time zone) and the API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from cityvitals import db
from cityvitals.contracts import (
    Action,
    Alert,
    AlertResolution,
    AlertStatus,
    AnomalyCause,
    AnomalyWhy,
    Incident,
    IncidentSource,
    IncidentState,
    IncidentTransition,
    IncidentUpdate,
    WarningLevel,
)
from cityvitals.settings import Settings
from sinks import AlertFilter, AlertSink, IncidentSink, alert_detail, list_alerts
from tests.integration.conftest import TEST_DAY, Pipeline, api_client, at
from wiring.cli import app

pytestmark = pytest.mark.integration

T0 = datetime.fromisoformat(at("08:00:00"))
Conn = psycopg.Connection[tuple[Any, ...]]


def hexid() -> str:
    return uuid.uuid4().hex


def episode(
    conn: Conn,
    city: str,
    rule: str,
    device: str,
    street: str,
    *steps: tuple[AlertStatus, WarningLevel, float, datetime],
) -> str:
    """One alert episode written transition by transition through the alert sink."""
    alert_id = hexid()
    started = steps[0][3]
    AlertSink(conn).write(
        [
            Alert(
                alert_id=alert_id,
                revision=revision,
                rule_id=rule,
                status=status,
                level=level,
                device_id=device,
                metric="water_level_cm",
                value=value,
                threshold=10,
                place_path=(city, f"{city}-d", street),
                device_type="water_level",
                started_at=started,
                ts=ts,
                summary=f"{rule} on {device}: {value:g}",
                resolution=AlertResolution.CLEARED if status is AlertStatus.RESOLVED else None,
            )
            for revision, (status, level, value, ts) in enumerate(steps)
        ]
    )
    return alert_id


def made_alerts(conn: Conn, city: str) -> dict[str, str]:
    """Three episodes: ``deep`` fired yellow, went red, resolved; ``wet`` fired blue and still
    fires; ``hot`` (another rule, another street) fired orange an hour later and fires."""
    F, R = AlertStatus.FIRING, AlertStatus.RESOLVED
    m = timedelta(minutes=1)
    deep = episode(
        conn,
        city,
        "waterlogging-depth",
        f"{city}-wl-1",
        f"{city}-s1",
        (F, WarningLevel.YELLOW, 12, T0),
        (F, WarningLevel.RED, 31, T0 + 5 * m),
        (R, WarningLevel.RED, 4, T0 + 20 * m),
    )
    wet = episode(
        conn,
        city,
        "waterlogging-depth",
        f"{city}-wl-2",
        f"{city}-s1",
        (F, WarningLevel.BLUE, 11, T0 + 10 * m),
    )
    hot = episode(
        conn,
        city,
        "heat-index",
        f"{city}-th-1",
        f"{city}-s2",
        (F, WarningLevel.ORANGE, 40, T0 + 60 * m),
    )
    return {"deep": deep, "wet": wet, "hot": hot}


def hold(conn: Conn, city: str, alert_id: str) -> Incident:
    """An incident whose alerts list ``alert_id``, stored through the incident sink."""
    incident = Incident(
        incident_id=hexid(),
        revision=0,
        category="flooding",
        state=IncidentState.NEW,
        level=WarningLevel.RED,
        source=IncidentSource.ALERT,
        place_id=f"{city}-s1",
        place_path=(city, f"{city}-d", f"{city}-s1"),
        title=f"flooding at {city}-s1",
        opened_at=T0 + timedelta(minutes=1),
        updated_at=T0 + timedelta(minutes=1),
        alerts=(alert_id,),
    )
    transition = IncidentTransition(
        incident_id=incident.incident_id,
        revision=0,
        action=Action.OPEN,
        from_state=None,
        to_state=IncidentState.NEW,
        actor="platform",
        ts=incident.opened_at,
    )
    IncidentSink(conn).write([IncidentUpdate(incident=incident, transition=transition)])
    return incident


@pytest.fixture()
def town(pipeline: Pipeline) -> Iterator[Settings]:
    """A schema of its own, in Asia/Shanghai."""
    settings = pipeline.settings.model_copy(
        update={"database_schema": f"al{uuid.uuid4().hex[:12]}", "timezone": "Asia/Shanghai"}
    )
    db.migrate(settings)
    try:
        yield settings
    finally:
        with db.connect(settings) as conn:
            conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def test_alerts_are_listed_by_filter_newest_first_and_shown_with_their_incident(
    town: Settings,
) -> None:
    with db.connect(town) as conn:
        made = made_alerts(conn, "ta")
        incident = hold(conn, "ta", made["deep"])

        def ids(**where: Any) -> list[str]:
            return [a.alert_id for a in list_alerts(conn, AlertFilter(**where))]

        deep, wet, hot = made["deep"], made["wet"], made["hot"]
        assert ids() == [hot, deep, wet]  # the last changed first
        assert ids(status=AlertStatus.FIRING) == [hot, wet]
        assert ids(status=AlertStatus.RESOLVED) == [deep]
        assert ids(rule="heat-index") == [hot]
        assert ids(level=WarningLevel.ORANGE) == [hot, deep]  # at least orange
        assert ids(level=WarningLevel.BLUE) == [hot, deep, wet]
        assert ids(place="ta-s1") == [deep, wet]
        assert ids(place="ta/ta-d/ta-s2") == [hot]
        assert ids(place="ta/ta-s1") == []  # a prefix is a path from the root
        assert ids(device="ta-wl-2") == [wet]
        assert ids(since=T0 + timedelta(minutes=30)) == [hot, wet]  # deep resolved before
        assert ids(until=T0 + timedelta(minutes=30)) == [deep, wet]  # hot started after
        assert ids(limit=1) == [hot]

        listed = list_alerts(conn, AlertFilter(device="ta-wl-1"))[0]
        assert (listed.status, listed.level, listed.revision, listed.value) == (
            "resolved",
            "red",
            2,
            4.0,
        )
        assert listed.resolved_at == T0 + timedelta(minutes=20)
        assert listed.resolution == "cleared"  # not a silent sensor's (stale) nor retired
        assert list_alerts(conn, AlertFilter(device="ta-wl-2"))[0].resolution is None

        shown = alert_detail(conn, deep)
        assert [(t.revision, t.status, t.level, t.value) for t in shown.transitions] == [
            (0, "firing", "yellow", 12.0),
            (1, "firing", "red", 31.0),
            (2, "resolved", "red", 4.0),
        ]
        assert shown.incident is not None and shown.incident.incident_id == incident.incident_id
        assert alert_detail(conn, wet).incident is None


def run(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, ["alerts", *args], env=settings.to_env())


def test_the_cli_lists_and_shows_alerts_in_the_city_zone(town: Settings) -> None:
    with db.connect(town) as conn:
        made = made_alerts(conn, "tb")
        incident = hold(conn, "tb", made["deep"])
        conn.execute(
            "INSERT INTO places (place_id, level, name, path) VALUES"
            " ('tb', 'city', 'Town', '{tb}'), ('tb-d', 'district', 'Down', '{tb,tb-d}'),"
            " ('tb-s1', 'street', 'Canal Street', '{tb,tb-d,tb-s1}')"
        )

    listed = run(town, "list", "--firing")
    assert listed.exit_code == 0, listed.output
    assert "Asia/Shanghai" in listed.output
    assert made["hot"] in listed.output and made["wet"] in listed.output
    assert made["deep"] not in listed.output
    assert f"{TEST_DAY} 17:00:00" in listed.output  # hot started 09:00 UTC, 17:00 in Shanghai

    data = json.loads(run(town, "list", "--level", "yellow", "--place", "tb-s1", "--json").output)
    assert [a["alert_id"] for a in data] == [made["deep"]]
    # A misspelt place is no place, not "no alerts" (read as all quiet); a name is named back.
    for place, said in (
        ("tb-s9", "--place 'tb-s9': no such place (an id, or a path a/b"),
        ("canal street", "--place 'canal street': no such place; it is the name of 'tb-s1'"),
        ("tb/tb-s1", "--place 'tb/tb-s1': no such path; tb-s1 is at tb/tb-d/tb-s1"),
        ("/", "--place '/': no place id"),
    ):
        refused = run(town, "list", "--place", place)
        assert refused.exit_code == 1 and said in refused.output, refused.output
    by_path = json.loads(
        run(town, "list", "--level", "yellow", "--place", "tb/tb-d/tb-s1", "--json").output
    )
    assert [a["alert_id"] for a in by_path] == [made["deep"]]
    assert data[0]["started_at"] == f"{TEST_DAY}T16:00:00+08:00"
    since = json.loads(
        run(
            town,
            "list",
            "--since",
            at("08:30:00"),
            "--rule",
            "waterlogging-depth",
            "--json",
        ).output
    )
    assert [a["alert_id"] for a in since] == [made["wet"]]
    by_device = json.loads(run(town, "list", "--device", "tb-th-1", "--json").output)
    assert [a["alert_id"] for a in by_device] == [made["hot"]]

    shown = run(town, "show", made["deep"])
    assert shown.exit_code == 0, shown.output
    assert f"{TEST_DAY} 16:05:00    1 firing   red    31" in shown.output
    assert f"resolved {TEST_DAY} 16:20:00 (cleared)" in shown.output
    assert f"incident: {incident.incident_id} new red flooding" in shown.output
    detail = json.loads(run(town, "show", made["deep"], "--json").output)
    assert [t["level"] for t in detail["transitions"]] == ["yellow", "red", "red"]
    assert detail["incident"]["incident_id"] == incident.incident_id
    assert detail["transitions"][2]["ts"] == f"{TEST_DAY}T16:20:00+08:00"
    alone = run(town, "show", made["wet"])
    assert "incident: none" in alone.output
    by_start = run(town, "show", made["deep"][:8])  # as the lists and the console show it
    assert by_start.exit_code == 0 and f"alert {made['deep']} " in by_start.output
    short = run(town, "show", made["deep"][:3])
    assert short.exit_code == 1 and "the start of an id takes 4 digits or more" in short.output

    # A place's alert (a composite rule's) is shown as the place's, with its devices.
    with db.connect(town) as conn:
        fire = hexid()
        AlertSink(conn).write(
            [
                Alert(
                    alert_id=fire,
                    revision=0,
                    rule_id="smoke-fire-confirmed",
                    status=AlertStatus.FIRING,
                    level=WarningLevel.RED,
                    device_id="tb-gas-1",
                    metric="gas_lel_pct",
                    value=2,
                    threshold=2,
                    place_path=("tb", "tb-d", "tb-s3", "tb-s3-g1"),
                    device_type="gas",
                    started_at=T0,
                    ts=T0,
                    summary="smoke-fire-confirmed at tb-s3-g1: tb-cam-1, tb-gas-1 (red)",
                    evidence=("tb-cam-1", "tb-gas-1"),
                )
            ]
        )
    place = run(town, "show", fire)
    assert "place tb/tb-d/tb-s3/tb-s3-g1, last judged on a gas_lel_pct reading of tb-gas-1" in (
        place.output
    )
    assert "devices holding a condition: 2 (2 needed)" in place.output
    assert "against" not in place.output
    # Resolved, a composite alert has no evidence, and an anomaly's value is a score: each is
    # told in its rule's terms (the rules in force), not as the metric's value.
    ended, unusual = hexid(), hexid()
    common = {"revision": 1, "status": AlertStatus.RESOLVED, "level": WarningLevel.RED,
              "place_path": ("tb", "tb-d", "tb-s3", "tb-s3-g1"), "started_at": T0, "ts": T0,
              "summary": "resolved"}  # fmt: skip
    with db.connect(town) as conn:
        AlertSink(conn).write(
            [
                Alert(alert_id=ended, rule_id="smoke-fire-confirmed", device_id="tb-gas-1",
                      metric="gas_lel_pct", value=0, threshold=2, device_type="gas", **common),
                Alert(alert_id=unusual, rule_id="power-load-unusual", device_id="tb-pw-1",
                      metric="load_kw", value=0.04, threshold=0.9, device_type="power", **common),
            ]
        )  # fmt: skip
    assert "devices holding a condition: 0 (2 needed)" in run(town, "show", ended).output
    assert "load_kw: anomaly score 0.04 against 0.9" in run(town, "show", unusual).output
    assert "(2 devices)" in run(town, "list", "--rule", "smoke-fire-confirmed").output

    missing = run(town, "show", "f" * 32)
    assert missing.exit_code == 1 and f"alert {'f' * 32!r} does not exist" in missing.output
    bad = run(town, "list", "--level", "purple")
    assert bad.exit_code == 1 and "--level 'purple'" in bad.output
    both = run(town, "list", "--firing", "--resolved")
    assert both.exit_code == 1 and "exclude each other" in both.output
    when = run(town, "list", "--since", "yesterday")
    assert when.exit_code == 1 and "--since" in when.output
    ghost = run(town, "list", "--device", "nosuch-device")
    assert ghost.exit_code == 1, ghost.output
    assert "--device 'nosuch-device': no device 'nosuch-device' in the registry" in ghost.output
    assert run(town, "list", "--device", "tb-wl-2", "--resolved").output == "no alerts\n"


@pytest.fixture(scope="module")
def api(pipeline: Pipeline, admin_token: str) -> Iterator[httpx.Client]:
    with api_client(pipeline.settings, admin_token) as client:
        yield client


def test_the_api_lists_and_shows_alerts(pipeline: Pipeline, api: httpx.Client) -> None:
    city = f"ac{uuid.uuid4().hex[:8]}"
    pipeline.register("water_level", f"{city}/{city}-d/{city}-s1")  # the places filtered by
    with db.connect(pipeline.settings) as conn:
        made = made_alerts(conn, city)
        incident = hold(conn, city, made["deep"])

    mine = {"place": city}
    listed = api.get("/alerts", params=mine)
    assert listed.status_code == 200, listed.text
    assert [a["alert_id"] for a in listed.json()] == [made["hot"], made["deep"], made["wet"]]
    firing = api.get("/alerts", params={**mine, "status": "firing", "level": "orange"})
    assert [a["alert_id"] for a in firing.json()] == [made["hot"]]
    window = api.get(
        "/alerts",
        params={**mine, "since": at("08:30:00"), "until": f"{TEST_DAY}T08:30:00"},
    )
    assert [a["alert_id"] for a in window.json()] == [made["wet"]]
    by = api.get("/alerts", params={"device": f"{city}-wl-1", "rule": "waterlogging-depth"})
    assert [a["alert_id"] for a in by.json()] == [made["deep"]]
    assert api.get("/alerts", params={**mine, "limit": 2}).json()[1]["alert_id"] == made["deep"]
    assert api.get("/alerts", params={"level": "purple"}).status_code == 422
    assert api.get("/alerts", params={"since": "1700000000"}).status_code == 422

    shown = api.get(f"/alerts/{made['deep']}")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["alert"]["status"] == "resolved" and body["alert"]["place_path"][0] == city
    assert body["alert"]["resolution"] == "cleared"
    assert [t["revision"] for t in body["transitions"]] == [0, 1, 2]
    assert body["incident"]["incident_id"] == incident.incident_id
    assert api.get(f"/alerts/{made['wet']}").json()["incident"] is None
    missing = api.get(f"/alerts/{'a' * 32}")
    assert missing.status_code == 404 and f"alert {'a' * 32!r}" in missing.json()["detail"]

    # A filter naming nothing is refused, as a place is: its empty list would read as quiet.
    # One that names something (a registered device with no alert, a routed department, a
    # category of the configuration, none with incidents here) answers the empty list.
    quiet_device = pipeline.register("water_level", f"{city}/{city}-d/{city}-s1")[0]
    for path, params, field, said in (
        ("/alerts", {"device": "nosuch-device"}, "device", "no device 'nosuch-device'"),
        ("/incidents", {"department": "stret-ops"}, "department", "no department 'stret-ops'"),
        ("/incidents", {"category": "lava"}, "category", "no category 'lava'; one of:"),
    ):
        refused = api.get(path, params={**mine, **params})
        assert refused.status_code == 422, refused.text
        (problem,) = refused.json()["detail"]
        assert problem["loc"] == ["query", field] and said in problem["msg"], problem
    for path, params in (
        ("/alerts", {"device": quiet_device}),
        ("/incidents", {"department": "street-ops"}),
        ("/incidents", {"category": "flooding", "state": "closed"}),
    ):
        named = api.get(path, params={**mine, **params})
        assert (named.status_code, named.json()) == (200, []), named.text

    # An anomaly alert's why, as numbers: kept from its firing when its resolution has none.
    why = AnomalyWhy(cause=AnomalyCause.NOVEL, measured=400.0, expected=52.5, low=40.1,
                     high=64.9, baseline="hour of day", rarity=None, usual_low=38.0,
                     usual_high=66.0, new_every=310.0, hour=7)  # fmt: skip
    unusual = hexid()
    with db.connect(pipeline.settings) as conn:
        AlertSink(conn).write(
            [
                Alert(alert_id=unusual, revision=revision, rule_id="power-load-unusual",
                      status=status, level=WarningLevel.YELLOW, device_id=f"{city}-pw-1",
                      metric="load_kw", value=score, threshold=0.99, device_type="power",
                      place_path=(city, f"{city}-d", f"{city}-s1"), started_at=T0,
                      ts=T0 + timedelta(minutes=5 * revision), summary="unusual",
                      anomaly=why if revision == 0 else None)
                for revision, status, score in ((0, AlertStatus.FIRING, 1.0),
                                                (1, AlertStatus.RESOLVED, 0.1))
            ]
        )  # fmt: skip
    stored = api.get(f"/alerts/{unusual}").json()["alert"]
    assert stored["status"] == "resolved" and stored["anomaly"] == why.model_dump(mode="json")
    assert (
        api.get("/alerts", params={"rule": "power-load-unusual", "place": city}).json()[0][
            "anomaly"
        ]["cause"]
        == "novel"
    )
    assert api.get(f"/alerts/{made['wet']}").json()["alert"]["anomaly"] is None
