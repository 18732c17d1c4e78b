"""``places``: the place tree (city > district > street > grid > building)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cityvitals.contracts import Place, PlaceLevel
from device_registry.errors import PlaceConflict, UnknownPlace
from device_registry.repositories import audit
from device_registry.repositories.audit import Cursor

__all__ = ["delete", "ensure", "find", "get", "move_subtree", "subtree", "upsert", "uses"]

COLUMNS = "place_id, level, name, path, lat, lon"


def _place(row: Sequence[Any]) -> Place:
    place_id, level, name, path, lat, lon = row
    return Place(place_id=place_id, level=level, name=name, path=tuple(path), lat=lat, lon=lon)


def find(cur: Cursor, place_id: str, lock: bool = False) -> Place | None:
    """The place, or None; ``lock``: its row locked until the transaction ends (a removal)."""
    query = f"SELECT {COLUMNS} FROM places WHERE place_id = %s" + (" FOR UPDATE" if lock else "")
    row = cur.execute(query.encode(), (place_id,)).fetchone()
    return None if row is None else _place(row)


def get(cur: Cursor, place_id: str, lock: bool = False) -> Place:
    place = find(cur, place_id, lock)
    if place is None:
        raise UnknownPlace(place_id)
    return place


def subtree(cur: Cursor, under: str | None) -> list[Place]:
    """Every place, or a place and all its descendants, in path order."""
    if under is None:
        return [_place(r) for r in cur.execute(f"SELECT {COLUMNS} FROM places ORDER BY path")]
    get(cur, under)
    rows = cur.execute(
        f"SELECT {COLUMNS} FROM places WHERE %s = ANY(path) ORDER BY path", (under,)
    ).fetchall()
    return [_place(r) for r in rows]


def positions(cur: Cursor) -> dict[str, tuple[float, float]]:
    """Each place without coordinates of its own that has active devices with theirs under
    it: the mean of their positions (a map places its incidents there, not nowhere)."""
    rows = cur.execute(
        "SELECT d.place_id, avg(d.lat), avg(d.lon) FROM ("
        "  SELECT unnest(place_path) AS place_id, lat, lon FROM devices"
        "  WHERE state = 'active' AND lat IS NOT NULL AND lon IS NOT NULL) d"
        " JOIN places p USING (place_id) WHERE p.lat IS NULL OR p.lon IS NULL"
        " GROUP BY d.place_id"
    ).fetchall()
    return {place_id: (float(lat), float(lon)) for place_id, lat, lon in rows}


def upsert(cur: Cursor, p: Place) -> None:
    """Create a place or rename it (its path stays)."""
    cur.execute(
        "INSERT INTO places (place_id, level, name, path, lat, lon) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (place_id) DO UPDATE SET "
        "name = EXCLUDED.name, lat = EXCLUDED.lat, lon = EXCLUDED.lon, updated_at = now()",
        (p.place_id, p.level.value, p.name, list(p.path), p.lat, p.lon),
    )


def move_subtree(cur: Cursor, old: list[str], new: list[str]) -> None:
    """Every place at or under ``old`` now sits at or under ``new``."""
    n = len(old)
    cur.execute(
        "UPDATE places SET path = %s || path[%s:], updated_at = now() WHERE path[1:%s] = %s",
        (new, n + 1, n, old),
    )


def ensure(cur: Cursor, paths: Sequence[Sequence[str]], actor: str) -> None:
    """Create every place on the paths that does not exist yet (audited, named by its id);
    a known place must sit where a path says, and one new id cannot sit at two paths."""
    prefixes = {tuple(path[: i + 1]) for path in paths for i in range(len(path))}
    known = {
        str(r[0]): tuple(r[1])
        for r in cur.execute(
            # FOR SHARE: a removal of one of them waits for this write, then sees its device
            "SELECT place_id, path FROM places WHERE place_id = ANY(%s) FOR SHARE",
            ([p[-1] for p in prefixes],),
        ).fetchall()
    }
    existing = set(known)
    for prefix in sorted(prefixes):
        where = known.setdefault(prefix[-1], prefix)
        if where != prefix:
            raise PlaceConflict(prefix[-1], where, prefix)
    new = sorted((p for p in prefixes if p[-1] not in existing), key=len)
    created = [
        Place(place_id=p[-1], level=list(PlaceLevel)[len(p) - 1], name=p[-1], path=p) for p in new
    ]
    cur.executemany(
        "INSERT INTO places (place_id, level, name, path) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (place_id) DO NOTHING",
        [(p.place_id, p.level.value, p.name, list(p.path)) for p in created],
    )
    audit.record_many(cur, actor, "create", "place", [(p.place_id, None, p) for p in created])


def uses(cur: Cursor, place_id: str) -> tuple[list[str], list[str], list[str]]:
    """What uses a place: the places under it, the devices at or under it (of any state), the
    users scoped to it or under it."""
    under = cur.execute(
        "SELECT place_id FROM places WHERE %s = ANY(path) AND place_id <> %s ORDER BY path",
        (place_id, place_id),
    ).fetchall()
    devices = cur.execute(
        "SELECT device_id FROM devices WHERE %s = ANY(place_path) ORDER BY device_id", (place_id,)
    ).fetchall()
    users = cur.execute(
        "SELECT name FROM users WHERE %s = ANY(scope) ORDER BY name", (place_id,)
    ).fetchall()
    return [r[0] for r in under], [r[0] for r in devices], [r[0] for r in users]


def delete(cur: Cursor, place_id: str) -> None:
    cur.execute("DELETE FROM places WHERE place_id = %s", (place_id,))
