"""The incident desk's place names (:class:`streams.incidents.PlaceNames`), with a fake reader:
what each read asks for, the wait, the places not asked for again, a database that is down."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from streams.incidents import PlaceNames

T0 = datetime(2026, 12, 5, 8, tzinfo=UTC)
Row = tuple[str, str, datetime]


class Down(Exception):
    pass


class Registry:
    """Places with their last change; each read records what it was asked for."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.asked: list[datetime | None] = []
        self.down = False
        self.gate = threading.Event()
        self.gate.set()

    def changed(self, after: datetime | None) -> Sequence[Row]:
        """What the database held when the query ran, returned once ``gate`` opens."""
        self.asked.append(after)
        found = [r for r in self.rows if after is None or r[2] > after]
        self.gate.wait(5)
        if self.down:
            raise Down("connection refused")
        return found


def test_the_first_read_takes_every_place_then_only_those_changed_since() -> None:
    registry = Registry()
    registry.rows = [("lj", "Canal Street", T0), ("pd", "Pudong", T0 + timedelta(minutes=1))]
    names = PlaceNames(registry.changed, (Down,))
    names.read()
    assert names.names == {"lj": "Canal Street", "pd": "Pudong"}
    registry.rows.append(("lj", "Canal Road", T0 + timedelta(minutes=30)))
    names.read()
    assert names.names["lj"] == "Canal Road"
    # the newest change read, less the overlap: a change committed late is read again
    assert registry.asked == [None, T0 + timedelta(minutes=1) - PlaceNames.OVERLAP]


def test_a_place_met_first_is_read_before_the_input_and_asked_for_once() -> None:
    registry = Registry()
    names = PlaceNames(registry.changed, (Down,))
    names.read()

    async def meet() -> None:
        registry.rows.append(("new-st", "New Street", T0))
        assert names.unknown(("sh", "new-st"))
        await names.refresh(1.0, ("sh", "new-st"))
        assert names.names["new-st"] == "New Street"
        assert not names.unknown(("sh", "new-st"))  # "sh" has no name: not asked again
        await names.refresh()  # a tick: read in the background
        await asyncio.sleep(0.05)

    asyncio.run(meet())
    assert len(registry.asked) == 3


def test_a_read_under_way_is_followed_by_one_for_the_new_place_and_the_wait_is_bounded() -> None:
    registry = Registry()
    names = PlaceNames(registry.changed, (Down,))

    async def race() -> None:
        loop = asyncio.get_running_loop()
        registry.gate.clear()  # the tick's read ran its query, and waits on a slow database
        await names.refresh()
        await asyncio.sleep(0.05)
        registry.rows.append(("late-st", "Late Street", T0))  # made after that query
        loop.call_later(0.1, registry.gate.set)
        await names.refresh(2.0, ("late-st",))
        assert names.names == {"late-st": "Late Street"}  # a read of its own found it
        assert registry.asked == [None, None]
        # a database that does not answer: the input goes on after the wait, without the name
        registry.gate.clear()
        registry.rows.append(("later-st", "Later Street", T0 + timedelta(minutes=1)))
        await asyncio.wait_for(names.refresh(0.2, ("later-st",)), timeout=2.0)
        assert "later-st" not in names.names and not names.unknown(("later-st",))
        registry.gate.set()
        await asyncio.sleep(0.1)

    asyncio.run(race())


def test_a_database_that_is_down_leaves_the_names_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    registry.rows = [("lj", "Canal Street", T0)]
    names = PlaceNames(registry.changed, (Down,))
    names.read()
    registry.down = True
    with caplog.at_level(logging.INFO, logger="cityvitals.incidents"):
        names.read()
        names.read()
        registry.down = False
        names.read()
    assert names.names == {"lj": "Canal Street"}
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "cannot read the places' names: connection refused",
        "the places' names are read again",
    ]
    registry.down, registry.rows = False, []

    def broken(_after: datetime | None) -> Sequence[Row]:
        raise KeyError("a defect is not the database being down")

    names.changed = broken
    with pytest.raises(KeyError):
        names.read()
