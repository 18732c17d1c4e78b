"""The simulated city: a full five-level place tree with a sensor of every kind in each grid,
the values they report, and the incidents planned on its grids. Pure, so a test can run it in
event time: :class:`CityModel` gives each round's messages, :mod:`wiring.simulate` sends them.

Values follow a daily cycle with noise from a fixed seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from cityvitals.contracts import Device, Place, PlaceLevel
from wiring.simulate.incidents import (
    FLOOD_PEAK_CM,
    INCIDENT_SPACING_S,
    INCIDENTS,
    Incident,
    IncidentSpecError,
)

__all__ = ["City", "CityModel", "Message", "build_city", "plan_incidents", "sample"]

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
    "air_quality": "ecology-environment",
    "water_level": "water-affairs",
    "traffic": "traffic-police",
    "noise": "ecology-environment",
    "manhole": "city-management",
    "gas": "gas-utility",
    "power": "city-management",
    "camera": "city-management",
}
"""Who looks after each kind of device: departments of the shipped incident routing
(rules/incidents.yaml), which ``up`` registers, so no simulated device names one the
registry does not know."""


@dataclass(frozen=True)
class City:
    places: tuple[Place, ...]
    devices: tuple[Device, ...]

    def kind_of(self, device_id: str) -> str:
        return next(d.device_type for d in self.devices if d.device_id == device_id)


def build_city(districts: int = 3, streets: int = 2, grids: int = 2, prefix: str = "sim") -> City:
    """The tree and its devices; the same arguments always give the same city.

    >>> city = build_city(districts=1, streets=1, grids=1)
    >>> [p.level.value for p in city.places]
    ['city', 'district', 'street', 'grid', 'building']
    >>> len(city.devices) == len(SENSOR_KINDS)
    True
    """
    now = datetime.now(UTC)
    places = [_place(PlaceLevel.CITY, "Simulated City", (prefix,))]
    devices: list[Device] = []
    for d in range(1, districts + 1):
        d_path = (prefix, f"{prefix}-d{d}")
        places.append(_place(PlaceLevel.DISTRICT, f"District {d}", d_path))
        for s in range(1, streets + 1):
            s_path = (*d_path, f"{d_path[-1]}-s{s}")
            places.append(_place(PlaceLevel.STREET, f"Street {d}.{s}", s_path))
            for g in range(1, grids + 1):
                g_path = (*s_path, f"{s_path[-1]}-g{g}")
                lat, lon = 31.1 + d * 0.05 + g * 0.004, 121.3 + s * 0.05 + g * 0.004
                places.append(
                    _place(PlaceLevel.GRID, f"Grid {d}.{s}.{g}", g_path, lat=lat, lon=lon)
                )
                b_path = (*g_path, f"{g_path[-1]}-b1")
                places.append(_place(PlaceLevel.BUILDING, f"Building {d}.{s}.{g}.1", b_path))
                for kind in SENSOR_KINDS:
                    # Power meters sit in the building; the rest watch the grid's streets.
                    devices.append(
                        Device(
                            device_id=f"{prefix}-{kind.replace('_', '')}-d{d}s{s}g{g}",
                            device_type=kind,
                            place_path=b_path if kind == "power" else g_path,
                            department=DEPARTMENTS[kind],
                            lat=lat,
                            lon=lon,
                            updated_at=now,
                            tags=("simulated",),
                        )
                    )
    return City(tuple(_centred(places)), tuple(devices))


def _centred(places: list[Place]) -> list[Place]:
    """The places, each city, district and street at the mean point of its grids (a console
    map shows an incident of the district where its grids are)."""
    grids = [
        (p.path, p.lat, p.lon)
        for p in places
        if p.level is PlaceLevel.GRID and p.lat is not None and p.lon is not None
    ]
    out = []
    for place in places:
        under = [(lat, lon) for path, lat, lon in grids if path[: len(place.path)] == place.path]
        if place.level in (PlaceLevel.CITY, PlaceLevel.DISTRICT, PlaceLevel.STREET) and under:
            lat = round(sum(lat for lat, _ in under) / len(under), 6)
            lon = round(sum(lon for _, lon in under) / len(under), 6)
            place = place.model_copy(update={"lat": lat, "lon": lon})
        out.append(place)
    return out


def _place(
    level: PlaceLevel,
    name: str,
    path: tuple[str, ...],
    lat: float | None = None,
    lon: float | None = None,
) -> Place:
    """The place at the end of ``path``."""
    return Place(place_id=path[-1], level=level, name=name, path=path, lat=lat, lon=lon)


def plan_incidents(city: City, specs: Sequence[str], after: float) -> list[Incident]:
    """``KIND[@GRID]`` specs as incidents: the first ``after`` s in (negative: under way
    already), the next every :data:`INCIDENT_SPACING_S`; a spec without a grid takes the
    city's next grid. One that would be over before the simulator starts is refused."""
    grids = [p.place_id for p in city.places if p.level is PlaceLevel.GRID]
    planned = []
    for i, spec in enumerate(specs):
        kind, _, place = spec.partition("@")
        if kind not in INCIDENTS:
            raise IncidentSpecError(spec, f"kind must be one of {', '.join(INCIDENTS)}")
        place = place or grids[i % len(grids)]
        if place not in grids:
            raise IncidentSpecError(spec, f"{place!r} is not a grid of the simulated city")
        incident = Incident(kind, place, start=after + INCIDENT_SPACING_S * i)
        if incident.start + incident.duration <= 0:
            over = -(incident.start + incident.duration)
            raise IncidentSpecError(
                spec,
                f"it would be over {over:g} s before the simulator starts (its course "
                f"lasts {incident.duration:g} s; see --incident-after)",
            )
        planned.append(incident)
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
        # quieter at night with the traffic: about 44-47 dB(A), under the 55 night limit
        return {"laeq_db": round(50 + 8 * rush + 6 * day + g(0, 1.5), 1)}
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
    zone: tzinfo = UTC
    """The city's time zone: its days, rush hours and quiet nights are local."""
    _rng: random.Random = field(init=False)
    _seqs: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def strength(self, device: Device, elapsed: float) -> float:
        return max((i.strength_for(device, elapsed) for i in self.incidents), default=0.0)

    def messages(self, elapsed: float, now: datetime) -> list[Message]:
        """Every device's message of the round ``elapsed`` s after the start, stamped ``now``
        (its values by the local hour of the city's zone)."""
        local = now.astimezone(self.zone)
        hour = local.hour + local.minute / 60
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
