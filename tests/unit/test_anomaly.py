import csv
import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from rules import nab
from rules.anomaly import AnomalyParams, AnomalyState, score
from rules.detectors import SeasonalDetector
from rules.detectors.novelty import NoveltyParams
from rules.detectors.seasonal import by_noise
from rules.testing import score_series
from wiring.cli_anomaly import anomaly_app, parse_params

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
STEP = timedelta(minutes=5)
PARAMS = AnomalyParams()


def noisy(n: int, seed: int = 7, level: float = 20.0, sd: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sd) for _ in range(n)]


def feed(
    values: list[float],
    state: AnomalyState | None = None,
    start: int = 0,
    params: AnomalyParams = PARAMS,
) -> tuple[AnomalyState, list[float]]:
    scores = []
    for i, v in enumerate(values, start):
        state, s = score(params, state, T0 + i * STEP, v)
        scores.append(s)
    assert state is not None
    return state, scores


# --- the detector ---------------------------------------------------------------------------


def test_warming_up_series_scores_zero() -> None:
    values = noisy(PARAMS.warmup)
    values[50] = 500.0  # even a wild value while warming up
    series = [(T0 + i * STEP, v) for i, v in enumerate(values)]
    assert score_series(SeasonalDetector(PARAMS), series) == [0.0] * PARAMS.warmup


def test_quiet_series_scores_low_and_a_spike_scores_high() -> None:
    state, scores = feed(noisy(1000))
    assert max(scores) < 0.7
    assert sum(s > 0.5 for s in scores) <= 3
    _, spike = score(PARAMS, state, T0 + 1000 * STEP, 35.0)
    assert spike > 0.9


def test_level_shift_is_flagged_then_absorbed() -> None:
    state, _ = feed(noisy(1000))
    shifted = noisy(400, seed=8, level=40.0)
    _, scores = feed(shifted, state, start=1000)
    assert scores[0] > 0.9
    assert max(scores[100:]) < 0.3


def test_constant_series_scores_zero_and_stays_finite() -> None:
    state, scores = feed([45.0] * 2000)
    assert scores == [0.0] * 2000
    state, s = score(PARAMS, state, T0 + 2000 * STEP, 45.5)
    assert 0.9 < s <= 1.0


def test_daily_rise_and_fall_are_learned_not_alerted() -> None:
    def day_profile(i: int) -> float:
        hour = (i * 5 // 60) % 24
        return 80.0 if 9 <= hour < 17 else 20.0

    rng = random.Random(3)
    values = [day_profile(i) + rng.gauss(0, 1) for i in range(288 * 10)]
    _, scores = feed(values)
    assert max(scores[288 * 3 :]) < 0.6


def test_gap_in_time_is_handled() -> None:
    state, _ = feed(noisy(600))
    after_gap = T0 + 600 * STEP + timedelta(days=3)
    state, s = score(PARAMS, state, after_gap, 20.3)
    assert 0.0 <= s < 0.5
    assert state.drift == pytest.approx(0.0, abs=0.5)
    for i in range(1, 50):
        state, s = score(PARAMS, state, after_gap + i * STEP, 20.0 + (i % 3) / 3)
        assert 0.0 <= s <= 1.0


def test_replayed_or_older_readings_score_zero_and_change_nothing() -> None:
    values = noisy(300)
    state, _ = feed(values)
    before = json.dumps(state.to_json())
    last = T0 + 299 * STEP
    for ts, v in [(last, 99.0), (last - STEP, values[298]), (T0, 1e9)]:
        again, s = score(PARAMS, state, ts, v)
        assert s == 0.0
        assert again is state
    assert json.dumps(state.to_json()) == before


@pytest.mark.parametrize(
    "params",
    [PARAMS, AnomalyParams(noise_halflife=72, surprise_long_halflife=10_000)],
    ids=["defaults", "noise and long memory"],
)
def test_state_round_trips_through_json(params: AnomalyParams) -> None:
    values = noisy(3000, seed=11)
    values[2500] = 60.0
    values[2000:2300] = [20.0 + 2.5 * (v - 20.0) for v in values[2000:2300]]  # noisier
    state, _ = feed(values[:1500], params=params)
    copy = AnomalyState.from_json(json.loads(json.dumps(state.to_json())))
    assert copy.to_json() == state.to_json()
    state, scores = feed(values[1500:], state, start=1500, params=params)
    copy, copy_scores = feed(values[1500:], copy, start=1500, params=params)
    assert copy_scores == scores
    assert copy.to_json() == state.to_json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noise", math.nan),
        ("hist_v", [0.0] * 3),
        ("hist", [math.inf] * 48),
        ("week_d", [0.0] * 24),
        ("noise_n", -1.0),
        ("hist", 3.0),
        ("spread", [1.0]),
        ("hist_w", 0.0),
        ("n", 0),
    ],
)
def test_a_malformed_state_is_refused_by_the_field_it_names(field: str, value: object) -> None:
    # each would fail every later reading of its series
    data = {**feed(noisy(200))[0].to_json(), field: value}
    with pytest.raises(ValueError, match=f"anomaly state: {field}: malformed"):
        AnomalyState.from_json(data)


def test_a_version_1_state_is_adopted_with_an_empty_long_memory() -> None:
    state, _ = feed(noisy(500))
    new = ("hist_l", "hist_lb", "hist_lw", "hist_ln", "model")
    old = {**{k: v for k, v in state.to_json().items() if k not in new}, "v": 1}
    adopted = AnomalyState.from_json(old)
    assert adopted.hist_ln == 0.0 and adopted.hist_l == [0.0] * 48 and adopted.n == state.n
    feed(noisy(10, seed=3), adopted, start=500)  # it scores on


NOISE = AnomalyParams(noise_halflife=72)


def calm_then_noisy(seed: int = 7) -> list[float]:
    """3,000 readings of 20 +- 1, then 300 two and a half times as noisy, each clipped at 3
    spreads of the calm: no one reading lies far out."""
    rng = random.Random(seed)
    calm = [20.0 + rng.gauss(0.0, 1.0) for _ in range(3000)]
    return calm + [20.0 + max(-3.0, min(3.0, rng.gauss(0.0, 2.5))) for _ in range(300)]


def test_a_series_turned_noisier_scores_by_its_noise_when_the_noise_statistic_is_on() -> None:
    values = calm_then_noisy()
    _, deviations = feed(values)  # the seasonal detector's default: off
    _, with_noise = feed(values, params=NOISE)
    assert max(deviations[3000:]) < 0.3  # each reading is a usual deviation
    assert max(with_noise[3000:]) > 0.9
    alerts = [i for i, s in enumerate(with_noise[:3000]) if s > 0.5]
    assert alerts == [i for i, s in enumerate(deviations[:3000]) if s > 0.5]  # none while calm
    # its own refractory period: a few alerts for the noisy stretch, not one a reading
    assert 1 <= sum(s > 0.5 for s in with_noise[3000:]) <= 4


@pytest.mark.parametrize("before", ["off", "on, then off"])
def test_the_noise_is_counted_only_while_on_so_turning_it_on_later_starts_young(
    before: str,
) -> None:
    values = calm_then_noisy()
    long_off = AnomalyParams(surprise_long_halflife=10_000)
    if before == "off":
        state, _ = feed(values[:2000], params=long_off)
    else:  # switched off, it is forgotten: a count kept without its decaying histograms
        on = NOISE.model_copy(update={"surprise_long_halflife": 10_000})
        state, _ = feed(values[:1000], params=on)  # would find all noise rare when back on
        assert state.noise_n > 0.0 and state.noise_ln > 0.0 and state.noise_age > 0.0
        state, _ = feed(values[1000:2000], state, start=1000, params=long_off)
    assert state.noise_n == state.noise_ln == state.noise == state.noise_score == 0.0
    assert state.noise_recent == state.noise_age == 0.0
    assert state.hist_v == state.hist_lv == [0.0] * 48
    _, later = feed(values[2000:3000], state, start=2000, params=NOISE)
    _, deviations = feed(values)
    # nothing over the deviations' own scores (an empty calibration with a count would find
    # all noise rare)
    assert max(later) <= max(deviations[2000:3000]) < 0.9


def test_a_state_written_before_the_noise_statistic_is_adopted_with_it_empty() -> None:
    values = calm_then_noisy()
    state, _ = feed(values[:2000], params=NOISE)
    assert state.noise_n > 100.0
    new = ("noise", "noise_recent", "noise_score", "hist_v", "noise_n", "hist_lv", "noise_ln")
    adopted = AnomalyState.from_json({k: v for k, v in state.to_json().items() if k not in new})
    assert adopted.noise_n == 0.0 and adopted.hist_v == [0.0] * 48 and adopted.n == state.n
    _, scores = feed(values[2000:], adopted, start=2000, params=NOISE)
    _, deviations = feed(values)
    assert max(scores[:1000]) <= max(deviations[2000:3000]) < 0.9 < max(scores[1000:])


def test_the_noise_scores_nothing_in_a_series_first_week() -> None:
    # the noisier stretch of calm_then_noisy, on day 4 (readings every 5 minutes): learned,
    # not scored; after a week the same stretch scores over 0.9 (above)
    values = noisy(1200) + calm_then_noisy()[3000:] + noisy(500, seed=9)
    _, deviations = feed(values)
    state, with_noise = feed(values[:1500], params=NOISE)
    assert state.noise > 0.5  # as noisy as it was when it scored
    _, rest = feed(values[1500:], state, start=1500, params=NOISE)
    assert with_noise + rest == deviations


def test_the_noise_waits_a_week_from_when_it_began_not_from_the_series_start() -> None:
    # a series two weeks old switches the noise on: its first week of learning scores nothing
    values = noisy(4032) + calm_then_noisy()[3000:] + noisy(300, seed=9)
    state, _ = feed(values[:4032])  # off
    _, deviations = feed(values[4032:], state.copy(), start=4032)
    _, switched_on = feed(values[4032:], state, start=4032, params=NOISE)
    assert switched_on == deviations


def test_by_noise_is_a_strict_win_of_the_noise() -> None:
    state = AnomalyState(0.0, 1.0)
    assert not by_noise(state, 0.0)  # no score: nobody's
    state.noise_score = 0.5
    assert by_noise(state, 0.5) and not by_noise(state, 0.4)


def test_the_noise_is_calibrated_past_the_first_rescale_of_the_weights() -> None:
    # the short memory's weights are scaled back after about 6,000 readings: the noise's
    # histograms with them, or it would find every later noise ordinary
    rng = random.Random(3)
    calm = noisy(9000, seed=3)
    values = calm + [20.0 + max(-3.0, min(3.0, rng.gauss(0.0, 2.5))) for _ in range(300)]
    params = NOISE.model_copy(update={"surprise_long_halflife": 10_000})
    state, _ = feed(values[:9000], params=params)
    assert state.hist_w < 1e6 and state.hist_lw > 1.0  # rescaled (the long memory not yet)
    assert (state.noise_n, state.noise_ln) == (state.hist_n, state.hist_ln)  # the same decay
    # a histogram holds at most its count of readings, in the units of its weights
    assert sum(state.hist_v) / state.hist_w <= state.noise_n
    assert sum(state.hist_lv) / state.hist_lw <= state.noise_ln
    loudest = 0.0
    for i, v in enumerate(values[9000:], 9000):
        state, _ = score(params, state, T0 + i * STEP, v)
        loudest = max(loudest, state.noise_score)  # the scores the noise set
    assert loudest > 0.9


def test_a_gap_restarts_the_noise() -> None:
    state, _ = feed(calm_then_noisy(), params=NOISE)
    assert state.noise > 0.5
    after = T0 + 3300 * STEP + timedelta(hours=7)
    state, _ = score(NOISE, state, after, 20.0)
    assert abs(state.noise) < 0.02  # one reading's share since the restart


def test_a_deviation_the_series_keeps_giving_is_judged_by_the_long_memory() -> None:
    # a spike of 8 spreads every 500 readings: the 300-reading memory has forgotten the last one
    # by the next, the 10,000-reading one has seen them all
    values = noisy(8000)
    spikes = range(600, 8000, 500)
    for i in spikes:
        values[i] += 8.0
    _, with_long = feed(values, params=AnomalyParams(surprise_long_halflife=10_000))
    _, without = feed(values)  # the seasonal detector's default: no long memory
    later = [i for i in spikes if i > 3000]
    assert sum(with_long[i] for i in later) < sum(without[i] for i in later) - 0.5
    assert max(with_long[i] for i in later) < max(without[i] for i in later) - 0.1


def test_spikes_on_a_flat_series_do_not_grow_as_the_spread_shrinks() -> None:
    # identical pairs of spikes on zeros: without a floor the spread keeps shrinking, so each
    # spike is more spreads away than the last and the same spike scores 1.0 again and again
    values = [20.0 if i % 100 in (0, 6) else 0.0 for i in range(4000)]
    _, scores = feed(values)
    _, unfloored = feed(values, params=AnomalyParams(rel_floor=0.001))
    assert max(scores[2500:]) < 0.5
    assert max(unfloored[2500:]) == 1.0


def test_a_glitch_hardly_moves_the_overall_spread_the_floor_is_cut_from() -> None:
    values = noisy(2000)
    clean, _ = feed(values)
    values[1500] = 1e7
    glitched, _ = feed(values)
    assert glitched.spread < 2.0 * clean.spread and abs(glitched.mean - clean.mean) < 1.0


def test_state_json_is_rejected_when_incomplete() -> None:
    state, _ = feed(noisy(10))
    data = state.to_json()
    del data["hist"]
    with pytest.raises(ValueError, match="hist"):
        AnomalyState.from_json(data)
    with pytest.raises(ValueError, match="v"):
        AnomalyState.from_json({**state.to_json(), "v": 99})


def test_state_size_is_bounded() -> None:
    sizes = []
    state = None
    rng = random.Random(5)
    for i in range(100_000):
        v = 50.0 + 10 * math.sin(i / 288 * 2 * math.pi) + rng.gauss(0, 1)
        state, _ = score(PARAMS, state, T0 + i * STEP, v)
        if i in (5_000, 50_000, 99_999):
            sizes.append(len(json.dumps(state.to_json())))
    assert max(sizes) < 10_240  # 534 numbers whatever the length
    assert abs(sizes[2] - sizes[1]) < 200  # only the digits of the floats vary


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="ts"):
        score(PARAMS, None, datetime(2026, 1, 1), 1.0)
    with pytest.raises(ValueError, match="value"):
        score(PARAMS, None, T0, math.nan)
    with pytest.raises(ValidationError):
        AnomalyParams(warmup=0)
    for name in ("surprise_long_halflife", "noise_halflife"):  # 0 (off) or a reading at least
        with pytest.raises(ValidationError, match="at least 1 reading"):
            AnomalyParams.model_validate({name: 0.5})
    with pytest.raises(ValidationError):
        AnomalyParams.model_validate({"no_such_knob": 1})


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=-600, max_value=10 * 86400), finite),
        min_size=1,
        max_size=400,
    ),
    st.integers(min_value=1, max_value=50),
)
def test_scores_are_finite_and_in_range(steps: list[tuple[int, float]], warmup: int) -> None:
    params = AnomalyParams(warmup=warmup)
    state: AnomalyState | None = None
    t = T0
    for seconds, value in steps:
        t += timedelta(seconds=seconds)
        state, s = score(params, state, t, value)
        assert 0.0 <= s <= 1.0
    assert state is not None
    json.dumps(state.to_json(), allow_nan=False)  # plain, finite JSON


# --- NAB scoring ----------------------------------------------------------------------------

TS = [datetime(2026, 1, 1) + i * STEP for i in range(1000)]  # probation: the first 150 rows
WINDOW = (TS[400], TS[499])


def detections(*rows: int) -> list[float]:
    hits = set(rows)
    return [1.0 if i in hits else 0.0 for i in range(len(TS))]


def nab_score(*rows: int) -> float:
    return nab.score_at(nab.sweep("f", TS, detections(*rows), [WINDOW]), 0.5)


def test_nab_detection_at_window_start_earns_the_full_credit() -> None:
    assert nab_score(400) == pytest.approx(1.0)
    assert nab_score(400, 450, 499) == pytest.approx(1.0)  # only the earliest counts
    assert 0.0 < nab_score(499) < 0.05  # the last row of the window earns almost nothing
    assert nab_score(450) == pytest.approx(nab.scaled_sigmoid(-0.5) / nab.scaled_sigmoid(-1))


def test_nab_missed_window_and_false_positives() -> None:
    assert nab_score() == -1.0
    assert nab_score(200) == pytest.approx(-1.11)  # a false positive before any window
    assert nab_score(100) == -1.0  # probation rows do not count
    just_after = nab_score(400, 501) - 1.0
    far_after = nab_score(400, 900) - 1.0
    assert -0.11 < just_after < -0.0 and far_after == pytest.approx(-0.11, abs=1e-3)


def test_nab_normalisation_and_threshold_search() -> None:
    rows = nab.sweep("f", TS, detections(400), [WINDOW])
    assert nab.normalised(nab.score_at(rows, 0.5), windows=1) == pytest.approx(100.0)
    assert nab.normalised(nab.score_at(rows, 1.1), windows=1) == 0.0
    graded = [0.9 if i == 420 else 0.5 if i % 50 == 0 else 0.1 for i in range(1000)]
    best = nab.best_threshold(nab.sweep("f", TS, graded, [WINDOW]))
    assert best.threshold == 0.9 and best.tp == 1 and best.fp == 0


def test_nab_windows_fall_back_to_nearest_rows() -> None:
    off_grid = (TS[400] - timedelta(minutes=2), TS[499] + timedelta(minutes=2))
    assert nab.window_rows(TS, [off_grid]) == [(400, 499)]
    assert nab.probation_length(1000) == 150 and nab.probation_length(10_000) == 750


# --- the command line -----------------------------------------------------------------------

runner = CliRunner()


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    return path


def test_cli_scores_every_row_in_order(tmp_path: Path) -> None:
    rows = [
        f"{(datetime(2026, 1, 1) + i * STEP):%Y-%m-%d %H:%M:%S},{20 + i % 3}" for i in range(300)
    ]
    rows.append("2026-01-02T01:00:00+00:00,90")  # ISO 8601 with a zone, a spike
    source = write_csv(tmp_path / "in.csv", rows)
    target = tmp_path / "out.csv"
    result = runner.invoke(anomaly_app, ["score", str(source), str(target), "--param", "warmup=10"])
    assert result.exit_code == 0, result.output
    lines = target.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score"
    assert len(lines) == 302
    assert [line.rsplit(",", 1)[0] for line in lines[1:]] == rows
    scores = [float(line.rsplit(",", 1)[1]) for line in lines[1:]]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[-1] > 0.9


def test_cli_explains_the_rows_scoring_high_as_an_alert_would(tmp_path: Path) -> None:
    rows = [
        f"{(datetime(2026, 1, 1) + i * STEP):%Y-%m-%d %H:%M:%S},{20 + i % 3}" for i in range(300)
    ]
    rows.append("2026-01-02T01:00:00+00:00,90")  # a spike
    source = write_csv(tmp_path / "in.csv", rows)
    target = tmp_path / "out.csv"
    argv = ["score", str(source), str(target), "--param", "warmup=10", "--explain-above", "0.9"]
    result = runner.invoke(anomaly_app, argv)
    assert result.exit_code == 0, result.output
    with target.open() as f:
        read = list(csv.reader(f))
    assert read[0] == ["timestamp", "value", "anomaly_score", "why"]
    explained = [r for r in read[1:] if r[3]]
    assert [r[1] for r in explained] == ["90"]  # only the row past 0.9
    assert "expected" in explained[0][3] and "usual range" in explained[0][3]
    seasonal = runner.invoke(anomaly_app, [*argv, "--detector", "seasonal"])
    assert seasonal.exit_code == 2 and "the novelty detector explains" in seasonal.output


def test_cli_scores_with_the_named_detector(tmp_path: Path) -> None:
    values = noisy(600)
    rows = [
        f"{(datetime(2026, 1, 1) + i * STEP):%Y-%m-%d %H:%M:%S},{v!r}" for i, v in enumerate(values)
    ]
    source = write_csv(tmp_path / "in.csv", rows)
    target = tmp_path / "out.csv"
    out = {}
    for name in ("seasonal", "novelty"):
        result = runner.invoke(anomaly_app, ["score", str(source), str(target), "--detector", name])
        assert result.exit_code == 0, result.output
        out[name] = [float(line.rsplit(",", 1)[1]) for line in target.read_text().splitlines()[1:]]
    _, expected = feed(values, start=0)
    assert out["seasonal"] == expected
    # novelty is the seasonal detector with its own defaults until the range of values is fixed
    _, under = feed(values, start=0, params=NoveltyParams().in_force)
    assert out["novelty"][:400] == under[:400] != expected[:400]
    result = runner.invoke(anomaly_app, ["score", str(source), str(target), "--detector", "x"])
    assert result.exit_code == 2 and "--detector 'x'" in result.output


def test_cli_stops_at_the_first_bad_row_and_writes_nothing(tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv", ["2026-01-01 00:00:00,1", "2026-01-01 00:05:00,2", "yesterday,3"]
    )
    target = tmp_path / "out.csv"
    result = runner.invoke(anomaly_app, ["score", str(source), str(target)])
    assert result.exit_code == 1
    assert f"error: {source}:4: timestamp: cannot parse 'yesterday'" in result.output
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [source]  # no temporary file left behind

    write_csv(source, ["2026-01-01 00:00:00,1", "2026-01-01 00:05:00,n/a"])
    result = runner.invoke(anomaly_app, ["score", str(source), str(target)])
    assert result.exit_code == 1
    assert f"{source}:3: value: not a finite number: 'n/a'" in result.output


def test_cli_refuses_a_csv_that_is_not_utf8_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(
        "timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 00:05:00,2 é\n".encode("latin-1")
    )
    target = tmp_path / "out.csv"
    result = runner.invoke(anomaly_app, ["score", str(source), str(target)])
    assert result.exit_code == 1
    assert result.output == f"error: {source}:3: not UTF-8 (byte 0xe9); save the file as UTF-8\n"
    assert list(tmp_path.iterdir()) == [source]


def test_cli_skips_the_byte_order_mark_a_spreadsheet_writes(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("timestamp,value\n2026-01-01 00:00:00,1\n", encoding="utf-8-sig")
    result = runner.invoke(anomaly_app, ["score", str(source), str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output


def test_cli_names_an_output_it_cannot_write_and_makes_no_folder(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["2026-01-01 00:00:00,1"])
    for target, problem in [
        (tmp_path / "missing" / "out.csv", f"there is no folder {tmp_path / 'missing'}"),
        (tmp_path, "Is a directory"),
    ]:
        result = runner.invoke(anomaly_app, ["score", str(source), str(target)])
        assert result.exit_code == 1
        assert result.output == f"error: cannot write {target}: {problem}\n"
        assert list(tmp_path.iterdir()) == [source]


def test_cli_rejects_unknown_parameters(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["2026-01-01 00:00:00,1"])
    result = runner.invoke(
        anomaly_app, ["score", str(source), str(tmp_path / "o.csv"), "--param", "nope=1"]
    )
    assert result.exit_code == 2
    assert "--param nope" in result.output
    assert parse_params(["warmup=5", "season=daily"]) == AnomalyParams(warmup=5, season="daily")
