"""MQTT → Kafka gateway: decode device payloads, forward in partition batches, ack after Kafka."""

from ingest.decode import DecodeError, decode, device_of_topic, publisher_of_topic
from ingest.gateway import Gateway, GatewayError, GatewayMetrics

__all__ = [
    "DecodeError",
    "Gateway",
    "GatewayError",
    "GatewayMetrics",
    "decode",
    "device_of_topic",
    "publisher_of_topic",
]
