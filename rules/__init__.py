"""Pure alerting rules: memory in, memory and alert transitions out. No I/O, no Kafka, no Faust.

The same functions run in the stream processor, in a backtest and in unit tests:
:func:`parse_rules` reads a rule file; :func:`evaluate_device` judges a reading,
:func:`evaluate_place` a composite rule's place, and the sweeps judge silence at a clock tick.
"""

from rules.alerting import AlertState, Transition, alert_id, step
from rules.anomaly import AnomalyParams, AnomalyState
from rules.anomaly import score as anomaly_score
from rules.engine import (
    Arrival,
    DeviceMemory,
    DeviceOutcome,
    Observation,
    PlaceMemory,
    evaluate_device,
    evaluate_place,
    observations,
    sweep_device,
    sweep_place,
    withdraw_device,
)
from rules.kinds import (
    AbsenceRule,
    AnomalyRule,
    CompositeRule,
    Condition,
    RateRule,
    ThresholdRule,
)
from rules.ruleset import RuleFileError, RuleProblem, RuleSet, parse_rules

__all__ = [
    "AbsenceRule",
    "AlertState",
    "AnomalyParams",
    "AnomalyRule",
    "AnomalyState",
    "Arrival",
    "CompositeRule",
    "Condition",
    "DeviceMemory",
    "DeviceOutcome",
    "Observation",
    "PlaceMemory",
    "RateRule",
    "RuleFileError",
    "RuleProblem",
    "RuleSet",
    "ThresholdRule",
    "Transition",
    "alert_id",
    "anomaly_score",
    "evaluate_device",
    "evaluate_place",
    "observations",
    "parse_rules",
    "step",
    "sweep_device",
    "sweep_place",
    "withdraw_device",
]
