"""Rule files: YAML text in, a validated :class:`RuleSet` out, or an error naming file, line, field.

Pure: the caller reads the file and passes its text.

>>> rs = parse_rules('''
... rules:
...   - id: pm25-high
...     metric: pm25
...     levels: {yellow: 115, orange: 150}
... ''', source="city.yaml")
>>> [r.id for r in rs.for_metric("pm25")]
['pm25-high']
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rules.threshold import ThresholdRule

__all__ = ["RuleFileError", "RuleProblem", "RuleSet", "parse_rules"]


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


class _RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[ThresholdRule]


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[ThresholdRule, ...]
    _by_metric: dict[str, tuple[ThresholdRule, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        index: dict[str, list[ThresholdRule]] = defaultdict(list)
        for rule in self.rules:
            index[rule.metric].append(rule)
        self._by_metric.update({m: tuple(rs) for m, rs in index.items()})

    def for_metric(self, metric: str) -> tuple[ThresholdRule, ...]:
        return self._by_metric.get(metric, ())

    def __iter__(self) -> Iterator[ThresholdRule]:
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


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for end in range(len(loc), -1, -1):
        key = tuple(str(p) if not isinstance(p, int) else p for p in loc[:end])
        if key in lines:
            return lines[key]
    return None


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Parse and validate a rule file; raises :class:`RuleFileError` naming every problem."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RuleFileError([RuleProblem(source, line, "", f"not valid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise RuleFileError([RuleProblem(source, 1, "", "expected a mapping with a 'rules' list")])
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _lines(node, (), lines)
    try:
        parsed = _RuleFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(
                p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))
            )
            # Union/enum branches add technical location parts; drop those the file cannot have.
            field_name = ".".join(str(p) for p in loc)
            problems.append(RuleProblem(source, _line_of(loc, lines), field_name, err["msg"]))
        raise RuleFileError(problems) from exc
    seen: dict[str, int] = {}
    problems = []
    for i, rule in enumerate(parsed.rules):
        if rule.id in seen:
            problems.append(
                RuleProblem(
                    source,
                    lines.get(("rules", i)),
                    f"rules.{i}.id",
                    f"duplicate rule id {rule.id!r} (first at rule {seen[rule.id]})",
                )
            )
        seen.setdefault(rule.id, i)
    if problems:
        raise RuleFileError(problems)
    return RuleSet(tuple(parsed.rules))
