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
per source ``o``, a ``d`` flag when they changed since reported and when they were last
reported ``t``; and per indicator the start of the first window not yet reported, ``c``,
and of the earliest window reported, ``f``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
from rules.indicators import Catalogue, finish, fold, merge, quality, window_start

__all__ = ["KEEP", "MAX_CATCH_UP", "Partials", "apply", "close", "membership"]

KEEP = timedelta(hours=1)
"""How long a window stays open to data that arrives late, after it was last reported."""
MAX_CATCH_UP = timedelta(days=1)
"""After a long stop, windows older than this are not reported."""
RECENT = 32
"""Instants of a device's latest readings remembered to spot a reading delivered twice."""

LEVELS = list(PlaceLevel)


@dataclass
class Partials:
    """The window partials of one batch, merged per indicator, place and window."""

    catalogue: Catalogue
    out: dict[tuple[str, tuple[str, ...], datetime], tuple[dict[str, float], int]] = field(
        default_factory=dict
    )
    _seen: set[tuple[str, str]] = field(default_factory=set)
    """(device, instant) folded in this batch."""
    _counted: set[tuple[str, str, str]] = field(default_factory=set)
    """(device, indicator, window) counted in this batch."""

    def add(self, reading: Reading | CameraEvent, marks: dict[str, Any], offset: int) -> bool:
        """Fold one enriched reading, from the input message at ``offset``, in.

        ``marks`` (a device's, updated in place) holds, per indicator, the window the device
        was last counted in and the message that counted it (``w``), and the instants of its
        recent readings with their messages (``t``). A reading whose instant came before in
        *another* message is a duplicate (the broker delivered it twice) and is not folded
        again. The message that counted the device, processed again after a restart, counts
        it again: the place merges each message once, whether or not it got the first pass.
        Returns whether the marks changed.
        """
        if isinstance(reading, CameraEvent):  # a camera reports by its events
            values = {f"camera.{reading.event_type.value}": reading.value}
        else:
            values = reading.values
        instant = reading.ts.isoformat()
        if (reading.device_id, instant) in self._seen:
            return False  # twice in one message
        self._seen.add((reading.device_id, instant))
        recent: list[list[Any]] = marks.setdefault("t", [])
        seen = next((o for t, o in recent if t == instant), None)
        if seen is not None and seen != offset:
            return False
        if seen is None:
            recent.append([instant, offset])
            del recent[:-RECENT]
        counted: dict[str, list[Any]] = marks.setdefault("w", {})
        for spec in self.catalogue.by_type.get(reading.device_type or "", ()):
            if spec.kind != "online_rate" and not (spec.metrics() & values.keys()):
                continue
            start = window_start(reading.ts, spec.window_s).isoformat()
            mark = counted.get(spec.id)
            once = (reading.device_id, spec.id, start)
            first = once not in self._counted and (
                mark is None or mark[0] != start or mark[1] == offset
            )
            if first:
                counted[spec.id] = [start, offset]
                self._counted.add(once)
            for level in spec.levels:
                depth = LEVELS.index(level) + 1
                if len(reading.place_path) < depth:
                    continue
                key = (spec.id, reading.place_path[:depth], datetime.fromisoformat(start))
                state, reporting = self.out.get(key, ({}, 0))
                fold(spec, state, values)
                self.out[key] = (state, reporting + (1 if first else 0))
        return True

    def partials(self) -> list[WindowPartial]:
        return [
            WindowPartial(
                indicator=ind, place_path=path, window_start=start, state=state, reporting=r
            )
            for (ind, path, start), (state, r) in self.out.items()
        ]


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
            mem["m"][change.device_type] = mem["m"].get(change.device_type, 0) + change.delta
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
            "s": state,
            "r": window["r"] + partial.reporting,
            "o": {**window["o"], batch.source: batch.offset},
            "d": 1,
        }
    return mem


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
            value, band, detail = finish(spec, window["s"], window["r"], expected)
            coverage, flag = quality(window["r"], expected)
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
                    expected=max(expected, 0),
                    quality=flag,
                    detail=detail,
                    computed_at=now,
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
