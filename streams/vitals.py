"""Vital signs in the stream, in plain Python (no Faust): both stages of the computation.

1. On a device's partition, :class:`Partials` folds each reading into the window state of
   every indicator it feeds, for the device's place at every level the indicator rolls up to
   (grid, street, district, city), and counts the device once per window as reporting (its
   *marks* remember the last window it was counted in, and spot a reading delivered twice). :func:`membership` turns a registry
   change into +1/-1 expected devices for each place above the device.
2. On a place's partition, :func:`apply` merges those partials into the place's memory, once
   per input message (each carries its source and offset), and :func:`close` turns every
   window that ended more than ``grace`` ago into an :class:`~cityvitals.contracts.Indicator`
   with its coverage: windows with no data at all are reported too (no_data), and a window
   that receives data after it was reported is reported again (the sink upserts it).

Memory of a place (plain JSON): expected devices by type ``m``; open windows ``w`` keyed by
``indicator|window start`` with their state ``s``, reporting count ``r``, last offset applied
per source ``o``, a ``d`` flag when they changed since reported, when they were last
reported ``t`` and the expected devices by type ``x`` they keep when devices leave (a device
that moves away mid-window is still expected where it reported); and per indicator the start of the first window not yet reported, ``c``,
and of the earliest window reported, ``f``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from cityvitals.contracts import (
    CameraEvent,
    DeviceState,
    Indicator,
    IndicatorBatch,
    MembershipChange,
    PlaceLevel,
    Reading,
    WindowPartial,
)
from rules.indicators import (
    FORMULAS,
    Catalogue,
    IndicatorSpec,
    finish,
    merge,
    quality,
    samples,
    window_start,
)

__all__ = ["KEEP", "MAX_CATCH_UP", "Partials", "apply", "close", "membership"]

KEEP = timedelta(hours=1)
"""How long a window stays open to data that arrives late, after it was last reported."""
MAX_CATCH_UP = timedelta(days=1)
"""After a long stop, windows older than this are not reported."""
RECENT = 32
"""Instants of a device's latest readings remembered to spot a reading delivered twice."""

LEVELS = list(PlaceLevel)


@dataclass(frozen=True, slots=True)
class _Feed:
    """An indicator as the per-reading loop needs it, computed once per catalogue."""

    spec: IndicatorSpec
    fold: Callable[[IndicatorSpec, dict[str, float], Mapping[str, float]], None]
    metrics: frozenset[str]
    every_reading: bool
    window_s: int
    depths: tuple[int, ...]
    """The place-path depths of its levels (city 1, district 2, ...)."""

    def fed_by(self, values: Mapping[str, float]) -> bool:
        return self.every_reading or not self.metrics.isdisjoint(values)


@lru_cache(maxsize=8)
def _feeds(catalogue: Catalogue) -> dict[str, tuple[_Feed, ...]]:
    """The feeds of each device type (a catalogue is immutable: computed once)."""
    return {
        device_type: tuple(
            _Feed(
                spec,
                FORMULAS[spec.kind].fold,
                spec.metrics(),
                FORMULAS[spec.kind].counts_devices,
                spec.window_s,
                tuple(LEVELS.index(level) + 1 for level in spec.levels),
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
    _seen: set[tuple[str, str]] = field(default_factory=set)
    """(device, instant) folded in this batch."""
    _counted: set[tuple[str, str, int, tuple[str, ...]]] = field(default_factory=set)
    """(device, indicator, window, place) counted in this batch."""
    _judged: dict[tuple[str, str, int, tuple[str, ...]], dict[str, float]] = field(
        default_factory=dict
    )
    """(device, indicator, window, place path) whose count this batch decided: its leaf."""
    _iso: dict[int, str] = field(default_factory=dict)
    """Window starts in ISO form, as marks keep them."""
    _recent: dict[str, tuple[list[list[Any]], dict[str, int] | None]] = field(default_factory=dict)
    """Per device, its marks' recent instants and an index of them by instant."""

    def add(self, reading: Reading | CameraEvent, marks: dict[str, Any], offset: int) -> bool:
        """Fold one enriched reading, from the input message at ``offset``, in.

        ``marks`` (a device's, updated in place) holds, per indicator, the windows of the
        last hour the device was counted in, each with the message that counted it and the
        place it was at (``w``), and the instants of its recent readings with their messages
        (``t``). A device counts once per window at each place: a reading that comes out of
        order into a window already counted is not counted again, and a device that moves
        within a window counts at its new places but not again at those they share. A reading whose instant came before in
        *another* message is a duplicate (the broker delivered it twice) and is not folded
        again. The message that counted the device, processed again after a restart, counts
        it again: the place merges each message once, whether or not it got the first pass.
        Returns whether the marks changed.
        """
        if isinstance(reading, CameraEvent):  # a camera reports by its events
            values: Mapping[str, float] = {f"camera.{reading.event_type.value}": reading.value}
        else:
            values = reading.values
        device_id = reading.device_id
        instant = reading.ts.isoformat()
        if (device_id, instant) in self._seen:
            return False  # twice in one message
        self._seen.add((device_id, instant))
        recent: list[list[Any]] = marks.setdefault("t", [])
        index = self._index(device_id, recent)
        if index is None:
            seen = next((o for t, o in recent if t == instant), None)
        else:
            seen = index.get(instant)
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
        feeds = _feeds(self.catalogue).get(reading.device_type or "", ())
        if not feeds:
            return True
        seconds = int(reading.ts.timestamp())
        for feed in feeds:
            if not feed.fed_by(values):
                continue
            start = seconds - seconds % feed.window_s
            spec_id = feed.spec.id
            judged = (device_id, spec_id, start, path)
            state = self._judged.get(judged)
            if state is None:
                state = self._judged[judged] = self._count(feed, reading, marks, offset, start)
            feed.fold(feed.spec, state, values)
        return True

    def _index(self, device_id: str, recent: list[list[Any]]) -> dict[str, int] | None:
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
    ) -> dict[str, float]:
        """Count the device at each place of the window, once (the first reading of a batch
        in a window decides for all of them); returns the state its readings fold into."""
        spec_id, path = feed.spec.id, reading.place_path
        counted: dict[str, list[Any]] = marks.setdefault("w", {})
        start_iso = self._iso.get(start)
        if start_iso is None:
            start_iso = self._iso[start] = datetime.fromtimestamp(start, UTC).isoformat()
        mark = counted.get(spec_id)
        if _counted_here(mark, start_iso, offset, path):  # the usual case: nothing new
            for depth in feed.depths:
                if len(path) >= depth:
                    self._reporting.setdefault((spec_id, path[:depth], start), 0)
        else:
            entries = _entries(mark)
            before = _counted_at(entries, start_iso, offset)
            fresh = False
            for depth in feed.depths:
                if len(path) < depth:
                    continue
                place = path[:depth]
                once = (reading.device_id, spec_id, start, place)
                first = before is not None and place not in before and once not in self._counted
                key = (spec_id, place, start)
                reporting = self._reporting.get(key, 0)
                if first:
                    self._counted.add(once)
                    fresh = True
                    reporting += 1
                self._reporting[key] = reporting
            if fresh:
                counted[spec_id] = _remember(entries, start_iso, offset, path)
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
                depth = LEVELS.index(level) + 1
                if len(path) < depth:
                    continue
                key = (spec_id, path[:depth], start)
                into = merged.get(key)
                if into is None:
                    merged[key] = dict(state)
                else:
                    merge(into, state)
        return [
            WindowPartial(
                indicator=ind,
                place_path=place,
                window_start=datetime.fromtimestamp(start, UTC),
                state=merged.get((ind, place, start), {}),
                reporting=r,
            )
            for (ind, place, start), r in self._reporting.items()
        ]


def _counted_here(mark: list[Any] | None, start: str, offset: int, path: tuple[str, ...]) -> bool:
    """Whether another message counted the device in the window at this very place (so at
    every place above it too): then this reading counts nowhere."""
    if not mark or isinstance(mark[0], str):
        return False
    return any(
        s == start and o != offset and p is not None and len(p) == len(path) and tuple(p) == path
        for s, o, p in mark
    )


def _entries(mark: list[Any] | None) -> list[list[Any]]:
    """A device's counted windows of one indicator: ``[start, offset, place path]`` each.
    The marks of an earlier version held only ``[start, offset]`` (path unknown: ``None``)."""
    if not mark:
        return []
    if isinstance(mark[0], str):
        return [[mark[0], mark[1], None]]
    return [list(entry) for entry in mark]


def _counted_at(entries: list[list[Any]], start: str, offset: int) -> set[tuple[str, ...]] | None:
    """The places where other messages counted the device in the window; ``None``: all."""
    places: set[tuple[str, ...]] = set()
    for s, o, path in entries:
        if s != start or o == offset:
            continue  # another window, or this very message processed again
        if path is None:
            return None
        places.update(tuple(path[:depth]) for depth in range(1, len(path) + 1))
    return places


def _remember(
    entries: list[list[Any]], start: str, offset: int, path: tuple[str, ...]
) -> list[list[Any]]:
    """The entries with this count added, the windows more than an hour older dropped."""
    kept = [e for e in entries if not (e[0] == start and e[2] == list(path))]
    kept.append([start, offset, list(path)])
    newest = max(datetime.fromisoformat(e[0]) for e in kept)
    return [e for e in kept if datetime.fromisoformat(e[0]) >= newest - KEEP]


def membership(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> list[MembershipChange]:
    """Expected-device changes for every place above a device whose registry entry changed."""

    def member(entry: Mapping[str, Any] | None) -> tuple[tuple[str, ...], str] | None:
        if entry is None or entry["state"] != DeviceState.ACTIVE:
            return None
        return tuple(entry["place_path"]), str(entry["device_type"])

    before, after = member(old), member(new)
    if before == after:
        return []
    changes = []
    for was, delta in ((before, -1), (after, 1)):
        if was is not None:
            path, device_type = was
            for depth in range(1, len(path) + 1):
                changes.append(
                    MembershipChange(place_path=path[:depth], device_type=device_type, delta=delta)
                )
    return changes


# --- the place stage ---------------------------------------------------------------------------


def apply(
    memory: dict[str, Any] | None, place_path: tuple[str, ...], batch: IndicatorBatch
) -> dict[str, Any]:
    """Merge one input message's partials and membership changes for one place (a copy)."""
    mem: dict[str, Any] = {
        "p": list(place_path),
        "m": {},
        "w": {},
        "c": {},
        "mo": {},
        **(memory or {}),
    }
    mem["m"], mem["w"], mem["mo"] = dict(mem["m"]), dict(mem["w"]), dict(mem["mo"])
    seen = mem["mo"].get(batch.source, -1)
    members = [c for c in batch.members if tuple(c.place_path) == place_path]
    if members and batch.offset > seen:
        for change in members:
            count = mem["m"].get(change.device_type, 0)
            if change.delta < 0:
                _keep_expected(mem["w"], change.device_type, count)
            mem["m"][change.device_type] = count + change.delta
        mem["mo"][batch.source] = batch.offset
    for partial in batch.partials:
        if tuple(partial.place_path) != place_path:
            continue
        key = f"{partial.indicator}|{partial.window_start.isoformat()}"
        window = mem["w"].get(key) or {"s": {}, "r": 0, "o": {}}
        if batch.offset <= window["o"].get(batch.source, -1):
            continue  # this input message was applied before: a replay
        state = dict(window["s"])
        merge(state, partial.state)
        mem["w"][key] = {
            **window,
            "s": state,
            "r": window["r"] + partial.reporting,
            "o": {**window["o"], batch.source: batch.offset},
            "d": 1,
        }
    return mem


def _keep_expected(windows: dict[str, Any], device_type: str, count: int) -> None:
    """A device of ``device_type`` leaves the place: the windows open now keep expecting the
    ``count`` devices it had (the leaver reported here in them, or could have)."""
    for key, window in windows.items():
        kept = window.get("x", {})
        if kept.get(device_type, 0) < count:
            windows[key] = {**window, "x": {**kept, device_type: count}}


def _expected(memory: Mapping[str, Any], window: Mapping[str, Any], types: tuple[str, ...]) -> int:
    """Expected devices of a window: the place's now, or more if some left during it, and
    never fewer than reported in it (a device reports only where it is an active member;
    its readings may reach the place after the registry's word that it left)."""
    kept = window.get("x", {})
    now = sum(max(int(memory["m"].get(t, 0)), int(kept.get(t, 0))) for t in types)
    return max(now, int(window.get("r", 0)))


def close(
    memory: dict[str, Any], catalogue: Catalogue, now: datetime, grace: timedelta
) -> tuple[dict[str, Any], list[Indicator]]:
    """Report every window of the place that ended more than ``grace`` before ``now``."""
    path = tuple(memory["p"])
    level = LEVELS[len(path) - 1]
    mem = {**memory, "w": dict(memory["w"]), "c": dict(memory["c"]), "f": dict(memory.get("f", {}))}
    out: list[Indicator] = []
    due_before = now - grace
    for spec in catalogue:
        if level not in spec.levels:
            continue
        expected = sum(int(memory["m"].get(t, 0)) for t in spec.device_types)
        width = spec.window
        prefix = f"{spec.id}|"
        mine = {k: v for k, v in mem["w"].items() if k.startswith(prefix)}
        starts = sorted(datetime.fromisoformat(k[len(prefix) :]) for k in mine)
        closed = mem["c"].get(spec.id)
        if closed is None:
            if not starts and expected <= 0:
                continue
            first = starts[0] if starts else window_start(due_before, spec.window_s) - width
            closed = max(first, window_start(now - MAX_CATCH_UP, spec.window_s)).isoformat()
        cursor = max(
            datetime.fromisoformat(closed), window_start(now - MAX_CATCH_UP, spec.window_s)
        )
        pending = {s for s in starts if s < cursor and mine[f"{prefix}{s.isoformat()}"].get("d")}
        earliest = mem["f"].get(spec.id)
        if earliest is not None and pending and min(pending) < datetime.fromisoformat(earliest):
            # Data older than anything reported (a backlog): the place's history now starts
            # there, so the windows between, empty or not, are reported too.
            back = min(pending)
            while back < datetime.fromisoformat(earliest):
                pending.add(back)
                back += width
        while cursor + width <= due_before:
            if expected <= 0 and not mine.get(f"{prefix}{cursor.isoformat()}", {}).get("r"):
                break  # its devices are not known here yet: wait rather than skip the window
            pending.add(cursor)
            cursor += width
        for start in sorted(pending):
            key = f"{prefix}{start.isoformat()}"
            window = mine.get(key, {"s": {}, "r": 0})
            if not window["r"] and expected <= 0:
                continue
            of = _expected(memory, window, spec.device_types)
            value, band, detail = finish(spec, window["s"], window["r"], of)
            coverage, flag = quality(window["r"], of)
            out.append(
                Indicator(
                    indicator=spec.id,
                    place_id=path[-1],
                    place_level=level,
                    place_path=path,
                    window_start=start,
                    window_s=spec.window_s,
                    value=value,
                    band=band,
                    coverage=round(coverage, 4),
                    reporting=window["r"],
                    expected=max(of, 0),
                    quality=flag,
                    detail=detail,
                    computed_at=now,
                    samples=samples(window["s"]),
                )
            )
            if key in mem["w"]:
                mem["w"][key] = {**mem["w"][key], "d": 0, "t": now.isoformat()}
        mem["c"][spec.id] = cursor.isoformat()
        if out and any(i.indicator == spec.id for i in out):
            reported = min(i.window_start for i in out if i.indicator == spec.id)
            if earliest is None or reported < datetime.fromisoformat(earliest):
                mem["f"][spec.id] = reported.isoformat()
        for key, window in list(mem["w"].items()):  # forget windows reported long ago
            reported = window.get("t")
            old = reported is not None and datetime.fromisoformat(reported) + KEEP < now
            if key.startswith(prefix) and not window.get("d") and old:
                del mem["w"][key]
    return mem, out
