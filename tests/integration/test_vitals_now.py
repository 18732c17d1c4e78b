"""``cityvitals vitals PLACE`` against the real PostgreSQL: units, window ages, when the next
value is due (also for an hourly AQI that has none yet), times in the city's time zone."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from cityvitals import db
from cityvitals.settings import Settings
from rules.indicators import window_start
from sinks.vitals import current, history, next_value
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


def test_an_hour_of_windows_adds_up_as_its_indicator_does(town: Settings) -> None:
    """The hourly history of the deepest water is the deepest of its windows, not their mean
    (a red flood of 41 cm does not read as 23.5), and a sound level is their energy mean."""
    hour = datetime(2026, 12, 5, 8, tzinfo=UTC)
    windows = {"water_depth": (6.0, 41.0), "noise_leq": (55.0, 65.0), "devices_online": (1.0, 0.5)}
    with db.connect(town) as conn:
        for indicator, values in windows.items():
            for n, value in enumerate(values):
                conn.execute(
                    "INSERT INTO indicators (indicator, place_id, place_level, place_path,"
                    " window_start, window_s, value, coverage, reporting, expected, quality,"
                    " computed_at) VALUES (%s, 'td', 'district', '{tc,td}', %s, 300, %s, 1, 1,"
                    " 1, 'good', now())",
                    (indicator, hour + timedelta(minutes=5 * n), value),
                )
    catalogue = load_catalogue(town)
    rolled = {}
    with db.connect(town) as conn:
        for indicator in windows:
            end = hour + timedelta(hours=1)
            rollup = catalogue.by_id[indicator].rollup
            (point,) = history(conn, "td", indicator, hour, end, "1h", rollup=rollup)
            assert (point.low, point.high, point.windows) == (*sorted(windows[indicator]), 2)
            rolled[indicator] = point.value
    assert rolled["water_depth"] == 41.0
    assert rolled["noise_leq"] == pytest.approx(10 * math.log10((10**5.5 + 10**6.5) / 2))
    assert rolled["devices_online"] == 0.75

    argv = ["vitals", "td", "--indicator", "water_depth", "--resolution", "1h"]
    span = ["--from", "2026-12-05T08:00Z", "--to", "2026-12-05T09:00Z"]
    shown = CliRunner().invoke(app, [*argv, *span], env=town.to_env())
    assert shown.exit_code == 0, shown.output
    assert "41  [6 .. 41]" in shown.output
    assert "coverage 100%  (2 of 12 windows)" in shown.output  # ten minutes of the hour
    raw = CliRunner().invoke(app, [*argv[:4], "--resolution", "raw", *span], env=town.to_env())
    assert raw.exit_code == 0, raw.output  # each window whole: no "(1 of 12 windows)"
    assert "41  [41 .. 41]  coverage 100%\n" in raw.output and "windows)" not in raw.output
    argv[3] = "devices_online"  # a share, as the console and the "now" view show it
    online = CliRunner().invoke(app, [*argv, *span], env=town.to_env())
    assert "devices_online at td, 1h, in %" in online.output
    assert "75  [50 .. 100]" in online.output, online.output


def two_days_of_aqi(town: Settings) -> datetime:
    """Shanghai's 1 and 2 July, an hourly AQI of 40 all of one and 160 all of the other;
    returns 1 July's midnight there."""
    first = datetime(2026, 6, 30, 16, tzinfo=UTC)
    with db.connect(town) as conn:
        for h in range(48):
            conn.execute(
                "INSERT INTO indicators (indicator, place_id, place_level, place_path,"
                " window_start, window_s, value, coverage, reporting, expected, quality,"
                " computed_at) VALUES ('aqi', 'td', 'district', '{tc,td}', %s, 3600, %s, 1, 1,"
                " 1, 'good', now())",
                (first + timedelta(hours=h), 40.0 if h < 24 else 160.0),
            )
    return first


def test_a_day_of_windows_is_the_city_s_day(town: Settings) -> None:
    """Shanghai's 1 July and 2 July, an hourly AQI of 40 all of one and 160 all of the other:
    two days of 40 and 160, not three of UTC's (08:00 to 08:00 there) that mix them."""
    first = two_days_of_aqi(town)
    with db.connect(town) as conn:
        days = history(
            conn, "td", "aqi", first, first + timedelta(days=2), "1d", rollup="mean",
            zone=town.timezone,
        )  # fmt: skip
    assert [(p.start, p.value, p.windows) for p in days] == [
        (first, 40.0, 24),
        (first + timedelta(days=1), 160.0, 24),
    ]
    argv = ["vitals", "td", "--indicator", "aqi", "--resolution", "1d", "--json"]
    span = ["--from", "2026-07-01", "--to", "2026-07-03"]  # the city's dates
    shown = CliRunner().invoke(app, [*argv, *span], env=town.to_env())
    assert shown.exit_code == 0, shown.output
    assert [(p["value"], p["windows"]) for p in json.loads(shown.output)] == [
        (40.0, 24),
        (160.0, 24),
    ], shown.output


def test_a_day_of_aqi_is_the_standard_s_daily_aqi(town: Settings) -> None:
    """A Shanghai day of clean air with one hour of 250 µg/m³ of PM2.5 and an afternoon of
    ozone: the day's AQI is the sub-index of the 24-hour means and of ozone's highest 8-hour
    mean (HJ 633's daily report), from the concentrations each hourly window keeps, not the
    mean of the hourly AQIs; an hour of two half-hour windows is the AQI of its mean
    concentrations."""
    from rules.indicators.aqi import hourly_aqi

    day = datetime(2026, 7, 1, tzinfo=UTC) - timedelta(hours=8)  # Shanghai's midnight
    hours = [
        {"pm25": 250.0 if h == 3 else 10.0, "o3": 180.0 if 12 <= h < 20 else 40.0}
        for h in range(24)
    ]
    with db.connect(town) as conn:
        for h, means in enumerate(hours):
            value, detail = hourly_aqi(means)
            conn.execute(
                "INSERT INTO indicators (indicator, place_id, place_level, place_path,"
                " window_start, window_s, value, coverage, reporting, expected, quality,"
                " computed_at, detail) VALUES ('aqi', 'td', 'district', '{tc,td}', %s, 3600,"
                " %s, 1, 1, 1, 'good', now(), %s)",
                (day + timedelta(hours=h), value, Jsonb(detail)),
            )
        for half, pm25 in enumerate((20.0, 100.0)):  # 2 July, 00:00: two windows of 30 min
            value, detail = hourly_aqi({"pm25": pm25})
            conn.execute(
                "INSERT INTO indicators (indicator, place_id, place_level, place_path,"
                " window_start, window_s, value, coverage, reporting, expected, quality,"
                " computed_at, detail) VALUES ('aqi', 'td', 'district', '{tc,td}', %s, 1800,"
                " %s, 1, 1, 1, 'good', now(), %s)",
                (day + timedelta(days=1, minutes=30 * half), value, Jsonb(detail)),
            )
        conn.execute(  # 2 July, 01:00: an hour without data (no value, no details) adds nothing
            "INSERT INTO indicators (indicator, place_id, place_level, place_path,"
            " window_start, window_s, value, coverage, reporting, expected, quality,"
            " computed_at) VALUES ('aqi', 'td', 'district', '{tc,td}', %s, 3600, NULL, 0, 0,"
            " 1, 'no_data', now())",
            (day + timedelta(days=1, hours=1),),
        )
        rollup = load_catalogue(town).by_id["aqi"].rollup
        days = history(
            conn, "td", "aqi", day, day + timedelta(days=2), "1d", rollup=rollup,
            zone=town.timezone,
        )  # fmt: skip
        (hour,) = history(
            conn, "td", "aqi", day + timedelta(days=1), day + timedelta(days=1, hours=1), "1h",
            rollup=rollup, zone=town.timezone,
        )  # fmt: skip
    hourly = [hourly_aqi(h)[0] for h in hours]
    assert sum(hourly) / 24 == 46.875  # what the mean of the hourly AQIs said
    # PM2.5's 24-hour mean is 20 µg/m³ (IAQI 29); ozone's highest 8-hour mean 180 (IAQI 119).
    assert (days[0].start, days[0].value, days[0].windows) == (day, 119.0, 24)
    assert (days[0].low, days[0].high) == (min(hourly), max(hourly))
    assert (days[1].value, days[1].windows) == (100.0, 3)  # PM2.5 at 60 µg/m³ so far
    assert (hour.value, hour.windows, hour.low, hour.high) == (100.0, 2, 29.0, 137.0)

    # Berlin's clocks go back on 25 October 2026: a day of 25 hours, each its own (PM2.5 at 10
    # for 24 of them and 250 in the last: a mean of 19.6, IAQI 28; in 24 slots two hours
    # merged, and the day read 22).
    berlin = datetime(2026, 10, 24, 22, tzinfo=UTC)  # its midnight
    with db.connect(town) as conn:
        for h in range(25):
            value, detail = hourly_aqi({"pm25": 250.0 if h == 24 else 10.0})
            conn.execute(
                "INSERT INTO indicators (indicator, place_id, place_level, place_path,"
                " window_start, window_s, value, coverage, reporting, expected, quality,"
                " computed_at, detail) VALUES ('aqi', 'tc', 'city', '{tc}', %s, 3600,"
                " %s, 1, 1, 1, 'good', now(), %s)",
                (berlin + timedelta(hours=h), value, Jsonb(detail)),
            )
        (long_day,) = history(
            conn, "tc", "aqi", berlin, berlin + timedelta(hours=25), "1d", rollup=rollup,
            zone="Europe/Berlin",
        )  # fmt: skip
    assert (long_day.start, long_day.value, long_day.windows) == (berlin, 28.0, 25)

    argv = ["vitals", "td", "--indicator", "aqi", "--resolution", "1d", "--json"]
    shown = CliRunner().invoke(app, [*argv, "--from", "2026-07-01", "--to", "2026-07-02"],
                               env=town.to_env())  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert [p["value"] for p in json.loads(shown.output)] == [119.0], shown.output


def test_an_hour_is_an_hour_when_the_clocks_go_back_and_a_day_asked_in_utc_is_whole(
    town: Settings,
) -> None:
    """Berlin's clocks go back at 03:00 on 25 October 2026: its 02:00 comes twice. Binned on
    the wall clock, both real hours were one bucket of 24 windows; they are two of 12. And a
    day asked for from a UTC midnight in Shanghai is the city's whole day, not its last 16 h."""
    first = datetime(2026, 10, 25, 0, tzinfo=UTC)  # 02:00 in Berlin, summer time
    with db.connect(town) as conn:
        for n in range(24):
            conn.execute(
                "INSERT INTO indicators (indicator, place_id, place_level, place_path,"
                " window_start, window_s, value, coverage, reporting, expected, quality,"
                " computed_at) VALUES ('water_depth', 'td', 'district', '{tc,td}', %s, 300, %s,"
                " 1, 1, 1, 'good', now())",
                (first + timedelta(minutes=5 * n), 10.0 if n < 12 else 30.0),
            )
        hours = history(
            conn, "td", "water_depth", first, first + timedelta(hours=2), "1h", rollup="max",
            zone="Europe/Berlin",
        )  # fmt: skip
        assert [(p.start, p.value, p.windows) for p in hours] == [
            (first, 10.0, 12),
            (first + timedelta(hours=1), 30.0, 12),
        ]
    day = datetime(2026, 7, 1, tzinfo=UTC)  # 08:00 in Shanghai
    with db.connect(town) as conn:
        for h in range(-8, 16):  # the whole of 1 July in Shanghai
            conn.execute(
                "INSERT INTO indicators (indicator, place_id, place_level, place_path,"
                " window_start, window_s, value, coverage, reporting, expected, quality,"
                " computed_at) VALUES ('aqi', 'td', 'district', '{tc,td}', %s, 3600, 50, 1, 1,"
                " 1, 'good', now())",
                (day + timedelta(hours=h),),
            )
        (whole,) = history(
            conn, "td", "aqi", day, day + timedelta(hours=12), "1d", rollup="mean",
            zone="Asia/Shanghai",
        )  # fmt: skip
    assert (whole.start, whole.windows) == (day - timedelta(hours=8), 24)


def test_the_api_reads_a_date_without_a_zone_as_the_city_s(town: Settings) -> None:
    """`from=2026-07-01&to=2026-07-03` in Shanghai: its 1 and 2 July, two whole days (read as
    UTC, the span began at 08:00 on 1 July there and, widened to whole days, took in 3 July)."""
    import asyncio

    import httpx

    from device_registry.access import Role
    from device_registry.api import RegistryPool, create_api
    from tests.integration.conftest import add_user, bearer

    two_days_of_aqi(town)
    token = add_user(town, f"hist-{uuid.uuid4().hex[:6]}", Role.ADMIN)
    pool = RegistryPool.open(town, size=1)
    params = {"indicator": "aqi", "from": "2026-07-01", "to": "2026-07-03", "resolution": "1d"}

    async def ask(asked: dict[str, str]) -> httpx.Response:  # the API on this schema
        transport = httpx.ASGITransport(app=create_api(town, pool))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get("/vitals/td/history", params=asked, headers=bearer(token))

    try:
        answer = asyncio.run(ask(params))
        # times at the calendar's ends: a 422 naming the parameter, not a bare 500
        early = asyncio.run(ask({"indicator": "aqi", "to": "0001-01-01T00:00:00Z"}))
        late = asyncio.run(ask({**params, "from": "9999-12-30", "to": "9999-12-31T23:00:00Z"}))
    finally:
        pool.close()
    assert answer.status_code == 200, answer.text
    assert [(p["value"], p["windows"]) for p in answer.json()] == [(40.0, 24), (160.0, 24)]
    assert early.status_code == 422, early.text
    assert "too early" in early.text and '"to"' in early.text
    assert late.status_code == 422, late.text
    assert "too late" in late.text and '"to"' in late.text
