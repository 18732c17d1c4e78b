"""The device registry: devices and places in PostgreSQL, every change on the ``devices`` topic.

Streams never query the database per reading: they keep the compacted ``devices`` topic in a
table. The registry publishes a device after its database transaction committed and waits for
Kafka to confirm, so the topic never holds a device the database does not.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Producer
from pydantic import ValidationError

from cityvitals.contracts import Device, DeviceState, Place, PlaceLevel, ReadingBatch
from cityvitals.kafka import KafkaUnavailable, partition_count
from cityvitals.settings import Settings
from cityvitals.topics import Topic, partition_for
from device_registry.credentials import BrokerFiles, hash_secret, new_secret

__all__ = [
    "CSV_COLUMNS",
    "DeviceExists",
    "ImportReport",
    "Registry",
    "RowError",
    "UnknownDevice",
    "parse_device_csv",
]

CSV_COLUMNS = (
    "device_id",
    "device_type",
    "place_path",
    "department",
    "tags",
    "lat",
    "lon",
    "state",
)


class DeviceExists(ValueError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is already registered")
        self.device_id = device_id


class UnknownDevice(LookupError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is not registered")
        self.device_id = device_id


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass
class ImportReport:
    added: list[tuple[str, str]] = field(default_factory=list)
    """(device id, MQTT secret) of each device added; secrets are not stored in clear."""
    errors: list[RowError] = field(default_factory=list)


def parse_device_csv(text: str, now: datetime) -> tuple[list[Device], list[RowError]]:
    """CSV rows to devices; a bad row is reported by line and field and the rest are kept.

    ``place_path`` is the ids from the city down, separated by ``/``; ``tags`` by ``;``.
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [
        c for c in ("device_id", "device_type", "place_path") if c not in (reader.fieldnames or [])
    ]
    if missing:
        return [], [RowError(1, ",".join(missing), "required column missing from the header")]
    devices, errors = [], []
    for row in reader:
        line = reader.line_num
        extra = row.pop(None, None)
        if extra:
            errors.append(RowError(line, "row", f"{len(extra)} more fields than the header"))
            continue
        data: dict[str, Any] = {
            k: v for k, v in row.items() if k in CSV_COLUMNS and v not in ("", None)
        }
        unknown = sorted(set(row) - set(CSV_COLUMNS))
        if unknown:
            errors.append(RowError(line, unknown[0], "unknown column"))
            continue
        data["place_path"] = tuple(p for p in data.get("place_path", "").split("/") if p)
        if "tags" in data:
            data["tags"] = tuple(t.strip() for t in data["tags"].split(";") if t.strip())
        try:
            devices.append(Device(updated_at=now, **data))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            name = ".".join(str(p) for p in err["loc"]) or "row"
            errors.append(RowError(line, name, f"{err['msg']} (got {err.get('input')!r:.60})"))
    return devices, errors


def _device(row: Sequence[Any]) -> Device:
    device_id, device_type, place_path, state, department, tags, lat, lon, updated_at = row
    return Device(
        device_id=device_id,
        device_type=device_type,
        place_path=tuple(place_path),
        state=state,
        department=department,
        tags=tuple(tags),
        lat=lat,
        lon=lon,
        updated_at=updated_at,
    )


class Registry:
    SELECT = (
        "SELECT device_id, device_type, place_path, state, department, tags, lat, lon, updated_at "
        "FROM devices"
    )

    def __init__(
        self,
        settings: Settings,
        conn: psycopg.Connection[tuple[Any, ...]],
        producer: Producer,
        broker: BrokerFiles | None,
    ) -> None:
        self.settings = settings
        self.conn = conn
        self.producer = producer
        self.broker = broker
        self._topic = settings.topic(Topic.DEVICES)
        self._raw = settings.topic(Topic.READINGS_RAW)

    def close(self) -> None:
        self.producer.flush(30)
        self.conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- publishing -----------------------------------------------------------------------

    def publish(self, devices: Iterable[Device]) -> int:
        """Send device changes and wait for Kafka to confirm them.

        Each goes to the compacted ``devices`` topic (the change feed) and, in-band, to its
        partition of ``readings.raw``, so the stream applies it before any later reading.
        """
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        parts = partition_count(self.producer, self._raw)
        in_band: dict[int, list[Device]] = defaultdict(list)
        count = 0
        for device in devices:
            partition = partition_for(device.device_id, parts)
            self.producer.produce(
                self._topic,
                device.model_dump_json().encode(),
                key=device.device_id.encode(),
                partition=partition,
                on_delivery=delivered,
            )
            in_band[partition].append(device)
            count += 1
            if count % 10_000 == 0:
                self.producer.poll(0)
        for partition, group in in_band.items():
            for start in range(0, len(group), 1000):
                batch = ReadingBatch(devices=tuple(group[start : start + 1000]))
                self.producer.produce(
                    self._raw,
                    batch.model_dump_json().encode(),
                    partition=partition,
                    on_delivery=delivered,
                )
        left = self.producer.flush(30)
        if failures or left:
            raise KafkaUnavailable(
                self.settings.kafka_bootstrap,
                f"{left + len(failures)} device updates unconfirmed: {failures[:3]}",
            )
        return count

    def publish_all(self) -> int:
        return self.publish(self.list())

    def _sync_broker(self) -> None:
        if self.broker is None:
            return
        rows = self.conn.execute(
            "SELECT username, password_hash FROM mqtt_credentials WHERE enabled"
        ).fetchall()
        self.broker.apply((str(u), str(h)) for u, h in rows)

    # --- places ---------------------------------------------------------------------------

    def add_places(self, places: Iterable[Place]) -> None:
        with self.conn.transaction():
            self.conn.cursor().executemany(
                "INSERT INTO places (place_id, level, name, path, lat, lon) VALUES (%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (place_id) DO UPDATE SET name = EXCLUDED.name, path = EXCLUDED.path, "
                "level = EXCLUDED.level, lat = EXCLUDED.lat, lon = EXCLUDED.lon, updated_at = now()",
                [(p.place_id, p.level.value, p.name, list(p.path), p.lat, p.lon) for p in places],
            )

    def _ensure_places(self, paths: Iterable[tuple[str, ...]]) -> None:
        prefixes = {path[: i + 1] for path in paths for i in range(len(path))}
        rows = [
            (prefix[-1], list(PlaceLevel)[len(prefix) - 1].value, prefix[-1], list(prefix))
            for prefix in sorted(prefixes, key=len)
        ]
        self.conn.cursor().executemany(
            "INSERT INTO places (place_id, level, name, path) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (place_id) DO NOTHING",
            rows,
        )

    # --- devices --------------------------------------------------------------------------

    def add_many(self, devices: Sequence[Device]) -> list[tuple[str, str]]:
        """Register new devices and issue each an MQTT secret; returns (device id, secret)."""
        issued = [(d.device_id, new_secret()) for d in devices]
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                self._ensure_places(d.place_path for d in devices)
                cur.executemany(
                    "INSERT INTO devices (device_id, device_type, place_path, state, department, "
                    "tags, lat, lon, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    [
                        (
                            d.device_id,
                            d.device_type,
                            list(d.place_path),
                            d.state.value,
                            d.department,
                            list(d.tags),
                            d.lat,
                            d.lon,
                            d.updated_at,
                        )
                        for d in devices
                    ],
                )
                cur.executemany(
                    "INSERT INTO mqtt_credentials (username, password_hash, role, enabled) "
                    "VALUES (%s, %s, 'device', %s) ON CONFLICT (username) DO UPDATE SET "
                    "password_hash = EXCLUDED.password_hash, enabled = EXCLUDED.enabled, updated_at = now()",
                    [
                        (device_id, hash_secret(secret), d.state is DeviceState.ACTIVE)
                        for (device_id, secret), d in zip(issued, devices, strict=True)
                    ],
                )
        except psycopg.errors.UniqueViolation as exc:
            detail = exc.diag.message_detail or ""
            taken = detail.split("=(")[-1].split(")")[0] if "=(" in detail else "?"
            raise DeviceExists(taken) from exc
        self.publish(devices)  # before the broker accepts the device: its readings come after
        self._sync_broker()
        return issued

    def add(self, device: Device) -> str:
        return self.add_many([device])[0][1]

    def import_csv(self, text: str, chunk: int = 1000) -> ImportReport:
        """Import devices from CSV; bad rows and already registered ids are reported, not fatal."""
        devices, errors = parse_device_csv(text, datetime.now(UTC))
        report = ImportReport(errors=errors)
        existing = {
            str(r[0])
            for r in self.conn.execute(
                "SELECT device_id FROM devices WHERE device_id = ANY(%s)",
                ([d.device_id for d in devices],),
            )
        }
        fresh: dict[str, Device] = {}
        for i, d in enumerate(devices):
            if d.device_id in existing or d.device_id in fresh:
                report.errors.append(
                    RowError(i + 2, "device_id", f"{d.device_id!r} is already registered")
                )
            else:
                fresh[d.device_id] = d
        todo = list(fresh.values())
        for start in range(0, len(todo), chunk):
            report.added.extend(self.add_many(todo[start : start + chunk]))
        report.errors.sort(key=lambda e: e.line)
        return report

    def rotate_secrets(self, device_ids: Sequence[str]) -> list[tuple[str, str]]:
        """Issue new MQTT secrets (the old ones stop working at once); returns (id, secret)."""
        issued = [(device_id, new_secret()) for device_id in device_ids]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "UPDATE mqtt_credentials SET password_hash = %s, updated_at = now() "
                "WHERE username = %s AND role = 'device'",
                [(hash_secret(secret), device_id) for device_id, secret in issued],
            )
            if cur.rowcount != len(issued):
                raise UnknownDevice(", ".join(device_ids))
        self._sync_broker()
        return issued

    def set_state(self, device_id: str, state: DeviceState) -> Device:
        """Move a device through its lifecycle; only an active device may connect."""
        with self.conn.transaction():
            row = self.conn.execute(
                "UPDATE devices SET state = %s, updated_at = now() WHERE device_id = %s "
                "RETURNING device_id, device_type, place_path, state, department, tags, lat, lon, updated_at",
                (state.value, device_id),
            ).fetchone()
            if row is None:
                raise UnknownDevice(device_id)
            self.conn.execute(
                "UPDATE mqtt_credentials SET enabled = %s, updated_at = now() WHERE username = %s",
                (state is DeviceState.ACTIVE, device_id),
            )
        device = _device(row)
        self.publish([device])
        self._sync_broker()
        return device

    def get(self, device_id: str) -> Device:
        row = self.conn.execute(f"{self.SELECT} WHERE device_id = %s", (device_id,)).fetchone()
        if row is None:
            raise UnknownDevice(device_id)
        return _device(row)

    def list(
        self,
        place: str | None = None,
        state: DeviceState | None = None,
        device_type: str | None = None,
    ) -> list[Device]:
        where, params = ["true"], []
        if place is not None:
            where.append("%s = ANY(place_path)")
            params.append(place)
        if state is not None:
            where.append("state = %s")
            params.append(state.value)
        if device_type is not None:
            where.append("device_type = %s")
            params.append(device_type)
        query = f"{self.SELECT} WHERE {' AND '.join(where)} ORDER BY device_id"
        return [_device(r) for r in self.conn.execute(query.encode(), params)]

    def set_service_credential(self, username: str, secret: str) -> None:
        """The gateway's own MQTT login (role 'service', reads every device topic)."""
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO mqtt_credentials (username, password_hash, role) VALUES (%s, %s, 'service') "
                "ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, "
                "enabled = true, updated_at = now()",
                (username, hash_secret(secret)),
            )
        self._sync_broker()
