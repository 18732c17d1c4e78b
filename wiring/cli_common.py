"""What every command group of the command line shares: the settings, failing with one line,
and times given on the command line."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, tzinfo
from enum import Enum
from typing import Any

import typer
from pydantic import BaseModel, ValidationError

from cityvitals.settings import Settings


def settings() -> Settings:
    """The settings from ``CITYVITALS_*``; a bad value ends the command naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            field = "CITYVITALS_" + "_".join(str(p) for p in err["loc"]).upper()
            typer.echo(f"error: {field}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


def fail(message: str) -> typer.Exit:
    """One line on stderr and exit code 1: ``raise fail("...")``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def parse_utc(text: str) -> datetime:
    """An ISO time or date; without a zone it is UTC.

    >>> parse_utc("2026-11-01").isoformat()
    '2026-11-01T00:00:00+00:00'
    """
    ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


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
