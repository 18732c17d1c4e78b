"""JSON Schema of every topic's messages and of the device payloads, from the contracts."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from cityvitals.contracts import (
    Alert,
    CameraEventPayload,
    CitizenReport,
    DeadLetter,
    Device,
    DeviceLiveness,
    DispatchOrder,
    Escalation,
    Feedback,
    IncidentInput,
    IncidentUpdate,
    Indicator,
    IndicatorBatch,
    PlaceBatch,
    PlaceOutage,
    ReadingBatch,
    ReadingPack,
    ReadingPayload,
)
from cityvitals.topics import Topic

__all__ = ["SCHEMAS", "render", "write_schemas"]

SCHEMAS: dict[str, type[BaseModel]] = {
    f"topic.{Topic.READINGS_RAW.value}": ReadingBatch,
    f"topic.{Topic.READINGS.value}": ReadingBatch,
    f"topic.{Topic.DEVICES.value}": Device,
    f"topic.{Topic.ALERTS.value}": Alert,
    f"topic.{Topic.DEADLETTER.value}": DeadLetter,
    f"topic.{Topic.LIVENESS.value}": DeviceLiveness,
    f"topic.{Topic.OUTAGES.value}": PlaceOutage,
    f"topic.{Topic.PLACE_OBSERVATIONS.value}": PlaceBatch,
    f"topic.{Topic.INDICATOR_PARTIALS.value}": IndicatorBatch,
    f"topic.{Topic.INDICATORS.value}": Indicator,
    f"topic.{Topic.INCIDENT_INPUTS.value}": IncidentInput,
    f"topic.{Topic.INCIDENTS.value}": IncidentUpdate,
    f"topic.{Topic.DISPATCH.value}": DispatchOrder,
    f"topic.{Topic.DISPATCH_FEEDBACK.value}": Feedback,
    f"topic.{Topic.ESCALATIONS.value}": Escalation,
    f"topic.{Topic.REPORTS.value}": CitizenReport,
    "mqtt.readings": ReadingPayload,
    "mqtt.readings.pack": ReadingPack,
    "mqtt.events": CameraEventPayload,
}


DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The JSON Schema draft pydantic writes, named in each file (``$schema``) for validators."""


class _AsStrict(GenerateJsonSchema):
    """Pydantic's schemas, as strict as the contracts: a map whose keys follow a pattern (a
    reading's metric names) takes no other key. Pydantic refuses one; its schema left it
    free, so a payload a schema validator passed was a dead letter."""

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        out = super().dict_schema(schema)
        if "patternProperties" in out:
            out["additionalProperties"] = False
        return out


def render(name: str) -> str:
    schema = SCHEMAS[name].model_json_schema(mode="serialization", schema_generator=_AsStrict)
    schema["$schema"] = DIALECT
    schema["$id"] = f"https://cityvitals.example/schemas/{name}.json"
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMAS:
        path = out / f"{name}.json"
        path.write_text(render(name))
        written.append(path)
    return written
