"""The simulated incidents raise the alerts the README promises.

Each incident kind is run in event time, at the defaults of ``./dev run`` (readings every
``INTERVAL_S``, the incident ``INCIDENT_AFTER_S`` in), through the gateway's decoder and the
rule engine (the backtest loop, ticking as the stream does) with the shipped
``rules/default.yaml``. Nothing waits in real time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from types import SimpleNamespace

import pytest

from cityvitals.contracts import Alert, AlertStatus, DeviceState, WarningLevel
from cityvitals.settings import Settings
from ingest.decode import decode
from rules import observations, parse_rules
from rules.backtest import Backtest
from wiring.simulate import (
    INCIDENT_AFTER_S,
    INCIDENTS,
    INTERVAL_S,
    City,
    CityModel,
    IncidentSpecError,
    build_city,
    plan_incidents,
)

RULES = parse_rules(
    resources.files("rules").joinpath("default.yaml").read_text(), "rules/default.yaml"
)
TICK = timedelta(seconds=Settings.model_fields["rules_tick_s"].default)
ROOT = "cityvitals"
NIGHT = datetime(2026, 7, 1, 3, 0, tzinfo=UTC)
EVENING_RUSH = datetime(2026, 7, 1, 17, 45, tzinfo=UTC)
AFTERWARDS = timedelta(minutes=20)
"""How long the run goes on after the incident ended: every alert it raised resolves by then."""
BLUE, YELLOW, ORANGE, RED = (
    WarningLevel.BLUE,
    WarningLevel.YELLOW,
    WarningLevel.ORANGE,
    WarningLevel.RED,
)


@dataclass
class Run:
    """The alerts one incident raised in its grid; times are seconds since the incident began."""

    alerts: list[Alert]
    began: datetime

    def of(self, rule_id: str) -> list[Alert]:
        return [a for a in self.alerts if a.rule_id == rule_id]

    def levels(self, rule_id: str) -> list[WarningLevel]:
        """The levels the rule fired at, in order, each change once."""
        out: list[WarningLevel] = []
        for a in self.of(rule_id):
            if a.status is AlertStatus.FIRING and (not out or out[-1] is not a.level):
                out.append(a.level)
        return out

    def first(self, rule_id: str, level: WarningLevel) -> float:
        ts = min(
            a.ts for a in self.of(rule_id) if a.status is AlertStatus.FIRING and a.level is level
        )
        return (ts - self.began).total_seconds()

    def open_at_end(self) -> list[str]:
        last = {a.alert_id: a for a in self.alerts}
        return sorted(a.rule_id for a in last.values() if a.status is not AlertStatus.RESOLVED)


def run(kind: str, start: datetime) -> Run:
    city = build_city()
    (incident,) = plan_incidents(city, [kind], INCIDENT_AFTER_S)
    grid = tuple(d for d in city.devices if incident.place_id in d.place_path)
    model = CityModel(City(city.places, grid), [incident])
    backtest = Backtest(RULES, tick=TICK)
    alerts: list[Alert] = []
    end = incident.start + incident.duration + AFTERWARDS.total_seconds()
    for step in range(int(end / INTERVAL_S) + 1):
        elapsed = step * INTERVAL_S
        now = start + timedelta(seconds=elapsed)
        for message in model.messages(elapsed, now):
            topic = f"{ROOT}/{message.topic}"
            item = decode(ROOT, topic, json.dumps(message.body).encode(), now)
            device = message.device
            item = item.model_copy(
                update={"device_type": device.device_type, "place_path": device.place_path}
            )
            alerts += backtest.feed(observations(item, None, device.tags))
    return Run(alerts, start + timedelta(seconds=incident.start))


@pytest.fixture(scope="module", params=[NIGHT, EVENING_RUSH], ids=["night", "evening-rush"])
def start(request: pytest.FixtureRequest) -> datetime:
    return request.param  # type: ignore[no-any-return]


def test_a_flood_passes_every_depth_level_and_its_fast_rise_is_warned_of_first(
    start: datetime,
) -> None:
    flood = run("flood", start)
    assert flood.levels("waterlogging-depth")[:4] == [BLUE, YELLOW, ORANGE, RED]
    assert flood.levels("water-rising-fast")
    warned = flood.first("water-rising-fast", flood.levels("water-rising-fast")[0])
    assert (
        warned < flood.first("waterlogging-depth", ORANGE) < flood.first("waterlogging-depth", RED)
    )
    assert {a.rule_id for a in flood.alerts} == {"waterlogging-depth", "water-rising-fast"}
    assert flood.open_at_end() == []


def test_a_fire_seen_by_the_camera_is_confirmed_red_by_the_gas_sensor(start: datetime) -> None:
    fire = run("fire", start)
    assert fire.levels("camera-smoke-fire") == [ORANGE]
    assert fire.levels("smoke-fire-confirmed") == [RED]
    (confirmed, *_) = fire.of("smoke-fire-confirmed")
    assert {d.split("-")[1] for d in confirmed.evidence} == {"camera", "gas"}
    assert fire.levels("gas-lel") == [YELLOW]
    assert fire.open_at_end() == []


def test_congestion_holds_long_enough_to_alert(start: datetime) -> None:
    jam = run("congestion", start)
    assert ORANGE in jam.levels("arterial-congestion")
    if start == NIGHT:  # in the evening rush the road stays slow after the incident
        assert jam.open_at_end() == []


def test_smog_and_a_gas_leak_alert_and_end(start: datetime) -> None:
    smog, leak = run("smog", start), run("gas", start)
    assert ORANGE in smog.levels("pm25-pollution")
    assert ORANGE in leak.levels("gas-lel")
    assert not leak.of("smoke-fire-confirmed")  # gas alone confirms no fire
    assert smog.open_at_end() == leak.open_at_end() == []


def test_every_incident_kind_is_tested() -> None:
    assert set(INCIDENTS) == {"flood", "fire", "congestion", "smog", "gas"}


def test_incident_specs_are_planned_in_turn_or_refused_with_the_reason() -> None:
    city = build_city()
    flood, fire = plan_incidents(city, ["flood", "fire@sim-d2-s1-g2"], 20.0)
    assert (flood.place_id, flood.start) == ("sim-d1-s1-g1", 20.0)
    assert (fire.place_id, fire.start) == ("sim-d2-s1-g2", 50.0)
    with pytest.raises(IncidentSpecError, match="kind must be one of"):
        plan_incidents(city, ["tsunami"], 0)
    with pytest.raises(IncidentSpecError, match="'sim-d9' is not a grid"):
        plan_incidents(city, ["flood@sim-d9"], 0)


def test_an_incident_may_be_under_way_when_the_simulator_starts_but_not_over() -> None:
    city = build_city()
    (flood,) = plan_incidents(city, ["flood"], -120.0)
    assert flood.start == -120.0 and flood.strength(0.0) == pytest.approx(0.1)
    with pytest.raises(IncidentSpecError, match="over 5 s before the simulator starts"):
        plan_incidents(city, ["fire"], -365.0)  # a fire's course lasts 360 s


def test_every_place_above_a_grid_is_at_the_middle_of_its_grids() -> None:
    """The console's map puts an incident at its place's point: a district's or a street's
    incident is drawn where its grids are, not at a point of the city's outside them."""
    from cityvitals.contracts import PlaceLevel
    from wiring.simulate import build_city

    places = build_city().places
    grids = [p for p in places if p.level is PlaceLevel.GRID]
    above = [
        p for p in places if p.level in (PlaceLevel.CITY, PlaceLevel.DISTRICT, PlaceLevel.STREET)
    ]
    assert len(above) == 1 + 3 + 6
    for place in above:
        under = [g for g in grids if g.path[: len(place.path)] == place.path]
        lats = [g.lat for g in under if g.lat is not None]
        lons = [g.lon for g in under if g.lon is not None]
        assert len(lats) == len(lons) == len(under)
        assert place.lat is not None and place.lon is not None
        assert min(lats) <= place.lat <= max(lats) and min(lons) <= place.lon <= max(lons)
        assert place.lat == pytest.approx(sum(lats) / len(lats), abs=1e-6)


def test_a_restart_renews_the_simulators_secrets_and_no_one_elses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulator keeps no secrets across runs, so its devices get new ones at each start;
    a device someone registered in the simulated city keeps its own."""
    from collections.abc import Sequence
    from contextlib import contextmanager
    from typing import Any

    from wiring import cli_stack, services, simulate

    city = build_city(districts=1, streets=1, grids=1)
    theirs = "wl-0001"  # registered by hand at one of the simulated grids
    rotated: list[str] = []

    class Registry:
        def put_places(self, *_: Any) -> None: ...

        def list(self, place: str) -> list[Any]:
            ids = (*(x.device_id for x in city.devices), theirs)
            return [SimpleNamespace(device_id=d, state=DeviceState.ACTIVE) for d in ids]

        def add_many(self, *_: Any) -> Sequence[Any]:
            raise AssertionError("every simulated device is registered already")

        def rotate_secrets(self, ids: Sequence[str], actor: str) -> dict[str, str]:
            rotated.extend(ids)
            return {i: "s" for i in ids}

    @contextmanager
    def registry(_: Settings) -> Any:
        yield Registry()

    monkeypatch.setattr(services, "open_registry", registry)
    monkeypatch.setattr(simulate, "Simulator", lambda *a, **k: None)
    monkeypatch.setattr("wiring.cli_stack.time.sleep", lambda _: None)
    cli_stack._prepare_simulator(Settings(), 42, 5.0, city, [])
    assert sorted(rotated) == sorted(d.device_id for d in city.devices)
    assert theirs not in rotated


def test_every_simulated_device_is_with_a_department_of_the_shipped_routing() -> None:
    """``up`` registers the routing's departments; a simulated device naming another would be
    a department the registry does not know."""
    from importlib import resources

    from rules.incidents import parse_incident_config
    from wiring.simulate.city import DEPARTMENTS

    routing = resources.files("rules").joinpath("incidents.yaml").read_text()
    departments = {route.department for route in parse_incident_config(routing).routes}
    assert set(DEPARTMENTS.values()) <= departments


def test_the_simulated_day_is_the_citys_and_its_nights_raise_no_noise_alert() -> None:
    """The simulated day follows the city's zone (Asia/Shanghai here): 24 hours of every
    device, no incident, through the shipped rules read in that zone raise no noise alert
    (the night limit, 55, included; the rush hours' slow traffic is congestion, blue). Its road
    noise peaks in the local evening rush and falls at night; in UTC, Shanghai's night would
    be the simulated afternoon."""
    from zoneinfo import ZoneInfo

    shanghai = ZoneInfo("Asia/Shanghai")
    city = build_city()
    backtest = Backtest(
        parse_rules(
            resources.files("rules").joinpath("default.yaml").read_text(), zone=str(shanghai)
        ),
        tick=TICK,
    )
    model = CityModel(city, (), zone=shanghai)
    start = datetime(2026, 7, 1, 12, 0, tzinfo=shanghai)
    noise: dict[int, list[float]] = {}
    alerts: list[Alert] = []
    for step in range(24 * 12):  # every 5 minutes
        now = start + timedelta(minutes=5 * step)
        for message in model.messages(step * 300.0, now):
            topic = f"{ROOT}/{message.topic}"
            item = decode(ROOT, topic, json.dumps(message.body).encode(), now)
            device = message.device
            item = item.model_copy(
                update={"device_type": device.device_type, "place_path": device.place_path}
            )
            if device.device_type == "noise":
                noise.setdefault(now.hour, []).append(item.values["laeq_db"])
            alerts += backtest.feed(observations(item, None, device.tags))
    assert {a.rule_id for a in alerts} == {"arterial-congestion"}
    rush = {a.ts.astimezone(shanghai).hour for a in alerts if a.status is AlertStatus.FIRING}
    assert rush <= {7, 8, 9, 10, 16, 17, 18, 19}, rush  # the local rush hours
    night = [v for h in (22, 23, 0, 1, 2, 3, 4, 5) for v in noise[h]]
    evening = noise[18]
    assert max(night) < 55 < min(evening)
