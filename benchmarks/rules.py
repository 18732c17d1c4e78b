"""Rule evaluation speed in backtest mode, per rule kind, and memory per series.

Feeds the simulated city's readings (a day of them at a 5-minute cadence by default) through
:class:`rules.backtest.Backtest` once per rule kind, and once with the shipped default rules,
on one core. Prints evaluations per CPU second and the JSON bytes one series' rule memory
takes, as the stream's tables store it. Prints figures; asserts nothing.

    python -m benchmarks.rules [--grids 24] [--hours 24] [--every 300]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from importlib import resources

from rules import Observation, RuleSet, parse_rules
from rules.backtest import Backtest
from wiring.simulate import build_city, sample

KIND_RULES = {
    "threshold": """
  - {id: depth, metric: water_level_cm, levels: {blue: 5, yellow: 15, orange: 25, red: 40},
     clear: 3, for: 10m, keep_firing_for: 10m}
  - {id: pm25, metric: pm25, levels: {blue: 75, yellow: 115, orange: 150, red: 250}, clear: 60}
  - {id: noise, metric: laeq_db, levels: {blue: 70, orange: 85}, clear: 67}
""",
    "rate": """
  - {id: rising, kind: rate, metric: water_level_cm, over: 15m, per: 1h, levels: {yellow: 20}}
  - {id: pm25-rising, kind: rate, metric: pm25, over: 30m, per: 1h, levels: {yellow: 50}}
  - {id: load-ramp, kind: rate, metric: load_kw, over: 30m, per: 1h, levels: {yellow: 400}}
""",
    "absence": """
  - {id: no-pm25, kind: absence, metric: pm25, after: 30m, device_types: [air_quality]}
  - {id: no-water, kind: absence, metric: water_level_cm, after: 30m, device_types: [water_level]}
  - {id: no-speed, kind: absence, metric: speed_kmh, after: 30m, device_types: [traffic]}
""",
    "composite": """
  - {id: flood, kind: composite, group_by: street, window: 15m,
     conditions: [{metric: water_level_cm, above: 5}, {metric: speed_kmh, below: 15}]}
  - {id: smog-jam, kind: composite, group_by: grid, window: 15m,
     conditions: [{metric: pm25, above: 115}, {metric: occupancy, above: 0.6}]}
  - {id: smoke, kind: composite, group_by: grid, window: 5m, require: any, min_devices: 2,
     conditions: [{metric: camera.smoke_fire, above: 0.5}, {metric: gas_lel_pct, above: 10}]}
""",
    "anomaly": """
  - {id: load-unusual, kind: anomaly, metric: load_kw}
  - {id: noise-unusual, kind: anomaly, metric: laeq_db}
  - {id: pm25-unusual, kind: anomaly, metric: pm25}
""",
}


def readings(grids: int, hours: float, every: float, seed: int = 7) -> list[list[Observation]]:
    """The simulated city's readings in event-time order, one list per reading."""
    districts = max(1, grids // 4)
    city = build_city(districts=districts, streets=2, grids=max(1, grids // (2 * districts)))
    rng = random.Random(seed)
    start = datetime(2026, 7, 1, tzinfo=UTC)
    out: list[list[Observation]] = []
    for step in range(int(hours * 3600 / every)):
        ts = start + timedelta(seconds=step * every)
        hour = ts.hour + ts.minute / 60
        for d in city.devices:
            values = sample(d.device_type, rng, hour, 0.0)
            if isinstance(values, dict):
                items = [(m, v, 1.0) for m, v in values.items()]
            else:
                event, value, confidence = values
                items = [(f"camera.{event}", value, confidence)]
            out.append(
                [
                    Observation(d.device_id, d.device_type, d.place_path, m, v, ts, c)
                    for m, v, c in items
                ]
            )
    return out


def run(rules: RuleSet, data: list[list[Observation]]) -> tuple[Backtest, float]:
    bt = Backtest(rules)
    started = time.process_time()
    for reading in data:
        bt.feed(reading)
    return bt, time.process_time() - started


def state_bytes(bt: Backtest) -> tuple[float, int, float]:
    """Mean and largest JSON bytes of one rule's memory of one series, and per device."""
    per_rule = [
        len(json.dumps(s.to_json())) for m in bt.devices.values() for s in m.rules.values()
    ] + [len(json.dumps(s.to_json())) for m in bt.places.values() for s in m.rules.values()]
    per_device = [len(json.dumps(m.to_json())) for m in bt.devices.values()]
    if not per_rule:
        return 0.0, 0, statistics.fmean(per_device) if per_device else 0.0
    return statistics.fmean(per_rule), max(per_rule), statistics.fmean(per_device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=int, default=24)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--every", type=float, default=300, help="seconds between readings")
    args = parser.parse_args()
    data = readings(args.grids, args.hours, args.every)
    observations = sum(len(r) for r in data)
    devices = len({r[0].device_id for r in data})
    print(f"{len(data):,} readings ({observations:,} values) of {devices} devices, one core")
    print(
        f"{'rules':<10} {'evals':>10} {'evals/s':>10} {'readings/s':>11} {'alerts':>7} "
        f"{'B/series':>9} {'max B':>7} {'B/device':>9}"
    )
    default = resources.files("rules").joinpath("default.yaml").read_text()
    sets = {k: parse_rules(f"rules:{text}", k) for k, text in KIND_RULES.items()}
    sets["default"] = parse_rules(default, "default.yaml")
    for name, rules in sets.items():
        bt, cpu = run(rules, data)
        mean, largest, device = state_bytes(bt)
        c = bt.counts
        print(
            f"{name:<10} {c.evaluations:>10,} {c.evaluations / cpu:>10,.0f} "
            f"{c.readings / cpu:>11,.0f} {c.transitions:>7} {mean:>9.0f} {largest:>7} "
            f"{device:>9.0f}"
        )


if __name__ == "__main__":
    main()
