import base64
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cityvitals.contracts import (
    Alert,
    AlertResolution,
    AlertStatus,
    Device,
    DeviceState,
    Reading,
    ReadingBatch,
    WarningLevel,
)
from cityvitals.instants import micros
from rules import parse_rules
from streams import process_batch, registry_entry
from streams.seeds import OpenAlert, seed_memories

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
RULES = parse_rules("rules:\n  - {id: deep, metric: water_level_cm, levels: {blue: 5, red: 40}}\n")


def device(device_id: str, state: DeviceState = DeviceState.ACTIVE, minutes: int = 0) -> Device:
    return Device(
        device_id=device_id,
        device_type="water_level",
        place_path=("c", "d1"),
        state=state,
        updated_at=T0 + timedelta(minutes=minutes),
    )


def reading(device_id: str, value: float, minutes: int = 1) -> Reading:
    return Reading(
        device_id=device_id,
        ts=T0 + timedelta(minutes=minutes),
        seq=minutes,
        values={"water_level_cm": value},
    )


def test_known_device_is_enriched_and_rules_run() -> None:
    out = process_batch(
        ReadingBatch(readings=(reading("wl-1", 7),)),
        {"wl-1": registry_entry(device("wl-1"))},
        {},
        RULES,
        "raw[0]",
        T0,
    )
    (enriched,) = out.enriched.readings
    assert (enriched.device_type, enriched.place_path) == ("water_level", ("c", "d1"))
    assert [a.rule_id for a in out.alerts] == ["deep"]
    assert "deep" in out.changed_states["wl-1"]["r"]
    assert not out.dead_letters


def test_unknown_and_inactive_devices_are_dead_lettered_with_a_reason() -> None:
    devices = {"wl-2": registry_entry(device("wl-2", DeviceState.SUSPENDED))}
    batch = ReadingBatch(readings=(reading("ghost", 1), reading("wl-2", 50)))
    out = process_batch(batch, devices, {}, RULES, "raw[3]", T0)
    assert not out.enriched.readings and not out.alerts
    reasons = {d.device_id: d.reason for d in out.dead_letters}
    assert "not in the registry" in reasons["ghost"]
    assert "suspended" in reasons["wl-2"]
    assert all(d.stage == "streams" and d.source == "raw[3]" for d in out.dead_letters)
    assert all(d.payload_b64 for d in out.dead_letters)
    # each letter says what it was counted as, so a counter's series leads to its letters
    assert {d.device_id: d.cause for d in out.dead_letters} == {
        "ghost": "unknown_device",
        "wl-2": "inactive_device",
    }
    assert out.refused == {"unknown_device": 1, "inactive_device": 1}


def test_in_band_registry_change_applies_to_readings_after_it() -> None:
    batch = ReadingBatch(devices=(device("wl-3"),), readings=(reading("wl-3", 1),))
    out = process_batch(batch, {}, {}, RULES, "raw[0]", T0)
    assert len(out.enriched.readings) == 1 and not out.dead_letters
    assert out.changed_devices["wl-3"]["state"] == "active"


def test_an_older_registry_change_does_not_overwrite_a_newer_one() -> None:
    newer = {"wl-4": registry_entry(device("wl-4", DeviceState.SUSPENDED, minutes=5))}
    batch = ReadingBatch(
        devices=(device("wl-4", DeviceState.ACTIVE, minutes=1),), readings=(reading("wl-4", 1),)
    )
    out = process_batch(batch, newer, {}, RULES, "raw[0]", T0)
    assert "wl-4" not in out.changed_devices
    assert len(out.dead_letters) == 1


def test_resolving_leaves_only_the_device_watermark() -> None:
    devices = {"wl-5": registry_entry(device("wl-5"))}
    first = process_batch(
        ReadingBatch(readings=(reading("wl-5", 9, 1),)), devices, {}, RULES, "r", T0
    )
    second = process_batch(
        ReadingBatch(readings=(reading("wl-5", 1, 2),)),
        devices,
        first.changed_states,
        RULES,
        "r",
        T0,
    )
    assert [a.status.value for a in second.alerts] == ["resolved"]
    assert second.changed_states["wl-5"] == {
        "r": {},
        "wu": micros(reading("wl-5", 1, 2).ts),
        "wmm": ["water_level_cm"],
    }


def test_late_readings_are_dead_lettered_and_out_of_order_ones_kept() -> None:
    devices = {"wl-7": registry_entry(device("wl-7"))}
    now = T0 + timedelta(hours=1)
    first = process_batch(
        ReadingBatch(readings=(reading("wl-7", 1, 60),)), devices, {}, RULES, "r", now
    )
    batch = ReadingBatch(readings=(reading("wl-7", 50, 55), reading("wl-7", 50, 40)))
    out = process_batch(batch, devices, first.changed_states, RULES, "r", now)
    assert [r.seq for r in out.enriched.readings] == [55] and out.out_of_order == 1
    assert not out.alerts  # neither moved the rules: they are older than the device's newest
    (late,) = out.dead_letters
    assert late.reason == "late: 20 min behind the device's newest reading (grace 10 min)"
    assert out.refused == {"late": 1} and late.cause == "late"


def test_a_reading_from_the_future_is_refused_before_it_moves_the_watermark() -> None:
    devices = {"wl-8": registry_entry(device("wl-8"))}
    out = process_batch(
        ReadingBatch(readings=(reading("wl-8", 1, 60 * 24),)), devices, {}, RULES, "r", T0
    )
    assert not out.enriched.readings and out.changed_states == {}
    assert "ahead of the stream's clock" in out.dead_letters[0].reason


def test_a_time_of_receipt_from_the_future_is_refused() -> None:
    """Another producer of readings.raw sets ``received_at``: one in 9999 would have liveness
    take its device as seen until then, online for good, its real reports ignored."""
    devices = {"wl-8": registry_entry(device("wl-8"))}
    far = datetime(9999, 1, 1, tzinfo=UTC)
    stamped = [
        reading("wl-8", 1, 1).model_copy(update={"received_at": T0 + timedelta(minutes=2)}),
        reading("wl-8", 2, 2).model_copy(update={"received_at": far}),
    ]
    out = process_batch(ReadingBatch(readings=tuple(stamped)), devices, {}, RULES, "r", T0)
    assert [r.seq for r in out.enriched.readings] == [1]
    assert out.refused == {"future": 1}
    (letter,) = out.dead_letters
    assert letter.reason.startswith("received_at 9999-01-01T00:00:00+00:00 is ")
    assert letter.cause == "future"


def test_a_tick_judges_absence_on_every_device_given() -> None:
    rules = parse_rules(
        "rules:\n  - {id: quiet, kind: absence, metric: water_level_cm, after: 30m}\n"
    )
    devices = {"wl-9": registry_entry(device("wl-9"))}
    first = process_batch(
        ReadingBatch(readings=(reading("wl-9", 1, 1),)), devices, {}, rules, "r", T0
    )
    tick = ReadingBatch(tick=T0 + timedelta(minutes=45))
    out = process_batch(tick, devices, first.changed_states, rules, "r", T0)
    assert [(a.rule_id, a.device_id, a.status.value) for a in out.alerts] == [
        ("quiet", "wl-9", "firing")
    ]
    again = process_batch(tick, devices, out.changed_states, rules, "r", T0)
    assert not again.alerts


@pytest.mark.parametrize("state", [DeviceState.SUSPENDED, DeviceState.RETIRED])
def test_a_device_taken_out_of_service_has_its_open_alerts_closed(state: DeviceState) -> None:
    """Its readings stop, and a tick judges no device that is not active: its alert fired for
    good. The next tick after the change closes it, once, as retired."""
    devices = {"wl-8": registry_entry(device("wl-8"))}
    first = process_batch(
        ReadingBatch(readings=(reading("wl-8", 50),)), devices, {}, RULES, "r", T0
    )
    assert [a.status.value for a in first.alerts] == ["firing"]
    out_of_service = ReadingBatch(
        devices=(device("wl-8", state, minutes=2),), tick=T0 + timedelta(minutes=3)
    )
    out = process_batch(out_of_service, devices, first.changed_states, RULES, "r", T0)
    (closed,) = out.alerts
    assert (closed.status.value, closed.resolution) == ("resolved", AlertResolution.RETIRED)
    assert f"no longer applies: its device is {state.value}" in closed.summary
    again = process_batch(out_of_service, devices, out.changed_states, RULES, "r", T0)
    assert not again.alerts


def test_a_value_outside_the_profiles_valid_range_is_dead_lettered() -> None:
    ranged = device("wl-6").model_copy(update={"valid_ranges": {"water_level_cm": (0.0, 500.0)}})
    devices = {"wl-6": registry_entry(ranged)}
    batch = ReadingBatch(
        readings=(reading("wl-6", -3, 1), reading("wl-6", 12, 2), reading("wl-6", 900, 3))
    )
    out = process_batch(batch, devices, {}, RULES, "raw[0]", T0)
    assert [r.values["water_level_cm"] for r in out.enriched.readings] == [12]
    assert [d.reason for d in out.dead_letters] == [
        "water_level_cm=-3 is outside the profile's valid range [0.0, 500.0]",
        "water_level_cm=900 is outside the profile's valid range [0.0, 500.0]",
    ]


def _open_alert(rule_id: str, device_id: str = "wl-7") -> OpenAlert:
    alert = Alert(
        alert_id="a" * 32,
        revision=2,
        rule_id=rule_id,
        status=AlertStatus.FIRING,
        level=WarningLevel.BLUE,
        device_id=device_id,
        metric="water_level_cm",
        value=7,
        threshold=5,
        place_path=("c", "d1"),
        started_at=T0,
        ts=T0 + timedelta(minutes=1),
        summary="deep",
    )
    return OpenAlert(alert, WarningLevel.RED, T0 + timedelta(minutes=1))


def test_an_alert_open_in_the_database_resolves_after_a_restart_with_its_id() -> None:
    seeds = seed_memories([_open_alert("deep")], RULES)
    devices = {"wl-7": registry_entry(device("wl-7"))}
    states = {"wl-7": seeds.take("device", "wl-7", None)}
    out = process_batch(
        ReadingBatch(readings=(reading("wl-7", 1, 2),)), devices, states, RULES, "r", T0
    )
    (resolved,) = out.alerts
    assert (resolved.alert_id, resolved.revision, resolved.status) == (
        "a" * 32,
        3,
        AlertStatus.RESOLVED,
    )
    assert resolved.level is WarningLevel.RED and resolved.started_at == T0
    assert seeds.take("device", "wl-7", None) is None  # used up


def test_an_open_alert_of_a_silent_device_goes_stale_after_a_restart() -> None:
    seeds = seed_memories([_open_alert("deep")], RULES)
    devices = {"wl-7": registry_entry(device("wl-7"))}
    states = {"wl-7": seeds.take("device", "wl-7", None)}
    tick = ReadingBatch(tick=T0 + timedelta(minutes=25))
    (stale,) = process_batch(tick, devices, states, RULES, "r", T0).alerts
    assert (stale.alert_id, stale.resolution) == ("a" * 32, AlertResolution.STALE)


def test_an_open_absence_alert_stays_open_after_a_restart_while_other_metrics_come() -> None:
    """The metric still missing: readings of another metric keep the alert firing under its
    id, the silence counted from when the metric was last seen (its value at the latest
    transition: 122 s); the metric's return resolves it."""
    rules = parse_rules("rules:\n  - {id: quiet, kind: absence, metric: flow, after: 2m}\n")
    alert = Alert(
        alert_id="b" * 32,
        revision=0,
        rule_id="quiet",
        status=AlertStatus.FIRING,
        level=WarningLevel.YELLOW,
        device_id="wl-5",
        metric="flow",
        value=122,
        threshold=120,
        started_at=T0,
        ts=T0,
        summary="no flow",
    )
    seeds = seed_memories([OpenAlert(alert, WarningLevel.YELLOW, T0)], rules)
    devices = {"wl-5": registry_entry(device("wl-5"))}
    NOW = T0 + timedelta(minutes=10)

    def read(states: Any, minutes: int, **values: float) -> Any:
        one = Reading(
            device_id="wl-5", ts=T0 + timedelta(minutes=minutes), seq=minutes, values=values
        )
        return process_batch(ReadingBatch(readings=(one,)), devices, states, rules, "r", NOW)

    other = read({"wl-5": seeds.take("device", "wl-5", None)}, 8, current=3.0)
    assert not other.alerts  # still firing: nothing to say
    ticked = process_batch(
        ReadingBatch(tick=T0 + timedelta(minutes=9)), devices, other.changed_states, rules, "r", NOW
    )
    assert not ticked.alerts
    back = read({**other.changed_states, **ticked.changed_states}, 10, flow=5.0)
    (resolved,) = back.alerts
    assert (resolved.alert_id, resolved.status) == ("b" * 32, AlertStatus.RESOLVED)


def test_a_seed_never_replaces_memory_the_stream_kept() -> None:
    seeds = seed_memories([_open_alert("deep")], RULES)
    assert seeds.take("device", "wl-7", {"wm": T0.isoformat(), "r": {}}) is None


def test_an_open_alert_of_a_removed_rule_is_resolved_as_retired() -> None:
    seeds = seed_memories([_open_alert("gone")], RULES)
    devices = {"wl-7": registry_entry(device("wl-7"))}
    states = {"wl-7": seeds.take("device", "wl-7", None)}
    tick = ReadingBatch(tick=T0 + timedelta(minutes=2))
    (retired,) = process_batch(tick, devices, states, RULES, "r", T0).alerts
    assert (retired.alert_id, retired.resolution) == ("a" * 32, AlertResolution.RETIRED)


def test_parsed_memories_follow_the_table_not_the_cache() -> None:
    from streams.pipeline import BatchOutcome, ParsedMemories

    parsed = ParsedMemories()
    devices = {"wl-9": registry_entry(device("wl-9"))}

    def judge(minutes: int, stored: dict[str, Any] | None) -> BatchOutcome:
        batch = ReadingBatch(readings=(reading("wl-9", 50, minutes=minutes),))
        states = {} if stored is None else {"wl-9": stored}
        return process_batch(batch, devices, states, RULES, "raw[0]", T0, parsed=parsed)

    kept = judge(1, None).changed_states["wl-9"]
    assert kept is not None and "deep" in kept["r"]  # firing
    # The table holds what the batch wrote: the parsed memory is used, and the alert goes on.
    assert not judge(2, kept).alerts
    # The table holds another value (recovered from its changelog, say: a copy without the
    # firing alert): that value is parsed, not the one kept.
    other = judge(3, {**kept, "r": {}})
    assert [a.status for a in other.alerts] == [AlertStatus.FIRING]


def _noise_batch(level: float) -> tuple[Any, ...]:
    from cityvitals.settings import Settings
    from wiring.services import load_catalogue

    catalogue = load_catalogue(Settings(indicators_file=None))
    noise = Device(device_id="nz-1", device_type="noise", place_path=("c", "d1"), updated_at=T0)
    odd = Reading(device_id="nz-1", ts=T0 + timedelta(minutes=1), seq=1, values={"laeq_db": level})
    fine = Reading(device_id="nz-1", ts=T0 + timedelta(minutes=2), seq=2, values={"laeq_db": 62})
    return process_batch(
        ReadingBatch(readings=(odd, reading("wl-1", 50), fine)),
        {"nz-1": registry_entry(noise), "wl-1": registry_entry(device("wl-1"))},
        {},
        RULES,
        "raw[0]",
        T0 + timedelta(minutes=5),
        catalogue,
    ), odd


def test_a_sound_level_no_indicator_can_fold_is_refused_and_leaves_no_trace() -> None:
    """5,000 dB: its energy 10^(L/10) is beyond a float. It raised in the Leq fold, inside the
    stream's agent, which stopped with its whole batch."""
    out, _ = _noise_batch(5000)
    assert [(r.device_id, r.seq) for r in out.enriched.readings] == [("wl-1", 1), ("nz-1", 2)]
    assert out.refused == {"out_of_range": 1}
    (letter,) = out.dead_letters
    assert letter.cause == "out_of_range"
    assert "laeq_db 5000 dB is beyond any sound level" in letter.reason
    (leq,) = [p for p in out.partials if p.indicator == "noise_leq" and p.place_path == ("c",)]
    assert leq.state["n"] == 1 and leq.reporting == 1  # the 62 dB alone
    # weighing the 5 minutes a first reading of a device without a profile stands for: the
    # refused one, a minute before, is not its predecessor
    assert (leq.state["w"], leq.state["e"]) == (300.0, 300 * 10**6.2)


@pytest.mark.parametrize(
    ("device_type", "metric", "indicator"),
    [("power", "load_kw", "power_load"), ("air_quality", "pm25", "aqi")],
)
def test_a_value_an_indicator_cannot_sum_is_refused_and_leaves_no_trace(
    device_type: str, metric: str, indicator: str
) -> None:
    """Two finite readings near a float's limit (a device without a profile has no range)
    made a window's sum infinite: the place stage failed on it at every tick, and the partial,
    written as null, took its message's other partials down with it."""
    from cityvitals.settings import Settings
    from wiring.services import load_catalogue

    catalogue = load_catalogue(Settings(indicators_file=None))
    dev = Device(device_id="x-1", device_type=device_type, place_path=("c", "d1"), updated_at=T0)
    huge = [
        Reading(device_id="x-1", ts=T0 + timedelta(minutes=m), seq=m, values={metric: 1e308})
        for m in (1, 2)
    ]
    fine = Reading(device_id="x-1", ts=T0 + timedelta(minutes=3), seq=3, values={metric: 40.0})
    out = process_batch(
        ReadingBatch(readings=(*huge, fine)),
        {"x-1": registry_entry(dev)},
        {},
        RULES,
        "raw[0]",
        T0 + timedelta(minutes=5),
        catalogue,
    )
    assert out.refused == {"out_of_range": 2}
    assert all(
        f"{metric} 1e+308 is beyond any" in letter.reason
        and f"the indicator {indicator} averages" in letter.reason
        for letter in out.dead_letters
    ), [letter.reason for letter in out.dead_letters]
    (part,) = [p for p in out.partials if p.indicator == indicator and p.place_path == ("c",)]
    assert part.reporting == 1 and all(math.isfinite(v) for v in part.state.values())


def test_an_item_the_stage_fails_on_is_dead_lettered_and_the_rest_of_its_batch_goes_on(
    monkeypatch: Any,
) -> None:
    """A defect, or a value nothing foresaw: the item alone is refused, with the error."""
    from rules.indicators.leq import Leq
    from streams.pipeline import STAGE_FAILED

    def fail(_self: Leq, _state: dict[str, float], v: float, _weight: float) -> None:
        if v == 99:
            raise ArithmeticError("no such level")

    monkeypatch.setattr(Leq, "add", fail)
    out, odd = _noise_batch(99)
    assert [(r.device_id, r.seq) for r in out.enriched.readings] == [("wl-1", 1), ("nz-1", 2)]
    assert [a.rule_id for a in out.alerts] == ["deep"]
    assert out.refused == {STAGE_FAILED: 1}
    (letter,) = out.dead_letters
    assert letter.device_id == "nz-1"
    assert letter.reason == "the stream stage failed on it: ArithmeticError: no such level"
    assert Reading.model_validate_json(base64.b64decode(letter.payload_b64)).seq == odd.seq


def test_an_item_the_stage_fails_on_leaves_the_stored_marks_as_they_were(
    monkeypatch: Any,
) -> None:
    """The device's marks are copied again for its next reading after one fails (its
    changes are dropped with it): the stored marks, which the table holds until the batch's
    changes are written, are not changed through either copy."""
    import copy

    from cityvitals.settings import Settings
    from rules.indicators.leq import Leq
    from wiring.services import load_catalogue

    add = Leq.add

    def fail(self: Leq, state: dict[str, float], v: float, weight: float) -> None:
        if v == 99:
            raise ArithmeticError("no such level")
        add(self, state, v, weight)

    monkeypatch.setattr(Leq, "add", fail)
    catalogue = load_catalogue(Settings(indicators_file=None))
    noise = Device(device_id="nz-1", device_type="noise", place_path=("c", "d1"), updated_at=T0)
    registry = {"nz-1": registry_entry(noise)}

    def noise_at(minutes: int, level: float, seq: int) -> Reading:
        ts = T0 + timedelta(minutes=minutes)
        return Reading(device_id="nz-1", ts=ts, seq=seq, values={"laeq_db": level})

    now = T0 + timedelta(minutes=30)
    first = process_batch(
        ReadingBatch(readings=(noise_at(-20, 60, 1),)),
        registry,
        {},
        RULES,
        "raw[0]",
        now,
        catalogue,
        {},
        5,
    )
    stored = first.changed_marks
    before = copy.deepcopy(stored)
    # A new window's count copies the windows, then the fold fails; the next reading, in
    # another new window, starts from a fresh copy of the stored marks.
    second = process_batch(
        ReadingBatch(readings=(noise_at(1, 99, 2), noise_at(7, 62, 3))),
        registry,
        {},
        RULES,
        "raw[0]",
        now,
        catalogue,
        stored,
        6,
    )
    assert second.refused == {"stage_failed": 1}
    assert stored == before
    assert second.changed_marks["nz-1"] != before["nz-1"]
