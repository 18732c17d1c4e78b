"""``cityvitals anomaly score IN.csv OUT.csv``: anomaly scores for one series in a CSV file.

The input has a header with ``timestamp`` and ``value`` columns (NAB's layout). Timestamps are
``YYYY-MM-DD HH:MM:SS`` (taken as UTC) or ISO 8601 with a zone. The output has one row per input
row, in the same order: ``timestamp,value,anomaly_score``, the first two as they were written.
A row whose timestamp is not newer than the last learned one scores 0.0, as in the stream.

The command is strict: the first bad row stops it with ``error: IN.csv:LINE: FIELD: problem``
and exit code 1, and no output file is written (it is written to a temporary file and renamed
into place only when every row has been scored).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from rules.anomaly import AnomalyParams
from rules.detectors import NoveltyDetector, NoveltyParams, SeasonalDetector
from rules.detectors.base import Detector
from wiring.cli_common import NotUtf8, atomic_output, fail, open_utf8

__all__ = ["BadRow", "anomaly_app", "parse_params", "read_series"]

anomaly_app = typer.Typer(help="Score sensor series for anomalies.", no_args_is_help=True)


@anomaly_app.callback()
def _group() -> None:
    """Score sensor series for anomalies."""


class BadRow(ValueError):
    """A row that cannot be read; names the file, the line and the field."""

    def __init__(self, path: str, line: int, field: str, problem: str) -> None:
        super().__init__(f"{path}:{line}: {field}: {problem}")
        self.path, self.line, self.field, self.problem = path, line, field, problem


def parse_params(pairs: list[str]) -> AnomalyParams:
    """``NAME=VALUE`` pairs as detector parameters; raises ``ValueError`` naming the bad one."""
    fields: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE")
        fields[name.strip()] = value.strip()
    try:
        return AnomalyParams.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"--param {name}: {err['msg']}") from None


def _timestamp(text: str) -> datetime:
    ts = datetime.fromisoformat(text.strip())
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def read_series(path: Path) -> Iterator[tuple[int, str, str, datetime, float]]:
    """The rows of a ``timestamp,value`` CSV: line, raw timestamp, raw value, parsed pair."""
    name = str(path)
    with open_utf8(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise BadRow(name, 1, "header", "empty file, expected timestamp,value")
        columns = [c.strip().lower() for c in header]
        if "timestamp" not in columns or "value" not in columns:
            raise BadRow(name, 1, "header", f"expected timestamp,value, got {','.join(header)}")
        it, iv = columns.index("timestamp"), columns.index("value")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise BadRow(name, line, "row", f"expected {len(header)} fields, got {len(row)}")
            raw_ts, raw_value = row[it], row[iv]
            try:
                ts = _timestamp(raw_ts)
            except ValueError:
                raise BadRow(
                    name, line, "timestamp", f"cannot parse {raw_ts!r} as a date and time"
                ) from None
            try:
                value = float(raw_value)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise BadRow(name, line, "value", f"not a finite number: {raw_value!r}")
            yield line, raw_ts, raw_value, ts, value


@anomaly_app.command("score")
def score_csv(
    source: Annotated[Path, typer.Argument(metavar="IN.csv", help="timestamp,value rows.")],
    target: Annotated[Path, typer.Argument(metavar="OUT.csv", help="Written atomically.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="NAME=VALUE", help="Set a detector parameter; repeatable."),
    ] = None,
    detector_name: Annotated[
        str,
        typer.Option(
            "--detector", help="novelty (the default, as in rules) or seasonal.", show_default=False
        ),
    ] = "novelty",
    explain_above: Annotated[
        float | None,
        typer.Option(
            "--explain-above",
            min=0.0,
            max=1.0,
            help="Add a column 'why' to the rows scoring at least this: what was expected, the "
            "usual range, how rare (as an anomaly alert says it; the novelty detector).",
        ),
    ] = None,
) -> None:
    """Score every reading of IN.csv against the readings before it; write OUT.csv."""
    try:
        params = parse_params(param or [])
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if detector_name not in ("novelty", "seasonal"):
        typer.echo(f"error: --detector {detector_name!r}: expected novelty or seasonal", err=True)
        raise typer.Exit(2)
    detector: Detector = (
        NoveltyDetector(NoveltyParams(seasonal=params))
        if detector_name == "novelty"
        else SeasonalDetector(params)
    )
    if explain_above is not None and not isinstance(detector, NoveltyDetector):
        typer.echo("error: --explain-above: the novelty detector explains its scores", err=True)
        raise typer.Exit(2)
    if not source.is_file():
        raise fail(f"{source}: no such file")
    rows = 0
    try:
        with atomic_output(target) as out:
            writer = csv.writer(out)
            why = [] if explain_above is None else ["why"]
            writer.writerow(["timestamp", "value", "anomaly_score", *why])
            for _line, raw_ts, raw_value, ts, value in read_series(source):
                s = detector.score_one((ts, value))
                if explain_above is not None:
                    assert isinstance(detector, NoveltyDetector)
                    said = detector.explain_one((ts, value)).text if s >= explain_above else ""
                    why = [said]
                detector.learn_one((ts, value))
                writer.writerow([raw_ts, raw_value, repr(s), *why])
                rows += 1
    except (BadRow, NotUtf8) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"{rows} rows scored into {target}", err=True)
