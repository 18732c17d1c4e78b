"""End-to-end benchmark: MQTT → gateway → Kafka → Faust → PostgreSQL on the real local stack.

D registered devices publish N readings (4 metrics each) at QoS 1, each through its own
Mosquitto C client (``mosquitto_pub -l``, so the load generator costs little CPU), and it reports:
- throughput: readings stored per second, from the first publish to the last row in PostgreSQL;
- latency: publish → row visible, for marker readings sent every 0.25 s during the load;
- per-stage counts from each service's Prometheus endpoint, which must reconcile;
- the readings per ``readings.raw`` message, and the stream stage's seconds per phase;
- CPU seconds each process spent per 1000 readings (steady whatever else the machine does);
- resident memory of every process.

Run: ``.venv/bin/python benchmarks/pipeline.py --readings 50000 --devices 100``.
Figures depend on the machine (every process shares its cores); compare runs on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import mkdtemp

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.stack import private_stack
from cityvitals import db
from cityvitals.contracts import Device
from cityvitals.settings import Settings
from wiring.localstack import down, sample_sum, scrape
from wiring.services import open_registry


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(port: int, name: str) -> float:
    """The sum of metric ``name``'s samples on the metrics endpoint at ``port``."""
    return sample_sum(scrape(port), name)


def stored(settings: Settings, marker: str) -> int:
    """Load readings stored so far (marker readings not counted)."""
    with db.connect(settings) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE metric = 'pm25' AND device_id <> %s", (marker,)
        ).fetchone()
    count = row[0] if row else 0
    assert isinstance(count, int)
    return count


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_load(credentials: dict[str, str], per_device: int, folder: Path) -> None:
    """Each device's readings as JSON lines, written before the clock starts."""
    base = datetime.now(UTC).timestamp()
    for n, device_id in enumerate(sorted(credentials)):
        lines = "".join(
            json.dumps(
                {
                    "ts": datetime.fromtimestamp(base + seq * 0.001, UTC).isoformat(),
                    "seq": seq,
                    "values": {"pm25": 35.0 + (seq + n) % 7, "pm10": 60.0, "no2": 40.0, "o3": 80.0},
                }
            )
            + "\n"
            for seq in range(1, per_device + 1)
        )
        (folder / f"{device_id}.jsonl").write_text(lines)


def load_generators(
    settings: Settings, credentials: dict[str, str], window: int, folder: Path
) -> list[subprocess.Popen[bytes]]:
    """One Mosquitto C client per device, each publishing its file's lines at QoS 1."""
    procs = []
    for device_id, secret in sorted(credentials.items()):
        path = folder / f"{device_id}.jsonl"
        procs.append(
            subprocess.Popen(
                [
                    "mosquitto_pub",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(settings.mqtt_port),
                    "-q",
                    "1",
                    "-M",
                    str(window),
                    "-u",
                    device_id,
                    "-P",
                    secret,
                    "-t",
                    f"{settings.mqtt_topic_root}/{device_id}/readings",
                    "-l",
                ],
                stdin=path.open("rb"),
                stdout=subprocess.DEVNULL,
            )
        )
    return procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument(
        "--window", type=int, default=1000, help="in-flight QoS 1 messages per client"
    )
    args = parser.parse_args()

    settings, stack = private_stack()
    state = settings.state_dir
    ports = stack.metrics
    try:
        settings = stack.start_infrastructure()
        stack.start_services()
        stack.wait_ready()
        now = datetime.now(UTC)
        devices = [
            Device(
                device_id=f"bench-{i:05d}",
                device_type="air_quality",
                place_path=("bench", f"bench-d{i % 4}"),
                updated_at=now,
            )
            for i in range(args.devices + 1)
        ]
        with open_registry(settings) as registry:
            credentials = dict(registry.add_many(devices, "benchmark"))
        time.sleep(1)  # the broker reloads its password file
        marker_id, marker_secret = devices[-1].device_id, credentials.pop(devices[-1].device_id)
        marker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-marker")
        marker.username_pw_set(marker_id, marker_secret)
        marker.connect(settings.mqtt_host, settings.mqtt_port)
        marker.loop_start()
        sent: dict[datetime, float] = {}
        latencies: list[float] = []
        stop = threading.Event()

        def markers() -> None:
            seq = 0
            while not stop.wait(0.2):
                seq += 1
                ts = datetime.now(UTC)
                sent[ts] = time.monotonic()
                body = {"ts": ts.isoformat(), "seq": seq, "values": {"pm25": 1.0}}
                marker.publish(
                    f"{settings.mqtt_topic_root}/{marker_id}/readings", json.dumps(body), qos=1
                )

        def watch() -> None:
            with db.connect(settings) as conn:
                while not stop.is_set() or sent:
                    for (ts,) in conn.execute(
                        "SELECT ts FROM readings WHERE device_id = %s AND metric = 'pm25' AND ts = ANY(%s)",
                        (marker_id, list(sent)),
                    ).fetchall():
                        assert isinstance(ts, datetime)
                        latencies.append(time.monotonic() - sent.pop(ts))
                    if stop.is_set() and time.monotonic() > stop_at + 30:
                        break
                    time.sleep(0.02)

        per_device = args.readings // args.devices
        expected = per_device * args.devices
        folder = Path(mkdtemp(prefix="cityvitals-load-"))
        write_load(credentials, per_device, folder)
        cpu_before = {p.name: cpu_seconds(p.popen.pid) for p in stack.processes if p.popen}
        start = time.monotonic()
        stop_at = float("inf")
        threads = [
            threading.Thread(target=markers, daemon=True),
            threading.Thread(target=watch, daemon=True),
        ]
        for t in threads:
            t.start()
        generators = load_generators(settings, credentials, args.window, folder)
        for proc in generators:
            proc.wait()
        published = time.monotonic() - start
        deadline = time.monotonic() + 600
        while stored(settings, marker_id) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        cpu = {
            p.name: cpu_seconds(p.popen.pid) - cpu_before[p.name]
            for p in stack.processes
            if p.popen
        }
        stop_at = time.monotonic()
        stop.set()
        for t in threads:
            t.join(35)
        got = stored(settings, marker_id)
        marker.loop_stop()
        marker.disconnect()
        args.readings = expected

        print(
            f"readings: {args.readings} from {args.devices} devices (4 metrics each, {4 * args.readings} rows)"
        )
        print(
            f"published by {args.devices} mosquitto_pub clients in {published:.1f} s "
            f"({args.readings / published:,.0f} readings/s offered)"
        )
        print(
            f"stored {got} in {elapsed:.1f} s: {got / elapsed:,.0f} readings/s end to end "
            f"({4 * got / elapsed:,.0f} rows/s)"
        )
        if latencies:
            q = statistics.quantiles(latencies, n=100)
            print(
                f"latency publish → stored under load ({len(latencies)} markers): "
                f"p50 {q[49] * 1000:.0f} ms, p95 {q[94] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms"
            )
        print(
            "stage counts: "
            f"ingest received {metric(ports.ingest, 'cityvitals_ingest_received_total'):.0f}, "
            f"forwarded {metric(ports.ingest, 'cityvitals_ingest_forwarded_total'):.0f}, "
            f"rejected {metric(ports.ingest, 'cityvitals_ingest_rejected_total'):.0f}; "
            f"streams received {metric(ports.streams, 'cityvitals_streams_received_total'):.0f}, "
            f"forwarded {metric(ports.streams, 'cityvitals_streams_forwarded_total'):.0f}; "
            f"sinks rows {metric(ports.sinks, 'cityvitals_sinks_rows_total'):.0f}"
        )
        messages = metric(ports.ingest, "cityvitals_ingest_batch_size_count")
        phases = {
            phase: metric(ports.streams, f'cityvitals_streams_group_seconds_sum{{phase="{phase}"}}')
            for phase in ("decode", "judge", "hand", "confirm")
        }
        print(
            f"readings per readings.raw message {got / max(messages, 1):.1f}; stream stage "
            "seconds per 1000 readings: "
            + ", ".join(f"{k} {1000 * v / got:.4f}" for k, v in phases.items())
        )
        print(
            "CPU seconds per 1000 readings: "
            + ", ".join(f"{name} {1000 * sec / got:.3f}" for name, sec in cpu.items())
        )
        print(
            "resident memory (MB): "
            + ", ".join(
                f"{p.name} {rss_mb(p.popen.pid):.0f}"
                for p in stack.processes
                if p.popen is not None
            )
        )
    finally:
        stack.stop()
        down(state, purge=True)


if __name__ == "__main__":
    main()
