import json
from pathlib import Path

import pytest

from cityvitals.schemas import SCHEMAS, render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_published_schema_matches_the_contract(name: str) -> None:
    """docs/schemas is what downstream teams read; regenerate with 'cityvitals schemas docs/schemas'."""
    assert (DOCS / f"{name}.json").read_text() == render(name)


def test_payload_schema_requires_what_devices_must_send() -> None:
    schema = json.loads(render("mqtt.readings"))
    assert set(schema["required"]) == {"ts", "seq", "values"}
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_names_its_draft_and_is_valid_in_it(name: str) -> None:
    """A downstream validator picks the draft from ``$schema``; each file is a valid schema
    of the draft it names (2020-12, the one pydantic writes)."""
    import jsonschema

    schema = json.loads(render(name))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_the_feedback_schema_takes_the_actions_people_may_send_alone() -> None:
    """A department's integrator validating against the schema learns that ``escalate`` is
    the platform's, not from a refusal by the incident stage."""
    import jsonschema

    schema = json.loads(render("topic.dispatch.feedback"))
    feedback = {
        "schema_version": 1,
        "feedback_id": "fb-1",
        "incident_id": "a" * 32,
        "action": "accept",
        "actor": "gas-utility",
        "ts": "2026-12-07T08:00:00Z",
    }
    jsonschema.validate(feedback, schema)
    for platform_only in ("escalate", "dispatch", "open", "attach"):
        with pytest.raises(jsonschema.ValidationError, match=platform_only):
            jsonschema.validate({**feedback, "action": platform_only}, schema)


def test_a_metric_name_the_gateway_refuses_is_refused_by_the_payload_schema() -> None:
    """A device team validating its payloads against the published schema meets the refusals
    the gateway makes: a metric named outside the pattern (``Water Level``), in a reading and
    in a pack, was left free by the schema and dead-lettered by the gateway."""
    import jsonschema

    from cityvitals.contracts import ReadingPayload

    reading = {"ts": "2026-12-07T08:00:00Z", "seq": 1, "values": {"water_level_cm": 3}}
    jsonschema.validate(reading, json.loads(render("mqtt.readings")))
    ReadingPayload.model_validate(reading)
    wrong = {**reading, "values": {"Water Level": 3}}
    for name, payload in (("mqtt.readings", wrong), ("mqtt.readings.pack", [reading, wrong])):
        with pytest.raises(jsonschema.ValidationError, match="Water Level"):
            jsonschema.validate(payload, json.loads(render(name)))
    with pytest.raises(ValueError, match="Water Level"):
        ReadingPayload.model_validate(wrong)
