"""``cityvitals alerts list``: its columns line up whatever the length of the ids in them."""

from __future__ import annotations

from datetime import UTC, datetime

from sinks.alerts import AlertRow
from wiring.cli_alerts import alert_lines

T = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def row(
    alert_id: str, device_id: str, place: tuple[str, ...], evidence: tuple[str, ...] = ()
) -> AlertRow:
    return AlertRow(
        alert_id,
        1,
        "waterlogging-depth",
        "firing",
        "yellow",
        device_id,
        "water_level_cm",
        17.5,
        15.0,
        place,
        T,
        T,
        None,
        "reached 15 cm (yellow)",
        evidence=evidence,
    )


def test_each_column_is_as_wide_as_its_longest_entry() -> None:
    found = [
        row("a-1", "sim-waterlevel-d1s1g1", ("sim", "sim-d1", "sim-d1-s1", "sim-d1-s1-g1")),
        row("a-2", "wl-1", ("sim",)),
        row("a-3", "", ("sim", "sim-d2"), evidence=("x", "y", "z")),
    ]
    lines = alert_lines(found, UTC)
    places = [
        line.index(p) for line, p in zip(lines, ("sim/sim-d1/", "sim  ", "sim/sim-d2"), strict=True)
    ]
    assert len(set(places)) == 1, lines
    assert len({line.index("since") for line in lines}) == 1, lines
    assert "(3 devices)" in lines[2] and "reached 15 cm (yellow)" in lines[0]
    # no entry runs into the next column
    assert "sim-waterlevel-d1s1g1  sim/sim-d1/sim-d1-s1/sim-d1-s1-g1" in lines[0]


def test_a_place_alert_counts_its_devices_in_words() -> None:
    one = alert_lines([row("a-1", "", ("sim",), evidence=("x",))], UTC)[0]
    assert "(1 device)" in one
