"""The semantics of every rule kind, judged reading by reading in event time (no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from cityvitals.contracts import Alert, AlertStatus, CameraEvent, Reading, WarningLevel
from rules import (
    Arrival,
    DeviceMemory,
    Observation,
    PlaceMemory,
    RuleFileError,
    RuleSet,
    ThresholdRule,
    evaluate_device,
    evaluate_place,
    observations,
    parse_rules,
    sweep_device,
    sweep_place,
)
from rules.kinds.rate import RATE_POINTS

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
PATH = ("c", "d1", "s1", "g1")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def obs(value: float, minutes: float = 0, **kw: Any) -> Observation:
    fields: dict[str, Any] = {
        "device_id": "wl-1",
        "device_type": "water_level",
        "place_path": PATH,
        "metric": "water_level_cm",
        "value": value,
        "ts": at(minutes),
    }
    fields.update(kw)
    return Observation(**fields)


def rules(text: str) -> RuleSet:
    return parse_rules(text, "test.yaml")


WATER = rules(
    """
rules:
  - id: water
    metric: water_level_cm
    clear: 3
    levels: {blue: 5, yellow: 15, orange: 25}
"""
)


@dataclass
class Device:
    """One device's memory threaded through readings, as the stream keeps it."""

    rules: RuleSet
    memory: DeviceMemory | None = None
    alerts: list[Alert] = field(default_factory=list)

    def read(self, *observed: Observation) -> Arrival:
        out = evaluate_device(self.rules, self.memory, list(observed))
        self.memory = out.memory
        self.alerts += out.alerts
        return out.arrival

    def series(self, values: list[float], every: float = 1.0, **kw: Any) -> Device:
        for i, v in enumerate(values):
            self.read(obs(v, i * every, **kw))
        return self

    def tick(self, minutes: float, **subject: Any) -> None:
        assert self.memory is not None
        out = sweep_device(self.rules, self.memory, obs(0, minutes, **subject), at(minutes))
        self.memory = out.memory
        self.alerts += out.alerts

    @property
    def story(self) -> list[tuple[str, str]]:
        return [(a.status.value, a.level.value) for a in self.alerts]


# --- threshold and levels ---------------------------------------------------------------------


def test_a_quiet_series_raises_nothing_and_keeps_only_its_watermark() -> None:
    d = Device(WATER).series([1, 2, 1])
    assert d.alerts == [] and d.memory is not None and d.memory.rules == {}


def test_fires_at_the_highest_level_passed() -> None:
    d = Device(WATER).series([1, 17])
    assert d.story == [("firing", "yellow")]
    (a,) = d.alerts
    assert a.threshold == 15 and a.started_at == at(1) and a.place_path == PATH


def test_a_level_changes_in_place_with_the_same_alert_id() -> None:
    d = Device(WATER).series([6, 16, 30, 18])
    assert [a.level for a in d.alerts] == [
        WarningLevel.BLUE,
        WarningLevel.YELLOW,
        WarningLevel.ORANGE,
        WarningLevel.YELLOW,
    ]
    assert len({a.alert_id for a in d.alerts}) == 1
    assert [a.revision for a in d.alerts] == [0, 1, 2, 3]


def test_hysteresis_holds_until_the_clear_level() -> None:
    d = Device(WATER).series([6, 4, 3.5, 2.9])
    assert d.story == [("firing", "blue"), ("resolved", "blue")]
    assert d.alerts[1].ts == at(3) and d.alerts[1].revision == 1


def test_a_level_held_by_the_all_clear_is_judged_against_it_and_says_so() -> None:
    """Down from yellow to 4 cm (under blue's 5, over the all-clear 3): the alert drops to
    blue, held, and its text names the all-clear it is judged against, not a 5 it did not
    pass."""
    d = Device(WATER).series([17, 4])
    assert d.story == [("firing", "yellow"), ("firing", "blue")]
    held = d.alerts[-1]
    assert held.value == 4 and held.threshold == 3
    assert held.summary.endswith("reached 3 (blue): held at blue until under 3, the all-clear")


def test_without_clear_it_resolves_below_the_lowest_level() -> None:
    d = Device(rules("rules: [{id: w, metric: water_level_cm, levels: {blue: 5}}]"))
    assert d.series([6, 4.9]).story == [("firing", "blue"), ("resolved", "blue")]


def test_a_new_episode_gets_a_new_id_and_the_same_inputs_the_same_id() -> None:
    d = Device(WATER).series([6, 0, 6])
    assert d.alerts[0].alert_id != d.alerts[2].alert_id
    again = Device(WATER).series([6, 0, 6])
    assert [a.alert_id for a in again.alerts] == [a.alert_id for a in d.alerts]


def test_below_rules_fire_when_the_value_drops() -> None:
    rs = rules(
        "rules: [{id: slow, metric: speed_kmh, direction: below, clear: 35,"
        " levels: {blue: 30, yellow: 20, orange: 15}}]"
    )
    d = Device(rs).series([40, 18, 12, 33, 36], metric="speed_kmh")
    assert d.story == [
        ("firing", "yellow"),
        ("firing", "orange"),
        ("firing", "blue"),
        ("resolved", "orange"),  # the episode's peak
    ]
    # at its level's threshold exactly it fires, and says so (not "reached", nor "below")
    at = Device(rs).series([40, 20], metric="speed_kmh").alerts[0]
    assert at.summary == "speed_kmh 20 at wl-1, at or below 20 (yellow)", at.summary


# --- for and keep_firing_for ------------------------------------------------------------------

HELD = rules(
    """
rules:
  - id: held
    metric: water_level_cm
    levels: {yellow: 15, red: 40}
    for: 10m
    keep_firing_for: 5m
"""
)


def test_for_keeps_the_alert_pending_until_the_condition_held_long_enough() -> None:
    d = Device(HELD).series([20, 20], every=5)
    assert d.alerts == []
    d.read(obs(20, 10))
    assert d.story == [("firing", "yellow")]
    assert d.alerts[0].started_at == at(0)  # the episode started when the condition did


def test_for_starts_over_when_the_condition_breaks() -> None:
    d = Device(HELD).series([20, 20, 1, 20, 20], every=5)  # 0, 5, (10 breaks), 15, 20
    assert d.alerts == []
    d.read(obs(20, 25))
    assert d.story == [("firing", "yellow")] and d.alerts[0].started_at == at(15)


def test_a_sparse_series_fires_at_its_first_reading_after_for() -> None:
    d = Device(HELD).series([20, 20], every=30)
    assert d.story == [("firing", "yellow")] and d.alerts[0].ts == at(30)


def test_keep_firing_for_rides_out_a_short_dip() -> None:
    d = Device(HELD).series([20] * 3, every=5)  # fires at 10
    for minutes, value in ((12, 1), (14, 20), (16, 1), (19, 1)):
        d.read(obs(value, minutes))
    assert d.story == [("firing", "yellow")]  # the dips lasted less than 5 minutes
    d.read(obs(1, 21))
    assert d.story == [("firing", "yellow"), ("resolved", "yellow")]
    assert d.alerts[1].ts == at(21)


def test_a_worse_level_is_taken_at_once_and_a_better_one_after_keep_firing_for() -> None:
    d = Device(HELD).series([20] * 3, every=5)
    d.read(obs(45, 11))
    d.read(obs(20, 12))
    assert d.story == [("firing", "yellow"), ("firing", "red")]
    d.read(obs(20, 17))
    assert d.story[-1] == ("firing", "yellow") and d.alerts[-1].ts == at(17)


# --- rate -------------------------------------------------------------------------------------

RATE = rules(
    """
rules:
  - id: rising
    kind: rate
    metric: water_level_cm
    over: 30m
    per: 1h
    levels: {yellow: 10, orange: 30}
"""
)


def test_a_rate_rule_judges_the_change_over_its_window() -> None:
    d = Device(RATE).series([0, 1, 2, 3], every=10)  # 6 cm/h
    assert d.alerts == []
    d.read(obs(12, 40))  # 12 - 1 over 30 minutes: 22 cm/h
    assert d.story == [("firing", "yellow")]
    assert d.alerts[0].value == pytest.approx(22)
    d.read(obs(12.5, 70))  # the window now starts at 12 (t=40): 1 cm/h
    assert d.story == [("firing", "yellow"), ("resolved", "yellow")]
    assert d.alerts[-1].summary.endswith("; water_level_cm changing +1 per 1h")  # a rate


def test_a_rate_rule_keeps_a_bounded_window() -> None:
    d = Device(RATE).series([float(i % 3) for i in range(500)], every=0.01)
    assert d.memory is not None and len(d.memory.rules["rising"].memory) <= RATE_POINTS + 2


def test_a_day_long_rate_compares_with_about_the_same_hour_yesterday() -> None:
    """Readings every 5 minutes of a daily cycle (amplitude 100) that does not drift: over
    24 hours nothing changes, whatever the hour. The points kept are a window's 64 slots, so
    the one judged against is 23 h 15 min to 24 h old (halving them had left it 13 to 24 h
    old, and every afternoon read as a rise of hundreds a day)."""
    daily = rules(
        """
rules:
  - {id: creep, kind: rate, metric: water_level_cm, over: 24h, per: 1d, levels: {yellow: 80}}
"""
    )
    day = [100 * math.sin(2 * math.pi * i / 288) for i in range(288)]
    d = Device(daily).series(day * 4, every=5)
    assert d.alerts == []
    kept = d.memory.rules["creep"].memory if d.memory else []
    assert len(kept) <= RATE_POINTS + 2
    age = at(5 * (4 * 288 - 1)) - datetime.fromisoformat(kept[0][0])
    assert timedelta(hours=23, minutes=15) <= age <= timedelta(hours=24)


# --- absence ----------------------------------------------------------------------------------

ABSENT = rules(
    """
rules:
  - id: no-pm25
    kind: absence
    metric: pm25
    after: 30m
    device_types: [air_quality]
"""
)


def aq(minutes: float, **values: float) -> list[Observation]:
    return [
        obs(v, minutes, metric=m, device_id="aq-1", device_type="air_quality")
        for m, v in values.items()
    ]


def test_absence_fires_when_other_metrics_come_but_this_one_does_not() -> None:
    d = Device(ABSENT)
    d.read(*aq(0, pm25=10, no2=5))
    d.read(*aq(20, no2=5))
    assert d.alerts == []
    d.read(*aq(31, no2=5))
    assert d.story == [("firing", "yellow")]
    assert d.alerts[0].metric == "pm25" and d.alerts[0].value == 31 * 60
    d.read(*aq(32, pm25=11))
    assert d.story[-1] == ("resolved", "yellow")
    # Its value was the silence it judged: "pm25 now 0" read as clean air.
    assert d.alerts[-1].summary.endswith("; pm25 reported again")


def test_absence_of_a_silent_device_is_found_by_the_clock() -> None:
    d = Device(ABSENT)
    d.read(*aq(0, pm25=10))
    aq1 = {"device_id": "aq-1", "device_type": "air_quality"}
    d.tick(29, **aq1)
    assert d.alerts == []
    d.tick(30, **aq1)
    assert d.story == [("firing", "yellow")]
    assert (d.alerts[0].device_id, d.alerts[0].ts) == ("aq-1", at(30))
    d.tick(40, **aq1)
    assert len(d.alerts) == 1  # no duplicate transition at the next tick


def test_absence_applies_only_in_scope() -> None:
    d = Device(ABSENT).series([1, 2], every=60)  # a water level device: out of scope
    assert d.alerts == [] and d.memory is not None and d.memory.rules == {}


# --- event time: out of order and late ------------------------------------------------------


def test_an_older_reading_within_grace_is_out_of_order_and_moves_nothing() -> None:
    d = Device(WATER).series([20, 21])
    before = d.memory
    assert d.read(obs(0, 0.5)) is Arrival.OUT_OF_ORDER
    assert d.read(obs(20, 1)) is Arrival.OUT_OF_ORDER  # the same instant again: a replay
    assert d.memory is before and d.story == [("firing", "yellow")]


def test_a_reading_older_than_the_grace_is_late() -> None:
    d = Device(rules("grace: 5m\nrules: [{id: w, metric: water_level_cm, levels: {blue: 5}}]"))
    d.read(obs(1, 60))
    assert d.read(obs(9, 56)) is Arrival.OUT_OF_ORDER
    assert d.read(obs(9, 54)) is Arrival.LATE
    assert d.alerts == []


# --- composite rules: several metrics or devices of one place --------------------------------

FLOOD = rules(
    """
rules:
  - id: flash-flood
    kind: composite
    group_by: street
    window: 15m
    conditions:
      - {metric: rain_mm_h, above: 20}
      - {metric: water_level_cm, above: 10}
    level: orange
  - id: smoke-confirmed
    kind: composite
    group_by: grid
    window: 5m
    require: any
    min_devices: 2
    conditions:
      - {metric: camera.smoke_fire, above: 0.5, min_confidence: 0.8}
      - {metric: smoke_ppm, above: 300}
    level: red
"""
)


@dataclass
class Place:
    rules: RuleSet
    memories: dict[str, PlaceMemory] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)

    def read(self, *observed: Observation) -> None:
        """Through the device stage to the place stage, as the stream routes them."""
        for o in observed:
            for sent in evaluate_device(self.rules, None, [o]).for_places:
                place = sent.place_path[-1]
                self.memories[place], alerts = evaluate_place(
                    self.rules, self.memories.get(place), sent
                )
                self.alerts += alerts

    def tick(self, minutes: float) -> None:
        for place, memory in list(self.memories.items()):
            self.memories[place], alerts = sweep_place(self.rules, memory, at(minutes))
            self.alerts += alerts


def test_a_composite_rule_needs_every_condition_within_its_window() -> None:
    p = Place(FLOOD)
    p.read(obs(25, 0, device_id="rain-1", metric="rain_mm_h", place_path=("c", "d1", "s1", "g2")))
    assert p.alerts == []
    p.read(obs(12, 10, device_id="wl-1"))
    (a,) = p.alerts
    assert (a.rule_id, a.level, a.status) == (
        "flash-flood",
        WarningLevel.ORANGE,
        AlertStatus.FIRING,
    )
    assert a.place_path == ("c", "d1", "s1") and a.evidence == ("rain-1", "wl-1")
    # A place's alert counts the devices whose readings hold, against the devices needed:
    # not the last reading against one condition's threshold.
    assert (a.value, a.threshold) == (2.0, 1.0)
    p.tick(14)
    assert len(p.alerts) == 1
    p.tick(16)  # the rain reading aged out of the window
    assert [x.status for x in p.alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert p.alerts[1].summary.endswith("; devices holding a condition now: 1 (1 needed)")


def test_conditions_met_too_far_apart_do_not_fire() -> None:
    p = Place(FLOOD)
    p.read(obs(25, 0, device_id="rain-1", metric="rain_mm_h"))
    p.read(obs(12, 20, device_id="wl-1"))
    assert p.alerts == []


def test_a_smoke_event_waits_for_confirmation_by_a_second_device() -> None:
    p = Place(FLOOD)
    cam = {"metric": "camera.smoke_fire", "device_type": "camera"}
    p.read(obs(0.9, 0, device_id="cam-1", confidence=0.9, **cam))
    p.read(obs(0.9, 1, device_id="cam-1", confidence=0.95, **cam))
    p.read(obs(0.9, 1, device_id="cam-2", confidence=0.6, **cam))  # not confident enough
    assert p.alerts == []
    p.read(obs(450, 2, device_id="smoke-1", metric="smoke_ppm"))
    (a,) = p.alerts
    assert a.rule_id == "smoke-confirmed" and a.evidence == ("cam-1", "smoke-1")
    assert a.level is WarningLevel.RED and a.place_path == PATH


def test_a_late_device_in_a_place_does_not_turn_the_place_clock_back() -> None:
    p = Place(FLOOD)
    p.read(obs(12, 10, device_id="wl-1"))
    p.read(obs(25, 4, device_id="rain-1", metric="rain_mm_h"))  # older, within the window
    (a,) = p.alerts
    assert a.ts == at(10) and a.started_at == at(10)


# --- hot reload -------------------------------------------------------------------------------


def test_a_removed_rule_resolves_its_open_alert() -> None:
    d = Device(WATER).series([20])
    d.rules = rules("rules: [{id: other, metric: pm25, levels: {red: 1}}]")
    d.read(obs(20, 1))
    assert d.story == [("firing", "yellow"), ("resolved", "yellow")]
    assert "removed" in d.alerts[1].summary and d.alerts[1].alert_id == d.alerts[0].alert_id
    assert d.memory is not None and d.memory.rules == {}


def test_a_changed_rule_keeps_its_state() -> None:
    d = Device(WATER).series([20])
    d.rules = rules("rules: [{id: water, metric: water_level_cm, levels: {blue: 5, yellow: 30}}]")
    d.read(obs(20, 1))  # still firing, now at blue under the new levels: same episode
    assert d.story == [("firing", "yellow"), ("firing", "blue")]
    assert d.alerts[0].alert_id == d.alerts[1].alert_id


# --- scope and validation ---------------------------------------------------------------------


def test_scope_by_device_type_profile_place_tag_and_confidence() -> None:
    scoped = rules(
        """
rules:
  - {id: w, metric: water_level_cm, levels: {blue: 5}, device_types: [water_level],
     profiles: [wl-v2], places: [s1], tags: [underpass, tunnel]}
  - {id: fire, metric: camera.smoke_fire, min_confidence: 0.8, levels: {red: 0.5}}
"""
    )

    def fires(o: Observation) -> list[str]:
        return [a.rule_id for a in evaluate_device(scoped, None, [o]).alerts]

    ok = {"profile_id": "wl-v2", "tags": ("tunnel",)}
    assert fires(obs(9, **ok)) == ["w"]
    assert fires(obs(9, **{**ok, "device_type": "camera"})) == []
    assert fires(obs(9, **{**ok, "profile_id": "wl-v1"})) == []
    assert fires(obs(9, **{**ok, "place_path": ("c", "d2", "s9")})) == []
    assert fires(obs(9, **{**ok, "tags": ("bridge",)})) == []
    assert fires(obs(0.9, metric="camera.smoke_fire", confidence=0.85)) == ["fire"]
    assert fires(obs(0.9, metric="camera.smoke_fire", confidence=0.5)) == []


@pytest.mark.parametrize("levels", [{"blue": 10, "yellow": 5}, {"yellow": 5, "red": 5}])
def test_levels_must_rise_strictly(levels: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match="strictly"):
        ThresholdRule(id="x", metric="m", levels=levels)  # type: ignore[arg-type]


def test_clear_must_not_be_past_the_lowest_level() -> None:
    with pytest.raises(ValidationError, match="clear"):
        ThresholdRule(id="x", metric="m", levels={"blue": 5}, clear=6)  # type: ignore[dict-item]


def test_observations_of_readings_and_camera_events() -> None:
    r = Reading(
        device_id="aq", ts=T0, seq=1, values={"pm25": 1, "pm10": 2}, device_type="air_quality"
    )
    assert [(o.metric, o.value) for o in observations(r, "aq-v1", ("roadside",))] == [
        ("pm25", 1),
        ("pm10", 2),
    ]
    assert observations(r, "aq-v1")[0].profile_id == "aq-v1"
    e = CameraEvent(
        camera_id="cam", ts=T0, seq=1, event_type="smoke_fire", value=0.9, confidence=0.8
    )
    (o,) = observations(e)
    assert (o.device_id, o.metric, o.confidence) == ("cam", "camera.smoke_fire", 0.8)


# --- found in review: each of these once crashed the stream or judged wrongly ---------------


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("  - {id: r, metric: m, levels: {red: 1},\n     summary: '{valu}'}", 3, "rules.0.summary"),
        (
            "  - {id: r, metric: m, direction: below, levels: {yellow: .inf}}",
            2,
            "rules.0.levels.yellow",
        ),
        ("  - {id: r, metric: m, levels: {red: 1}, for: .inf}", 2, "rules.0.for"),
        (
            "  - {id: r, metric: m, levels: {red: 1}, keep_firing_for: 9999999d}",
            2,
            "rules.0.keep_firing_for",
        ),
        (
            "  - id: r\n    kind: rate\n    metric: m\n    levels: {red: 1}\n    over: 0s",
            6,
            "rules.0.over",
        ),
        (
            "  - {id: r, kind: composite, conditions: [{metric: m, above: .nan}]}",
            2,
            "rules.0.conditions.0.above",
        ),
    ],
)
def test_a_rule_that_could_not_be_judged_is_refused_when_the_file_loads(
    text: str, line: int, field: str
) -> None:
    with pytest.raises(RuleFileError) as err:
        parse_rules("rules:\n" + text, "f.yaml")
    assert (line, field) in {(p.line, p.field) for p in err.value.problems}, err.value


def test_every_duplicate_id_is_named_with_the_other_problems() -> None:
    text = "rules:\n  - {id: a, metric: m, levels: {red: 1}}\n  - {id: a, metric: m, levels: {}}\n"
    with pytest.raises(RuleFileError) as err:
        parse_rules(text, "f.yaml")
    fields = {p.field for p in err.value.problems}
    assert {"rules.1.id", "rules.1.levels"} <= fields


def test_a_rule_that_changes_kind_closes_its_alert_and_starts_afresh() -> None:
    d = Device(
        rules(
            "rules: [{id: w, kind: rate, metric: water_level_cm, over: 30m, min_span: 5m,"
            " levels: {red: 10}}]"
        )
    )
    d.series([0, 50], every=10)
    assert d.story == [("firing", "red")]
    d.rules = rules("rules: [{id: w, kind: absence, metric: water_level_cm, after: 1h}]")
    d.read(obs(1, 30))
    assert d.story == [("firing", "red"), ("resolved", "red")]
    assert "now a absence rule" in d.alerts[1].summary


def test_a_device_out_of_a_rules_scope_has_its_alert_closed() -> None:
    d = Device(WATER).series([20])
    d.rules = rules(
        "rules: [{id: water, metric: water_level_cm, levels: {blue: 5}, places: [elsewhere]}]"
    )
    d.read(obs(20, 1))
    assert d.story == [("firing", "yellow"), ("resolved", "yellow")]
    assert "no longer applies" in d.alerts[1].summary


def test_a_second_message_of_the_same_instant_is_judged_for_its_other_metrics() -> None:
    d = Device(rules("rules: [{id: smoke, metric: camera.smoke_fire, levels: {orange: 0.5}}]"))
    cam = {"device_id": "cam-1", "device_type": "camera"}
    assert d.read(obs(0.4, 0, metric="camera.crowd_density", **cam)) is Arrival.IN_ORDER
    assert d.read(obs(0.9, 0, metric="camera.smoke_fire", **cam)) is Arrival.IN_ORDER
    assert d.story == [("firing", "orange")]
    assert d.read(obs(0.9, 0, metric="camera.smoke_fire", **cam)) is Arrival.OUT_OF_ORDER  # replay


def test_an_anchored_composite_needs_its_anchor() -> None:
    rs = rules(
        """
rules:
  - {id: smoke, kind: composite, group_by: grid, window: 5m, require: any, min_devices: 2,
     anchor: camera.smoke_fire,
     conditions: [{metric: camera.smoke_fire, above: 0.5}, {metric: gas_lel_pct, above: 10}]}
"""
    )
    p = Place(rs)
    p.read(obs(30, 0, device_id="gas-1", metric="gas_lel_pct"))
    p.read(obs(30, 1, device_id="gas-2", metric="gas_lel_pct"))
    assert p.alerts == []  # gas alone confirms nothing
    p.read(obs(0.9, 2, device_id="cam-1", metric="camera.smoke_fire"))
    assert [a.evidence for a in p.alerts] == [("cam-1", "gas-1", "gas-2")]
    assert (p.alerts[0].value, p.alerts[0].threshold) == (3.0, 2.0)


def test_stepping_down_takes_the_highest_level_held_meanwhile() -> None:
    rs = rules(
        "rules: [{id: w, metric: water_level_cm, levels: {yellow: 15, orange: 25, red: 40},"
        " keep_firing_for: 10m}]"
    )
    d = Device(rs)
    for minutes, value in ((0, 45), (1, 30), (11, 16), (12, 30), (21, 16), (31, 16)):
        d.read(obs(value, minutes))
    # At 11 orange has held for 10 minutes (yellow only just): orange. Back to orange at 12
    # ends the wait; yellow from 21 has held for 10 minutes at 31: yellow.
    assert d.story == [("firing", "red"), ("firing", "orange"), ("firing", "yellow")]
    assert [a.ts for a in d.alerts] == [at(0), at(11), at(31)]


def test_an_absence_rule_new_to_a_silent_device_catches_it() -> None:
    d = Device(WATER).series([1])  # the device has not reported since
    d.rules = rules("rules: [{id: quiet, kind: absence, metric: water_level_cm, after: 30m}]")
    d.tick(60)  # the rule starts counting here
    d.tick(89)
    assert d.alerts == []
    d.tick(90)
    assert d.story == [("firing", "yellow")]


def test_a_rate_keeps_its_whole_window_when_it_thins_its_points() -> None:
    d = Device(RATE).series([0.0] * 300, every=0.1)  # 30 minutes of 6 s readings
    assert d.memory is not None and len(d.memory.rules["rising"].memory) <= RATE_POINTS + 2
    d.read(obs(12, 30))  # 12 cm against the oldest point within 30 minutes: 24 cm/h
    assert d.story == [("firing", "yellow")]
    assert d.alerts[0].value == pytest.approx(24, rel=0.01)


def test_jitter_between_readings_seconds_apart_is_no_rate() -> None:
    d = Device(RATE)  # over 30m: judged once the values span 15 minutes
    for i, value in enumerate([0.3, 0.5, 0.2, 0.6] * 10):
        d.read(obs(value, i * 5 / 60))  # every 5 s: 0.3 cm in 5 s would be 216 cm/h
    assert d.alerts == []


def test_two_values_of_one_instant_give_no_rate() -> None:
    d = Device(RATE)
    d.read(obs(1, 0), obs(5, 0))
    assert d.alerts == []


def test_a_rate_rule_with_no_least_span_still_needs_two_instants() -> None:
    # min_span 0s: values a microsecond apart are judged, values of one instant are not
    # (their rate would divide by zero)
    d = Device(
        rules(
            "rules: [{id: r, kind: rate, metric: water_level_cm, over: 30m, per: 1h,"
            " min_span: 0s, levels: {yellow: 10}}]"
        )
    )
    d.read(obs(1, 0), obs(5, 0))
    assert d.alerts == []
    d.read(obs(9, 1 / 60))  # 8 cm in a second
    assert [a.level for a in d.alerts] == [WarningLevel.YELLOW]


def test_an_event_that_is_no_longer_seen_resolves_its_alert() -> None:
    d = Device(
        rules(
            "rules: [{id: smoke, metric: camera.smoke_fire, levels: {orange: 0.5},"
            " expires_after: 2m}]"
        )
    )
    cam = {"device_id": "cam-1", "device_type": "camera"}
    d.read(obs(0.9, 0, metric="camera.smoke_fire", **cam))
    d.read(obs(0.3, 1, metric="camera.crowd_density", **cam))
    assert d.story == [("firing", "orange")]  # seen a minute ago: still holds
    d.read(obs(0.3, 2, metric="camera.crowd_density", **cam))
    assert d.story == [("firing", "orange"), ("resolved", "orange")]
    d.read(obs(0.9, 3, metric="camera.smoke_fire", **cam))
    d.tick(6, **cam)  # nothing at all from the camera: the clock ends it too
    assert [s for s, _ in d.story] == ["firing", "resolved", "firing", "resolved"]
