"""cityvitals bench's document: every target with its measured figure and the gap to it."""

from __future__ import annotations

from benchmarks.bench import TARGETS, report

FIGURES = {
    "end_to_end": {"readings_per_s": 12_000, "lost": 0},
    "streams": {"readings_per_s": 70_000, "ceiling_readings_per_s": 90_000},
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
