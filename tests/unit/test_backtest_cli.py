"""``cityvitals rules backtest`` and ``rules check`` on files (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wiring.cli_rules import rules_app

RULES = """
grace: 5m
rules:
  - {id: deep, metric: water_level_cm, levels: {blue: 5, orange: 25}, clear: 3}
  - {id: quiet, kind: absence, metric: pm25, after: 30m, device_types: [air_quality]}
"""
CSV = """ts,device_id,metric,value,device_type,place_path
2026-07-01 08:00:00,wl-1,water_level_cm,1,water_level,sh/pd/s1
2026-07-01 08:05:00,wl-1,water_level_cm,8,water_level,sh/pd/s1
2026-07-01 08:10:00,wl-1,water_level_cm,30,water_level,sh/pd/s1
2026-07-01 07:50:00,wl-1,water_level_cm,90,water_level,sh/pd/s1
2026-07-01 08:15:00,wl-1,water_level_cm,2,water_level,sh/pd/s1
2026-07-01 08:15:00,aq-1,pm25,40,air_quality,sh/pd/s1
2026-07-01 08:15:00,aq-1,no2,40,air_quality,sh/pd/s1
2026-07-01T09:00:00Z,aq-1,no2,41,air_quality,sh/pd/s1
"""


def files(tmp_path: Path, csv: str = CSV) -> tuple[Path, Path, Path]:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "in.csv").write_text(csv)
    return tmp_path / "rules.yaml", tmp_path / "in.csv", tmp_path / "alerts.jsonl"


def test_a_backtest_writes_every_transition_and_counts_late_readings(tmp_path: Path) -> None:
    rules, csv, out = files(tmp_path)
    argv = ["backtest", "--rules", str(rules), "--input", str(csv), "--output", str(out)]
    result = CliRunner().invoke(rules_app, argv)
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(a["rule_id"], a["status"], a["level"]) for a in alerts] == [
        ("deep", "firing", "blue"),
        ("deep", "firing", "orange"),
        ("deep", "resolved", "orange"),
        ("quiet", "firing", "yellow"),  # the 09:00 reading has no PM2.5: silent for 45 minutes
    ]
    assert alerts[0]["place_path"] == ["sh", "pd", "s1"]
    summary = json.loads(result.output.splitlines()[0])
    assert summary["readings"] == 7 and summary["late"] == 1 and summary["transitions"] == 4
    # per rule, what a rule's author tunes by
    assert result.output.splitlines()[1:3] == [
        "rule deep: 1 episode (1 orange at its peak), firing 10 min in all",
        "rule quiet: 1 episode (1 yellow at its peak), firing 0 min in all (1 still firing at "
        "the end)",
    ]


def test_a_bad_row_is_named_by_line_and_field_and_nothing_is_written(tmp_path: Path) -> None:
    rules, csv, out = files(
        tmp_path, CSV.replace("08:05:00,wl-1,water_level_cm,8", "08:05:00,wl-1,water_level_cm,deep")
    )
    argv = ["backtest", "--rules", str(rules), "--input", str(csv), "--output", str(out)]
    result = CliRunner().invoke(rules_app, argv)
    assert result.exit_code == 1
    assert f"{csv}:3: value:" in result.output
    assert sorted(tmp_path.iterdir()) == [csv, rules]  # no output, no temporary file


def test_a_csv_that_is_not_utf8_is_named_by_line_and_nothing_is_written(tmp_path: Path) -> None:
    rules, csv, out = files(tmp_path)
    csv.write_bytes(
        CSV.replace("wl-1,water_level_cm,30", "wl-é,water_level_cm,30").encode("latin-1")
    )
    argv = ["backtest", "--rules", str(rules), "--input", str(csv), "--output", str(out)]
    result = CliRunner().invoke(rules_app, argv)
    assert result.exit_code == 1
    assert result.output == f"error: {csv}:4: not UTF-8 (byte 0xe9); save the file as UTF-8\n"
    assert sorted(tmp_path.iterdir()) == [csv, rules]  # no output, no temporary file


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ("missing/alerts.jsonl", "there is no folder {tmp}/missing"),
        ("", "Is a directory"),  # tmp_path itself
    ],
)
def test_an_output_that_cannot_be_written_is_named_and_no_folder_is_made(
    tmp_path: Path, output: str, problem: str
) -> None:
    rules, csv, _ = files(tmp_path)
    out = tmp_path / output
    argv = ["backtest", "--rules", str(rules), "--input", str(csv), "--output", str(out)]
    result = CliRunner().invoke(rules_app, argv)
    assert result.exit_code == 1
    assert result.output == f"error: cannot write {out}: {problem.format(tmp=tmp_path)}\n"
    assert sorted(tmp_path.iterdir()) == [csv, rules]


def test_rules_check_names_the_line_of_a_bad_rule(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "rules:\n  - id: r\n    kind: rate\n    metric: m\n    levels: {yellow: 1}\n    over: soon\n"
    )
    result = CliRunner().invoke(rules_app, ["check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:6: rules.0.over:" in result.output


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("2026-07-01 08:05:00,wl-1,water_level_cm,inf", "value"),
        ("2026-07-01 08:05:00,wl-1,water_level_cm,8,,,,,1.5", "confidence"),
        ("2026-07-01 08:00:00,wl-1,water_level_cm,3", "metric"),  # the first row's again
    ],
)
def test_values_the_stream_would_refuse_are_named_by_line(
    tmp_path: Path, bad: str, field: str
) -> None:
    header = "ts,device_id,metric,value,device_type,place_path,profile_id,tags,confidence\n"
    csv = header + "2026-07-01 08:00:00,wl-1,water_level_cm,1\n" + bad + "\n"
    rules, path, out = files(tmp_path, csv)
    argv = ["backtest", "--rules", str(rules), "--input", str(path), "--output", str(out)]
    result = CliRunner().invoke(rules_app, argv)
    assert result.exit_code == 1 and f"{path}:3: {field}:" in result.output, result.output


SILENT_RULES = """
rules:
  - {id: high, metric: m, levels: {yellow: 30}, keep_firing_for: 3m}
  - {id: smoke, metric: camera.smoke_fire, levels: {orange: 0.5}, expires_after: 2m}
"""
SILENT_CSV = """ts,device_id,metric,value,expected_interval_s
2026-07-01T08:00:00Z,s-1,m,35,60
2026-07-01T08:01:00Z,s-1,m,20,60
2026-07-01T08:01:00Z,s-2,m,40,60
2026-07-01T08:01:00Z,cam-1,camera.smoke_fire,0.9,
"""


def backtest_silence(tmp_path: Path, *extra: str) -> list[tuple[str, str, str, str, str | None]]:
    (tmp_path / "rules.yaml").write_text(SILENT_RULES)
    (tmp_path / "in.csv").write_text(SILENT_CSV)
    out = tmp_path / "alerts.jsonl"
    argv = ["backtest", "--rules", str(tmp_path / "rules.yaml"), "--input"]
    argv += [str(tmp_path / "in.csv"), "--output", str(out), *extra]
    result = CliRunner().invoke(rules_app, argv)
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    return [(a["rule_id"], a["device_id"], a["status"], a["ts"], a["resolution"]) for a in alerts]


def test_a_backtest_judges_the_silence_after_its_last_reading(tmp_path: Path) -> None:
    # As the stream's ticks would: keep_firing_for runs out 3 minutes after the 20, the
    # camera event expires after 2 minutes, and the silent s-2 goes stale after 4 intervals.
    assert backtest_silence(tmp_path) == [
        ("high", "s-1", "firing", "2026-07-01T08:00:00Z", None),
        ("high", "s-2", "firing", "2026-07-01T08:01:00Z", None),
        ("smoke", "cam-1", "firing", "2026-07-01T08:01:00Z", None),
        ("smoke", "cam-1", "resolved", "2026-07-01T08:03:00Z", "cleared"),
        ("high", "s-1", "resolved", "2026-07-01T08:04:00Z", "cleared"),
        ("high", "s-2", "resolved", "2026-07-01T08:05:00Z", "stale"),
    ]


def test_until_stops_the_backtest_clock(tmp_path: Path) -> None:
    assert [a[2] for a in backtest_silence(tmp_path, "--until", "2026-07-01T08:02:30Z")] == [
        "firing",
        "firing",
        "firing",
    ]


def test_a_backtest_no_rule_applied_to_says_so(tmp_path: Path) -> None:
    """Rules scoped by device type, a history without the device_type column: nothing is
    judged, and the result says so rather than reading as a quiet history."""
    (tmp_path / "rules.yaml").write_text(
        "rules: [{id: deep, metric: water_level_cm, levels: {blue: 5}, device_types: [water_level]}]\n"
    )
    (tmp_path / "in.csv").write_text(
        "ts,device_id,metric,value\n2026-07-01 08:00:00,wl-1,water_level_cm,30\n"
    )
    argv = ["backtest", "--rules", str(tmp_path / "rules.yaml"), "--input"]
    argv += [str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.jsonl")]
    result = CliRunner().invoke(rules_app, argv)
    assert result.exit_code == 0, result.output
    assert "note: no rule applied to any of the 1 readings: a rule scoped by" in result.output
    rules, csv, out = files(tmp_path)
    judged = CliRunner().invoke(
        rules_app, ["backtest", "--rules", str(rules), "--input", str(csv), "--output", str(out)]
    )
    assert "note: no rule applied" not in judged.output
