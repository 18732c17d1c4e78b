"""Speed of the incident desk (:mod:`rules.incidents`), on one core, without Kafka.

A storm over a city: ``--streets`` streets each get alerts from ``--sensors`` water-level
sensors that fire and resolve ``--flaps`` times, and every street's incident is accepted,
handled and left to verify, with a clock tick every ``--tick`` inputs. It prints the inputs
per second of :meth:`Desk.handle`, the incidents and dispatch orders made, and the size of the
book's table entries at the end (what the stream writes to its changelog).

Run: ``.venv/bin/python -m benchmarks.incidents [--streets 200] [--sensors 5] [--flaps 4]``.
The stream adds Kafka and Faust's cost per message (two hops), which ``benchmarks.pipeline``
measures end to end.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from cityvitals.contracts import IncidentInput
from rules.incidents import load_incident_config
from rules.incidents.desk import Desk
from rules.incidents.testing import alert, feedback, tick


def storm(streets: int, sensors: int, flaps: int, every: int) -> list[IncidentInput]:
    inputs: list[IncidentInput] = []
    minute = 0.0
    for episode in range(flaps):
        for s in range(streets):
            place = ("sh", f"d{s % 16}", f"s{s}")
            for n in range(sensors):
                grid = (*place, f"s{s}g{n % 3}")
                device = f"wl-{s}-{n}"
                inputs.append(alert("waterlogging-depth", device, grid, minute, episode=episode))
                inputs.append(
                    alert(
                        "waterlogging-depth",
                        device,
                        grid,
                        minute + 1,
                        status="resolved",
                        revision=1,
                        episode=episode,
                    )
                )
            if len(inputs) % every < sensors * 2:
                inputs.append(tick(minute))
        minute += 5
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streets", type=int, default=200)
    parser.add_argument("--sensors", type=int, default=5)
    parser.add_argument("--flaps", type=int, default=4)
    parser.add_argument("--tick", type=int, default=100, help="a clock tick every N inputs")
    args = parser.parse_args()
    desk = Desk(load_incident_config())
    inputs = storm(args.streets, args.sensors, args.flaps, args.tick)
    started = time.perf_counter()
    sent: Counter[str] = Counter()
    updates = 0
    for item in inputs:
        out = desk.handle(item)
        sent.update(d.kind.value for d in out.dispatches)
        updates += len(out.updates)
    ids = list(desk.book.incidents)
    follow_up = [feedback(i, a, 60 + n) for n, i in enumerate(ids) for a in ("accept", "handled")]
    for item in [*follow_up, tick(600)]:
        out = desk.handle(item)
        sent.update(d.kind.value for d in out.dispatches)
        updates += len(out.updates)
    elapsed = time.perf_counter() - started
    total = len(inputs) + len(follow_up) + 1
    entries = desk.book.entries(every=True)
    size = sum(len(json.dumps(v)) for v in entries.values() if v)
    closed = sum(1 for t in desk.book.incidents.values() if t.incident.state.value == "closed")
    print(f"inputs            {total:>10,}")
    print(f"inputs/s          {total / elapsed:>10,.0f}  (Desk.handle, one core)")
    print(f"incidents         {len(ids):>10,}  ({closed:,} closed after feedback and quiet)")
    orders = sum(n for kind, n in sent.items() if kind not in ("withdrawal", "revision"))
    print(f"dispatch orders   {orders:>10,}  (storm budgets of the shipped file)")
    others = ", ".join(f"{kind} {n:,}" for kind, n in sorted(sent.items()))
    print(f"dispatches        {sum(sent.values()):>10,}  ({others or 'none'})")
    print(f"steps recorded    {updates:>10,}")
    print(f"book entries      {size / 1024:>10,.0f} KiB  (JSON, {len(entries):,} entries)")


if __name__ == "__main__":
    main()
