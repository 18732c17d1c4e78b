"""``cityvitals vitals PLACE``: units, the window's age, the next value's time and the city's
time zone (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from cityvitals.settings import Settings
from sinks.vitals import PendingSign, PlaceVitals, VitalSign, next_value
from wiring.cli_vitals import render_now

NOW = datetime(2026, 7, 1, 5, 20, 30, tzinfo=UTC)  # 13:20:30 in Shanghai
GRACE = timedelta(seconds=60)


def test_the_next_value_is_the_window_in_progress_or_the_one_being_reported() -> None:
    hour = next_value(datetime(2026, 7, 1, 5, 0, tzinfo=UTC), 3600, NOW, GRACE)
    assert (hour.window_start, hour.due_at, hour.in_progress, hour.overdue) == (
        datetime(2026, 7, 1, 5, 0, tzinfo=UTC),
        datetime(2026, 7, 1, 6, 1, tzinfo=UTC),
        True,
        False,
    )
    # 05:20:30: the window 05:15-05:20 has ended and is reported at 05:21.
    five = next_value(datetime(2026, 7, 1, 5, 15, tzinfo=UTC), 300, NOW, GRACE)
    assert (five.window_start, five.due_at, five.in_progress) == (
        datetime(2026, 7, 1, 5, 15, tzinfo=UTC),
        datetime(2026, 7, 1, 5, 21, tzinfo=UTC),
        False,
    )
    stale = next_value(datetime(2026, 7, 1, 4, 0, tzinfo=UTC), 300, NOW, GRACE)
    assert stale.overdue and stale.window_start == datetime(2026, 7, 1, 5, 15, tzinfo=UTC)
    first = next_value(None, 3600, NOW, GRACE)
    assert (first.window_start, first.due_at) == (
        datetime(2026, 7, 1, 5, 0, tzinfo=UTC),
        datetime(2026, 7, 1, 6, 1, tzinfo=UTC),
    )


def test_now_shows_units_the_age_of_each_window_and_local_times() -> None:
    end = datetime(2026, 7, 1, 5, 15, tzinfo=UTC)
    water = VitalSign(
        "water_depth",
        12.5,
        "alarm",
        1.0,
        8,
        8,
        "good",
        end - timedelta(minutes=5),
        300,
        unit="cm",
        window_end=end,
        age_s=(NOW - end).total_seconds(),
        next=next_value(end, 300, NOW, GRACE),
    )
    aqi = PendingSign("aqi", "AQI", next_value(None, 3600, NOW, GRACE))
    place = PlaceVitals("sim", "city", "Sim", ("sim",), (water,), {}, (aqi,), NOW)
    lines = render_now([place], ZoneInfo("Asia/Shanghai"), NOW)
    assert lines[0] == "times in Asia/Shanghai (UTC+08:00), now 13:20"
    text = "\n".join(lines)
    assert "12.5 cm " in text
    assert "window 13:10-13:15, ended 5 min ago" in text
    assert "next value at 13:21 (window 13:15-13:20 ended, being reported)" in text
    assert "aqi" in text and "next value at 14:01 (window 13:00-14:00 in progress)" in text
    assert "Z" not in text.replace("Asia", "")  # no UTC times left


def test_now_lines_up_values_of_every_unit_and_rounds_them_for_reading() -> None:
    """Each value ends in the same column whatever its unit, with three significant digits
    (the simulator's 53.3054 dB(A) and 0.957912 TTI were hard to read and out of line)."""
    end = datetime(2026, 7, 1, 5, 15, tzinfo=UTC)

    def sign(indicator: str, value: float, unit: str) -> VitalSign:
        return VitalSign(
            indicator,
            value,
            None,
            1.0,
            4,
            4,
            "good",
            end - timedelta(minutes=5),
            300,
            unit=unit,
            window_end=end,
            age_s=(NOW - end).total_seconds(),
        )

    signs = (
        sign("noise", 53.3054, "dB(A)"),
        sign("traffic", 0.957912, "TTI"),
        sign("load", 200.864, "kW"),
        sign("devices_online", 0.3636, "ratio"),  # a share, as the console shows it
    )
    place = PlaceVitals("sim", "city", "Sim", ("sim",), signs, {}, (), NOW)
    lines = render_now([place], ZoneInfo("UTC"), NOW)[2:]
    shown = [line.split()[1:3] for line in lines]
    assert shown == [["53.3", "dB(A)"], ["0.958", "TTI"], ["201", "kW"], ["36.4", "%"]]
    ends = {
        line.index(value) + len(value) for line, (value, _unit) in zip(lines, shown, strict=True)
    }
    units = {line.index(unit) for line, (_value, unit) in zip(lines, shown, strict=True)}
    assert len(ends) == 1 and len(units) == 1, lines


def test_the_time_zone_setting_is_an_iana_name_checked_at_load() -> None:
    assert Settings().timezone == "UTC"
    assert Settings(timezone="Asia/Shanghai").zone == ZoneInfo("Asia/Shanghai")
    with pytest.raises(ValidationError, match="not an IANA time zone name"):
        Settings(timezone="Mars/Olympus_Mons")
