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
and of the earliest window reported, ``f``; the devices that joined lately, by type, ``j``
(``[[minute, count], ...]``: a window does not expect those that joined after it ended).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from cityvitals.contracts import (
    DeviceState,
    Indicator,
    IndicatorBatch,
    MembershipChange,
    PlaceLevel,
)
from rules.indicators import (
    FORMULAS,
    Catalogue,
    finish,
    merge,
    quality,
    samples,
    window_start,
)
from streams.partials import KEEP, LEVELS, Partials

_WIDE = frozenset({PlaceLevel.CITY, PlaceLevel.DISTRICT})

__all__ = ["KEEP", "MAX_CATCH_UP", "Partials", "apply", "close", "membership"]

MAX_CATCH_UP = timedelta(days=1)
"""After a long stop, windows older than this are not reported."""


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
    # A device the registry held before (provisioned, suspended, or elsewhere) joins when the
    # change was made; one registered now may bring readings of before: it counts as ever.
    stamp = (new or {}).get("updated_at") if old is not None else None
    joined = datetime.fromisoformat(stamp) if stamp else None
    changes = []
    for was, delta in ((before, -1), (after, 1)):
        if was is not None:
            path, device_type = was
            at = joined if delta > 0 else None
            for depth in range(1, len(path) + 1):
                changes.append(
                    MembershipChange(
                        place_path=path[:depth], device_type=device_type, delta=delta, at=at
                    )
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
            elif change.at is not None:
                _note_join(mem, change.device_type, change.delta, change.at)
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


def _note_join(mem: dict[str, Any], device_type: str, count: int, at: datetime) -> None:
    """Remember that ``count`` devices of ``device_type`` joined the place at ``at``, to the
    minute (as ``[seconds since 1970, count]``: a fleet activated over an hour is sixty)."""
    minute = int(at.timestamp()) // 60 * 60
    joins = {t: [list(e) for e in entries] for t, entries in mem.get("j", {}).items()}
    entries = joins.setdefault(device_type, [])
    if entries and entries[-1][0] == minute:
        entries[-1][1] += count
    else:
        entries.append([minute, count])
    mem["j"] = joins


def _joined_after(memory: Mapping[str, Any], device_type: str, end: datetime) -> int:
    """How many devices of ``device_type`` joined the place at ``end`` or later."""
    after = end.timestamp()
    return sum(int(n) for at, n in memory.get("j", {}).get(device_type, ()) if at >= after)


def _forget_joins(mem: dict[str, Any], now: datetime) -> None:
    """Drop the joins before any window still to be reported ended (:data:`MAX_CATCH_UP`
    and :data:`KEEP` back)."""
    if "j" not in mem:
        return
    horizon = (now - MAX_CATCH_UP - KEEP).timestamp()
    joins = {t: kept for t, e in mem["j"].items() if (kept := [x for x in e if x[0] >= horizon])}
    if joins:
        mem["j"] = joins
    else:
        del mem["j"]


def _expected(
    memory: Mapping[str, Any], window: Mapping[str, Any], types: tuple[str, ...], end: datetime
) -> int:
    """Expected devices of a window ending at ``end``: the place's now less those that joined
    after it ended, or more if some left during it, and never fewer than reported in it (a
    device reports only where it is an active member; its readings may reach the place after
    the registry's word that it left)."""
    kept = window.get("x", {})
    now = sum(
        max(int(memory["m"].get(t, 0)) - _joined_after(memory, t, end), int(kept.get(t, 0)))
        for t in types
    )
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
        # a worst-of value with a device silent is a lower bound: said at a street and below,
        # where one sensor matters (a city of hundreds always misses one)
        worst_of = FORMULAS[spec.kind].rollup == "max" and level not in _WIDE
        width = spec.window
        prefix = f"{spec.id}|"
        mine = {k: v for k, v in mem["w"].items() if k.startswith(prefix)}
        starts = sorted(datetime.fromisoformat(k[len(prefix) :]) for k in mine)
        closed = mem["c"].get(spec.id)
        if closed is None:
            if not starts and expected <= 0:
                continue
            # With no data yet, the first window is the one open now, never one that ended,
            # due or still in its grace: a memory just begun (a new place or device, a new
            # indicator, or a stream that lost its state with a broker that keeps nothing)
            # knows nothing of an earlier window, and reporting it as no_data would be false.
            first = starts[0] if starts else window_start(now, spec.window_s)
            closed = max(first, window_start(now - MAX_CATCH_UP, spec.window_s)).isoformat()
        cursor = max(
            datetime.fromisoformat(closed), window_start(now - MAX_CATCH_UP, spec.window_s)
        )
        pending = {s for s in starts if s < cursor and mine[f"{prefix}{s.isoformat()}"].get("d")}
        earliest = mem["f"].get(spec.id)
        # Where the place's history starts: its earliest window reported, else its cursor.
        history = datetime.fromisoformat(earliest) if earliest is not None else cursor
        if pending and min(pending) < history:
            # Data older than that (a backlog): the place's history now starts there, so the
            # windows between, empty or not, are reported too, up to MAX_CATCH_UP back (a
            # reading weeks old must not make it report every window since).
            back = max(min(pending), window_start(now - MAX_CATCH_UP, spec.window_s))
            while back < history:
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
            of = _expected(memory, window, spec.device_types, start + width)
            value, band, detail = finish(spec, window["s"], window["r"], of, start)
            coverage, flag = quality(window["r"], of, worst_of)
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
    _forget_joins(mem, now)
    return mem, out
