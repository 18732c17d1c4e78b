"""One conformance test for every registered indicator formula: folding then merging the
states of any split of the samples (of unequal weights), in any order, finishes as folding them
all; states survive JSON; a formula that averages weighs its samples."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping

import pytest

from rules.indicators import FORMULAS, IndicatorSpec, finish, fold, merge

Sample = dict[str, float]


@pytest.fixture(params=list(FORMULAS), ids=list(FORMULAS))
def spec(request: pytest.FixtureRequest) -> IndicatorSpec:
    formula = FORMULAS[request.param]
    metric = "m" if formula.needs_metric else None
    return IndicatorSpec(id="x", kind=request.param, metric=metric, device_types=("sensor",))


def samples(spec: IndicatorSpec, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    metrics = sorted(spec.metrics()) or ["m"]
    return [
        {m: float(rng.randint(1, 300)) for m in metrics if rng.random() < 0.8}
        for _ in range(rng.randint(1, 40))
    ]


def folded(spec: IndicatorSpec, values: list[Sample]) -> dict[str, float]:
    """The samples folded, each of a weight of its own (1 to 300 seconds), as a device's
    readings weigh the time since its previous one."""
    state: dict[str, float] = {}
    for v in values:
        weight = float(1 + int(sum(v.values()) * 37) % 300)
        fold(spec, state, v, dict.fromkeys(v, weight))
    return state


def split(values: list[Sample], rng: random.Random) -> list[list[Sample]]:
    cuts = sorted(rng.sample(range(len(values) + 1), k=min(3, len(values) + 1)))
    return [values[a:b] for a, b in zip([0, *cuts], [*cuts, len(values)], strict=True)]


def close(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-12) for k in a)


def result(spec: IndicatorSpec, state: Mapping[str, float]) -> tuple[object, ...]:
    value, band, detail = finish(spec, state, reporting=3, expected=4)
    return (None if value is None else round(value, 6), band, sorted(detail.items()))


@pytest.mark.parametrize("seed", range(20))
def test_merging_any_split_finishes_as_folding_all(spec: IndicatorSpec, seed: int) -> None:
    rng = random.Random(seed)
    values = samples(spec, seed)
    parts = [folded(spec, part) for part in split(values, rng)]
    rng.shuffle(parts)
    merged: dict[str, float] = {}
    for part in parts:
        merge(merged, part)
        FORMULAS[spec.kind].merge({}, part)  # the formula's own merge takes the same states
    assert close(merged, folded(spec, values))
    assert result(spec, merged) == result(spec, folded(spec, values))


@pytest.mark.parametrize("seed", range(10))
def test_merge_is_associative_and_commutative(spec: IndicatorSpec, seed: int) -> None:
    a, b, c = (folded(spec, samples(spec, seed * 3 + i)) for i in range(3))
    formula = FORMULAS[spec.kind]

    def merged(*states: Mapping[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in states:
            formula.merge(out, s)
        return out

    assert close(merged(merged(a, b), c), merged(a, merged(b, c)))
    assert close(merged(a, b), merged(b, a))


def test_a_state_round_trips_through_json(spec: IndicatorSpec) -> None:
    state = folded(spec, samples(spec, 1))
    again = json.loads(json.dumps(state))
    assert again == state and result(spec, again) == result(spec, state)


def test_a_reading_feeds_an_indicator_as_its_formula_says(spec: IndicatorSpec) -> None:
    """A formula of devices (``counts_devices``) is fed by every reading of its device types
    and reads no value; any other is fed only by a reading carrying one of its metrics, and
    a reading carrying none of them would fold to nothing (so passing it by loses nothing)."""
    formula = FORMULAS[spec.kind]
    unrelated: Sample = {"not_a_metric_of_it": 1.0}
    if formula.counts_devices:
        assert spec.fed_by(unrelated) and spec.fed_by({})
        assert folded(spec, samples(spec, 1)) == {}
        assert result(spec, {})[0] is not None  # its value comes of the counts alone
    else:
        assert not spec.fed_by(unrelated) and not spec.fed_by({})
        assert all(spec.fed_by({m: 1.0}) for m in spec.metrics())
        state = folded(spec, samples(spec, 1))
        assert folded(spec, [*samples(spec, 1), unrelated]) == state
        assert result(spec, {})[0] is None  # no samples, no value


def test_a_formula_that_averages_weighs_its_samples(spec: IndicatorSpec) -> None:
    """One sample weighing as much as three equal ones finishes as the four, for every
    formula whose value is a mean of its samples (a maximum and a rate of devices ignore
    weights)."""
    metrics = sorted(spec.metrics()) or ["m"]
    low, high = {m: 20.0 for m in metrics}, {m: 90.0 for m in metrics}
    heavy: dict[str, float] = {}
    fold(spec, heavy, low, dict.fromkeys(low, 3.0))
    fold(spec, heavy, high, dict.fromkeys(high, 1.0))
    many: dict[str, float] = {}
    for v in (low, low, low, high):
        fold(spec, many, v)
    equal: dict[str, float] = {}
    fold(spec, equal, low)
    fold(spec, equal, high)
    assert result(spec, heavy) == result(spec, many)
    averages = spec.kind in ("aqi", "mean", "leq", "congestion")
    assert (result(spec, heavy) != result(spec, equal)) is averages
