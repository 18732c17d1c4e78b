"""``cityvitals`` as a shell runs it (``wiring.cli.main``): how a command ends when a service
does not answer, or a file it is given cannot be used."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cityvitals import db, kafka, native
from cityvitals.build import checkout_commit
from cityvitals.contracts import Profile
from cityvitals.settings import Settings
from wiring.cli import app, main
from wiring.stack import StackLock, StackPaths

DOWN = db.DatabaseUnavailable("connection refused")


def refuse(error: Exception) -> Callable[..., None]:
    def call(*_args: object, **_kwargs: object) -> None:
        raise error

    return call


@pytest.fixture
def no_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state folder no ``cityvitals up`` runs on, the commands' own."""
    monkeypatch.setenv("CITYVITALS_STATE_DIR", str(tmp_path))
    return tmp_path


HINT = (
    "  no local stack runs on the state folder {}: 'cityvitals up' (or './dev run') starts one "
    "there; a stack started in another folder is found from that folder, or with "
    "CITYVITALS_STATE_DIR set to its state folder\n"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["alerts", "list"],
        ["incidents", "list"],
        ["vitals", "sim"],
        ["maintain"],
        ["devices", "list"],  # the registry's commands end the same way
        ["users", "list"],
    ],
)
def test_a_database_that_does_not_answer_ends_any_command_naming_the_folder_of_no_stack(
    argv: list[str],
    no_stack: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(db, "connect", refuse(DOWN))
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 1
    assert capsys.readouterr().err == f"error: {DOWN}\n" + HINT.format(no_stack)


def test_kafka_that_does_not_answer_ends_the_command_naming_the_folder_no_stack_runs_on(
    no_stack: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    down = kafka.KafkaUnavailable("127.0.0.1:9092", "no answer")
    monkeypatch.setattr(kafka, "ensure_topics", refuse(down))
    with pytest.raises(SystemExit) as ended:
        main(["topics"])
    assert ended.value.code == 1
    assert capsys.readouterr().err == (
        "error: Kafka at 127.0.0.1:9092 is unavailable: no answer\n" + HINT.format(no_stack)
    )


@pytest.mark.parametrize(
    ("variable", "elsewhere"),
    [
        ("CITYVITALS_DATABASE_URL", "postgresql://cv@db.city.internal:5432/cityvitals"),
        ("CITYVITALS_KAFKA_BOOTSTRAP", "kafka-0.kafka:9092,127.0.0.1:9092"),
    ],
)
def test_a_service_on_another_host_gets_no_hint_about_a_local_stack(
    variable: str,
    elsewhere: str,
    no_stack: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A deployment's command started before its database or Kafka answers is told what did
    not answer, not to start a local stack."""
    monkeypatch.setenv(variable, elsewhere)
    monkeypatch.setattr(db, "connect", refuse(DOWN))
    down = kafka.KafkaUnavailable(elsewhere, "no answer")
    monkeypatch.setattr(kafka, "ensure_topics", refuse(down))
    with pytest.raises(SystemExit):
        main(["alerts", "list"] if variable.endswith("URL") else ["topics"])
    assert "no local stack" not in capsys.readouterr().err


def test_with_a_stack_running_on_the_folder_the_error_is_the_services_alone(
    no_stack: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stack runs but a service of it does not answer: where to start one is no help."""
    monkeypatch.setattr(db, "connect", refuse(DOWN))
    lock = StackLock(StackPaths(no_stack).lock)
    lock.acquire()
    try:
        with pytest.raises(SystemExit):
            main(["alerts", "list"])
    finally:
        lock.release()
    assert capsys.readouterr().err == f"error: {DOWN}\n"


def test_a_compiled_module_that_does_not_match_its_source_ends_any_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def stale() -> None:
        raise native.StaleNative("rules/engine.py: compiled from another version")

    monkeypatch.setattr(native, "check", stale)
    with pytest.raises(SystemExit) as ended:
        main(["rules", "check"])
    assert ended.value.code == 1
    assert capsys.readouterr().err == "error: rules/engine.py: compiled from another version\n"


def test_a_database_behind_the_code_says_to_migrate_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkout newer than the stack's database (a migration not applied yet): the command
    says so and what to do, where it ended in psycopg's traceback."""
    import psycopg

    missing = psycopg.errors.UndefinedColumn("column t.feedback_id does not exist\nLINE 1: ...")
    monkeypatch.setattr(db, "connect", refuse(missing))
    with pytest.raises(SystemExit) as ended:
        main(["alerts", "list"])
    assert ended.value.code == 1
    assert capsys.readouterr().err == (
        "error: the database is behind this version of cityvitals (column t.feedback_id does"
        " not exist): run 'cityvitals migrate', or restart the stack\n"
    )


def test_an_unexpected_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "connect", refuse(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["alerts", "list"])


def test_incidents_check_validates_a_file_and_names_each_problem(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[2] / "rules" / "incidents.yaml"
    ok = CliRunner().invoke(app, ["incidents", "check", str(shipped)])
    assert ok.exit_code == 0 and ok.output.endswith("OK\n"), ok.output
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(shipped.read_text().replace("pm25-pollution", "pm25-polution"))
    named = CliRunner().invoke(app, ["incidents", "check", str(misspelt)])
    assert named.exit_code == 1, named.output
    assert "'pm25-polution' names no rule of the rule file" in named.output
    assert ok.stderr == ""  # every shipped rule has its category; the misspelt one has none
    assert (
        "note: in no category, so their alerts open 'general' incidents for the catch-all "
        "route: pm25-pollution"
    ) in named.stderr
    broken = tmp_path / "incidents.yaml"
    broken.write_text("routes: []\ncategories: {flooding: {rules: [x], group_by: streeet}}\n")
    refused = CliRunner().invoke(app, ["incidents", "check", str(broken)])
    assert refused.exit_code == 1
    assert f"{broken}:2: categories.flooding.group_by: Input should be 'city'" in refused.output
    assert f"{broken}:1: routes: " in refused.output


@pytest.mark.parametrize(
    "command", [["devices", "import"], ["profiles", "put"], ["rules", "check"]]
)
def test_a_file_that_is_not_utf8_is_refused_naming_its_line(
    command: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        "device_id,device_type,place_path\ncapteur-é,air_quality,sh\n".encode("latin-1")
    )
    result = CliRunner().invoke(app, [*command, str(path)])
    assert result.exit_code == 1
    assert result.output == f"error: {path}:2: not UTF-8 (byte 0xe9); save the file as UTF-8\n"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["dead-beef", "acknowledge"], "incident id 'dead-beef'"),  # not its first digits
        (["0" * 32, "accept", "--dispatch", "D-1"], "dispatch id 'D-1'"),
    ],
)
def test_an_id_that_is_not_one_is_named_in_words(argv: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["incidents", "act", *argv])
    assert result.exit_code == 1
    assert result.output == f"error: {named} is not an id (32 hexadecimal digits, 0-9 a-f)\n"


@pytest.mark.parametrize("untold", [False, True])
def test_the_broker_note_comes_only_after_a_change_of_logins_no_broker_was_told(
    untold: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from contextlib import contextmanager

    from device_registry import Registry
    from wiring import services
    from wiring.cli_registry_common import registry

    fake = Registry.__new__(Registry)
    fake.broker, fake.broker_untold = None, False

    @contextmanager
    def open_registry(_settings: object) -> Iterator[Registry]:
        yield fake

    monkeypatch.setattr(services, "open_registry", open_registry)
    with registry() as reg:
        if untold:
            reg._sync_broker()  # what a device change does, with no local broker
    assert ("note: no local stack" in capsys.readouterr().err) is untold


BAD_RULES = "rules:\n  - id: x\n    kind: threshold\n    metric: pm25\n    above: banana\n"


def refused_at_start(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """What ``argv`` printed, ending with exit code 1 before anything started: ``up`` made no
    state folder."""
    monkeypatch.setenv("CITYVITALS_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 1
    assert not (tmp_path / "state").exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("argv", [["up"], ["run", "streams"]])
@pytest.mark.parametrize(
    ("text", "said"),
    [
        (BAD_RULES, "{f}:2: rules.0.levels: Field required\n{f}:5: rules.0.above: Extra inputs"),
        ("rules: []\n# caf\xe9\n".encode("latin-1"), "{f}:2: not UTF-8 (byte 0xe9)"),
        (None, "{f}: cannot read the file: No such file or directory"),
    ],
)
def test_a_rule_file_the_stream_would_refuse_ends_up_and_run_naming_each_problem(
    argv: list[str],
    text: str | bytes | None,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rules = tmp_path / "rules.yaml"
    if isinstance(text, str):
        rules.write_text(text)
    elif text is not None:
        rules.write_bytes(text)
    monkeypatch.setenv("CITYVITALS_RULES_FILE", str(rules))
    err = refused_at_start(argv, tmp_path, monkeypatch, capsys)
    assert err.startswith("error: " + said.format(f=rules)) and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["up", "--simulate", "--incident", "floood"], "--incident 'floood': kind must be"),
        (["up", "--incident", "flood"], "--incident needs --simulate"),
    ],
)
def test_up_checks_its_simulated_incidents_before_it_starts_anything(
    argv: list[str],
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = refused_at_start(argv, tmp_path, monkeypatch, capsys)
    assert err.startswith(f"error: {said}"), err


@pytest.mark.parametrize("variable", ["CITYVITALS_INDICATORS_FILE", "CITYVITALS_INCIDENTS_FILE"])
def test_up_checks_the_indicator_and_incident_files_too(
    variable: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "gone.yaml"
    monkeypatch.setenv(variable, str(missing))
    err = refused_at_start(["up"], tmp_path, monkeypatch, capsys)
    assert err == f"error: {missing}: cannot read the file: No such file or directory\n"


def test_rules_defaults_prints_the_shipped_rule_file(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import resources

    with pytest.raises(SystemExit) as ended:
        main(["rules", "defaults"])
    assert ended.value.code == 0
    printed = capsys.readouterr().out
    assert printed == resources.files("rules").joinpath("default.yaml").read_text()


def test_a_backtest_whose_range_ends_before_it_begins_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "alerts.jsonl"
    argv = ["rules", "backtest", "--rules", "rules/default.yaml", "--output", str(out)]
    with pytest.raises(SystemExit) as ended:
        main([*argv, "--from", "2026-11-01", "--to", "2026-10-01"])
    assert ended.value.code == 1
    assert "--from 2026-11-01T00:00:00+00:00 is not before --to" in capsys.readouterr().err
    assert not out.exists()


def test_the_stream_says_at_start_that_the_shipped_rules_do_not_reload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prometheus_client import CollectorRegistry

    from streams.live import LiveRules, StreamMetrics
    from wiring.services import load_rules

    rules = load_rules(Settings())
    with caplog.at_level(logging.INFO, logger="cityvitals"):
        live = LiveRules(rules, None, StreamMetrics(CollectorRegistry()))
    assert "the shipped defaults" in caplog.text and "do not reload" in caplog.text
    assert live.check() is False


def test_the_stream_names_the_rule_file_it_starts_with(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry

    from streams.live import LiveRules, StreamMetrics
    from wiring.services import load_rules

    path = tmp_path / "mine.yaml"
    path.write_text("rules:\n  - {id: deep, metric: water_level_cm, levels: {red: 40}}\n")
    rules = load_rules(Settings(rules_file=path))
    with caplog.at_level(logging.INFO, logger="cityvitals"):
        LiveRules(rules, path, StreamMetrics(CollectorRegistry()))
    assert f"rules: {path}, version {rules.version} (rules in it: 1)" in caplog.text


PROFILES = """\
- profile_id: wl-v1
  device_type: water_level
  expected_interval_s: 60
  metrics: {water_levle_cm: {unit: cm, min: 0, max: 500}}
- profile_id: wl-v2
  device_type: water_level
  metrics: {water_level_cm: {unit: cm, min: 9, max: 1}}
- just a string
"""


def test_profiles_put_names_every_bad_item_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wiring import cli_places

    def no_registry() -> None:
        raise AssertionError("the registry was opened for a file with bad items")

    monkeypatch.setattr(cli_places, "registry", no_registry)
    file = tmp_path / "profiles.yaml"
    file.write_text(PROFILES)
    with pytest.raises(SystemExit) as ended:
        main(["profiles", "put", str(file)])
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert f"{file}: item 2 ('wl-v2'): expected_interval_s: Field required" in err
    assert f"{file}: item 2 ('wl-v2'): metrics.water_level_cm: Value error, min 9.0" in err
    assert f"{file}: item 3: a mapping of profile fields, not str" in err
    assert err.rstrip().endswith("nothing was stored")


def test_profiles_put_notes_a_metric_nothing_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wiring import cli_places

    stored: list[str] = []

    class Fake:
        conn = None

        def put_profile(self, profile: Profile, _actor: str) -> None:
            stored.append(profile.profile_id)

        def list(self, **_filters: Any) -> list[Any]:
            return []  # no device uses it: no reading to look over

    @contextmanager
    def fake_registry() -> Iterator[Fake]:
        yield Fake()

    monkeypatch.setattr(cli_places, "registry", fake_registry)
    file = tmp_path / "profiles.yaml"
    file.write_text(PROFILES.split("- profile_id: wl-v2")[0])
    with pytest.raises(SystemExit) as ended:
        main(["profiles", "put", str(file)])
    assert ended.value.code == 0
    out = capsys.readouterr()
    assert f"note: {file}: profile 'wl-v1': no rule or indicator reads 'water_levle_cm'" in out.err
    assert stored == ["wl-v1"] and "stored 1 profile" in out.out


def test_a_metric_only_an_absence_rule_reads_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wiring import cli_places

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules: [{id: hb, kind: absence, metric: heartbeat, after: 10m, level: blue}]\n"
    )
    monkeypatch.setenv("CITYVITALS_RULES_FILE", str(rules))

    class Fake:
        conn = None

        def put_profile(self, _profile: Profile, _actor: str) -> None:
            pass

        def list(self, **_filters: Any) -> list[Any]:
            return []

    @contextmanager
    def fake_registry() -> Iterator[Fake]:
        yield Fake()

    monkeypatch.setattr(cli_places, "registry", fake_registry)
    file = tmp_path / "profiles.yaml"
    file.write_text(
        "profile_id: p1\ndevice_type: power\nexpected_interval_s: 60\n"
        "metrics: {heartbeat: {unit: count}, hearbeat: {unit: count}}\n"
    )
    with pytest.raises(SystemExit) as ended:
        main(["profiles", "put", str(file)])
    assert ended.value.code == 0
    err = capsys.readouterr().err
    assert "reads 'hearbeat'" in err and "reads 'heartbeat'" not in err


def test_audit_names_a_bad_since_instead_of_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2 (unreadable), not 1: a script reads 1 as a gap."""
    with pytest.raises(SystemExit) as ended:
        main(["audit", "--since", "bad"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --since: ") and "Traceback" not in err


def test_ready_probes_the_webhook_notifier_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The deployments probe 'cityvitals ready notify': a service it knows, whose port it
    then asks for (none here)."""
    monkeypatch.setenv("CITYVITALS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("CITYVITALS_METRICS_PORT", raising=False)
    with pytest.raises(SystemExit) as ended:
        main(["ready", "notify"])
    assert ended.value.code == 1
    assert capsys.readouterr().err.startswith("error: no metrics port for notify")


def test_a_misspelt_setting_is_noted_with_the_name_it_is_near(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CITYVITALS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CITYVITALS_RETENTION_TELEMTRY_DAYS", "5")
    with pytest.raises(SystemExit):
        main(["ready", "api"])
    err = capsys.readouterr().err
    assert (
        "note: CITYVITALS_RETENTION_TELEMTRY_DAYS names no setting and is ignored (did you "
        "mean CITYVITALS_RETENTION_TELEMETRY_DAYS?)"
    ) in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["vitals", "sim", "--resolution", "1h"], "give --indicator too"),
        (["vitals", "sim", "--indicator", "aqi", "--from", "2026-12-06", "--to", "2026-12-01"],
         "is not before --to"),
    ],
)  # fmt: skip
def test_vitals_names_options_it_would_otherwise_pass_over(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before the database is asked."""
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 1 and said in capsys.readouterr().err


def test_history_finds_a_user_by_name_and_names_a_misspelt_entity(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from device_registry.access import Role, User
    from device_registry.repositories.audit import AuditEntry
    from device_registry.repositories.users import UserRow
    from wiring import cli_places

    at = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)
    before = {"name": "ro-d2", "scope": ["c", "d1"], "updated_at": "a"}
    disabled = AuditEntry(
        at, "cli:ops", "set_scope", "user", "u-697df8bf", before, {**before, "scope": ["c", "d2"]}
    )

    asked: list[tuple[Any, ...]] = []

    class Fake:
        def audit_log(
            self, entity: str | None, entity_id: str | None, _limit: int, *when: Any
        ) -> list[Any]:
            asked.append(when)
            return [disabled] if (entity, entity_id) == ("user", "u-697df8bf") else []

        def list_users(self) -> list[UserRow]:
            return [UserRow(User("u-697df8bf", "ro-d2", Role.READ_ONLY), at, at)]

    @contextmanager
    def fake_registry() -> Iterator[Fake]:
        yield Fake()

    monkeypatch.setattr(cli_places, "registry", fake_registry)
    with pytest.raises(SystemExit) as ended:
        main(["history", "--id", "ro-d2"])
    assert ended.value.code == 0
    shown = capsys.readouterr().out.splitlines()  # who, by name, and what changed
    assert shown[1].endswith("set_scope      user:u-697df8bf (ro-d2)")
    assert shown[2] == "    scope: ['c', 'd1'] -> ['c', 'd2']"
    with pytest.raises(SystemExit) as ended:
        main(["history", "--entity", "usr"])
    assert ended.value.code == 1
    assert "--entity 'usr': the audit log holds device, place" in capsys.readouterr().err
    asked.clear()
    with pytest.raises(SystemExit) as ended:
        main(["history", "--actor", "ops", "--since", "2026-12-05", "--until", "2026-12-06T01:00"])
    assert ended.value.code == 0
    assert asked == [("ops", at.replace(hour=0), at.replace(day=6, hour=1))]
    asked.clear()  # without an offset a time is the city's, as the screens show it
    monkeypatch.setenv("CITYVITALS_TIMEZONE", "Asia/Shanghai")
    with pytest.raises(SystemExit) as ended:
        main(["history", "--since", "2026-12-05", "--until", "2026-12-05T09:00+01:00"])
    assert ended.value.code == 0
    assert asked == [(None, at.replace(day=4, hour=16), at.replace(hour=8))]
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:  # and it shows them so: 07:00 UTC is 15:00 there
        main(["history", "--id", "ro-d2"])
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "times in Asia/Shanghai"
    assert shown[1].startswith("2026-12-05 15:00:00 cli:ops")
    asked.clear()  # a time of day is its latest there; a span counts back from now
    with pytest.raises(SystemExit) as ended:
        main(["history", "--since", "00:00", "--until", "2m"])
    assert ended.value.code == 0
    ((_, first, last),) = asked
    now = datetime.now(UTC)
    midnight = now.astimezone(ZoneInfo("Asia/Shanghai")).replace(hour=0, minute=0, second=0)
    assert first == midnight.replace(microsecond=0)
    assert timedelta(minutes=2) <= now - last < timedelta(minutes=3)
    monkeypatch.delenv("CITYVITALS_TIMEZONE")
    for argv, said in (
        (["--since", "yesterday"], "--since: 'yesterday' is not a time: give an ISO time"),
        (["--since", "2026-12-06", "--until", "2026-12-05"], "is not before --until"),
    ):
        with pytest.raises(SystemExit) as ended:
            main(["history", *argv])
        assert ended.value.code == 1 and said in capsys.readouterr().err, argv


def test_devices_show_gives_one_device_with_what_its_profile_gives_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace
    from datetime import UTC, datetime
    from types import SimpleNamespace

    import sinks
    from cityvitals.contracts import Device, DeviceLiveness, Liveness
    from sinks import Refused
    from wiring import cli_devices

    device = Device(
        device_id="wl-7",
        device_type="water_level",
        profile_id="wl-std",
        place_path=("sh", "pd"),
        tags=("underpass",),
        valid_ranges={"water_level_cm": (0, 500)},
        expected_interval_s=60,
        updated_at=datetime(2026, 12, 5, 7, 0, tzinfo=UTC),
    )

    judged = DeviceLiveness(
        device_id="wl-7",
        status=Liveness.LATE,
        last_seen=datetime(2026, 12, 5, 7, 1, tzinfo=UTC),
        expected_interval_s=59.99982,  # as learned from the readings' spacing
        ts=datetime(2026, 12, 5, 7, 4, tzinfo=UTC),
    )

    class Fake:
        conn = None

        def get(self, device_id: str) -> Device:
            assert device_id == "wl-7"
            return device

        def liveness(self, device_id: str) -> list[DeviceLiveness]:
            return [judged]

    @contextmanager
    def fake_registry() -> Iterator[Fake]:
        yield Fake()

    at = datetime(2026, 12, 5, 7, 1, tzinfo=UTC)
    seen = sinks.DeviceActivity(
        since=at,
        points=(),
        cut=False,
        latest=(
            sinks.SeriesPoint("wl-7", "battery_v", at, 3.61),
            sinks.SeriesPoint("wl-7", "water_level_cm", at, 12.5),
        ),
        camera_events=(),
        refused=3,
        refused_newest=(Refused(at, "ingest", "seq: Field required"),),
    )
    firing = SimpleNamespace(level="yellow", rule_id="waterlogging-depth", started_at=at)
    monkeypatch.setattr(sinks, "device_activity", lambda *_: seen)
    monkeypatch.setattr(sinks, "list_alerts", lambda *_: [firing])
    monkeypatch.setattr(cli_devices, "registry", fake_registry)
    monkeypatch.setenv("CITYVITALS_TIMEZONE", "Asia/Shanghai")
    with pytest.raises(SystemExit) as ended:
        main(["devices", "show", "wl-7"])
    assert ended.value.code == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "device wl-7 (water_level), active"
    assert "  profile    wl-std (every 60 s; water_level_cm 0..500)" in shown
    assert "  updated    2026-12-05 15:00:00 (Asia/Shanghai)" in shown
    assert "  liveness   late, last seen 2026-12-05 15:01:00, every 60 s (judged 15:04:00)" in shown
    assert (
        "  latest     battery_v 3.61 at 12-05 15:01:00; water_level_cm 12.5 at 12-05 15:01:00"
        in shown
    )
    assert (
        "  refused    3 in the last 7 days; newest 12-05 15:01:00 by ingest: seq: Field required"
        " (cityvitals deadletters --device wl-7)" in shown
    )
    assert "  alerts     1 firing: waterlogging-depth yellow (began 12-05 15:01)" in shown
    nothing = replace(seen, latest=(), refused=0, refused_newest=())
    monkeypatch.setattr(sinks, "device_activity", lambda *_: nothing)
    monkeypatch.setattr(sinks, "list_alerts", lambda *_: [])
    with pytest.raises(SystemExit) as ended:
        main(["devices", "show", "wl-7"])
    shown = capsys.readouterr().out.splitlines()
    assert "  latest     nothing stored in the last 7 days" in shown
    assert "  refused    none in the last 7 days" in shown
    assert "  alerts     none firing" in shown
    with pytest.raises(SystemExit) as ended:
        main(["devices", "show", "wl-7", "--json"])
    assert Device.model_validate_json(capsys.readouterr().out) == device


@pytest.mark.parametrize(("count", "said"), [(1, "1 problem: not OK"), (2, "2 problems: not OK")])
def test_a_checked_files_problems_are_counted_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], count: int, said: str
) -> None:
    from wiring.cli_common import end_on_problems

    with pytest.raises(typer.Exit) as ended:
        end_on_problems(tmp_path / "f.yaml", ["x"] * count, ("problem", "problems"))
    assert ended.value.exit_code == 1
    assert capsys.readouterr().err.splitlines()[-1] == said


def test_an_indicator_file_is_checked_and_against_the_registered_profiles_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'rules check' took no indicator file; and an indicator reading water depth in m while
    the profiles send cm went unnoticed (the API refuses the other way round)."""
    from wiring import cli_registry_common

    shipped = Path(__file__).parents[2] / "rules" / "indicators.yaml"
    good = CliRunner().invoke(app, ["rules", "check-indicators", str(shipped)])
    assert good.exit_code == 0 and "6 indicators OK (aqi, water_depth" in good.output
    metres = tmp_path / "indicators.yaml"
    metres.write_text(shipped.read_text().replace("    unit: cm\n", "    unit: m\n", 1))
    profile = Profile.model_validate(
        {"profile_id": "wl-v1", "device_type": "water_level", "expected_interval_s": 60,
         "metrics": {"water_level_cm": {"unit": "cm", "min": 0, "max": 500}}}
    )  # fmt: skip

    class Fake:
        def list_profiles(self) -> list[Profile]:
            return [profile]

    @contextmanager
    def fake_registry() -> Iterator[Fake]:
        yield Fake()

    monkeypatch.setattr(cli_registry_common, "registry", fake_registry)
    checked = CliRunner().invoke(app, ["rules", "check-indicators", str(metres), "--registry"])
    assert checked.exit_code == 1, checked.output
    assert (
        "profile 'wl-v1': metric 'water_level_cm' in 'cm': the indicator 'water_depth' reads it"
        " in m" in checked.output
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("indicators:\n  - {id: x, kind: max, metric: m, window: soon}\n")
    refused = CliRunner().invoke(app, ["rules", "check-indicators", str(broken)])
    assert refused.exit_code == 1 and f"{broken}:2: indicators.0" in refused.output


def test_a_profile_or_place_file_whose_aliases_explode_is_refused(tmp_path: Path) -> None:
    rows = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    rows += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    bomb = tmp_path / "profiles.yaml"
    bomb.write_text("\n".join(rows) + "\n")
    refused = CliRunner().invoke(app, ["profiles", "put", str(bomb)])
    assert refused.exit_code == 1
    assert "its aliases (*name) expand it to 12,345,685 values, past 100,000" in refused.output


def test_a_profile_file_nested_too_deeply_is_refused_naming_it(tmp_path: Path) -> None:
    """It ended 'profiles put' with a RecursionError traceback."""
    deep = tmp_path / "profiles.yaml"
    deep.write_text("[" * 2000 + "]" * 2000 + "\n")
    refused = CliRunner().invoke(app, ["profiles", "put", str(deep)])
    assert refused.exit_code == 1, refused.output
    assert f"{deep}: nested too deeply to read" in refused.output


def test_version_names_the_package_the_newest_migration_and_thecheckout_commit() -> None:
    """An operator upgrading tells which version runs: the package's, the newest migration
    it brings (what an upgrade applies), and the checkout's commit."""
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    newest = db.migrations()[-1]
    said = result.stdout.strip()
    assert said.startswith("cityvitals "), said
    assert f", schema {newest.version:04d}_{newest.name}" in said, said
    if checkout_commit() is not None:  # run from a checkout, with git
        assert f", commit {checkout_commit()}" in said, said
