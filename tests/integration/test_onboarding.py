"""Onboarding on real parts: profiles that fit their devices, imports that start provisioned
and become active with their first valid reading, errors in the project's words, and the
place tree the CLI builds."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cityvitals import db
from cityvitals.contracts import Device, DeviceState, Profile
from device_registry import RegistryError, UnknownDevice, parse_device_csv
from tests.integration.conftest import Pipeline, api_client, at, reading, wait_for
from wiring.cli import app as cli_app
from wiring.services import open_registry

pytestmark = pytest.mark.integration


def uid() -> str:
    return uuid.uuid4().hex[:6]


def water_level_profile(profile_id: str) -> Profile:
    return Profile(
        profile_id=profile_id,
        device_type="water_level",
        expected_interval_s=60,
        metrics={"water_level_cm": {"unit": "cm", "min": 0, "max": 500}},
    )


def test_a_profile_of_another_device_type_is_refused(pipeline: Pipeline) -> None:
    p = uid()
    profile = water_level_profile(f"wl-{p}")
    air = Device(
        device_id=f"aq-{p}",
        device_type="air_quality",
        profile_id=profile.profile_id,
        place_path=(f"{p}c",),
        updated_at=datetime.now(UTC),
    )
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(profile, "itest")
        with pytest.raises(RegistryError) as err:
            reg.add(air, "itest")
        assert err.value.field == "profile_id"
        assert str(err.value) == (
            f"profile 'wl-{p}' is for device_type 'water_level', not 'air_quality'"
        )
        device, _ = pipeline.register("water_level")
        reg.update(device, {"profile_id": profile.profile_id}, "itest")
        with pytest.raises(RegistryError) as err:
            reg.update(device, {"device_type": "air_quality"}, "itest")
        assert err.value.field == "profile_id"
        other = profile.model_copy(update={"device_type": "air_quality"})
        with pytest.raises(RegistryError) as err:
            reg.put_profile(other, "itest")
        assert err.value.field == "device_type" and device in str(err.value)
        report = reg.import_csv(
            "device_id,device_type,place_path,profile_id\n"
            f"aq-{p}-2,air_quality,{p}c,wl-{p}\n"
            f"wl-{p}-2,water_level,{p}c,wl-{p}\n",
            "itest",
        )
    assert [d for d, _ in report.added] == [f"wl-{p}-2"]
    assert [(e.line, e.field) for e in report.errors] == [(2, "profile_id")]
    assert "device_type 'water_level', not 'air_quality'" in report.errors[0].message


def test_a_metric_outside_the_devices_profile_is_dead_lettered_by_the_stream(
    pipeline: Pipeline,
) -> None:
    p = uid()
    device, secret = pipeline.register("water_level")
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(water_level_profile(f"wl-{p}"), "itest")
        reg.update(device, {"profile_id": f"wl-{p}"}, "itest")
    topic = pipeline.topic(device)
    pipeline.mosquitto_pub(device, secret, topic, reading(at("09:00:00"), 1, pm25=300))
    pipeline.mosquitto_pub(device, secret, topic, reading(at("09:00:01"), 2, water_level_cm=4))
    rows = wait_for(lambda: pipeline.rows(device), what="the listed metric's reading")
    assert [(r[0], r[3]) for r in rows] == [("water_level_cm", 2)]
    letter = wait_for(
        lambda: pipeline.query(
            "SELECT stage, reason, payload_b64 FROM deadletters WHERE device_id = %s", device
        ),
        what="the dead letter of the unlisted metric",
    )
    ((stage, reason, payload),) = letter
    assert stage == "streams"
    assert reason == (
        f"metric 'pm25' is not in profile 'wl-{p}' of device '{device}' (it lists: water_level_cm)"
    )
    assert b'"pm25":300.0' in base64.b64decode(payload)
    alerts = pipeline.query("SELECT rule_id FROM alerts WHERE device_id = %s", device)
    assert alerts == []


def test_a_refused_reading_is_replayed_once_its_cause_is_mended(
    pipeline: Pipeline, admin_token: str
) -> None:
    """A firmware update adds a metric the profile lacks: the reading's water level is taken,
    the new metric's value refused alone. Once the profile lists it, `cityvitals replay` puts
    it back on readings.raw, the stream stores it, and a second replay finds nothing; the
    letter says it was replayed, and the device's view no longer counts it among its
    refusals."""
    p = uid()
    device, secret = pipeline.register("water_level")
    profile = water_level_profile(f"wl-{p}")
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(profile, "itest")
        reg.update(device, {"profile_id": profile.profile_id}, "itest")
    topic = pipeline.topic(device)
    sent = reading(at("10:00:00"), 1, water_level_cm=4, flow_m3_s=2.5)
    pipeline.mosquitto_pub(device, secret, topic, sent)
    wait_for(
        lambda: (
            pipeline.query("SELECT cause FROM deadletters WHERE device_id = %s", device)
            == [("values_refused",)]
        ),
        what="the unlisted metric's value refused",
    )
    level = [("water_level_cm", 4.0, 1)]
    assert wait_for(lambda: [(m, v, seq) for m, _t, v, seq, _p in pipeline.rows(device)]) == level
    early = pipeline.cli("replay", "--device", device)  # before the profile lists it
    assert early.returncode == 0, early.stderr
    assert (
        "not mended yet, kept: " in early.stdout and "metric 'flow_m3_s' is not in" in early.stdout
    )
    assert "nothing to replay" in early.stdout  # refused again, it would count twice
    listed = {"water_level_cm": {"unit": "cm"}, "flow_m3_s": {"unit": "m3/s", "min": 0}}
    with open_registry(pipeline.settings) as reg:  # the cause mended: the profile lists it
        reg.put_profile(
            Profile.model_validate({**profile.model_dump(), "metrics": listed}), "itest"
        )
    dry = pipeline.cli("replay", "--device", device, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1 to replay" in dry.stdout and "[values_refused] metric 'flow_m3_s'" in dry.stdout
    assert len(pipeline.rows(device)) == 1  # a dry run sends nothing
    with db.connect(pipeline.settings) as other:  # another replay running holds the lock
        lock = f"cityvitals.replay:{pipeline.settings.database_schema}"
        other.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock,))
        second = pipeline.cli("replay", "--device", device)
    assert second.returncode == 1 and "another cityvitals replay is running" in second.stderr
    assert len(pipeline.rows(device)) == 1  # it sent nothing
    done = pipeline.cli("replay", "--device", device)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 1 on " in done.stdout
    rows = wait_for(lambda: len(pipeline.rows(device)) == 2 and pipeline.rows(device))
    assert sorted((m, v, seq) for m, _ts, v, seq, _p in rows) == [
        ("flow_m3_s", 2.5, 1),
        ("water_level_cm", 4.0, 1),
    ]
    # the values refused alone come back without a time of receipt: the audit counts the
    # reading once, as stored (its stream-to-database check leaves them out)
    received = pipeline.query(
        "SELECT metric, received_at IS NULL FROM readings WHERE device_id = %s ORDER BY 1",
        device,
    )
    assert received == [("flow_m3_s", True), ("water_level_cm", False)]
    again = pipeline.cli("replay", "--device", device)
    assert again.returncode == 0 and "nothing to replay" in again.stdout, again.stdout
    listed = pipeline.cli("deadletters", "--device", device)
    assert "    replayed " in listed.stdout and " by cli:" in listed.stdout, listed.stdout
    with api_client(pipeline.settings, admin_token) as api:
        view = api.get(f"/devices/{device}/activity").json()
    assert view["refused"] == 0 and view["refused_newest"] == []


def test_an_imported_device_is_provisioned_until_its_first_valid_reading(
    pipeline: Pipeline,
) -> None:
    p = uid()
    device = f"wl-{p}"
    with open_registry(pipeline.settings) as reg:
        report = reg.import_csv(
            f"device_id,device_type,place_path\n{device},water_level,{p}c/{p}d\n", "itest"
        )
        ((_, secret),) = report.added
        assert reg.get(device).state is DeviceState.PROVISIONED
    # Not expected: the liveness service does not watch it while it is provisioned; the
    # engineer onboarding it sees it among the place's devices, never heard.
    assert pipeline.query("SELECT 1 FROM device_liveness WHERE device_id = %s", device) == []
    env = pipeline.settings.to_env()
    listed = CliRunner().invoke(cli_app, ["devices", "liveness", "--place", f"{p}c"], env=env)
    assert listed.stdout.split()[:4] == [device, "provisioned,", "never", "heard"], listed.output
    assert "1 device (1 provisioned, never heard)" in listed.stderr
    now = datetime.now(UTC).isoformat()
    result = pipeline.mosquitto_pub(
        device, secret, pipeline.topic(device), reading(now, 1, water_level_cm=2)
    )
    assert result.returncode == 0, result.stderr  # a provisioned device's credentials work
    wait_for(lambda: pipeline.rows(device), what="the provisioned device's first reading")

    def state() -> str:
        with open_registry(pipeline.settings) as reg:
            return reg.get(device).state.value

    wait_for(lambda: state() == "active", what="the device to be activated")
    with open_registry(pipeline.settings) as reg:
        entry = reg.audit_log("device", device)[0]
    assert (entry.actor, entry.action) == ("liveness", "activate_on_first_reading")
    assert entry.before is not None and entry.before["state"] == "provisioned"
    assert entry.after is not None and entry.after["state"] == "active"


def test_import_errors_name_the_row_and_field_in_the_registrys_words(
    pipeline: Pipeline,
) -> None:
    p = uid()
    with open_registry(pipeline.settings) as reg:
        # Two new places of one id at two paths, in one file: the second row is refused.
        parsed = parse_device_csv(
            "device_id,device_type,place_path,profile_id\n"
            f"a-{p},noise,{p}c/{p}d\n"
            f"b-{p},noise,{p}x/{p}d\n"
            f"c-{p},noise,{p}c,no-such-{p}\n"
            f"d-{p},noise,{p}c\n",
            datetime.now(UTC),
        )
        report = reg.import_devices(parsed, "itest")
    assert sorted(d for d, _ in report.added) == [f"a-{p}", f"d-{p}"]
    assert [(e.line, e.field) for e in report.errors] == [(3, "place_path"), (4, "profile_id")]
    for error in report.errors:
        assert "psycopg" not in error.message and "violates" not in error.message
        assert "Key (" not in error.message
    assert f"place '{p}d' is at {p}c/{p}d, not {p}x/{p}d" == report.errors[0].message
    assert f"profile 'no-such-{p}' does not exist" in report.errors[1].message


def test_places_add_creates_the_missing_city_and_says_so(pipeline: Pipeline) -> None:
    p = uid()
    runner = CliRunner()
    env = pipeline.settings.to_env()
    result = runner.invoke(cli_app, ["places", "add", f"{p}c/{p}d", "--name", "Pudong"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"district {p}c/{p}d: Pudong\n"
    assert result.stderr == (
        f"note: creates place {p}c, named by its id (cityvitals places add {p}c --name NAME "
        "names it)\n"
    )
    again = runner.invoke(cli_app, ["places", "add", f"{p}c/{p}e", "--name", "Xuhui"], env=env)
    assert again.exit_code == 0 and again.stderr == "", again.output  # the city is there now
    with open_registry(pipeline.settings) as reg:
        city = reg.get_place(f"{p}c")
        assert city.level.value == "city" and city.path == (f"{p}c",)
        assert reg.get_place(f"{p}d").name == "Pudong"
        created = reg.audit_log("place", f"{p}c")
    assert [(e.action, e.actor) for e in created] == [("create", created[0].actor)]
    assert created[0].actor.startswith("cli:")


def test_an_import_adds_its_secrets_to_the_file_and_needs_one(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """The secrets are shown once: a second import into the same file keeps the first one's
    (it overwrote them), and an import with nowhere to put them is refused before it starts."""
    p = uid()
    runner, env = CliRunner(), pipeline.settings.to_env()
    creds = tmp_path / "creds.csv"
    for n in (1, 2):
        rows = tmp_path / f"fleet{n}.csv"
        rows.write_text(f"device_id,device_type,place_path\n{p}-wl-{n},water_level,{p}c/{p}d\n")
        done = runner.invoke(
            cli_app, ["devices", "import", str(rows), "--credentials-out", str(creds)], env=env
        )
        assert done.exit_code == 0, done.output
    lines = creds.read_text().splitlines()
    assert lines[0] == "device_id,secret" and [x.split(",")[0] for x in lines[1:]] == [
        f"{p}-wl-1",
        f"{p}-wl-2",
    ]
    assert creds.stat().st_mode & 0o077 == 0  # the owner's alone
    device, secret = lines[1].split(",")  # the first import's secret logs its device in
    wait_for(lambda: not pipeline.login_refused(device, secret), what="the broker to take it")
    rows.write_text(f"device_id,device_type,place_path\n{p}-wl-3,water_level,{p}c/{p}d\n")
    refused = runner.invoke(cli_app, ["devices", "import", str(rows)], env=env)
    assert refused.exit_code == 1 and "give --credentials-out FILE (or -)" in refused.output
    with open_registry(pipeline.settings) as reg, pytest.raises(UnknownDevice):
        reg.get(f"{p}-wl-3")  # nothing imported


def test_an_imports_notes_are_of_the_rows_it_added(pipeline: Pipeline, tmp_path: Path) -> None:
    """A refused row (an id given again) gets no note: the device its id names came from
    another row, with a profile, at another place. Its refusal names the first row."""
    p = uid()
    runner, env = CliRunner(), pipeline.settings.to_env()
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(water_level_profile(f"wl-{p}"), "itest")
    rows = tmp_path / "fleet.csv"
    rows.write_text(
        "device_id,device_type,place_path,profile_id\n"
        f"{p}-a,water_level,{p}c/{p}d,wl-{p}\n"
        f"{p}-b,water_level,{p}c/{p}d,\n"
        f"{p}-a,water_level,{p}c/{p}e,\n"
    )
    done = runner.invoke(
        cli_app,
        ["devices", "import", str(rows), "--credentials-out", str(tmp_path / "creds.csv")],
        env=env,
    )
    assert done.exit_code == 1, done.output  # a row was refused
    assert (
        "fleet.csv:line 4: device_id: line 2 has the same id: only the first row of an id is taken"
    ) in done.stderr
    assert "imported 2 devices, 1 row refused" in done.output
    assert f"note: {p}-b has no profile: any metric it sends is stored" in done.stderr
    assert f"{p}-a has no profile" not in done.stderr
    assert f"note: creates place {p}c/{p}d, named by its id" in done.stderr
    assert f"{p}c/{p}e" not in done.stderr  # the refused row's place is not made
    with open_registry(pipeline.settings) as reg:
        assert reg.get(f"{p}-a").profile_id == f"wl-{p}"


def test_an_import_with_known_types_refuses_a_row_of_a_type_nothing_names(
    pipeline: Pipeline, tmp_path: Path, admin_token: str
) -> None:
    """A typo in a device type ('waterlevel') is a bad row with --known-types (known_types
    in the API), named by its line like any other; without it, the row goes in with a note."""
    p = uid()
    runner, env = CliRunner(), pipeline.settings.to_env()
    rows = tmp_path / "fleet.csv"
    rows.write_text(
        "device_id,device_type,place_path\n"
        f"{p}-a,waterlevel,{p}c/{p}d\n"
        f"{p}-b,water_level,{p}c/{p}d\n"
    )
    args = ["devices", "import", str(rows), "--credentials-out", str(tmp_path / "creds.csv")]
    done = runner.invoke(cli_app, [*args, "--known-types"], env=env)
    assert done.exit_code == 1, done.output
    assert "fleet.csv:line 2: device_type: no rule or indicator names 'waterlevel'" in done.stderr
    assert "imported 1 device, 1 row refused" in done.output
    with api_client(pipeline.settings, admin_token) as api:
        body = f"device_id,device_type,place_path\n{p}-c,waterlevel,{p}c/{p}d\n"
        headers = {"content-type": "text/csv"}
        strict = api.post("/devices/import?known_types=true", content=body, headers=headers)
        assert strict.status_code == 200, strict.text
        assert [(e["line"], e["field"]) for e in strict.json()["errors"]] == [(2, "device_type")]
        loose = api.post("/devices/import", content=body, headers=headers).json()
        assert [c["device_id"] for c in loose["added"]] == [f"{p}-c"]
        assert any(
            "no rule or indicator names device type 'waterlevel'" in n for n in loose["notes"]
        )


def test_an_import_with_known_places_refuses_a_row_at_a_place_nobody_added(
    pipeline: Pipeline, tmp_path: Path, admin_token: str
) -> None:
    """A typo in a place ('rv-qauy') made a street nobody meant, which every console shows:
    with --known-places (known_places in the API) it is a bad row naming the nearest place,
    and no place is created; without it, the import creates the places it names."""
    p = uid()
    runner, env = CliRunner(), pipeline.settings.to_env()
    with open_registry(pipeline.settings) as reg:
        reg.add(Device(device_id=f"{p}-0", device_type="noise", place_path=(f"{p}c", f"{p}quay"),
                       updated_at=datetime.now(UTC)), "itest")  # fmt: skip
    rows = tmp_path / "fleet.csv"
    rows.write_text(
        f"device_id,device_type,place_path\n{p}-a,noise,{p}c/{p}qauy\n{p}-b,noise,{p}c/{p}quay\n"
    )
    args = ["devices", "import", str(rows), "--credentials-out", str(tmp_path / "creds.csv")]
    done = runner.invoke(cli_app, [*args, "--known-places"], env=env)
    assert done.exit_code == 1, done.output
    assert (
        f"fleet.csv:line 2: place_path: no place {p}c/{p}qauy in the registry ({p}c/{p}quay?)"
    ) in done.stderr
    assert "imported 1 device, 1 row refused" in done.output
    with open_registry(pipeline.settings) as reg:
        assert f"{p}qauy" not in {place.place_id for place in reg.list_places()}
    with api_client(pipeline.settings, admin_token) as api:
        body = f"device_id,device_type,place_path\n{p}-c,noise,{p}c/{p}qauy\n"
        headers = {"content-type": "text/csv"}
        strict = api.post("/devices/import?known_places=true", content=body, headers=headers)
        assert strict.status_code == 200, strict.text
        assert [(e["line"], e["field"]) for e in strict.json()["errors"]] == [(2, "place_path")]
        loose = api.post("/devices/import", content=body, headers=headers).json()
        assert [c["device_id"] for c in loose["added"]] == [f"{p}-c"]


def test_an_import_with_update_changes_the_devices_already_registered(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A fleet spreadsheet kept as the source of truth is imported again: with --update
    (update=true) its rows change the devices already registered (moved, a new profile or
    department; an empty cell leaves a field as it is) instead of being refused, and a
    scoped user may not change one outside the scope where it is."""
    from device_registry.access import Role
    from tests.integration.conftest import add_user

    p = uid()
    runner, env = CliRunner(), pipeline.settings.to_env()
    creds = str(tmp_path / "creds.csv")
    fleet = tmp_path / "fleet.csv"
    fleet.write_text(
        "device_id,device_type,place_path,department\n"
        f"{p}-a,noise,{p}c/{p}d1,ecology\n"
        f"{p}-b,noise,{p}c/{p}d1,ecology\n"
    )
    first = runner.invoke(
        cli_app, ["devices", "import", str(fleet), "--credentials-out", creds], env=env
    )
    assert first.exit_code == 0, first.output
    fleet.write_text(
        "device_id,device_type,place_path,department\n"
        f"{p}-a,noise,{p}c/{p}d2,street-ops\n"
        f"{p}-b,noise,{p}c/{p}d1,\n"
    )
    again = runner.invoke(
        cli_app, ["devices", "import", str(fleet), "--credentials-out", creds], env=env
    )
    assert again.exit_code == 1 and "is already registered (an import with --update" in again.stderr
    done = runner.invoke(
        cli_app, ["devices", "import", str(fleet), "--credentials-out", creds, "--update"], env=env
    )
    assert done.exit_code == 0, done.output
    assert "imported 0 devices, updated 1, 1 unchanged, 0 rows refused" in done.output
    with open_registry(pipeline.settings) as reg:
        a, b = reg.get(f"{p}-a"), reg.get(f"{p}-b")
        history = [e.action for e in reg.audit_log("device", f"{p}-a")]
    assert (a.place_path, a.department) == ((f"{p}c", f"{p}d2"), "street-ops")
    assert (b.place_path, b.department) == ((f"{p}c", f"{p}d1"), "ecology")  # empty: as it was
    assert {"move", "update"} <= set(history)
    scoped = add_user(pipeline.settings, f"eng-{p}", Role.IOT_ENGINEER, (f"{p}c", f"{p}d1"))
    body = f"device_id,device_type,place_path\n{p}-a,noise,{p}c/{p}d1\n"
    with api_client(pipeline.settings, scoped) as api:
        api.headers.pop("X-Actor")  # acting as itself
        taken = api.post(
            "/devices/import?update=true", content=body, headers={"content-type": "text/csv"}
        )
    assert taken.status_code == 200, taken.text
    assert taken.json()["updated"] == []
    (refused,) = taken.json()["errors"]
    assert refused["field"] == "place_path" and "outside the scope" in refused["message"]
    with open_registry(pipeline.settings) as reg:
        assert reg.get(f"{p}-a").place_path == (f"{p}c", f"{p}d2")  # where it was


def test_a_published_device_carries_its_profiles_ranges_and_interval(pipeline: Pipeline) -> None:
    """The stream judges ranges and staleness from the ``devices`` topic alone."""
    from cityvitals import kafka
    from cityvitals.topics import Topic

    p = uid()
    device, _secret = pipeline.register("water_level")
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(water_level_profile(f"wl-{p}"), "itest")
        reg.update(device, {"profile_id": f"wl-{p}"}, "itest")
    consumer = kafka.consumer(pipeline.settings, f"itest-{uuid.uuid4().hex}")
    consumer.subscribe([pipeline.settings.topic(Topic.DEVICES)])

    def published() -> Device | None:
        message = consumer.poll(1.0)
        if message is None or message.error() or message.key() != device.encode():
            return None
        entry = Device.model_validate_json(message.value())
        return entry if entry.profile_id == f"wl-{p}" else None

    try:
        entry = wait_for(published, what="the device's entry with its profile")
    finally:
        consumer.close()
    assert entry.expected_interval_s == 60
    assert entry.valid_ranges == {"water_level_cm": (0, 500)}


def test_a_device_type_no_rule_names_is_registered_with_a_note_and_an_empty_place_refused(
    pipeline: Pipeline,
) -> None:
    """A mistyped device type would leave the device judged by few rules, in no vital sign,
    and nothing else would tell: the CLI says so. A doubled '/' in a place path would join
    the ids around it into a new place: refused."""
    p = uid()
    runner, env = CliRunner(), pipeline.settings.to_env()
    places = runner.invoke(cli_app, ["places", "add", f"{p}c/{p}d", "--name", "D"], env=env)
    assert places.exit_code == 0, places.output
    typo = runner.invoke(
        cli_app, ["devices", "add", f"t-{p}", "--type", "waterlevel", "--place", f"{p}c/{p}d"],
        env=env,
    )  # fmt: skip
    assert typo.exit_code == 0, typo.output
    assert "no rule or indicator names device type 'waterlevel'" in typo.stderr
    assert "water_level" in typo.stderr  # the types they do name
    known = runner.invoke(
        cli_app, ["devices", "add", f"k-{p}", "--type", "water_level", "--place", f"{p}c/{p}d"],
        env=env,
    )  # fmt: skip
    assert known.exit_code == 0 and "note: no rule" not in known.stderr
    assert "note: creates place" not in known.stderr  # its places are known
    assert f"note: k-{p} has no profile: any metric it sends is stored and judged" in known.stderr
    typos = runner.invoke(
        cli_app,
        ["devices", "add", f"n-{p}", "--type", "water_level", "--place", f"{p}c/{p}x/{p}s",
         "--department", "no-such-dept"],
        env=env,
    )  # fmt: skip
    assert typos.exit_code == 0, typos.output  # registered, with what it made and missed
    assert f"note: creates place {p}c/{p}x, named by its id" in typos.stderr
    assert f"note: creates place {p}c/{p}x/{p}s, named by its id" in typos.stderr
    assert (
        f"note: department 'no-such-dept' of n-{p} is not in the registry "
        "(cityvitals departments list)"
    ) in typos.stderr
    doubled = runner.invoke(
        cli_app, ["devices", "add", f"e-{p}", "--type", "noise", "--place", f"/{p}c//{p}d"],
        env=env,
    )  # fmt: skip
    assert doubled.exit_code == 1
    assert f"place path '/{p}c//{p}d': an empty place id between two '/'" in doubled.stderr
    with open_registry(pipeline.settings) as reg:
        assert reg.get(f"t-{p}").device_type == "waterlevel"
        with pytest.raises(UnknownDevice):
            reg.get(f"e-{p}")
