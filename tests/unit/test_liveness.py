from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from cityvitals.contracts import Device, DeviceState, Liveness, OutageStatus
from device_registry.liveness import (
    DEFAULT_INTERVAL_S,
    WINDOW,
    CheckResult,
    DeviceClock,
    LivenessPolicy,
    Outage,
    PlacePath,
    PlaceTally,
    Watched,
    cadence,
    check,
    follow,
    highest_places,
    judge,
    observe,
    outage_id,
    restore,
    tally,
    track_outages,
    watch_from,
)

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
POLICY = LivenessPolicy(late_factor=2, offline_factor=4, outage_min_devices=3)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reported(times: Iterable[float], since: float = 0) -> DeviceClock:
    clock = DeviceClock(since=at(since))
    for t in times:
        clock = observe(clock, at(t))
    return clock


def status(clock: DeviceClock, now: float, fallback: float = 300.0) -> Liveness:
    return judge(clock, at(now), fallback, 2.0, 4.0)


# --- one device ---------------------------------------------------------------------------------


def test_cadence_is_learned_from_three_gaps_and_falls_back_before() -> None:
    assert cadence(reported([0, 10, 20]), 60.0) == 60.0  # two gaps: the fallback
    assert cadence(reported([0, 10, 20, 30]), 60.0) == 10.0


def test_a_camera_s_events_show_it_alive_and_teach_no_cadence() -> None:
    """Three events a second apart made a camera with no profile offline four seconds later
    (judged every 1 s): events come when it sees something, not at a cadence."""
    from device_registry.liveness_service import reports

    burst = (
        b'{"camera_events": ['
        + b", ".join(
            b'{"camera_id": "cam-1", "ts": "2026-11-22T08:00:0%d+00:00"}' % i for i in range(4)
        )
        + b"]}"
    )
    clock = DeviceClock(since=T0)
    for report in reports(burst):
        assert report.event
        clock = observe(clock, report.seen_at, learn=not report.event)
    assert clock.last_seen == at(3) and clock.gaps == ()
    assert status(clock, 60) is Liveness.ONLINE  # by the 300 s it falls back to
    assert status(reported([0, 1, 2, 3]), 60) is Liveness.OFFLINE  # a sensor's readings teach


def test_cadence_is_the_median_of_a_bounded_window_so_one_long_gap_does_not_move_it() -> None:
    clock = reported([0, 10, 20, 30, 1030, 1040, 1050])
    assert cadence(clock, 60.0) == 10.0
    many = reported(range(0, 10 * (WINDOW + 20), 10))
    assert len(many.gaps) == WINDOW


def test_a_replayed_or_older_report_changes_nothing_and_a_near_duplicate_is_one_report() -> None:
    clock = reported([0, 10, 20])
    assert observe(clock, at(15)) is clock
    assert observe(clock, at(20)) is clock
    merged = observe(clock, at(20.05))
    assert merged.gaps == clock.gaps and merged.last_seen == at(20.05)


def test_late_and_offline_follow_the_devices_own_cadence() -> None:
    fast = reported([0, 1, 2, 3])  # every second
    assert [status(fast, t) for t in (4.5, 5.0, 7.0)] == ["online", "late", "offline"]
    slow = reported([0, 100, 200, 300])  # every 100 s, same fallback
    assert [status(slow, t) for t in (350, 500, 700)] == ["online", "late", "offline"]


def test_the_fallback_rules_until_the_cadence_is_known() -> None:
    clock = reported([0, 1])  # one gap of 1 s is not yet a cadence
    assert status(clock, 10, fallback=60) == "online"
    assert status(clock, 1 + 120, fallback=60) == "late"
    assert status(clock, 1 + 240, fallback=60) == "offline"


def test_a_burst_at_commissioning_does_not_make_a_profiled_device_flap() -> None:
    """Tested every 3 s at commissioning, then reporting every 31 s as its 60 s profile
    allows: judged by its profile's interval, it stays online between reports. Without a
    floor it would be offline 12 s after each report until the burst aged out."""
    clock = reported([*range(0, 40, 3), 70, 101, 132])
    assert cadence(clock, 60.0) == 3.0  # what the burst taught
    assert judge(clock, at(132 + 30), 60.0, 2.0, 4.0) == "offline"
    assert judge(clock, at(132 + 30), 60.0, 2.0, 4.0, floor_s=60.0) == "online"
    assert judge(clock, at(132 + 120), 60.0, 2.0, 4.0, floor_s=60.0) == "late"
    assert cadence(reported([0, 300, 600, 900]), 60.0, floor_s=60.0) == 300.0  # slower: its own


def test_a_device_never_heard_is_judged_from_its_registration() -> None:
    clock = DeviceClock(since=at(1000))
    assert status(clock, 1000 + 239, fallback=60) == "late"
    assert status(clock, 1000 + 240, fallback=60) == "offline"


def test_an_offline_device_is_online_again_as_soon_as_it_reports() -> None:
    clock = reported([0, 10, 20, 30])
    assert status(clock, 200) == "offline"
    back = observe(clock, at(200))
    assert status(back, 201) == "online"
    assert cadence(back, 300.0) == 10.0  # the outage gap did not teach it a new cadence


def test_a_restored_clock_keeps_its_cadence_and_knows_a_withheld_offline() -> None:
    clock = restore(Liveness.OFFLINE, at(0), 10.0, at(-100), withheld=True)
    assert cadence(clock, 300.0) == 10.0 and clock.announced is Liveness.LATE
    assert restore(Liveness.OFFLINE, at(0), 10.0, at(-100), withheld=False).announced == "offline"
    never = restore(Liveness.LATE, None, 300.0, at(-100), withheld=False)
    assert never.gaps == () and never.heard == at(-100)


# --- places -------------------------------------------------------------------------------------


def members(
    silent: dict[PlacePath, int], quiet: dict[PlacePath, int]
) -> list[tuple[PlacePath, bool, datetime]]:
    rows: list[tuple[PlacePath, bool, datetime]] = []
    for path, n in silent.items():
        rows += [(path, True, T0)] * n
    for path, n in quiet.items():
        rows += [(path, False, T0)] * n
    return rows


def test_the_highest_place_out_is_the_outage_not_its_grids_nor_its_district() -> None:
    g1, g2, other = ("c", "d", "s1", "g1"), ("c", "d", "s1", "g2"), ("c", "d", "s2", "g1")
    out = highest_places(tally(members({g1: 3, g2: 3}, {other: 2})), 3, 0.8)
    assert list(out) == [("c", "d", "s1")]  # g1, g2 qualify too; d is 6/8 = 0.75
    assert (out["c", "d", "s1"].total, out["c", "d", "s1"].silent) == (6, 6)


def test_a_district_that_qualifies_itself_is_the_one_outage() -> None:
    g1, other, elsewhere = ("c", "d", "s1", "g1"), ("c", "d", "s2", "g1"), ("c", "d2", "s1")
    out = highest_places(tally(members({g1: 4, other: 4}, {elsewhere: 3})), 3, 0.8)
    assert list(out) == [("c", "d")]  # the city is 8/11


def test_too_few_devices_or_too_small_a_share_is_no_outage() -> None:
    g1 = ("c", "d", "s1", "g1")
    assert highest_places(tally(members({g1: 2}, {})), 3, 0.8) == {}
    assert highest_places(tally(members({g1: 7}, {g1: 3})), 3, 0.8) == {}
    assert list(highest_places(tally(members({g1: 7}, {g1: 3})), 3, 0.7)) == [("c",)]


def test_an_open_outage_stays_while_anything_under_it_is_out_and_never_nests() -> None:
    s1, s2, g2, district = STREET, ("c", "d", "s2"), (*STREET, "g2"), ("c", "d")
    street = Outage(outage_id("s1", T0), s1, T0, 6, 6)
    out = PlaceTally(3, 3, T0)
    assert track_outages({s1: street}, {g2: out}, {}) == ({s1: street}, [], {})
    assert track_outages({s1: street}, {}, {}) == ({}, [street], {})
    assert track_outages({s1: street}, {s1: out, s2: out}, {}) == ({s1: street}, [], {s2: out})
    # The district goes out as well: it takes the street over.
    both = {district: out, s1: out}
    assert track_outages({s1: street}, both, {}) == ({}, [street], {district: out})


def test_no_outage_starts_below_a_place_about_to_go_out() -> None:
    g1, s1 = (*STREET, "g1"), STREET
    out = PlaceTally(3, 3, T0)
    assert track_outages({}, {g1: out}, {s1: out}) == ({}, [], {})  # wait for the street
    assert track_outages({}, {g1: out}, {g1: out}) == ({}, [], {g1: out})


def test_a_street_whose_grids_cross_offline_a_little_apart_is_one_street_outage() -> None:
    fleet = {
        **{f"a{i}": Watched((*STREET, "g1"), 300.0, T0) for i in range(3)},
        **{f"b{i}": Watched((*STREET, "g2"), 300.0, T0) for i in range(3)},
        **{f"x{i}": Watched(("c", "d", "s2", "g1"), 300.0, T0) for i in range(3)},
    }
    clocks = {d: reported([0, 10, 20, 30]) for d in fleet}
    clocks |= {d: reported([0, 10, 20, 35]) for d in ("b0", "b1", "b2")}  # 5 s later
    clocks |= {d: reported(range(0, 80, 10)) for d in ("x0", "x1", "x2")}
    first = check(clocks, fleet, {}, at(72), POLICY)  # g1 offline, g2 still late
    assert first.started == ()
    assert [(a.device_id, a.status) for a in first.announced] == [
        (b, Liveness.LATE) for b in ("b0", "b1", "b2")
    ]  # a* offline: withheld
    second = check(first.clocks, fleet, first.outages, at(76), POLICY)
    assert [o.place_path for o in second.started] == [STREET] and second.announced == ()


def test_the_outage_id_is_deterministic() -> None:
    assert outage_id("s1", T0) == outage_id("s1", T0)
    assert outage_id("s1", T0) != outage_id("s1", at(1)) != outage_id("s2", T0)
    assert len(outage_id("s1", T0)) == 32


# --- rounds over a fleet ------------------------------------------------------------------------

STREET = ("c", "d", "s1")
FLEET = {
    **{f"a{i}": Watched((*STREET, "g1"), 300.0, T0) for i in range(3)},
    **{f"b{i}": Watched((*STREET, "g2"), 300.0, T0) for i in range(3)},
    **{f"x{i}": Watched(("c", "d", "s2", "g1"), 300.0, T0) for i in range(2)},
}


class City:
    """A fleet that reports every 10 s, checked every second."""

    def __init__(self) -> None:
        self.clocks = {d: reported([0, 10, 20, 30]) for d in FLEET}
        self.outages: dict[PlacePath, Outage] = {}
        self.rounds: list[CheckResult] = []

    def report(self, devices: Iterable[str], t: float) -> None:
        for d in devices:
            self.clocks[d] = observe(self.clocks[d], at(t))

    def run(self, until: float, start: float, reporting: Iterable[str] = ()) -> None:
        keep = list(reporting)
        for t in range(int(start), int(until) + 1):
            if t % 10 == 0:
                self.report(keep, t)
            result = check(self.clocks, FLEET, self.outages, at(t), POLICY)
            self.clocks, self.outages = result.clocks, result.outages
            self.rounds.append(result)

    def announced(self) -> list[tuple[str, str]]:
        return [(a.device_id, a.status.value) for r in self.rounds for a in r.announced]

    def outage_events(self) -> list[tuple[str, OutageStatus]]:
        return [(o.place_id, o.status) for r in self.rounds for o in (*r.started, *r.ended)]


def test_one_device_going_silent_is_announced_late_then_offline_then_online() -> None:
    city = City()
    others = [d for d in FLEET if d != "a0"]
    city.run(until=80, start=31, reporting=others)
    assert city.announced() == [("a0", "late"), ("a0", "offline")]
    assert city.clocks["a0"].status is Liveness.OFFLINE and city.outage_events() == []
    city.report(["a0"], 81)
    city.run(until=85, start=81, reporting=others)
    assert city.announced()[-1] == ("a0", "online")


def test_a_silent_street_is_one_outage_and_its_devices_announce_no_offline() -> None:
    city = City()
    street = [d for d in FLEET if d[0] in "ab"]
    city.run(until=120, start=31, reporting=["x0", "x1"])
    assert city.outage_events() == [("s1", OutageStatus.STARTED)]
    started = next(o for r in city.rounds for o in r.started)
    assert started.place_path == STREET and (started.devices_total, started.devices_silent) == (
        6,
        6,
    )
    assert started.started_at == at(30)  # when the street fell silent
    assert started.outage_id == outage_id("s1", at(30))
    assert sorted(city.announced()) == sorted((d, "late") for d in street)
    assert all(city.clocks[d].status is Liveness.OFFLINE for d in street)  # stored as the truth
    changed = {d for r in city.rounds for d in r.changed}
    assert changed == set(street)


def test_the_outage_ends_when_the_street_reports_again_and_no_offline_leaks() -> None:
    city = City()
    street = [d for d in FLEET if d[0] in "ab"]
    city.run(until=120, start=31, reporting=["x0", "x1"])
    # Power back: devices return one at a time. The street stays one outage while its grid g2
    # is still out (g1's last device is withheld meanwhile); it ends as b0 returns, and b1, b2
    # still offline get time to come back before anyone calls them offline.
    for i, d in enumerate(street):
        city.report([d], 121 + i)
        city.run(until=121 + i, start=121 + i, reporting=[])
    city.run(until=140, start=128, reporting=FLEET)
    events = city.outage_events()
    assert events == [("s1", OutageStatus.STARTED), ("s1", OutageStatus.ENDED)]
    ended = next(o for r in city.rounds for o in r.ended)
    assert ended.outage_id == outage_id("s1", at(30)) and ended.devices_silent == 2
    assert ended.devices == ("b1", "b2")  # the two still silent, by name
    started = next(o for r in city.rounds for o in r.started)
    assert started.devices == tuple(sorted(street))  # those to visit
    assert ("offline" not in {s for _d, s in city.announced()}) and not city.outages
    assert all(city.clocks[d].announced is Liveness.ONLINE for d in street)


def test_an_outage_whose_devices_all_left_its_place_ends_with_none_there() -> None:
    """Its devices suspended or moved away, the outage ends: its event says no device is
    under the place now, not that its devices report again."""
    city = City()
    city.run(until=120, start=31, reporting=["x0", "x1"])
    left = {d: w for d, w in FLEET.items() if d[0] not in "ab"}
    result = check(city.clocks, left, city.outages, at(121), POLICY)
    (ended,) = result.ended
    assert (ended.place_id, ended.status) == ("s1", OutageStatus.ENDED)
    assert (ended.devices_total, ended.devices_silent, ended.devices) == (0, 0, ())


def test_an_outage_names_the_offline_devices_under_its_place_alone() -> None:
    outage = Outage(outage_id("s1", at(30)), STREET, at(30), 6, 5)
    offline = [("a1", (*STREET, "g1")), ("b0", (*STREET, "g2")), ("x0", ("c", "d", "s2", "g1"))]
    event = outage.event(OutageStatus.STARTED, at(31), PlaceTally(6, 2, at(20)), offline)
    assert event.devices == ("a1", "b0")  # not x0, offline in another street
    assert event.devices_silent == 2


def test_a_device_still_offline_after_its_grace_is_announced_on_its_own() -> None:
    city = City()
    city.run(until=120, start=31, reporting=["x0", "x1"])
    city.report(["a0", "a1", "a2", "b0"], 121)  # b1, b2 stay dead
    city.run(until=200, start=121, reporting=["a0", "a1", "a2", "b0", "x0", "x1"])
    assert ("b1", "offline") in city.announced() and ("b2", "offline") in city.announced()
    first = min(t for t, r in enumerate(city.rounds) for a in r.announced if a.status == "offline")
    assert first + 31 == 121 + 40  # after a grace of 4 intervals from the outage's end


def test_a_grid_outage_is_taken_over_by_its_street() -> None:
    fleet = {
        **{f"a{i}": Watched((*STREET, "g1"), 300.0, T0) for i in range(3)},
        **{f"b{i}": Watched((*STREET, "g2"), 300.0, T0) for i in range(2)},
        "x": Watched(("c", "d", "s2", "g1"), 300.0, T0),
        "y": Watched(("c", "d", "s2", "g1"), 300.0, T0),
    }
    clocks = {d: reported([0, 10, 20, 30]) for d in fleet}
    clocks |= {d: reported([0, 10, 20, 30, 40, 50, 60, 70]) for d in ("b0", "b1", "x", "y")}
    grid = check(clocks, fleet, {}, at(75), POLICY)  # a* offline (45 s > 40 s), b* fine
    assert [o.place_path for o in grid.started] == [(*STREET, "g1")]
    clocks = dict(grid.clocks)
    for d in ("x", "y"):
        for t in (80, 90, 100, 110):
            clocks[d] = observe(clocks[d], at(t))
    street = check(clocks, fleet, grid.outages, at(115), POLICY)  # b* offline too
    assert [o.place_path for o in street.started] == [STREET]
    assert [o.place_path for o in street.ended] == [(*STREET, "g1")]
    assert list(street.outages) == [STREET]


def test_unknown_devices_are_not_judged_and_new_ones_start_online() -> None:
    fleet = {"new": Watched(("c",), DEFAULT_INTERVAL_S, at(0))}
    result = check({"gone": reported([0, 1, 2, 3])}, fleet, {}, at(10), POLICY)
    assert list(result.clocks) == ["new"] and result.announced == () and result.changed == ()


def test_a_held_device_keeps_its_status_while_the_others_are_judged() -> None:
    fleet = {d: Watched(("c", d), 10.0, T0) for d in ("a", "b")}
    clocks = {d: reported([0, 10, 20, 30]) for d in fleet}
    result = check(clocks, fleet, {}, at(200), POLICY, held={"a"})
    assert result.clocks["a"] == clocks["a"] and result.changed == ("b",)
    assert [(a.device_id, a.status.value) for a in result.announced] == [("b", "offline")]


# --- a restart of the service or of the stack ------------------------------------------------


def test_after_a_restart_silence_counts_from_when_watching_began_not_from_the_last_report() -> None:
    # The stack was down for an hour; the service restarts and restores its stored clocks.
    restart = at(3600)
    clocks = {d: restore(Liveness.ONLINE, at(30), 10.0, restart, withheld=False) for d in FLEET}
    first = check(clocks, FLEET, {}, restart + timedelta(seconds=1), POLICY)
    assert first.started == () and first.announced == () and first.changed == ()
    # The devices report again within their cadence: nothing was ever wrong with them.
    clocks = {d: observe(c, restart + timedelta(seconds=5)) for d, c in first.clocks.items()}
    later = check(clocks, FLEET, {}, restart + timedelta(seconds=10), POLICY)
    assert later.started == () and later.announced == ()
    # One that does not report is judged by its cadence from the restart, like any other.
    silent = check(first.clocks, FLEET, {}, restart + timedelta(seconds=45), POLICY)
    assert [o.place_id for o in silent.started] == ["c"]


def test_a_device_offline_before_the_restart_stays_offline_until_it_reports() -> None:
    restart = at(3600)
    fleet = {"a": Watched(("c", "d"), 300.0, restart)}
    clock = restore(Liveness.OFFLINE, at(30), 10.0, restart, withheld=False)
    result = check({"a": clock}, fleet, {}, restart + timedelta(seconds=1), POLICY)
    assert result.clocks["a"].status is Liveness.OFFLINE and result.announced == ()
    back = observe(result.clocks["a"], restart + timedelta(seconds=2))
    again = check({"a": back}, fleet, {}, restart + timedelta(seconds=3), POLICY)
    assert [(a.device_id, a.status.value) for a in again.announced] == [("a", "online")]


def test_watching_begins_when_the_service_first_sees_a_device_in_the_fleet() -> None:
    registered = {"a": Watched(("c",), 60.0, at(0)), "b": Watched(("c",), 60.0, at(0))}
    started = watch_from(registered, {}, at(3600))
    assert {d: w.since for d, w in started.items()} == {"a": at(3600), "b": at(3600)}
    activated = {**registered, "n": Watched(("c",), 60.0, at(0))}
    refreshed = watch_from(activated, started, at(7200))
    assert {d: w.since for d, w in refreshed.items()} == {
        "a": at(3600),
        "b": at(3600),
        "n": at(7200),
    }


def device(device_id: str, state: DeviceState, interval: float | None = None, *path: str) -> Device:
    return Device(
        device_id=device_id,
        device_type="water_level",
        place_path=path or ("c", "d"),
        state=state,
        expected_interval_s=interval,
        updated_at=at(0),
    )


def test_the_fleet_follows_the_devices_topic_active_watched_any_other_state_not() -> None:
    fleet = follow(
        {},
        [device("a", DeviceState.ACTIVE, 30.0), device("p", DeviceState.PROVISIONED)],
        DEFAULT_INTERVAL_S,
        at(3600),
    )
    assert fleet == {"a": Watched(("c", "d"), 30.0, at(3600), 30.0)}, "provisioned is not watched"
    later = [
        device("a", DeviceState.ACTIVE, 60.0, "c", "e"),  # moved, its profile's interval changed
        device("p", DeviceState.ACTIVE),  # activated: watched from now, by the default
    ]
    fleet = follow(fleet, later, DEFAULT_INTERVAL_S, at(7200))
    assert fleet == {
        "a": Watched(("c", "e"), 60.0, at(3600), 60.0),
        "p": Watched(("c", "d"), DEFAULT_INTERVAL_S, at(7200)),  # no profile: no floor
    }
    gone = [device("a", DeviceState.SUSPENDED), device("p", DeviceState.RETIRED)]
    assert follow(fleet, gone, DEFAULT_INTERVAL_S, at(7300)) == {}


def test_a_device_watched_before_its_registration_arrived_keeps_its_start() -> None:
    """A device that reported before the service saw it active (a provisioned device's first
    reading) is watched from that report, not from when its activation arrives."""
    reporting = {"n": Watched(("c", "d"), DEFAULT_INTERVAL_S, at(100))}
    fleet = follow(reporting, [device("n", DeviceState.ACTIVE, 30.0)], DEFAULT_INTERVAL_S, at(200))
    assert fleet == {"n": Watched(("c", "d"), 30.0, at(100), 30.0)}
