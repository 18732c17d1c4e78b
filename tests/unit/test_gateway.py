"""The gateway's MQTT client: what it writes to the broker, without a broker."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.gateway import MqttClient


def queued(client: mqtt.Client) -> bytes:
    """What the client has queued for the broker (it has no connection, so nothing left)."""
    return b"".join(bytes(p["packet"][p["pos"] :]) for p in client._out_packet)  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_acknowledging_many_writes_the_packets_paho_writes_for_each(protocol: int) -> None:
    mids = [1, 2, 255, 256, 4000, 65535]
    one_by_one = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    for mid in mids:
        one_by_one.ack(mid, 1)
    together = MqttClient(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    together.ack_all(mids)
    assert len(together._out_packet) == 1  # type: ignore[attr-defined]
    assert queued(together) == queued(one_by_one) and len(queued(together)) == 4 * len(mids)


def test_acknowledging_none_writes_nothing() -> None:
    client = MqttClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.ack_all([])
    assert queued(client) == b""
