"""Bulk device files: CSV and JSON in (bad rows reported by line and field), CSV and JSON out.

Pure: text in, devices and row errors out. A bad row never costs the good rows. A device a
file gives no ``state`` is ``provisioned``: registered, with working credentials, but not
expected to report until its first valid reading makes it active.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from cityvitals.contracts import Device, DeviceState
from cityvitals.problems import in_words
from device_registry.credentials import login_problem

__all__ = [
    "CSV_COLUMNS",
    "ParsedFile",
    "RowError",
    "export_csv",
    "parse_device_csv",
    "parse_device_json",
    "split_place_path",
]

CSV_COLUMNS = (
    "device_id",
    "device_type",
    "profile_id",
    "place_path",
    "department",
    "tags",
    "lat",
    "lon",
    "state",
)
REQUIRED = ("device_id", "device_type", "place_path")

Unit = Literal["line", "item"]
"""What a row's number counts: a line of the file, or an item of a JSON array (from 1)."""


@dataclass(frozen=True)
class RowError:
    """One refused row: its line (CSV) or 1-based item number (JSON), the field and why."""

    line: int
    field: str
    message: str
    unit: Unit = "line"

    def __str__(self) -> str:
        return f"{self.unit} {self.line}: {self.field}: {self.message}"


@dataclass
class ParsedFile:
    """The devices of a file, each with its line (CSV) or item number (JSON), as ``unit`` says,
    and the refused rows.

    ``unreadable`` is set when the file as a whole cannot be read (no header, not JSON): then
    ``errors`` holds the one reason, by line, and there are no devices.
    """

    devices: list[Device] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    unreadable: bool = False
    unit: Unit = "line"

    def add(self, line: int, result: Device | RowError) -> None:
        if isinstance(result, Device):
            self.devices.append(result)
            self.lines.append(line)
        else:
            self.errors.append(result)

    @classmethod
    def refused(cls, line: int, name: str, message: str) -> ParsedFile:
        return cls(errors=[RowError(line, name, message)], unreadable=True)

    def of_types(self, known: Collection[str]) -> ParsedFile:
        r"""The rows whose device type a rule or indicator names (``known``); the others are
        refused rows (a typo, ``waterlevel``, or a type the rules do not cover yet).

        >>> from datetime import UTC, datetime
        >>> parsed = parse_device_csv("device_id,device_type,place_path\nw-1,waterlevel,sh\n"
        ...                           "w-2,water_level,sh\n", datetime(2026, 12, 7, tzinfo=UTC))
        >>> kept = parsed.of_types({"water_level", "noise"})
        >>> [d.device_id for d in kept.devices], [str(e) for e in kept.errors]
        (['w-2'], ["line 2: device_type: no rule or indicator names 'waterlevel' (they name noise, water_level)"])
        """
        named = ", ".join(sorted(known))

        def unknown(device: Device) -> str | None:
            if device.device_type in known:
                return None
            return f"no rule or indicator names {device.device_type!r} (they name {named})"

        return self._sifted("device_type", unknown)

    def at_places(self, known: Collection[tuple[str, ...]]) -> ParsedFile:
        r"""The rows whose place is in the registry (``known``: the places' paths); the others
        are refused rows naming the nearest known place (a typo would make a street nobody
        meant, which every console then shows).

        >>> from datetime import UTC, datetime
        >>> parsed = parse_device_csv("device_id,device_type,place_path\nw-1,noise,c/rv/rv-qauy\n"
        ...                           "w-2,noise,c/rv/rv-quay\n", datetime(2026, 12, 7, tzinfo=UTC))
        >>> kept = parsed.at_places({("c",), ("c", "rv"), ("c", "rv", "rv-quay")})
        >>> [d.device_id for d in kept.devices], [str(e) for e in kept.errors]
        (['w-2'], ['line 2: place_path: no place c/rv/rv-qauy in the registry (c/rv/rv-quay?)'])
        """
        paths = {"/".join(p) for p in known}

        def unknown(device: Device) -> str | None:
            path = "/".join(device.place_path)
            if path in paths:
                return None
            near = difflib.get_close_matches(path, paths, n=1)
            hint = f"{near[0]}?" if near else "add it first: cityvitals places add"
            return f"no place {path} in the registry ({hint})"

        return self._sifted("place_path", unknown)

    def _sifted(self, name: str, refuses: Callable[[Device], str | None]) -> ParsedFile:
        """The rows ``refuses`` finds nothing wrong with; the others refused rows, their
        ``name`` field said wrong as it says."""
        kept = ParsedFile(errors=list(self.errors), unit=self.unit)
        for line, device in zip(self.lines, self.devices, strict=True):
            why = refuses(device)
            kept.add(line, device if why is None else RowError(line, name, why, self.unit))
        kept.errors.sort(key=lambda e: e.line)
        return kept


def split_place_path(text: str) -> tuple[str, ...]:
    """Place ids from the city down, joined by '/'. A '/' at either end is let be, and an empty
    text is no place; an empty id between two is refused: a typo that would join the ids
    around it and make a place where none was meant.

    >>> split_place_path("sim/sim-d1/"), split_place_path(""), split_place_path("/")
    (('sim', 'sim-d1'), (), ())
    >>> split_place_path("/sim//x")
    Traceback (most recent call last):
    ...
    ValueError: place path '/sim//x': an empty place id between two '/'
    """
    parts = text.strip("/").split("/")
    if parts == [""]:
        return ()
    if "" in parts:
        raise ValueError(f"place path {text!r}: an empty place id between two '/'")
    return tuple(parts)


def _unstorable(data: dict[str, Any]) -> str | None:
    """The first field holding a NUL character (PostgreSQL cannot store one in text)."""
    for name, value in data.items():
        values = value if isinstance(value, list | tuple) else (value,)
        if any(isinstance(v, str) and "\x00" in v for v in values):
            return name
    return None


def _device(data: dict[str, Any], line: int, now: datetime, unit: Unit) -> Device | RowError:
    bad = _unstorable(data)
    if bad is not None:
        return RowError(line, bad, "contains a NUL character, which cannot be stored", unit)
    try:
        device = Device(updated_at=now, **{"state": DeviceState.PROVISIONED, **data})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in err["loc"]) or "row"
        got = "" if err["type"] == "missing" else f" (got {err['input']!r:.60})"
        plain = in_words(err)
        if name == "place_path" and plain == "should be a list":
            plain = "should be a list of place ids or one '/'-joined text"
        return RowError(line, name, plain + got, unit)
    problem = login_problem(device.device_id)
    return device if problem is None else RowError(line, "device_id", problem, unit)


def parse_device_csv(text: str, now: datetime) -> ParsedFile:
    """CSV rows to devices.

    ``place_path`` is the place ids from the city down, joined by ``/``; ``tags`` by ``;``.
    A UTF-8 byte-order mark (as spreadsheet programs write) is skipped.

    >>> from datetime import UTC, datetime
    >>> parsed = parse_device_csv("device_id,device_type,place_path\\nwl-1,water_level,sh/pd\\n"
    ...                           "wl 2,water_level,sh\\n", datetime(2026, 1, 1, tzinfo=UTC))
    >>> [d.device_id for d in parsed.devices], parsed.lines, [str(e) for e in parsed.errors]
    (['wl-1'], [2], ["line 3: device_id: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' (got 'wl 2')"])
    """
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        return ParsedFile.refused(1, "file", f"cannot read the CSV header: {exc}")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        found = ", ".join(repr(c) for c in header[:10]) or "nothing"
        semicolons = " (separated by ';' rather than ','?)" if len(header) == 1 else ""
        return ParsedFile.refused(
            1,
            ",".join(missing),
            f"required column missing from the header, which holds {found}{semicolons}",
        )
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        return ParsedFile.refused(1, unknown[0], f"unknown column; known: {', '.join(CSV_COLUMNS)}")
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:  # the row's last value of it would be taken, its first dropped without a word
        return ParsedFile.refused(1, twice[0], "the header names this column twice")
    parsed = ParsedFile()
    try:
        for row in reader:
            line = reader.line_num
            # the row's lines are those its quoted values hold, and its last (a quote left
            # open to the end holds the file's last line break too)
            held = [v for v in row.values() if isinstance(v, str) and "\n" in v]
            first = line - sum(v.count("\n") for v in held) + any(v.endswith("\n") for v in held)
            if line > first:
                parsed.add(
                    first,
                    RowError(
                        first,
                        "row",
                        f'a quote (") opened on this line runs to line {line}: lines '
                        f"{first} to {line} read as one row (a quote missing?)",
                    ),
                )
                continue
            if None in row:
                parsed.add(
                    line, RowError(line, "row", f"{len(row[None])} more fields than the header")
                )
                continue
            short = [c for c in REQUIRED if row.get(c) is None]  # trailing fields may be left off
            if short:
                given = sum(v is not None for v in row.values())
                said = f"{given} fields of the header's {len(header)}: no {', '.join(short)}"
                parsed.add(line, RowError(line, "row", said))
                continue
            data: dict[str, Any] = {k: v for k, v in row.items() if v not in ("", None)}
            try:
                data["place_path"] = split_place_path(data.get("place_path", ""))
            except ValueError as exc:
                parsed.add(line, RowError(line, "place_path", str(exc)))
                continue
            if "tags" in data:
                data["tags"] = tuple(t.strip() for t in data["tags"].split(";") if t.strip())
            parsed.add(line, _device(data, line, now, parsed.unit))
    except csv.Error as exc:
        parsed.add(reader.line_num, RowError(reader.line_num, "file", f"CSV ends badly: {exc}"))
    return parsed


def parse_device_json(text: str, now: datetime) -> ParsedFile:
    """A JSON array of device objects (``place_path`` a list or a ``/`` string)."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        return ParsedFile.refused(exc.lineno, "file", f"not valid JSON: {exc.msg}")
    except RecursionError:
        return ParsedFile.refused(1, "file", "nested too deeply")
    if not isinstance(items, list):
        return ParsedFile.refused(1, "file", "expected a JSON array of devices")
    parsed = ParsedFile(unit="item")
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            parsed.add(n, RowError(n, "item", "expected an object", parsed.unit))
            continue
        data = {k: v for k, v in item.items() if k != "updated_at" and k != "schema_version"}
        if isinstance(data.get("place_path"), str):
            try:
                data["place_path"] = split_place_path(data["place_path"])
            except ValueError as exc:
                parsed.add(n, RowError(n, "place_path", str(exc), parsed.unit))
                continue
        parsed.add(n, _device(data, n, now, parsed.unit))
    return parsed


def export_csv(devices: list[Device]) -> str:
    """Devices as CSV that :func:`parse_device_csv` reads back."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for d in devices:
        writer.writerow(
            [
                d.device_id,
                d.device_type,
                d.profile_id or "",
                "/".join(d.place_path),
                d.department or "",
                ";".join(d.tags),
                "" if d.lat is None else d.lat,
                "" if d.lon is None else d.lon,
                d.state.value,
            ]
        )
    return out.getvalue()
