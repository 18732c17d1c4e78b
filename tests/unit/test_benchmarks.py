"""The hand-run benchmarks: they say what is missing and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import nab
from benchmarks.sinks import remove_state
from wiring.stack import StackPaths


def test_nab_without_its_data_says_so_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        nab.main(["--data", str(tmp_path / "nab")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"no NAB data at {tmp_path / 'nab'}" in err and "--data" in err
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
