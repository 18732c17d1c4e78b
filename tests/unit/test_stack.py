"""The local stack's files: the broker's password file and pid file are where the registry,
which rewrites the one and signals the process of the other, looks for them."""

from __future__ import annotations

from pathlib import Path

from device_registry.credentials import local_broker
from wiring.servers import mosquitto_process
from wiring.stack import StackPaths


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


def test_the_state_folder_names_each_of_its_files_under_it(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    named = [paths.pids, paths.logs, paths.lock, paths.metrics_ports, paths.mosquitto]
    assert [p.parent for p in named] == [tmp_path] * len(named)
    assert [p.name for p in named] == ["pids", "logs", "up.lock", "metrics-ports.json", "mosquitto"]
