"""A synthetic city that publishes realistic readings over MQTT, one connection per device.

The city is a full five-level tree: one city, districts, streets, grids, and a building per
grid; every grid has air-quality, waterlogging, traffic, noise, manhole, gas and power sensors
and a camera (:mod:`wiring.simulate.city`). Values follow a daily cycle with noise from a fixed
seed, and incidents can be injected (a flood in one grid, smog, a fire seen by a camera,
congestion, a gas leak: :mod:`wiring.simulate.incidents`). The simulator
(:mod:`wiring.simulate.publisher`) sends the model's messages.
"""

from wiring.simulate.city import City, CityModel, Message, build_city, plan_incidents, sample
from wiring.simulate.incidents import (
    FLOOD_PEAK_CM,
    INCIDENT_AFTER_S,
    INCIDENT_SPACING_S,
    INCIDENTS,
    SHAPES,
    Incident,
    IncidentSpecError,
    Shape,
)
from wiring.simulate.publisher import INTERVAL_S, Simulator

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
