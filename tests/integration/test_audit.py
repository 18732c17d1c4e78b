"""``cityvitals audit`` on the running pipeline: a bounded mix of valid and refused readings,
published over MQTT, reconciles end to end and its figures are what was sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.conftest import Pipeline, reading, wait_for
from tests.integration.publishing import publish_all

VALID, BAD_AT_GATEWAY, BAD_AT_STREAM = 30, 6, 4


def run_audit(pipeline: Pipeline, *args: str) -> tuple[int, dict[str, Any]]:
    """``cityvitals audit --json ARGS``."""
    done = pipeline.cli("audit", "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_audit_reconciles_what_was_published(pipeline: Pipeline) -> None:
    device, secret = pipeline.register()
    topic = pipeline.topic(device)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    valid = [
        reading((start + timedelta(seconds=i)).isoformat(), i, water_level_cm=10 + i)
        for i in range(VALID)
    ]
    at_gateway = [b"{not json", b'{"ts": 1}', b"\xff\xfe", b'{"values": NaN}', b"[]", b'"x"']
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    at_stream = [reading(future, 1000 + i, water_level_cm=1) for i in range(BAD_AT_STREAM)]
    assert len(at_gateway) == BAD_AT_GATEWAY
    messages = [(topic, m.encode()) for m in valid]
    messages += [(topic, m) for m in at_gateway] + [(topic, m.encode()) for m in at_stream]
    published = len(messages)

    _, before = run_audit(pipeline)
    since = datetime.now(UTC).isoformat()
    assert publish_all(pipeline.settings, device, secret, messages) == published
    wait_for(lambda: len(pipeline.rows(device)) == VALID, what=f"{VALID} readings stored")

    code, after = run_audit(
        pipeline, "--since", since, "--published", str(published), "--wait", "30"
    )
    assert code == 0, [line for line in after["lines"] if line["ok"] is False]

    def delta(stage: str, figure: str) -> int:
        return int(after["hops"][stage][figure] - before["hops"][stage][figure])

    assert delta("ingest", "received") == published
    assert delta("ingest", "forwarded") == VALID + BAD_AT_STREAM
    assert delta("ingest", "refused") == BAD_AT_GATEWAY
    assert delta("streams", "forwarded") == VALID
    assert delta("streams", "refused") == BAD_AT_STREAM
    window = after["database_window"]
    assert (window["readings"], window["camera_events"]) == (VALID, 0)
    assert window["deadletters"] == {"ingest": BAD_AT_GATEWAY, "streams": BAD_AT_STREAM}
    assert window["device_deadletters"] == BAD_AT_GATEWAY + BAD_AT_STREAM
    (line,) = [line for line in after["lines"] if line["check"].startswith("published")]
    assert (line["left"], line["right"], line["ok"]) == (published, published, True)


def test_audit_names_a_gap_when_more_was_published_than_arrived(pipeline: Pipeline) -> None:
    code, report = run_audit(pipeline, "--since", datetime.now(UTC).isoformat(), "--published", "3")
    assert code == 1
    (line,) = [line for line in report["lines"] if line["check"].startswith("published")]
    assert line["gap"] == 3 and "neither stored nor dead-lettered" in line["detail"]
