"""cityvitals bench's document: every target with its measured figure and the gap to it."""

from __future__ import annotations

from benchmarks.bench import TARGETS, report

FIGURES = {
    "end_to_end": {"readings_per_s": 12_000, "lost": 0},
    "streams": {"readings_per_s": 70_000, "ceiling_readings_per_s": 90_000},
    "streams_small_job": {"readings_per_s": 45_000, "quix_msg_per_s": 30_000, "ratio_to_quix": 1.5},
    "alert_latency": {"p50_ms": 80.0, "p99_ms": 400.0},
    "sink": {"ratio_to_raw_copy": 0.31},
}


def by_figure(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    targets = doc["targets"]
    assert isinstance(targets, list)
    return {t["figure"]: t for t in targets}


def test_the_document_carries_the_date_the_figures_and_one_line_per_target() -> None:
    doc = report(FIGURES, "2026-12-01")
    assert doc["date"] == "2026-12-01"
    assert doc["end_to_end"] == FIGURES["end_to_end"]
    assert list(by_figure(doc)) == [t.figure for t in TARGETS]


def test_a_gap_is_the_distance_to_the_target_in_its_direction_and_zero_when_met() -> None:
    targets = by_figure(report(FIGURES, "2026-12-01"))
    e2e = targets["end_to_end.readings_per_s"]
    assert (e2e["measured"], e2e["met"], e2e["gap"], e2e["goal"]) == (12_000, False, 8_000, 30_000)
    assert (targets["end_to_end.lost"]["met"], targets["end_to_end.lost"]["gap"]) == (True, 0)
    assert (targets["streams.readings_per_s"]["met"], targets["streams.readings_per_s"]["gap"]) == (
        True,
        0,
    )
    latency = targets["alert_latency.p99_ms"]
    assert (latency["direction"], latency["met"], latency["gap"]) == ("at most", False, 150)
    assert targets["sink.ratio_to_raw_copy"]["gap"] == 0.19


def test_a_figure_not_measured_has_no_gap() -> None:
    targets = by_figure(report({"alert_latency": {"p99_ms": None}}, "2026-12-01"))
    assert (targets["alert_latency.p99_ms"]["met"], targets["alert_latency.p99_ms"]["gap"]) == (
        None,
        None,
    )
    assert targets["sink.ratio_to_raw_copy"]["measured"] is None


def test_the_small_job_is_held_to_twice_quix_streams_measured_beside_it() -> None:
    small = by_figure(report(FIGURES, "2026-12-01"))["streams_small_job.ratio_to_quix"]
    assert (small["target"], small["direction"], small["measured"]) == (2, "at least", 1.5)
    assert (small["met"], small["gap"]) == (False, 0.5)


def test_the_full_job_is_held_to_twice_the_quix_rate_of_the_same_run() -> None:
    streams = by_figure(report(FIGURES, "2026-12-01"))["streams.readings_per_s"]
    assert (streams["target"], streams["met"], streams["gap"]) == (60_000, True, 0)
    slower = {**FIGURES, "streams_small_job": {"quix_msg_per_s": 40_000}}
    streams = by_figure(report(slower, "2026-12-01"))["streams.readings_per_s"]
    assert (streams["target"], streams["met"], streams["gap"]) == (80_000, False, 10_000)


def test_a_target_relative_to_a_figure_not_measured_is_not_judged() -> None:
    no_quix = {k: v for k, v in FIGURES.items() if k != "streams_small_job"}
    streams = by_figure(report(no_quix, "2026-12-01"))["streams.readings_per_s"]
    assert (streams["measured"], streams["target"], streams["met"], streams["gap"]) == (
        70_000,
        None,
        None,
        None,
    )
