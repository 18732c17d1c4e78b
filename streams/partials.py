"""Vital signs on a device's partition: :class:`Partials` folds each reading into the window
state of every indicator it feeds, for the device's place at every level the indicator rolls up
to (grid, street, district, city), and counts the device once per window as reporting (its
*marks* remember the windows of the last hour it was counted in, and spot a reading delivered
twice); an indicator of the devices online counts it in the windows after too, so long as it
is online (:data:`ONLINE_FOR`). The place side is :mod:`streams.vitals`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

from cityvitals.contracts import (
    SCHEMA_VERSION,
    CameraEvent,
    PlaceLevel,
    Reading,
    WindowPartial,
    trusted,
)
from cityvitals.instants import micros
from rules.indicators import (
    FORMULAS,
    Catalogue,
    Formula,
    IndicatorSpec,
    merge,
)

__all__ = ["KEEP", "LEVELS", "RECENT", "UNKNOWN", "Partials", "copy_marks", "place_key"]

KEEP = timedelta(hours=1)
"""How long a window stays open to data that arrives late, after it was last reported."""
_KEEP_S: Final = KEEP.total_seconds()
""":data:`KEEP` in seconds."""

RECENT = 32
"""Instants of a device's latest readings remembered to spot a reading delivered twice."""

ONLINE_FOR = 2.0
"""A device counts as reporting to a vital sign that counts devices (``online_rate``) in each
window from its reading's until this many of its profile's intervals later, :data:`KEEP` at
most (liveness calls a device late after two of its intervals, by default). A station that
reports hourly is online in every five-minute window, not in one of twelve. Counted ahead,
it stays counted there if it moves away or is suspended meanwhile."""

FIRST_WEIGHT_S = 300.0
"""The seconds a device's reading stands for when no earlier one of it is remembered and its
profile gives no interval (as liveness expects a device without one)."""


LEVELS = list(PlaceLevel)


@dataclass(frozen=True, slots=True)
class _Feed:
    """An indicator as the per-reading loop needs it, computed once per catalogue."""

    spec: IndicatorSpec
    spec_id: str
    """``spec.id``, held here: read at every reading, and reading a model's field costs more."""
    fold: Callable[
        [IndicatorSpec, dict[str, float], Mapping[str, float], Mapping[str, float], float], None
    ]
    metrics: frozenset[str]
    counts_devices: bool
    """Its value is of the devices reporting (``online_rate``), not of values: every reading
    of its device types feeds it, and counts where the device is online (:data:`ONLINE_FOR`)."""
    window_s: int
    depths: tuple[int, ...]
    """The place-path depths of its levels (city 1, district 2, ...)."""


@lru_cache(maxsize=8)
def _checks(catalogue: Catalogue) -> dict[str, tuple[tuple[IndicatorSpec, Formula], ...]]:
    """Per device type, its indicators whose formula checks a reading's values (overrides
    :meth:`~rules.indicators.base.Formula.refuses`): most types have none."""
    out: dict[str, tuple[tuple[IndicatorSpec, Formula], ...]] = {}
    for device_type, feeds in _feeds(catalogue).items():
        formulas = ((f.spec, FORMULAS[f.spec.kind]) for f in feeds)
        out[device_type] = tuple(
            (spec, formula)
            for spec, formula in formulas
            if type(formula).refuses is not Formula.refuses
        )
    return out


@lru_cache(maxsize=8)
def _feeds(catalogue: Catalogue) -> dict[str, tuple[_Feed, ...]]:
    """The feeds of each device type (a catalogue is immutable: computed once)."""
    return {
        device_type: tuple(
            _Feed(
                spec,
                spec.id,
                FORMULAS[spec.kind].fold,
                spec.metrics(),
                FORMULAS[spec.kind].counts_devices,
                spec.window_s,
                tuple(level.depth + 1 for level in spec.levels),
            )
            for spec in specs
        )
        for device_type, specs in catalogue.by_type.items()
    }


@dataclass
class Partials:
    """The window partials of one batch, merged per indicator, place and window.

    Readings fold into one state per indicator, device place and window; :meth:`partials`
    merges those up to every level of the place tree once per batch (states merge: sums,
    counts and maxima), so the per-reading work does not grow with the tree's depth.
    """

    catalogue: Catalogue
    _leaves: dict[tuple[str, tuple[str, ...], int], dict[str, float]] = field(default_factory=dict)
    """State per (indicator, device place path, window start in epoch seconds)."""
    _reporting: dict[tuple[str, tuple[str, ...], int], int] = field(default_factory=dict)
    """Devices newly counted per (indicator, place, window start)."""
    _seen: set[tuple[str, int]] = field(default_factory=set)
    """(device, instant in microseconds) folded in this batch."""
    _counted: set[tuple[str, str, int, tuple[str, ...]]] = field(default_factory=set)
    """(device, indicator, window, place) counted in this batch."""
    _judged: dict[tuple[str, str, int, tuple[str, ...]], dict[str, float]] = field(
        default_factory=dict
    )
    """(device, indicator, window, place path) whose count this batch decided: its leaf."""
    _keys: dict[int, str] = field(default_factory=dict)
    """Window starts as marks key them (seconds since 1970, in decimal)."""
    _places: dict[tuple[str, ...], str] = field(default_factory=dict)
    """Place paths as marks key them (:func:`place_key`)."""
    _own: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)
    """The counted windows this batch copied before it changed them, by identity (held, so
    no other object takes an identity while the batch runs): a device's marks are copied
    again for its next reading when one fails, so a flag per device would not do."""
    _recent: dict[str, tuple[list[list[Any]], dict[int, int] | None]] = field(default_factory=dict)
    """Per device, its marks' recent instants and an index of them by instant."""
    _feeding: dict[str, tuple[_Feed, ...]] = field(init=False)
    """The catalogue's feeds per device type (:func:`_feeds`), held: asked at every reading."""
    _checking: dict[str, tuple[tuple[IndicatorSpec, Formula], ...]] = field(init=False)
    """The catalogue's checks per device type (:func:`_checks`), held likewise."""

    def __post_init__(self) -> None:
        self._feeding = _feeds(self.catalogue)
        self._checking = _checks(self.catalogue)

    def refuses(self, reading: Reading | CameraEvent) -> str | None:
        """Why an indicator of the reading's device type cannot fold its values (see
        :meth:`~rules.indicators.base.Formula.refuses`); None when all can. Ask before
        :meth:`add`: a refused reading is folded and counted nowhere."""
        if not isinstance(reading, Reading):  # a camera event
            return None
        for spec, formula in self._checking.get(reading.device_type or "", ()):
            why = formula.refuses(spec, reading.values)
            if why is not None:
                return why
        return None

    def add(
        self,
        reading: Reading | CameraEvent,
        marks: dict[str, Any],
        offset: int,
        interval: float | None = None,
    ) -> bool:
        """Fold one enriched reading, from the input message at ``offset``, in. Each value
        weighs the seconds since the device's previous value of its metric (:func:`_gaps`),
        at most an indicator's window: see :mod:`rules.indicators.base`.

        ``marks`` (a device's, updated in place: :func:`copy_marks` makes them from the
        stored ones, and an indicator's windows are copied before they change) holds, per
        indicator, the windows of the last hour the device was counted in, by the place it
        was counted at and the window's start, each with the message that counted it (``c``: ``{indicator: {place: {start: offset}}}``, the place
        as :func:`place_key` gives it, the start in seconds since 1970), and the instants of
        its recent readings (in microseconds since 1970; marks written before hold them in ISO
        form) with their messages (``t``), and the latest instant of each metric (``l``).
        A device counts once per window at each place: a reading that comes out of
        order into a window already counted is not counted again, and a device that moves
        within a window counts at its new places but not again at those they share. A reading whose instant came before in
        *another* message is a duplicate (the broker delivered it twice) and is not folded
        again. The message that counted the device, processed again after a restart, counts
        it again: the place merges each message once, whether or not it got the first pass.
        Returns whether the marks changed.
        """
        # Reading first: a model's isinstance is quick for its own class, slow for another.
        if isinstance(reading, Reading):
            values: Mapping[str, float] = reading.values
        else:  # a camera reports by its events
            values = {reading.metric: reading.value}
        device_id = reading.device_id
        instant = micros(reading.ts)
        if (device_id, instant) in self._seen:
            return False  # twice in one message
        self._seen.add((device_id, instant))
        recent: list[list[Any]] = marks.setdefault("t", [])
        # Marks written before instants were kept in microseconds hold ISO strings: at the
        # front, or at the end when an older worker added to newer marks (a rolling update).
        if recent and (isinstance(recent[0][0], str) or isinstance(recent[-1][0], str)):
            recent[:] = _in_micros(recent)
        index = self._index(device_id, recent)
        seen = None
        if index is not None:
            seen = index.get(instant)
        else:
            # Compared as the object it is made into once: compiled, comparing the machine
            # integer with each instant made a new Python integer of it every time.
            probe: object = instant
            for entry in recent:
                if entry[0] == probe:
                    seen = entry[1]
                    break
        if seen is not None and seen != offset:
            return False
        if seen is None:
            recent.append([instant, offset])
            if index is not None:
                index[instant] = offset
            if len(recent) > RECENT:
                if index is not None:
                    for old, _ in recent[:-RECENT]:
                        index.pop(old, None)
                del recent[:-RECENT]
        path = reading.place_path
        feeds = self._feeding.get(reading.device_type or "", ())
        if not feeds:
            return True
        gaps, latest = _gaps(marks, recent, values, instant, interval)
        seconds = instant // 1_000_000
        # The device's newest reading, in seconds, as far as its metrics here tell: never
        # later than it (a horizon too early keeps marks longer, never counts twice).
        newest = latest // 1_000_000
        for feed in feeds:
            if not feed.counts_devices and feed.metrics.isdisjoint(values):
                continue
            start = seconds - seconds % feed.window_s
            judged = (device_id, feed.spec_id, start, path)
            state = self._judged.get(judged)
            if state is None:
                self._count(feed, reading, marks, offset, start, newest)
                state = self._judged[judged] = self._leaf(feed.spec_id, path, start)
            feed.fold(feed.spec, state, values, gaps, feed.window_s)
            if feed.counts_devices and interval:
                self._cover(feed, reading, marks, offset, start, instant, interval, newest)
        return True

    def _cover(
        self,
        feed: _Feed,
        reading: Reading | CameraEvent,
        marks: dict[str, Any],
        offset: int,
        start: int,
        instant: int,
        interval: float,
        newest: int,
    ) -> None:
        """Count the device in the windows after ``start`` that begin within
        :data:`ONLINE_FOR` of its intervals after the reading (:data:`KEEP` at most): it is
        online in them though it need not report (a window counted before is not again)."""
        until = instant / 1_000_000 + min(ONLINE_FOR * interval, _KEEP_S)
        window = feed.window_s
        path, device_id, spec_id = reading.place_path, reading.device_id, feed.spec_id
        begins = start + window
        if begins >= until:
            return  # online within its own window alone
        # The windows up to the last one another message counted here are counted (in order,
        # mostly): a device that reports every minute looks at none most of the time, not at
        # ten. Those this message counted are counted again (it is processed again: a restart).
        counted = marks.get("c", {}).get(spec_id, {}).get(self._places.get(path) or place_key(path))
        if counted:
            last = next(reversed(counted))
            if counted[last] != offset:
                begins = max(begins, int(last) + window)
        while begins < until:
            judged = (device_id, spec_id, begins, path)
            if judged not in self._judged and self._count(
                feed, reading, marks, offset, begins, newest
            ):
                self._judged[judged] = self._leaf(spec_id, path, begins)
            begins += window

    def _index(self, device_id: str, recent: list[list[Any]]) -> dict[int, int] | None:
        """The instants of ``recent`` by instant, once the device's second reading of the
        batch comes (most devices send one per batch: a scan is cheaper then)."""
        cached = self._recent.get(device_id)
        if cached is None or cached[0] is not recent:
            self._recent[device_id] = (recent, None)
            return None
        if cached[1] is None:
            index = {t: o for t, o in recent}
            self._recent[device_id] = (recent, index)
            return index
        return cached[1]

    def _count(
        self,
        feed: _Feed,
        reading: Reading | CameraEvent,
        marks: dict[str, Any],
        offset: int,
        start: int,
        newest: int,
    ) -> bool:
        """Count the device at each place of the window starting at ``start``, once (the first
        reading of a batch in a window decides for all of them); ``newest``: the instant of
        its newest reading, in seconds. Returns whether it counted anywhere new."""
        spec_id, path = feed.spec_id, reading.place_path
        counted: dict[str, dict[str, dict[str, int]]] = marks.setdefault("c", {})
        by_place = counted.get(spec_id) or {}
        key = self._keys.get(start)
        if key is None:
            key = self._keys[start] = str(start)
        here = self._places.get(path)
        if here is None:
            here = self._places[path] = place_key(path)
        windows = by_place.get(here)
        seen = None if windows is None else windows.get(key)
        fresh = False
        if seen is None or seen == offset:  # else another message counted it here: nothing new
            before = _counted_at(by_place, key, offset)
            for depth in feed.depths:
                if len(path) < depth:
                    continue
                place = path[:depth]
                once = (reading.device_id, spec_id, start, place)
                first = before is not None and place not in before and once not in self._counted
                at = (spec_id, place, start)
                reporting = self._reporting.get(at, 0)
                if first:
                    self._counted.add(once)
                    fresh = True
                    reporting += 1
                self._reporting[at] = reporting
            if fresh:
                if id(by_place) not in self._own:  # the stored marks' windows are not changed
                    by_place = counted[spec_id] = {p: dict(w) for p, w in by_place.items()}
                    self._own[id(by_place)] = by_place
                _remember(by_place, here, key, offset, start, newest - newest % feed.window_s)
        return fresh

    def _leaf(self, spec_id: str, path: tuple[str, ...], start: int) -> dict[str, float]:
        """The state the readings of a place's window fold into (made at its first)."""
        leaf = (spec_id, path, start)
        state = self._leaves.get(leaf)
        if state is None:
            state = self._leaves[leaf] = {}
        return state

    def partials(self) -> list[WindowPartial]:
        """The batch's partials: each leaf state merged into every level above it."""
        by_id = self.catalogue.by_id
        merged: dict[tuple[str, tuple[str, ...], int], dict[str, float]] = {}
        for (spec_id, path, start), state in self._leaves.items():
            for level in by_id[spec_id].levels:
                depth = level.depth + 1
                if len(path) < depth:
                    continue
                key = (spec_id, path[:depth], start)
                into = merged.get(key)
                if into is None:
                    merged[key] = dict(state)
                else:
                    merge(into, state)
        reporting = self._reporting
        # Made of validated parts (the catalogue's ids, the registry's places, the readings'
        # values): constructed, not validated again (that was 0.5 of the 1.25 µs a reading
        # building them took, on the bench's air-quality readings).
        return [
            trusted(
                WindowPartial,
                {
                    "schema_version": SCHEMA_VERSION,
                    "indicator": ind,
                    "place_path": place,
                    "window_start": datetime.fromtimestamp(start, UTC),
                    "state": state,
                    "reporting": reporting.get((ind, place, start), 0),
                },
            )
            for (ind, place, start), state in merged.items()
        ]


def _gaps(
    marks: dict[str, Any],
    recent: list[list[Any]],
    values: Mapping[str, float],
    instant: int,
    interval: float | None,
) -> tuple[dict[str, float], int]:
    """The seconds each metric of ``values`` stands for, and the latest instant of any of them
    (``instant`` or later, when one came out of order): since the device's previous value of
    it (``marks["l"]``: the latest instant of each metric, moved on here), else, for one not
    newer than that (out of order, or a message processed again), since the device's latest
    reading of any metric before it (its recent instants), else (the first value of it)
    ``interval``, its profile's, or :data:`FIRST_WEIGHT_S`. A station's status
    every minute does not shorten its PM2.5 every ten minutes, nor a pollutant sent a second
    after another.

    >>> marks = {"l": {"pm25": 0}}
    >>> _gaps(marks, [[0, 1]], {"pm25": 5.0, "co": 1.0}, 600_000_000, 60.0), marks["l"]
    (({'pm25': 600.0, 'co': 60.0}, 600000000), {'pm25': 600000000, 'co': 600000000})
    """
    latest = marks.get("l")
    if not isinstance(latest, dict):  # none yet (or an earlier form): begun afresh
        latest = marks["l"] = {}
    first = interval or FIRST_WEIGHT_S
    out: dict[str, float] = {}
    newest = instant
    for metric in values:
        last = latest.get(metric)
        if last is None:
            out[metric] = first
        elif last < instant:
            out[metric] = (instant - last) / 1e6
            latest[metric] = instant
            continue
        else:  # out of order: the device's latest reading before it
            if last > newest:
                newest = last
            before = -1
            for entry in recent:
                t = entry[0]
                if before < t < instant:
                    before = t
            out[metric] = (instant - before) / 1e6 if before >= 0 else first
            continue
        latest[metric] = instant
    return out, newest


def _in_micros(recent: list[list[Any]]) -> list[list[Any]]:
    """Recent instants kept in their ISO form (by marks written before they were kept in
    microseconds) in microseconds, the rest as they are.

    >>> _in_micros([["1970-01-01T00:00:01+00:00", 7], [2000000, 8]])
    [[1000000, 7], [2000000, 8]]
    """
    return [[micros(datetime.fromisoformat(t)) if isinstance(t, str) else t, o] for t, o in recent]


UNKNOWN: Final = "*"
"""The place key of windows counted at a place not recorded (marks of an early version): the
device counts as counted at every place in them."""


def place_key(path: tuple[str, ...]) -> str:
    """A place path as marks key it: its places joined by ``/`` (which no identifier holds).

    >>> place_key(("c", "c-d1", "c-d1-s2"))
    'c/c-d1/c-d1-s2'
    """
    return "/".join(path)


def _counted_at(
    by_place: dict[str, dict[str, int]], key: str, offset: int
) -> set[tuple[str, ...]] | None:
    """The places where other messages counted the device in the window ``key``, with every
    place above them; ``None``: all places."""
    places: set[tuple[str, ...]] = set()
    for place, windows in by_place.items():
        o = windows.get(key)
        if o is None or o == offset:
            continue  # not counted there, or by this very message processed again
        if place == UNKNOWN:
            return None
        path = tuple(place.split("/"))
        places.update(path[:depth] for depth in range(1, len(path) + 1))
    return places


def _remember(
    by_place: dict[str, dict[str, int]],
    here: str,
    key: str,
    offset: int,
    start: int,
    newest: int,
) -> None:
    """Note that the message at ``offset`` counted the device in the window ``key`` (which
    starts at ``start``) at the place ``here``, and forget the windows that start more than
    :data:`KEEP` before ``newest``, the window of the device's newest reading (this one too,
    if it is that old: it came late). The windows ahead a device is online in
    (:meth:`Partials._cover`) move no horizon: an hourly station's marks would forget the
    windows ten minutes behind its reading, where a reading late within the rules' grace
    would count it again.

    A place's windows are kept in the order they were counted, mostly that of time: the old
    ones are dropped from the front, up to the first that is recent. So a count looks at a
    window or two, not at the hour's."""
    windows = by_place.get(here)
    if windows is None:
        windows = by_place[here] = {}
    oldest = newest - _KEEP_S
    if start >= oldest:
        windows.pop(key, None)
        windows[key] = offset
    for place in list(by_place):
        kept = by_place[place]
        old = []
        for begins in kept:
            if int(begins) >= oldest:
                break
            old.append(begins)
        for begins in old:
            del kept[begins]
        if not kept:
            del by_place[place]


def copy_marks(stored: dict[str, Any] | None) -> dict[str, Any]:
    """A device's stored marks as a batch changes them: a copy of their outer levels (the
    batch copies an indicator's windows before it changes them, :meth:`Partials.add`), with
    counted windows of the earlier form (``w``: ``[start in ISO form, offset, place path]``
    per window, the path missing in the earliest) in the present one (``c``), so marks
    written by an earlier version count as before. (An earlier version reads no ``c``: it
    counts the device again in the windows a newer one counted; deploy/README.md, "Upgrading
    the stream workers".)

    >>> old = {"t": [[1, 7]], "w": {"noise": [["1970-01-01T00:05:00+00:00", 7, ["c", "d"]]]}}
    >>> copy_marks(old)
    {'t': [[1, 7]], 'c': {'noise': {'c/d': {'300': 7}}}}
    >>> copy_marks({"w": {"noise": ["1970-01-01T00:05:00+00:00", 7]}})["c"]
    {'noise': {'*': {'300': 7}}}
    >>> copy_marks({"t": [[2000000, 8]], "c": {}, "l": {"pm25": 2000000}})["l"]
    {'pm25': 2000000}
    """
    if not stored:
        return {"t": [], "c": {}}
    counted: dict[str, dict[str, dict[str, int]]] = dict(stored.get("c") or {})
    earlier = stored.get("w")
    if earlier:
        counted = {spec_id: {p: dict(w) for p, w in by.items()} for spec_id, by in counted.items()}
        for spec_id, mark in earlier.items():
            if not mark:
                continue
            entries = [[mark[0], mark[1], None]] if isinstance(mark[0], str) else mark
            by_place = counted.setdefault(spec_id, {})
            for start, offset, path in entries:
                place = UNKNOWN if path is None else place_key(tuple(path))
                seconds = str(int(datetime.fromisoformat(start).timestamp()))
                by_place.setdefault(place, {}).setdefault(seconds, offset)
    out: dict[str, Any] = {"t": list(stored.get("t", [])), "c": counted}
    latest = stored.get("l")
    if isinstance(latest, dict):  # changed in place by the batch: a copy
        out["l"] = dict(latest)
    return out
