"""A value against a levelled rule's levels: the judgement threshold, rate and anomaly rules
share, made once per rule at every reading. Compiled (``[tool.cityvitals] compiled``): a
module of functions alone (a compiled module's pydantic classes would be native ones)."""

from __future__ import annotations

from rules.kinds.base import Judgement
from rules.kinds.spec import Bands, LevelledRule

__all__ = ["judge_bands", "judge_levelled"]


def judge_levelled(rule: LevelledRule, value: float, firing: bool, memory: object) -> Judgement:
    """A value against a levelled rule's levels (shared by threshold, rate and anomaly): the
    highest level it passes, else, firing and short of ``clear``, the lowest (see
    :class:`~rules.kinds.spec.LevelledRule`); the condition is false otherwise.

    Made by ``tuple.__new__`` over every field (a judgement is made per rule at every
    reading: calling the class runs its generated ``__new__``, 441 ns against 165).

    >>> from cityvitals.contracts import WarningLevel
    >>> from rules.ruleset import parse_rules
    >>> rule = parse_rules("rules: [{id: r, metric: m, levels: {red: 5}}]").by_id["r"]
    >>> judge_levelled(rule, 7.0, False, None) == Judgement(WarningLevel.RED, 7.0, 5.0, None)
    True
    >>> judge_levelled(rule, 1.0, False, "m") == Judgement(None, 1.0, 5.0, "m")
    True
    >>> held = parse_rules("rules: [{id: r, metric: m, levels: {red: 5}, clear: 3}]").by_id["r"]
    >>> [judge_levelled(held, 4.0, firing, None).level for firing in (True, False)]
    [<WarningLevel.RED: 'red'>, None]

    Held, the value is judged against ``clear`` (it passed that, not the level's threshold),
    and the judgement says why the level holds:

    >>> judged = judge_levelled(held, 4.0, True, None)
    >>> judged.threshold, judged.why
    (3.0, 'held at red until under 3, the all-clear')
    """
    return judge_bands(rule.bands, value, firing, memory)


def judge_bands(bands: Bands, value: float, firing: bool, memory: object) -> Judgement:
    """A value against levels as :func:`judge_levelled` judges it, given the levels themselves
    (a threshold rule's at night are other than by day)."""
    above, highest_first, lowest, clear = bands
    for level, threshold in highest_first:
        if (value >= threshold) if above else (value <= threshold):
            return _make(Judgement, (level, value, threshold, memory, (), "", None))
    if firing and clear is not None and not (value < clear if above else value > clear):
        # inside the hysteresis band: held at the lowest level
        level = lowest[0]
        why = f"held at {level.value} until {'under' if above else 'over'} {clear:g}, the all-clear"
        return _make(Judgement, (level, value, clear, memory, (), why, None))
    return _make(Judgement, (None, value, lowest[1], memory, (), "", None))


_make = tuple.__new__
