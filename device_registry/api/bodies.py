"""Request and response bodies, and the error answers each route documents."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from cityvitals.contracts import IDENTIFIER, MAX_TAGS, METRIC, Device, DeviceState, Tag
from device_registry.importing import split_place_path


def _distinct(path: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(path)) != len(path):
        raise ValueError("a place id may appear only once in a path")
    return path


def _joined(value: Any) -> Any:
    """A path given as one ``/``-joined text (as ``devices import`` takes it), split.

    >>> _joined("sh/sh-pd/lj"), _joined(["sh"])
    (('sh', 'sh-pd', 'lj'), ['sh'])
    """
    return split_place_path(value) if isinstance(value, str) else value


Id = Annotated[str, Field(pattern=IDENTIFIER)]
Text = Annotated[str, Field(pattern=r"^[^\x00]*$")]
"""Free text; PostgreSQL cannot store NUL characters."""
_PathList = Annotated[
    list[Id], Field(min_length=1, max_length=5, json_schema_extra={"uniqueItems": True})
]
_PathText = Annotated[str, Field(pattern=r"^/?[A-Za-z0-9][A-Za-z0-9_.:/-]*$", max_length=650)]
PlacePath = Annotated[
    tuple[Id, ...],
    Field(min_length=1, max_length=5),
    AfterValidator(_distinct),
    BeforeValidator(_joined, json_schema_input_type=_PathList | _PathText),
]
"""Place ids from the city down: a list, or one ``/``-joined text ("sh/sh-pd/lj")."""
Lat = Annotated[StrictFloat | None, Field(ge=-90, le=90)]
Lon = Annotated[StrictFloat | None, Field(ge=-180, le=180)]
"""Strict: a JSON ``true`` is not a coordinate (nor any other number in a request)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceCreate(_Body):
    """A device to register; ``place_path`` lists place ids from the city down."""

    device_id: Id
    device_type: Id
    place_path: PlacePath
    profile_id: Id | None = None
    state: DeviceState = DeviceState.ACTIVE
    department: Annotated[Text, Field(max_length=100)] | None = None
    tags: Annotated[tuple[Tag, ...], Field(max_length=MAX_TAGS)] = ()
    lat: Lat = None
    lon: Lon = None


class DevicePatch(_Body):
    """The fields to change; the others stay as they are (``null`` clears an optional one)."""

    device_type: Id | SkipJsonSchema[None] = None
    profile_id: Id | None = None
    department: Annotated[Text, Field(max_length=100)] | None = None
    tags: Annotated[tuple[Tag, ...], Field(max_length=MAX_TAGS)] | SkipJsonSchema[None] = None
    lat: Lat = None
    lon: Lon = None


class DeviceMove(_Body):
    place_path: PlacePath
    lat: Lat = None
    """Its new latitude, with ``lon``; without both, it keeps its coordinates."""
    lon: Lon = None

    @model_validator(mode="after")
    def _both(self) -> DeviceMove:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon go together: give both, or neither to keep the old")
        return self

    @property
    def location(self) -> tuple[float, float] | None:
        return None if self.lat is None or self.lon is None else (self.lat, self.lon)


NOTES = (
    "What the registration did or may not mean, as the command line notes it: places the "
    "paths created (named by their ids: a misspelt id makes a new street), departments the "
    "registry does not know, devices with no profile, device types no rule or indicator names"
)


class Onboarded(BaseModel):
    """A registered device and its MQTT login. The secret is shown only here, once."""

    device: Device
    mqtt_username: str
    mqtt_secret: str
    notes: list[str] = Field(default=[], description=NOTES)


class Credential(BaseModel):
    device_id: str
    mqtt_username: str
    mqtt_secret: str


class RefusedRow(BaseModel):
    line: int = Field(description="CSV line (the header is line 1) or JSON item (from 1)")
    unit: Literal["line", "item"] = Field(
        description="what ``line`` counts: CSV lines or JSON items"
    )
    field: str
    message: str


class ImportResult(BaseModel):
    """Devices added (with their secrets, shown once), every refused row, and notes on the
    devices added."""

    added: list[Credential]
    updated: list[str] = Field(
        default=[], description="devices already registered that the import changed (update)"
    )
    errors: list[RefusedRow]
    notes: list[str] = Field(default=[], description=NOTES)


class PlaceBody(_Body):
    """A place under its parent; its level is one below the parent's (a city has none)."""

    name: Annotated[Text, Field(min_length=1, max_length=200)]
    parent_id: Id | None = None
    lat: Lat = None
    lon: Lon = None


class PlaceMove(_Body):
    parent_id: Id
    with_open: bool = False
    """Move it even with incidents not closed or alerts firing under it (they stay at the old
    path); without it such a move is refused, naming them."""


class MetricSpecBody(_Body):
    unit: Annotated[Text, Field(min_length=1, max_length=32)]
    min: Annotated[StrictFloat, Field(allow_inf_nan=False)] | None = None
    max: Annotated[StrictFloat, Field(allow_inf_nan=False)] | None = Field(
        default=None, description="above min"
    )


class ProfileBody(_Body):
    device_type: Id
    description: Annotated[Text, Field(max_length=500)] = ""
    metrics: dict[Annotated[str, Field(pattern=METRIC)], MetricSpecBody] = Field(
        default_factory=dict, max_length=64, json_schema_extra={"additionalProperties": False}
    )
    expected_interval_s: StrictFloat = Field(gt=0, le=7 * 24 * 3600)


class DepartmentBody(_Body):
    name: Annotated[Text, Field(min_length=1, max_length=200)]


class ExportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


class Problem(BaseModel):
    detail: str


class FieldProblem(BaseModel):
    detail: list[dict[str, Any]]


RETRY_LATER: dict[int | str, dict[str, Any]] = {
    503: {
        "model": Problem,
        "description": "Kafka or the database is unavailable, or the registry is busy",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    }
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "unknown id"}}
BAD_INPUT: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body cannot be parsed"},
    422: {"model": FieldProblem, "description": "a field is refused; `loc` names it"},
}
REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": FieldProblem, "description": "the id or the place is taken"},
    **BAD_INPUT,
}
