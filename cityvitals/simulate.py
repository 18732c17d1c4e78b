"""A synthetic city that publishes realistic readings over MQTT, one connection per device.

The city is a full five-level tree: one city, districts, streets, grids, and a building per
grid; every grid has air-quality, waterlogging, traffic, noise, manhole, gas and power sensors
and a camera. Values follow a daily cycle with noise from a fixed seed, and incidents can be
injected (a flood in one grid, smog, a fire seen by a camera, congestion, a gas leak).
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.contracts import Device, Place, PlaceLevel
from cityvitals.settings import Settings

__all__ = ["INCIDENTS", "City", "Incident", "Simulator", "build_city", "sample"]

log = logging.getLogger("cityvitals.simulate")

SENSOR_KINDS = (
    "air_quality",
    "water_level",
    "traffic",
    "noise",
    "manhole",
    "gas",
    "power",
    "camera",
)
DEPARTMENTS = {
    "air_quality": "environment",
    "water_level": "water",
    "traffic": "traffic",
    "noise": "environment",
    "manhole": "city_management",
    "gas": "emergency",
    "power": "utilities",
    "camera": "city_management",
}
INCIDENTS = ("flood", "smog", "fire", "congestion", "gas")
_INCIDENT_KIND = {
    "flood": "water_level",
    "smog": "air_quality",
    "fire": "camera",
    "congestion": "traffic",
    "gas": "gas",
}


@dataclass(frozen=True)
class City:
    places: tuple[Place, ...]
    devices: tuple[Device, ...]

    def kind_of(self, device_id: str) -> str:
        return next(d.device_type for d in self.devices if d.device_id == device_id)


def build_city(districts: int = 3, streets: int = 2, grids: int = 2, prefix: str = "sim") -> City:
    """The tree and its devices; the same arguments always give the same city."""
    now = datetime.now(UTC)
    city = Place(
        place_id=prefix,
        level=PlaceLevel.CITY,
        name="Simulated City",
        path=(prefix,),
        lat=31.23,
        lon=121.47,
    )
    places, devices = [city], []
    for d in range(1, districts + 1):
        d_id = f"{prefix}-d{d}"
        places.append(
            Place(
                place_id=d_id, level=PlaceLevel.DISTRICT, name=f"District {d}", path=(prefix, d_id)
            )
        )
        for s in range(1, streets + 1):
            s_id = f"{d_id}-s{s}"
            places.append(
                Place(
                    place_id=s_id,
                    level=PlaceLevel.STREET,
                    name=f"Street {d}.{s}",
                    path=(prefix, d_id, s_id),
                )
            )
            for g in range(1, grids + 1):
                g_id = f"{s_id}-g{g}"
                g_path = (prefix, d_id, s_id, g_id)
                lat, lon = 31.1 + d * 0.05 + g * 0.004, 121.3 + s * 0.05 + g * 0.004
                places.append(
                    Place(
                        place_id=g_id,
                        level=PlaceLevel.GRID,
                        name=f"Grid {d}.{s}.{g}",
                        path=g_path,
                        lat=lat,
                        lon=lon,
                    )
                )
                b_id = f"{g_id}-b1"
                places.append(
                    Place(
                        place_id=b_id,
                        level=PlaceLevel.BUILDING,
                        name=f"Building {d}.{s}.{g}.1",
                        path=(*g_path, b_id),
                    )
                )
                for kind in SENSOR_KINDS:
                    # Power meters sit in the building; the rest watch the grid's streets.
                    path = (*g_path, b_id) if kind == "power" else g_path
                    devices.append(
                        Device(
                            device_id=f"{prefix}-{kind.replace('_', '')}-d{d}s{s}g{g}",
                            device_type=kind,
                            place_path=path,
                            department=DEPARTMENTS[kind],
                            lat=lat,
                            lon=lon,
                            updated_at=now,
                            tags=("simulated",),
                        )
                    )
    return City(tuple(places), tuple(devices))


@dataclass(frozen=True)
class Incident:
    """An injected problem: ``kind`` at the grid ``place_id``, from ``start`` for ``duration`` s."""

    kind: str
    place_id: str
    start: float
    duration: float

    def strength(self, elapsed: float) -> float:
        """0 → 1 → 0: rises over the first third, holds, falls over the last third."""
        t = (elapsed - self.start) / self.duration
        if t <= 0 or t >= 1:
            return 0.0
        return min(1.0, 3 * t, 3 * (1 - t))


def sample(
    kind: str, rng: random.Random, hour: float, incident: float
) -> dict[str, float] | tuple[str, float, float]:
    """One reading's values for a sensor kind (or a camera event's type, value, confidence)."""
    day = math.sin((hour - 8) / 24 * 2 * math.pi)  # peaks in the afternoon
    rush = math.exp(-((hour - 8.5) ** 2) / 2) + math.exp(-((hour - 18) ** 2) / 2)
    g = rng.gauss
    if kind == "air_quality":
        pm25 = max(1.0, 38 + 12 * day + g(0, 5) + 180 * incident)
        return {
            "pm25": round(pm25, 1),
            "pm10": round(pm25 * 1.6 + g(0, 6), 1),
            "no2": round(max(1.0, 35 + 15 * rush + g(0, 4)), 1),
            "o3": round(max(1.0, 70 + 40 * day + g(0, 8)), 1),
        }
    if kind == "water_level":
        return {"water_level_cm": round(max(0.0, g(0.3, 0.3) + 45 * incident), 1)}
    if kind == "traffic":
        speed = max(3.0, 42 - 14 * rush + g(0, 3) - 32 * incident)
        return {
            "speed_kmh": round(speed, 1),
            "occupancy": round(
                min(1.0, max(0.0, 0.15 + 0.3 * rush + g(0, 0.03) + 0.6 * incident)), 3
            ),
        }
    if kind == "noise":
        return {"laeq_db": round(56 + 6 * rush + 3 * day + g(0, 1.5), 1)}
    if kind == "manhole":
        return {"tilt_deg": round(abs(g(0.4, 0.2)), 2)}
    if kind == "gas":
        return {"gas_lel_pct": round(max(0.0, g(1.0, 0.5) + 40 * incident), 1)}
    if kind == "power":
        return {"load_kw": round(max(0.0, 320 + 120 * day + g(0, 15)), 1)}
    if incident > 0:
        return (
            "smoke_fire",
            round(min(1.0, 0.4 + 0.6 * incident), 2),
            round(min(0.99, 0.6 + 0.4 * incident), 2),
        )
    return (
        "crowd_density",
        round(max(0.0, 0.3 + 0.3 * rush + g(0, 0.05)), 2),
        round(0.9 + g(0, 0.02), 2),
    )


@dataclass
class Simulator:
    settings: Settings
    city: City
    secrets: dict[str, str]
    seed: int = 42
    interval: float = 5.0
    incidents: Sequence[Incident] = ()
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    published: int = 0
    confirmed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self, device_id: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sim-{device_id}", clean_session=False
        )
        client.username_pw_set(device_id, self.secrets[device_id])
        client.max_queued_messages_set(10_000)

        def on_publish(*_: object) -> None:
            with self._lock:
                self.confirmed += 1

        client.on_publish = on_publish
        client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        client.loop_start()
        return client

    def _incident_strength(self, device: Device, elapsed: float) -> float:
        return max(
            (
                i.strength(elapsed)
                for i in self.incidents
                if i.place_id in device.place_path and _INCIDENT_KIND[i.kind] == device.device_type
            ),
            default=0.0,
        )

    def run(self, stop: threading.Event, duration: float | None = None) -> None:
        rng = random.Random(self.seed)
        root = self.settings.mqtt_topic_root
        clients = {d.device_id: self._client(d.device_id) for d in self.city.devices}
        seqs = dict.fromkeys(clients, 0)
        started = time.monotonic()
        try:
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if duration is not None and elapsed >= duration:
                    break
                now = self.clock()
                hour = now.hour + now.minute / 60
                for device in self.city.devices:
                    values = sample(
                        device.device_type, rng, hour, self._incident_strength(device, elapsed)
                    )
                    seqs[device.device_id] += 1
                    base = {"ts": now.isoformat(), "seq": seqs[device.device_id]}
                    if isinstance(values, dict):
                        topic, body = (
                            f"{root}/{device.device_id}/readings",
                            {**base, "values": values},
                        )
                    else:
                        event_type, value, confidence = values
                        topic = f"{root}/{device.device_id}/events"
                        body = {
                            **base,
                            "event_type": event_type,
                            "value": value,
                            "confidence": confidence,
                            "snapshot_ref": f"snapshots/{device.device_id}/{seqs[device.device_id]}.jpg",
                        }
                    clients[device.device_id].publish(topic, json.dumps(body), qos=1)
                    self.published += 1
                stop.wait(max(0.0, self.interval - (time.monotonic() - started - elapsed)))
        finally:
            deadline = time.monotonic() + 10
            while self.confirmed < self.published and time.monotonic() < deadline:
                time.sleep(0.05)
            for client in clients.values():
                client.loop_stop()
                client.disconnect()
