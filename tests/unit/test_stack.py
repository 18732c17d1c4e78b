"""The local stack's files: the broker's password file and pid file are where the registry,
which rewrites the one and signals the process of the other, looks for them. The ports handed
to its servers are ones no outgoing connection can take before the server binds them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from cityvitals.settings import Settings
from device_registry.credentials import local_broker
from ingest.decode import MAX_PAYLOAD
from wiring.cli import app
from wiring.cli_stack import Unready
from wiring.localstack import (
    STOP_ORDER,
    LocalStack,
    MetricsPorts,
    reports_ready,
    sample_sum,
    scrape,
    stack_status,
)
from wiring.servers import MAX_PACKET_BYTES, mosquitto_process
from wiring.services import SERVICES
from wiring.stack import (
    StackError,
    StackLock,
    StackPaths,
    _ephemeral_range,
    forget_pid,
    free_loopback_port,
    read_pid,
    record_pid,
    runs,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_broker_reads_the_password_file_the_registry_rewrites(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / "state")
    assert local_broker(paths.state_dir) is None  # no local stack there yet
    paths.make()
    process = mosquitto_process(paths, port=1883, acl="user ingest\n")
    broker = local_broker(paths.state_dir)
    assert broker is not None
    conf = (paths.mosquitto / "mosquitto.conf").read_text().splitlines()
    assert f"password_file {broker.password_file.resolve()}" in conf
    assert broker.password_file.exists()
    assert process.pid_path.resolve() == broker.pid_file.resolve()


def test_the_local_and_the_deployed_broker_take_packets_of_the_same_size(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / "state")
    paths.make()
    mosquitto_process(paths, port=1883, acl="user ingest\n")
    local = (paths.mosquitto / "mosquitto.conf").read_text().splitlines()
    deployed = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    limit = f"max_packet_size {MAX_PACKET_BYTES}"
    assert limit in local and limit in deployed
    assert MAX_PACKET_BYTES > 2 * MAX_PAYLOAD  # a device's largest payload passes
    # both log each connection and each refused login: where a silent device's login is seen
    for conf in (local, deployed):
        assert "connection_messages true" in conf and "log_type notice" in conf
        assert "log_type information" not in conf  # a line at every autosave


def test_the_state_folder_names_each_of_its_files_under_it(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    named = [paths.pids, paths.logs, paths.lock, paths.metrics_ports, paths.mosquitto]
    assert [p.parent for p in named] == [tmp_path] * len(named)
    assert [p.name for p in named] == ["pids", "logs", "up.lock", "metrics-ports.json", "mosquitto"]


def test_a_free_port_is_outside_the_ephemeral_range_free_and_never_handed_out_twice() -> None:
    low, high = _ephemeral_range()
    blocks = [free_loopback_port(6) for _ in range(50)]
    ports = [base + i for base in blocks for i in range(6)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]
    socks = [socket.socket() for _ in range(6)]
    try:
        for i, sock in enumerate(socks):
            sock.bind(("127.0.0.1", blocks[-1] + i))  # each port of a block is free
    finally:
        for sock in socks:
            sock.close()


def test_a_port_of_another_stack_is_named_before_anything_starts(tmp_path: Path) -> None:
    """Every port 'up' would listen on is checked, the API's and the metrics' too: a metrics
    port another stack holds would answer the readiness probe for a service of ours."""
    free = [free_loopback_port() for _ in range(4)]
    base = Settings(
        state_dir=tmp_path / "state",
        mqtt_port=free[0],
        kafka_bootstrap=f"127.0.0.1:{free[1]}",
        database_url=f"postgresql://cityvitals@127.0.0.1:{free[2]}/cityvitals",
        api_port=free[3],
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for settings, metrics, named in (
            (base.model_copy(update={"api_port": port}), MetricsPorts(), "CITYVITALS_API_PORT"),
            (base, MetricsPorts(streams=port), "--metrics-base"),
        ):
            with pytest.raises(StackError) as refused:
                LocalStack(settings, metrics)._check_ports()
            assert f"port {port} on 127.0.0.1 is already in use" in str(refused.value)
            assert f"set {named} to another port" in str(refused.value)
    LocalStack(base, MetricsPorts(streams=port))._check_ports()  # free again: no complaint


def serve_once(answer: bytes) -> int:
    """A one-shot HTTP server on loopback that sends ``answer`` to its first client, then
    closes the connection; returns its port."""
    server = socket.create_server(("127.0.0.1", 0))
    port: int = server.getsockname()[1]

    def reply() -> None:
        with server, server.accept()[0] as conn:
            conn.recv(4096)
            conn.sendall(answer)

    threading.Thread(target=reply, daemon=True).start()
    return port


def test_a_metrics_answer_is_read_whole_or_refused_as_an_os_error() -> None:
    exposition = b'cityvitals_streams_ready 1.0\nx_total{a="1"} 2.0\nx_total{a="2"} 3.0\n'
    whole = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(exposition), exposition)
    text = scrape(serve_once(whole))
    assert sample_sum(text, "x_total") == 5.0
    assert reports_ready("streams", serve_once(whole))
    # a service going down mid-answer: 100 bytes promised, fewer sent
    cut = b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\ncityvitals_streams_re"
    with pytest.raises(OSError, match="its answer could not be read whole"):
        scrape(serve_once(cut))
    assert not reports_ready("streams", serve_once(cut))
    assert not reports_ready("streams", free_loopback_port())  # nobody answers


def serve_ready(service: str, times: int = 2) -> int:
    """A metrics endpoint on loopback saying ``service`` is ready to its first ``times``
    clients; returns its port."""
    body = f"cityvitals_{service}_ready 1.0\n".encode()
    answer = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = socket.create_server(("127.0.0.1", 0))
    port: int = server.getsockname()[1]

    def reply() -> None:
        with server:
            for _ in range(times):
                with server.accept()[0] as conn:
                    conn.recv(4096)
                    conn.sendall(answer)

    threading.Thread(target=reply, daemon=True).start()
    return port


@pytest.fixture
def children() -> Iterator[Callable[[], int]]:
    """Start a process that runs until the test ends; gives its pid."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        started.append(subprocess.Popen(["sleep", "60"]))
        return started[-1].pid

    yield start
    for child in started:
        child.kill()
        child.wait()


def test_status_lists_each_process_with_its_readiness_and_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, children: Callable[[], int]
) -> None:
    paths = StackPaths(tmp_path / "state")
    paths.make()
    gone = subprocess.Popen(["true"])
    gone.wait()
    ports = {"ingest": serve_ready("ingest"), "streams": free_loopback_port()}  # no answer
    ports["liveness"] = serve_ready("liveness")  # answers, if asked (it must not be)
    paths.metrics_ports.write_text(json.dumps(ports))
    pids = {"postgres": children(), "mosquitto": gone.pid, "tansu": 1, "ingest": children()}
    pids["streams"], pids["liveness"] = children(), children()
    os.kill(pids["liveness"], signal.SIGSTOP)  # paused: alive, answering nothing
    os.waitpid(pids["liveness"], os.WUNTRACED)  # once the kernel has stopped it
    for name, pid in pids.items():
        record_pid(paths.pids / f"{name}.pid", pid)
    paths.restarts.write_text(json.dumps({"ingest": 1}))  # up started it again once
    handed_on = paths.pids / "tansu.pid"  # written for a process that started elsewhen: pid 1
    handed_on.with_suffix(".start").write_text(str(start_of(pids["postgres"])))
    monkeypatch.setenv("CITYVITALS_STATE_DIR", str(paths.state_dir))
    unused = free_loopback_port()
    monkeypatch.setenv("CITYVITALS_DATABASE_URL", f"postgresql://x@127.0.0.1:{unused}/x")
    lock = StackLock(paths.lock)
    lock.acquire()  # this process plays the running 'cityvitals up'
    try:
        found = stack_status(paths.state_dir)
        assert (found.up, found.launcher) == (True, os.getpid())
        shown = [(p.name, p.pid, p.alive, p.ready) for p in found.processes]
        assert shown == [
            ("postgres", pids["postgres"], True, None),
            ("tansu", 1, False, None),
            ("mosquitto", gone.pid, False, None),
            ("sinks", None, False, None),
            ("liveness", pids["liveness"], True, False),
            ("streams", pids["streams"], True, False),
            ("ingest", pids["ingest"], True, True),
            ("api", None, False, None),
        ]
        assert not found.ok
        # a stack started as root keeps its database outside the state folder: named, also
        # to a user other than root (who would look for it in the state folder)
        elsewhere = tmp_path / "var-lib" / "postgres"
        elsewhere.mkdir(parents=True)
        monkeypatch.setattr(StackPaths, "root_postgres_data", property(lambda self: elsewhere))
        monkeypatch.setattr("wiring.stack.os.geteuid", lambda: 1000)
        result = CliRunner().invoke(app, ["status"])
        assert result.exit_code == 1, result.output
        assert f"  PostgreSQL's data folder: {elsewhere} (back it up" in result.output
        assert f"up (pid {os.getpid()}), state folder {paths.state_dir}:" in result.output
        lines = result.output.splitlines()
        assert f"  mosquitto  pid {gone.pid:<8} exited (up starts it again" in "\n".join(lines)
        assert "  tansu      pid 1        EXITED: what it held in memory is gone, and up stops" in (
            "\n".join(lines)
        )
        assert f"  ingest     pid {pids['ingest']:<8} running, ready (metrics on port" in (
            "\n".join(lines)
        )
        assert "; up started it again 1 time" in "\n".join(lines)
        assert f"NOT READY (metrics on port {ports['streams']})" in result.output
        assert "  api        -            not started" in lines
        assert f"PAUSED by a signal (SIGSTOP): 'kill -CONT {pids['liveness']}'" in result.output
        assert "status unavailable" in result.output  # PostgreSQL's pid runs, nobody answers
    finally:
        lock.release()
    left = stack_status(paths.state_dir)  # no 'up': what it started, gone ones too
    assert (left.up, left.launcher) == (False, None)
    assert [(p.name, p.alive) for p in left.processes] == [
        ("postgres", True),
        ("tansu", False),
        ("mosquitto", False),
        ("liveness", True),
        ("streams", True),
        ("ingest", True),
    ]
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1
    assert "no 'cityvitals up' runs; what it started still does ('cityvitals down'" in (
        result.output
    )
    assert (
        f"  mosquitto  pid {gone.pid:<8} EXITED, and no 'cityvitals up' runs to start it again"
        in result.output
    )
    for name in ("postgres", "ingest", "streams", "liveness"):
        os.kill(pids[name], signal.SIGKILL)
        os.waitpid(pids[name], 0)
    nothing = CliRunner().invoke(app, ["status"])  # pid files of processes gone, and pid 1
    assert nothing.exit_code == 2, nothing.output
    assert f"nothing runs on the state folder {paths.state_dir}" in nothing.output


def test_status_passes_when_every_process_runs_and_every_service_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, children: Callable[[], int]
) -> None:
    paths = StackPaths(tmp_path / "state")
    paths.make()
    ports = {name: serve_ready(name, times=1) for name in SERVICES}
    for name in SERVICES:
        record_pid(paths.pids / f"{name}.pid", children())
    paths.metrics_ports.write_text(json.dumps(ports))
    monkeypatch.setenv("CITYVITALS_STATE_DIR", str(paths.state_dir))
    lock = StackLock(paths.lock)
    lock.acquire()
    try:
        result = CliRunner().invoke(app, ["status"])
    finally:
        lock.release()
    assert result.exit_code == 0, result.output
    ready = [line.split()[0] for line in result.output.splitlines() if "running, ready" in line]
    assert ready == [n for n in reversed(STOP_ORDER) if n in SERVICES]


def start_of(pid: int) -> int:
    """When process ``pid`` started, in clock ticks since boot, as ``record_pid`` keeps it."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_a_pid_handed_to_another_process_is_not_the_stack_s(tmp_path: Path) -> None:
    """After a reboot a pid file may name a process that is not the stack's: the instant the
    process it was written for started is kept beside it, so another process of that pid is
    not taken for it, by 'status' nor by 'down' (which would signal it)."""
    pid_file = tmp_path / "tansu.pid"
    child = subprocess.Popen(["sleep", "60"])
    try:
        record_pid(pid_file, child.pid)
        assert read_pid(pid_file) == child.pid
        assert pid_file.with_suffix(".start").read_text() == str(start_of(child.pid))
        assert runs(child.pid, pid_file)
        pid_file.write_text(str(os.getpid()))  # the pid now names another process: this one
        assert not runs(os.getpid(), pid_file)
        pid_file.with_suffix(".start").unlink()  # a pid file without it: any process of it
        assert runs(os.getpid(), pid_file)
    finally:
        child.kill()
        child.wait()
    record_pid(pid_file, child.pid)  # the process is gone: nothing kept beside
    assert not runs(child.pid, pid_file)
    assert not pid_file.with_suffix(".start").exists()
    forget_pid(pid_file)
    assert not pid_file.exists()
    pid_file.write_text("not a pid")
    assert read_pid(pid_file) is None


def test_up_says_once_that_a_running_service_is_not_ready_and_when_it_is_again() -> None:
    class Process:
        def __init__(self, name: str) -> None:
            self.name = name

        def alive(self) -> bool:
            return True

    def stack(sinks_port: int) -> Any:
        ports = MetricsPorts(ingest=serve_ready("ingest", times=1), sinks=sinks_port)
        return SimpleNamespace(processes=[Process("ingest"), Process("sinks")], metrics=ports)

    silent = free_loopback_port()  # the sinks paused: nothing answers on their port
    unready = Unready()
    assert unready.lines(stack(silent)) == []  # one look is not enough (a restart is slow)
    (said,) = unready.lines(stack(silent))
    assert said.startswith(f"sinks runs but is not ready (its metrics on port {silent} do not")
    assert unready.lines(stack(silent)) == []  # said once
    assert unready.lines(stack(serve_ready("sinks", times=1))) == ["sinks is ready again"]
    assert unready.lines(stack(serve_ready("sinks", times=1))) == []


def test_a_process_that_keeps_exiting_is_said_once_with_its_log_then_briefly_then_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service that fails at every start: its log is shown once, when it begins to loop,
    each later start is one line counting the starts, and once it stays up it is said."""
    from types import SimpleNamespace

    from wiring import localstack
    from wiring.localstack import LocalStack, Restarts

    clock = [0.0]
    monkeypatch.setattr(localstack.time, "monotonic", lambda: clock[0])

    class Flaky:
        name, log_path = "sinks", tmp_path / "sinks.log"
        popen = SimpleNamespace(returncode=1)
        up, stays = False, False

        def alive(self) -> bool:
            return self.up

        def start(self) -> None:
            self.up = self.stays

        def log_tail(self) -> str:
            return "OSError: [Errno 98] Address already in use"

    flaky = Flaky()
    stack = LocalStack(Settings(state_dir=tmp_path))
    stack.processes.append(flaky)  # type: ignore[arg-type]
    restarts = Restarts(limit=2, window_s=600)

    def at(t: float) -> list[str]:
        clock[0] = t
        return stack.revive(restarts)

    assert at(0)[0].startswith("sinks exited (exit code 1); started it again")
    assert at(1) == []  # its pause is not over
    (first,) = at(3)
    assert first.startswith("sinks keeps exiting (exit code 1; 2 starts in 10 min)")
    assert first.endswith("OSError: [Errno 98] Address already in use")
    assert at(30) == []  # a minute between starts now
    (later,) = at(63)
    assert later == (
        f"sinks keeps exiting (exit code 1; 3 starts in 10 min): up starts it again every 60 s"
        f" (its log: {flaky.log_path})"
    )
    flaky.stays = True
    at(123)  # started, and it stays up
    assert at(150) == []
    assert at(183) == ["sinks has run 60 s since its last start: it keeps exiting no more"]


def test_a_refused_first_up_leaves_no_state_folder_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused for a port in use, a first 'up' on a folder left its logs, pids and lock
    there; a folder of an earlier run stays."""
    from typer.testing import CliRunner

    from wiring.cli import app

    state = tmp_path / "fresh"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("CITYVITALS_STATE_DIR", str(state))
        monkeypatch.setenv("CITYVITALS_MQTT_PORT", str(port))
        refused = CliRunner().invoke(app, ["up", "--metrics-base", str(free_loopback_port())])
        assert refused.exit_code == 1, refused.output
        assert f"port {port} on 127.0.0.1 is already in use" in refused.output
        assert not state.exists()
        state.mkdir()
        (state / "kept").write_text("an earlier run's")
        again = CliRunner().invoke(app, ["up", "--metrics-base", str(free_loopback_port())])
        assert again.exit_code == 1, again.output
        assert (state / "kept").exists()


def test_a_tls_listener_without_its_certificate_or_key_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    cert = tmp_path / "cert.pem"
    settings = Settings(state_dir=tmp_path / "state", mqtt_tls_port=free_loopback_port())
    with pytest.raises(StackError, match="CITYVITALS_MQTT_TLS_CERTFILE is not set"):
        LocalStack(settings, MetricsPorts())._check_ports()
    given = settings.model_copy(update={"mqtt_tls_certfile": cert, "mqtt_tls_keyfile": cert})
    with pytest.raises(StackError, match=r"CITYVITALS_MQTT_TLS_CERTFILE names no file \("):
        LocalStack(given, MetricsPorts())._check_ports()
