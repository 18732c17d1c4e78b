"""What the CLI and the API send to the incident stage, checked before sending: the action is
one people send, and a report names a category of the incident configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cityvitals.contracts import Action, Tier
from cityvitals.settings import Settings
from device_registry.incident_publisher import (
    BadAction,
    incident_categories,
    make_feedback,
    make_report,
)

INCIDENT = "a" * 32


def test_feedback_gets_a_fresh_id_and_refuses_what_people_do_not_send() -> None:
    one = make_feedback(INCIDENT, "reassign", actor="duty", department="water", tier=Tier.CITY)
    two = make_feedback(INCIDENT, "note", actor="duty", reason="called the crew")
    assert one.action is Action.REASSIGN and one.tier is Tier.CITY
    assert one.feedback_id != two.feedback_id
    for action in ("dance", "escalate", "dispatch"):
        with pytest.raises(BadAction, match=f"action '{action}' is not one people send"):
            make_feedback(INCIDENT, action, actor="duty")
    with pytest.raises(ValidationError, match="reassign needs the department"):
        make_feedback(INCIDENT, "reassign", actor="duty")
    with pytest.raises(ValidationError, match="incident_id"):
        make_feedback("not-hex", "accept", actor="duty")


def test_a_report_needs_text_and_a_place_path() -> None:
    report = make_report(("c", "d"), "general", "smoke")
    assert len(report.report_id) == 32 and report.place_path == ("c", "d")
    with pytest.raises(ValidationError, match="text"):
        make_report(("c",), "general", "")


def test_categories_come_from_the_incident_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "incidents.yaml"
    path.write_text(
        "categories:\n"
        "  flooding: {rules: [water-*], group_by: street, title: Flooding and waterlogging}\n"
        "  smog: {rules: [pm25-*]}\n"
        "routes:\n  - {category: '*', tier: city, department: city-ops}\n"
    )
    titles = incident_categories(Settings(incidents_file=path))
    assert titles == {
        "general": "General",
        "device_health": "Devices silent",
        "flooding": "Flooding and waterlogging",
        "smog": "",
    }
    path.write_text("routes: []\n")
    with pytest.raises(ValueError, match=r"incidents\.yaml:1: routes: holds 0 items: at least 1"):
        incident_categories(Settings(incidents_file=path))
    path.write_text("categories: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        incident_categories(Settings(incidents_file=path))
