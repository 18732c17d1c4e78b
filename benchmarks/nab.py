"""NAB benchmark of the online anomaly detector (:mod:`rules.anomaly`), standard profile.

Every file of the NAB sample is scored reading by reading, as the stream processor would, each
file a fresh series. One threshold for the whole corpus is chosen to maximise the total NAB
score (as NAB's optimiser does) and the scores are reported per category and in total,
normalised so the null detector scores 0 and the perfect one 100 (:mod:`rules.nab`). It also
reports the scoring speed on one core (the time inside :func:`rules.anomaly.score` only) and the
size of one series' state as stored (``len(json.dumps(state.to_json()))``) at the end of the
longest series.

Run: ``.venv/bin/python -m benchmarks.nab [--data /work/shared/data/nab] [--param NAME=VALUE]``.
The sample is a subset of NAB (35 of 58 files), so its totals are not directly comparable with
the published full-corpus scores. Speed depends on the machine; compare runs on one machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rules import nab
from rules.anomaly import AnomalyParams, AnomalyState, score
from wiring.cli_anomaly import parse_params

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab"
PUBLISHED = "Numenta HTM 70.1, KNN CAD 58.0, relative entropy 54.6, Twitter ADVec 47.1, windowed Gaussian 39.7"


@dataclass(frozen=True, slots=True)
class Series:
    name: str  # <category>/<file>.csv
    timestamps: list[datetime]  # naive, as in the files and the windows
    values: list[float]
    windows: list[tuple[datetime, datetime]]


def load(root: Path) -> list[Series]:
    labels = json.loads((root / "combined_windows.json").read_text())
    out = []
    for name in sorted(labels):
        with (root / "data" / name).open(newline="") as fh:
            reader = csv.reader(fh)
            next(reader)
            rows = [(datetime.fromisoformat(ts), float(v)) for ts, v in reader]
        windows = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in labels[name]]
        out.append(Series(name, [r[0] for r in rows], [r[1] for r in rows], windows))
    return out


def detect(params: AnomalyParams, series: Series) -> tuple[list[float], AnomalyState, float]:
    """Scores of every row, the final state and the seconds spent scoring."""
    stamps = [ts.replace(tzinfo=UTC) for ts in series.timestamps]  # NAB's local time as UTC
    scores = []
    state: AnomalyState | None = None
    started = time.perf_counter()
    for ts, value in zip(stamps, series.values, strict=True):
        state, s = score(params, state, ts, value)
        scores.append(s)
    elapsed = time.perf_counter() - started
    assert state is not None
    return scores, state, elapsed


def missing(root: Path) -> str | None:
    """Why ``root`` is not a NAB sample folder, or ``None`` when it is one."""
    labels = root / "combined_windows.json"
    if not root.is_dir():
        return f"no NAB data at {root} (the folder does not exist)"
    if not labels.is_file():
        return f"no NAB data at {root}: {labels.name} is missing"
    if not (root / "data").is_dir():
        return f"no NAB data at {root}: the data/ folder is missing"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB sample folder")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    params = parse_params(args.param)
    problem = missing(args.data)
    if problem is not None:
        print(
            f"error: {problem}. Give --data a folder holding NAB's combined_windows.json and "
            "its data/<category>/<file>.csv series.",
            file=sys.stderr,
        )
        raise SystemExit(2)

    corpus = load(args.data)
    rows: dict[str, list[nab.Row]] = {}
    windows: dict[str, int] = {}
    seconds = 0.0
    readings = 0
    longest: tuple[int, str, AnomalyState] | None = None
    for series in corpus:
        scores, state, elapsed = detect(params, series)
        seconds += elapsed
        readings += len(scores)
        rows[series.name] = nab.sweep(series.name, series.timestamps, scores, series.windows)
        windows[series.name] = len(nab.window_rows(series.timestamps, series.windows))
        if longest is None or len(scores) > longest[0]:
            longest = (len(scores), series.name, state)

    best = nab.best_threshold(r for file_rows in rows.values() for r in file_rows)
    print(f"NAB sample: {len(corpus)} files, {sum(windows.values())} windows, {readings} readings")
    print(f"threshold {best.threshold:.4f} (one for all files, maximising the total)")
    print(f"{'category':24} {'files':>5} {'windows':>7} {'raw':>8} {'normalised':>10} {'FP':>4}")
    for category in sorted({name.split("/")[0] for name in rows}):
        names = [n for n in rows if n.split("/")[0] == category]
        cat_rows = [r for n in names for r in rows[n]]
        raw = nab.score_at(cat_rows, best.threshold)
        n_windows = sum(windows[n] for n in names)
        fp = sum(1 for r in cat_rows if r.window is None and r.score >= best.threshold)
        norm = f"{nab.normalised(raw, n_windows):10.1f}" if n_windows else f"{'n/a':>10}"
        print(f"{category:24} {len(names):5} {n_windows:7} {raw:8.2f} {norm} {fp:4}")
    total = nab.normalised(best.score, sum(windows.values()))
    print(f"{'TOTAL':24} {len(corpus):5} {sum(windows.values()):7} {best.score:8.2f} {total:10.1f}")
    print(f"published full-corpus standard scores, for scale only: {PUBLISHED}")
    print(f"speed: {readings / seconds:,.0f} scores/s on one core ({seconds:.2f} s)")
    assert longest is not None
    size = len(json.dumps(longest[2].to_json()))
    print(f"state: {size} bytes of JSON per series after {longest[0]} readings ({longest[1]})")


if __name__ == "__main__":
    main()
