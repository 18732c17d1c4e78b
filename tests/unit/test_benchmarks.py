"""The hand-run benchmarks: they say what is missing and leave nothing behind."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks import nab
from benchmarks.bench_parts import Outputs, partition_ends
from benchmarks.sinks import remove_state
from cityvitals.contracts import Reading, ReadingBatch
from rules.nab import normalised
from wiring.stack import StackPaths


def test_nab_without_its_data_says_so_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        nab.main(["--data", str(tmp_path / "nab")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"no NAB data at {tmp_path / 'nab'}" in err and "--data" in err
    assert "git clone https://github.com/numenta/NAB" in err  # where to get it
    (tmp_path / "nab").mkdir()
    with pytest.raises(SystemExit):
        nab.main(["--data", str(tmp_path / "nab")])
    assert "combined_windows.json is missing" in capsys.readouterr().err


def test_the_sink_benchmark_removes_a_data_folder_kept_outside_its_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "var-lib" / "abc123" / "postgres"  # where root's data goes
    monkeypatch.setattr(StackPaths, "postgres_data", property(lambda self: elsewhere))
    paths = StackPaths(tmp_path / "state")
    paths.make()
    elsewhere.mkdir(parents=True)
    (elsewhere / "PG_VERSION").write_text("18\n")
    remove_state(paths)
    assert not elsewhere.parent.exists() and not paths.state_dir.exists()
    assert (tmp_path / "var-lib").exists()  # only this run's folder goes


def _tiny_nab(root: Path) -> None:
    """One 1000-reading file, a daily wave with a spike at row 700 inside its one window."""
    rng = random.Random(1)
    t0 = datetime(2026, 1, 1)
    stamps = [t0 + timedelta(minutes=5 * i) for i in range(1000)]
    values = [
        50 + 10 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 1) + (80 if i == 700 else 0)
        for i in range(1000)
    ]
    rows = [f"{ts:%Y-%m-%d %H:%M:%S},{v:.3f}\n" for ts, v in zip(stamps, values, strict=True)]
    (root / "data" / "synthetic").mkdir(parents=True)
    (root / "data" / "synthetic" / "spike.csv").write_text("timestamp,value\n" + "".join(rows))
    window = [f"{stamps[680]:%Y-%m-%d %H:%M:%S}.000000", f"{stamps[720]:%Y-%m-%d %H:%M:%S}.000000"]
    (root / "combined_windows.json").write_text(json.dumps({"synthetic/spike.csv": [window]}))


@pytest.mark.parametrize("detector", ["novelty", "seasonal"])
def test_nab_scores_a_tiny_synthetic_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], detector: str
) -> None:
    _tiny_nab(tmp_path)
    nab.main(["--data", str(tmp_path), "--detector", detector])
    out = capsys.readouterr().out
    assert "1 files (of NAB's 58), 1 windows, 1000 readings" in out
    assert out.splitlines()[2].split() == ["standard", "low", "FP", "low", "FN"]
    totals = next(line for line in out.splitlines() if line.startswith("ALL (1)")).split()[2:]
    # the spike is caught early in its window and nothing else fires: close to the perfect 100
    assert all(90.0 < float(t) <= 100.0 for t in totals), totals
    assert "scores/s on one core" in out and "bytes of JSON per series" in out
    assert "published detectors on these files: not all of them are NAB files" in out


def test_nab_kinds_says_what_set_each_detections_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The spike at row 700 lies past the top of the forecast's scale: its deviation set the
    score that found the window, and nothing else scored as high; --kinds explains the
    novelty detector alone."""
    _tiny_nab(tmp_path)
    nab.main(["--data", str(tmp_path), "--kinds"])
    out = capsys.readouterr().out
    assert "(false positives/windows first found by it):" in out
    assert "  synthetic               deviation 0/1\n" in out
    with pytest.raises(SystemExit) as refused:
        nab.main(["--data", str(tmp_path), "--kinds", "--detector", "seasonal"])
    assert refused.value.code == 2
    assert "--kinds explains the novelty detector's scores alone" in capsys.readouterr().err


def test_nab_puts_published_detectors_on_the_same_files_and_halves() -> None:
    up, flat = (
        "artificialWithAnomaly/art_daily_jumpsup.csv",
        "artificialWithAnomaly/art_daily_nojump.csv",
    )
    scored = {up: nab.Scored({}, 1), flat: nab.Scored({}, 1)}
    every, tune, held = nab.published(scored, [[up, flat], [up], [flat]])["ARTime"]
    # ARTime's raw scores: 0.8589 (caught), -1.11 (missed, one false positive); null -1 a window
    assert (round(every, 2), round(tune, 2), round(held, 2)) == (43.72, 92.95, -5.5)
    assert nab.published({**scored, "synthetic/spike.csv": nab.Scored({}, 1)}, [[up]]) == {}
    traffic = "realTraffic/speed_7578.csv"  # not in the sample: ARTime 3.1077 over 4 windows
    (score,) = nab.published({traffic: nab.Scored({}, 4)}, [[traffic]])["ARTime"]
    assert round(score, 2) == round(100 * (3.1077 + 4) / 8, 2)


def test_the_published_table_holds_all_58_files_and_gives_the_published_totals() -> None:
    table = json.loads(nab.PUBLISHED_FILES.read_text())["standard"]
    published = {"ARTime": 74.9, "Numenta HTM": 70.1, "CAD OSE": 69.9}
    for detector, score in published.items():
        assert len(table[detector]) == 58
        # NAB's 116 windows: the null detector scores -116, the perfect one 116
        assert round(normalised(sum(table[detector].values()), 116), 1) == score


def test_nab_scores_files_the_sample_lacks_at_the_samples_thresholds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tiny_nab(tmp_path / "sample")
    checkout = tmp_path / "NAB"  # NAB's repository layout: its labels under labels/
    _tiny_nab(checkout)  # the sample's own file, which must not count as never seen
    (checkout / "labels").mkdir()
    labels = json.loads((checkout / "combined_windows.json").read_text())
    (checkout / "combined_windows.json").unlink()
    traffic = "realTraffic/speed_7578.csv"  # a NAB name: ARTime's published raw score 3.1077
    (checkout / "data" / "realTraffic").mkdir()
    (checkout / "data" / traffic).write_text((checkout / "data/synthetic/spike.csv").read_text())
    (checkout / "labels" / "combined_windows.json").write_text(
        json.dumps({**labels, traffic: labels["synthetic/spike.csv"]})
    )
    nab.main(["--data", str(tmp_path / "sample"), "--unseen", str(checkout), "--windows"])
    lines = capsys.readouterr().out.splitlines()
    assert "never seen: 1 files, 1 windows, 1000 readings" in "\n".join(lines)
    assert f"{traffic}: [680-720] at 700; 0 FP" in lines
    chosen = next(line for line in lines if line.startswith("threshold (all files)")).split()
    used = next(line for line in lines if line.startswith("threshold (the sample's)")).split()
    assert used[3:] == chosen[3:]
    totals = next(line for line in lines if line.startswith("NEVER SEEN (1)")).split()
    assert all(90.0 < float(t) <= 100.0 for t in totals[3:]), totals
    assert f"  ARTime         {normalised(3.1077313980278403, 1):5.1f}" in lines

    def refused(unseen: Path) -> str:
        with pytest.raises(SystemExit) as exit_:
            nab.main(["--data", str(tmp_path / "sample"), "--unseen", str(unseen)])
        assert exit_.value.code == 2
        out, err = capsys.readouterr()
        assert "detector novelty" not in out  # refused before the sample is scored
        return err

    assert "every file labelled at" in refused(tmp_path / "sample")
    assert "--unseen" in refused(tmp_path / "none")
    (checkout / "data" / traffic).unlink()
    assert f"no series file under {checkout / 'data'} for {traffic}" in refused(checkout)


def test_nab_windows_names_each_detection_miss_and_false_positive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tiny_nab(tmp_path)
    nab.main(["--data", str(tmp_path), "--windows"])
    assert "synthetic/spike.csv: [680-720] at 700; 0 FP" in capsys.readouterr().out
    series = nab.load(tmp_path)[0]
    scores = [0.0] * 1000
    scores[200] = scores[900] = 0.9
    scores[100] = 0.95  # in probation (the first 150 rows): not counted
    line = nab.window_report(series, scores, 0.5)
    assert line == "synthetic/spike.csv: [680-720] missed, best 0.000; 2 FP (200, 900)"


class _Message:
    def __init__(self, ms: int, readings: int) -> None:
        self.ms = ms
        self.batch = _batch(readings)

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ms)  # (create time, milliseconds)

    def value(self) -> bytes:
        return self.batch


def _batch(readings: int) -> bytes:
    ts = datetime(2026, 7, 1, tzinfo=UTC)
    batch = ReadingBatch(
        readings=tuple(
            Reading(device_id="a-1", seq=i, ts=ts + timedelta(seconds=i), values={"pm25": 1.0})
            for i in range(readings)
        )
    )
    return batch.model_dump_json().encode()


class _Consumer:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_stage_is_timed_by_its_outputs_from_the_first_to_the_last() -> None:
    outputs = Outputs.__new__(Outputs)  # no broker: the messages are given
    outputs.consumer = consumer = _Consumer()  # type: ignore[assignment]
    # Out of order as partitions interleave: 250 readings at 1.0 s, then 2 s more for 500.
    outputs.messages = [_Message(3_000, 250), _Message(1_000, 250), _Message(2_000, 250)]
    assert outputs.rate() == (750, 250.0)  # the first message's readings were done at its time
    assert consumer.closed
    outputs.messages = [_Message(1_000, 250)]
    assert outputs.rate() == (250, None)  # one message: no span to time


class _Watermarks:
    """A consumer's view of a topic: partition -> (low, high) watermarks."""

    def __init__(self, marks: dict[int, tuple[int, int]]) -> None:
        self.marks = marks

    def list_topics(self, topic: str, timeout: float) -> object:
        partitions = dict.fromkeys(self.marks)
        return type("Meta", (), {"topics": {topic: type("T", (), {"partitions": partitions})}})

    def get_watermark_offsets(self, tp: object, timeout: float) -> tuple[int, int]:
        return self.marks[tp.partition]  # type: ignore[attr-defined]


def test_a_topic_is_read_from_two_before_each_partition_end_never_before_its_start() -> None:
    # tansu may give a partition's end one short, so two before it are read (and told apart
    # by timestamp); a partition that holds less starts at its first message.
    ends = partition_ends(_Watermarks({0: (0, 10), 1: (5, 6), 2: (0, 0)}), "t")  # type: ignore[arg-type]
    assert [(tp.topic, tp.partition, tp.offset) for tp in ends] == [
        ("t", 0, 8),
        ("t", 1, 5),
        ("t", 2, 0),
    ]


def test_the_load_clients_cpu_and_the_machines_busy_share_are_counted() -> None:
    import subprocess
    import sys

    from benchmarks.bench_parts import Ticks, _waited_cpu_seconds, cpu_figures, machine_ticks

    before, ticks = _waited_cpu_seconds(), machine_ticks()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)  # a client that works, then ends
    clients = _waited_cpu_seconds() - before
    assert clients >= 0.3
    now = machine_ticks()
    assert now.total > ticks.total and now.busy > ticks.busy  # the child's work is busy time
    # user 10, nice 1, system 5, idle 100, iowait 4, irq 2, softirq 3, steal 7, guest 9 (in user)
    stat = "cpu  10 1 5 100 4 2 3 7 9 0\ncpu0 10 1 5 100 4 2 3 7 9 0\n"
    assert machine_ticks(stat) == Ticks(busy=21, steal=7, total=132)
    figures = cpu_figures({"streams": 2.0, "ingest": 1.0}, 1.0, 20_000, Ticks(90, 5, 100), 2)
    assert figures == {
        "cpu_s_per_1000": {"streams": 0.1, "ingest": 0.05},
        "load_clients_cpu_s_per_1000": 0.05,
        "machine_busy": 0.9,
        "machine_steal": 0.05,
        "cpu_bound_readings_per_s": 10_000,  # 2 cores / 0.2 CPU s per 1000 readings in all
    }
