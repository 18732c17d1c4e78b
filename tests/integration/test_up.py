"""The README's run command: 'cityvitals up --simulate' brings the pipeline up on real local
processes, the simulated city's readings reach PostgreSQL, an injected flood raises an alert
that becomes an incident dispatched on screen, a service killed is started again, so is
PostgreSQL stopped under traffic (losing no reading), and Ctrl-C (SIGINT) stops every process
it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import free_port, free_port_block, wait_for
from wiring.localstack import down, reports_ready
from wiring.simulate import FLOOD_PEAK_CM, SHAPES
from wiring.stack import port_is_open

pytestmark = pytest.mark.integration

# The flood rises linearly to its full height; it passes the first depth level (5 cm) that
# share of the way up (after about 2 minutes). The simulation opens with the flood that far
# under way less 10 s (``--incident-after`` negative), so the test does not wait for it.
FLOOD_REACHES_BLUE_S = SHAPES["flood"].rise * 5 / FLOOD_PEAK_CM
UNDER_WAY_S = int(FLOOD_REACHES_BLUE_S) - 10


def test_up_with_the_simulator_and_ctrl_c(tmp_path: Path) -> None:
    mqtt, kafka, pg, metrics = free_port(), free_port(), free_port(), free_port_block(5)
    shipped = (Path(__file__).parents[2] / "rules" / "default.yaml").read_text()
    rules_file = tmp_path / "rules.yaml"  # a copy of the shipped rules, which reloads
    rules_file.write_text(shipped)
    url = f"postgresql://cityvitals@127.0.0.1:{pg}/cityvitals"
    env = {
        **os.environ,
        "CITYVITALS_MQTT_PORT": str(mqtt),
        "CITYVITALS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "CITYVITALS_DATABASE_URL": url,
        "CITYVITALS_STATE_DIR": str(tmp_path / "state"),
        "CITYVITALS_API_PORT": str(free_port()),
        "CITYVITALS_RULES_FILE": str(rules_file),
    }
    argv = [
        sys.executable,
        "-m",
        "wiring.cli",
        "up",
        "--simulate",
        "--interval",
        "1",
        "--incident",
        "flood@sim-d1-s1-g1",
        "--incident-after",
        str(-UNDER_WAY_S),
        "--metrics-base",
        str(metrics),
    ]
    log = (tmp_path / "up.log").open("w+")
    up = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:

        def query(sql: str) -> list[tuple[object, ...]]:
            try:
                with psycopg.connect(url, options="-c search_path=cityvitals") as conn:
                    return conn.execute(sql.encode()).fetchall()
            except psycopg.Error:
                return []

        def up_log() -> str:
            return (tmp_path / "up.log").read_text()

        wait_for(lambda: "cityvitals is up" in up_log() or up.poll() is not None, 120, "up")
        assert up.poll() is None, up_log()
        wait_for(lambda: "console login" in up_log(), 30, "the local admin's login link")
        (link,) = [line for line in up_log().splitlines() if "console login" in line]
        assert "/console#token=" in link and query("SELECT role FROM users") == [("admin",)]
        # A rule author watching up is told what the stream made of each edit of the file.
        rules_file.write_text(shipped + "  - {id: broken, metric: m, levels: {yelow: 3}}\n")
        wait_for(lambda: "rules: the stream refused a change to" in up_log(), 30, "the refusal")
        assert ".levels.yelow.[key]: Input should be" in up_log(), up_log()
        rules_file.write_text(shipped + "  - {id: mine, metric: m, levels: {yellow: 3}}\n")
        wait_for(lambda: "rules: the stream took" in up_log(), 30, "the new version taken")
        # the routing's departments are registered: their operators can be added at once
        departments = {str(d) for (d,) in query("SELECT department_id FROM departments")}
        assert {"street-ops", "water-affairs", "fire-rescue"} <= departments, departments
        sensors = "SELECT count(DISTINCT device_id) FROM readings WHERE place_path[1] = 'sim'"
        cameras = "SELECT count(DISTINCT camera_id) FROM camera_events WHERE place_path[1] = 'sim'"
        wait_for(lambda: query(sensors) == [(84,)], 90, "readings from all 84 simulated sensors")
        wait_for(lambda: query(cameras) == [(12,)], 90, "events from all 12 simulated cameras")
        alert = wait_for(
            lambda: query(
                "SELECT rule_id, level, place_path FROM alerts "
                "WHERE device_id = 'sim-waterlevel-d1s1g1' AND rule_id = 'waterlogging-depth'"
            ),
            FLOOD_REACHES_BLUE_S - UNDER_WAY_S + 60,
            "the flood alert, stored from the alerts topic",
        )
        assert alert[0][0] == "waterlogging-depth"
        assert alert[0][2] == ["sim", "sim-d1", "sim-d1-s1", "sim-d1-s1-g1"]
        # the flood is one incident, dispatched to the street's operations, shown on screen
        shown = wait_for(
            lambda: [
                line
                for line in up_log().splitlines()
                if "flooding at sim-d1-s1" in line and ": dispatch -> street-ops" in line
            ],
            60,
            "the flood's incident and dispatch on up's screen",
        )
        assert "(street tier) [dispatched]" in shown[0]
        assert query("SELECT count(*) FROM deadletters")[0][0] == 0, up_log()
        # A service that dies is started again, as a supervisor would, not the stack stopped.
        pid_file = tmp_path / "state" / "pids" / "liveness.pid"
        first = int(pid_file.read_text())
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: "liveness exited (killed by SIGKILL); started it again" in up_log(),
            30,
            "up to start the liveness service again",
        )
        again = int(pid_file.read_text())
        assert again != first and up.poll() is None, up_log()
        wait_for(lambda: reports_ready("liveness", metrics + 4), 90, "liveness ready again")
        # So is a server stopped by hand: PostgreSQL in a fast shutdown (pg_ctl stop -m fast)
        # while the simulator sends. What the gateway passed to Kafka meanwhile is written once
        # the database is back: no simulated sensor's sequence numbers have a gap.
        stored = "SELECT count(*) FROM readings WHERE place_path[1] = 'sim'"
        before = query(stored)[0][0]
        os.kill(int((tmp_path / "state" / "pids" / "postgres.pid").read_text()), signal.SIGINT)
        wait_for(
            lambda: "postgres exited (" in up_log() and "the services wait for it" in up_log(),
            30,
            "up to start PostgreSQL again",
        )
        assert up.poll() is None, up_log()
        wait_for(lambda: query(stored) and query(stored)[0][0] > before + 84 * 10, 120, "more")
        gaps = query(
            "SELECT device_id, min(seq), max(seq), count(DISTINCT seq) FROM readings"
            " WHERE place_path[1] = 'sim' GROUP BY device_id"
            " HAVING max(seq) - min(seq) + 1 <> count(DISTINCT seq)"
        )
        assert gaps == [], gaps
    finally:
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(60)
        finally:
            down(tmp_path / "state", purge=True)
    assert code == 0, up_log()
    # before the broker, which keeps them in memory, stops: everything Kafka held is stored
    assert "the stream and the sinks stored everything Kafka held" in up_log(), up_log()
    assert "stopped" in up_log()
    time.sleep(0.5)
    assert not any(port_is_open("127.0.0.1", p) for p in (mqtt, kafka, pg))
    assert not list((tmp_path / "state" / "pids").glob("*.pid"))
