"""``cityvitals rules check --registry`` on a registry of a district that lacks device types
the platform ships (a fake registry: tests/integration/test_rules_history.py checks it on the
real one)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cityvitals.contracts import Place, PlaceLevel
from wiring.cli_rules import rules_app


class District:
    """A registry with one place and water level gauges alone, no profile."""

    def list_profiles(self) -> list[Any]:
        return []

    def list_places(self) -> list[Place]:
        return [Place(place_id="rv", name="Riverside", level=PlaceLevel.CITY, path=("rv",))]

    def device_types(self) -> set[str]:
        return {"water_level"}

    def unprofiled_types(self) -> set[str]:
        return {"water_level"}


def test_a_shipped_device_type_no_device_has_is_a_note_a_type_nothing_ships_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wiring.cli_registry_common as common
    import wiring.cli_rules as cli_rules

    @contextmanager
    def registry() -> Iterator[District]:
        yield District()

    monkeypatch.setattr(common, "registry", registry)
    monkeypatch.setattr(cli_rules, "_unprofiled", lambda _rules: [])
    rules = tmp_path / "rules.yaml"
    gauge = "{id: deep, metric: water_level_cm, levels: {red: 40}, device_types: [water_level]}"
    gas = "{id: gas-x, metric: ch4_lel_pct, levels: {red: 25}, device_types: [gas]}"
    rules.write_text(f"rules: [{gauge}, {gas}]")
    noted = CliRunner().invoke(rules_app, ["check", str(rules), "--registry"])
    assert noted.exit_code == 0, noted.output
    assert (
        "note: rule 'gas-x': no device of type 'gas' is registered: the rule applies to none "
        "until one is"
    ) in noted.output
    assert "1 rule of device types the platform ships and no device here has" in noted.output
    lamp = "{id: lamp-x, metric: lux, levels: {red: 1}, device_types: [lamp_post]}"
    rules.write_text(f"rules: [{gauge}, {lamp}]")
    refused = CliRunner().invoke(rules_app, ["check", str(rules), "--registry"])
    assert refused.exit_code == 1, refused.output
    assert "rule 'lamp-x': device_types names 'lamp_post'" in refused.output


def test_incidents_defaults_prints_the_shipped_incident_file_which_parses() -> None:
    from rules.incidents import parse_incident_config
    from wiring.cli_incidents import incidents_app

    shown = CliRunner().invoke(incidents_app, ["defaults"])
    assert shown.exit_code == 0, shown.output
    shipped = Path(__file__).parents[2] / "rules" / "incidents.yaml"
    assert shown.output == shipped.read_text()
    assert parse_incident_config(shown.output).version
