"""What ``up`` says of the stream's rule file: the versions it takes and the changes it
refuses, with the problems, read off the stream's metrics (the exposition as the stream's
endpoint serves it, made here by the stream's own metrics object)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from cityvitals.settings import Settings
from streams.live import StreamMetrics
from wiring.cli_stack import file_watches

GOOD = "rules:\n  - {id: deep, metric: water_level_cm, levels: {red: 40}}\n"


def exposition(version: str, refused: int, rules: int) -> str:
    registry = CollectorRegistry()
    metrics = StreamMetrics(registry)
    metrics.rules_version.labels(version=version).set(1)
    metrics.rules.set(rules)
    metrics.reload_errors.inc(refused)
    return generate_latest(registry).decode()


def test_up_says_which_version_the_stream_took_and_what_it_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    (watch,) = file_watches(Settings(rules_file=path))
    assert watch.lines(exposition("aaa", 0, 1)) == []  # the baseline: nothing to say
    assert watch.lines(exposition("aaa", 0, 1)) == []
    assert watch.lines(exposition("bbb", 0, 2)) == [
        f"rules: the stream took {path}: version aaa -> bbb (2 rules)"
    ]
    path.write_text(GOOD + "  - {id: broken, metric: m, levels: {yelow: 300}, for: soon}\n")
    (refused,) = watch.lines(exposition("bbb", 1, 2))
    assert refused.startswith(f"rules: the stream refused a change to {path}, keeping version bbb:")
    assert f"{path}:3: rules.1.levels.yelow.[key]: Input should be 'blue'" in refused
    assert "'soon': give a duration such as 90s" in refused
    assert watch.lines(exposition("bbb", 1, 2)) == []  # said once
    path.write_text(GOOD + "  - {id: other, metric: m, levels: {yellow: 3}}\n")
    # mended: the last word on the screen is no longer the refusal (once)
    assert watch.lines(exposition("bbb", 1, 2)) == [
        f"rules: {path} parses again; version bbb stays in force until the stream takes a change"
    ]
    assert watch.lines(exposition("bbb", 1, 2)) == []
    path.write_text(GOOD)  # mended since: the stream's log has what it refused
    (later,) = watch.lines(exposition("bbb", 2, 2))
    assert later.endswith("see the stream's log (the file as it is now parses)")
    # 'rules: []' is a file the stream takes: every alert is off, and up says so
    assert watch.lines(exposition("ccc", 2, 0)) == [
        f"rules: the stream took {path}: version bbb -> ccc (0 rules: no alert can fire)"
    ]
    path.unlink()  # deleted while it runs: the stream keeps what it has, and up says so
    assert watch.lines(exposition("ccc", 2, 0)) == [
        f"rules: {path} is gone (deleted or moved): the stream keeps version ccc until a file"
        " is there again"
    ]
    assert watch.lines(exposition("ccc", 2, 0)) == []  # said once
    path.write_text(GOOD)
    assert watch.lines(exposition("ccc", 2, 0)) == [f"rules: {path} is there again"]


def test_up_says_which_incident_file_the_stream_took_and_what_it_refused(tmp_path: Path) -> None:
    from rules.incidents import parse_incident_config
    from streams.incidents import IncidentMetrics

    shipped = Path(__file__).parents[2] / "rules" / "incidents.yaml"
    path = tmp_path / "incidents.yaml"
    path.write_text(shipped.read_text())

    def served(version: str, refused: int) -> str:
        registry = CollectorRegistry()
        metrics = IncidentMetrics(registry)
        metrics.config_version.labels(version).set(1)
        metrics.config_errors.inc(refused)
        return generate_latest(registry).decode()

    (watch,) = file_watches(Settings(incidents_file=path))
    first = parse_incident_config(path.read_text()).version
    assert watch.lines(served(first, 0)) == []
    assert watch.lines(served("ccc", 0)) == [
        f"incidents: the stream took {path}: version {first} -> ccc"
    ]
    path.write_text("routes: []\n")
    (refused,) = watch.lines(served("ccc", 1))
    assert refused.startswith(
        f"incidents: the stream refused a change to {path}, keeping version ccc:"
    )
    assert f"{path}:1: routes: holds 0 items: at least 1" in refused


def test_up_warns_of_an_incident_file_id_that_names_no_rule(tmp_path: Path) -> None:
    """A misspelt rule id in a category sends the rule it meant to the catch-all route;
    'incidents check' said so, 'up' said nothing at its start nor when the stream took the
    file: it warns at both, as the check says it."""
    from wiring.cli_stack import _routing_warnings

    shipped = Path(__file__).parents[2] / "rules" / "incidents.yaml"
    path = tmp_path / "incidents.yaml"
    path.write_text(shipped.read_text())
    s = Settings(incidents_file=path)
    assert _routing_warnings(s) == []  # the shipped files agree
    path.write_text(shipped.read_text().replace("waterlogging-depth", "waterlogging-deep", 1))
    warned = _routing_warnings(s)
    assert any("'waterlogging-deep' names no rule of the rule file" in w for w in warned)
    assert any("'general' incidents" in w and "waterlogging-depth" in w for w in warned)
    assert all(w.startswith("warning: incident routing: ") for w in warned)
