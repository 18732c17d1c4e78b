"""Vital signs: formulas, roll-ups up the tree, coverage, replays and windows (no I/O)."""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityvitals.contracts import Indicator, IndicatorBatch, IndicatorQuality, Reading
from cityvitals.instants import micros
from rules.indicators import iaqi, parse_catalogue, window_start
from streams.app import bundle
from streams.partials import UNKNOWN, copy_marks
from streams.vitals import MAX_CATCH_UP, Partials, apply, close, membership

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
CATALOGUE = parse_catalogue(
    """
indicators:
  - {id: aqi, kind: aqi, device_types: [air_quality], window: 1h}
  - {id: noise, kind: leq, metric: laeq_db, device_types: [noise], window: 5m}
  - {id: jam, kind: congestion, metric: speed_kmh, device_types: [traffic], window: 5m,
     free_flow_kmh: 40, bands: [[free, 1.0], [light, 2.0], [moderate, 2.667], [severe, null]]}
  - {id: online, kind: online_rate, device_types: [air_quality, noise, camera], window: 5m}
  - {id: depth, kind: max, metric: depth_cm, device_types: [water_level], window: 5m}
"""
)
GRACE = timedelta(seconds=30)


def reading(
    device: str, path: str, minutes: float, device_type: str = "air_quality", **values: float
) -> Reading:
    return Reading(
        device_id=device,
        ts=T0 + timedelta(minutes=minutes),
        seq=int(minutes * 60),
        values=values,
        device_type=device_type,
        place_path=tuple(path.split("/")),
    )


class City:
    """Both stages wired in memory, as the stream wires them through Kafka."""

    def __init__(self) -> None:
        self.places: dict[str, dict[str, Any]] = {}
        self.marks: dict[str, dict[str, Any]] = {}
        self.offset = 0
        self.reported: list[Indicator] = []

    def send(self, batch: IndicatorBatch) -> None:
        paths = {p.place_path for p in batch.partials} | {c.place_path for c in batch.members}
        for path in paths:
            self.places[path[-1]] = apply(self.places.get(path[-1]), path, batch)

    def join(
        self, device: str, path: str, device_type: str = "air_quality", minutes: float | None = None
    ) -> None:
        """The device becomes an active member of ``path``: registered so, or if ``minutes``
        is given, activated then (provisioned before)."""
        entry = {"state": "active", "place_path": path.split("/"), "device_type": device_type}
        before = None
        if minutes is not None:  # activated then, provisioned before
            entry["updated_at"] = (T0 + timedelta(minutes=minutes)).isoformat()
            before = {**entry, "state": "provisioned"}
        self.offset += 1
        self.send(
            IndicatorBatch(
                source="devices[0]", offset=self.offset, members=tuple(membership(before, entry))
            )
        )

    def move(self, device: str, old: str, new: str, device_type: str = "air_quality") -> None:
        before = {"state": "active", "place_path": old.split("/"), "device_type": device_type}
        after = {**before, "place_path": new.split("/")}
        self.offset += 1
        self.send(
            IndicatorBatch(
                source="devices[0]", offset=self.offset, members=tuple(membership(before, after))
            )
        )

    def read(
        self, *readings: Reading, offset: int | None = None, interval: float = 60.0
    ) -> IndicatorBatch:
        """One input message: its readings fold into partials, sent to the places (a device's
        first reading stands for ``interval`` seconds, its profile's)."""
        partials = Partials(CATALOGUE)
        self.offset += 1
        for r in readings:
            marks = self.marks.setdefault(r.device_id, {})
            partials.add(r, marks, self.offset if offset is None else offset, interval)
        batch = IndicatorBatch(
            source="raw[0]",
            offset=self.offset if offset is None else offset,
            partials=tuple(partials.partials()),
        )
        self.send(batch)
        return batch

    def tick(self, minutes: float) -> list[Indicator]:
        found: list[Indicator] = []
        for place, memory in list(self.places.items()):
            self.places[place], out = close(
                memory, CATALOGUE, T0 + timedelta(minutes=minutes), GRACE
            )
            found += out
        self.reported += found
        return found


def one(found: list[Indicator], indicator: str, place: str, minutes: float = 0) -> Indicator:
    start = window_start(T0 + timedelta(minutes=minutes), CATALOGUE.by_id[indicator].window_s)
    (match,) = [
        i for i in found if (i.indicator, i.place_id, i.window_start) == (indicator, place, start)
    ]
    return match


def test_a_district_aqi_comes_from_its_mean_concentrations_not_its_streets_aqi() -> None:
    city = City()
    for device, path in (("a1", "c/d/s1"), ("a2", "c/d/s2"), ("a3", "c/d/s2"), ("a4", "c/d/s2")):
        city.join(device, path)
    city.read(
        reading("a1", "c/d/s1", 1, pm25=240.0),  # street 1: one station, heavy
        reading("a2", "c/d/s2", 1, pm25=20.0),
        reading("a3", "c/d/s2", 2, pm25=20.0),
        reading("a4", "c/d/s2", 3, pm25=20.0),
    )
    found = city.tick(61)
    s1, s2, d = one(found, "aqi", "s1"), one(found, "aqi", "s2"), one(found, "aqi", "d")
    assert s1.value == iaqi("pm25", 240) and s2.value == iaqi("pm25", 20)
    assert d.value == iaqi("pm25", (240 + 20 * 3) / 4)  # 75 µg/m³ over the four stations
    assert d.value != (s1.value + s2.value) / 2
    assert d.detail["primary"] == "pm25" and d.band == "light"
    assert one(found, "aqi", "c").value == d.value  # the city is this one district
    assert (d.reporting, d.expected, d.coverage, d.quality) == (4, 4, 1.0, IndicatorQuality.GOOD)


def test_a_station_counts_for_the_time_it_covers_not_for_how_often_it_reports() -> None:
    """A grid's low-cost sensor at PM2.5 20 every minute and its reference station at 150
    every ten minutes: the national method averages each station's mean, 85 (IAQI 123); a
    mean of the samples, 66 of one and 6 of the other, gave 31 (IAQI 46, good)."""
    city = City()
    city.join("cheap", "c/d/s1/g1")
    city.join("ref", "c/d/s1/g1")
    for minute in range(60):
        city.read(reading("cheap", "c/d/s1/g1", minute + 0.5, pm25=20.0), interval=60)
        if minute % 10 == 5:
            city.read(reading("ref", "c/d/s1/g1", minute, pm25=150.0), interval=600)
    found = city.tick(61)
    aqi = one(found, "aqi", "g1")
    assert (aqi.samples, aqi.reporting) == (66, 2)
    assert aqi.value == iaqi("pm25", 85.0) == 123.0 and aqi.band == "light"
    assert one(found, "aqi", "c").value == aqi.value  # and so up the tree


def test_a_reading_out_of_order_weighs_the_time_since_the_one_before_it() -> None:
    """A station every ten minutes, at minutes 10, then 30, then 20 (late): 20 stands for the
    ten minutes since 10, and 30, weighed when it came, for the twenty since 10."""
    city = City()
    city.join("a1", "c/d/s1")
    city.read(reading("a1", "c/d/s1", 10, pm25=10.0), interval=600)
    city.read(reading("a1", "c/d/s1", 30, pm25=100.0), interval=600)
    late = city.read(reading("a1", "c/d/s1", 20, pm25=40.0), interval=600)
    city.send(late)  # delivered again: applied once
    weighted = (10.0 * 600 + 100.0 * 1200 + 40.0 * 600) / (600 + 1200 + 600)
    aqi = one(city.tick(61), "aqi", "s1")
    assert aqi.samples == 3 and aqi.value == iaqi("pm25", weighted)


def test_a_value_weighs_the_time_since_its_own_metric_s_last_not_any_reading_s() -> None:
    """A station at 150 every ten minutes that also sends a status reading every minute, and
    one at 20 every ten minutes sending its pollutants apart, PM2.5 a second after CO: weighed
    by the time since any reading of the device, the first one's PM2.5 stood for a minute and
    the second's for a second (AQI 44 and 200). Each value weighs the time since its metric's
    last value: the stations' mean, 85."""
    city = City()
    city.join("a", "c/d/s1/g1")
    city.join("b", "c/d/s1/g1")
    for minute in range(60):
        city.read(reading("a", "c/d/s1/g1", minute + 0.25, battery_v=3.7), interval=600)
        if minute % 10 == 5:
            city.read(reading("a", "c/d/s1/g1", minute, pm25=150.0), interval=600)
            city.read(reading("b", "c/d/s1/g1", minute, co=1.0), interval=600)
            city.read(reading("b", "c/d/s1/g1", minute + 1 / 60, pm25=20.0), interval=600)
    aqi = one(city.tick(61), "aqi", "g1")
    assert aqi.value == iaqi("pm25", 85.0) == 123.0, aqi.detail


def test_a_station_with_a_status_every_minute_weighs_its_pm25_by_ten_minutes() -> None:
    """Its profile's interval is its status's, a minute: a PM2.5 every ten minutes still
    stands for its ten (capped at twice the profile's interval it read AQI 61 for 123)."""
    city = City()
    city.join("a", "c/d/s1/g1")
    city.join("b", "c/d/s1/g1")
    for minute in range(60):
        city.read(reading("a", "c/d/s1/g1", minute + 0.25, battery_v=3.7), interval=60)
        if minute % 10 == 5:
            city.read(reading("a", "c/d/s1/g1", minute, pm25=150.0), interval=60)
            city.read(reading("b", "c/d/s1/g1", minute, pm25=20.0), interval=600)
    aqi = one(city.tick(61), "aqi", "g1")
    # each station's first PM2.5 stands for its profile's interval, the others for ten minutes
    weighted = (150.0 * (60 + 5 * 600) + 20.0 * (600 + 5 * 600)) / (60 + 600 + 10 * 600)
    assert aqi.value == iaqi("pm25", weighted)


def test_noise_is_an_energy_mean_and_congestion_uses_the_harmonic_speed() -> None:
    city = City()
    city.join("n1", "c/d/s1", "noise")
    city.join("t1", "c/d/s1", "traffic")
    city.read(
        reading("n1", "c/d/s1", 1, "noise", laeq_db=60.0),
        reading("n1", "c/d/s1", 2, "noise", laeq_db=80.0),
        reading("t1", "c/d/s1", 1, "traffic", speed_kmh=10.0),
        reading("t1", "c/d/s1", 2, "traffic", speed_kmh=40.0),
    )
    found = city.tick(6)
    leq = one(found, "noise", "s1").value
    assert leq == pytest.approx(10 * math.log10((10**6 + 10**8) / 2), abs=1e-3)  # 77.0, not 70
    jam = one(found, "jam", "s1")
    assert jam.value == pytest.approx(40 / 16) and jam.detail["speed_kmh"] == 16.0
    assert jam.band == "moderate"


def test_coverage_falls_when_devices_stop_and_a_silent_window_is_still_reported() -> None:
    city = City()
    for i in range(4):
        city.join(f"a{i}", "c/d/s1")
    city.read(*(reading(f"a{i}", "c/d/s1", 1, pm25=30.0) for i in range(4)))
    city.read(reading("a0", "c/d/s1", 6, pm25=30.0), reading("a1", "c/d/s1", 7, pm25=30.0))
    found = city.tick(16)
    first, second, third = (one(found, "online", "s1", m) for m in (0, 5, 10))
    assert (first.coverage, first.quality, first.value) == (1.0, IndicatorQuality.GOOD, 1.0)
    assert (second.coverage, second.quality, second.value) == (0.5, IndicatorQuality.PARTIAL, 0.5)
    assert (third.reporting, third.quality, third.value) == (0, IndicatorQuality.NO_DATA, 0.0)
    assert not [i for i in found if i.indicator == "aqi"]  # the hour is not over yet


def test_a_device_is_online_in_the_windows_until_two_of_its_intervals_have_passed() -> None:
    """A station that reports hourly is online in every five-minute window of its hour (and
    counted once in each, its next reading's windows overlapping): not in one of twelve. One
    every ten minutes that stops is online for two intervals after its last reading, as
    liveness judges it late then; a device whose profile gives no interval, in its own."""
    city = City()
    for device in ("hourly", "ten", "none"):
        city.join(device, "c/d/s1")
    city.read(reading("hourly", "c/d/s1", 1, pm25=30.0), interval=3600.0)
    replayed = city.offset  # processed again after a restart: counted in no window again
    city.read(reading("hourly", "c/d/s1", 1, pm25=30.0), offset=replayed, interval=3600.0)
    city.read(reading("ten", "c/d/s1", 2, pm25=30.0), interval=600.0)
    city.read(reading("none", "c/d/s1", 3, pm25=30.0), interval=0.0)
    city.read(reading("hourly", "c/d/s1", 61, pm25=30.0), interval=3600.0)
    found = city.tick(71)
    windows = [one(found, "online", "s1", m) for m in range(0, 70, 5)]
    # "ten" read at 8:02: online until 8:22, so in the windows from 8:00 to 8:20
    assert [w.reporting for w in windows] == [3, 2, 2, 2, 2, *[1] * 9]
    assert all(w.expected == 3 for w in windows)
    assert [round(w.value or 0, 3) for w in windows[3:6]] == [0.667, 0.667, 0.333]


def test_an_hourly_device_s_late_reading_within_the_grace_counts_it_once() -> None:
    """Online an hour ahead of its reading, an hourly station's marks keep the windows behind
    its newest reading too: one of 8:52 that comes after that of 9:00 (late within the rules'
    10 minutes) does not count it in the 8:50 window again (it read 2 of 2 there, hiding the
    silent device beside it)."""
    city = City()
    city.join("a", "c/d/s1")
    city.join("b", "c/d/s1")  # silent
    for minutes in (0, 60, 52, 51):
        city.read(reading("a", "c/d/s1", minutes, pm25=30.0), interval=3600.0)
    found = city.tick(130)
    windows = [one(found, "online", "s1", m) for m in range(40, 70, 5)]
    assert [(w.reporting, w.expected) for w in windows] == [(1, 2)] * 6


def test_a_message_processed_again_counts_the_windows_ahead_it_counted() -> None:
    """A restart after a message's marks were kept but before its partials were: processed
    again, it counts the device again in the windows ahead it had counted (the place side
    takes each message once), not from after the last of them."""

    def message(offset: int, minutes: float, stored: Any) -> tuple[list[Any], Any]:
        partials = Partials(CATALOGUE)
        marks = copy_marks(stored)
        partials.add(reading("a", "c/d/s1", minutes, pm25=30.0), marks, offset, 600.0)
        counted = sorted(
            (x.window_start, x.reporting)
            for x in partials.partials()
            if x.indicator == "online" and x.place_path == ("c", "d", "s1") and x.reporting
        )
        return counted, copy.deepcopy(marks)

    _, first = message(6, 1, None)  # 8:01, online to 8:21: windows 8:00 to 8:20
    counted, second = message(7, 9, first)  # 8:09, online to 8:29: window 8:25 is new
    assert counted == [(T0 + timedelta(minutes=25), 1)]
    assert message(7, 9, second)[0] == counted


def test_devices_activated_after_a_window_ended_are_not_expected_in_it() -> None:
    """Forty imported devices wait, provisioned; four send their first reading in the 8:00
    window and are activated by it at 8:05:30, after the window ended, and the other 36
    later: the window's devices online are the four of four that reported, not four of
    forty. The next window expects all forty."""
    city = City()
    city.read(*(reading(f"p{i}", "c/d/s1", 1 + i / 10, pm25=30.0) for i in range(4)))
    for i in range(4):
        city.join(f"p{i}", "c/d/s1", minutes=5.5)
    for i in range(4, 40):
        city.join(f"p{i}", "c/d/s1", minutes=9)
    city.read(*(reading(f"p{i}", "c/d/s1", 11, pm25=30.0) for i in range(40)))
    found = city.tick(16)
    first, second, third = (one(found, "online", "s1", m) for m in (0, 5, 10))
    assert (first.reporting, first.expected, first.value) == (4, 4, 1.0)
    assert (second.reporting, second.expected) == (0, 40)  # all joined before 8:10
    assert (third.reporting, third.expected, third.value) == (40, 40, 1.0)
    assert city.places["s1"]["j"] == {
        "air_quality": [
            [int((T0 + timedelta(minutes=5)).timestamp()), 4],
            [int((T0 + timedelta(minutes=9)).timestamp()), 36],
        ]
    }
    # registered now, active at once: it may bring readings of before, and counts in them
    assert (
        membership(
            None,
            {
                "state": "active",
                "place_path": ["c"],
                "device_type": "noise",
                "updated_at": T0.isoformat(),
            },
        )[0].at
        is None
    )
    city.tick(60 * 26)  # a day and more later: forgotten
    assert "j" not in city.places["s1"]


def test_a_worst_of_value_with_a_device_silent_is_at_most_partial() -> None:
    """Five depth sensors on a street; the underpass one reads 35 cm, then falls silent (under
    water, or its power cut in the flood): the street's deepest water is then a lower bound,
    so 4 of 5 reporting is not "good" for it, as it is for a mean."""
    city = City()
    for i in range(5):
        city.join(f"w{i}", "c/d/s1", "water_level")
    deep = [35.0, 1.0, 1.0, 1.0, 1.0]
    city.read(*(reading(f"w{i}", "c/d/s1", 1, "water_level", depth_cm=deep[i]) for i in range(5)))
    city.read(*(reading(f"w{i}", "c/d/s1", 6, "water_level", depth_cm=1.0) for i in range(1, 5)))
    found = city.tick(11)
    before, after = one(found, "depth", "s1", 0), one(found, "depth", "s1", 5)
    assert (before.value, before.quality) == (35.0, IndicatorQuality.GOOD)
    assert (after.value, after.reporting, after.expected) == (1.0, 4, 5)
    assert (after.coverage, after.quality) == (0.8, IndicatorQuality.PARTIAL)
    # A district or a city of many sensors always misses one: there coverage alone says it.
    assert one(found, "depth", "c", 5).quality is IndicatorQuality.GOOD


def test_a_device_counts_once_per_window_however_often_it_reports() -> None:
    city = City()
    city.join("a1", "c/d/s1")
    city.read(reading("a1", "c/d/s1", 1, pm25=10.0), reading("a1", "c/d/s1", 2, pm25=50.0))
    city.read(reading("a1", "c/d/s1", 3, pm25=30.0))
    aqi = one(city.tick(61), "aqi", "s1")
    assert aqi.reporting == 1 and aqi.value == iaqi("pm25", 30.0)
    assert aqi.samples == 3  # what the sink weighs a report again against


def test_a_replayed_message_is_applied_once() -> None:
    city = City()
    city.join("a1", "c/d/s1")
    batch = city.read(reading("a1", "c/d/s1", 1, pm25=100.0))
    city.send(batch)  # Kafka redelivers it after a crash
    aqi = one(city.tick(61), "aqi", "s1")
    assert aqi.reporting == 1 and aqi.value == iaqi("pm25", 100.0)


def test_input_messages_bundled_otherwise_on_a_replay_are_applied_once() -> None:
    """A group's batches reach a place in one message (``streams.app.bundle``); after a crash
    the same input messages may come in other groups: each is applied once, by its offset."""
    once, replayed = City(), City()
    for city in (once, replayed):
        city.join("a1", "c/d/s1")
        city.join("a2", "c/d/s2")
    values = [10.0, 50.0, 30.0, 70.0]
    batches = [
        once.read(reading(f"a{1 + n % 2}", f"c/d/s{1 + n % 2}", n, pm25=v))
        for n, v in enumerate(values)
    ]
    assert len(bundle(batches)) == 1
    for group in (batches[:2], batches[2:], batches[1:], batches):  # then again, regrouped
        for message in bundle(group):
            for batch in message.each():
                replayed.send(batch)
    assert replayed.places == once.places
    aqi = one(replayed.tick(61), "aqi", "d")
    # a1 at minutes 0 and 2, a2 at 1 and 3: each second reading stands for two minutes
    weighted = (10.0 * 60 + 50.0 * 60 + 30.0 * 120 + 70.0 * 120) / 360
    assert aqi.samples == 4 and aqi.value == iaqi("pm25", weighted)


def test_windows_are_reported_once_without_gaps_after_a_pause() -> None:
    city = City()
    city.join("n1", "c/d/s1", "noise")
    city.read(reading("n1", "c/d/s1", 1, "noise", laeq_db=60.0))
    found = city.tick(31)  # the stream was stopped for half an hour
    starts = sorted(i.window_start for i in found if (i.indicator, i.place_id) == ("noise", "s1"))
    assert starts == [T0 + timedelta(minutes=m) for m in range(0, 30, 5)]
    assert city.tick(31) == [] and city.tick(34) == []


def test_data_that_comes_after_its_window_was_reported_reports_it_again() -> None:
    city = City()
    city.join("n1", "c/d/s1", "noise")
    city.join("n2", "c/d/s1", "noise")
    city.read(reading("n1", "c/d/s1", 1, "noise", laeq_db=60.0))
    assert one(city.tick(6), "noise", "s1").reporting == 1
    city.read(reading("n2", "c/d/s1", 2, "noise", laeq_db=60.0))  # late, within the hour
    again = one(city.tick(7), "noise", "s1")
    assert again.reporting == 2 and again.coverage == 1.0


def test_membership_follows_moves_and_lifecycle() -> None:
    active = {"state": "active", "place_path": ["c", "d1", "s1"], "device_type": "noise"}
    moved = {**active, "place_path": ["c", "d2"]}
    suspended = {**moved, "state": "suspended"}
    assert [(c.place_path, c.delta) for c in membership(None, active)] == [
        (("c",), 1),
        (("c", "d1"), 1),
        (("c", "d1", "s1"), 1),
    ]
    assert [(c.place_path, c.delta) for c in membership(active, moved)] == [
        (("c",), -1),
        (("c", "d1"), -1),
        (("c", "d1", "s1"), -1),
        (("c",), 1),
        (("c", "d2"), 1),
    ]
    assert [c.delta for c in membership(moved, suspended)] == [-1, -1]
    assert membership(active, dict(active)) == []


def test_a_backlog_of_old_windows_merges_across_batches() -> None:
    """Readings hours old (a backlog) come in several batches, with ticks between them: each
    report of the window carries everything received so far, never just the last batch."""
    city = City()
    city.join("n1", "c/d/s1", "noise")
    city.join("n2", "c/d/s1", "noise")
    city.read(reading("n1", "c/d/s1", 1, "noise", laeq_db=60.0))
    city.tick(180)
    city.read(reading("n2", "c/d/s1", 2, "noise", laeq_db=60.0))
    latest = one(city.tick(181), "noise", "s1")
    assert (latest.reporting, latest.coverage) == (2, 1.0)


def test_the_shipped_catalogue_is_valid_and_a_bad_one_is_named_by_line() -> None:
    from importlib import resources

    from rules import RuleFileError

    shipped = parse_catalogue(resources.files("rules").joinpath("indicators.yaml").read_text())
    assert {"aqi", "water_depth", "congestion", "noise_leq", "devices_online"} <= set(shipped.by_id)
    bad = "indicators:\n  - id: x\n    kind: mean\n    metric: m\n    device_types: [noise]\n    window: 7m\n"
    with pytest.raises(RuleFileError) as err:
        parse_catalogue(bad, "cat.yaml")
    assert "cat.yaml:6: indicators.0.window: " in str(err.value) and "divide a day" in str(
        err.value
    )
    levelled = "indicators: [{id: d, kind: max, metric: m, device_types: [w], bands: [[dry, 5], [wet, null]], band_levels: {damp: blue}}]"
    with pytest.raises(RuleFileError) as err:
        parse_catalogue(levelled, "cat.yaml")
    assert "band_levels name 'damp', not a band of it (dry, wet)" in str(err.value)
    assert shipped.by_id["aqi"].level("light") == "orange"  # the formula's own bands


@pytest.mark.parametrize(
    ("indicator", "rule_id", "shown"),
    [
        ("water_depth", "waterlogging-depth", lambda cm: cm),
        ("noise_leq", "noise-4a", lambda db: db),
        ("congestion", "arterial-congestion", lambda kmh: 40 / kmh),  # its free-flow speed
    ],
)
def test_the_shipped_bands_agree_with_the_shipped_rules_at_each_threshold(
    indicator: str, rule_id: str, shown: Any
) -> None:
    """A value the rule raises an alert at is shown at that alert's level, also at the very
    threshold (5 cm of water is the blue alarm, not dry; 30 km/h is light congestion); just
    short of it, at the level below."""
    from importlib import resources

    from rules import parse_rules

    shipped = parse_catalogue(resources.files("rules").joinpath("indicators.yaml").read_text())
    rules = parse_rules(resources.files("rules").joinpath("default.yaml").read_text())
    spec, rule = shipped.by_id[indicator], rules.by_id[rule_id]
    below = getattr(rule, "direction", "above") == "below"
    levels = sorted(rule.levels.items(), key=lambda lv: -lv[1] if below else lv[1])  # type: ignore[attr-defined]
    before = None
    for level, threshold in levels:
        band = spec.band(shown(threshold))
        assert band is not None and spec.level(band) == level, (threshold, band)
        short = threshold + 0.1 if below else threshold - 0.1
        band = spec.band(shown(short))
        assert band is not None and spec.level(band) == before, (short, band)
        before = level


def test_windows_wait_for_the_expected_devices_rather_than_skip_them() -> None:
    """Readings can reach a place before the registry's word that their devices belong there."""
    city = City()
    city.read(reading("n1", "c/d/s1", 1, "noise", laeq_db=60.0))
    first = city.tick(16)  # the first window has data; the next two neither data nor members
    assert [
        (i.window_start, i.reporting)
        for i in first
        if i.place_id == "s1" and i.indicator == "noise"
    ] == [(T0, 1)]
    city.join("n1", "c/d/s1", "noise")
    later = [i for i in city.tick(17) if i.place_id == "s1" and i.indicator == "noise"]
    assert [(i.window_start, i.quality.value) for i in later] == [
        (T0 + timedelta(minutes=5), "no_data"),
        (T0 + timedelta(minutes=10), "no_data"),
    ]


def test_a_reading_delivered_twice_is_folded_once() -> None:
    city = City()
    city.join("a1", "c/d/s1")
    city.read(reading("a1", "c/d/s1", 1, pm25=100.0))
    city.read(reading("a1", "c/d/s1", 1, pm25=100.0))  # the broker delivered it again
    city.read(reading("a1", "c/d/s1", 2, pm25=40.0), reading("a1", "c/d/s1", 3, pm25=40.0))
    city.read(reading("a1", "c/d/s1", 4, pm25=10.0), reading("a1", "c/d/s1", 4, pm25=10.0))
    aqi = one(city.tick(61), "aqi", "s1")  # (100 + 40 + 40 + 10) / 4, each reading once
    assert aqi.reporting == 1 and aqi.value == iaqi("pm25", 47.5)


def test_a_message_processed_again_after_a_crash_counts_its_devices_again() -> None:
    """The device's marks were saved but the partial never reached the place: the replay
    of the same message must still count the device (the place takes each message once)."""
    city = City()
    city.join("a1", "c/d/s1")
    partials = Partials(CATALOGUE)
    partials.add(reading("a1", "c/d/s1", 1, pm25=30.0), city.marks.setdefault("a1", {}), 7)
    # ...crash: that partial was lost. The same message (offset 7) is processed again:
    city.read(reading("a1", "c/d/s1", 1, pm25=30.0), offset=7)
    city.send(city.read(reading("a1", "c/d/s1", 1, pm25=30.0), offset=7))  # and once more
    aqi = one(city.tick(61), "aqi", "s1")
    assert (aqi.reporting, aqi.value) == (1, iaqi("pm25", 30.0))


def test_a_backlog_older_than_anything_reported_fills_the_windows_up_to_it() -> None:
    city = City()
    city.join("n1", "c/d/s1", "noise")

    def noise(minutes: float) -> list[Any]:
        return [i for i in city.tick(minutes) if (i.indicator, i.place_id) == ("noise", "s1")]

    # The place's history starts with the window open when its memory began: no window that
    # ended before is reported as no_data, since nothing was watching it.
    assert noise(31) == []
    assert [i.window_start for i in noise(36)] == [T0 + timedelta(minutes=30)]
    city.read(reading("n1", "c/d/s1", 6, "noise", laeq_db=60.0))  # a backlog arrives
    filled = [
        (T0 + timedelta(minutes=5), 1),
        (T0 + timedelta(minutes=10), 0),
        (T0 + timedelta(minutes=15), 0),
        (T0 + timedelta(minutes=20), 0),
        (T0 + timedelta(minutes=25), 0),
    ]
    assert [(i.window_start, i.reporting) for i in noise(37)] == filled
    # The same when the backlog comes before the place reported anything: its history started
    # with the window open at its first tick, and now starts at the backlog.
    city = City()
    city.join("n1", "c/d/s1", "noise")
    assert noise(31) == []
    city.read(reading("n1", "c/d/s1", 6, "noise", laeq_db=60.0))
    assert [(i.window_start, i.reporting) for i in noise(32)] == filled


def test_a_place_begun_in_a_windows_grace_does_not_report_that_window() -> None:
    """A device joins (a new street) 15 s after a window ended, within the grace before that
    window is due: nothing watched the window, so it is not reported as no_data with the
    device expected in it; the first window reported is the one open when the place began."""
    city = City()
    city.join("n1", "c/d/s1", "noise")

    def noise(minutes: float) -> list[Any]:
        return [i for i in city.tick(minutes) if (i.indicator, i.place_id) == ("noise", "s1")]

    assert noise(30.25) == []
    assert noise(32) == []  # [25, 30) is due now, but began before the place did
    assert [i.window_start for i in noise(36)] == [T0 + timedelta(minutes=30)]


def test_a_backlog_weeks_old_fills_the_windows_of_the_last_day_only() -> None:
    """A reading weeks old (a device clock reset) reports its own window and the empty ones
    of the last day (MAX_CATCH_UP), not every window since: thousands, or millions from 1970,
    walked in the stage's event loop, stopped it."""
    city = City()
    city.join("n1", "c/d/s1", "noise")
    city.tick(31)
    city.tick(36)  # the first window reported
    old = reading("n1", "c/d/s1", 0, "noise", laeq_db=60.0)
    city.read(old.model_copy(update={"ts": T0 - timedelta(days=40)}))  # 40 days old
    later = [i for i in city.tick(37) if (i.indicator, i.place_id) == ("noise", "s1")]
    starts = sorted(i.window_start for i in later)
    assert starts[0] == window_start(T0 - timedelta(days=40), 300)  # its own window, alone
    assert starts[1] >= T0 + timedelta(minutes=37) - MAX_CATCH_UP - timedelta(minutes=5)
    assert len(later) <= 1 + 24 * 12  # then a day of 5-minute windows at most (not 11,500)


def test_a_camera_reports_by_its_events() -> None:
    from cityvitals.contracts import CameraEvent

    city = City()
    city.join("cam-1", "c/d/s1", "camera")
    city.join("n1", "c/d/s1", "noise")
    event = CameraEvent(
        camera_id="cam-1",
        ts=T0 + timedelta(minutes=1),
        seq=1,
        event_type="crowd_density",
        value=0.4,
        confidence=0.9,
        device_type="camera",
        place_path=("c", "d", "s1"),
    )
    partials = Partials(CATALOGUE)
    partials.add(event, city.marks.setdefault("cam-1", {}), 99)
    city.send(IndicatorBatch(source="raw[0]", offset=99, partials=tuple(partials.partials())))
    online = one(city.tick(6), "online", "s1")
    assert (online.reporting, online.expected, online.value) == (1, 2, 0.5)


def test_a_device_that_moves_mid_window_counts_once_and_where_it_was_expected() -> None:
    city = City()
    for i in range(3):
        city.join(f"n{i}", "c/d1/s1", "noise")
    city.join("n3", "c/d2/s2", "noise")
    city.read(
        *(reading(f"n{i}", "c/d1/s1", 1, "noise", laeq_db=60.0) for i in range(3)),
        reading("n3", "c/d2/s2", 1, "noise", laeq_db=60.0),
    )
    city.move("n0", "c/d1/s1", "c/d2/s2", "noise")
    city.read(reading("n0", "c/d2/s2", 3, "noise", laeq_db=70.0))
    found = city.tick(6)
    assert [i for i in found if i.reporting > i.expected] == []
    counts = {
        p: (one(found, "noise", p).reporting, one(found, "noise", p).expected)
        for p in ("c", "d1", "s1", "d2", "s2")
    }
    # Counted once in the city; at its old places for the part of the window it was there
    # (and expected there), at its new places for the rest.
    assert counts == {"c": (4, 4), "d1": (3, 3), "s1": (3, 3), "d2": (2, 2), "s2": (2, 2)}
    city.read(reading("n0", "c/d2/s2", 6, "noise", laeq_db=70.0))
    city.read(*(reading(f"n{i}", "c/d1/s1", 6, "noise", laeq_db=60.0) for i in (1, 2)))
    later = city.tick(11)
    assert (one(later, "noise", "d1", 5).reporting, one(later, "noise", "d1", 5).expected) == (2, 2)
    assert (one(later, "noise", "c", 5).reporting, one(later, "noise", "c", 5).expected) == (3, 4)


def test_a_reading_out_of_order_across_a_window_edge_is_not_counted_twice() -> None:
    city = City()
    city.join("n1", "c/d/s1", "noise")
    city.read(reading("n1", "c/d/s1", 1, "noise", laeq_db=60.0))
    city.read(reading("n1", "c/d/s1", 5.5, "noise", laeq_db=60.0))
    city.read(reading("n1", "c/d/s1", 4.5, "noise", laeq_db=60.0))  # late, within the grace
    found = city.tick(11)
    first = one(found, "noise", "c", 0)
    assert (first.reporting, first.expected, first.coverage) == (1, 1, 1.0)
    assert one(found, "noise", "c", 5).reporting == 1


def test_marks_of_the_earliest_shape_are_still_understood() -> None:
    """A window counted with no place (the earliest marks) counts at every place."""
    partials = Partials(CATALOGUE)
    start = window_start(T0, 300).isoformat()
    marks = copy_marks({"t": [], "w": {"noise": [start, 7]}})
    assert marks["c"] == {"noise": {UNKNOWN: {str(int(window_start(T0, 300).timestamp())): 7}}}
    partials.add(reading("n1", "c/d/s1", 2, "noise", laeq_db=60.0), marks, 8)
    (partial,) = [
        p for p in partials.partials() if p.indicator == "noise" and p.place_path == ("c",)
    ]
    assert partial.reporting == 0  # counted by message 7 already


@pytest.mark.parametrize(
    ("place", "counted"),
    [
        pytest.param("c/d/s1", [], id="at the same place"),
        pytest.param("c/d/s2", [("c", "d", "s2")], id="moved to another street"),
    ],
)
def test_marks_of_the_previous_shape_are_still_understood(
    place: str, counted: list[tuple[str, ...]]
) -> None:
    """Windows counted in the previous marks (``[start in ISO form, offset, place path]``
    each, as the version before kept them) are counted: a device counted there by another
    message counts again only at places it was not at."""
    start = window_start(T0, 300)
    marks = copy_marks({"t": [], "w": {"noise": [[start.isoformat(), 7, ["c", "d", "s1"]]]}})
    partials = Partials(CATALOGUE)
    partials.add(reading("n1", place, 2, "noise", laeq_db=60.0), marks, 8)
    found = [p.place_path for p in partials.partials() if p.indicator == "noise" and p.reporting]
    assert found == counted
    assert "w" not in marks
    assert marks["c"]["noise"]["c/d/s1"] == {str(int(start.timestamp())): 7}


def test_a_batch_changes_a_copy_of_the_stored_marks() -> None:
    """The stored marks stay as they were when a batch counts the device in a new window
    (the table keeps them until the batch's changes are written)."""
    stored = copy_marks(None)
    Partials(CATALOGUE).add(reading("n1", "c/d/s1", 2, "noise", laeq_db=60.0), stored, 7)
    before = copy.deepcopy(stored)
    marks = copy_marks(stored)
    Partials(CATALOGUE).add(reading("n1", "c/d/s1", 7, "noise", laeq_db=60.0), marks, 8)
    assert stored == before
    assert len(marks["c"]["noise"]["c/d/s1"]) == 2


def test_a_move_heard_before_the_readings_it_follows_still_keeps_coverage_within_100() -> None:
    city = City()
    for i in range(2):
        city.join(f"n{i}", "c/d1/s1", "noise")
    city.move("n0", "c/d1/s1", "c/d2/s2", "noise")  # the registry's topic ran ahead
    city.read(*(reading(f"n{i}", "c/d1/s1", 1, "noise", laeq_db=60.0) for i in range(2)))
    found = city.tick(6)
    assert [i for i in found if i.reporting > i.expected or i.coverage > 1] == []
    assert (one(found, "noise", "s1").reporting, one(found, "noise", "s1").expected) == (2, 2)


@pytest.mark.parametrize(
    "kept",
    [
        pytest.param(["2026-07-01T08:01:00+00:00"], id="written before"),
        pytest.param(["2026-07-01T10:01:00+02:00"], id="another offset"),
        # an older worker added to newer marks during a rolling update
        pytest.param([1_782_892_800_000_000, "2026-07-01T08:01:00+00:00"], id="mixed"),
    ],
)
def test_recent_instants_kept_in_iso_form_still_spot_a_reading_delivered_twice(
    kept: list[object],
) -> None:
    """Marks whose recent instants are ISO strings: the reading one names, delivered again in
    another message, is not folded again (nor a second copy in the same message); the marks
    then keep every instant in microseconds since 1970."""
    first = reading("a1", "c/d/s1", 1, pm25=30.0)  # 2026-07-01T08:01:00Z
    marks: dict[str, Any] = {"t": [[t, 7] for t in kept], "c": {}}
    partials = Partials(CATALOGUE)
    assert partials.add(first, marks, 8) is False
    assert partials.add(reading("a1", "c/d/s1", 1, pm25=30.0), marks, 8) is False
    assert partials.partials() == []
    assert all(type(t) is int for t, _ in marks["t"])
    assert [1_782_892_860_000_000, 7] in marks["t"]


def test_the_marks_keep_the_windows_of_the_last_hour_before_the_newest() -> None:
    """A device counted in noise windows over two hours, one message a window: its marks keep
    the windows of the hour before the newest (at every message, and a window a message
    re-counts once), whichever order the messages came in."""
    starts = [T0 + timedelta(minutes=5 * k) for k in range(25)]  # 08:00 to 10:00
    for order in (starts, [*starts[12:], *starts[:12]]):
        marks: dict[str, Any] = {}
        for offset, start in enumerate(order):
            partials = Partials(CATALOGUE)  # a batch a message, as the stage makes them
            minutes = (start - T0) / timedelta(minutes=1) + 1
            partials.add(reading("n1", "c/d/s1", minutes, "noise", laeq_db=60.0), marks, offset)
        assert list(marks["c"]["noise"]) == ["c/d/s1"]
        kept = sorted(int(s) for s in marks["c"]["noise"]["c/d/s1"])
        # 09:00 to 10:00: an hour before the newest, not older
        assert kept == [int(s.timestamp()) for s in starts[12:]]


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5, minutes=30))]
        ),
    )
)
def test_an_instant_in_microseconds_is_exact_in_any_zone(ts: datetime) -> None:
    """Marks keep instants as whole microseconds since 1970 (the dedup key of a reading)."""
    assert micros(ts) == (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_the_shipped_bands_are_coloured_as_the_shipped_rules_raise_their_values() -> None:
    """A tile and an alert on the same value agree: each shipped band's level (its middle;
    the unbounded last band just past its start) is the level the shipped threshold rule on
    the indicator's metric raises for that value (a congestion index as the speed it means)."""
    from importlib import resources

    from device_registry.api.vitals import load_catalogue
    from rules.kinds.levels import judge_levelled
    from rules.ruleset import parse_rules

    shipped = parse_rules(resources.files("rules").joinpath("default.yaml").read_text())
    rules = {r.metric: r for r in shipped.rules if r.kind == "threshold"}
    checked = []
    for spec in load_catalogue(None).by_id.values():
        rule = rules.get(spec.metric)
        if rule is None or not spec.bands:
            continue
        lower = 0.0
        for band, upper in spec.bands:
            middle = lower + 1 if upper is None else (lower + upper) / 2
            value = spec.free_flow_kmh / middle if spec.kind == "congestion" else middle
            raised = judge_levelled(rule, value, False, None).level
            assert spec.level(band) == raised, (spec.id, band, value, raised)
            lower = upper or lower
        checked.append(spec.id)
    assert sorted(checked) == ["congestion", "noise_leq", "water_depth"]
