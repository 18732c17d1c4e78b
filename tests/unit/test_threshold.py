from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from cityvitals.contracts import AlertStatus, CameraEvent, Reading, WarningLevel
from rules import Observation, ThresholdRule, ThresholdState, evaluate, observations

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
WATER = ThresholdRule(
    id="water",
    metric="water_level_cm",
    clear=3,
    levels={WarningLevel.BLUE: 5, WarningLevel.YELLOW: 15, WarningLevel.ORANGE: 25},
)


def obs(value: float, minutes: int = 0, **kw: object) -> Observation:
    fields: dict = {
        "device_id": "wl-1",
        "device_type": "water_level",
        "place_path": ("c", "d1", "s1"),
        "metric": "water_level_cm",
        "value": value,
        "ts": T0 + timedelta(minutes=minutes),
    }
    fields.update(kw)
    return Observation(**fields)


def run(rule: ThresholdRule, values: list[float]) -> tuple[ThresholdState | None, list]:
    state, alerts = None, []
    for i, v in enumerate(values):
        state, alert = evaluate(rule, state, obs(v, i))
        if alert is not None:
            alerts.append(alert)
    return state, alerts


def test_quiet_series_keeps_no_state_and_raises_nothing() -> None:
    assert evaluate(WATER, None, obs(1.0)) == (None, None)


def test_fires_at_the_highest_level_passed() -> None:
    _, alerts = run(WATER, [1, 17])
    assert [(a.status, a.level, a.threshold) for a in alerts] == [
        (AlertStatus.FIRING, WarningLevel.YELLOW, 15)
    ]
    assert alerts[0].started_at == T0 + timedelta(minutes=1)
    assert alerts[0].place_path == ("c", "d1", "s1")


def test_level_changes_in_place_with_the_same_alert_id() -> None:
    _, alerts = run(WATER, [6, 16, 30, 18])
    assert [a.level for a in alerts] == [
        WarningLevel.BLUE,
        WarningLevel.YELLOW,
        WarningLevel.ORANGE,
        WarningLevel.YELLOW,
    ]
    assert len({a.alert_id for a in alerts}) == 1
    assert [a.revision for a in alerts] == [0, 1, 2, 3]


def test_hysteresis_holds_until_the_clear_level() -> None:
    state, alerts = run(WATER, [6, 4, 3.5])
    assert len(alerts) == 1 and state is not None  # 4 and 3.5 are inside the band: still firing
    state, alert = evaluate(WATER, state, obs(2.9, 10))
    assert alert is not None and alert.status is AlertStatus.RESOLVED
    assert alert.alert_id == alerts[0].alert_id and alert.revision == 1
    assert state is not None and state.alert_id is None and state.last_ts == alert.ts


def test_without_clear_it_resolves_below_the_lowest_level() -> None:
    rule = WATER.model_copy(update={"clear": None})
    _, alerts = run(rule, [6, 4.9])
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]


def test_a_new_episode_gets_a_new_id() -> None:
    _, alerts = run(WATER, [6, 0, 6])
    assert alerts[0].alert_id != alerts[2].alert_id


def test_replayed_or_older_observation_changes_nothing_while_firing() -> None:
    state, first = evaluate(WATER, None, obs(20, 5))
    assert first is not None
    for replay in (obs(20, 5), obs(40, 4), obs(0, 5)):
        again, alert = evaluate(WATER, state, replay)
        assert again is state and alert is None


def test_a_replay_after_the_episode_resolved_opens_no_new_episode() -> None:
    state, alerts = run(WATER, [1, 8, 9, 1])
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    again, alert = evaluate(WATER, state, obs(9, 2))  # the over-threshold reading, replayed
    assert again is state and alert is None


def test_the_watermark_is_forgotten_a_day_after_the_episode() -> None:
    state, _ = run(WATER, [8, 1])
    assert state is not None
    kept, _ = evaluate(WATER, state, obs(1, 60 * 23))
    assert kept is state  # nothing to store
    gone, _ = evaluate(WATER, state, obs(1, 60 * 25))
    assert gone is None


def test_same_inputs_give_the_same_alert_id() -> None:
    _, a = evaluate(WATER, None, obs(20, 5))
    _, b = evaluate(WATER, None, obs(20, 5))
    assert a is not None and b is not None and a.alert_id == b.alert_id


def test_below_rules_fire_when_the_value_drops() -> None:
    rule = ThresholdRule(
        id="slow",
        metric="speed_kmh",
        direction="below",
        clear=35,
        levels={WarningLevel.BLUE: 30, WarningLevel.YELLOW: 20, WarningLevel.ORANGE: 15},
    )
    state, alerts = None, []
    for i, v in enumerate([40, 18, 12, 33, 36]):
        state, alert = evaluate(rule, state, obs(v, i, metric="speed_kmh"))
        alerts += [alert] if alert else []
    assert [(a.status.value, a.level.value) for a in alerts] == [
        ("firing", "yellow"),
        ("firing", "orange"),
        ("firing", "blue"),
        ("resolved", "blue"),
    ]


def test_scope_by_device_type_place_and_confidence() -> None:
    rule = WATER.model_copy(update={"device_types": ("water_level",), "places": ("s1",)})
    assert rule.applies_to(obs(1))
    assert not rule.applies_to(obs(1, device_type="camera"))
    assert not rule.applies_to(obs(1, place_path=("c", "d2", "s9")))
    assert not rule.applies_to(obs(1, metric="pm25"))
    cam = ThresholdRule(
        id="fire", metric="camera.smoke_fire", min_confidence=0.8, levels={WarningLevel.RED: 0.5}
    )
    assert cam.applies_to(obs(0.9, metric="camera.smoke_fire", confidence=0.85))
    assert not cam.applies_to(obs(0.9, metric="camera.smoke_fire", confidence=0.5))


@pytest.mark.parametrize(
    "levels",
    [{"blue": 10, "yellow": 5}, {"yellow": 5, "red": 5}],
)
def test_levels_must_rise_strictly(levels: dict) -> None:
    with pytest.raises(ValidationError, match="strictly"):
        ThresholdRule(id="x", metric="m", levels=levels)


def test_clear_must_not_be_past_the_lowest_level() -> None:
    with pytest.raises(ValidationError, match="clear"):
        ThresholdRule(id="x", metric="m", levels={"blue": 5}, clear=6)


def test_state_round_trips_through_json() -> None:
    state, _ = evaluate(WATER, None, obs(20))
    assert state is not None
    assert ThresholdState.model_validate_json(state.model_dump_json()) == state


def test_observations_of_readings_and_camera_events() -> None:
    r = Reading(
        device_id="aq", ts=T0, seq=1, values={"pm25": 1, "pm10": 2}, device_type="air_quality"
    )
    assert [(o.metric, o.value) for o in observations(r)] == [("pm25", 1), ("pm10", 2)]
    e = CameraEvent(
        camera_id="cam", ts=T0, seq=1, event_type="smoke_fire", value=0.9, confidence=0.8
    )
    (o,) = observations(e)
    assert (o.device_id, o.metric, o.confidence) == ("cam", "camera.smoke_fire", 0.8)
