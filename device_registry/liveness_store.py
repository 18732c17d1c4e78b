"""``device_liveness`` and ``place_outages``: written by the liveness service alone, read by it
at start and by the API (:func:`device_rows`, :func:`open_outages`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from pydantic import BaseModel

from cityvitals import db
from cityvitals.contracts import DeviceLiveness, Liveness, PlaceOutage
from cityvitals.settings import Settings
from cityvitals.stage import Transient
from device_registry.liveness import DeviceClock, Outage, PlacePath, Watched, restore, under

__all__ = [
    "LivenessStore",
    "LivenessStoreUnavailable",
    "device_rows",
    "open_outages",
    "silent_rows",
    "status_counts",
    "unheard",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Conn = psycopg.Connection[tuple[Any, ...]]


class LivenessStoreUnavailable(Transient):
    """The database refused or dropped an operation; nothing of it was committed. A
    :class:`~cityvitals.stage.Transient` fault: :func:`~cityvitals.stage.retry` waits it out."""

    def __init__(self, operation: str, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"liveness store: {operation} failed: {detail}", retry_after)
        self.operation = operation
        self.detail = detail


class LivenessStore:
    """``device_liveness`` and ``place_outages`` in PostgreSQL for the service; reconnects on need."""

    CLOCKS = "SELECT device_id, status, last_seen, expected_interval_s FROM device_liveness"
    OUTAGES = (
        "SELECT outage_id, place_path, started_at, devices_total, devices_silent "
        "FROM place_outages WHERE status = 'started'"
    )
    UPSERT_DEVICE = (
        "INSERT INTO device_liveness (device_id, status, last_seen, expected_interval_s, "
        "place_path, updated_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE "
        "SET status = EXCLUDED.status, last_seen = EXCLUDED.last_seen, "
        "expected_interval_s = EXCLUDED.expected_interval_s, place_path = EXCLUDED.place_path, "
        "updated_at = EXCLUDED.updated_at"
    )
    # An ended outage stays ended: a replayed start never reopens it.
    UPSERT_OUTAGE = (
        "INSERT INTO place_outages (outage_id, place_id, place_path, status, devices_total, "
        "devices_silent, started_at, updated_at, devices) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (outage_id) DO UPDATE SET status = EXCLUDED.status, "
        "devices_total = EXCLUDED.devices_total, devices_silent = EXCLUDED.devices_silent, "
        "updated_at = EXCLUDED.updated_at, devices = EXCLUDED.devices "
        "WHERE place_outages.status = 'started'"
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: Conn | None = None

    def _run(self, operation: str, work: Callable[[Conn], T]) -> T:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = db.connect(self.settings)
            return work(self._conn)
        except db.DatabaseUnavailable as exc:
            raise LivenessStoreUnavailable(operation, exc.detail) from exc
        except psycopg.OperationalError as exc:
            if self._conn is not None and self._conn.broken:
                self._conn.close()
                self._conn = None
            raise LivenessStoreUnavailable(operation, str(exc).strip()) from exc

    def outages(self) -> dict[PlacePath, Outage]:
        rows = self._run("reading open outages", lambda c: c.execute(self.OUTAGES).fetchall())
        return {
            tuple(path): Outage(str(oid), tuple(path), _utc(started), int(total), int(silent))
            for oid, path, started, total, silent in rows
        }

    def clocks(
        self, fleet: dict[str, Watched], outages: dict[PlacePath, Outage]
    ) -> dict[str, DeviceClock]:
        """The stored clocks of the watched devices (an offline under an open outage: withheld)."""
        rows = self._run("reading device liveness", lambda c: c.execute(self.CLOCKS).fetchall())
        clocks = {}
        for device_id, status, last_seen, interval in rows:
            watched = fleet.get(device_id)
            if watched is None:
                continue
            clocks[str(device_id)] = restore(
                Liveness(status),
                None if last_seen is None else _utc(last_seen),
                float(interval),
                watched.since,
                withheld=under(watched.place_path, outages),
            )
        return clocks

    def save(self, devices: Sequence[DeviceLiveness], outages: Sequence[PlaceOutage]) -> None:
        """Upsert device rows and outage transitions in one transaction."""
        if not devices and not outages:
            return
        device_rows = [
            (
                d.device_id,
                d.status.value,
                d.last_seen,
                d.expected_interval_s,
                list(d.place_path),
                d.ts,
            )
            for d in devices
        ]
        outage_rows = [
            (
                o.outage_id,
                o.place_id,
                list(o.place_path),
                o.status.value,
                o.devices_total,
                o.devices_silent,
                o.started_at,
                o.ts,
                list(o.devices),
            )
            for o in outages
        ]

        def write(conn: Conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(self.UPSERT_DEVICE, device_rows)
                cur.executemany(self.UPSERT_OUTAGE, outage_rows)

        self._run(f"saving {len(devices)} devices and {len(outages)} outage changes", write)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _utc(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expected a timestamp from the database, got {value!r}")
    return value.astimezone(UTC)


def _models(model: type[M], cur: psycopg.Cursor[Any]) -> list[M]:
    """Rows whose column names are the model's fields, as models."""
    names = [c.name for c in cur.description or ()]
    return [model.model_validate(dict(zip(names, row, strict=True))) for row in cur]


_ACTIVE_UNDER = (
    "SELECT l.device_id, l.status, l.last_seen, l.expected_interval_s, l.place_path, "
    "l.updated_at AS ts FROM device_liveness l JOIN devices d ON d.device_id = l.device_id "
    "WHERE d.state = 'active' AND (%(place)s::text IS NULL OR %(place)s = ANY(l.place_path)) "
)
"""The liveness rows of the active devices under ``%(place)s`` (all of them when null), as
:class:`~cityvitals.contracts.DeviceLiveness` reads them; a query adds its own filters."""


def device_rows(
    conn: Conn,
    place: str | None = None,
    status: Liveness | None = None,
    limit: int | None = None,
    offset: int = 0,
    device_id: str | None = None,
) -> list[DeviceLiveness]:
    """Each active device's liveness as last judged, under ``place``, of ``status`` (and with
    ``device_id``), in id order. A suspended or retired device is not watched: its last
    judgement would stand frozen (``online``, say), so it is not listed."""
    cur = conn.execute(
        _ACTIVE_UNDER + "AND (%(status)s::text IS NULL OR l.status = %(status)s) "
        "AND (%(device)s::text IS NULL OR l.device_id = %(device)s) "
        "ORDER BY l.device_id LIMIT %(limit)s OFFSET %(offset)s",
        {
            "place": place,
            "status": status and status.value,
            "device": device_id,
            "limit": limit,
            "offset": offset,
        },
    )
    return _models(DeviceLiveness, cur)


def status_counts(conn: Conn, place: str | None = None) -> dict[Liveness, int]:
    """How many active devices under ``place`` are of each status, as last judged."""
    cur = conn.execute(
        "SELECT l.status, count(*) FROM device_liveness l "
        "JOIN devices d ON d.device_id = l.device_id WHERE d.state = 'active' "
        "AND (%(place)s::text IS NULL OR %(place)s = ANY(l.place_path)) GROUP BY l.status",
        {"place": place},
    )
    counts = dict.fromkeys(Liveness, 0)
    for status, n in cur.fetchall():
        counts[Liveness(status)] = int(n)
    return counts


def silent_rows(conn: Conn, place: str | None = None, limit: int = 50) -> list[DeviceLiveness]:
    """The active devices under ``place`` judged offline or late, offline first, each the
    longest silent first: those to look at first."""
    cur = conn.execute(
        _ACTIVE_UNDER + "AND l.status IN ('offline', 'late') "
        "ORDER BY l.status = 'offline' DESC, l.last_seen NULLS FIRST, l.device_id "
        "LIMIT %(limit)s",
        {"place": place, "limit": limit},
    )
    return _models(DeviceLiveness, cur)


def unheard(conn: Conn, place: str | None = None) -> list[tuple[str, datetime, bool]]:
    """Devices under ``place`` the liveness service has no judgement of yet, with when each
    was registered and whether it is provisioned, in id order: active ones never heard since
    and not yet silent long enough to be judged late (its row is written at a first report or
    a first lateness), and provisioned ones (imported, never connected: their first valid
    reading activates them), which nobody expects yet."""
    cur = conn.execute(
        "SELECT d.device_id, d.created_at, d.state = 'provisioned' FROM devices d "
        "WHERE d.state IN ('active', 'provisioned') "
        "AND (%(place)s::text IS NULL OR %(place)s = ANY(d.place_path)) "
        "AND NOT EXISTS (SELECT 1 FROM device_liveness l WHERE l.device_id = d.device_id) "
        "ORDER BY d.device_id",
        {"place": place},
    )
    return [
        (device_id, created_at, bool(provisioned)) for device_id, created_at, provisioned in cur
    ]


def open_outages(
    conn: Conn, place: str | None = None, holding: Sequence[str] = ()
) -> list[PlaceOutage]:
    """Outages not yet ended at or under ``place``, and, with ``holding`` (a place path), at
    or under it or at a place above it (that holds it), oldest first."""
    cur = conn.execute(
        "SELECT outage_id, place_id, place_path, status, devices_total, devices_silent, "
        "started_at, updated_at AS ts, devices FROM place_outages WHERE status = 'started' "
        "AND (%(place)s::text IS NULL OR %(place)s = ANY(place_path)) "
        "AND (%(depth)s = 0 OR place_path[1:%(depth)s] = %(holding)s::text[]"
        " OR place_path = (%(holding)s::text[])[1:cardinality(place_path)]) ORDER BY started_at",
        {"place": place, "depth": len(holding), "holding": list(holding)},
    )
    return _models(PlaceOutage, cur)
