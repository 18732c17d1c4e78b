"""Camera events carry no faces, plates or people: a payload with such a field is refused by
the decoder, naming the field (the gateway then dead-letters it: tests/integration/
test_privacy.py), and the contracts have no field that could hold one."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cityvitals.contracts import CameraEvent, CameraEventPayload
from ingest import DecodeError, decode

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
EVENT = {"ts": "2026-11-22T08:00:00Z", "seq": 1, "event_type": "illegal_parking", "value": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("face", "base64-of-a-face-crop"),
        ("plate", "B-AB 1234"),
        ("person_id", "p-77"),
        ("face_embedding", [0.1, 0.2]),
    ],
)
def test_a_camera_event_with_personal_data_is_refused_naming_the_field(
    field: str, value: object
) -> None:
    payload = json.dumps({**EVENT, "confidence": 0.9, field: value}).encode()
    with pytest.raises(DecodeError) as refused:
        decode("cityvitals", "cityvitals/cam-1/events", payload, NOW)
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: Extra inputs are not permitted")
    assert "p-77" not in str(refused.value) and "B-AB" not in str(refused.value)  # not repeated


def test_the_same_event_without_it_is_taken() -> None:
    payload = json.dumps({**EVENT, "confidence": 0.9}).encode()
    assert isinstance(decode("cityvitals", "cityvitals/cam-1/events", payload, NOW), CameraEvent)


def test_camera_contracts_have_no_field_for_a_person() -> None:
    words = ("face", "plate", "person", "name", "image", "licen")
    for model in (CameraEvent, CameraEventPayload):
        assert model.model_config.get("extra") == "forbid"
        assert not [f for f in model.model_fields if any(w in f for w in words)], model
