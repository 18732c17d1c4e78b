"""What registering devices may mean beyond what was asked, in one wording for the command
line and the HTTP API: the places their paths create (named by their ids: a misspelt id makes
a new street every console then shows), departments the registry does not know, devices with no
profile, and device types no rule or indicator names. Each interface says how it mends them
(:class:`Fixes`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from cityvitals.contracts import Device

__all__ = [
    "API_FIXES",
    "Fixes",
    "department_notes",
    "location_note",
    "move_notes",
    "path_prefixes",
    "place_notes",
    "registration_notes",
    "unjudged_type",
]

SHOWN = 20
"""Places and departments named one by one; the rest are counted."""


@dataclass(frozen=True, slots=True)
class Fixes:
    """How an interface mends what a note names (the command line's are in
    :mod:`wiring.cli_registry_common`)."""

    name_place: str
    """How to name a place created by its id; ``{id}`` is the place's id."""
    departments: str
    """Where the registry's departments are listed."""
    profile: str
    """How to give a profile."""
    location: str = "give the new one"
    """How to give a moved device its new coordinates."""


API_FIXES = Fixes(
    name_place="PUT /places/{id} names it",
    departments="GET /departments",
    profile="PUT /profiles/{id}",
    location="give the new one: lat and lon in the move's body",
)


def path_prefixes(devices: Iterable[Device]) -> set[tuple[str, ...]]:
    """Every place path ``devices`` name: each path and its every prefix (the places it is
    under)."""
    return {d.place_path[:n] for d in devices for n in range(1, len(d.place_path) + 1)}


def unjudged_type(device_type: str, known: Iterable[str]) -> str | None:
    """What registering a device of ``device_type`` means when no rule or indicator names it
    (``known``: the types they name): a mistyped type, judged only by the rules for every
    type and counted in no vital sign, with nothing else to tell. None when one names it.

    >>> print(unjudged_type("waterlevel", {"water_level", "noise"}))
    no rule or indicator names device type 'waterlevel' (they name noise, water_level): its readings are stored, judged only by the rules for every type, and feed no vital sign
    >>> unjudged_type("noise", {"noise"}) is None
    True
    """
    named = sorted(known)
    if device_type in named:
        return None
    return (
        f"no rule or indicator names device type {device_type!r} (they name "
        f"{', '.join(named)}): its readings are stored, judged only by the rules for every "
        "type, and feed no vital sign"
    )


def department_notes(
    devices: Sequence[Device], departments: Collection[str], fixes: Fixes
) -> list[str]:
    """A note for each device whose department the registry does not know (a registration's,
    or an update's that changed it).

    >>> from datetime import UTC, datetime
    >>> d = Device(device_id="wl-1", device_type="w", place_path=("hz",), department="nope",
    ...            updated_at=datetime(2026, 12, 5, tzinfo=UTC))
    >>> department_notes([d], {"water"}, API_FIXES)
    ["department 'nope' of wl-1 is not in the registry (GET /departments): misspelt? not registered yet?"]
    """
    strangers = [d for d in devices if d.department and d.department not in departments]
    notes = [
        f"department {d.department!r} of {d.device_id} is not in the registry "
        f"({fixes.departments}): misspelt? not registered yet?"
        for d in strangers
    ]
    return _shown(notes, "devices of departments not registered")


def _shown(notes: list[str], more: str) -> list[str]:
    """The first :data:`SHOWN` of ``notes``, then how many ``more`` there are.

    >>> _shown(["a"] * 22, "places")[-2:]
    ['a', 'and 2 more places']
    """
    extra = [f"and {len(notes) - SHOWN} more {more}"] if len(notes) > SHOWN else []
    return notes[:SHOWN] + extra


def registration_notes(
    devices: Sequence[Device],
    places: Collection[tuple[str, ...]],
    departments: Collection[str],
    device_types: Collection[str] | None,
    fixes: Fixes,
) -> list[str]:
    """Notes on ``devices`` as registered, given the place paths and departments the registry
    knew before, and the device types the rules and indicators name (None: not known, no note
    on types).

    >>> from datetime import UTC, datetime
    >>> d = Device(device_id="wl-1", device_type="w", place_path=("hz", "xh", "xh-s3"),
    ...            department="nope", updated_at=datetime(2026, 12, 5, tzinfo=UTC))
    >>> for note in registration_notes([d], {("hz",), ("hz", "xh")}, {"water"}, {"w"}, API_FIXES):
    ...     print(note)
    creates place hz/xh/xh-s3, named by its id (PUT /places/xh-s3 names it)
    department 'nope' of wl-1 is not in the registry (GET /departments): misspelt? not registered yet?
    wl-1 has no profile: any metric it sends is stored and judged, in any range (a metric it was not made to send raises that metric's alerts); a profile (PUT /profiles/{id}) limits both
    """
    notes = place_notes(devices, places, fixes)
    notes += department_notes(devices, departments, fixes)
    free = [d.device_id for d in devices if d.profile_id is None]
    if free:
        some = ", ".join(free[:3]) + (f" and {len(free) - 3} more" if len(free) > 3 else "")
        one = len(free) == 1
        notes.append(
            f"{some} {'has' if one else 'have'} no profile: any metric {'it sends' if one else 'they send'} "
            "is stored and judged, in any range (a metric it was not made to send raises that "
            f"metric's alerts); a profile ({fixes.profile}) limits both"
        )
    if device_types is not None:
        unjudged = (
            unjudged_type(t, device_types) for t in sorted({d.device_type for d in devices})
        )
        notes += [note for note in unjudged if note is not None]
    return notes


def place_notes(
    devices: Sequence[Device], places: Collection[tuple[str, ...]], fixes: Fixes
) -> list[str]:
    """The places the paths of ``devices`` create, of those the registry did not have
    (``places``): named by their ids, a misspelt id makes a new street."""
    new = sorted(path_prefixes(devices) - set(places))
    notes = [
        f"creates place {'/'.join(path)}, named by its id "
        f"({fixes.name_place.replace('{id}', path[-1])})"
        for path in new
    ]
    return _shown(notes, "places")


def location_note(device: Device, fixes: Fixes) -> list[str]:
    """What a move that gave no coordinates means for a device that had some: it keeps them,
    and the map and its dispatch orders place it where it was.

    >>> from datetime import UTC, datetime
    >>> d = Device(device_id="wl-1", device_type="water_level", place_path=("sh", "xh"),
    ...            lat=31.2, lon=121.4, updated_at=datetime(2026, 12, 5, tzinfo=UTC))
    >>> print(*location_note(d, API_FIXES))
    wl-1 keeps its coordinates 31.2, 121.4: if it moved on the ground, give the new one: lat and lon in the move's body
    """
    if device.lat is None or device.lon is None:
        return []
    return [
        f"{device.device_id} keeps its coordinates {device.lat}, {device.lon}: if it moved "
        f"on the ground, {fixes.location}"
    ]


def move_notes(
    device_id: str,
    firing: Sequence[tuple[str, str, tuple[str, ...]]],
    to: Sequence[str],
) -> list[str]:
    """What a device's move to ``to`` leaves behind: its alerts firing (rule, level, the path
    each was raised at) at a place the move leaves stay with their incident there, with that
    district's officers and escalations, until they resolve. One raised at the new place or
    above it (a move back, or within its street) leaves nothing behind.

    >>> move_notes("wl-1", [("waterlogging-depth", "orange", ("sh", "pd", "s1", "g1"))], ("sh", "xh"))
    ['1 alert of wl-1 firing (waterlogging-depth orange at sh/pd/s1/g1): its incident stays at the old place, with its officers and escalations, until it resolves']
    >>> move_notes("wl-1", [("r", "blue", ("sh", "pd"))], ("sh", "pd", "s2"))
    []
    """
    left = [(r, lv, path) for r, lv, path in firing if tuple(to[: len(path)]) != tuple(path)]
    if not left:
        return []
    n = len(left)
    named = ", ".join(f"{rule} {level} at {'/'.join(path)}" for rule, level, path in left[:SHOWN])
    more = f", {n - SHOWN} more" if n > SHOWN else ""
    alerts, stay, resolve = (
        ("alert", "its incident stays", "it resolves")
        if n == 1
        else ("alerts", "their incidents stay", "they resolve")
    )
    return [
        f"{n} {alerts} of {device_id} firing ({named}{more}): {stay} at the old place, with its "
        f"officers and escalations, until {resolve}"
    ]


def moved_notes(
    before: Device,
    after: Device,
    firing: Sequence[tuple[str, str, tuple[str, ...]]],
    places: Collection[tuple[str, ...]],
    location_given: bool,
    fixes: Fixes,
) -> list[str]:
    """The notes on a device's move from ``before`` to ``after``: the places it created
    (:func:`place_notes`, ``places`` those the registry had), its alerts left at the old place
    (:func:`move_notes`), the coordinates it kept when given none (:func:`location_note`); or
    that it changed nothing (a move to where the device is, at its coordinates).

    >>> from datetime import UTC, datetime
    >>> d = Device(device_id="wl-1", device_type="water_level", place_path=("sh", "xh"),
    ...            updated_at=datetime(2026, 12, 5, tzinfo=UTC))
    >>> moved_notes(d, d, [], [("sh",), ("sh", "xh")], False, API_FIXES)
    ['wl-1 is at sh/xh already: nothing changed']
    """
    if after == before:
        at = " at those coordinates" if location_given else ""
        return [
            f"{after.device_id} is at {'/'.join(after.place_path)}{at} already: nothing changed"
        ]
    notes = place_notes([after], places, fixes)
    notes += move_notes(after.device_id, firing, after.place_path)
    if not location_given:
        notes += location_note(after, fixes)
    return notes
