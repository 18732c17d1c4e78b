"""Place outages: when most devices under one place go offline together (a gateway or a power
cut), that is one :class:`Outage` of the highest such place. Pure: no I/O.

:func:`tally` counts devices and silent devices under every place, :func:`qualifying_places`
and :func:`highest_places` find the places out, :func:`track_outages` opens and ends outages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cityvitals.contracts import OutageStatus, PlaceOutage

__all__ = [
    "Outage",
    "PlacePath",
    "PlaceTally",
    "highest_places",
    "outage_id",
    "qualifying_places",
    "tally",
    "track_outages",
    "under",
]

PlacePath = tuple[str, ...]

NAMED = 50
"""The offline devices an outage's event names at most (the contract's limit)."""


@dataclass(frozen=True, slots=True)
class PlaceTally:
    total: int
    silent: int
    quiet_since: datetime | None
    """The latest report among the silent devices: when the place fell silent."""


def tally(members: Iterable[tuple[PlacePath, bool, datetime]]) -> dict[PlacePath, PlaceTally]:
    """Devices and silent devices under every place (each level), from (path, silent, heard)."""
    totals: dict[PlacePath, int] = {}
    silent: dict[PlacePath, int] = {}
    quiet: dict[PlacePath, datetime] = {}
    for path, is_silent, heard in members:
        for depth in range(1, len(path) + 1):
            place = path[:depth]
            totals[place] = totals.get(place, 0) + 1
            if is_silent:
                silent[place] = silent.get(place, 0) + 1
                quiet[place] = max(heard, quiet.get(place, heard))
    return {p: PlaceTally(n, silent.get(p, 0), quiet.get(p)) for p, n in totals.items()}


def qualifying_places(
    tallies: Mapping[PlacePath, PlaceTally], min_devices: int, fraction: float
) -> dict[PlacePath, PlaceTally]:
    """Every place where at least ``fraction`` of at least ``min_devices`` devices are silent."""
    return {
        place: t
        for place, t in tallies.items()
        if t.total >= min_devices and t.silent / t.total >= fraction
    }


def highest_places(
    tallies: Mapping[PlacePath, PlaceTally], min_devices: int, fraction: float
) -> dict[PlacePath, PlaceTally]:
    """The highest places where at least ``fraction`` of at least ``min_devices`` are silent.

    A qualifying place under another qualifying place is left out: one street going silent is
    one street, not also its grids, and its district only if the district qualifies itself.

    >>> from datetime import UTC
    >>> t = datetime(2026, 11, 22, tzinfo=UTC)
    >>> street = [(("c", "d1", "s1", f"g{i % 2}"), True, t) for i in range(6)]
    >>> others = [(("c", "d1", "s2", "g1"), False, t)] * 2
    >>> list(highest_places(tally(street + others), min_devices=3, fraction=0.8))
    [('c', 'd1', 's1')]
    """
    return _highest(qualifying_places(tallies, min_devices, fraction))


def _highest(places: Mapping[PlacePath, PlaceTally]) -> dict[PlacePath, PlaceTally]:
    return {p: t for p, t in places.items() if not under(p[:-1], places)}


def track_outages(
    outages: Mapping[PlacePath, Outage],
    out: Mapping[PlacePath, PlaceTally],
    forming: Mapping[PlacePath, object],
) -> tuple[dict[PlacePath, Outage], list[Outage], dict[PlacePath, PlaceTally]]:
    """Which open outages stay, which end, and which places start one: (staying, ended, new).

    ``out`` are the places out (:func:`qualifying_places` over offline devices), ``forming``
    those about to be (the same over late or offline devices).

    An open outage stays while its place, or any place under it, is still out: a street whose
    power comes back grid by grid stays one outage until its last grid is back. It ends when
    nothing under it is out, or when a higher place goes out and takes it over. A new outage
    starts at each highest place out that no staying outage covers, once no place above it is
    forming: devices cut off together cross their offline thresholds a little apart, and the
    street they share, not the grid that crossed first, is the outage. Outages never nest.
    """
    highest = _highest(out)
    staying: dict[PlacePath, Outage] = {}
    ended: list[Outage] = []
    for place, outage in outages.items():
        taken_over = under(place[:-1], highest)
        still_out = any(q[: len(place)] == place for q in out)
        if still_out and not taken_over:
            staying[place] = outage
        else:
            ended.append(outage)
    new = {
        p: t
        for p, t in highest.items()
        if p not in staying and not under(p, staying) and not under(p[:-1], forming)
    }
    return staying, ended, new


def under(path: PlacePath, places: Mapping[PlacePath, object]) -> bool:
    """Whether ``path`` is one of ``places`` or lies beneath one."""
    return any(path[:depth] in places for depth in range(1, len(path) + 1))


def outage_id(place_id: str, started_at: datetime) -> str:
    """The id of a place outage: the same place and start always give the same id."""
    key = f"{place_id}|{started_at.isoformat()}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Outage:
    """An open outage: most devices under ``place_path`` went offline together."""

    outage_id: str
    place_path: PlacePath
    started_at: datetime
    devices_total: int
    devices_silent: int

    def event(
        self,
        status: OutageStatus,
        ts: datetime,
        now: PlaceTally | None,
        offline: Iterable[tuple[str, PlacePath]] = (),
    ) -> PlaceOutage:
        """The event of the outage at ``ts``; ``now``: the place's devices now (None: no
        watched device is left under it); ``offline``: (device, place) of the devices offline
        now, those under the place named in it."""
        depth = len(self.place_path)
        silent = sorted(d for d, path in offline if path[:depth] == self.place_path)
        return PlaceOutage(
            outage_id=self.outage_id,
            place_id=self.place_path[-1],
            place_path=self.place_path,
            status=status,
            devices_total=now.total if now else 0,
            devices_silent=now.silent if now else 0,
            started_at=self.started_at,
            ts=ts,
            devices=tuple(silent[:NAMED]),
        )
