"""What every rule kind's spec shares, as written in a rule file: pure data, validated on load.

The scope, the summary template and the ``for`` / ``keep_firing_for`` timers are described
in :mod:`rules.kinds`. Durations are seconds or strings such as ``90s``, ``15m``, ``2h``, ``1d``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, time, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Self
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cityvitals.contracts import IDENTIFIER, METRIC, Derived, WarningLevel, ZoneName

__all__ = [
    "Bands",
    "Duration",
    "Finite",
    "LevelledRule",
    "Metric",
    "NightHours",
    "PositiveDuration",
    "RuleBase",
    "Summary",
    "clear_before",
    "highest_first",
    "human",
    "levels_ordered",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """``"15m"`` → 15 minutes; numbers are seconds; anything else is left to pydantic.

    >>> parse_duration("1.5h"), parse_duration(90)
    (datetime.timedelta(seconds=5400), datetime.timedelta(seconds=90))
    """
    if isinstance(value, bool):
        return value
    seconds: float | None = None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds is None:
        if isinstance(value, str) and not value.strip().upper().startswith("P"):
            raise ValueError(f"{value!r}: give a duration such as 90s, 15m, 2h or 1d")
        return value
    if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION.total_seconds():
        raise ValueError(f"a duration must be finite and at most {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


MAX_DURATION = timedelta(days=366)


def _within(value: timedelta) -> timedelta:
    if value < timedelta(0) or value > MAX_DURATION:
        raise ValueError(f"must be between 0 and {MAX_DURATION.days} days")
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_within)]
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Finite = Annotated[float, AfterValidator(_finite)]
SUMMARY_FIELDS = dict(
    rule_id="r",
    metric="m",
    value=1.0,
    device_id="d",
    threshold=1.0,
    level="blue",
    place="c/d",
    place_path=("c", "d"),
    evidence="a, b",
    evidence_ids=("a", "b"),
    per="1h",
)


def _summary(template: str) -> str:
    """A summary template must render with the fields an alert has."""
    try:
        template.format(**SUMMARY_FIELDS)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        known = ", ".join(k for k in SUMMARY_FIELDS if k not in ("place_path", "evidence_ids"))
        raise ValueError(f"cannot render {template!r}: {exc!r}; the fields are {known}") from None
    return template


Summary = Annotated[str, Field(max_length=500), AfterValidator(_summary)]
Id = Annotated[str, Field(pattern=IDENTIFIER)]
Metric = Annotated[str, Field(pattern=METRIC)]


class RuleBase(Derived):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: Id
    device_types: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    """Place ids: the rule applies to devices at or under any of them; empty means everywhere."""
    tags: tuple[str, ...] = ()
    for_: Duration = Field(default=timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    summary: Summary = "{rule_id}: {metric} {value:g} at {device_id} ({level})"
    if TYPE_CHECKING:
        kind: str
        """Each kind's spec names itself with a ``Literal`` default (the union's tag)."""

    @model_validator(mode="before")
    @classmethod
    def _night_of_thresholds(cls, data: Any) -> Any:
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind not in (None, "threshold") and "night" in data:
            raise ValueError(f"night: other levels at night are for threshold rules, not {kind}")
        return data

    def in_scope(
        self,
        device_type: str | None,
        profile_id: str | None,
        place_path: tuple[str, ...],
        tags: tuple[str, ...],
    ) -> bool:
        return (
            (not self.device_types or device_type in self.device_types)
            and (not self.profiles or profile_id in self.profiles)
            and (not self.places or any(p in place_path for p in self.places))
            and (not self.tags or any(t in tags for t in self.tags))
        )


_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def _clock(value: Any) -> time:
    """``"22:00"`` as a time of day. YAML reads an unquoted ``22:00`` as the number 1320 (a
    base-60 integer), which would pass for 00:22: refused with what to write instead."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        hours, minutes = divmod(value, 60)  # what YAML made of an unquoted HH:MM
        raise ValueError(
            f"{value}: YAML reads an unquoted {hours}:{minutes:02d} as the number {value}: "
            f"write it in quotes, '{hours:02d}:{minutes:02d}'"
        )
    if not isinstance(value, str):
        raise ValueError(f"{value!r}: give a time of day in quotes, such as '22:00'")
    m = _CLOCK.match(value)
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"{value!r}: give a time of day as HH:MM, 00:00 to 23:59, such as '22:00'")
    return time(int(m.group(1)), int(m.group(2)))


Clock = Annotated[time, BeforeValidator(_clock)]


class NightHours(Derived):
    """The night's hours: from ``starts`` to ``ends`` (past midnight when ``ends`` is the
    earlier), in the local time of ``zone``: the city's (``CITYVITALS_TIMEZONE``, given to the
    file's parse) unless the rule or indicator names one. A threshold rule's night adds
    levels (:class:`rules.kinds.threshold.Night`), an indicator's adds bands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    starts: Clock = time(22)
    ends: Clock = time(6)
    zone: ZoneName = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _citys_zone(cls, data: Any, info: ValidationInfo) -> Any:
        """A night without a zone of its own is read in the zone the rule file is parsed for."""
        if isinstance(data, dict) and "zone" not in data and info.context:
            return {**data, "zone": info.context.get("zone", "UTC")}
        return data

    @model_validator(mode="after")
    def _a_span(self) -> Self:
        if self.starts == self.ends:
            raise ValueError(f"starts and ends are both {self.starts:%H:%M}: a night needs hours")
        return self

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    @cached_property
    def hours(self) -> str:
        """The night as a summary names it: ``22:00-06:00 Asia/Shanghai``."""
        return f"{self.starts:%H:%M}-{self.ends:%H:%M} {self.zone}"

    def covers(self, ts: datetime) -> bool:
        """Whether ``ts`` falls in the night, in its zone's local time."""
        local = ts.astimezone(self.tz).time()
        if self.starts < self.ends:
            return self.starts <= local < self.ends
        return local >= self.starts or local < self.ends


class Bands(NamedTuple):
    """A levelled rule's levels as a value is judged by them."""

    above: bool
    """Whether a value passes a level by being at or above it (else at or below it)."""
    highest_first: tuple[tuple[WarningLevel, float], ...]
    lowest: tuple[WarningLevel, float]
    clear: float | None


class LevelledRule(RuleBase):
    """A value judged against warning levels, with optional hysteresis.

    The highest level the value passes is the alert's level. ``clear`` adds hysteresis: a
    firing alert's condition turns false only once the value is back past ``clear`` (below it
    for ``above`` rules); in the band between ``clear`` and the lowest level it holds at the
    lowest level. Without ``clear`` the condition is false below the lowest level.
    """

    metric: Metric
    direction: Literal["above", "below"] = "above"
    levels: dict[WarningLevel, Finite] = Field(min_length=1)
    clear: Finite | None = None
    stale_after: float | None = Field(default=None, gt=0, le=10_000)
    """Expected reporting intervals without a value of ``metric`` after which the device's
    alert resolves as stale (default: the rule file's ``stale_after``)."""

    @cached_property
    def highest_first(self) -> tuple[tuple[WarningLevel, float], ...]:
        """The levels with their thresholds, highest level first (computed once: a cached
        property is a plain attribute read; a private attribute of a model is not)."""
        return highest_first(self.levels)

    @cached_property
    def lowest(self) -> tuple[WarningLevel, float]:
        return self.highest_first[-1]

    @cached_property
    def bands(self) -> Bands:
        """What a value is judged by, read at every value in one attribute read (four reads
        of a pydantic model's attributes cost about three times one)."""
        return Bands(self.direction == "above", self.highest_first, self.lowest, self.clear)

    @field_validator("levels")
    @classmethod
    def _levels_ordered(
        cls, levels: dict[WarningLevel, float], info: ValidationInfo
    ) -> dict[WarningLevel, float]:
        return levels_ordered(levels, info.data.get("direction", "above") == "above")

    @field_validator("clear")
    @classmethod
    def _clear_before_levels(cls, clear: float | None, info: ValidationInfo) -> float | None:
        levels = info.data.get("levels")
        if clear is None or not levels:
            return clear
        return clear_before(clear, levels, info.data.get("direction", "above") == "above")


def highest_first(levels: dict[WarningLevel, float]) -> tuple[tuple[WarningLevel, float], ...]:
    """Levels with their thresholds, the highest level first."""
    return tuple(sorted(levels.items(), key=lambda item: item[0].rank, reverse=True))


def levels_ordered(levels: dict[WarningLevel, float], above: bool) -> dict[WarningLevel, float]:
    """``levels``, or a ValueError when they do not rise (fall, when not ``above``) strictly
    from blue to red."""
    ordered = [levels[lv] for lv in WarningLevel if lv in levels]
    rising = ordered if above else [-v for v in ordered]
    if rising != sorted(rising) or len(set(rising)) != len(rising):
        word = "increase" if above else "decrease"
        raise ValueError(f"levels must {word} strictly from blue to red, got {ordered}")
    return levels


def clear_before(clear: float, levels: dict[WarningLevel, float], above: bool) -> float:
    """``clear``, or a ValueError when it lies past the lowest of ``levels``."""
    lowest = min(levels.items(), key=lambda item: item[0].rank)[1]
    if (clear > lowest) if above else (clear < lowest):
        raise ValueError(f"clear {clear} must not be past the lowest level {lowest}")
    return clear


def human(td: timedelta) -> str:
    """A duration as a rule file would write it.

    >>> human(timedelta(hours=1)), human(timedelta(seconds=90))
    ('1h', '90s')
    """
    s = td.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s / size:g}{unit}"
    return f"{s:g}s"
