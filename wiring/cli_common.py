"""What every command group of the command line shares: the settings, failing with one line,
and times given on the command line."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from pydantic import ValidationError

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
