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

__all__ = [
    "FLOOD_PEAK_CM",
    "INCIDENTS",
    "INCIDENT_AFTER_S",
    "INCIDENT_SPACING_S",
    "INTERVAL_S",
    "SHAPES",
    "City",
    "CityModel",
    "Incident",
    "IncidentSpecError",
    "Message",
    "Shape",
    "Simulator",
    "build_city",
    "plan_incidents",
    "sample",
]

log = logging.getLogger("wiring.simulate")

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
class Shape:
    """How an incident kind unfolds: seconds to build up, to hold at its worst, to ease off."""

    rise: float
    hold: float
    fall: float

    @property
    def duration(self) -> float:
        return self.rise + self.hold + self.fall


SHAPES = {
    # Water rises 2.25 cm/min for 20 min to 45 cm: past every depth level, still rising when
    # the rate rule has the 7.5 minutes of readings it needs to judge a rate over 15 minutes.
    "flood": Shape(rise=20 * 60, hold=5 * 60, fall=10 * 60),
    "smog": Shape(rise=2 * 60, hold=6 * 60, fall=2 * 60),
    # The camera's smoke score and the grid's gas sensor rise together (the composite rule
    # wants them within 5 minutes of each other).
    "fire": Shape(rise=60, hold=4 * 60, fall=60),
    # Congestion must hold 5 minutes before its rule fires.
    "congestion": Shape(rise=2 * 60, hold=8 * 60, fall=2 * 60),
    "gas": Shape(rise=60, hold=3 * 60, fall=60),
}
"""Each incident kind's course, long enough for the rules of ``rules/default.yaml`` that
watch it."""

_AFFECTS: dict[str, dict[str, float]] = {
    "flood": {"water_level": 1.0},
    "smog": {"air_quality": 1.0},
    "fire": {"camera": 1.0, "gas": 0.45},  # a fire's combustible gases: ~19 %LEL at worst
    "congestion": {"traffic": 1.0},
    "gas": {"gas": 1.0},
}
"""The device types of its grid an incident kind moves, and how strongly."""


@dataclass(frozen=True)
class Incident:
    """An injected problem: ``kind`` at the grid ``place_id``, from ``start`` s after the
    simulator starts, following the kind's :data:`SHAPES`."""

    kind: str
    place_id: str
    start: float

    @property
    def shape(self) -> Shape:
        return SHAPES[self.kind]

    @property
    def duration(self) -> float:
        return self.shape.duration

    def strength(self, elapsed: float) -> float:
        """0 → 1 → 0: rises linearly, holds at 1, falls linearly."""
        t, shape = elapsed - self.start, self.shape
        if t <= 0 or t >= shape.duration:
            return 0.0
        if t < shape.rise:
            return t / shape.rise
        if t <= shape.rise + shape.hold:
            return 1.0
        return (shape.duration - t) / shape.fall

    def strength_for(self, device: Device, elapsed: float) -> float:
        """The incident's strength as ``device`` sees it (0 outside its grid or kind)."""
        weight = _AFFECTS[self.kind].get(device.device_type, 0.0)
        if not weight or self.place_id not in device.place_path:
            return 0.0
        return weight * self.strength(elapsed)


FLOOD_PEAK_CM = 45.0
"""How deep a flood's water stands at its worst: past the red waterlogging level (40 cm)."""
INTERVAL_S = 5.0
"""Seconds between a device's readings (``up --interval``)."""
INCIDENT_AFTER_S = 20.0
"""Seconds from the simulator's start to the first incident (``up --incident-after``)."""
INCIDENT_SPACING_S = 30.0
"""Seconds between the starts of successive incidents of one run."""


class IncidentSpecError(ValueError):
    """An ``--incident KIND[@GRID]`` that names no incident kind or no grid of the city."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(f"--incident {spec!r}: {reason}")
        self.spec = spec
        self.reason = reason


def plan_incidents(city: City, specs: Sequence[str], after: float) -> list[Incident]:
    """``KIND[@GRID]`` specs as incidents: the first ``after`` s in, the next every
    :data:`INCIDENT_SPACING_S`; a spec without a grid takes the city's next grid."""
    grids = [p.place_id for p in city.places if p.level is PlaceLevel.GRID]
    planned = []
    for i, spec in enumerate(specs):
        kind, _, place = spec.partition("@")
        if kind not in INCIDENTS:
            raise IncidentSpecError(spec, f"kind must be one of {', '.join(INCIDENTS)}")
        place = place or grids[i % len(grids)]
        if place not in grids:
            raise IncidentSpecError(spec, f"{place!r} is not a grid of the simulated city")
        planned.append(Incident(kind, place, start=after + INCIDENT_SPACING_S * i))
    return planned


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
        return {"water_level_cm": round(max(0.0, g(0.3, 0.3) + FLOOD_PEAK_CM * incident), 1)}
    if kind == "traffic":
        speed = max(3.0, 42 - 14 * rush + g(0, 2) - 32 * incident)
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


@dataclass(frozen=True)
class Message:
    """One MQTT message of a simulated device: ``topic`` under the topic root, and its body."""

    device: Device
    topic: str
    body: dict[str, object]


@dataclass
class CityModel:
    """The values the simulated city reports: pure, so a test can run it in event time."""

    city: City
    incidents: Sequence[Incident] = ()
    seed: int = 42
    _rng: random.Random = field(init=False)
    _seqs: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def strength(self, device: Device, elapsed: float) -> float:
        return max((i.strength_for(device, elapsed) for i in self.incidents), default=0.0)

    def messages(self, elapsed: float, now: datetime) -> list[Message]:
        """Every device's message of the round ``elapsed`` s after the start, stamped ``now``."""
        hour = now.hour + now.minute / 60
        out = []
        for device in self.city.devices:
            values = sample(device.device_type, self._rng, hour, self.strength(device, elapsed))
            seq = self._seqs[device.device_id] = self._seqs.get(device.device_id, 0) + 1
            base: dict[str, object] = {"ts": now.isoformat(), "seq": seq}
            if isinstance(values, dict):
                out.append(
                    Message(device, f"{device.device_id}/readings", {**base, "values": values})
                )
                continue
            event_type, value, confidence = values
            body = {
                **base,
                "event_type": event_type,
                "value": value,
                "confidence": confidence,
                "snapshot_ref": f"snapshots/{device.device_id}/{seq}.jpg",
            }
            out.append(Message(device, f"{device.device_id}/events", body))
        return out


@dataclass
class Simulator:
    settings: Settings
    city: City
    secrets: dict[str, str]
    seed: int = 42
    interval: float = INTERVAL_S
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

    def run(self, stop: threading.Event, duration: float | None = None) -> None:
        model = CityModel(self.city, self.incidents, self.seed)
        root = self.settings.mqtt_topic_root
        clients = {d.device_id: self._client(d.device_id) for d in self.city.devices}
        started = time.monotonic()
        try:
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if duration is not None and elapsed >= duration:
                    break
                for message in model.messages(elapsed, self.clock()):
                    client = clients[message.device.device_id]
                    client.publish(f"{root}/{message.topic}", json.dumps(message.body), qos=1)
                    self.published += 1
                stop.wait(max(0.0, self.interval - (time.monotonic() - started - elapsed)))
        finally:
            deadline = time.monotonic() + 10
            while self.confirmed < self.published and time.monotonic() < deadline:
                time.sleep(0.05)
            for client in clients.values():
                client.loop_stop()
                client.disconnect()
