"""The gateway's MQTT client and its Kafka messages, without a broker."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from ingest.gateway import MqttClient, split


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


@given(st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=60), st.integers(1, 400))
def test_a_group_is_split_in_order_into_messages_that_fit(items: list[bytes], limit: int) -> None:
    parts = list(split(items, b"|".join, limit))
    assert [i for part, _ in parts for i in part] == items  # each once, in order
    for part, message in parts:
        assert message == b"|".join(part)
        assert len(message) <= limit or len(part) == 1
    if len(b"|".join(items)) <= limit:
        assert len(parts) == 1
