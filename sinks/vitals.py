"""Reading the city's vital signs back from the database, for the CLI and the API.

:func:`current` gives the latest value of every indicator for a place and its children, with
its unit, when its window ended and when the next value is due, the indicators that have no
value yet (and when their first is due), and the open alerts under each by level; :func:`history` gives one indicator of one place over a
time range, as stored (``raw``) or rolled up to hours or days (the value of the bucket's
windows as the indicator adds them up: their mean, their maximum for a maximum, their energy
mean for a sound level; their range, and their mean coverage).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg

from rules.indicators import Catalogue, window_start
from rules.indicators.aqi import daily_aqi, hourly_aqi
from rules.indicators.base import Rollup

__all__ = [
    "DEFAULT_GRACE",
    "RESOLUTIONS",
    "HistoryPoint",
    "NextValue",
    "PendingSign",
    "PlaceVitals",
    "UnknownPlace",
    "VitalSign",
    "current",
    "history",
    "next_value",
]

DEFAULT_GRACE = timedelta(seconds=60)
"""How long after its window ends a value is reported (``CITYVITALS_INDICATORS_GRACE_S``)."""

Resolution = Literal["raw", "1h", "1d"]
RESOLUTIONS: dict[str, str | None] = {"raw": None, "1h": "1 hour", "1d": "1 day"}


class UnknownPlace(LookupError):
    def __init__(self, place_id: str) -> None:
        super().__init__(f"place {place_id!r} does not exist")
        self.place_id = place_id


@dataclass(frozen=True)
class NextValue:
    """The next window of an indicator to be reported, and when its value is due."""

    window_start: datetime
    window_end: datetime
    due_at: datetime
    """``window_end`` plus the stream's grace."""
    in_progress: bool
    """The window has not ended yet (otherwise it ended and its value is being reported)."""
    overdue: bool
    """Windows that should have been reported by now were not (the stream is behind or stopped)."""


def next_value(
    latest_end: datetime | None, window_s: int, now: datetime, grace: timedelta = DEFAULT_GRACE
) -> NextValue:
    """The window whose value comes next after a latest stored window ending ``latest_end``.

    >>> at = datetime(2026, 7, 1, 13, 20, tzinfo=UTC)
    >>> n = next_value(None, 3600, at)
    >>> n.window_start.time(), n.window_end.time(), n.due_at.time(), n.in_progress
    (datetime.time(13, 0), datetime.time(14, 0), datetime.time(14, 1), True)
    """
    width = timedelta(seconds=window_s)
    upcoming = window_start(now - grace, window_s)  # the first window not due yet
    overdue = latest_end is not None and latest_end < upcoming
    start = upcoming if latest_end is None or overdue else max(latest_end, upcoming)
    return NextValue(start, start + width, start + width + grace, now < start + width, overdue)


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
    unit: str = ""
    """From the indicator catalogue ('' when unknown or dimensionless)."""
    window_end: datetime | None = None
    age_s: float = 0.0
    """Seconds from the window's end to now: how old "now" is."""
    next: NextValue | None = None


@dataclass(frozen=True)
class PendingSign:
    """An indicator of the place that has no value yet, and when its first is due."""

    indicator: str
    unit: str
    next: NextValue


@dataclass(frozen=True)
class PlaceVitals:
    place_id: str
    level: str
    name: str
    path: tuple[str, ...]
    signs: tuple[VitalSign, ...]
    open_alerts: dict[str, int]
    """Firing alerts at or under the place, by warning level."""
    pending: tuple[PendingSign, ...] = ()
    """Indicators of the catalogue computed at this level, with active devices of their types
    under the place, that have no value yet (a 1 h AQI has none for up to an hour)."""
    now: datetime | None = None


@dataclass(frozen=True)
class HistoryPoint:
    start: datetime
    value: float | None
    low: float | None
    high: float | None
    coverage: float
    windows: int


Conn = psycopg.Connection[Any]


def current(
    conn: Conn,
    place_id: str,
    *,
    catalogue: Catalogue | None = None,
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
) -> list[PlaceVitals]:
    """The place first, then its children, each with the latest value of every indicator.

    With the ``catalogue``, values carry their units and the indicators without a value yet
    are listed as pending; ``grace`` is the stream's (when a window's value is due)."""
    now = datetime.now(UTC) if now is None else now
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
    types = conn.execute(
        "SELECT DISTINCT p, device_type FROM devices, unnest(place_path) AS p "
        "WHERE state = 'active' AND p = ANY(%s)",
        (ids,),
    ).fetchall()
    out = []
    for pid, level, name, path in places:
        signs = tuple(_sign(row[1:], catalogue, now, grace) for row in latest if row[0] == pid)
        open_alerts = {str(lv): int(n) for p, lv, n in alerts if p == pid}
        present = {s.indicator for s in signs}
        pending: tuple[PendingSign, ...] = ()
        if catalogue is not None:
            here = {str(t) for p, t in types if p == pid}
            pending = tuple(
                PendingSign(spec.id, spec.unit, next_value(None, spec.window_s, now, grace))
                for spec in catalogue
                if spec.id not in present and level in spec.levels and here & set(spec.device_types)
            )
        out.append(PlaceVitals(pid, level, name, tuple(path), signs, open_alerts, pending, now))
    return out


def _sign(
    row: tuple[Any, ...], catalogue: Catalogue | None, now: datetime, grace: timedelta
) -> VitalSign:
    indicator, value, band, coverage, reporting, expected, quality, start, window_s = row
    spec = None if catalogue is None else catalogue.by_id.get(indicator)
    end = start + timedelta(seconds=window_s)
    return VitalSign(
        indicator,
        value,
        band,
        coverage,
        reporting,
        expected,
        quality,
        start,
        window_s,
        unit="" if spec is None else spec.unit,
        window_end=end,
        age_s=max(0.0, (now - end).total_seconds()),
        next=next_value(end, window_s, now, grace),
    )


ROLLED: dict[str, str] = {
    "mean": "avg(value)",
    "max": "max(value)",
    "energy": "10 * log(avg(power(10, value / 10)))",
}
"""The value of a bucket of windows, by how the indicator's windows add up (:data:`Rollup`; the
AQI's is :func:`_aqi_buckets`)."""


_SPAN = "WHERE place_id = %s AND indicator = %s AND window_start >= %s AND window_start < %s "
"""The windows of one indicator of one place in ``[start, end)``."""


def history(
    conn: Conn,
    place_id: str,
    indicator: str,
    start: datetime,
    end: datetime,
    resolution: Resolution = "raw",
    *,
    rollup: Rollup | None = None,
    zone: str = "UTC",
) -> list[HistoryPoint]:
    """One indicator of one place in ``[start, end)``, oldest first; a bucket's value is
    made of its windows' as ``rollup`` says (the indicator's ``IndicatorSpec.rollup``), which a
    roll-up needs: the mean of each window's deepest water is not the deepest. Buckets begin
    at the city's midnight and hours (``zone``, an IANA name): a day of Shanghai is 00:00 to
    00:00 there, not 08:00 to 08:00 as UTC's days would cut it."""
    if conn.execute("SELECT 1 FROM places WHERE place_id = %s", (place_id,)).fetchone() is None:
        raise UnknownPlace(place_id)
    width = RESOLUTIONS[resolution]
    if width is None:
        rows = conn.execute(
            f"SELECT window_start, value, value, value, coverage, 1 FROM indicators {_SPAN}"
            "ORDER BY window_start",
            (place_id, indicator, start, end),
        ).fetchall()
    else:
        if rollup is None:
            raise ValueError(f"a {resolution} history needs the indicator's rollup")
        first, last = whole_buckets(start, end, resolution, zone)
        if rollup == "aqi":
            return _aqi_buckets(conn, place_id, indicator, first, last, resolution, zone)
        # A day is the city's, on its clocks (23 or 25 hours at a change of time); an hour is
        # an hour of real time, from the city's hours (the hour the clocks go back to is two).
        binned: tuple[str, tuple[object, ...]] = (
            (
                "date_bin(%s::interval, window_start AT TIME ZONE %s, TIMESTAMP '2000-01-01')"
                " AT TIME ZONE %s",
                (width, zone, zone),
            )
            if resolution == "1d"
            else ("date_bin(%s::interval, window_start, %s)", (width, hour_origin(first, zone)))
        )
        rows = conn.execute(
            f"SELECT {binned[0]} AS b, {ROLLED[rollup]}, min(value), max(value), avg(coverage),"
            f" count(*) FROM indicators {_SPAN}GROUP BY b ORDER BY b",
            (*binned[1], place_id, indicator, first, last),
        ).fetchall()
    return [HistoryPoint(*row) for row in rows]


def _aqi_buckets(
    conn: Conn,
    place_id: str,
    indicator: str,
    first: datetime,
    last: datetime,
    resolution: Resolution,
    zone: str,
) -> list[HistoryPoint]:
    """An AQI's hours or days as the standard reports them, from its windows' mean
    concentrations: an hour's AQI of its hourly means, a day's of its 24-hour means and
    ozone's highest 8-hour mean (:func:`~rules.indicators.aqi.daily_aqi`), not the mean of its
    hourly AQIs. A bucket with a window stored without its concentrations (before they were
    kept) is the mean of its windows' AQIs, as before."""
    rows = conn.execute(
        f"SELECT window_start, value, coverage, detail FROM indicators {_SPAN}"
        "ORDER BY window_start",
        (place_id, indicator, first, last),
    ).fetchall()
    tz, hour = ZoneInfo(zone), timedelta(hours=1)
    origin = hour_origin(first, zone)
    buckets: dict[datetime, list[tuple[datetime, float | None, float, dict[str, Any]]]] = {}
    for at, stored, coverage, detail in rows:
        if resolution == "1d":
            key = datetime.combine(at.astimezone(tz).date(), time(), tz)
        else:
            key = origin + (at - origin) // hour * hour
        buckets.setdefault(key, []).append((at, stored, coverage, detail or {}))
    points = []
    for key, windows in buckets.items():
        values = [v for _, v, _, _ in windows if v is not None]
        # A window without data (no value, no details) adds nothing; one with a value but no
        # concentrations was stored before they were kept.
        kept = all(any(k.startswith("mean.") for k in d) for _, v, _, d in windows if v is not None)
        value: float | None
        if not kept:
            value = sum(values) / len(values) if values else None
        elif resolution == "1d":
            # in real time: a day the clocks change has 23 or 25 hours (the same zone on both
            # sides of a subtraction would count the wall clock's 24)
            begins = key.astimezone(UTC)
            ends = datetime.combine(key.date() + timedelta(days=1), time(), tz).astimezone(UTC)
            length = (ends - begins) // hour
            hours: list[list[dict[str, Any]]] = [[] for _ in range(length)]
            for start, _, _, detail in windows:
                hours[min((start.astimezone(UTC) - begins) // hour, length - 1)].append(detail)
            value = daily_aqi([_concentrations(h) for h in hours])[0]
        else:
            value = hourly_aqi(_concentrations([d for _, _, _, d in windows]))[0]
        points.append(
            HistoryPoint(
                key.astimezone(UTC),
                value,
                min(values, default=None),
                max(values, default=None),
                sum(c for _, _, c, _ in windows) / len(windows),
                len(windows),
            )
        )
    return points


def _concentrations(details: list[dict[str, Any]]) -> dict[str, float]:
    """Each pollutant's mean of the concentrations the windows' ``details`` keep
    (``mean.<pollutant>``).

    >>> _concentrations([{"mean.pm25": 20.0, "iaqi.pm25": 29.0}, {"mean.pm25": 100.0}, {}])
    {'pm25': 60.0}
    """
    found: dict[str, list[float]] = {}
    for detail in details:
        for name, c in detail.items():
            if name.startswith("mean."):
                found.setdefault(name[5:], []).append(float(c))
    return {p: sum(cs) / len(cs) for p, cs in found.items()}


def whole_buckets(
    start: datetime, end: datetime, resolution: Resolution, zone: str
) -> tuple[datetime, datetime]:
    """``[start, end)`` widened to whole buckets: to the city's midnights for days, to whole
    hours for hours (a day asked for from a time in it, or from a UTC midnight in Shanghai, is
    the whole day, not its last 16 hours).

    >>> from datetime import UTC
    >>> a, b = whole_buckets(datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 3, tzinfo=UTC),
    ...                      "1d", "Asia/Shanghai")
    >>> a.isoformat(), b.isoformat()
    ('2026-07-01T00:00:00+08:00', '2026-07-04T00:00:00+08:00')
    >>> [t.isoformat() for t in whole_buckets(datetime(2026, 7, 1, 8, 20, tzinfo=UTC),
    ...                                       datetime(2026, 7, 1, 9, 0, tzinfo=UTC), "1h", "UTC")]
    ['2026-07-01T08:00:00+00:00', '2026-07-01T09:00:00+00:00']
    """
    tz = ZoneInfo(zone)
    if resolution == "1d":
        first = datetime.combine(start.astimezone(tz).date(), time(), tz)
        last_day = (end - timedelta(microseconds=1)).astimezone(tz).date() + timedelta(days=1)
        return first, datetime.combine(last_day, time(), tz)
    hour = timedelta(hours=1)
    origin = hour_origin(start, zone)
    first = origin + (start - origin) // hour * hour
    last = origin - (origin - end) // hour * hour
    return first, last


def hour_origin(at: datetime, zone: str) -> datetime:
    """The city's midnight of ``at``'s day, as an instant: where its hours begin, counted in
    real time (at its offset of that day: Colombo was +06:00 in 2000 and is +05:30 now).

    >>> from datetime import UTC
    >>> hour_origin(datetime(2026, 7, 1, 12, tzinfo=UTC), "Asia/Colombo").isoformat()
    '2026-06-30T18:30:00+00:00'
    """
    tz = ZoneInfo(zone)
    return datetime.combine(at.astimezone(tz).date(), time(), tz).astimezone(UTC)
