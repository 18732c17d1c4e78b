"""A dead letter's key is what it is about (sinks.postgres.letter_key): the same refusal
received twice has one key; a letter that differs in stage, source, device, reason or bytes
has its own; the gateway's letters (MQTT inputs, which nothing tells apart) have none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cityvitals.contracts import DeadLetter
from cityvitals.stage import dead_letter
from sinks.postgres import letter_key

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def letter(**changes: object) -> DeadLetter:
    base = dead_letter(
        "streams",
        "unknown device aq-1",
        b'{"seq": 7}',
        "readings.raw[2]",
        cause="unknown_device",
        device_id="aq-1",
    )
    return base.model_copy(update={"received_at": T0, **changes})


def test_the_same_refusal_received_again_has_the_same_key() -> None:
    assert letter_key(letter(received_at=T0 + timedelta(minutes=3))) == letter_key(letter())


def test_a_letter_about_something_else_has_another_key() -> None:
    others = [
        letter(stage="incidents"),
        letter(source="readings.raw[3]"),
        letter(device_id="aq-2"),
        letter(device_id=None),
        letter(reason="out of range"),  # e.g. the same alert failing at a second URL
        letter(payload_b64="eyJzZXEiOiA4fQ=="),
    ]
    keys = {letter_key(other) for other in others}
    assert len(keys) == len(others)
    assert letter_key(letter()) not in keys


def test_fields_do_not_run_into_each_other() -> None:
    assert letter_key(letter(stage="streams", source="ab", device_id="c")) != letter_key(
        letter(stage="streams", source="a", device_id="bc")
    )


def test_a_gateway_letter_has_no_key() -> None:
    """A device may publish the same bad bytes twice: two inputs, two rows."""
    assert letter_key(letter(stage="ingest", source="cityvitals/aq-1/readings")) is None
