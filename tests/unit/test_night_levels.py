"""A threshold rule's night levels: judged in the city's local time, said in the alert, and
refused with the line and field when written wrong."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from cityvitals.settings import Settings
from rules import RuleFileError, parse_rules
from rules.testing import RuleRun, observation
from streams.live import LiveRules, StreamMetrics
from wiring.services import load_rules

SHANGHAI = ZoneInfo("Asia/Shanghai")
ROAD = """\
rules:
  - id: road-noise
    metric: laeq_db
    levels: {blue: 70, orange: 85}
    clear: 67
    night: {levels: {blue: 55, orange: 70}, clear: 52}
    summary: "noise {value:g} dB(A) at {device_id} reached {threshold:g} ({level})"
"""


def evening(run: RuleRun, value: float, hours: int = 10) -> None:
    """A road's readings every 10 minutes from 21:00 Shanghai time for ``hours``."""
    start = datetime(2026, 7, 1, 21, tzinfo=SHANGHAI)
    for i in range(hours * 6):
        run.read([observation(value, start + timedelta(minutes=10 * i), metric="laeq_db")])


def test_a_level_quiet_by_day_fires_at_night_in_the_citys_time_and_ends_at_dawn() -> None:
    """60 dB(A) all evening: under the day's 70, over the night's 55. The alert fires at
    22:00 Shanghai time (14:00 UTC, which a rule read in UTC would take for day) and clears
    at 06:00, saying which levels it passed."""
    run = RuleRun(parse_rules(ROAD, zone="Asia/Shanghai"))
    evening(run, 60.0)
    fired, ended = run.alerts
    assert (fired.status.value, fired.level.value) == ("firing", "blue")
    assert fired.ts.astimezone(SHANGHAI).strftime("%H:%M") == "22:00"
    assert fired.threshold == 55.0
    assert fired.summary == (
        "noise 60 dB(A) at dev-1 reached 55 (blue): the night levels, 22:00-06:00 Asia/Shanghai"
    )
    assert (ended.status.value, ended.resolution and ended.resolution.value) == (
        "resolved",
        "cleared",
    )
    assert ended.ts.astimezone(SHANGHAI).strftime("%H:%M") == "06:00"
    assert ended.summary.endswith("; laeq_db now 60, under the day's all-clear")
    # read in UTC, 21:00-05:00 Shanghai time is 13:00-21:00 UTC: day, no alert
    utc = RuleRun(parse_rules(ROAD))
    evening(utc, 60.0, hours=8)
    assert utc.alerts == []


def test_the_night_has_its_own_higher_levels_and_a_rule_may_name_its_own_hours_and_zone() -> None:
    """72 dB(A) is blue by day and orange at night (the night limit plus 15); a rule that
    names its own night (00:00-05:00 in Europe/Paris) is read there, whatever the city's."""
    run = RuleRun(parse_rules(ROAD, zone="Asia/Shanghai"))
    evening(run, 72.0, hours=2)
    assert [(a.ts.astimezone(SHANGHAI).hour, a.level.value) for a in run.alerts] == [
        (21, "blue"),
        (22, "orange"),
    ]
    own = ROAD.replace(
        "clear: 52}", "clear: 52, starts: '00:00', ends: '05:00', zone: Europe/Paris}"
    )
    paris = RuleRun(parse_rules(own, zone="Asia/Shanghai"))
    evening(paris, 60.0)  # 21:00-07:00 Shanghai is 15:00-01:00 Paris (summer)
    (fired,) = paris.alerts
    assert fired.ts.astimezone(ZoneInfo("Europe/Paris")).strftime("%H:%M") == "00:00"
    assert fired.summary.endswith("the night levels, 00:00-05:00 Europe/Paris")


def test_the_shipped_noise_rule_reads_the_night_in_the_settings_zone_and_a_reload_keeps_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """GB 3096-2008 class 4a: 70 by day, 55 at night. The stream's rules are loaded for
    ``CITYVITALS_TIMEZONE``, and a rule file reloaded while it runs is read in the same zone."""
    shipped = load_rules(Settings(timezone="Asia/Shanghai"))
    night = shipped.by_id["noise-4a"].night
    assert (night.levels, night.zone) == ({"blue": 55.0, "orange": 70.0}, "Asia/Shanghai")
    run = RuleRun(shipped)
    quiet = datetime(2026, 7, 1, 14, tzinfo=SHANGHAI)
    run.read([observation(58.0, quiet, metric="laeq_db", device_type="noise")])
    assert run.alerts == []
    run.read([observation(58.0, quiet.replace(hour=23), metric="laeq_db", device_type="noise")])
    assert [(a.rule_id, a.level.value) for a in run.alerts] == [("noise-4a", "blue")]

    path = tmp_path / "rules.yaml"
    path.write_text(ROAD)
    live = LiveRules(
        load_rules(Settings(rules_file=path, timezone="Asia/Shanghai")),
        path,
        StreamMetrics(CollectorRegistry()),
    )
    path.write_text(ROAD.replace("blue: 55", "blue: 53"))
    with caplog.at_level(logging.INFO, logger="cityvitals"):
        assert live.check() is True
    reloaded = live.current.by_id["road-noise"].night
    assert (reloaded.levels["blue"], reloaded.zone) == (53.0, "Asia/Shanghai")


@pytest.mark.parametrize(
    ("night", "message"),
    [
        (
            "{starts: 22:00, levels: {blue: 55}}",
            "1320: YAML reads an unquoted 22:00 as the number 1320: write it in quotes, '22:00'",
        ),
        ("{starts: 7:30, levels: {blue: 55}}", "write it in quotes, '07:30'"),
        ("{starts: '25:00', levels: {blue: 55}}", "'25:00': give a time of day as HH:MM, 00:00"),
        ("{starts: '22:00:30', levels: {blue: 55}}", "'22:00:30': give a time of day as HH:MM"),
        ("{starts: '06:00', levels: {blue: 55}}", "starts and ends are both 06:00"),
        ("{levels: {blue: 60, orange: 55}}", "levels must increase strictly from blue to red"),
        ("{levels: {blue: 55}, clear: 57}", "clear 57.0 must not be past the lowest level 55.0"),
        ("{levels: {blue: 55}, zone: Mars/Olympus}", "'Mars/Olympus' is not an IANA time zone"),
        ("{levels: {}}", "holds 0 items: at least 1"),
        ("{levels: {blue: 55}, hours: 8}", "Extra inputs are not permitted"),
    ],
)
def test_a_night_written_wrong_is_refused_with_its_line_and_field(night: str, message: str) -> None:
    text = f"rules:\n  - id: n\n    metric: laeq_db\n    levels: {{blue: 70}}\n    night: {night}\n"
    with pytest.raises(RuleFileError) as caught:
        parse_rules(text, "noise.yaml", zone="Asia/Shanghai")
    (problem,) = caught.value.problems
    assert problem.line == 5 and problem.field.startswith("rules.0.night"), problem
    assert message in problem.message, problem.message


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("rate", "metric: m, over: 1h, per: 1h, levels: {blue: 5}"),
        ("absence", "metric: m, after: 10m"),
    ],
)
def test_a_night_on_a_rule_of_another_kind_is_refused_naming_the_kind(
    kind: str, fields: str
) -> None:
    text = f"rules:\n  - {{id: r, kind: {kind}, {fields}, night: {{levels: {{blue: 3}}}}}}\n"
    with pytest.raises(RuleFileError) as caught:
        parse_rules(text, "r.yaml")
    (problem,) = caught.value.problems
    assert f"night: other levels at night are for threshold rules, not {kind}" in problem.message


def test_a_noise_tile_at_night_is_banded_by_the_night_limit_in_the_citys_zone() -> None:
    """The shipped noise indicator bands a window that starts at night (22:00-06:00 in the
    city's zone) by the night limit: 62 dB(A) is over it (blue), where by day it is moderate;
    its night labels are coloured as the day's are. A night's bands must rise."""
    from rules.indicators import finish, parse_catalogue

    catalogue = load_catalogue_for("Asia/Shanghai")
    noise = catalogue.by_id["noise_leq"]
    state = {"n": 1.0, "e": 10 ** (62 / 10)}  # one sample of 62 dB(A)
    night = datetime(2026, 7, 1, 23, tzinfo=SHANGHAI)
    day = datetime(2026, 7, 1, 14, tzinfo=SHANGHAI)
    assert noise.band(62.0, day) == "moderate" and noise.level("moderate") is None
    assert noise.band(62.0, night) == "over_night_limit"
    assert noise.level("over_night_limit") is not None
    assert noise.band(62.0) == "moderate"  # no window time: the day's
    value, band, _ = finish(noise, state, 1, 1, night)
    assert (round(value or 0), band) == (62, "over_night_limit")
    with pytest.raises(RuleFileError) as caught:
        parse_catalogue(
            "indicators: [{id: n, kind: leq, metric: m, device_types: [noise],"
            " night: {bands: [[a, 50], [b, 40]]}}]",
            "i.yaml",
        )
    assert "bands must rise" in str(caught.value)


def load_catalogue_for(zone: str) -> Any:
    from wiring.services import load_catalogue

    return load_catalogue(Settings(timezone=zone))
