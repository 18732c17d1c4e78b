"""What every command group of the command line shares: the settings, failing with one line,
times given on the command line, and the files a command reads and writes."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta, tzinfo
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

import psycopg
import typer
from pydantic import BaseModel, ValidationError

from cityvitals.settings import Settings, unknown_variables


def settings() -> Settings:
    """The settings from ``CITYVITALS_*``; a bad value ends the command naming the variable,
    a variable that names no setting is noted (a misspelt one would keep its default)."""
    _note(tuple(unknown_variables(os.environ)))
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            field = "CITYVITALS_" + "_".join(str(p) for p in err["loc"]).upper()
            typer.echo(f"error: {field}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


@functools.cache
def _note(lines: tuple[str, ...]) -> None:
    """Each line once a process: a command may read the settings more than once."""
    for line in lines:
        typer.echo(f"note: {line}", err=True)


def in_order(first: datetime, last: datetime, start: str, end: str) -> None:
    """End the command when the range from ``first`` (option ``start``) to ``last`` (``end``)
    ends before it begins: it would hold nothing."""
    if first >= last:
        raise fail(f"{start} {first.isoformat()} is not before {end} {last.isoformat()}")


def fail(message: str) -> typer.Exit:
    """One line on stderr and exit code 1: ``raise fail("...")``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def known_place(
    conn: psycopg.Connection[Any], place: str | None, option: str = "--place"
) -> str | None:
    """The id of the place ``place`` names (an id, or a path ``a/b``); None for None. Ends
    the command when it names none: a list narrowed to a misspelt place would be empty, and
    "no incidents" would read as all quiet. A place's name given for its id is named back.
    ``conn``: a database connection."""
    if place is None:
        return None
    asked = tuple(p for p in place.strip("/").split("/") if p)
    if not asked:
        raise fail(f"{option} {place!r}: no place id")
    row = conn.execute("SELECT path FROM places WHERE place_id = %s", asked[-1:]).fetchone()
    if row is not None and (len(asked) == 1 or tuple(row[0]) == asked):
        return asked[-1]
    if row is not None:
        raise fail(f"{option} {place!r}: no such path; {asked[-1]} is at {'/'.join(row[0])}")
    named = conn.execute(
        "SELECT place_id FROM places WHERE lower(name) = lower(%s) ORDER BY place_id LIMIT 3",
        (place.strip(),),
    ).fetchall()
    hint = (
        f"; it is the name of {', '.join(repr(r[0]) for r in named)}: give the id"
        if named
        else " (an id, or a path a/b; 'cityvitals places list' shows them)"
    )
    raise fail(f"{option} {place!r}: no such place{hint}")


def named_filters(conn: psycopg.Connection[Any], conf: Settings, **filters: str | None) -> None:
    """Ends the command when a filter's value names nothing the platform knows (a
    department, category or device: :func:`~device_registry.incident_publisher.unnamed_filter`);
    asked when a listing came back empty, where "no incidents" would read as all quiet."""
    from device_registry.incident_publisher import unnamed_filter

    try:
        unnamed = unnamed_filter(conn, conf, **filters)
    except (OSError, ValueError) as exc:
        raise fail(f"the incident configuration cannot be read: {exc}") from None
    if unnamed is not None:
        name, why = unnamed
        raise fail(f"--{name} {filters[name]!r}: {why}")


def parse_utc(text: str) -> datetime:
    """An ISO time or date; without a zone it is UTC.

    >>> parse_utc("2026-11-01").isoformat()
    '2026-11-01T00:00:00+00:00'
    """
    return parse_local(text, UTC)


def parse_local(text: str, zone: tzinfo) -> datetime:
    """An ISO time or date in UTC; without a zone it is a time in ``zone`` (the city's, as
    the commands show times).

    >>> from zoneinfo import ZoneInfo
    >>> parse_local("2026-11-01", ZoneInfo("Asia/Shanghai")).isoformat()
    '2026-10-31T16:00:00+00:00'
    >>> parse_local("2026-11-01T08:00Z", ZoneInfo("Asia/Shanghai")).isoformat()
    '2026-11-01T08:00:00+00:00'
    """
    ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return (ts.replace(tzinfo=zone) if ts.tzinfo is None else ts).astimezone(UTC)


_SPANS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_TIME_OF_DAY = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def parse_when(text: str, zone: tzinfo, now: datetime | None = None) -> datetime:
    """A time as a person gives it to a command: an ISO time or date (:func:`parse_local`), a
    time of day in ``zone`` (its latest before ``now``: today's, or yesterday's when today's
    is still to come), or a span back from ``now`` (``90s``, ``15m``, ``2h``, ``7d``). Anything
    else is refused, saying what is taken.

    >>> from zoneinfo import ZoneInfo
    >>> now = datetime(2026, 12, 5, 12, 30, tzinfo=UTC)  # 20:30 in Shanghai
    >>> shanghai = ZoneInfo("Asia/Shanghai")
    >>> [parse_when(t, shanghai, now).isoformat() for t in ("19:55", "7:05", "15m", "2d")]
    ['2026-12-05T11:55:00+00:00', '2026-12-04T23:05:00+00:00', '2026-12-05T12:15:00+00:00', '2026-12-03T12:30:00+00:00']
    >>> parse_when("23:30", shanghai, now).isoformat()  # today's is to come: yesterday's
    '2026-12-04T15:30:00+00:00'
    >>> parse_when("19:55Z", UTC, now)
    Traceback (most recent call last):
    ...
    ValueError: '19:55Z' is not a time: give an ISO time or date (2026-12-05T19:55, 2026-12-05), a time of day (19:55, the latest in the city's zone) or a span back from now (15m, 2h, 7d)
    """
    now = now or datetime.now(UTC)
    given = text.strip()
    try:
        unit, count = given[-1:], given[:-1]
        if unit in _SPANS and count.isascii() and count.isdigit():
            return now - timedelta(**{_SPANS[unit]: int(count)})
        clock = _TIME_OF_DAY.match(given)
        if clock is not None:
            hour, minute, second = (int(g or 0) for g in clock.groups())
            local = now.astimezone(zone)
            at = datetime.combine(local.date(), time(hour, minute, second), zone)
            if at > local:
                at = datetime.combine(
                    local.date() - timedelta(days=1), time(hour, minute, second), zone
                )
            return at.astimezone(UTC)
        if ":" not in given or "T" in given or " " in given:  # a date, or a date and a time
            return parse_local(given, zone)
    except (ValueError, OverflowError):
        pass
    raise ValueError(
        f"{text!r} is not a time: give an ISO time or date (2026-12-05T19:55, 2026-12-05), a "
        "time of day (19:55, the latest in the city's zone) or a span back from now (15m, 2h, 7d)"
    )


def end_on_problems(file: Path, problems: Sequence[str], what: tuple[str, str]) -> None:
    """A checked file's problems (beyond its own fields), each on stderr, then exit code 1
    saying how many there are (``what``: one, several); nothing when there are none."""
    for problem in problems:
        typer.echo(f"{file}: {problem}", err=True)
    if problems:
        typer.echo(f"{len(problems)} {what[len(problems) != 1]}: not OK", err=True)
        raise typer.Exit(1)


def time_option(text: str | None, option: str) -> datetime | None:
    """An option's time (absent: None), as :func:`parse_when` takes it; without a zone it is
    in the city's (``CITYVITALS_TIMEZONE``). A bad one ends the command naming ``option``."""
    try:
        return parse_when(text, settings().zone) if text else None
    except ValueError as exc:
        raise fail(f"{option}: {exc}") from None


def to_json(value: Any, zone: tzinfo) -> Any:
    """A JSON-ready copy of models and dataclasses, with times in ``zone`` (ISO, with offset)."""
    if isinstance(value, BaseModel):
        return {name: to_json(getattr(value, name), zone) for name in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name), zone) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: to_json(v, zone) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, zone) for v in value]
    return value


def echo_json(value: Any, conf: Settings) -> None:
    """``value`` as one JSON document, times in the city's zone."""
    typer.echo(json.dumps(to_json(value, conf.zone)))


def enum_option(kind: type[Enum], value: str | None, option: str) -> Any:
    """``value`` as a member of ``kind`` (None stays None); a bad one ends the command naming
    ``option`` and the allowed values."""
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in kind)
        raise fail(f"{option} {value!r}: give one of {allowed}") from None


class NotUtf8(ValueError):
    """A text file that is not UTF-8: the file, and the line and value of its first bad byte."""

    def __init__(self, path: Path, line: int, byte: int) -> None:
        self.reason = f"not UTF-8 (byte 0x{byte:02x}); save the file as UTF-8"
        super().__init__(f"{path}:{line}: {self.reason}")
        self.path, self.line, self.byte = path, line, byte


def _first_bad_byte(path: Path) -> tuple[int, int] | None:
    """The line and value of the first byte of ``path`` that is not UTF-8, if any. A line is
    decoded on its own: no UTF-8 character holds the byte of a newline."""
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return line, raw[exc.start]
    return None


@contextmanager
def open_utf8(path: Path) -> Iterator[TextIO]:
    """``path`` open to read as UTF-8 text, ready for ``csv`` (``newline=""``), less a leading
    byte-order mark (spreadsheet programs write one). A byte that is not UTF-8 raises
    :class:`NotUtf8` wherever the block reads it."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        try:
            yield f
        except UnicodeDecodeError:
            bad = _first_bad_byte(path)
            if bad is None:  # the file changed while it was read
                raise
            raise NotUtf8(path, *bad) from None


def read_utf8(path: Path) -> str:
    """The text of a file named on the command line; one that cannot be read or is not UTF-8
    ends the command naming it."""
    try:
        with open_utf8(path) as f:
            return f.read()
    except OSError as exc:
        raise fail(f"{path}: {exc.strerror}") from None
    except NotUtf8 as exc:
        raise fail(str(exc)) from None


@contextmanager
def atomic_output(path: Path) -> Iterator[TextIO]:
    """``path`` open to write UTF-8 text: a temporary file beside it, renamed to ``path`` when
    the block ends and removed if the block raises, so a failed command leaves nothing. A
    missing folder is not made: it ends the command, as does a path that cannot be written."""
    if not path.parent.is_dir():
        raise fail(f"cannot write {path}: there is no folder {path.parent}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise fail(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            yield out
    except BaseException:
        os.unlink(tmp)
        raise
    try:
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise fail(f"cannot write {path}: {exc.strerror}") from None
