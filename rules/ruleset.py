"""Rule files: YAML text in, a validated :class:`RuleSet` out, or an error naming file, line, field.

Pure: the caller reads the file and passes its text.

>>> rs = parse_rules('''
... rules:
...   - id: pm25-high
...     metric: pm25
...     levels: {yellow: 115, orange: 150}
... ''', source="city.yaml")
>>> [j.rule_id for j in rs.by_metric["pm25"]]
['pm25-high']
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

import yaml
from pydantic import ConfigDict, Field, ValidationError, create_model

from cityvitals.problems import in_words
from rules.kinds import REGISTRY, Duration, PositiveDuration, Rule, RuleKind

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_INTERVAL",
    "DEFAULT_STALE_AFTER",
    "KINDS",
    "MAX_VALUES",
    "Judged",
    "RuleFileError",
    "RuleProblem",
    "RuleSet",
    "expanded_values",
    "file_error",
    "line_of",
    "load_yaml",
    "parse_rules",
]

DEFAULT_GRACE = timedelta(minutes=10)
DEFAULT_STALE_AFTER = 4.0
"""A device's value is stale after this many expected reporting intervals without a new one."""
DEFAULT_INTERVAL = timedelta(minutes=5)
"""The expected reporting interval of a device whose profile names none."""
KINDS = tuple(REGISTRY)
"""The names of the registered rule kinds (see :data:`rules.kinds.REGISTRY`)."""


@dataclass(frozen=True)
class RuleProblem:
    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class RuleFileError(ValueError):
    """A rule file is not valid; ``problems`` lists every problem found, each with its line."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


_RuleFile = create_model(
    "_RuleFile",
    __config__=ConfigDict(extra="forbid"),
    grace=(Duration, Field(default=DEFAULT_GRACE, ge=timedelta(0))),
    stale_after=(float, Field(default=DEFAULT_STALE_AFTER, gt=0, le=10_000)),
    default_interval=(PositiveDuration, DEFAULT_INTERVAL),
    rules=(list[Rule], ...),
)
"""A rule file: its settings and its rules, each of a kind in :data:`rules.kinds.REGISTRY`."""


Scope = tuple[str | None, str | None, tuple[str, ...], tuple[str, ...]]
"""What decides whether a rule applies to a device: its type, profile, place path and tags."""

SCOPES_KEPT = 65_536
"""Scopes whose rules a rule set remembers (a bound on memory; forgotten ones are worked out again)."""


class Judged(NamedTuple):
    """A device rule as the engine judges it at every value: what it reads of the rule, read
    once when the file is loaded (an attribute of a rule spec, a pydantic model, costs a
    compiled loop several dictionary look-ups; its kind comes from the registry)."""

    rule_id: str
    rule: Any
    kind: RuleKind[Any]
    filters: bool
    """Whether the kind's ``accepts`` may refuse an observation for this rule
    (:meth:`~rules.kinds.base.RuleKind.filters`; it is not asked otherwise)."""


def _judged(rule: Any) -> Judged:
    """The rule with what the engine reads of it at every value."""
    kind = REGISTRY[rule.kind]
    return Judged(rule.id, rule, kind, kind.filters(rule))


@dataclass(frozen=True)
class RuleSet:
    """A validated rule file, indexed for the stream: rules by metric, by kind and by id.

    ``grace`` is how far behind its device's newest reading a reading may arrive and still
    be stored (see :mod:`rules.engine`); ``version`` names the text it was parsed from.
    ``stale_after`` (expected intervals) and ``default_interval`` say when a silent device's
    value is stale (rules may override ``stale_after``).
    """

    rules: tuple[Any, ...]
    """The rules, each an instance of its kind's spec."""
    grace: timedelta = DEFAULT_GRACE
    version: str = ""
    stale_after: float = DEFAULT_STALE_AFTER
    default_interval: timedelta = DEFAULT_INTERVAL
    zone: str = "UTC"
    """The zone the file was parsed for: where its rules' hours are read (a reload keeps it)."""
    by_id: dict[str, Any] = field(init=False, repr=False, compare=False, default_factory=dict)
    absence: tuple[Judged, ...] = field(init=False, repr=False, compare=False, default=())
    """The rules judged at every reading and clock tick of a device (role ``silence``)."""
    by_metric: dict[str, tuple[Judged, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    """The rules judged at each value of a metric (role ``reading``: threshold, rate,
    anomaly). A field, not a method: read at every value, from compiled code."""
    composite_by_metric: dict[str, tuple[Any, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    """The rules judged on a place's partition (role ``place``) from each metric."""
    scopes: dict[Scope, frozenset[str]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    """What :meth:`scoped` worked out so far, by scope: the engine reads it at every reading
    (from compiled code, a look-up; the method is a Python call) and asks the method only for
    a scope not here yet."""

    def __post_init__(self) -> None:
        device: dict[str, list[Any]] = defaultdict(list)
        composite: dict[str, list[Any]] = defaultdict(list)
        for rule in self.rules:
            self.by_id[rule.id] = rule
            role = REGISTRY[rule.kind].role
            if role == "place":
                for metric in sorted(rule.metrics):
                    composite[metric].append(rule)
            elif role == "reading":
                device[rule.metric].append(rule)
        self.by_metric.update({m: tuple(map(_judged, rs)) for m, rs in device.items()})
        self.composite_by_metric.update({m: tuple(rs) for m, rs in composite.items()})
        absence = tuple(_judged(r) for r in self.rules if REGISTRY[r.kind].role == "silence")
        object.__setattr__(self, "absence", absence)

    def scoped(self, scope: Scope) -> frozenset[str]:
        """The ids of the rules that apply to devices of this scope (type, profile, place
        path, tags), worked out once per scope and kept in :attr:`scopes` (which the engine
        reads at every reading, asking this only for a scope not there)."""
        ids = self.scopes.get(scope)
        if ids is None:
            if len(self.scopes) >= SCOPES_KEPT:
                self.scopes.clear()
            ids = frozenset(r.id for r in self.rules if r.in_scope(*scope))
            self.scopes[scope] = ids
        return ids

    def interval(self, expected_interval_s: float | None) -> timedelta:
        """A device's expected reporting interval: its profile's, else the file's default."""
        if expected_interval_s is None:
            return self.default_interval
        return timedelta(seconds=expected_interval_s)

    def stale_horizon(self, rule: Any, expected_interval_s: float | None) -> timedelta:
        """How long a device's last value of the rule's metric counts, without a new one."""
        own = getattr(rule, "stale_after", None)
        count = own if own is not None else self.stale_after
        return self.interval(expected_interval_s) * count

    def horizon(self, expected_interval_s: float | None = None) -> timedelta:
        """The longest any rule can take to act after a device's last reading: how far a
        backtest runs its clock past the end of its input."""
        longest = timedelta(0)
        for rule in self.rules:
            stale = self.stale_horizon(rule, expected_interval_s)
            wait = REGISTRY[rule.kind].wait(rule, stale, self.grace)
            longest = max(longest, wait + rule.for_ + rule.keep_firing_for)
        return longest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    """Map every path in the YAML document to the line it starts on (1-based)."""
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _lines(value, (*path, key.value), out)
            out[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for end in range(len(loc), -1, -1):
        key = tuple(str(p) if not isinstance(p, int) else p for p in loc[:end])
        if key in lines:
            return lines[key]
    return None


Lines = dict[tuple[Any, ...], int]


def file_error(exc: ValidationError, source: str, lines: Lines) -> RuleFileError:
    """A validation error of a YAML file as a RuleFileError: each problem with its line."""
    return RuleFileError(
        [
            RuleProblem(
                source,
                line_of(tuple(e["loc"]), lines),
                ".".join(str(p) for p in e["loc"]),
                in_words(e),
            )
            for e in exc.errors()
        ]
    )


MAX_VALUES = 100_000
"""The values a rule, indicator or incident file may hold once its aliases are expanded: a
few hundred bytes of nested aliases expand to billions, which reading them walks."""


def expanded_values(node: yaml.Node, sizes: dict[int, int] | None = None) -> int:
    r"""The values ``node`` holds with its aliases expanded, counted without expanding them
    (each node once: an alias is the node it names).

    >>> rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
    ...     f"{n}: &{n} [" + ", ".join([f"*{p}"] * 10) + "]" for p, n in zip("abcdef", "bcdefg")]
    >>> expanded_values(yaml.compose("\n".join(rows)))
    12345685
    """
    sizes = {} if sizes is None else sizes
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(expanded_values(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(expanded_values(k, sizes) + expanded_values(v, sizes) for k, v in node.value)
    sizes[id(node)] = size
    return size


def load_yaml(text: str, source: str, expected: str) -> tuple[dict[str, Any], Lines]:
    """A YAML mapping and the line of every path in it; RuleFileError when it is not one.

    >>> load_yaml("rules: " + "[" * 2000 + "]" * 2000, "deep.yaml", "a 'rules' list")
    Traceback (most recent call last):
    ...
    rules.ruleset.RuleFileError: deep.yaml: nested too deeply to read (lists or mappings inside one another past what the reader follows): a file of rules needs a few levels
    """
    try:
        return _load_yaml(text, source, expected)
    except RecursionError:
        raise RuleFileError(
            [
                RuleProblem(
                    source,
                    None,
                    "",
                    "nested too deeply to read (lists or mappings inside one another past "
                    "what the reader follows): a file of rules needs a few levels",
                )
            ]
        ) from None


def _load_yaml(text: str, source: str, expected: str) -> tuple[dict[str, Any], Lines]:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RuleFileError([RuleProblem(source, line, "", f"not valid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise RuleFileError([RuleProblem(source, 1, "", f"expected a mapping with {expected}")])
    if node is not None and (size := expanded_values(node)) > MAX_VALUES:
        raise RuleFileError(
            [
                RuleProblem(
                    source,
                    1,
                    "",
                    f"its aliases (*name) expand it to {size:,} values, past {MAX_VALUES:,}: "
                    "a file of rules needs far fewer",
                )
            ]
        )
    lines: Lines = {}
    if node is not None:
        _lines(node, (), lines)
    return data, lines


def parse_rules(text: str, source: str = "<rules>", zone: str = "UTC") -> RuleSet:
    """Parse and validate a rule file; raises :class:`RuleFileError` naming every problem.
    ``zone`` (an IANA name: the city's, ``CITYVITALS_TIMEZONE``) is where a rule's hours are
    read (a threshold rule's ``night``) unless the rule names its own."""
    data, lines = load_yaml(text, source, "a 'rules' list")
    items = data.get("rules")
    problems = []
    if isinstance(items, list):  # a rule without a kind is a threshold rule
        data = {**data, "rules": [_with_kind(item) for item in items]}
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            rule_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(rule_id, str) and rule_id in seen:
                problems.append(
                    RuleProblem(
                        source,
                        lines.get(("rules", i, "id")),
                        f"rules.{i}.id",
                        f"duplicate rule id {rule_id!r} (first at rule {seen[rule_id]})",
                    )
                )
            if isinstance(rule_id, str):
                seen.setdefault(rule_id, i)
    try:
        parsed: Any = _RuleFile.model_validate(data, context={"zone": zone})
    except ValidationError as exc:
        errors = exc.errors()
        nested = {_file_loc(e["loc"])[:-1] for e in errors if len(e["loc"]) > 1}
        for err in errors:
            loc = _file_loc(err["loc"])
            if err["type"] == "too_short" and loc in nested:
                continue  # "no items left" only because an item below it was refused
            # Union/enum branches add technical location parts; drop those the file cannot have.
            field_name = ".".join(str(p) for p in loc)
            problems.append(RuleProblem(source, line_of(loc, lines), field_name, in_words(err)))
        problems.sort(key=lambda p: (p.line or 0, p.field))
        raise RuleFileError(problems) from exc
    if problems:
        raise RuleFileError(problems)
    version = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    return RuleSet(
        tuple(parsed.rules),
        parsed.grace,
        version,
        parsed.stale_after,
        parsed.default_interval,
        zone,
    )


def _with_kind(item: Any) -> Any:
    return {"kind": "threshold", **item} if isinstance(item, dict) else item


def _file_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the parts of an error location that the file does not have: the union's kind
    tag after a rule's index, and validator names."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if i == 2 and loc[0] == "rules" and part in KINDS:
            continue
        out.append(part)
    return tuple(out)
