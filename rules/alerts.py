"""Alert messages from alert transitions: the summary, what resolved and why.

>>> from rules.ruleset import parse_rules
>>> rule = parse_rules("rules: [{id: fast, kind: rate, metric: m, levels: {red: 5}}]").by_id["fast"]
>>> render_summary(rule, metric="m", value=6.0, threshold=5.0, device_id="d", level="red")
'm changing +6 per 1h at d, past +5 (red)'
>>> render_summary(rule, metric="m", value=5.449191, threshold=5.0, device_id="d", level="red")
'm changing +5.449 per 1h at d, past +5 (red)'
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from cityvitals.contracts import Alert, AlertResolution, AlertStatus, AnomalyWhy
from rules.alerting import AlertState, Transition, resolve
from rules.kinds import REGISTRY, Judgement, RuleBase, human
from rules.observation import Observation

__all__ = ["alert", "render_summary", "retire"]


def render_summary(rule: RuleBase, **values: Any) -> str:
    for name, value in REGISTRY[rule.kind].summary_fields(rule).items():
        values.setdefault(name, value)
    values.setdefault("place", "/".join(values.get("place_path", ())))
    values.setdefault("evidence", ", ".join(values.get("evidence_ids", ())))
    return rule.summary.format(rule_id=rule.id, **values)


def elapsed(td: timedelta) -> str:
    """A time that went by, in its two largest units, for people.

    >>> elapsed(timedelta(seconds=1_128_730)), elapsed(timedelta(minutes=20)), elapsed(timedelta(0))
    ('13 d 1 h', '20 min', '0 s')
    """
    s = int(td.total_seconds())
    parts = ((s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "min"), (s % 60, "s"))
    shown = [f"{n} {unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0 s"


def _now(rule: RuleBase, metric: str, value: float) -> str:
    """What a resolved alert's value is now, in the words of its kind: an absence rule's value
    is the silence it judged, a rate rule's a change per its period, not the metric's value."""
    if rule.kind == "absence":
        return f"{metric} reported again"
    per = getattr(rule, "per", None)
    if rule.kind == "rate" and isinstance(per, timedelta):
        return f"{metric} changing {value:+.4g} per {human(per)}"
    if rule.kind == "anomaly":  # its value is a score, not the metric's (0 read as a power cut)
        return f"{metric} no longer unusual (score {value:.2f})"
    return f"{metric} now {value:g}"


def alert(
    rule: RuleBase,
    tr: Transition,
    ts: datetime,
    obs: Observation,
    judged: Judgement,
    resolution: AlertResolution = AlertResolution.CLEARED,
    silent: timedelta | None = None,
) -> Alert:
    """The alert of a transition; a place rule's alert is at the observation's place."""
    evidence = judged.evidence
    summary = render_summary(
        rule,
        metric=obs.metric,
        value=judged.value,
        device_id=obs.device_id,
        threshold=judged.threshold,
        level=tr.level.value,
        place_path=obs.place_path,
        evidence_ids=evidence,
    )
    if judged.why:
        summary = f"{summary}: {judged.why}"
    resolved = tr.status is AlertStatus.RESOLVED
    if resolved:  # what ended, its peak, and what the value is now (or why there is none)
        of_place = REGISTRY[rule.kind].role == "place"
        where = "/".join(obs.place_path) if evidence or of_place else obs.device_id
        now = _now(rule, obs.metric, judged.value)
        night = getattr(rule, "night", None)
        if night is not None and resolution is AlertResolution.CLEARED:  # by which levels
            which = "night" if night.covers(ts) else "day"
            clear = night.clear if which == "night" else getattr(rule, "clear", None)
            side = "under" if getattr(rule, "direction", "above") == "above" else "over"
            now += f", {side} the {which}'s {'all-clear' if clear is not None else 'levels'}"
        if of_place:  # its value counts the devices whose readings hold a condition
            now = f"devices holding a condition now: {judged.value:g} ({judged.threshold:g} needed)"
        if silent is not None and resolution is AlertResolution.STALE:
            now = f"no {obs.metric} reading for {elapsed(silent)}: stale"
        elif silent is not None:  # the kind's expires_after ran out: no new value came
            now = (
                f"no {obs.metric} for {elapsed(silent)}: its last value ({judged.value:g}) expired"
            )
        # How long, not since when: a summary names no instant, which would be in one zone
        # (the alert's started_at is there for a screen to show in the city's).
        lasted = elapsed(ts - tr.started_at)
        summary = f"resolved: {rule.id} at {where} (peak {tr.peak.value}, after {lasted}); {now}"
    return _message(
        rule.id,
        tr,
        obs,
        (judged.value, judged.threshold),
        ts,
        summary[:500],
        evidence,
        resolution if resolved else None,
        None if resolved else judged.anomaly,
    )


def _message(
    rule_id: str,
    tr: Transition,
    obs: Observation,
    value_threshold: tuple[float, float],
    ts: datetime,
    summary: str,
    evidence: tuple[str, ...],
    resolution: AlertResolution | None,
    anomaly: AnomalyWhy | None = None,
) -> Alert:
    value, threshold = value_threshold
    return Alert(
        alert_id=tr.alert_id,
        revision=tr.revision,
        rule_id=rule_id,
        status=tr.status,
        level=tr.level,
        device_id=obs.device_id,
        metric=obs.metric,
        value=value,
        threshold=threshold,
        place_path=obs.place_path,
        device_type=obs.device_type,
        started_at=tr.started_at,
        ts=ts,
        summary=summary,
        evidence=evidence,
        peak_level=tr.peak,
        resolution=resolution,
        anomaly=anomaly,
    )


def retire(
    states: dict[str, AlertState],
    place_path: tuple[str, ...],
    ts: datetime,
    stale: Callable[[str, AlertState], str | None],
) -> list[Alert]:
    """Drop the states ``stale`` gives a reason for (a rule removed, changed kind, or no longer
    in scope); close their open alerts with that reason."""
    alerts = []
    # Looked over first, without a copy of the states: at every reading, one is seldom stale.
    gone = [(i, reason) for i, s in states.items() if (reason := stale(i, s)) is not None]
    for rule_id, reason in gone:
        state = states.pop(rule_id)
        if state.alert_id is None or state.detail is None:
            continue
        device_id, metric, value, threshold = state.detail
        _, tr = resolve(state)
        where = Observation(device_id, None, place_path, metric, value, ts)
        summary = f"resolved: rule {rule_id!r} {reason} (peak {tr.peak.value})"
        retired = AlertResolution.RETIRED
        alerts.append(_message(rule_id, tr, where, (value, threshold), ts, summary, (), retired))
    return alerts
