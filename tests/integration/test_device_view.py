"""One device for a person checking on it, through the running pipeline: what it sent over
MQTT, each metric's newest value, what of it was refused (at the gateway and in the stream)
and its alerts, in ``GET /devices/{id}/activity`` and ``cityvitals devices show``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from device_registry.access import Role
from tests.integration.conftest import Pipeline, add_user, api_client, reading, wait_for
from wiring.cli import app as cli_app

pytestmark = pytest.mark.integration


def test_a_device_view_shows_what_it_sent_what_was_refused_and_its_alerts(
    pipeline: Pipeline, admin_token: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    device, secret = pipeline.register(place=f"dv{tag}/d{tag}/s{tag}/g{tag}")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    levels = [2.0, 3.5, 7.0]  # the last one passes the waterlogging rule's blue level (5 cm)
    payloads = [
        reading((start + timedelta(seconds=i)).isoformat(), i, water_level_cm=level)
        for i, level in enumerate(levels)
    ]
    payloads[0] = reading(start.isoformat(), 0, water_level_cm=2.0, battery_v=3.6)
    payloads.insert(1, "not JSON at all")  # refused at the gateway
    ahead = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    payloads.insert(2, reading(ahead, 9, water_level_cm=1.0))  # refused in the stream
    for payload in payloads:
        sent = pipeline.mosquitto_pub(device, secret, pipeline.topic(device), payload)
        assert sent.returncode == 0, sent.stderr

    def stored() -> bool:
        readings = pipeline.query("SELECT count(*) FROM readings WHERE device_id = %s", device)
        refused = pipeline.query("SELECT count(*) FROM deadletters WHERE device_id = %s", device)
        alerts = pipeline.query("SELECT count(*) FROM alerts WHERE device_id = %s", device)
        return (readings[0][0], refused[0][0], alerts[0][0]) == (4, 2, 1)

    wait_for(stored, 60, "the readings, the two refusals and the alert stored")

    with api_client(pipeline.settings, admin_token) as api:
        view = api.get(f"/devices/{device}/activity").json()
        assert view["device"]["device_id"] == device
        battery, water = view["series"]  # by metric
        assert (battery["metric"], water["metric"]) == ("battery_v", "water_level_cm")
        assert [value for _, value in water["points"]] == levels  # oldest first
        assert [value for _, value in battery["points"]] == [3.6]
        latest = {
            p["metric"]: (p["value"], datetime.fromisoformat(p["ts"])) for p in view["latest"]
        }
        assert latest == {
            "battery_v": (3.6, start),
            "water_level_cm": (7.0, start + timedelta(seconds=2)),
        }
        assert view["refused"] == 2
        assert [r["stage"] for r in view["refused_newest"]] in (
            ["streams", "ingest"],
            ["ingest", "streams"],  # the stream may refuse the later one first
        )
        assert all(r["reason"] for r in view["refused_newest"])
        [alert] = view["alerts"]
        assert (alert["rule_id"], alert["level"]) == ("waterlogging-depth", "blue")
        assert view["camera_events"] == []
        assert view["lookback_s"] == 7 * 86400

        # a span of minutes before now: readings older than it are not in the series
        assert api.get(f"/devices/{device}/activity", params={"minutes": 1}).json()["series"]
        too_long = api.get(f"/devices/{device}/activity", params={"minutes": 7 * 1440 + 1})
        assert too_long.status_code == 422 and "minutes" in too_long.text
        unknown = api.get(f"/devices/dv-none-{tag}/activity")
        assert unknown.status_code == 404 and f"dv-none-{tag}" in unknown.text

        assert view["cut"] is False

        # Moved into another district: its officer sees the device, not what it sent, nor the
        # alert it raised, in the district it left (those stay with that district's officers).
        to = {"place_path": [f"dv{tag}", f"e{tag}"]}
        moved = api.post(f"/devices/{device}/move", json=to)
        assert moved.status_code == 200, moved.text
    officer = add_user(pipeline.settings, f"dv-{tag}", Role.DUTY_OFFICER, (f"dv{tag}", f"e{tag}"))
    with api_client(pipeline.settings, officer) as theirs:
        seen = theirs.get(f"/devices/{device}/activity").json()
        assert seen["device"]["place_path"] == [f"dv{tag}", f"e{tag}"]
        assert (seen["series"], seen["latest"], seen["alerts"]) == ([], [], [])
        assert seen["refused"] == 2  # about the device, wherever it was
    with api_client(pipeline.settings, admin_token) as api:
        assert len(api.get(f"/devices/{device}/activity").json()["alerts"]) == 1

    shown = CliRunner().invoke(cli_app, ["devices", "show", device], env=pipeline.settings.to_env())
    assert shown.exit_code == 0, shown.output
    lines = {line.split()[0]: line.split(None, 1)[1] for line in shown.stdout.splitlines()[1:]}
    assert lines["latest"].startswith("battery_v 3.6 at ")
    assert "; water_level_cm 7 at " in lines["latest"]
    assert lines["refused"].startswith("2 in the last 7 days; newest ")
    assert lines["refused"].endswith(f"(cityvitals deadletters --device {device})")
    assert lines["alerts"].startswith("1 firing: waterlogging-depth blue (began ")
