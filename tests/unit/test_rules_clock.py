"""Rules judged at clock ticks, as Prometheus judges them at every evaluation: ``for`` and
``keep_firing_for`` run out with no new reading, a silent device's alert goes stale, and a
resolved alert names the episode's peak. Also: the backtest replays what the stream does."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cityvitals.contracts import (
    Alert,
    AlertResolution,
    Device,
    Reading,
    ReadingBatch,
    WarningLevel,
)
from rules import DeviceMemory, Observation, RuleSet, evaluate_device, parse_rules, sweep_device
from rules.backtest import Backtest
from streams import process_batch, registry_entry

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
PATH = ("c", "d1", "s1", "g1")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def obs(value: float, minutes: float, metric: str = "m", **kw: Any) -> Observation:
    return Observation("wl-1", "water_level", PATH, metric, value, at(minutes), **kw)


@dataclass
class Device1:
    rules: RuleSet
    memory: DeviceMemory | None = None
    alerts: list[Alert] = field(default_factory=list)

    def read(self, value: float, minutes: float, metric: str = "m", **kw: Any) -> None:
        out = evaluate_device(self.rules, self.memory, [obs(value, minutes, metric, **kw)])
        self.memory = out.memory
        self.alerts += out.alerts

    def ticks(self, until: float, every_s: int = 10, **kw: Any) -> None:
        """Clock ticks every ``every_s`` seconds from the last reading up to ``until``."""
        assert self.memory is not None and self.memory.watermark is not None
        t = int((self.memory.watermark - T0).total_seconds()) + every_s
        while t <= until * 60:
            out = sweep_device(self.rules, self.memory, obs(0, t / 60, **kw), at(t / 60))
            self.memory = out.memory
            self.alerts += out.alerts
            t += every_s

    @property
    def story(self) -> list[tuple[str, str, float]]:
        return [
            (a.status.value, a.level.value, round((a.ts - T0).total_seconds() / 60, 2))
            for a in self.alerts
        ]


KEEP = parse_rules("rules: [{id: r, metric: m, levels: {yellow: 30}, keep_firing_for: 3m}]")


def test_keep_firing_for_runs_out_at_a_tick_without_a_new_reading() -> None:
    # Prometheus: samples 35, 20 and then nothing; the alert resolves 3 minutes after the 20.
    d = Device1(KEEP)
    d.read(35, 0)
    d.read(20, 1)
    d.ticks(11)
    assert d.story == [("firing", "yellow", 0), ("resolved", "yellow", 4)]
    assert d.alerts[-1].resolution is AlertResolution.CLEARED


def test_for_completes_at_a_tick_with_the_last_reading_still_fresh() -> None:
    d = Device1(parse_rules("rules: [{id: r, metric: m, levels: {orange: 10}, for: 2m}]"))
    d.read(12, 0)
    d.ticks(5)
    (fired,) = d.alerts
    assert (fired.status.value, fired.level, fired.ts, fired.started_at) == (
        "firing",
        WarningLevel.ORANGE,
        at(2),
        at(0),
    )
    assert fired.value == 12 and fired.threshold == 10


def test_a_step_down_waits_keep_firing_for_at_ticks_too() -> None:
    rules = parse_rules(
        "rules: [{id: r, metric: m, levels: {yellow: 10, red: 30}, keep_firing_for: 2m}]"
    )
    d = Device1(rules)
    d.read(35, 0)
    d.read(15, 1)
    d.ticks(4)
    assert d.story == [("firing", "red", 0), ("firing", "yellow", 3)]


def test_a_silent_device_s_alert_resolves_as_stale() -> None:
    # Default: stale after 4 expected intervals; without a profile interval, 5 minutes each.
    d = Device1(parse_rules("rules: [{id: r, metric: m, levels: {yellow: 30}}]"))
    d.read(35, 0)
    d.ticks(60)
    assert d.story == [("firing", "yellow", 0), ("resolved", "yellow", 20)]
    resolved = d.alerts[-1]
    assert resolved.resolution is AlertResolution.STALE
    assert "no m reading for 20 min: stale" in resolved.summary


def test_staleness_follows_the_profile_interval_and_the_rule_file() -> None:
    rules = parse_rules(
        "stale_after: 3\nrules: [{id: r, metric: m, levels: {yellow: 30}},"
        " {id: s, metric: n, levels: {yellow: 30}, stale_after: 10}]"
    )
    d = Device1(rules)
    d.read(35, 0, expected_interval_s=60)
    d.read(35, 0, metric="n", expected_interval_s=60)
    d.ticks(20, expected_interval_s=60)
    assert [(a.rule_id, a.status.value, a.ts) for a in d.alerts] == [
        ("r", "firing", at(0)),
        ("s", "firing", at(0)),
        ("r", "resolved", at(3)),
        ("s", "resolved", at(10)),
    ]


def test_a_pending_alert_of_a_silent_device_never_fires() -> None:
    d = Device1(parse_rules("rules: [{id: r, metric: m, levels: {yellow: 30}, for: 30m}]"))
    d.read(35, 0)
    d.ticks(40)
    assert d.alerts == []
    assert d.memory is not None and "r" not in d.memory.rules


def test_stale_is_judged_at_the_device_s_other_readings_too() -> None:
    d = Device1(parse_rules("rules: [{id: r, metric: m, levels: {yellow: 30}}]"))
    d.read(35, 0)
    d.read(1, 25, metric="other")
    # stale from when its value ran out (the default stale horizon: 20 min), not from when
    # the reading at 25 noticed
    assert d.story == [("firing", "yellow", 0), ("resolved", "yellow", 20)]
    assert d.alerts[-1].resolution is AlertResolution.STALE
    assert d.alerts[-1].summary.endswith("no m reading for 20 min: stale")


def test_readings_sent_late_end_their_episode_when_their_values_ran_out() -> None:
    """A night's readings sent in the morning (the clock far ahead of them): the episode
    ends stale 20 min after the last of them, not at the morning's tick, so it does not read
    as a 10-hour alarm."""
    d = Device1(parse_rules("rules: [{id: r, metric: m, levels: {yellow: 30}}]"))
    d.read(35, 0)
    d.read(36, 5)
    out = sweep_device(d.rules, d.memory, obs(0, 600), at(600))  # one tick, ten hours on
    d.memory = out.memory
    d.alerts += out.alerts
    assert d.story == [("firing", "yellow", 0), ("resolved", "yellow", 25)]
    assert "(peak yellow, after 25 min)" in d.alerts[-1].summary


def test_a_resolved_alert_carries_the_peak_of_its_episode() -> None:
    rules = parse_rules(
        "rules: [{id: r, metric: m, levels: {yellow: 10, orange: 20, red: 30}, clear: 5}]"
    )
    d = Device1(rules)
    for i, v in enumerate([12, 35, 22, 12, 1]):
        d.read(v, i)
    assert d.story[-1][:2] == ("resolved", "red")
    assert [a.peak_level for a in d.alerts] == [WarningLevel.YELLOW] + [WarningLevel.RED] * 4
    assert d.alerts[-1].summary == "resolved: r at wl-1 (peak red, after 4 min); m now 1"


# --- the backtest replays the stream ----------------------------------------------------------


def stream_run(rules: RuleSet, readings: list[Reading], until: datetime) -> list[Alert]:
    """What the stream's pipeline functions make of the readings and of a tick every 10 s."""
    device = Device(
        device_id="wl-1",
        device_type="water_level",
        place_path=PATH,
        updated_at=T0 - timedelta(days=1),
    )
    devices = {"wl-1": registry_entry(device)}
    states: dict[str, Any] = {}
    alerts: list[Alert] = []
    pending = list(readings)
    clock = readings[0].ts + timedelta(seconds=10)
    while clock <= until:
        batch_readings = []
        while pending and pending[0].ts < clock:
            batch_readings.append(pending.pop(0))
        for r in batch_readings:
            out = process_batch(ReadingBatch(readings=(r,)), devices, states, rules, "r", clock)
            states.update(out.changed_states)
            alerts += out.alerts
        out = process_batch(ReadingBatch(tick=clock), devices, states, rules, "r", clock)
        states.update(out.changed_states)
        alerts += out.alerts
        clock += timedelta(seconds=10)
    return alerts


def test_a_backtest_ending_in_silence_makes_what_the_stream_makes() -> None:
    rules = parse_rules(
        "rules: [{id: r, metric: m, levels: {yellow: 30}, keep_firing_for: 3m},"
        " {id: s, metric: n, levels: {red: 5}, for: 1m}]"
    )
    readings = [
        Reading(device_id="wl-1", ts=at(0), seq=1, values={"m": 35, "n": 9}),
        Reading(device_id="wl-1", ts=at(0.5), seq=2, values={"m": 20, "n": 9}),
    ]
    streamed = stream_run(rules, readings, at(30))
    bt = Backtest(rules, timedelta(seconds=10))
    replayed: list[Alert] = []
    for r in readings:
        from rules import observations

        replayed += bt.feed(observations(r.model_copy(update={"place_path": PATH})))
    replayed += bt.finish()
    assert [(a.rule_id, a.status, a.ts) for a in replayed] == [
        (a.rule_id, a.status, a.ts) for a in streamed
    ]
    assert [(a.rule_id, a.status.value) for a in replayed] == [
        ("r", "firing"),
        ("s", "firing"),
        ("r", "resolved"),
        ("s", "resolved"),
    ]


def test_a_backtest_expires_a_camera_event_at_ticks_without_other_rules() -> None:
    rules = parse_rules(
        "rules: [{id: smoke, metric: camera.smoke_fire, levels: {orange: 0.5}, expires_after: 2m}]"
    )
    bt = Backtest(rules, timedelta(seconds=10))
    cam = Observation("cam-1", "camera", PATH, "camera.smoke_fire", 0.9, at(0))
    alerts = bt.feed([cam])
    alerts += bt.feed([Observation("other", "gas", PATH, "gas", 1, at(10))])
    assert [(a.status.value, a.ts) for a in alerts] == [
        ("firing", at(0)),
        ("resolved", at(2)),
    ]
    # what ended it: no new event came, not a value back under the level
    assert alerts[1].summary.endswith(
        "no camera.smoke_fire for 2 min: its last value (0.9) expired"
    )
