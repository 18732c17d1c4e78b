"""The novelty detector: a value never visited scores high whatever the short memory holds, one
excursion gives one alert, the output explains itself, and the rule kind uses it by default."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from benchmarks.nab import tuning_files
from cityvitals.contracts import AnomalyCause, WarningLevel
from rules.alerting import AlertState
from rules.detectors import AnomalyParams, NoveltyDetector, NoveltyParams, SeasonalDetector
from rules.detectors.novelty import (
    LONG_HALFLIFE,
    NOISE_HALFLIFE,
    REFRACTORY_HALFLIFE,
    SURPRISE_FULL,
    NoveltyState,
    _undamped,
    about,
)
from rules.detectors.seasonal import AnomalyState
from rules.kinds.anomaly import KIND, AnomalyRule
from rules.testing import observation, score_series

T0 = datetime(2026, 3, 2, tzinfo=UTC)
UNDER = AnomalyParams(
    surprise_long_halflife=LONG_HALFLIFE,
    surprise_full=SURPRISE_FULL,
    refractory_halflife=REFRACTORY_HALFLIFE,
    noise_halflife=NOISE_HALFLIFE,
)
"""The seasonal detector as the novelty detector runs it underneath."""
STEP = timedelta(minutes=5)


def points(values: list[float], start: int = 0) -> list[tuple[datetime, float]]:
    return [(T0 + (start + i) * STEP, v) for i, v in enumerate(values)]


def noisy(n: int, level: float = 20.0, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, 1.0) for _ in range(n)]


def trained(values: list[float], params: NoveltyParams | None = None) -> NoveltyDetector:
    detector = NoveltyDetector(params)
    score_series(detector, points(values))
    return detector


def test_a_level_seen_long_ago_is_not_novel_but_a_new_one_is() -> None:
    # an excursion to 27 early on, then weeks of quiet: the seasonal memory has forgotten it
    values = noisy(6000)
    values[1000:1010] = [27.0] * 10
    detector = trained(values)
    seasonal = SeasonalDetector(UNDER)
    score_series(seasonal, points(values))
    at = T0 + 6000 * STEP
    revisit, new = (at, 27.0), (at, 35.0)
    assert not detector.explain_one(revisit).novel
    assert detector.score_one(revisit) == seasonal.score_one(revisit)
    assert detector.explain_one(new).novel
    assert detector.score_one(new) >= NoveltyParams().novel_floor
    assert (detector.explain_one(new).kind, detector.explain_one(revisit).kind) == (
        "novel",
        "deviation",
    )


def test_one_excursion_raises_one_novel_reading() -> None:
    values = [*noisy(3000), 30.0, 34.0, 38.0, 42.0, *noisy(100, seed=8)]
    detector = NoveltyDetector()
    novel = []
    for x in points(values):
        novel.append(detector.explain_one(x).novel)
        detector.learn_one(x)
    assert novel[3000] and sum(novel[3000:]) == 1


@pytest.mark.parametrize(("step", "novel_again"), [(timedelta(hours=1), True), (STEP, False)])
def test_the_quiet_after_a_novel_reading_lasts_a_day_at_most(
    step: timedelta, novel_again: bool
) -> None:
    # Two separate excursions 48 readings apart: two days of hourly readings, four hours of
    # readings every 5 minutes. Quiet for 200 readings, the hourly series would miss the second.
    values = [*noisy(1000), 30.0, *noisy(47, seed=8), 36.0]
    detector = NoveltyDetector()
    novel = []
    for i, v in enumerate(values):
        x = (T0 + i * step, v)
        novel.append(detector.explain_one(x).novel)
        detector.learn_one(x)
    assert novel[1000]
    assert novel[1048] is novel_again


def test_a_new_value_is_less_surprising_on_a_series_that_keeps_finding_new_values() -> None:
    params = NoveltyParams()
    values = [20.0 + (i * 7919 % 13) / 13 for i in range(6000)]  # 13 values between 20 and 21
    scores = {}
    for n in (700, 6000):  # young: its bins were all new lately; old: none new for weeks
        detector = trained(values[:n])
        why = detector.explain_one((T0 + n * STEP, 21.05))  # just past the range
        assert why.novel and why.new_every is not None and why.seasonal_score < 0.5
        floor = params.novel_floor * min(
            1.0, math.log10(why.new_every) / math.log10(params.novel_every)
        )
        assert why.score == pytest.approx(floor + (1.0 - floor) * why.seasonal_score)
        assert (floor == params.novel_floor) is (why.new_every >= params.novel_every)
        assert f"such values about once in {about(why.new_every)} readings" in why.text
        scores[n] = why.new_every, why.score
    assert scores[700][0] < 50 < params.novel_every < scores[6000][0]
    assert scores[700][1] < scores[6000][1]


def plateaus(days: int, seed: int = 4) -> list[float]:
    """A daily plateau from 08:00 to 18:00 UTC, every 5 minutes, for ``days`` days."""
    rng = random.Random(seed)
    return [(85.0 if 8 <= i % 288 / 12 < 18 else 20.0) + rng.gauss(0, 2) for i in range(days * 288)]


def test_a_daily_peak_that_does_not_come_is_new_to_its_hour_on_a_seasonal_series_only() -> None:
    n = 7 * 288 + 8 * 12  # a week and the next day to 08:00
    values = plateaus(8)[:n]
    at = T0 + n * STEP
    detector = trained(values)
    why = detector.explain_one((at, 20.0))  # the night's value at 08:00: the plateau is late
    assert why.new_to_hour and not why.novel and why.model == "hour of day"
    assert why.kind == "new to its hour"
    assert why.seasonal_score < 0.2 < 0.5 < why.score
    # its floor: from how often readings fell outside their hour's range (not new bins)
    data = detector.to_json()
    assert data is not None and data["new_to_hour"] > 0.0 and why.new_every is not None
    assert (
        why.new_every
        > 400
        > (data["readings"] / data["w"] + 10) / (data["new_bins"] / data["w"] + 1)
    )
    floor = NoveltyParams().novel_floor * min(1.0, math.log10(why.new_every) / math.log10(400))
    assert why.score == pytest.approx(floor + (1.0 - floor) * why.seasonal_score)
    assert why.hour == 8 and why.hour_low is not None and why.hour_high is not None
    assert 75.0 < why.hour_low < 85.0 < why.hour_high < 95.0
    assert "new to this hour of the day (between 08:00 and 09:00 UTC it took" in why.text
    usual = detector.explain_one((at, 85.0))
    assert not usual.new_to_hour and usual.score < why.score
    # judged by its level alone, the same series has no hours: the same value is usual
    flat = trained(values, NoveltyParams(seasonal=AnomalyParams(season="none")))
    why = flat.explain_one((at, 20.0))
    assert not why.new_to_hour and why.score < 0.1


def test_a_day_without_its_plateau_raises_one_alert_through_the_stored_state() -> None:
    # as a rule runs it: the detector made again from its JSON for every reading
    values = plateaus(15)
    values[14 * 288 + 96 : 14 * 288 + 216] = [
        20.0 + v - 85.0 for v in values[14 * 288 + 96 : 14 * 288 + 216]
    ]
    state: Any = None
    new_to_hour = []
    for x in points(values):
        detector = NoveltyDetector(None, state)
        new_to_hour.append(detector.explain_one(x).new_to_hour)
        detector.learn_one(x)
        state = json.loads(json.dumps(detector.to_json()))
    assert new_to_hour[14 * 288 + 96] and sum(new_to_hour[14 * 288 :]) == 1


def test_an_excursion_through_several_hours_raises_one_alert() -> None:
    rng = random.Random(5)
    values = [50 + 30 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 1) for i in range(15 * 288)]
    flat = range(14 * 288 + 60, 14 * 288 + 120)  # 05:00 to 10:00, about the peak: the mean
    for i in flat:
        values[i] = 50.0 + rng.gauss(0, 1)
    detector = NoveltyDetector()
    new_to_hour = []
    for x in points(values):
        new_to_hour.append(detector.explain_one(x).new_to_hour)
        detector.learn_one(x)
    assert new_to_hour[flat[0]] and sum(new_to_hour[14 * 288 :]) == 1  # each hour was new


def test_an_hours_range_forgets_a_glitch_as_the_hour_keeps_its_usual_values() -> None:
    state = NoveltyState.new()
    for value in (80.0, 90.0, 20.0):  # a glitch at 20
        state.take(8, value)
    assert state.hour_lo[8] == 20.0 and state.hour_hi[8] == pytest.approx(90.0 - 0.003 * 70.0)
    for _ in range(230):
        state.take(8, 85.0)
    assert 50.0 < state.hour_lo[8] < 55.0 and 85.0 < state.hour_hi[8] < 88.0  # half way to 85
    state.take(8, 95.0)
    assert state.hour_hi[8] == 95.0  # a new high widens at once


def dips(n: int = 3000) -> list[float]:
    """A level of 20 with single dips to 12 (a reading each), then two readings at 12."""
    values = noisy(n)
    values[1000] = values[1500] = 12.0
    values[2000:2002] = [12.0, 12.0]
    return values


def run_alerts(detector: NoveltyDetector, xs: list[tuple[datetime, float]]) -> list[int]:
    """The rows of ``xs`` (by index) whose reading made a run novel, learned as they come."""
    found = []
    for i, x in enumerate(xs):
        if detector.explain_one(x).run:
            found.append(i)
        detector.learn_one(x)
    return found


def test_a_long_run_in_a_tail_is_novel_where_short_dips_were_not() -> None:
    detector = trained(dips())
    data = detector.to_json()
    # the two readings at 12, a thousand readings ago: forgotten by a half-life's share
    assert data is not None and data["run_best"] == pytest.approx(2 * 2 ** (-998 / 2000), 0.01)
    at = T0 + 3000 * STEP
    for i in range(3):  # three readings at 12: a run, not yet novel
        assert detector.explain_one((at + i * STEP, 12.0)).run == 0
        detector.learn_one((at + i * STEP, 12.0))
    why = detector.explain_one((at + 3 * STEP, 12.0))  # the fourth: over twice 1.4, and 4
    assert (why.run, why.run_before, why.run_s, why.tail) == (4, 1, 4 * 300.0, "lowest")
    assert why.score >= NoveltyParams().novel_floor and not why.novel
    assert why.text.startswith(
        "4 readings in a row (about 20 minutes) among the lowest 3% of the values seen lately "
        "(the longest such run lately: 1); expected "
    )
    # the run goes on: one alert for it
    rest = points([12.0] * 8 + noisy(100, seed=8), start=3003)
    assert run_alerts(detector, rest) == [0]


@pytest.mark.parametrize(("gap", "alerts"), [(timedelta(hours=7), []), (STEP, [3])])
def test_a_gap_between_readings_ends_a_run(gap: timedelta, alerts: list[int]) -> None:
    detector = trained(dips())
    at = T0 + 3000 * STEP
    # two readings at 12, the gap, two more: four in a row only without the gap
    xs = [(at + i * STEP + (gap - STEP if i >= 2 else timedelta(0)), 12.0) for i in range(4)]
    assert run_alerts(detector, xs) == alerts


def test_a_run_ends_where_it_crosses_to_the_other_tail() -> None:
    detector = trained(dips())
    at = T0 + 3000 * STEP
    xs = [(at + i * STEP, 12.0 if i % 2 else 28.0) for i in range(12)]  # low, high, low...
    assert run_alerts(detector, xs) == []
    data = detector.to_json()
    assert data is not None and (data["run"], data["run_side"]) == (1, -1)


def test_no_run_is_judged_in_the_first_quiet_period_after_the_range_is_fixed() -> None:
    # a daily square wave: its low plateau not visited yet when its range is fixed at 400
    detector = NoveltyDetector()
    found = run_alerts(detector, points(plateaus(3)))
    assert [i for i in found if i <= 600] == []  # none while the bins fill: 200 after 400
    data = detector.to_json()
    assert data is not None and data["judged"] == 201


def test_an_adopted_state_without_runs_judges_none_until_a_quiet_period_passed() -> None:
    for version in (1, 2):  # a state without runs, and one before the visit counts as well
        data = trained(dips()).to_json()
        assert data is not None
        newer = ("run", "run_side", "run_best", "loudest", "judged")
        old = {k: v for k, v in data.items() if k not in newer}
        if version == 1:
            old = {k: v for k, v in old.items() if k not in ("readings", "new_bins", "hours")}
            old = {**old, "v": 1, "bins": [b for b, _ in data["bins"]]}
            del old["w"]
        adopted = NoveltyDetector(None, old)
        after = adopted.to_json()
        assert after is not None and (after["v"], after["run"], after["judged"]) == (2, 0, 0)
        # a run at once is not judged (it would be novel: no run lately), nor any until 200
        # readings have passed; a run over twice as long, later, is
        early = points([12.0] * 6 + noisy(1000, seed=11), start=3000)
        assert run_alerts(adopted, early) == [], version
        later = run_alerts(adopted, points([12.0] * 12, start=4006))
        assert len(later) == 1, (version, later)


def test_a_run_in_a_quiet_period_alerts_only_when_louder_than_the_novelty_that_began_it() -> None:
    # the run begins with a value never seen (novel, loud): the run inside its quiet stays quiet
    values = [*dips(), 8.0, *[12.0] * 12]
    detector = trained(values[:3001])
    data = detector.to_json()
    assert data is not None and data["since"] == 0 and data["loudest"] > 0.7
    rest = points(values[3001:], start=3001)

    def run_alerts(state: dict[str, Any]) -> list[int]:
        again = NoveltyDetector(None, state)
        found = []
        for x in rest:
            found.append(again.explain_one(x).run)
            again.learn_one(x)
        return [run for run in found if run]

    assert run_alerts(data) == []
    assert len(run_alerts({**data, "loudest": 0.3})) == 1  # a weak first sign: the run alerts


def test_bins_merge_as_the_range_grows_so_a_flat_start_does_not_make_every_value_novel() -> None:
    # the range is fixed on 400 zeros (a tiny bin width); then values spread over 0..100
    rng = random.Random(3)
    values = [0.0] * 400 + [rng.uniform(0.0, 100.0) for _ in range(4000)]

    def novel_after(params: NoveltyParams, start: int) -> int:
        detector = NoveltyDetector(params)
        novel = 0
        for i, x in enumerate(points(values)):
            novel += i >= start and detector.explain_one(x).novel
            detector.learn_one(x)
        return novel

    assert novel_after(NoveltyParams(), 1400) == 0
    assert novel_after(NoveltyParams(max_span=10**9), 1400) > 10  # unmerged: novel after each quiet


def test_a_familiar_value_is_damped_on_a_series_without_season_only() -> None:
    values = noisy(4000)
    for i in range(500, 4000, 300):
        values[i] = 40.0  # a spike to the same height, again and again
    detector = trained(values)
    spike = (T0 + 4000 * STEP, 40.0)
    why = detector.explain_one(spike)
    assert why.familiar and why.model == "level"
    assert why.seasonal_score > 0.0
    assert why.score == pytest.approx(why.seasonal_score * NoveltyParams().familiar_damp)
    assert "took often lately" in why.text
    undamped = NoveltyDetector(NoveltyParams(familiar_damp=1.0))
    score_series(undamped, points(values))
    assert undamped.score_one(spike) == why.seasonal_score
    # a daily wave: its peak value at the hour of its trough is judged by the season in full
    wave = [50 + 20 * math.sin(2 * math.pi * i / 288) + g for i, g in enumerate(noisy(2880, 0))]
    seasonal = trained(wave)
    why = seasonal.explain_one((T0 + (2880 + 216) * STEP, 70.0))
    assert not why.familiar and why.model != "level" and why.score == why.seasonal_score > 0.9


def test_one_glitch_far_out_neither_coarsens_the_bins_nor_hides_a_later_shift() -> None:
    values = noisy(6000)
    values[4000:4500] = [v + 15.0 for v in values[4000:4500]]  # a new level, 15 spreads up
    glitched = list(values)
    glitched[1500] = 1e7  # one reading from a failing sensor

    def run(series: list[float]) -> tuple[NoveltyDetector, list[float]]:
        detector = NoveltyDetector()
        return detector, score_series(detector, points(series))

    clean, clean_scores = run(values)
    detector, scores = run(glitched)
    assert scores[1500] >= NoveltyParams().novel_floor  # the glitch itself is new
    assert max(scores[4000:4010]) > 0.75 and max(clean_scores[4000:4010]) > 0.75  # 0.80, 1.0
    assert detector.to_json()["width"] == clean.to_json()["width"]  # type: ignore[index]


def test_visit_counts_stay_in_range() -> None:
    # visits weigh 2**n (a half-life of 1 reading): the counts are renormalised every 20 or so
    detector = NoveltyDetector(NoveltyParams(familiar_halflife=1.0))
    for x in points(noisy(2000)):
        detector.learn_one(x)
        data = detector.to_json()
        assert data is not None and 1.0 <= data["w"] <= 1e6
        assert all(0.0 <= c / data["w"] <= 2.0 + 1e-9 for _, c in data["bins"])  # 1 + 1/2 + ...
        assert 0.0 <= data["new_bins"] <= data["readings"] <= 2.0 * data["w"] + 1e-9
        assert 0.0 <= data["new_to_hour"] <= data["readings"]


def test_merged_bins_keep_the_values_below_the_range() -> None:
    rng = random.Random(5)
    values = [10.0 + rng.uniform(0, 10) for _ in range(400)]  # the range: 10 to 20, width 1
    # then two tight clusters, one far below the range (negative bins), visited alike
    values += [rng.gauss(15.0 if i % 2 else -60.0, 0.1) for i in range(1600)]
    detector = trained(values)
    data = detector.to_json()
    assert data is not None and data["width"] > 3.0  # merged twice (from about 1)
    lo, width = data["lo"], data["width"]
    assert {b for b, _ in data["bins"]} == {math.floor((v - lo) / width) for v in values[400:]}
    later = T0 + 3000 * STEP
    assert not any(detector.explain_one((later, v)).novel for v in values[400:])


def test_a_rule_whose_detector_changed_carries_on_from_the_other_state() -> None:
    novelty = AnomalyRule.model_validate({"id": "r", "metric": "m"})
    seasonal = AnomalyRule.model_validate({"id": "r", "metric": "m", "detector": "seasonal"})
    state = AlertState()
    for i in range(20):
        at = T0 + i * STEP
        state = state._replace(memory=KIND.judge(novelty, state, at, observation(1.0, at)).memory)
    assert "bins" in state.memory
    at = T0 + 20 * STEP
    memory = KIND.judge(seasonal, state, at, observation(1.0, at)).memory
    assert "lvl_n" in memory and memory["n"] == 21  # the seasonal part carries on
    with pytest.raises(ValueError, match="v: expected 1 or 2"):  # a state nobody can read
        KIND.judge(seasonal, state._replace(memory={"v": 3}), at, observation(1.0, at))
    with pytest.raises(ValidationError, match="0 \\(off\\) or at least 1"):
        AnomalyParams(surprise_long_halflife=0.5)


def test_the_bins_kept_are_bounded_and_keep_the_latest() -> None:
    # at most 4 * max_span bins: two busy ones, six far ones visited twice (too few to widen the
    # bins), then one more far value: a bin visited twice is forgotten, not the newest one
    params = NoveltyParams(max_span=2, range_readings=10, quiet_readings=0, familiar_halflife=1e9)
    far = [v for v in (300.0, 400.0, 500.0, -300.0, -400.0, -500.0) for _ in range(2)]
    values = [20.0 + 0.05 * i for i in range(10)] + [20.0, 21.0] * 2500 + far + [900.0]
    detector = trained(values, params)
    data = detector.to_json()
    assert data is not None and len(data["bins"]) == 4 * params.max_span
    assert not detector.explain_one((T0 + len(values) * STEP, 900.0)).novel


def test_a_malformed_state_is_refused_by_name() -> None:
    data = trained(noisy(500)).to_json()
    assert data is not None
    with pytest.raises(ValueError, match="malformed"):
        NoveltyDetector(None, {**data, "bins": [[0, None]]})
    with pytest.raises(ValueError, match="hours: expected a list of 24"):
        NoveltyDetector(None, {**data, "hours": data["hours"][1:]})
    bad_hours: list[object] = [
        ["x", 1.0],
        [2.0, 1.0],
        [1.0],
        [0.0, math.inf],
        "12",
        ["1", "2"],
        [1, 2, 3],
        [True, True],
        {0: 1, 1: 2},
    ]
    for bad in bad_hours:
        with pytest.raises(ValueError, match=r"hours\[3\]: malformed"):
            NoveltyDetector(None, {**data, "hours": [*data["hours"][:3], bad, *data["hours"][4:]]})
    far = [-9e307, 9e307]  # a series may take values this far apart: its state is kept
    assert NoveltyDetector(None, {**data, "hours": [far] * 24}).to_json()["hours"] == [far] * 24  # type: ignore[index]
    without = {k: v for k, v in data.items() if k != "new_bins"}
    with pytest.raises(ValueError, match="new_bins: missing"):
        NoveltyDetector(None, without)
    readings = data["readings"]
    wrongs: tuple[tuple[str, object], ...] = (
        ("readings", -1.0),
        ("readings", math.nan),
        ("readings", math.inf),
        ("readings", "12"),
        ("new_bins", readings * 2),  # more new bins than readings
        ("new_to_hour", -0.5),
        ("new_to_hour", True),
        ("run", -1),
        ("run", 2.5),
        ("run_side", 2),
        ("judged", True),
        ("run_best", "3"),
        ("loudest", 1.5),
    )
    for key, wrong in wrongs:
        with pytest.raises(ValueError, match=f"{key}: malformed"):
            NoveltyDetector(None, {**data, key: wrong})
    with pytest.raises(ValueError, match="lvl_n: malformed"):
        SeasonalDetector(None, {**data["seasonal"], "lvl_n": [1, {}]})


def test_a_version_1_state_is_adopted() -> None:
    data = trained(noisy(1000)).to_json()
    assert data is not None
    old = {**data, "v": 1, "bins": [b for b, _ in data["bins"]]}
    del old["w"]
    adopted = NoveltyDetector(None, old)
    assert adopted.to_json()["bins"] == [[b, 1.0] for b, _ in data["bins"]]  # type: ignore[index]
    assert adopted.score_one((T0 + 1000 * STEP, 20.0)) < 0.5


def test_a_state_before_the_counts_of_new_values_is_adopted_with_every_bin_new_once() -> None:
    params = NoveltyParams()
    counts = ("readings", "new_bins", "new_to_hour", "hours", "run", "run_best", "loudest")
    for n in (1000, 20_000):
        data = trained(noisy(n)).to_json()
        assert data is not None and data["v"] == 2
        old = {k: v for k, v in data.items() if k not in counts}
        adopted = NoveltyDetector(None, old).to_json()
        assert adopted is not None
        counted = n - params.range_readings  # readings since the range was fixed, decayed:
        knobs = params._knobs
        readings = knobs.memory * (1.0 - knobs.grow**-counted)  # at most the memory
        assert readings < min(counted, knobs.memory)
        assert adopted["readings"] == pytest.approx(data["w"] * readings)
        share = len(data["bins"]) / counted  # each bin new once
        assert adopted["new_bins"] == pytest.approx(data["w"] * readings * share)
        assert adopted["hours"] == [None] * 24 and adopted["new_to_hour"] == 0.0
    young = trained(noisy(100)).to_json()  # the range is not fixed yet: nothing counted
    assert young is not None and young["width"] == 0.0
    adopted = NoveltyDetector(None, {k: v for k, v in young.items() if k not in counts}).to_json()
    assert adopted is not None and adopted["readings"] == adopted["new_bins"] == 0.0


def test_the_state_round_trips_through_json() -> None:
    values = noisy(3000)
    values[2000:2005] = [30.0] * 5
    detector = trained(values[:2500])
    again = NoveltyDetector(None, json.loads(json.dumps(detector.to_json())))
    assert again.to_json() == detector.to_json()
    rest = points(values[2500:], start=2500)
    assert score_series(again, rest) == score_series(detector, rest)


def test_new_values_are_counted_in_the_units_of_the_visits_with_a_prior_of_one_in_ten() -> None:
    params = NoveltyParams(
        range_readings=10, quiet_readings=0, max_span=10**6, familiar_halflife=1e9
    )
    values = [float(i) for i in range(10)]  # the range: 0 to 9, a bin of 0.9
    values += [100.0, 200.0, 300.0, 400.0, 500.0]  # five readings, each in a new bin
    detector = trained(values, params)
    data = detector.to_json()
    assert data is not None
    assert data["readings"] / data["w"] == pytest.approx(5.0)
    assert data["new_bins"] / data["w"] == pytest.approx(5.0)
    score_series(detector, points([100.0, 200.0, 300.0], start=len(values)))  # three repeats
    data = detector.to_json()
    assert data is not None
    assert data["readings"] / data["w"] == pytest.approx(8.0)
    assert data["new_bins"] / data["w"] == pytest.approx(5.0)
    why = detector.explain_one((T0 + 100 * STEP, 600.0))
    assert why.new_every == pytest.approx((8.0 + 10.0) / (5.0 + 1.0))


def test_the_score_explains_itself() -> None:
    detector = trained(noisy(3000))
    why = detector.explain_one((T0 + 3000 * STEP, 35.0))
    assert why.score == detector.score_one((T0 + 3000 * STEP, 35.0)) > 0.9
    assert why.low < 20.0 < why.high and abs(why.expected - 20.0) < 1.0
    assert why.high < 35.0 and why.model == "level"
    assert why.rarity > 1e4 and why.novel
    assert why.seen_low is not None and why.seen_high is not None and why.seen_high < 35.0
    assert f"expected {why.expected:.4g}" in why.text and f"{why.high:.4g}" in why.text
    assert "never seen" in why.text
    # the score's cap is no measurement: a full score names no count of readings
    assert (
        "a deviation past the top of the scale;" in why.text and "deviation about" not in why.text
    )


def calm_then_noisy() -> list[float]:
    rng = random.Random(7)  # calm, then two and a half times as noisy, no reading far out
    return noisy(3000) + [20.0 + max(-3.0, min(3.0, rng.gauss(0.0, 2.5))) for _ in range(300)]


def test_a_score_set_by_the_noise_says_so() -> None:
    values = calm_then_noisy()
    detector = trained(values[:3000])
    whys = []
    for x in points(values[3000:], start=3000):
        whys.append(detector.explain_one(x))
        detector.learn_one(x)
    loudest = max(whys, key=lambda why: why.score)
    assert loudest.seasonal_score > 0.9 and loudest.noise > 1.3 and not loudest.noise_damped
    # a familiar value (the series has no season), but noise is no matter of the value: undamped
    assert loudest.score == loudest.seasonal_score and not loudest.familiar
    assert "took often lately" not in loudest.text
    assert loudest.noise_s == NOISE_HALFLIFE * STEP.total_seconds()
    assert loudest.noise_rarity == 10.0 ** (loudest.seasonal_score * SURPRISE_FULL)
    assert loudest.rarity < 100  # the reading's own deviation is ordinary, and says so
    assert f"; a deviation about once in {about(loudest.rarity)} readings" in loudest.text
    assert (
        "the noise lately set the score: the forecast's errors, each counted to 4 spreads and "
        "averaged with a half-life of about 6 hours, came to about "
        f"{loudest.noise:.2g} times the usual spread, noise like this about once in "
        f"{about(loudest.noise_rarity)} readings" in loudest.text
    ), loudest.text
    # a reading whose deviation scores as high as the noise is the deviation's (a tie too)
    at = loudest_at = T0 + (3000 + whys.index(loudest)) * STEP
    spike = trained(values[: 3000 + whys.index(loudest)]).explain_one((at, 60.0))
    assert spike.seasonal_score == 1.0 and not spike.noise and "noise" not in spike.text
    assert spike.top and not loudest.top and not loudest.noise_top
    assert "a deviation past the top of the scale" in spike.text, loudest_at


def test_a_rule_that_switches_the_noise_off_forgets_it_and_explains_deviations() -> None:
    values = calm_then_noisy()
    on = trained(values[:3100])
    state = on.to_json()
    assert state is not None and state["seasonal"]["noise_n"] > 0
    off = NoveltyDetector(NoveltyParams(seasonal=AnomalyParams(noise_halflife=0)), state)
    why = off.explain_one((T0 + 3100 * STEP, 23.0))
    assert not why.noise and "noise" not in why.text and "a deviation about once" in why.text
    off.learn_one((T0 + 3100 * STEP, 23.0))
    forgotten = off.to_json()
    assert forgotten is not None and forgotten["seasonal"]["noise_n"] == 0.0
    assert forgotten["seasonal"]["hist_v"] == [0.0] * 48


def test_a_seasonal_state_is_adopted() -> None:
    values = noisy(1000)
    seasonal = SeasonalDetector(UNDER)
    score_series(seasonal, points(values))
    detector = NoveltyDetector(None, seasonal.to_json())
    rest = points(noisy(200, seed=9), start=1000)
    assert score_series(detector, rest) == score_series(seasonal, rest)  # range not fixed yet


def test_the_seasonal_parameters_a_rule_sets_are_kept_and_the_others_are_the_detectors() -> None:
    values = points(noisy(390))  # the range is not fixed yet: the seasonal score alone
    assert score_series(NoveltyDetector(), values) == score_series(SeasonalDetector(UNDER), values)
    assert NoveltyParams(seasonal=AnomalyParams(surprise_long_halflife=None)).in_force == UNDER
    seasonal_own = {
        "surprise_long_halflife": 0.0,
        "surprise_full": 6.0,
        "refractory_halflife": 288,
        "noise_halflife": 0.0,
    }
    as_alone = NoveltyDetector(NoveltyParams(seasonal=AnomalyParams(**seasonal_own)))
    assert score_series(as_alone, values) == score_series(SeasonalDetector(), values)
    for name, value in seasonal_own.items():  # each one set, the others the detector's
        kept = NoveltyParams(seasonal=AnomalyParams(**{name: value, "warmup": 50})).in_force
        assert kept == UNDER.model_copy(update={name: value, "warmup": 50})


def test_a_rules_params_keep_the_novelty_defaults_through_a_round_trip() -> None:
    rule = AnomalyRule.model_validate({"id": "r", "metric": "m", "params": {"warmup": 50}})
    in_force = rule.novelty.in_force
    assert (in_force.warmup, in_force.surprise_full, in_force.refractory_halflife) == (
        50,
        SURPRISE_FULL,
        REFRACTORY_HALFLIFE,
    )
    for again in (
        AnomalyRule.model_validate(rule.model_dump()),
        AnomalyRule.model_validate_json(rule.model_dump_json()),
    ):
        assert again.novelty.in_force == in_force
    # the seasonal detector alone keeps its own: the two differ
    assert SeasonalDetector().params._d.full < in_force._d.full
    assert SeasonalDetector().params._d.refractory < in_force._d.refractory


def test_a_copy_with_other_params_derives_its_parameters_afresh() -> None:
    """``model_copy(update=...)`` keeps pydantic's copy of the cached properties unless the
    model is a ``Derived`` one: a copy would go on with the original's derived values."""
    rule = AnomalyRule.model_validate({"id": "r", "metric": "m"})
    assert rule.novelty.in_force.surprise_full == SURPRISE_FULL  # derived, and cached
    assert rule.novelty.in_force._d.full == SURPRISE_FULL
    copy = rule.model_copy(update={"params": AnomalyParams(surprise_full=5.0)})
    assert copy.novelty.in_force.surprise_full == 5.0
    assert copy.novelty.in_force._d.full == 5.0
    params = NoveltyParams()
    assert params.in_force.refractory_halflife == REFRACTORY_HALFLIFE
    other = params.model_copy(update={"seasonal": AnomalyParams(refractory_halflife=100)})
    assert other.in_force.refractory_halflife == 100
    red = {WarningLevel.RED: 0.5}  # a copy is not validated: the level as the model holds it
    assert rule.model_copy(update={"levels": red}).highest_first == ((WarningLevel.RED, 0.5),)
    assert rule.model_copy().novelty is rule.novelty  # nothing changed: kept


def spike_then_shift() -> list[float]:
    """A noisy series with a spike at reading 2000, then a level 8 spreads up from 2200."""
    values = noisy(3000)
    values[2000] = 40.0
    values[2200:] = [v + 8.0 for v in values[2200:]]
    return values


def test_a_second_event_within_days_of_a_high_score_is_damped_more_under_novelty() -> None:
    values = spike_then_shift()
    alone = score_series(SeasonalDetector(), points(values))
    deviations = NoveltyParams(seasonal=AnomalyParams(noise_halflife=0)).in_force
    under = score_series(SeasonalDetector(deviations), points(values))
    assert alone[2000] == under[2000] == 1.0
    assert max(under[2200:2210]) < 0.5 * max(alone[2200:2210])  # 0.08 against 0.18


def test_the_noise_has_its_own_refractory_period_so_a_shift_after_a_spike_is_seen() -> None:
    # the shift's first readings, before the level follows it, are errors of 8 spreads: the
    # noise lately is rare though the deviation's score is damped by the spike's
    values = spike_then_shift()
    under = score_series(SeasonalDetector(NoveltyParams().in_force), points(values))
    assert under[2000] == 1.0
    assert max(under[2001:2200]) < 0.2  # the spike alone does not make the series noisy
    assert max(under[2200:2210]) > 0.5


@pytest.mark.parametrize("recent", [0.0, 0.2, 0.5, 0.9, 0.999])
def test_the_refractory_damping_is_undone_for_the_explanation(recent: float) -> None:
    before = AnomalyState(0.0, 1.0)
    before.recent = recent
    for u in [0.0, 0.05, 0.3, 0.5, 0.7, 1.0]:
        damped = u * (1.0 - recent) if u <= recent else u  # as the seasonal detector damps
        got, was_damped = _undamped(0.99, before, damped)
        assert got == pytest.approx(u) and was_damped == (0.0 < u <= recent)  # 0: nothing to undo


@pytest.mark.parametrize("noise", [0.0, None], ids=["deviations only", "with the noise"])
def test_a_damped_deviation_is_explained_by_its_own_rarity(noise: float | None) -> None:
    values = spike_then_shift()
    detector = NoveltyDetector(NoveltyParams(seasonal=AnomalyParams(noise_halflife=noise)))
    for x in points(values[:2200]):
        detector.step(x)
    why = detector.explain_one(points(values, start=0)[2200])
    assert why.damped and why.seasonal_score < 0.2  # the score the reading got
    # the deviation itself: about once in 700 readings, not once in 4 (10 ** (0.08 * 7.25))
    assert why.rarity > 600
    assert (
        "a deviation about once in 700 readings (its score damped: it came within days of a higher one)"
        in why.text
    )
    if noise is None:  # the first error of a shift raised the noise over the damped deviation
        assert (
            why.noise
            and why.noise_damped
            and why.noise_rarity > 10.0 ** (why.seasonal_score * SURPRISE_FULL)
        )
        assert "(its score damped: it came within days of louder noise)" in why.text
    spike = trained(values[:1500]).explain_one((T0 + 1500 * STEP, 40.0))  # no high score before
    assert not spike.damped and "damped" not in spike.text


def test_state_json_is_rejected_when_incomplete() -> None:
    data = trained(noisy(500)).to_json()
    assert data is not None
    with pytest.raises(ValueError, match="bins"):
        NoveltyDetector(None, {k: v for k, v in data.items() if k != "bins"})
    with pytest.raises(ValueError, match="v: expected 1 or 2, got 99"):
        NoveltyDetector(None, {**data, "v": 99})
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize("name, key", [("novelty", "bins"), ("seasonal", "lvl_n")])
def test_the_rule_kind_uses_the_named_detector(name: str, key: str) -> None:
    rule = AnomalyRule.model_validate({"id": "r", "metric": "m", "detector": name})
    memory = KIND.judge(rule, AlertState(), T0, observation(1.0, T0)).memory
    assert key in memory
    assert AnomalyRule.model_validate({"id": "r", "metric": "m"}).detector == "novelty"
    assert AnomalyRule.model_validate({"id": "r", "metric": "m"}).params == AnomalyParams()


def test_the_benchmark_split_is_half_of_each_category_by_name() -> None:
    names = [f"{c}/f{i}.csv" for c in ("a", "b") for i in range(7)]
    tune = tuning_files(list(names))
    assert tune == tuning_files(list(reversed(names)))
    assert {sum(n.startswith(c) for n in tune) for c in ("a/", "b/")} == {4}


def test_an_anomaly_alert_says_what_the_value_was_judged_against() -> None:
    from rules import parse_rules
    from rules.testing import RuleRun

    example = KIND.example()
    run = RuleRun(parse_rules(example.rules, "anomaly.yaml"))
    for step in example.steps:
        run.step(step)
    fired = [a for a in run.alerts if a.status.value == "firing"]
    assert fired, "the example's spike fires"
    assert "expected" in fired[0].summary and "usual range" in fired[0].summary
    # what was measured, beside the score that is the alert's value (up or down, how far)
    spike = next(v for kind, _d, _m, v, *_ in example.steps if kind == "read" and v > 150)
    assert f"load {spike:.4g} measured, expected " in fired[0].summary
    # the same as numbers, for a consumer of the alerts topic (the summary is cut at 500)
    why = fired[0].anomaly
    assert why is not None and why.cause is AnomalyCause.DEVIATION, why
    assert why.measured == spike and why.low < why.expected < why.high < spike
    assert f"expected {why.expected:.4g} ({why.baseline} baseline)" in fired[0].summary
    assert f"usual range {why.low:.4g} to {why.high:.4g}" in fired[0].summary
    rarity = "past the top of the scale" if why.rarity is None else f"once in {about(why.rarity)}"
    assert f"a deviation {rarity}" in fired[0].summary.replace("about once", "once")
    assert why.usual_high is not None and why.usual_high < spike and why.hour in range(24)
    resolved = [a for a in run.alerts if a.status.value == "resolved"]
    assert resolved, "the wave after the spike resolves it"
    assert resolved[-1].anomaly is None  # an end says no why; the stored episode keeps it
    # On the topic, an alert without a why has no field for it: a consumer of an earlier
    # version (which refuses fields it does not know) takes it.
    assert '"anomaly":{' in fired[0].model_dump_json()
    assert '"anomaly"' not in resolved[-1].model_dump_json()
    # Its value is the score: "load now 0" would read as the load gone.
    assert resolved[-1].summary.endswith(
        f"; load no longer unusual (score {resolved[-1].value:.2f})"
    )


def test_an_anomaly_alert_on_a_run_says_how_long_it_lasted() -> None:
    from rules import parse_rules
    from rules.testing import RuleRun

    rules = "rules: [{id: r, kind: anomaly, metric: speed, levels: {blue: 0.6}}]"
    run = RuleRun(parse_rules(rules, "anomaly.yaml"))
    values = [*dips(), *[12.0] * 12]
    for i, value in enumerate(values):  # every 5 minutes
        run.step(("read", "road-1", "speed", value, 5 * i))
    fired = [a for a in run.alerts if a.status.value == "firing"]
    runs = [a.summary for a in fired if "readings in a row" in a.summary]
    assert len(runs) == 1, [a.summary for a in fired]
    assert (
        "speed 12 measured, 4 readings in a row (about 20 minutes) among the lowest 3% of the "
        "values seen lately (the longest such run lately: 1); expected 12" in runs[0]
    ), runs[0]
    why = next(a.anomaly for a in fired if "readings in a row" in a.summary)
    assert why is not None and (why.cause, why.run, why.measured) == (AnomalyCause.RUN, 4, 12.0)
