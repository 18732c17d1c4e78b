"""One conformance test for every registered anomaly detector: 0 while warming up, scores in
[0, 1], a spike and a level shift stand out, deterministic, online (a score never changes when
later points are appended), bounded state over 100k points, and a JSON round trip that scores
exactly as the original."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from rules.detectors import DETECTORS, DetectorFactory
from rules.testing import score_series

T0 = datetime(2026, 3, 2, tzinfo=UTC)
N = 1500


def series(seed: int = 3, spike: float = 400.0) -> list[tuple[datetime, float]]:
    """A daily wave with noise, a spike and a level shift, every 5 minutes."""
    rng = random.Random(seed)
    out = []
    for i in range(N):
        value = 50 + 10 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 1)
        value += spike if i == N - 300 else 0
        value += 30 if i > N - 100 else 0
        out.append((T0 + timedelta(minutes=5 * i), value))
    return out


@pytest.fixture(params=list(DETECTORS.values()), ids=list(DETECTORS))
def make(request: pytest.FixtureRequest) -> DetectorFactory:
    return request.param  # type: ignore[no-any-return]


def test_a_new_series_scores_zero_while_warming_up(make: DetectorFactory) -> None:
    scores = score_series(
        make(), [(ts, 500.0 if i == 3 else 1.0) for i, (ts, _) in enumerate(series()[:10])]
    )
    assert scores == [0.0] * 10


def test_scores_are_in_range_and_a_spike_stands_out(make: DetectorFactory) -> None:
    scores = score_series(make(), series())
    assert all(0.0 <= s <= 1.0 and math.isfinite(s) for s in scores)
    assert scores[N - 300] == max(scores) > 0.5


def test_a_level_shift_stands_out(make: DetectorFactory) -> None:
    # on its own: a spike less than a day before damps it (the seasonal refractory period)
    scores = score_series(make(), series(spike=0.0))
    assert max(scores[N - 100 : N - 90]) > max(0.5, *scores[: N - 100])


def test_a_score_does_not_change_when_later_points_are_appended(make: DetectorFactory) -> None:
    points = series()
    full = score_series(make(), points)
    for cut in (200, N - 300, N - 100):
        assert score_series(make(), points[:cut]) == full[:cut]


def test_state_stays_bounded_over_100k_points(make: DetectorFactory) -> None:
    rng = random.Random(5)
    detector = make()
    sizes = []
    level = 50.0
    for i in range(100_000):
        if i % 500 == 0:  # a new level now and then: novel values keep coming
            level = rng.uniform(-1e4, 1e4)
        x = (T0 + timedelta(minutes=5 * i), level + rng.gauss(0, 1) * (1 + i % 97))
        detector.learn_one(x)
        if i % 20_000 == 19_999:
            sizes.append(len(json.dumps(detector.to_json())))
    assert max(sizes) < 12_000, sizes


def test_the_same_series_gives_the_same_scores(make: DetectorFactory) -> None:
    assert score_series(make(), series()) == score_series(make(), series())


def test_scoring_does_not_learn(make: DetectorFactory) -> None:
    detector = make()
    score_series(detector, series()[:500])
    before = json.dumps(detector.to_json())
    detector.score_one((T0 + timedelta(days=30), 1e6))
    assert json.dumps(detector.to_json()) == before


def test_state_is_bounded(make: DetectorFactory) -> None:
    detector = make()
    score_series(detector, series()[:300])
    small = len(json.dumps(detector.to_json()))
    score_series(detector, series()[300:])
    assert len(json.dumps(detector.to_json())) < max(2 * small, 8_000)


def test_state_round_trips_through_json(make: DetectorFactory) -> None:
    points = series()
    detector = make()
    score_series(detector, points[:700])
    copy = make(json.loads(json.dumps(detector.to_json())))
    assert copy.to_json() == detector.to_json()
    assert score_series(copy, points[700:]) == score_series(detector, points[700:])
