"""Device liveness, judged against each device's own reporting cadence, and place outages.

A :class:`DeviceClock` learns how often its device reports: the median of its last
:data:`WINDOW` gaps. :func:`judge` calls the device ``late`` after ``late_factor`` such
intervals without a report and ``offline`` after ``offline_factor``, and ``online`` again as
soon as it reports. Until :data:`MIN_GAPS` gaps were seen, a fallback interval stands in: the
device's profile's ``expected_interval_s``, else :data:`DEFAULT_INTERVAL_S`. A device with a
profile is never judged by a shorter interval than its profile's: a burst at commissioning (a
test every 3 s, a queue flushed after a reconnect) would otherwise teach it a cadence its
normal reports break, and it would go offline after each of them until the burst's gaps age
out of the window.

When most devices under one place go offline together (a gateway or a power cut), that is one
:class:`Outage` of the highest such place (:mod:`device_registry.outages`), and its devices
announce no offline of their own. :func:`follow` keeps the fleet as the registry's ``devices``
topic says; :func:`check` runs one round over it. Pure: state in, state out, no I/O.

>>> from datetime import UTC
>>> t0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
>>> clock = DeviceClock(since=t0)
>>> for i in range(4):
...     clock = observe(clock, t0 + timedelta(seconds=10 * i))
>>> cadence(clock, fallback_interval_s=300.0)
10.0
>>> [judge(clock, t0 + timedelta(seconds=s), 300.0, 2.0, 4.0).value for s in (35, 55, 75)]
['online', 'late', 'offline']
"""

from __future__ import annotations

import statistics
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from cityvitals.contracts import (
    Device,
    DeviceLiveness,
    DeviceState,
    Liveness,
    OutageStatus,
    PlaceOutage,
)
from device_registry.outages import (
    Outage,
    PlacePath,
    PlaceTally,
    highest_places,
    outage_id,
    qualifying_places,
    tally,
    track_outages,
    under,
)

__all__ = [
    "DEFAULT_INTERVAL_S",
    "MIN_GAPS",
    "MIN_GAP_S",
    "WINDOW",
    "CheckResult",
    "DeviceClock",
    "IntakeWatch",
    "LivenessPolicy",
    "Outage",
    "PlacePath",
    "PlaceTally",
    "StallWatch",
    "Watched",
    "cadence",
    "check",
    "follow",
    "highest_places",
    "judge",
    "observe",
    "outage_id",
    "qualifying_places",
    "report",
    "restore",
    "tally",
    "track_outages",
    "under",
    "watch_from",
]

WINDOW = 8
"""How many recent gaps between reports the cadence estimate keeps."""
MIN_GAPS = 3
"""Gaps needed before the observed cadence replaces the fallback interval."""
MIN_GAP_S = 0.5
"""Reports closer together than this count as one: a reading and an event sent together, or a
burst at boot, teach no cadence. A device reporting faster is judged by its profile."""
DEFAULT_INTERVAL_S = 300.0
"""The expected interval of a device whose profile names none."""


@dataclass(frozen=True, slots=True)
class DeviceClock:
    """What the liveness judge remembers about one device."""

    since: datetime
    """When watching began: the device's registration, or the liveness service's start (or
    the moment the device became active) if later. Silence before it is not the device's:
    the service, or the whole stack, was not watching."""
    last_seen: datetime | None = None
    gaps: tuple[float, ...] = ()
    """The last :data:`WINDOW` gaps between reports, in seconds, oldest first."""
    status: Liveness = Liveness.ONLINE
    """The judged status: the truth, stored in ``device_liveness``."""
    announced: Liveness = Liveness.ONLINE
    """The status last published; differs from ``status`` while an offline is withheld."""
    held_until: datetime | None = None
    """After its place's outage ended, an offline device is given until then to come back."""

    @property
    def heard(self) -> datetime:
        """The last report, or the start of watching for a device never heard."""
        return self.last_seen if self.last_seen is not None else self.since


def observe(clock: DeviceClock, seen_at: datetime, learn: bool = True) -> DeviceClock:
    """A report at ``seen_at``: last-seen moves on and the gap since the previous one is learned
    (unless not ``learn``: a camera's event comes when it sees something, not at a cadence).

    A report not newer than the last one changes nothing (a replay or a straggler); one less
    than :data:`MIN_GAP_S` after it counts as the same report.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 11, 22, tzinfo=UTC)
    >>> c = observe(observe(DeviceClock(since=t0), t0), t0 + timedelta(seconds=30))
    >>> c.gaps, observe(c, t0) is c
    ((30.0,), True)
    """
    last = clock.last_seen
    gaps = clock.gaps
    if last is not None:
        gap = (seen_at - last).total_seconds()
        if gap <= 0:
            return clock
        if gap >= MIN_GAP_S and learn:
            gaps = (*gaps, gap)[-WINDOW:]
    # Made directly: ``replace`` took half of the liveness service's work a report.
    return DeviceClock(clock.since, seen_at, gaps, clock.status, clock.announced, clock.held_until)


def cadence(clock: DeviceClock, fallback_interval_s: float, floor_s: float = 0.0) -> float:
    """The interval the device is judged by: observed once :data:`MIN_GAPS` gaps are known,
    and never under ``floor_s`` (its profile's interval, if it has one).

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 11, 22, tzinfo=UTC)
    >>> cadence(DeviceClock(since=t0, gaps=(5.0, 6.0)), 60.0)
    60.0
    >>> burst = DeviceClock(since=t0, gaps=(3.0, 3.0, 3.0, 31.0))
    >>> cadence(burst, 60.0), cadence(burst, 60.0, floor_s=60.0)
    (3.0, 60.0)
    """
    if len(clock.gaps) < MIN_GAPS:
        return fallback_interval_s
    return max(float(statistics.median(clock.gaps)), floor_s)


def judge(
    clock: DeviceClock,
    now: datetime,
    fallback_interval_s: float,
    late_factor: float,
    offline_factor: float,
    floor_s: float = 0.0,
) -> Liveness:
    """The device's status at ``now``, from how long it has been silent against its cadence.

    Silence counts from the last report or from when watching began, whichever is later, so
    a restart of the service (or of the whole stack) blames no device for the time nobody
    watched. A device already late or offline when watching began stays so until it reports.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    >>> restarted = DeviceClock(since=t0 + timedelta(hours=1), last_seen=t0)
    >>> judge(restarted, t0 + timedelta(hours=1, seconds=30), 60.0, 2.0, 4.0).value
    'online'
    """
    interval = cadence(clock, fallback_interval_s, floor_s)
    silence = (now - max(clock.heard, clock.since)).total_seconds()
    if silence >= offline_factor * interval:
        status = Liveness.OFFLINE
    elif silence >= late_factor * interval:
        status = Liveness.LATE
    else:
        status = Liveness.ONLINE
    unheard = clock.last_seen is None or clock.last_seen < clock.since
    if unheard and _WORSE[clock.status] > _WORSE[status]:
        return clock.status  # judged silent before watching began: only a report brings it back
    return status


_WORSE = {Liveness.ONLINE: 0, Liveness.LATE: 1, Liveness.OFFLINE: 2}


def restore(
    status: Liveness,
    last_seen: datetime | None,
    interval_s: float,
    since: datetime,
    withheld: bool,
) -> DeviceClock:
    """A clock rebuilt from a stored ``device_liveness`` row.

    The stored interval counts as :data:`MIN_GAPS` observed gaps; new reports overtake it
    within a few gaps. ``withheld`` says the stored offline sits under an open outage, so it
    was never announced (the device counts as announced late).
    """
    gaps = (interval_s,) * MIN_GAPS if last_seen is not None else ()
    announced = Liveness.LATE if withheld and status is Liveness.OFFLINE else status
    return DeviceClock(since, last_seen, gaps, status, announced)


# --- one round over the fleet -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    late_factor: float = 2.0
    offline_factor: float = 4.0
    outage_min_devices: int = 3
    outage_silent_fraction: float = 0.8
    default_interval_s: float = DEFAULT_INTERVAL_S


@dataclass(frozen=True, slots=True)
class Watched:
    """An active device as the judge needs it."""

    place_path: PlacePath
    fallback_interval_s: float
    """Its profile's expected interval, else the policy's default."""
    since: datetime
    """When watching it began (see :func:`watch_from`): the baseline of its silence."""
    floor_s: float = 0.0
    """Its profile's expected interval (0 without one): the shortest it is judged by."""

    def interval(self, clock: DeviceClock) -> float:
        """The interval it is judged by (:func:`cadence`)."""
        return cadence(clock, self.fallback_interval_s, self.floor_s)


def watch_from(
    fleet: Mapping[str, Watched], watched_before: Mapping[str, Watched], now: datetime
) -> dict[str, Watched]:
    """The fleet as read from the registry, each device's ``since`` moved to when this service
    began watching it: kept for a device it already watched, ``now`` for one new to it (the
    service just started, or the device just became active). Its registration if later.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 11, 22, tzinfo=UTC)
    >>> old = {"a": Watched(("c",), 60.0, t0)}
    >>> new = watch_from({"a": old["a"], "b": Watched(("c",), 60.0, t0)}, old, t0 + timedelta(days=1))
    >>> new["a"].since == t0, new["b"].since == t0 + timedelta(days=1)
    (True, True)
    """
    out = {}
    for device_id, watched in fleet.items():
        before = watched_before.get(device_id)
        start = before.since if before is not None else max(watched.since, now)
        out[device_id] = replace(watched, since=start)
    return out


def follow(
    fleet: Mapping[str, Watched],
    changes: Iterable[Device],
    default_interval_s: float,
    now: datetime,
) -> dict[str, Watched]:
    """The fleet after device changes from the registry's ``devices`` topic, in order: an
    active device is watched (at its place, by its profile's interval, else the default; since
    when it was first watched, see :func:`watch_from`), any other is not.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 11, 22, tzinfo=UTC)
    >>> a = Device(device_id="a", device_type="t", place_path=("c",), updated_at=t0)
    >>> fleet = follow({}, [a], 60.0, t0)
    >>> fleet["a"].fallback_interval_s, follow(fleet, [a.model_copy(update={"state": "retired"})], 60.0, t0)
    (60.0, {})
    """
    out = dict(fleet)
    for device in changes:
        if device.state is not DeviceState.ACTIVE:
            out.pop(device.device_id, None)
            continue
        interval = device.expected_interval_s or default_interval_s
        floor = device.expected_interval_s or 0.0
        watched = Watched(device.place_path, interval, device.updated_at, floor)
        out.update(watch_from({device.device_id: watched}, out, now))
    return out


def report(device_id: str, clock: DeviceClock, watched: Watched, now: datetime) -> DeviceLiveness:
    """The device's liveness as stored and published: its judged status at ``now``."""
    return DeviceLiveness(
        device_id=device_id,
        status=clock.status,
        last_seen=clock.last_seen,
        expected_interval_s=watched.interval(clock),
        place_path=watched.place_path,
        ts=now,
    )


@dataclass(frozen=True)
class CheckResult:
    clocks: dict[str, DeviceClock]
    """A clock for every watched device, and no other."""
    changed: tuple[str, ...]
    """Devices whose judged status changed: store these."""
    announced: tuple[DeviceLiveness, ...]
    """Per-device changes to publish (an offline under an outage is withheld)."""
    started: tuple[PlaceOutage, ...]
    ended: tuple[PlaceOutage, ...]
    outages: dict[PlacePath, Outage]
    """The open outages after the round: exactly the highest places out."""


def check(
    clocks: Mapping[str, DeviceClock],
    fleet: Mapping[str, Watched],
    outages: Mapping[PlacePath, Outage],
    now: datetime,
    policy: LivenessPolicy,
    held: Container[str] = frozenset(),
) -> CheckResult:
    """Judge every watched device at ``now``; open and close place outages; say what to announce.

    ``held``: devices not judged this round, their status kept as it was (their readings are
    stuck in a stalled partition upstream: :class:`StallWatch`).

    A device's offline is withheld while it sits under an open outage, or under a place about
    to be out (most of its devices late or offline), and for ``offline_factor`` of its
    intervals after its place's outage ended: a device coming back from a power cut is given
    time to return. See :func:`track_outages` for when an outage starts and ends.
    """
    judged: dict[str, DeviceClock] = {}
    changed: list[str] = []
    for device_id, watched in fleet.items():
        clock = clocks.get(device_id) or DeviceClock(since=watched.since)
        if device_id in held:
            judged[device_id] = clock
            continue
        status = judge(
            clock,
            now,
            watched.fallback_interval_s,
            policy.late_factor,
            policy.offline_factor,
            watched.floor_s,
        )
        if status is not clock.status:
            changed.append(device_id)
            clock = replace(clock, status=status)
        judged[device_id] = clock

    def members(silent: frozenset[Liveness]) -> dict[PlacePath, PlaceTally]:
        return tally((fleet[d].place_path, c.status in silent, c.heard) for d, c in judged.items())

    offline = members(frozenset({Liveness.OFFLINE}))
    out = qualifying_places(offline, policy.outage_min_devices, policy.outage_silent_fraction)
    quiet = members(frozenset({Liveness.LATE, Liveness.OFFLINE}))
    forming = qualifying_places(quiet, policy.outage_min_devices, policy.outage_silent_fraction)

    staying, ended, new = track_outages(outages, out, forming)
    opened = {place: _opened(place, t) for place, t in new.items()}
    open_now = {**staying, **opened}
    judged = _release(judged, fleet, ended, open_now, now, policy)
    judged, announced = _announce(judged, fleet, {**forming, **open_now}, now)
    down = (
        [(d, fleet[d].place_path) for d, c in judged.items() if c.status is Liveness.OFFLINE]
        if opened or ended
        else []
    )
    return CheckResult(
        clocks=judged,
        changed=tuple(changed),
        announced=tuple(announced),
        started=tuple(o.event(OutageStatus.STARTED, now, out[p], down) for p, o in opened.items()),
        ended=tuple(
            o.event(OutageStatus.ENDED, now, offline.get(o.place_path), down) for o in ended
        ),
        outages=open_now,
    )


def _opened(place: PlacePath, t: PlaceTally) -> Outage:
    assert t.quiet_since is not None  # a place out has silent devices
    return Outage(outage_id(place[-1], t.quiet_since), place, t.quiet_since, t.total, t.silent)


def _release(
    clocks: dict[str, DeviceClock],
    fleet: Mapping[str, Watched],
    ended: list[Outage],
    open_now: Mapping[PlacePath, Outage],
    now: datetime,
    policy: LivenessPolicy,
) -> dict[str, DeviceClock]:
    """Give each offline device of an ended outage a grace to come back before it is announced."""
    if not ended:
        return clocks
    places = {o.place_path: o for o in ended}
    released = dict(clocks)
    for device_id, clock in clocks.items():
        watched = fleet[device_id]
        path = watched.place_path
        if clock.status is Liveness.OFFLINE and under(path, places) and not under(path, open_now):
            grace = policy.offline_factor * watched.interval(clock)
            released[device_id] = replace(clock, held_until=now + timedelta(seconds=grace))
    return released


def _announce(
    clocks: dict[str, DeviceClock],
    fleet: Mapping[str, Watched],
    covered: Mapping[PlacePath, object],
    now: datetime,
) -> tuple[dict[str, DeviceClock], list[DeviceLiveness]]:
    out: dict[str, DeviceClock] = {}
    announced: list[DeviceLiveness] = []
    for device_id, clock in clocks.items():
        watched = fleet[device_id]
        withheld = clock.status is Liveness.OFFLINE and (
            under(watched.place_path, covered)
            or (clock.held_until is not None and now < clock.held_until)
        )
        if not withheld and clock.status is not clock.announced:
            clock = replace(clock, announced=clock.status, held_until=None)
            announced.append(report(device_id, clock, watched, now))
        out[device_id] = clock
    return out, announced


@dataclass
class StallWatch:
    """Which partitions of ``readings.raw`` the stream stage has stalled on: its group's
    committed offset there has not moved for ``after_s`` seconds while messages wait past it,
    or, after such a stall, has not yet reached where the partition ended when it moved
    again (the backlog the stall left). The readings they hold are not reaching ``readings``,
    whatever the devices do: judged, their devices would go offline, one outage for each
    place, for the whole city when every partition stalls. One partition is enough: one hung
    worker of several; the devices of the others are judged as ever.

    >>> watch = StallWatch(after_s=30.0)
    >>> looks = [(0, 100, 105), (20, 100, 140), (31, 100, 180), (32, 150, 190), (40, 185, 200),
    ...          (45, 195, 200), (70, 200, 200), (90, 200, 209)]
    >>> [watch.look(at, {0: (committed, end)}) for at, committed, end in looks]
    [[], [], [0], [0], [], [], [], []]
    >>> two = StallWatch(after_s=30.0)  # one worker of two hangs: its partition is held
    >>> [two.look(at, {0: (10 * at, 10 * at + 5), 1: (7, 9 + at)}) for at in (0, 20, 40)]
    [[], [], [1]]
    """

    after_s: float
    moved: dict[int, tuple[int, float]] = field(default_factory=dict)
    """Per partition, its committed offset and when it last moved (or nothing waited), on a
    monotonic clock."""
    backlog: dict[int, int] = field(default_factory=dict)
    """Per partition that stalled, the end the stream must reach before it counts as caught
    up: where the partition ended at the last look of the stall."""

    def look(self, at: float, partitions: Mapping[int, tuple[int, int]]) -> list[int]:
        """Note each partition's committed offset and end at ``at``; the partitions stalled,
        or still working off a stall's backlog."""
        held = []
        for partition, (committed, end) in sorted(partitions.items()):
            last = self.moved.get(partition)
            if last is None or committed != last[0] or committed >= end:
                self.moved[partition] = (committed, at)
            elif at - last[1] >= self.after_s:
                self.backlog[partition] = end
                held.append(partition)
                continue
            target = self.backlog.get(partition)
            if target is not None:
                if committed < target:
                    held.append(partition)
                else:
                    del self.backlog[partition]
        return held


@dataclass
class IntakeWatch:
    """Which partitions of ``readings`` the gateway's heartbeats have stopped reaching
    (:attr:`~cityvitals.contracts.ReadingBatch.heartbeat`): none for ``after_s`` seconds,
    the gateway hung or cut off from the broker (or the stream stage stalled on it). What
    the devices send waits in the broker meanwhile: judged, every device would go offline,
    one outage of the city for a hung gateway. Once heartbeats come again a partition stays
    held ``after_s`` more, while what the broker kept reaches ``readings``. A partition that
    never had one is not held (readings put on ``readings.raw`` by another producer, or a
    gateway of an earlier version).

    >>> watch = IntakeWatch(after_s=10.0)
    >>> watch.held(0.0)  # no heartbeat yet: nothing known, nothing held
    []
    >>> for at in (0.0, 2.0, 4.0):
    ...     watch.beat(0, at); watch.beat(1, at)
    >>> watch.held(12.0), watch.held(15.0)  # the last came at 4: held after 14
    ([], [0, 1])
    >>> for at in (30.0, 32.0, 34.0, 36.0, 38.0, 40.0):  # back at 30: held 10 s more
    ...     watch.beat(0, at); watch.beat(1, at)
    ...     if at == 36.0: print(watch.held(at))
    [0, 1]
    >>> watch.held(40.5)
    []
    """

    after_s: float
    last: dict[int, float] = field(default_factory=dict)
    """Per partition, when its last heartbeat was read, on a monotonic clock."""
    back: dict[int, float] = field(default_factory=dict)
    """Per partition whose heartbeats came again after a stall, when they did."""

    def beat(self, partition: int, at: float) -> None:
        """A heartbeat read on ``partition`` at ``at``."""
        last = self.last.get(partition)
        if last is not None and at - last > self.after_s:
            self.back[partition] = at
        self.last[partition] = at

    def held(self, at: float) -> list[int]:
        """The partitions without a heartbeat for ``after_s``, or back from such a stall
        less than ``after_s`` ago."""
        out = []
        for partition, last in sorted(self.last.items()):
            back = self.back.get(partition)
            if at - last > self.after_s or (back is not None and at - back < self.after_s):
                out.append(partition)
            elif back is not None:
                del self.back[partition]
        return out
