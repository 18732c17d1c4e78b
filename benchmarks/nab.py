"""NAB benchmark of an anomaly detector of :data:`rules.detectors.DETECTORS` (default ``novelty``).

Every file of the NAB sample is scored reading by reading, as the stream processor would, each
file a fresh series. For each of NAB's three cost profiles (standard, low FP, low FN) one
threshold for the whole corpus is chosen to maximise the total NAB score (as NAB's optimiser
does), and the scores are reported per category and in total, normalised so the null detector
scores 0 and the perfect one 100 (:mod:`rules.nab`).

**Held-out split.** Within each category the files are ordered by the SHA-256 of their name and
every other one (the 1st, 3rd, ...) is a *tuning* file; the rest are *held out*. The detector's
parameters were chosen on the tuning files only; the held-out files are scored at the threshold
chosen on the tuning files, so their figure is what a new series could expect. Both are printed,
with the list of tuning files (``--list-split``).

It also reports the scoring speed on one core (the CPU time inside the detector only) and the size
of one series' state as stored (``len(json.dumps(detector.to_json()))``) at the end of the
longest series.

**Published detectors on the same files.** NAB publishes every detector's raw score per file
(:data:`PUBLISHED_FILES`, copied for the sample's 35 files). Summed over the same files, and over
each half, and normalised the same way, they put the detector's figures beside ARTime's, Numenta
HTM's and CAD OSE's on exactly this data. Their thresholds were optimised on all 58 files (the
held-out half included), so the comparison favours them slightly.

**Never-seen files.** ``--unseen PATH`` scores the labelled files of another NAB folder (a
checkout of NAB's repository will do: its labels are read from ``labels/`` there) that the
sample does not hold, each at the threshold chosen on all the sample's files, and puts the
published detectors' scores on the same files beside them (:data:`PUBLISHED_FILES` holds
them for all 58 of NAB's files). No parameter or threshold ever saw those files, so their
figure is the cleanest test of what a new series can expect.

``--windows`` prints, per file, each window's first detection at the standard threshold (or its
best score when missed) and the false positives, so a change can be judged window by window.

Run: ``.venv/bin/python -m benchmarks.nab [--data /work/shared/data/nab] [--detector NAME]
[--unseen PATH]``.
The sample is a subset of NAB (35 of 58 files), so its totals are not directly comparable with
the published full-corpus scores; ``--data`` given a checkout of NAB's repository scores all 58
as they were. Speed depends on the machine; compare runs on one machine.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from rules import nab
from rules.detectors import DETECTORS, NoveltyDetector, NoveltyParams, SeasonalDetector
from rules.detectors.base import Detector
from wiring.cli_anomaly import parse_params

_REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [p / "shared" / "data" / "nab" for p in (_REPO.parent, _REPO.parent.parent)]
DEFAULT_DATA = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
PUBLISHED = (
    "ARTime 74.9, Numenta HTM 70.1, CAD OSE 69.9, KNN CAD 58.0, relative entropy 54.6, "
    "Twitter ADVec 47.1, windowed Gaussian 39.7"
)
PUBLISHED_FILES = Path(__file__).with_name("nab_published.json")
"""Published detectors' raw standard scores per NAB file, with their source."""
PROFILES = {
    "standard": nab.STANDARD,
    "low FP": nab.CostProfile(fp=0.22),
    "low FN": nab.CostProfile(fn=2.0),
}


@dataclass(frozen=True, slots=True)
class Series:
    name: str  # <category>/<file>.csv
    timestamps: list[datetime]  # naive, as in the files and the windows
    values: list[float]
    windows: list[tuple[datetime, datetime]]


def labels_file(root: Path) -> Path:
    """The labelled windows: ``combined_windows.json`` in the folder, or under ``labels/`` as
    in a checkout of NAB's repository."""
    here = root / "combined_windows.json"
    return here if here.is_file() else root / "labels" / "combined_windows.json"


def load(root: Path, names: set[str] | None = None) -> list[Series]:
    """The labelled series in ``root`` (those of ``names`` only, when given)."""
    labels = json.loads(labels_file(root).read_text())
    if names is not None:
        labels = {n: w for n, w in labels.items() if n in names}
    out = []
    for name in sorted(labels):
        with (root / "data" / name).open(newline="") as fh:
            reader = csv.reader(fh)
            next(reader)
            rows = [(datetime.fromisoformat(ts), float(v)) for ts, v in reader]
        windows = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in labels[name]]
        out.append(Series(name, [r[0] for r in rows], [r[1] for r in rows], windows))
    return out


def tuning_files(names: list[str]) -> set[str]:
    """Every other file of each category, in the order of the SHA-256 of its name."""
    by_category: dict[str, list[str]] = {}
    for name in names:
        by_category.setdefault(name.split("/")[0], []).append(name)
    out: set[str] = set()
    for members in by_category.values():
        members.sort(key=lambda n: hashlib.sha256(n.encode()).hexdigest())
        out.update(members[0::2])
    return out


def make_detector(name: str, pairs: list[str]) -> Detector:
    """A new detector by name; ``--param`` pairs set the seasonal parameters underneath."""
    params = parse_params(pairs)
    if name == "seasonal":
        return SeasonalDetector(params)
    if name == "novelty":
        return NoveltyDetector(NoveltyParams(seasonal=params))
    if pairs:
        raise ValueError(f"--param: detector {name!r} takes no parameters here")
    return DETECTORS[name]()


def detect(detector: Detector, series: Series) -> tuple[list[float], float]:
    """Scores of every row and the seconds spent scoring (score, then learn, each reading)."""
    points = [
        (ts.replace(tzinfo=UTC), v) for ts, v in zip(series.timestamps, series.values, strict=True)
    ]
    step = getattr(detector, "step", None)
    started = time.process_time()
    if step is not None:
        scores = [step(x) for x in points]
    else:
        scores = []
        for x in points:
            scores.append(detector.score_one(x))
            detector.learn_one(x)
    return scores, time.process_time() - started


def missing(root: Path) -> str | None:
    """Why ``root`` is not a NAB sample folder, or ``None`` when it is one."""
    labels = labels_file(root)
    if not root.is_dir():
        return f"no NAB data at {root} (the folder does not exist)"
    if not labels.is_file():
        return f"no NAB data at {root}: {labels.name} is missing (nor under labels/)"
    if not (root / "data").is_dir():
        return f"no NAB data at {root}: the data/ folder is missing"
    return None


@dataclass(frozen=True, slots=True)
class Scored:
    """One file's scores swept under every profile, and its window count."""

    rows: dict[str, list[nab.Row]]
    windows: int


def window_report(series: Series, scores: list[float], threshold: float) -> str:
    """One line: each window's first detection row (or ``missed, best`` score) and the false
    positives (rows past probation outside every window scoring at least ``threshold``)."""
    spans = nab.window_rows(series.timestamps, series.windows)
    start = nab.probation_length(len(scores))
    hits = [i for i in range(start, len(scores)) if scores[i] >= threshold]
    cells = []
    for lo, hi in spans:
        first = next((i for i in hits if lo <= i <= hi), None)
        if hi < start:
            cells.append(f"[{lo}-{hi}] in probation")
        elif first is None:
            cells.append(f"[{lo}-{hi}] missed, best {max(scores[max(lo, start) : hi + 1]):.3f}")
        else:
            cells.append(f"[{lo}-{hi}] at {first}")
    fps = [i for i in hits if not any(lo <= i <= hi for lo, hi in spans)]
    shown = ", ".join(map(str, fps[:10])) + (", ..." if len(fps) > 10 else "")
    return f"{series.name}: " + "; ".join(
        [*cells, f"{len(fps)} FP" + (f" ({shown})" if fps else "")]
    )


def _total(files: list[Scored], profile: str, threshold: float | None) -> tuple[float, float]:
    """The normalised total of some files and the threshold (the best one when None)."""
    cost = PROFILES[profile]
    rows = [r for f in files for r in f.rows[profile]]
    if threshold is None:
        threshold = nab.best_threshold(rows, cost).threshold
    raw = nab.score_at(rows, threshold, cost)
    return nab.normalised(raw, sum(f.windows for f in files), cost), threshold


def _categories(scored: dict[str, Scored], thresholds: dict[str, float]) -> None:
    """Print each category's scores at ``thresholds`` (false positives where it has no window)."""
    names = list(PROFILES)
    for category in sorted({n.split("/")[0] for n in scored}):
        files = [f for n, f in scored.items() if n.split("/")[0] == category]
        label = f"{category} ({len(files)})"
        if not sum(f.windows for f in files):
            cells = []
            for p in names:
                fp = sum(
                    1
                    for f in files
                    for r in f.rows[p]
                    if r.window is None and r.score >= thresholds[p]
                )
                cells.append(f"{fp:>15} FP")
            print(f"{label:28}" + "".join(cells))
            continue
        print(f"{label:28}" + "".join(f"{_total(files, p, thresholds[p])[0]:18.1f}" for p in names))


def report(scored: dict[str, Scored], tuning: set[str]) -> dict[str, Any]:
    """Print the per-category table and the split; return the totals and the thresholds."""
    everything = list(scored.values())
    tune = [scored[n] for n in sorted(tuning)]
    held = [scored[n] for n in sorted(set(scored) - tuning)]
    names = list(PROFILES)
    print(f"{'':28}" + "".join(f"{p:>18}" for p in names))
    best = {p: _total(everything, p, None) for p in names}
    print(f"{'threshold (all files)':28}" + "".join(f"{best[p][1]:18.4f}" for p in names))
    _categories(scored, {p: best[p][1] for p in names})
    print(
        f"{'ALL (' + str(len(everything)) + ')':28}" + "".join(f"{best[p][0]:18.1f}" for p in names)
    )
    t = {p: _total(tune, p, None) for p in names}
    h = {p: _total(held, p, t[p][1])[0] for p in names}
    print(
        f"{'tuning half (' + str(len(tune)) + ')':28}" + "".join(f"{t[p][0]:18.1f}" for p in names)
    )
    print(
        f"{'held out (' + str(len(held)) + '), tuning thr':28}"
        + "".join(f"{h[p]:18.1f}" for p in names)
    )
    return {
        "all": {p: best[p][0] for p in names},
        "tune": {p: t[p][0] for p in names},
        "held": h,
        "thresholds": {p: best[p][1] for p in names},
    }


def published(scored: dict[str, Scored], groups: list[list[str]]) -> dict[str, tuple[float, ...]]:
    """Each published detector's standard score on each group of these files (``{}`` when a
    file is not in the published table, as for data not NAB's)."""
    table: dict[str, dict[str, float]] = json.loads(PUBLISHED_FILES.read_text())["standard"]
    out: dict[str, tuple[float, ...]] = {}
    for detector, per_file in table.items():
        if not scored.keys() <= per_file.keys():
            return {}
        out[detector] = tuple(
            nab.normalised(sum(per_file[n] for n in names), sum(scored[n].windows for n in names))
            for names in groups
        )
    return out


@dataclass(slots=True)
class Run:
    """A corpus scored by one detector: per file, its sweeps and its scores; the scoring time."""

    scored: dict[str, Scored]
    scores: dict[str, list[float]]
    seconds: float = 0.0
    readings: int = 0
    longest: tuple[int, str, Any] = (0, "", None)
    """The longest series: its length, name and the detector's state at its end."""


def run(corpus: list[Series], name: str, pairs: list[str]) -> Run:
    """Score every series with a new detector of its own."""
    out = Run({}, {})
    for series in corpus:
        detector = make_detector(name, pairs)
        scores, elapsed = detect(detector, series)
        out.seconds += elapsed
        out.readings += len(scores)
        out.scores[series.name] = scores
        rows = {
            p: nab.sweep(series.name, series.timestamps, scores, series.windows, cost)
            for p, cost in PROFILES.items()
        }
        windows = len(nab.window_rows(series.timestamps, series.windows))
        out.scored[series.name] = Scored(rows, windows)
        if len(scores) > out.longest[0]:
            out.longest = (len(scores), series.name, detector.to_json())
    return out


KINDS = ("novel", "run", "new to its hour", "familiar", "noise", "deviation")


def kinds_report(corpus: list[Series], pairs: list[str], threshold: float) -> list[str]:
    """Per category, what set the novelty detector's score (:attr:`Explanation.kind`) of each
    false positive and of each window's first detection at ``threshold``: ``kind FP/found``."""
    counts: dict[str, dict[str, list[int]]] = {}
    for series in corpus:
        detector = make_detector("novelty", pairs)
        assert isinstance(detector, NoveltyDetector)
        spans = nab.window_rows(series.timestamps, series.windows)
        start = nab.probation_length(len(series.values))
        found: set[int] = set()
        tally = counts.setdefault(series.name.split("/")[0], {k: [0, 0] for k in KINDS})
        for i, (ts, v) in enumerate(zip(series.timestamps, series.values, strict=True)):
            x = (ts.replace(tzinfo=UTC), v)
            if i < start or detector.score_one(x) < threshold:
                detector.learn_one(x)
                continue
            kind = detector.explain_one(x).kind
            detector.learn_one(x)
            inside = [k for k, (lo, hi) in enumerate(spans) if lo <= i <= hi]
            if not inside:
                tally[kind][0] += 1
            elif inside[0] not in found:
                found.add(inside[0])
                tally[kind][1] += 1
    lines = [f"what set the score at {threshold:.4f} (false positives/windows first found by it):"]
    for category, tally in sorted(counts.items()):
        cells = ", ".join(f"{k} {fp}/{hit}" for k, (fp, hit) in tally.items() if fp or hit)
        lines.append(f"  {category:24}{cells or 'nothing'}")
    return lines


def never_seen(
    unseen: list[Series], runs: Run, thresholds: dict[str, float], windows: bool
) -> None:
    """Print the scores of files the sample does not hold at the sample's thresholds, beside
    the published detectors' on the same files."""
    names = list(PROFILES)
    total = sum(f.windows for f in runs.scored.values())
    print(
        f"never seen: {len(unseen)} files, {total} windows, {runs.readings} readings, "
        "at the thresholds chosen on all the sample's files"
    )
    print(f"{'':28}" + "".join(f"{p:>18}" for p in names))
    label = "threshold (the sample's)"
    print(f"{label:28}" + "".join(f"{thresholds[p]:18.4f}" for p in names))
    _categories(runs.scored, thresholds)
    every = list(runs.scored.values())
    cells = "".join(f"{_total(every, p, thresholds[p])[0]:18.1f}" for p in names)
    print(f"{'NEVER SEEN (' + str(len(every)) + ')':28}" + cells)
    if windows:
        for series in unseen:
            print(window_report(series, runs.scores[series.name], thresholds["standard"]))
    others = published(runs.scored, [list(runs.scored)])
    if others:
        print("published detectors on the never-seen files (standard; NAB's per-file results):")
        for name, (score,) in others.items():
            print(f"  {name:14} {score:5.1f}")
    else:
        print(
            "published detectors on the never-seen files: not all of them have published "
            "scores, not compared"
        )


def unseen_names(data: Path, unseen: Path) -> set[str]:
    """The files labelled in ``unseen`` that ``data`` does not label; exits 2 when there are
    none, or when one of them has no series file."""
    sample = set(json.loads(labels_file(data).read_text()))
    names = set(json.loads(labels_file(unseen).read_text())) - sample
    if not names:
        _no_data("--unseen", f"every file labelled at {unseen} is in the sample")
    absent = sorted(n for n in names if not (unseen / "data" / n).is_file())
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        _no_data("--unseen", f"no series file under {unseen / 'data'} for {shown}")
    return names


def _no_data(flag: str, problem: str) -> NoReturn:
    print(
        f"error: {problem}. Give {flag} a folder holding NAB's combined_windows.json (or "
        "labels/combined_windows.json) and its data/<category>/<file>.csv series: a checkout "
        "of NAB's repository (git clone https://github.com/numenta/NAB) is one.",
        file=sys.stderr,
    )
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB sample folder")
    parser.add_argument("--detector", default="novelty", choices=sorted(DETECTORS))
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--list-split", action="store_true", help="print the tuning files")
    parser.add_argument(
        "--windows", action="store_true", help="print each file's detections and false positives"
    )
    parser.add_argument(
        "--kinds",
        action="store_true",
        help="per category, what set the score of each false positive and window found "
        "(novelty only; scores again, with explanations)",
    )
    parser.add_argument(
        "--unseen",
        type=Path,
        help="a NAB folder (a checkout of NAB's repository will do) whose files the sample does "
        "not hold: scored at the sample's thresholds",
    )
    args = parser.parse_args(argv)
    if args.kinds and args.detector != "novelty":
        parser.error("--kinds explains the novelty detector's scores alone")
    problem = missing(args.data)
    if problem is not None:
        _no_data("--data", problem)
    names: set[str] = set()
    if args.unseen is not None:
        if (problem := missing(args.unseen)) is not None:
            _no_data("--unseen", problem)
        names = unseen_names(args.data, args.unseen)  # before the long run
    make_detector(args.detector, args.param)  # a bad --param fails before the long run

    corpus = load(args.data)
    runs = run(corpus, args.detector, args.param)
    scored = runs.scored
    windows = sum(s.windows for s in scored.values())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"detector {args.detector} on the NAB sample at {args.data} ({when})")
    print(f"{len(corpus)} files (of NAB's 58), {windows} windows, {runs.readings} readings")
    tuning = tuning_files(list(scored))
    totals = report(scored, tuning)
    if args.windows:
        for series in corpus:
            print(window_report(series, runs.scores[series.name], totals["thresholds"]["standard"]))
    if args.kinds:
        print("\n".join(kinds_report(corpus, args.param, totals["thresholds"]["standard"])))
    if args.list_split:
        print("tuning files: " + ", ".join(sorted(tuning)))
    print(f"published full-corpus standard scores: {PUBLISHED}")
    halves = [
        list(scored),
        [n for n in scored if n in tuning],
        [n for n in scored if n not in tuning],
    ]
    others = published(scored, halves)
    if others:
        print("published detectors on these files (standard; NAB's per-file results):")
        for name, (every, tune, held) in others.items():
            print(f"  {name:14} all {every:5.1f}   tuning half {tune:5.1f}   held out {held:5.1f}")
    else:
        print("published detectors on these files: not all of them are NAB files, not compared")
    if args.unseen is not None:
        unseen = load(args.unseen, names)
        never_seen(
            unseen, run(unseen, args.detector, args.param), totals["thresholds"], args.windows
        )
    print(f"speed: {runs.readings / runs.seconds:,.0f} scores/s on one core ({runs.seconds:.2f} s)")
    length, name, state = runs.longest
    print(
        f"state: {len(json.dumps(state))} bytes of JSON per series after {length} readings ({name})"
    )


if __name__ == "__main__":
    main()
