"""Bulk onboarding benchmark: a generated CSV of devices imported on the real local stack.

The same CSV shape goes in twice, under different ids: once through ``Registry.import_csv`` in
this process, once as ``POST /devices/import`` to the API service. Each import hashes a secret
per device, writes the devices, their credentials and audit rows in chunks of 1,000, publishes
every device to Kafka and reloads the broker's password file. It reports devices per second and
seconds per 1,000 devices for each, and checks every device went in.

Run: ``.venv/bin/python -m benchmarks.registry_import --devices 10000``.
Figures depend on the machine (every process shares its cores); compare runs on one machine.
"""

from __future__ import annotations

import argparse
import time

import httpx

from benchmarks.stack import private_stack
from cityvitals.settings import Settings
from device_registry.access import Role
from wiring.localstack import down
from wiring.services import open_registry


def device_csv(prefix: str, count: int) -> str:
    """``count`` devices spread over a city of 6 districts, 24 streets and 96 grids."""
    lines = ["device_id,device_type,place_path,department,tags,lat,lon"]
    for i in range(count):
        district = f"{prefix}-d{i % 6}"
        street = f"{district}-s{(i // 6) % 4}"
        grid = f"{street}-g{(i // 24) % 4}"
        kind = ("air_quality", "water_level", "noise", "traffic")[i % 4]
        lat, lon = 31.0 + (i % 1000) / 10_000, 121.0 + (i // 1000) / 1000
        lines.append(
            f"{prefix}-{i:06d},{kind},{prefix}/{district}/{street}/{grid},"
            f"environment,bench;{kind},{lat:.4f},{lon:.4f}"
        )
    return "\n".join(lines) + "\n"


def report(what: str, count: int, seconds: float) -> None:
    print(
        f"{what:<34} {count} devices in {seconds:6.2f} s: {count / seconds:8,.0f} devices/s, "
        f"{1000 * seconds / count:.3f} s per 1,000"
    )


def import_direct(settings: Settings, text: str, count: int) -> float:
    with open_registry(settings) as registry:
        start = time.monotonic()
        result = registry.import_csv(text, "benchmark")
        took = time.monotonic() - start
    if len(result.added) != count or result.errors:
        raise SystemExit(f"direct import: {len(result.added)} added, errors {result.errors[:3]}")
    return took


def import_over_http(settings: Settings, text: str, count: int) -> float:
    with open_registry(settings) as registry:  # the API takes a user's token
        _, token = registry.add_user(f"benchmark-{time.time_ns()}", Role.ADMIN, "benchmark")
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}", timeout=600) as client:
        start = time.monotonic()
        answer = client.post(
            "/devices/import",
            content=text.encode(),
            headers={
                "Content-Type": "text/csv",
                "X-Actor": "benchmark",
                "Authorization": f"Bearer {token}",
            },
        )
        took = time.monotonic() - start
    body = answer.json()
    if answer.status_code != 200 or len(body["added"]) != count or body["errors"]:
        raise SystemExit(f"API import: {answer.status_code} {str(body)[:500]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1, help="imports of each kind")
    args = parser.parse_args()

    settings, stack = private_stack()
    state = settings.state_dir
    try:
        settings = stack.start_infrastructure()
        stack.start_services()
        stack.wait_ready()
        print(f"importing {args.devices} devices from CSV, {args.rounds} round(s) each")
        for n in range(args.rounds):
            direct = device_csv(f"reg{n}", args.devices)
            report(
                "Registry.import_csv", args.devices, import_direct(settings, direct, args.devices)
            )
            api = device_csv(f"api{n}", args.devices)
            report(
                "POST /devices/import (HTTP API)",
                args.devices,
                import_over_http(settings, api, args.devices),
            )
        print(f"CSV size: {len(direct.encode()) / 1e6:.2f} MB per import")
    finally:
        stack.stop()
        down(state, purge=True)


if __name__ == "__main__":
    main()
