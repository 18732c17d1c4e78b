"""Pure alerting rules: state in, state and alert transitions out. No I/O, no Kafka, no Faust.

The same functions run in the stream processor, in a backtest and in unit tests.
"""

from rules.ruleset import RuleFileError, RuleProblem, RuleSet, parse_rules
from rules.threshold import (
    Observation,
    ThresholdRule,
    ThresholdState,
    alert_id,
    evaluate,
    observations,
)

__all__ = [
    "Observation",
    "RuleFileError",
    "RuleProblem",
    "RuleSet",
    "ThresholdRule",
    "ThresholdState",
    "alert_id",
    "evaluate",
    "observations",
    "parse_rules",
]
