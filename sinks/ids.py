"""Ids as people type them: whole, or their first hexadecimal digits (the short form copied
from a log or the console), looked up by one indexed range."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg

__all__ = ["SHORTEST_PREFIX", "SHOWN_MATCHES", "AmbiguousId", "find_id", "is_short_id", "too_short"]

SHORTEST_PREFIX = 4
"""The fewest leading digits of an id that :func:`find_id` looks up (the run log and the
console show 8)."""
SHOWN_MATCHES = 5
"""The most ids an ambiguous start of an id names."""
_PREFIX = re.compile(rf"[0-9a-f]{{{SHORTEST_PREFIX},31}}")


class AmbiguousId(LookupError):
    """A start of an id that several ids of one kind (``what``: incident, alert) have.

    >>> str(AmbiguousId("incident", "0940", ["0940a", "0940b"]))
    "incident id '0940' is the start of several incidents' ids (0940a, 0940b): give more of its digits"
    >>> str(AmbiguousId("alert", "09", [f"09{n}" for n in range(6)])).split("(")[1]
    '090, 091, 092, 093, 094, and more): give more of its digits'
    """

    def __init__(self, what: str, prefix: str, matches: list[str]) -> None:
        named = ", ".join(matches[:SHOWN_MATCHES])
        more = ", and more" if len(matches) > SHOWN_MATCHES else ""
        super().__init__(
            f"{what} id {prefix!r} is the start of several {what}s' ids "
            f"({named}{more}): give more of its digits"
        )
        self.prefix = prefix
        self.matches = matches


def is_short_id(given: str) -> bool:
    """Whether ``given`` is the start of an id, as :func:`find_id` takes it.

    >>> is_short_id("0940a818"), is_short_id("0940A818"), is_short_id("094"), is_short_id("f" * 32)
    (True, True, False, False)
    """
    return _PREFIX.fullmatch(given.lower()) is not None


def too_short(given: str) -> bool:
    """Whether ``given`` reads as the start of an id, too short to take.

    >>> too_short("f8c"), too_short("f8c1"), too_short("nope"), too_short("")
    (True, False, False, False)
    """
    return 0 < len(given) < SHORTEST_PREFIX and all(c in "0123456789abcdefABCDEF" for c in given)


def find_id(
    conn: psycopg.Connection[Any],
    given: str,
    table: str,
    column: str,
    unknown: Callable[[str, str], LookupError],
    ambiguous: Callable[[str, list[str]], LookupError],
) -> str:
    """The id in ``table`` that is ``given`` or starts with it (at least
    :data:`SHORTEST_PREFIX` digits); anything else is given back as it is, for the caller's
    own check. Raises ``unknown(given, hint)`` when no id starts so or ``given`` is a shorter
    start (the hint says how many digits it takes), ``ambiguous(given, ids)`` when several do."""
    if not is_short_id(given):
        if too_short(given):
            raise unknown(given, f" (the start of an id takes {SHORTEST_PREFIX} digits or more)")
        return given
    prefix = given.lower()
    # A range, not LIKE: it takes the key's index under any collation ('g' follows the digits).
    found = conn.execute(
        f"SELECT {column} FROM {table} WHERE {column} >= %s AND {column} < %s "
        f"ORDER BY {column} LIMIT %s".encode(),
        (prefix, prefix + "g", SHOWN_MATCHES + 1),
    ).fetchall()
    if not found:
        raise unknown(given, "")
    if len(found) > 1:
        raise ambiguous(given, [str(row[0]) for row in found])
    return str(found[0][0])
