"""``cityvitals vitals PLACE`` against the real PostgreSQL: units, window ages, when the next
value is due (also for an hourly AQI that has none yet), times in the city's time zone."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from cityvitals import db
from cityvitals.settings import Settings
from rules.indicators import window_start
from sinks.vitals import current, next_value
from tests.integration.conftest import Pipeline
from wiring.cli import app
from wiring.services import load_catalogue

pytestmark = pytest.mark.integration


@pytest.fixture()
def town(pipeline: Pipeline) -> Iterator[Settings]:
    """A schema of its own with a city, one district, an air-quality and a water sensor, and
    the water depth of the last window reported (no AQI yet: its hour is not over)."""
    settings = pipeline.settings.model_copy(
        update={"database_schema": f"vn{uuid.uuid4().hex[:12]}", "timezone": "Asia/Shanghai"}
    )
    db.migrate(settings)
    now = datetime.now(UTC)
    end = window_start(now - timedelta(seconds=60), 300)
    try:
        with db.connect(settings) as conn:
            conn.execute(
                "INSERT INTO places (place_id, level, name, path) VALUES"
                " ('tc', 'city', 'Town', '{tc}'), ('td', 'district', 'Down', '{tc,td}')"
            )
            conn.execute(
                "INSERT INTO devices (device_id, device_type, place_path, state, updated_at)"
                " VALUES ('aq-1', 'air_quality', '{tc,td}', 'active', now()),"
                " ('wl-1', 'water_level', '{tc,td}', 'active', now())"
            )
            conn.execute(
                "INSERT INTO indicators (indicator, place_id, place_level, place_path,"
                " window_start, window_s, value, level, coverage, reporting, expected, quality,"
                " computed_at) VALUES ('water_depth', 'tc', 'city', '{tc}', %s, 300, 12.5,"
                " 'alarm', 1, 1, 1, 'good', now())",
                (end - timedelta(minutes=5),),
            )
        yield settings
    finally:
        with db.connect(settings) as conn:
            conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def test_now_has_units_ages_and_when_the_next_value_comes(town: Settings) -> None:
    now = datetime.now(UTC)
    with db.connect(town) as conn:
        city, district = current(conn, "tc", catalogue=load_catalogue(town), now=now)
    (water,) = city.signs
    assert water.unit == "cm" and water.next is not None
    assert water.window_end is not None and 60 <= water.age_s <= 420
    assert water.next.due_at > now
    pending = {p.indicator: p for p in city.pending}
    hour = window_start(now - timedelta(seconds=60), 3600)
    assert pending["aqi"].next.window_start == hour
    assert pending["aqi"].next.due_at == hour + timedelta(hours=1, minutes=1)
    assert "noise_leq" not in pending  # no noise sensor here: no value will ever come
    assert "aqi" in {p.indicator for p in district.pending}

    result = CliRunner().invoke(app, ["vitals", "tc"], env=town.to_env())
    assert result.exit_code == 0, result.output
    assert "times in Asia/Shanghai (UTC+08:00)" in result.output
    assert "12.5 cm" in result.output and "min ago" in result.output
    grace = timedelta(seconds=town.indicators_grace_s)
    shown_at = datetime.now(UTC)
    due = next_value(None, 3600, shown_at, grace).due_at.astimezone(town.zone)
    # The time of day, with the date when it is not today in the city (the hour before
    # midnight there).
    today = due.date() == shown_at.astimezone(town.zone).date()
    when = f"{due:%H:%M}" if today else f"{due:%Y-%m-%d %H:%M}"
    assert f"aqi              no value yet: next value at {when} (window" in result.output

    result = CliRunner().invoke(app, ["vitals", "tc", "--json"], env=town.to_env())
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data[0]["signs"][0]["unit"] == "cm"
    assert data[0]["signs"][0]["window_start"].endswith("+08:00")
    assert {p["indicator"] for p in data[0]["pending"]} >= {"aqi"}


def test_an_unknown_time_zone_is_refused_with_its_name(town: Settings) -> None:
    env = {**town.to_env(), "CITYVITALS_TIMEZONE": "Mars/Olympus_Mons"}
    result = CliRunner().invoke(app, ["vitals", "tc"], env=env)
    assert result.exit_code == 2
    assert "CITYVITALS_TIMEZONE" in result.output and "IANA" in result.output
