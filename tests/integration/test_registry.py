"""The registry on real PostgreSQL, Kafka and Mosquitto: the place tree, moves that reach the
stream, profiles, the audit log, path conflicts and secret rotation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cityvitals.contracts import Department, Device, DeviceState, Place, PlaceLevel, Profile
from device_registry import PlaceConflict, RegistryError, ServiceLogin, UnknownProfile
from device_registry.access import Role
from tests.integration.conftest import Pipeline, api_client, at, reading, wait_for
from wiring.cli import app
from wiring.services import open_registry

pytestmark = pytest.mark.integration


def tree(prefix: str) -> list[Place]:
    c, d1, d2 = f"{prefix}c", f"{prefix}d1", f"{prefix}d2"
    s1, g1 = f"{prefix}s1", f"{prefix}g1"
    return [
        Place(place_id=c, level=PlaceLevel.CITY, name="City", path=(c,)),
        Place(place_id=d1, level=PlaceLevel.DISTRICT, name="D1", path=(c, d1)),
        Place(place_id=d2, level=PlaceLevel.DISTRICT, name="D2", path=(c, d2)),
        Place(place_id=s1, level=PlaceLevel.STREET, name="S1", path=(c, d1, s1)),
        Place(place_id=g1, level=PlaceLevel.GRID, name="G1", path=(c, d1, s1, g1)),
    ]


def test_moving_a_street_moves_its_subtree_and_the_stream_follows(pipeline: Pipeline) -> None:
    p = uuid.uuid4().hex[:6]
    places = tree(p)
    with open_registry(pipeline.settings) as reg:
        reg.put_places(places, "itest")
        device, secret = pipeline.register("water_level", "/".join(places[4].path))
        assert [x.place_id for x in reg.list_places(f"{p}s1")] == [f"{p}s1", f"{p}g1"]
        moved = reg.move_place(f"{p}s1", f"{p}d2", "itest").places
        assert [x.path for x in moved] == [
            (f"{p}c", f"{p}d2", f"{p}s1"),
            (f"{p}c", f"{p}d2", f"{p}s1", f"{p}g1"),
        ]
        assert reg.get(device).place_path == (f"{p}c", f"{p}d2", f"{p}s1", f"{p}g1")
        assert reg.audit_log("place", f"{p}s1")[0].action == "move"
    # The next reading is enriched with the new place: the move reached the stream in-band.
    pipeline.mosquitto_pub(
        device, secret, pipeline.topic(device), reading(at("09:00:00"), 1, water_level_cm=1)
    )
    rows = wait_for(lambda: pipeline.rows(device), what="the reading after the move")
    assert rows[0][4] == [f"{p}c", f"{p}d2", f"{p}s1", f"{p}g1"]


def test_a_place_cannot_sit_in_two_places(pipeline: Pipeline) -> None:
    p = uuid.uuid4().hex[:6]
    with open_registry(pipeline.settings) as reg:
        reg.put_places(tree(p), "itest")
        wrong = Device(
            device_id=f"wl-{p}",
            device_type="water_level",
            place_path=(f"{p}c", f"{p}d2", f"{p}s1"),
            updated_at=datetime.now(UTC),
        )
        with pytest.raises(PlaceConflict) as err:
            reg.add(wrong, "itest")
        assert err.value.field == "place_path"
        assert f"{p}s1" in str(err.value)


def test_profiles_updates_and_the_audit_log(pipeline: Pipeline) -> None:
    p = uuid.uuid4().hex[:6]
    profile = Profile(
        profile_id=f"wl-{p}",
        device_type="water_level",
        expected_interval_s=300,
        metrics={"water_level_cm": {"unit": "cm", "min": 0, "max": 500}},
    )
    device, _ = pipeline.register("water_level")
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(profile, "alice")
        assert reg.get_profile(profile.profile_id) == profile
        updated = reg.update(
            device, {"profile_id": profile.profile_id, "tags": ("underpass",)}, "bob"
        )
        assert updated.profile_id == profile.profile_id and updated.tags == ("underpass",)
        assert [d.device_id for d in reg.list(tag="underpass", profile_id=profile.profile_id)] == [
            device
        ]
        # As published and as the stream judges its readings: with its profile's facts.
        for shown in (updated, reg.get(device), *reg.list(profile_id=profile.profile_id)):
            assert shown.valid_ranges == {"water_level_cm": (0, 500)}
            assert shown.expected_interval_s == 300
        with pytest.raises(UnknownProfile):
            reg.update(device, {"profile_id": "no-such-profile"}, "bob")
        entry = reg.audit_log("device", device)[0]
        assert (entry.actor, entry.action) == ("bob", "update")
        assert entry.before is not None and entry.after is not None
        assert entry.before["tags"] == [] and entry.after["tags"] == ["underpass"]


def test_rotating_a_secret_locks_the_old_one_out(pipeline: Pipeline) -> None:
    device, old = pipeline.register("water_level")
    with open_registry(pipeline.settings) as reg:
        ((_, new),) = reg.rotate_secrets([device], "itest")
    topic = pipeline.topic(device)
    wait_for(
        lambda: (
            pipeline.mosquitto_pub(
                device, old, topic, reading(at("09:00:00"), 1, water_level_cm=1)
            ).returncode
            != 0
        ),
        what="the broker to refuse the old secret",
    )
    assert (
        pipeline.mosquitto_pub(
            device, new, topic, reading(at("09:00:01"), 2, water_level_cm=1)
        ).returncode
        == 0
    )
    rows = wait_for(
        lambda: [r for r in pipeline.rows(device) if r[3] == 2],
        what="the reading sent with the new secret",
    )
    assert len(rows) == 1


def test_suspension_drops_a_connected_device_without_a_broker_restart(pipeline: Pipeline) -> None:
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from cityvitals.contracts import DeviceState

    device, secret = pipeline.register("water_level")
    connected, dropped = threading.Event(), threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"live-{device}")
    client.username_pw_set(device, secret)
    client.on_connect = lambda *_: connected.set()
    client.on_disconnect = lambda *_: dropped.set()
    client.reconnect_delay_set(30, 30)  # no quick reconnect: we watch the broker drop it
    client.connect("127.0.0.1", pipeline.settings.mqtt_port)
    client.loop_start()
    try:
        assert connected.wait(10)
        with open_registry(pipeline.settings) as reg:
            reg.set_state(device, DeviceState.SUSPENDED, "itest")
        assert dropped.wait(10), "the broker kept the suspended device connected"
    finally:
        client.loop_stop()
    result = pipeline.mosquitto_pub(
        device, secret, pipeline.topic(device), reading(at("09:00:00"), 1, water_level_cm=1)
    )
    assert result.returncode != 0  # and it cannot come back


def test_a_profiles_valid_range_is_enforced_in_the_stream(pipeline: Pipeline) -> None:
    p = uuid.uuid4().hex[:6]
    device, secret = pipeline.register("water_level")
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(
            Profile(
                profile_id=f"range-{p}",
                device_type="water_level",
                expected_interval_s=60,
                metrics={"water_level_cm": {"unit": "cm", "min": 0, "max": 500}},
            ),
            "itest",
        )
        reg.update(device, {"profile_id": f"range-{p}"}, "itest")
    topic = pipeline.topic(device)
    pipeline.mosquitto_pub(device, secret, topic, reading(at("09:00:00"), 1, water_level_cm=-40))
    pipeline.mosquitto_pub(device, secret, topic, reading(at("09:00:01"), 2, water_level_cm=4))
    rows = wait_for(lambda: pipeline.rows(device), what="the valid reading")
    assert [r[3] for r in rows] == [2]
    letter = wait_for(
        lambda: pipeline.query(
            "SELECT stage, reason FROM deadletters WHERE device_id = %s", device
        ),
        what="a dead letter",
    )
    assert letter == [
        ("streams", "water_level_cm=-40 is outside the profile's valid range [0.0, 500.0]")
    ]


def test_a_device_cannot_take_a_service_login(pipeline: Pipeline) -> None:
    """A device named like the gateway's MQTT login would overwrite the gateway's password."""
    gateway = pipeline.settings.mqtt_username
    device = Device(
        device_id=gateway,
        device_type="noise",
        place_path=("itest",),
        updated_at=datetime.now(UTC),
    )
    with open_registry(pipeline.settings) as reg, pytest.raises(ServiceLogin) as err:
        reg.add(device, "itest")
    assert err.value.field == "device_id" and "service" in str(err.value)
    # The gateway keeps its login: a reading still flows.
    device_id, secret = pipeline.register()
    pipeline.mosquitto_pub(
        device_id,
        secret,
        pipeline.topic(device_id),
        reading(at("10:00:00"), 1, water_level_cm=2),
    )
    wait_for(lambda: pipeline.rows(device_id), what="a reading after the refused device")


def test_places_a_device_creates_are_audited_and_retired_is_final(pipeline: Pipeline) -> None:
    p = uuid.uuid4().hex[:6]
    device_id, _ = pipeline.register("water_level", f"{p}c/{p}d/{p}s")
    with open_registry(pipeline.settings) as reg:
        created = reg.audit_log("place", f"{p}d")
        assert [(e.action, e.actor) for e in created] == [("create", "itest")]
        reg.set_state(device_id, DeviceState.RETIRED, "itest")
        with pytest.raises(RegistryError, match="retired is final"):
            reg.set_state(device_id, DeviceState.ACTIVE, "itest")
        with pytest.raises(RegistryError, match="no secret would ever log it in"):
            reg.rotate_secrets([device_id], "itest")  # a secret that could never work
        assert reg.get(device_id).state is DeviceState.RETIRED


def test_a_place_with_open_work_under_it_moves_only_when_told_and_scopes_follow_it(
    pipeline: Pipeline,
) -> None:
    """An incident not closed and an alert firing under a street keep the path they were
    raised at: the move is refused, naming them, unless told to leave them there. A user
    scoped to the street keeps it at its new path (the move is in the audit log), and a
    user's scope can be changed."""
    p = uuid.uuid4().hex[:6]
    places = tree(p)
    with open_registry(pipeline.settings) as reg:
        reg.put_places(places, "itest")
        reg.add_user(f"{p}-kim", Role.READ_ONLY, "itest", places[3].path)
        reg.add_user(f"{p}-dee", Role.DUTY_OFFICER, "itest", places[1].path)  # the district
    incident = uuid.uuid4().hex
    pipeline.query(
        "INSERT INTO incidents (incident_id, revision, category, state, level, source, place_id,"
        " place_path, title, opened_at, updated_at) VALUES (%s, 1, 'flooding', 'dispatched',"
        " 'orange', 'alert', %s, %s, 'Flooding', now(), now()) RETURNING 1",
        incident,
        f"{p}s1",
        list(places[3].path),
    )
    pipeline.query(
        "INSERT INTO alerts (alert_id, revision, rule_id, status, level, device_id, metric,"
        " value, threshold, place_path, started_at, updated_at, summary) VALUES"
        " (%s, 0, 'r', 'firing', 'orange', 'wl-1', 'water_level_cm', 30, 25, %s, now(), now(),"
        " 's') RETURNING 1",
        uuid.uuid4().hex,
        list(places[4].path),
    )
    env = pipeline.settings.to_env()
    refused = CliRunner().invoke(app, ["places", "move", f"{p}s1", f"{p}d2"], env=env)
    assert refused.exit_code == 1, refused.output
    assert (
        f"{p}s1 has 1 open incident ({incident[:8]} flooding orange) and 1 firing alert under it"
        in refused.output
    )
    assert "--with-open" in refused.output
    with open_registry(pipeline.settings) as reg:
        assert reg.get_place(f"{p}s1").path == places[3].path  # nothing moved

    moved = CliRunner().invoke(app, ["places", "move", f"{p}s1", f"{p}d2", "--with-open"], env=env)
    assert moved.exit_code == 0, moved.output
    assert f"scopes moved with it: {p}-kim" in moved.output
    assert "note: 1 open incident" in moved.output and "stay at the old path" in moved.output
    with open_registry(pipeline.settings) as reg:
        kim, dee = reg.get_user(f"{p}-kim").user, reg.get_user(f"{p}-dee").user
        assert kim.scope == (f"{p}c", f"{p}d2", f"{p}s1")  # her street, where it is now
        assert dee.scope == places[1].path  # a district keeps its own place
        assert reg.audit_log("user", kim.user_id)[0].action == "move_scope"

    changed = CliRunner().invoke(app, ["users", "scope", f"{p}-dee", f"{p}c/{p}d2"], env=env)
    assert changed.exit_code == 0, changed.output
    assert f"scope {p}c/{p}d2" in changed.output
    wrong = CliRunner().invoke(app, ["users", "scope", f"{p}-dee", f"{p}c/nowhere"], env=env)
    assert wrong.exit_code == 1 and "is not the path of a place" in wrong.output
    with open_registry(pipeline.settings) as reg:
        assert reg.get_user(f"{p}-dee").user.scope == (f"{p}c", f"{p}d2")


def test_the_last_admin_still_enabled_is_not_disabled(pipeline: Pipeline) -> None:
    """No one could manage users through the API any more, and a disabled name is never
    enabled again: the last enabled admin stays, until another is added."""
    from cityvitals import db

    settings = pipeline.settings.model_copy(
        update={"database_schema": f"adm{uuid.uuid4().hex[:12]}"}
    )
    db.migrate(settings)
    try:
        with open_registry(settings) as reg:
            reg.add_user("root", Role.ADMIN, "itest")
            reg.add_user("eve", Role.READ_ONLY, "itest")
            with pytest.raises(RegistryError, match="root is the only admin still enabled"):
                reg.disable_user("root", "itest")
            assert reg.get_user("root").disabled_at is None
            reg.disable_user("eve", "itest")  # not an admin: no matter
            reg.add_user("second", Role.ADMIN, "itest")
            reg.disable_user("root", "itest")
            assert reg.get_user("root").disabled_at is not None
    finally:
        with db.connect(settings) as conn:
            conn.execute(f"DROP SCHEMA {settings.database_schema} CASCADE".encode())


def test_narrowing_a_profile_under_live_devices_notes_what_it_will_refuse(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """``profiles put`` looks over the last hour's readings of the devices using the profile:
    values its new range lies outside would be refused from then on, and it says so."""
    p = uuid.uuid4().hex[:6]
    wide = Profile(
        profile_id=f"nz-{p}",
        device_type="noise",
        expected_interval_s=60,
        metrics={"laeq_db": {"unit": "dB(A)", "min": 20, "max": 140}},
    )
    device, secret = pipeline.register("noise")
    with open_registry(pipeline.settings) as reg:
        reg.put_profile(wide, "itest")
        reg.update(device, {"profile_id": wide.profile_id}, "itest")
    now = datetime.now(UTC).replace(microsecond=0)
    for n, value in enumerate((48.0, 55.5, 58.0)):
        ts = (now - timedelta(minutes=3 - n)).isoformat()
        pipeline.mosquitto_pub(
            device, secret, pipeline.topic(device), reading(ts, n, laeq_db=value)
        )
    wait_for(lambda: len(pipeline.rows(device)) == 3, what="the three readings stored")
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(
        f"profile_id: nz-{p}\ndevice_type: noise\nexpected_interval_s: 60\n"
        "metrics: {laeq_db: {unit: dB(A), min: 20, max: 52}}\n"
    )
    put = CliRunner().invoke(app, ["profiles", "put", str(narrow)], env=pipeline.settings.to_env())
    assert put.exit_code == 0, put.output
    assert (
        f"note: profile 'nz-{p}': 2 laeq_db readings of the last hour from 1 of its devices "
        "(55.5 to 58) lie outside [20, 52]: such values are refused from now on"
    ) in put.output


def test_what_nothing_uses_is_removed_and_what_is_used_is_refused_naming_its_uses(
    pipeline: Pipeline, admin_token: str
) -> None:
    """A district, a department and a profile made by mistake are removed (CLI and API),
    audited; one a device, a user, an open incident or a place under it uses is refused,
    naming them, and stays."""
    p = uuid.uuid4().hex[:6]
    places = tree(p)
    env = pipeline.settings.to_env()
    with open_registry(pipeline.settings) as reg:
        reg.put_places(places, "itest")
        reg.put_places(
            [
                Place(
                    place_id=f"{p}typo",
                    level=PlaceLevel.DISTRICT,
                    name="X",
                    path=(f"{p}c", f"{p}typo"),
                )
            ],
            "itest",
        )
        reg.put_department(Department(department_id=f"{p}-Flood", name="dup?"), "itest")
        reg.put_department(Department(department_id=f"{p}-water", name="Water"), "itest")
        for profile_id, device_type in ((f"{p}-unused", "noise"), (f"{p}-wl", "water_level")):
            reg.put_profile(
                Profile(profile_id=profile_id, device_type=device_type, expected_interval_s=60),
                "itest",
            )
        reg.add_user(f"{p}-kim", Role.READ_ONLY, "itest", places[2].path)  # district d2
    device, _ = pipeline.register("water_level", "/".join(places[4].path))
    with open_registry(pipeline.settings) as reg:
        reg.update(device, {"department": f"{p}-water", "profile_id": f"{p}-wl"}, "itest")

    def cli(*args: str) -> tuple[int, str]:
        run = CliRunner().invoke(app, list(args), env=env)
        return run.exit_code, run.output

    # refused, naming what uses each, and nothing removed
    code, out = cli("places", "remove", f"{p}s1")
    assert code == 1
    assert f"place '{p}s1' cannot be removed while 1 place lies under it ({p}g1)" in out
    assert f"1 device is at or under it ({device})" in out
    code, out = cli("places", "remove", f"{p}d2")
    assert code == 1 and "1 user is scoped to it:" in out and f"{p}-kim" not in out
    code, out = cli("departments", "remove", "street-ops")  # the routing dispatches to it
    assert code == 1 and "the incident routing" in out and "take it out there first" in out
    code, out = cli("departments", "remove", f"{p}-water")
    assert code == 1 and f"1 device names it ({device})" in out
    code, out = cli("profiles", "remove", f"{p}-wl")
    assert code == 1 and f"1 device uses it ({device})" in out
    incident = uuid.uuid4().hex
    pipeline.query(
        "INSERT INTO incidents (incident_id, revision, category, state, level, source, place_id,"
        " place_path, title, opened_at, updated_at, department) VALUES (%s, 1, 'flooding',"
        " 'dispatched', 'orange', 'alert', %s, %s, 'Flooding', now(), now(), %s) RETURNING 1",
        incident,
        f"{p}typo",
        [f"{p}c", f"{p}typo"],
        f"{p}-Flood",
    )
    code, out = cli("places", "remove", f"{p}typo")
    assert code == 1 and f"it has 1 open incident ({incident[:8]} flooding orange)" in out
    code, out = cli("departments", "remove", f"{p}-Flood")
    assert code == 1 and f"1 incident not closed is held by it ({incident[:8]})" in out
    with open_registry(pipeline.settings) as reg:
        assert {x.place_id for x in reg.list_places(f"{p}c")} == {x.place_id for x in places} | {
            f"{p}typo"
        }

    # once nothing uses them: removed, by the CLI and the API, and audited
    pipeline.query(
        "UPDATE incidents SET state = 'closed' WHERE incident_id = %s RETURNING 1", incident
    )
    code, out = cli("places", "remove", f"{p}typo")
    assert code == 0 and f"removed district {p}c/{p}typo: X" in out, out
    code, out = cli("departments", "remove", f"{p}-Flood")
    assert code == 0 and f"removed department {p}-Flood: dup?" in out, out
    with api_client(pipeline.settings, admin_token) as api:
        assert api.delete(f"/profiles/{p}-unused").status_code == 204
        assert api.delete(f"/profiles/{p}-unused").status_code == 404
        in_use = api.delete(f"/places/{p}g1")
        assert in_use.status_code == 409
        assert in_use.json()["detail"][0]["loc"] == ["path", "place_id"]
        assert device in in_use.json()["detail"][0]["msg"]
        assert api.delete(f"/departments/{p}-nowhere").status_code == 404
    with open_registry(pipeline.settings) as reg:
        assert f"{p}typo" not in {x.place_id for x in reg.list_places()}
        assert f"{p}-Flood" not in {d.department_id for d in reg.list_departments()}
        removed = reg.audit_log("place", f"{p}typo")[0]
        assert (removed.action, removed.after) == ("remove", None)
        assert reg.audit_log("profile", f"{p}-unused")[0].action == "remove"
        assert reg.get(device).place_path == places[4].path  # what was used stays


def test_a_place_the_rule_file_or_the_incident_routing_names_is_not_removed(
    pipeline: Pipeline, admin_token: str, tmp_path: Path
) -> None:
    """Its rules would judge nothing and its routes route nothing: refused (CLI exit 1, API
    409) naming the rules and the routes and where to take them out; a broken rule file is
    named, not taken for 'nothing names it'."""
    p = uuid.uuid4().hex[:6]
    c, d1, d2 = tree(p)[:3]
    s9 = Place(place_id=f"{p}s9", level=PlaceLevel.STREET, name="S9", path=(*d2.path, f"{p}s9"))
    with open_registry(pipeline.settings) as reg:
        reg.put_places([c, d1, d2, s9], "itest")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"rules:\n  - {{id: r{p}-noise, kind: threshold, metric: noise_db, places: [{d1.place_id}],"
        " levels: {yellow: 70}}\n"
        f"  - {{id: r{p}-dust, kind: threshold, metric: pm25, places: [{d1.place_id}],"
        " levels: {yellow: 75}}\n"
    )
    shipped = Path(__file__).parents[2] / "rules" / "incidents.yaml"
    routes = tmp_path / "incidents.yaml"
    routes.write_text(
        shipped.read_text().replace(
            "routes:\n",
            "routes:\n  - {category: noise, tier: district, department: street-ops,"
            f" places: [{c.place_id}/{d2.place_id}]}}\n"
            "  - {category: noise, tier: street, department: street-ops,"
            f" places: [{'/'.join(s9.path)}]}}\n",
            1,
        )
    )
    env = {
        **pipeline.settings.to_env(),
        "CITYVITALS_RULES_FILE": str(rules),
        "CITYVITALS_INCIDENTS_FILE": str(routes),
    }

    def cli(*args: str) -> tuple[int, str]:
        run = CliRunner().invoke(app, list(args), env=env)
        return run.exit_code, run.output

    code, out = cli("places", "remove", d1.place_id)
    assert code == 1, out
    assert (
        f"the rule file {rules} scopes 2 rules to it (r{p}-noise, r{p}-dust; take it out there"
        " first)" in out
    )
    code, out = cli("places", "remove", d2.place_id)
    assert code == 1 and f"the incident routing ({routes}) has 1 route for it" in out, out
    # a move is not refused, but told what of the routing it leaves behind
    code, out = cli("places", "move", s9.place_id, d1.place_id)
    assert code == 0, out
    assert (
        f"note: the incident routing ({routes}) routes by {'/'.join(s9.path)} (now "
        f"{'/'.join((*d1.path, s9.place_id))}), which no longer covers it: give the new path"
    ) in out, out
    rules.write_text("rules: [{id: broken}]\n")
    code, out = cli("places", "remove", d2.place_id)
    assert code == 1 and "cannot check what names the place: " in out and str(rules) in out, out
    with open_registry(pipeline.settings) as reg:
        kept = {x.place_id for x in reg.list_places(c.place_id)}
        assert kept == {c.place_id, d1.place_id, d2.place_id, s9.place_id}

    # the API reads the files in force: the stream's rule file, here with a rule for d1
    pipeline.add_rules(
        f"  - {{id: r{p}-api, kind: threshold, metric: noise_db, places: [{d1.place_id}],"
        " levels: {yellow: 70}}\n"
    )
    with api_client(pipeline.settings, admin_token) as api:
        refused = api.delete(f"/places/{d1.place_id}")
        assert refused.status_code == 409, refused.text
        assert f"scopes 1 rule to it (r{p}-api;" in refused.json()["detail"][0]["msg"]
        assert api.delete(f"/places/{d2.place_id}").status_code == 204  # the routes in force


def test_a_device_moved_while_its_alerts_fire_is_told_they_stay_at_the_old_place(
    pipeline: Pipeline, admin_token: str
) -> None:
    """Its firing alert keeps the incident where it was raised (that district's officers and
    escalations): the CLI and the API say so; a device with nothing firing moves quietly."""
    p = uuid.uuid4().hex[:6]
    places = tree(p)
    with open_registry(pipeline.settings) as reg:
        reg.put_places(places, "itest")
    device, _ = pipeline.register("water_level", "/".join(places[4].path))
    quiet, _ = pipeline.register("water_level", "/".join(places[4].path))
    pipeline.query(
        "INSERT INTO alerts (alert_id, revision, rule_id, status, level, device_id, metric,"
        " value, threshold, place_path, started_at, updated_at, summary) VALUES"
        " (%s, 0, 'waterlogging-depth', 'firing', 'orange', %s, 'water_level_cm', 30, 25, %s,"
        " now(), now(), 's') RETURNING 1",
        uuid.uuid4().hex,
        device,
        list(places[4].path),
    )
    env = pipeline.settings.to_env()
    half = CliRunner().invoke(
        app, ["devices", "move", device, f"{p}c/{p}d2", "--lat", "31"], env=env
    )
    assert half.exit_code != 0 and "--lat and --lon go together" in half.output, half.output
    moved = CliRunner().invoke(app, ["devices", "move", device, f"{p}c/{p}d2"], env=env)
    assert moved.exit_code == 0, moved.output
    assert (
        f"note: 1 alert of {device} firing (waterlogging-depth orange at "
        f"{'/'.join(places[4].path)}): its incident stays at the old place" in moved.output
    )
    with api_client(pipeline.settings, admin_token) as api:
        # back to where its alert was raised: nothing stays behind
        back = api.post(f"/devices/{device}/move", json={"place_path": list(places[4].path)})
        assert back.status_code == 200, back.text
        assert back.json()["place_path"] == list(places[4].path)
        assert back.json()["notes"] == []
        away = api.post(f"/devices/{device}/move", json={"place_path": [f"{p}c", f"{p}d2"]})
        assert away.status_code == 200, away.text
        assert away.json()["notes"][0].startswith(f"1 alert of {device} firing")
        calm = api.post(f"/devices/{quiet}/move", json={"place_path": [f"{p}c", f"{p}d2"]})
        assert calm.status_code == 200 and calm.json()["notes"] == [], calm.text


def test_a_profile_in_a_unit_no_vital_sign_reads_is_refused_naming_the_unit(
    pipeline: Pipeline, admin_token: str, tmp_path: Path
) -> None:
    """A CO sensor's profile in µg/m³: the AQI reads CO in mg/m³, so 1,200 µg/m³ (sub-index
    12) would read as AQI 500, severe. Refused by the CLI and the API, naming the metric, its
    unit and the indicator; spelt otherwise (ug/m3 for µg/m³), the right unit is taken."""
    p = uuid.uuid4().hex[:6]
    wrong = tmp_path / "aq.yaml"
    wrong.write_text(
        f"profile_id: aq-{p}\ndevice_type: air_quality\nexpected_interval_s: 60\n"
        "metrics: {pm25: {unit: ug/m3, min: 0}, co: {unit: ug/m3, min: 0}}\n"
    )
    put = CliRunner().invoke(app, ["profiles", "put", str(wrong)], env=pipeline.settings.to_env())
    assert put.exit_code == 1, put.output
    assert (
        f"profile 'aq-{p}': metric 'co' in 'ug/m3': the indicator 'aqi' reads it in mg/m³"
    ) in put.output
    assert "pm25" not in put.output and "nothing was stored" in put.output
    body = {
        "device_type": "air_quality",
        "expected_interval_s": 60,
        "metrics": {"pm25": {"unit": "µg/m³"}, "co": {"unit": "ug/m3"}},
    }
    with api_client(pipeline.settings, admin_token) as api:
        refused = api.put(f"/profiles/aq-{p}", json=body)
        assert refused.status_code == 422, refused.text
        (detail,) = refused.json()["detail"]
        assert detail["loc"] == ["body", "metrics", "co", "unit"]
        assert "the indicator 'aqi' reads it in mg/m³" in detail["msg"]
        assert api.get(f"/profiles/aq-{p}").status_code == 404
        body["metrics"]["co"] = {"unit": "mg/m3"}
        assert api.put(f"/profiles/aq-{p}", json=body).status_code == 201
