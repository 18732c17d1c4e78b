"""Reading the city's vital signs back from the database, for the CLI and the API.

:func:`current` gives the latest value of every indicator for a place and its children, with
the open alerts under each by level; :func:`history` gives one indicator of one place over a
time range, as stored (``raw``) or rolled up to hours or days (the mean of the values, their
range, and the mean coverage of the windows in each bucket).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

__all__ = ["RESOLUTIONS", "HistoryPoint", "PlaceVitals", "UnknownPlace", "current", "history"]

Resolution = Literal["raw", "1h", "1d"]
RESOLUTIONS: dict[str, str | None] = {"raw": None, "1h": "1 hour", "1d": "1 day"}


class UnknownPlace(LookupError):
    def __init__(self, place_id: str) -> None:
        super().__init__(f"place {place_id!r} does not exist")
        self.place_id = place_id


@dataclass(frozen=True)
class VitalSign:
    indicator: str
    value: float | None
    band: str | None
    coverage: float
    reporting: int
    expected: int
    quality: str
    window_start: datetime
    window_s: int


@dataclass(frozen=True)
class PlaceVitals:
    place_id: str
    level: str
    name: str
    path: tuple[str, ...]
    signs: tuple[VitalSign, ...]
    open_alerts: dict[str, int]
    """Firing alerts at or under the place, by warning level."""


@dataclass(frozen=True)
class HistoryPoint:
    start: datetime
    value: float | None
    low: float | None
    high: float | None
    coverage: float
    windows: int


Conn = psycopg.Connection[Any]


def current(conn: Conn, place_id: str) -> list[PlaceVitals]:
    """The place first, then its children, each with the latest value of every indicator."""
    place = conn.execute(
        "SELECT place_id, level, name, path FROM places WHERE place_id = %s", (place_id,)
    ).fetchone()
    if place is None:
        raise UnknownPlace(place_id)
    depth = len(place[3])
    children = conn.execute(
        "SELECT place_id, level, name, path FROM places "
        "WHERE cardinality(path) = %s AND path[%s] = %s ORDER BY place_id",
        (depth + 1, depth, place_id),
    ).fetchall()
    places = [place, *children]
    ids = [p[0] for p in places]
    latest = conn.execute(
        "SELECT DISTINCT ON (place_id, indicator) place_id, indicator, value, level, coverage, "
        "reporting, expected, quality, window_start, window_s FROM indicators "
        "WHERE place_id = ANY(%s) ORDER BY place_id, indicator, window_start DESC",
        (ids,),
    ).fetchall()
    alerts = conn.execute(
        "SELECT p, level, count(*) FROM alerts, unnest(place_path) AS p "
        "WHERE status = 'firing' AND p = ANY(%s) GROUP BY p, level",
        (ids,),
    ).fetchall()
    out = []
    for pid, level, name, path in places:
        signs = tuple(VitalSign(*row[1:]) for row in latest if row[0] == pid)
        open_alerts = {str(lv): int(n) for p, lv, n in alerts if p == pid}
        out.append(PlaceVitals(pid, level, name, tuple(path), signs, open_alerts))
    return out


def history(
    conn: Conn,
    place_id: str,
    indicator: str,
    start: datetime,
    end: datetime,
    resolution: Resolution = "raw",
) -> list[HistoryPoint]:
    """One indicator of one place in ``[start, end)``, oldest first."""
    if conn.execute("SELECT 1 FROM places WHERE place_id = %s", (place_id,)).fetchone() is None:
        raise UnknownPlace(place_id)
    width = RESOLUTIONS[resolution]
    if width is None:
        rows = conn.execute(
            "SELECT window_start, value, value, value, coverage, 1 FROM indicators "
            "WHERE place_id = %s AND indicator = %s AND window_start >= %s AND window_start < %s "
            "ORDER BY window_start",
            (place_id, indicator, start, end),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT date_bin(%s::interval, window_start, TIMESTAMPTZ '2000-01-01') AS b, "
            "avg(value), min(value), max(value), avg(coverage), count(*) FROM indicators "
            "WHERE place_id = %s AND indicator = %s AND window_start >= %s AND window_start < %s "
            "GROUP BY b ORDER BY b",
            (width, place_id, indicator, start, end),
        ).fetchall()
    return [HistoryPoint(*row) for row in rows]
