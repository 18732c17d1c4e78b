"""The simulator: every device of the simulated city on its own MQTT connection, publishing
the :class:`~wiring.simulate.city.CityModel`'s messages each round."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.settings import Settings
from wiring.simulate.city import City, CityModel
from wiring.simulate.incidents import Incident

__all__ = ["INTERVAL_S", "Simulator"]


INTERVAL_S = 5.0
"""Seconds between a device's readings (``up --interval``)."""


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
        model = CityModel(self.city, self.incidents, self.seed, self.settings.zone)
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
