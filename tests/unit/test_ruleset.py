from importlib import resources

import pytest

from rules import RuleFileError, RuleSet, parse_rules
from rules.testing import RuleRun, observation, story


def test_the_shipped_default_rules_are_valid() -> None:
    rules = parse_rules(
        resources.files("rules").joinpath("default.yaml").read_text(), "default.yaml"
    )
    assert {"waterlogging-depth", "pm25-pollution", "camera-smoke-fire"} <= {r.id for r in rules}
    assert [j.rule_id for j in rules.by_metric["water_level_cm"]] == [
        "waterlogging-depth",
        "water-rising-fast",
    ]
    kinds = {r.kind for r in rules}
    assert {"threshold", "rate", "absence", "composite"} <= kinds


def test_every_problem_is_named_with_file_line_and_field() -> None:
    text = """rules:
  - id: ok
    metric: pm25
    levels: {yellow: 115}
  - id: bad-levels
    metric: pm25
    levels: {yellow: 5, blue: 7}
  - id: typo
    metrik: pm25
    levels: {red: 1}
"""
    with pytest.raises(RuleFileError) as err:
        parse_rules(text, "city.yaml")
    problems = {(p.line, p.field) for p in err.value.problems}
    assert (7, "rules.1.levels") in problems
    assert (8, "rules.2.metric") in problems
    assert (9, "rules.2.metrik") in problems
    assert "city.yaml:9: rules.2.metrik: Extra inputs are not permitted" in str(err.value)


def test_duplicate_ids_are_refused() -> None:
    text = "rules:\n  - {id: a, metric: m, levels: {red: 1}}\n  - {id: a, metric: n, levels: {red: 2}}\n"
    with pytest.raises(RuleFileError, match="duplicate rule id 'a'"):
        parse_rules(text)


def test_a_rate_rule_whose_least_span_exceeds_its_window_is_refused() -> None:
    text = (
        "rules:\n  - id: r\n    kind: rate\n    metric: m\n    over: 10m\n"
        "    min_span: 20m\n    levels: {red: 1}\n"
    )
    with pytest.raises(RuleFileError) as err:
        parse_rules(text, "f.yaml")
    (problem,) = err.value.problems
    assert (problem.line, problem.field) == (6, "rules.0.min_span")
    assert "min_span 20m is longer than over 10m" in str(problem)
    assert "never fire" in str(problem)


@pytest.mark.parametrize("text", ["rules: [", "- just a list", ""])
def test_not_a_rule_file(text: str) -> None:
    with pytest.raises(RuleFileError):
        parse_rules(text, "x.yaml")


def test_a_refused_condition_is_the_only_problem_named() -> None:
    text = "rules:\n  - id: c\n    kind: composite\n    conditions:\n      - {metric: m}\n"
    with pytest.raises(RuleFileError) as err:
        parse_rules(text, "f.yaml")
    assert [(p.line, p.field) for p in err.value.problems] == [(5, "rules.0.conditions.0")]


def test_the_rules_of_a_scope_are_those_in_scope_and_the_memory_of_scopes_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import rules.ruleset

    rs = parse_rules(
        "rules: [{id: all, metric: m, levels: {red: 1}},"
        " {id: aq, metric: m, levels: {red: 1}, device_types: [air_quality]},"
        " {id: east, metric: m, levels: {red: 1}, places: [east]}]"
    )
    assert rs.scoped(("air_quality", None, ("c", "west"), ())) == {"all", "aq"}
    assert rs.scoped(("noise", None, ("c", "east", "s1"), ())) == {"all", "east"}
    monkeypatch.setattr(rules.ruleset, "SCOPES_KEPT", 3)
    for i in range(10):
        assert rs.scoped(("noise", None, ("c", f"d{i}"), ())) == {"all"}
    assert len(rs.scopes) <= 3


def test_accepts_is_asked_only_of_a_rule_that_may_refuse_an_observation() -> None:
    rs = parse_rules(
        "rules: [{id: smoke, metric: camera.smoke_fire, levels: {red: 0.5}, min_confidence: 0.8},"
        " {id: deep, metric: water_cm, levels: {red: 40}},"
        " {id: fast, kind: rate, metric: water_cm, over: 15m, levels: {red: 2}}]"
    )
    judged = {j.rule_id: j.filters for js in rs.by_metric.values() for j in js}
    assert judged == {"smoke": True, "deep": False, "fast": False}


def shipped() -> RuleSet:
    return parse_rules(resources.files("rules").joinpath("default.yaml").read_text())


def test_the_shipped_depth_rule_does_not_flap_on_a_ripple() -> None:
    """Water at the orange level (25 cm) rippling around it by a centimetre, a reading every
    5 s, stays one orange alert; it steps down once the water held under it for a minute."""
    run = RuleRun(shipped())
    ripple = [26.0, 24.8, 25.9, 24.6, 25.4, 24.9, 25.2]
    for i, depth in enumerate([*ripple, *[20.0] * 16]):
        run.read([observation(depth, i / 12, metric="water_level_cm", device_type="water_level")])
    depth_alerts = [a for a in run.alerts if a.rule_id == "waterlogging-depth"]
    assert story(depth_alerts) == [
        (0.0, "firing", "orange"),
        (pytest.approx(19 / 12), "firing", "yellow"),
    ]


@pytest.mark.parametrize(("device_type", "alerted"), [("camera", True), ("water_level", False)])
def test_the_shipped_camera_rules_judge_cameras_alone(device_type: str, alerted: bool) -> None:
    run = RuleRun(shipped())
    for metric in ("camera.smoke_fire", "camera.waterlogging"):
        seen = observation(0.9, 0, metric=metric, device_type=device_type, confidence=0.95)
        run.read([seen])
    assert bool(run.alerts) is alerted


def test_a_file_whose_aliases_expand_past_reason_is_refused_before_it_is_walked() -> None:
    """Some 360 bytes of nested aliases expand to 10^7 values: reading them ran out of memory.
    The file is refused, saying so, before anything walks the expansion."""
    from rules import RuleFileError, parse_rules

    rows = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    rows += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    with pytest.raises(RuleFileError) as refused:
        parse_rules("\n".join([*rows, "rules: *a6"]), "bomb.yaml")
    assert "bomb.yaml:1: its aliases (*name) expand it to 23,456,797 values, past 100,000" in str(
        refused.value
    )
    # an alias or two, as people use them, is no problem
    shared = (
        "rules:\n  - {id: a, metric: m, levels: &depth {blue: 5, red: 40}}\n"
        "  - {id: b, metric: n, levels: *depth}\n"
    )
    assert [r.id for r in parse_rules(shared)] == ["a", "b"]
