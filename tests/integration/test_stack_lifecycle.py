"""'cityvitals up' owns its state folder: a second 'up' on it is refused and leaves the first
running; 'ready' and 'status' find the services' ports without CITYVITALS_METRICS_PORT; SIGTERM and SIGHUP
stop every process as Ctrl-C does, and 'down' stops a running 'up' through its launcher."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cityvitals import kafka
from cityvitals.settings import Settings
from cityvitals.topics import Topic
from tests.integration.conftest import free_port, free_port_block, wait_for
from wiring.localstack import down, reports_ready
from wiring.services import SERVICES
from wiring.stack import StackPaths, port_is_open

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Up:
    """A 'cityvitals up' (without the simulator) as a user starts it, on free ports."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    state: Path
    log_path: Path
    ports: tuple[int, ...]
    metrics_base: int

    def log(self) -> str:
        return self.log_path.read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wiring.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def children(self) -> dict[str, int]:
        """Every process the stack recorded in its pid folder."""
        return {p.stem: int(p.read_text()) for p in (self.state / "pids").glob("*.pid")}


def start_up(tmp_path: Path) -> Up:
    mqtt, kafka, pg = free_port(), free_port(), free_port()
    state = tmp_path / "state"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS_")},
        "CITYVITALS_MQTT_PORT": str(mqtt),
        "CITYVITALS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "CITYVITALS_DATABASE_URL": f"postgresql://cityvitals@127.0.0.1:{pg}/cityvitals",
        "CITYVITALS_STATE_DIR": str(state),
        "CITYVITALS_API_PORT": str(free_port()),
    }
    base = free_port_block(5)
    argv = [sys.executable, "-m", "wiring.cli", "up", "--metrics-base", str(base)]
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    up = Up(process, env, state, log_path, (mqtt, kafka, pg), base)
    wait_for(lambda: "cityvitals is up" in up.log() or process.poll() is not None, 120, "up")
    assert process.poll() is None, up.log()
    return up


@pytest.fixture()
def up(tmp_path: Path) -> Iterator[Up]:
    started = start_up(tmp_path)
    try:
        yield started
    finally:
        if started.process.poll() is None:
            started.process.send_signal(signal.SIGINT)
            started.process.wait(90)
        down(started.state, purge=True)


def tcp_connections(pid: int, port: int) -> int:
    """The established TCP connections process ``pid`` holds to ``port`` on 127.0.0.1 (its
    sockets' inodes in ``/proc/PID/fd``, found in ``/proc/net/tcp``)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    return sum(
        1
        for row in rows
        if int(row[2].split(":")[1], 16) == port and row[3] == "01" and row[9] in inodes
    )


def assert_all_stopped(up: Up, children: dict[str, int]) -> None:
    code = up.process.wait(90)
    assert code == 0, up.log()
    assert "stopped" in up.log()
    still = {name: pid for name, pid in children.items() if alive(pid)}
    assert still == {}, up.log()
    assert not list((up.state / "pids").glob("*.pid"))
    assert not any(port_is_open("127.0.0.1", p) for p in up.ports)


def test_a_second_up_on_the_same_state_folder_is_refused_and_the_first_runs_on(up: Up) -> None:
    children = up.children()
    assert set(children) == {*SERVICES, "mosquitto", "tansu", "postgres"}

    second = up.cli("up", "--metrics-base", str(free_port_block(5)))

    assert second.returncode == 1
    assert f"another 'cityvitals up' (pid {up.process.pid})" in second.stderr, second.stderr
    assert str(up.state) in second.stderr
    assert up.process.poll() is None, up.log()
    assert up.children() == children
    assert all(alive(pid) for pid in children.values())
    for i, service in enumerate(SERVICES, start=1):
        assert reports_ready(service, up.metrics_base + i), service
        probe = up.cli("ready", service)  # finds the port without CITYVITALS_METRICS_PORT
        assert probe.returncode == 0, probe.stderr
        assert f"{service} is ready" in probe.stdout
    assert "unexpectedly" not in up.log()
    status = up.cli("status")  # every process runs, every service is ready
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"up (pid {up.process.pid}), state folder {up.state}:" in status.stdout
    data = StackPaths(up.state).postgres_data  # as root, outside the state folder
    assert f"  PostgreSQL's data folder: {data} (back it up" in status.stdout, status.stdout
    for name, pid in children.items():
        assert f"  {name:<10} pid {pid:<8} running" in status.stdout, (name, status.stdout)
    assert status.stdout.count("running, ready") == len(SERVICES), status.stdout
    assert "readings stored" in status.stdout, status.stdout
    os.kill(children["liveness"], signal.SIGKILL)  # up starts it again; status counts it
    wait_for(
        lambda: (
            up.children()["liveness"] != children["liveness"]
            and reports_ready("liveness", up.metrics_base + 4)
        ),
        60,
        "liveness started again",
    )
    again = up.cli("status")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "running, ready" in again.stdout
    (line,) = [x for x in again.stdout.splitlines() if x.startswith("  liveness ")]
    assert line.endswith("; up started it again 1 time"), line
    unknown = up.cli("ready", "nosuch")
    assert unknown.returncode == 1
    assert "unknown service 'nosuch'" in unknown.stderr


def test_ready_without_a_running_up_says_where_it_looked(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS_")},
        "CITYVITALS_STATE_DIR": str(tmp_path / "nothing"),
    }
    probe = subprocess.run(
        [sys.executable, "-m", "wiring.cli", "ready", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 1
    assert "CITYVITALS_METRICS_PORT is not set" in probe.stderr
    assert str(tmp_path / "nothing") in probe.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_every_process_as_ctrl_c_does(up: Up, sig: signal.Signals) -> None:
    children = up.children()
    assert len(children) == len(SERVICES) + 3
    # Running, up itself keeps no Kafka client (one it kept logged a failed connection when
    # the stop took Kafka down): after its first status line, it has done what it set up.
    wait_for(lambda: "readings stored" in up.log(), 60, "up's first status line")
    assert tcp_connections(up.process.pid, up.ports[1]) == 0
    up.process.send_signal(sig)
    assert_all_stopped(up, children)
    assert f"stopping ({sig.name})" in up.log()
    # no client of up's own is left to log a failed connection as Kafka stops
    assert "rdkafka" not in up.log().split("stopping (")[-1], up.log()


def test_down_stops_a_running_up_through_its_launcher(up: Up) -> None:
    children = up.children()
    result = up.cli("down")
    assert result.returncode == 0, result.stderr
    assert f"up (pid {up.process.pid})" in result.stdout
    # what the stop found of what Kafka held, said where down was asked, not only in up's log
    assert "the stream and the sinks stored everything Kafka held" in result.stdout
    assert_all_stopped(up, children)
    assert "unexpectedly" not in up.log()
    after = up.cli("status")
    assert after.returncode == 2, after.stdout + after.stderr
    assert f"nothing runs on the state folder {up.state}" in after.stderr


def test_an_up_killed_outright_leaves_its_processes_to_status_and_down_not_to_a_new_up(
    up: Up,
) -> None:
    """An 'up' killed outright (SIGKILL: no orderly stop) leaves its processes running. A new
    'up' on the folder finds their ports taken and is refused without touching them (it once
    stopped them all, with what the broker held); 'status' lists them and 'down' stops them."""
    children = up.children()
    up.process.kill()
    up.process.wait(30)
    assert all(alive(pid) for pid in children.values())
    status = up.cli("status")
    assert status.returncode == 1, status.stdout + status.stderr
    assert "no 'cityvitals up' runs; what it started still does" in status.stdout
    assert status.stdout.count("running, ready") == len(SERVICES), status.stdout

    second = up.cli("up", "--metrics-base", str(up.metrics_base), "--duration", "5")

    assert second.returncode == 1, second.stdout + second.stderr
    assert "still running without it" in second.stderr, second.stderr
    assert "nothing was stopped" in second.stderr
    assert "stopped" not in second.stdout
    assert up.children() == children
    assert all(alive(pid) for pid in children.values())
    # The stream and the sinks die too, and nothing starts them again: 'status' says so, and
    # 'down' starts them again to store what Kafka holds before the broker (memory) stops.
    for name in ("streams", "sinks"):
        os.kill(children[name], signal.SIGKILL)
    wait_for(lambda: not alive(children["streams"]) and not alive(children["sinks"]), 30, "gone")
    status = up.cli("status")
    assert "EXITED, and no 'cityvitals up' runs to start it again" in status.stdout
    s = Settings(kafka_bootstrap=up.env["CITYVITALS_KAFKA_BOOTSTRAP"])
    producer = kafka.producer(s)
    for topic in (Topic.READINGS_RAW, Topic.READINGS):  # the stream's input, the sinks'
        producer.produce(s.topic(topic), b"held while nothing consumes it")
    assert producer.flush(10) == 0
    stopped = up.cli("down")  # drains what the broker holds first, as up would have
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert (
        "started streams, sinks again to store what Kafka held; the stream and the sinks "
        "stored everything Kafka held" in stopped.stdout
    ), stopped.stdout
    wait_for(lambda: not any(alive(pid) for pid in children.values()), 30, "all stopped")
    assert not up.children()  # those down started again are stopped too


def test_down_says_what_a_stop_left_in_kafka_and_exits_1(up: Up) -> None:
    """With the sinks paused, a message on a topic they store is not stored by the stop's
    drain (30 s at most): 'down', asked from another shell, says so and exits 1, as the
    messages go with a broker that keeps them in memory."""
    sinks = up.children()["sinks"]
    os.kill(sinks, signal.SIGSTOP)
    try:
        s = Settings(kafka_bootstrap=up.env["CITYVITALS_KAFKA_BOOTSTRAP"])
        producer = kafka.producer(s)
        producer.produce(s.topic(Topic.READINGS), b"not stored")
        assert producer.flush(10) == 0
        result = up.cli("down")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the stop killed it, paused
            os.kill(sinks, signal.SIGCONT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(
        r"\d+ messages in Kafka not yet stored by the stream or the sinks \(after 3\d s\)",
        result.stderr,
    ), result.stderr
    assert f"up (pid {up.process.pid})" in result.stdout
