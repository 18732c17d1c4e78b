"""Camera events carry no faces or plates, end to end on real parts: a camera's event with a
personal field goes mosquitto_pub → Mosquitto → gateway, is refused there naming the field,
and lands in ``deadletters`` (not in ``camera_events``); the same event without it is stored."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import Pipeline, at, wait_for

pytestmark = pytest.mark.integration


def test_a_camera_event_with_a_face_a_plate_or_a_person_is_dead_lettered(
    pipeline: Pipeline,
) -> None:
    camera, secret = pipeline.register("camera")
    topic = pipeline.topic(camera, "events")
    event = {"event_type": "illegal_parking", "value": 1, "confidence": 0.9}
    personal = {"face": "face-crop-1", "plate": "B-AB 1234", "person_id": "p-77"}
    for seq, (field, value) in enumerate(personal.items(), start=1):
        body = {"ts": at(f"08:00:0{seq}"), "seq": seq, **event, field: value}
        assert pipeline.mosquitto_pub(camera, secret, topic, json.dumps(body)).returncode == 0
    clean = {"ts": at("08:00:09"), "seq": 9, **event}
    assert pipeline.mosquitto_pub(camera, secret, topic, json.dumps(clean)).returncode == 0

    letters = wait_for(
        lambda: (
            (
                r := pipeline.query(
                    "SELECT stage, reason, source FROM deadletters WHERE device_id = %s"
                    " ORDER BY reason",
                    camera,
                )
            )
            and len(r) == 3
            and r
        ),
        what="three dead letters",
    )
    assert [r[1].split(":")[0] for r in letters] == ["face", "person_id", "plate"]
    assert all("Extra inputs are not permitted" in r[1] for r in letters)
    assert {(r[0], r[2]) for r in letters} == {("ingest", topic)}
    stored = wait_for(
        lambda: pipeline.query(
            "SELECT seq, event_type FROM camera_events WHERE camera_id = %s", camera
        ),
        what="the clean event in camera_events",
    )
    assert stored == [(9, "illegal_parking")]  # only the event without personal data
