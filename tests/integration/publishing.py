"""Publishing many messages over MQTT (QoS 1) as one device, for the audit and fuzz tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.settings import Settings

IN_FLIGHT = 200
"""Unacknowledged QoS 1 messages at most (far below the broker's limits)."""


def publish_all(
    settings: Settings,
    user: str,
    secret: str,
    messages: Sequence[tuple[str, bytes]],
    timeout: float = 120.0,
) -> int:
    """Publish every (topic, payload) at QoS 1, in order; returns how many the broker
    acknowledged as accepted (MQTT 5 reason code below 0x80)."""
    accepted = 0
    acked = threading.Semaphore(0)
    connected = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            connected.set()

    def on_publish(_c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        nonlocal accepted
        accepted += 0 if reason.is_failure else 1
        acked.release()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"itest-pub-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(user, secret)
    client.on_connect, client.on_publish = on_connect, on_publish
    client.max_inflight_messages_set(IN_FLIGHT)
    client.reconnect_delay_set(0.2, 1)  # the broker reloads its password file after a registration
    deadline = time.monotonic() + timeout
    client.connect_async("127.0.0.1", settings.mqtt_port)
    client.loop_start()
    try:
        if not connected.wait(30):
            raise TimeoutError(f"{user} could not connect to MQTT")
        for i, (topic, payload) in enumerate(messages):
            waited = i < IN_FLIGHT or acked.acquire(timeout=max(deadline - time.monotonic(), 0.01))
            if not waited:  # bound what waits in paho's queue as well
                raise TimeoutError(f"broker acknowledged {i - IN_FLIGHT} of {len(messages)}")
            client.publish(topic, payload, qos=1)
        for _ in range(min(IN_FLIGHT, len(messages))):
            if not acked.acquire(timeout=max(deadline - time.monotonic(), 0.01)):
                raise TimeoutError(f"broker did not acknowledge all of {len(messages)}")
    finally:
        client.disconnect()
        client.loop_stop()
    return accepted


def login_answer(settings: Settings, user: str, secret: str, timeout: float = 5.0) -> int | None:
    """The broker's answer to ``user``'s login now (its CONNACK reason code: 0 takes it, 0x86
    bad user name or password, 0x87 not authorised), or None when none came: an MQTT 5
    connection that publishes nothing. A device registered a moment ago is refused until the
    broker has reloaded its password file (the registry signals it at once and again half a
    second later)."""
    answers: list[Any] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"itest-probe-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(user, secret)
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(reason)
    try:
        client.connect("127.0.0.1", settings.mqtt_port, keepalive=10)
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    while not answers and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    return int(answers[0].value) if answers else None
