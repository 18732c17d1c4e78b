"""The incident desk: one input in (an alert, an outage, a report, a feedback, a tick), the
incidents' steps, dispatch orders and escalations out. Pure; the book is the only state.

>>> from datetime import UTC, datetime
>>> from rules.incidents.testing import alert, desk_with
>>> desk = desk_with('''
... categories: {flooding: {rules: [waterlogging-*], group_by: street}}
... routes:
...   - {category: flooding, tier: street, department: street-ops}
...   - {category: "*", tier: city, department: city-ops}
... ''')
>>> out = desk.handle(alert("waterlogging-depth", "wl-1", ("sh", "pd", "lj", "g1")))
>>> [(u.transition.action.value, u.incident.state.value) for u in out.updates]
[('open', 'new'), ('dispatch', 'dispatched')]
>>> [(d.department, d.tier.value, d.tier_place_id) for d in out.dispatches]
[('street-ops', 'street', 'lj')]
>>> out = desk.handle(alert("waterlogging-depth", "wl-2", ("sh", "pd", "lj", "g2")))
>>> [(u.transition.action.value, len(u.incident.alerts)) for u in out.updates], out.dispatches
([('attach', 2)], [])
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cityvitals.contracts import (
    Action,
    Alert,
    AlertResolution,
    AlertStatus,
    CitizenReport,
    DispatchKind,
    Feedback,
    Incident,
    IncidentInput,
    IncidentSource,
    IncidentState,
    OutageStatus,
    PlaceOutage,
    Tier,
    WarningLevel,
)
from rules.incidents.book import Tracked, derive_id
from rules.incidents.config import OUTAGE_CATEGORY
from rules.incidents.dispatcher import AT_WORK, PLATFORM, UNSEEN, Dispatcher, Outcome, Refusal
from rules.incidents.lifecycle import Refused, check_feedback
from rules.incidents.routing import Assignment, route, routed_tier, tier_place

__all__ = ["Desk"]
MAX_DEVICES = 50

FEEDBACK_IDS_KEPT = 500
"""The latest feedback ids an incident keeps to count a resent feedback once: its state is
written whole at every step, and a sender of notes must not grow it without end."""


class Desk(Dispatcher):
    """Applies inputs to a :class:`Book` under an :class:`IncidentConfig`."""

    def handle(self, item: IncidentInput) -> Outcome:
        out = Outcome()
        if item.alert is not None:
            self._alert(item.alert, out)
        elif item.outage is not None:
            self._outage(item.outage, out)
        elif item.report is not None:
            self._report(item.report, out)
        elif item.feedback is not None:
            self._feedback(item.feedback, out)
        elif item.tick is not None:
            self.tick(item.tick, out)
        return out

    # -- signals -------------------------------------------------------------------------

    def _alert(self, alert: Alert, out: Outcome) -> None:
        now = self.book.now(alert.ts)
        firing = alert.status is AlertStatus.FIRING
        known = self.book.by_alert.get(alert.alert_id)
        if known is not None:
            t = self.book.incidents[known]
            if alert.alert_id in t.muted:
                out.ignored += 1
                return
            revision, was_firing = t.alerts[alert.alert_id]
            if alert.revision <= revision:
                out.ignored += 1
                return
            t.alerts[alert.alert_id] = (alert.revision, firing)
            began = firing and not was_firing
            reason = self._said(alert, now)  # which alert, and what it measured
            t.firing_said.pop(alert.alert_id, None)  # (the latest said last)
            t.firing_level.pop(alert.alert_id, None)
            if firing:
                t.said = t.firing_said[alert.alert_id] = reason
                t.firing_level[alert.alert_id] = alert.level
            else:  # the latest of those still firing, or that this one ended
                t.said = next(reversed(t.firing_said.values()), reason)
            if self._unmeasured(t, alert):
                assert alert.resolution is not None
                reason = (
                    f"{alert.rule_id} at {alert.device_id} ended {alert.resolution.value}, not "
                    "on a measurement: the sensors do not verify it, an inspector does"
                )
            level = alert.level if firing else None
            self._signal(t, level, now, alert.device_id, out, reason, began=began)
            return
        if not firing:
            out.ignored += 1  # an episode that ended before the desk saw it begin
            return
        if not alert.place_path:
            out.refusals.append(Refusal(alert, f"alert {alert.alert_id} names no place"))
            return
        category = self.config.category_of(alert.rule_id)
        outage = self._outage_above(category, alert.place_path)
        if outage is not None:
            outage.muted.append(alert.alert_id)
            self.book.by_alert[alert.alert_id] = outage.incident.incident_id
            reason = f"alert {alert.rule_id} of {alert.device_id} beneath the outage"
            self._step(outage, Action.ATTACH, now, out, reason=reason, muted=len(outage.muted))
            return
        group = self._group(category, alert.place_path)
        joined = self._join(category, group, now)
        if joined is None:
            # Not the alert's summary: its value and level are the opening's, and the
            # incident's level moves on (the opening step keeps the summary as its reason).
            title = f"{self._title(category)} at {self.named(group[-1])}"
            new = self._open(
                category, group, alert.level, IncidentSource.ALERT, alert.alert_id, now
            )
            new.incident = new.incident.model_copy(update={"title": title[:500]})
            new.alerts[alert.alert_id] = (alert.revision, True)
            new.said = new.firing_said[alert.alert_id] = self._said(alert, now)
            new.firing_level[alert.alert_id] = alert.level
            self.book.put(new)
            self._refresh(new, alert.device_id)
            self._step(new, Action.OPEN, now, out, reason=new.said, new=True)
            self._dispatch(new, now, out)
            return
        joined.alerts[alert.alert_id] = (alert.revision, True)
        joined.said = joined.firing_said[alert.alert_id] = self._said(alert, now)
        joined.firing_level[alert.alert_id] = alert.level
        self.book.by_alert[alert.alert_id] = joined.incident.incident_id
        if joined.incident.category in self.config.category(category).takes_over:
            self._take_over(joined, category, alert.level, now, out, alert.device_id)
        self._signal(joined, alert.level, now, alert.device_id, out, joined.said)

    def _outage(self, outage: PlaceOutage, out: Outcome) -> None:
        now = self.book.now(outage.ts)
        known = self.book.by_outage.get(outage.outage_id)
        if outage.status is OutageStatus.ENDED:
            if known is None:  # its incident, tracked again after a restart, lost the id
                adopted = self._outage_at(outage.place_path)
                if adopted is None or adopted.outage_id is not None:
                    out.ignored += 1
                    return
                adopted.outage_id, known = outage.outage_id, adopted.incident.incident_id
                self.book.by_outage[outage.outage_id] = known
            t = self.book.incidents[known]
            if t.quiet_since is not None:
                out.ignored += 1
                return
            t.quiet_since = now
            total, still = outage.devices_total, outage.devices_silent
            reason = (
                f"{max(0, total - still)} of {total} devices reporting"
                if total
                else "no active device is left under the place (moved away, suspended or retired)"
            )
            if outage.devices:
                named = outage.devices[:5]
                more = f" and {still - len(named)} more" if still > len(named) else ""
                reason += f"; still silent: {', '.join(named)}{more}"
            self._step(t, Action.ATTACH, now, out, reason=f"outage ended: {reason}")
            return
        if known is not None:
            out.ignored += 1
            return
        if not outage.place_path:
            out.refusals.append(Refusal(outage, f"outage {outage.outage_id} names no place"))
            return
        path = outage.place_path
        silent = f"{outage.devices_silent} of {outage.devices_total} devices silent"
        again = self._outage_at(path)
        if again is not None:  # the place out again: one incident, not one per outage
            self.book.by_outage[outage.outage_id] = again.incident.incident_id
            again.outage_id = outage.outage_id
            again.quiet_since = None
            again.last_signal = max(again.last_signal, now)
            again.said = silent
            named = (*again.incident.devices, *outage.devices)
            devices = tuple(dict.fromkeys(named))[:MAX_DEVICES]
            again.incident = again.incident.model_copy(update={"devices": devices})
            if again.incident.state is IncidentState.HANDLED:
                self._reopen(again, now, out, f"outage again after handled: {silent}", again=True)
            else:
                self._step(again, Action.ATTACH, now, out, reason=f"outage again: {silent}")
            return
        level = WarningLevel.YELLOW
        t = self._open(OUTAGE_CATEGORY, path, level, IncidentSource.OUTAGE, outage.outage_id, now)
        title = f"{self._title(OUTAGE_CATEGORY)} at {self.named(outage.place_id)}: {silent}"
        devices = outage.devices[:MAX_DEVICES]  # those to visit
        t.incident = t.incident.model_copy(update={"title": title, "devices": devices})
        t.outage_id = outage.outage_id
        t.said = silent
        self.book.put(t)
        self._step(t, Action.OPEN, now, out, reason=silent, new=True)
        self._dispatch(t, now, out)

    def _report(self, report: CitizenReport, out: Outcome) -> None:
        now = self.book.now(report.reported_at)
        if report.report_id in self.book.by_report:
            out.ignored += 1
            return
        group = self._group(report.category, report.place_path)
        t = self._join(report.category, group, now)
        reason = f"{report.channel.value} report: {report.text}"[:2000]
        snaps = (report.photo_ref,) if report.photo_ref else ()
        if t is None:
            source = IncidentSource.REPORT
            t = self._open(report.category, group, report.level, source, report.report_id, now)
            title = f"{self._title(report.category)} at {self.named(group[-1])}: {report.text}"
            t.incident = t.incident.model_copy(
                update={
                    "title": title[:500],
                    "reports": (report.report_id,),
                    "snapshot_refs": snaps,
                }
            )
            t.said = reason
            self.book.put(t)
            self._step(t, Action.OPEN, now, out, reason=reason, new=True)
            self._dispatch(t, now, out)
            return
        inc = t.incident
        t.incident = inc.model_copy(
            update={
                "reports": (*inc.reports, report.report_id),
                "snapshot_refs": (*inc.snapshot_refs, *snaps)[:20],
            }
        )
        self.book.by_report[report.report_id] = inc.incident_id
        t.said = reason
        if inc.category in self.config.category(report.category).takes_over:
            self._take_over(t, report.category, report.level, now, out)
        self._signal(t, report.level, now, None, out, reason=reason)

    def _signal(
        self,
        t: Tracked,
        level: WarningLevel | None,
        now: datetime,
        device_id: str | None,
        out: Outcome,
        reason: str = "",
        began: bool = True,
    ) -> None:
        """A signal joined ``t`` (``level`` None: one of its alerts resolved); ``began``: an
        alert began firing (a new one, or one that had resolved), not one firing already that
        changed its level."""
        t.last_signal = max(t.last_signal, now)
        state = t.incident.state
        if level is not None and state in _DONE and level.rank > t.peak.rank:
            # worse than the work was done for: it goes out again, at the new level's tier
            self._refresh(t, device_id, level)
            worse = f"{_signal(level)} after {state.value}" + (f": {reason}" if reason else "")
            self._reopen(t, now, out, worse, again=state is IncidentState.HANDLED)
            return
        if level is not None and state in (IncidentState.VERIFIED, IncidentState.CLOSED):
            self._refresh(t, device_id)
            said = reason or level.value
            if began:  # firing again: a flap, or the problem back if it keeps firing
                t.back_since = t.back_since or now
                t.incident = t.incident.model_copy(update={"flaps": t.incident.flaps + 1})
                self._step(t, Action.ATTACH, now, out, reason=f"flap: {said}")
            else:  # one that never stopped firing changed its level: no return
                self._step(t, Action.ATTACH, now, out, reason=f"level change, no return: {said}")
            return
        before = t.peak
        self._refresh(t, device_id, level)
        self._step(t, Action.ATTACH, now, out, reason=reason or _attach_reason(level))
        if t.peak is not before and state in AT_WORK:
            self._rose(t, now, out)

    def _take_over(
        self,
        t: Tracked,
        category: str,
        level: WarningLevel,
        now: datetime,
        out: Outcome,
        device_id: str | None = None,
    ) -> None:
        """A signal of a category that takes over ``t``'s (``takes_over``) joined it: the
        incident is of that category now, its title too, and a note in its timeline says so.
        While it waits for a department to accept it, and no person reassigned it, the
        department the new category routes to (at the incident's level with the signal's)
        takes it over as a reassignment, the one that had it withdrawn. Else the department
        at work keeps it, and the note says where the routing would send it now: a duty
        officer decides (a crew on site at a gas leak may be the one to shut the supply). Once
        a department said it handled the old category's work (or it was verified, closed), the
        new category's is not done: the incident reopens and goes out as the new category's
        order at the lowest tier that handles it (a fire after a handled gas leak)."""
        inc = t.incident
        old, new = self._title(inc.category), self._title(category)
        title = f"{new} at {self.named(t.group_path[-1])}"
        t.incident = inc.model_copy(update={"category": category, "title": title[:500]})
        t.floor = None  # a digest sends it as the new category's routing has it
        higher = level if level.rank > inc.level.rank else inc.level
        note = f"now {new}, was {old}: {t.said}"
        if inc.state in _DONE:  # the work was for the old category: the new one's starts
            self._refresh(t, device_id, higher)
            reason = f"now {new}, was {old}, after {inc.state.value}: {t.said}"
            self._reopen(t, now, out, reason)
            return
        to = route(self.config, category, inc.place_path, higher, exclude=set(t.refused_by))
        other = to is not None and (to.department, to.tier) != (inc.department, inc.tier)
        if other and inc.state is IncidentState.DISPATCHED and t.assigned_by is None:
            assert to is not None
            self._refresh(t, device_id, higher)  # the order at the level, with the device
            self._step(t, Action.NOTE, now, out, reason=note)
            why = f"now {title}, was {inc.title}"
            self._order(t, to, DispatchKind.REASSIGNMENT, now, out, PLATFORM, why)
            return
        if other and inc.state in AT_WORK:
            assert to is not None
            keeps = (
                f"{t.assigned_by} reassigned it there"
                if t.assigned_by is not None
                else "it accepted it"
            )
            note += (
                f"; the routing sends {new} to {to.department} ({to.tier.value} tier), but "
                f"{inc.department} keeps it ({keeps}): reassign it if so"
            )
        self._step(t, Action.NOTE, now, out, reason=note)

    def _said(self, alert: Alert, now: datetime) -> str:
        """What an alert says, as its incident's steps and orders carry it: its summary, and
        when it was measured if that was :data:`LATE` or more before the desk heard of it (a
        night's readings sent in the morning: a crew must not look for last night's noise)."""
        if now - alert.ts < LATE:
            return alert.summary
        return f"{alert.summary} (measured {self.when(alert.ts)})"

    @staticmethod
    def _unmeasured(t: Tracked, alert: Alert) -> bool:
        """Keep in ``t.blind`` whether the sensor behind ``alert`` still says how things are:
        it does once its rule's latest episode there fired or ended on a measurement
        (cleared), not when it ended stale or retired (then True)."""
        key = f"{alert.rule_id}|{alert.device_id}"
        if key in t.blind:
            t.blind.remove(key)
        if alert.resolution in (AlertResolution.STALE, AlertResolution.RETIRED):
            t.blind.append(key)
            return True
        return False

    def _rose(self, t: Tracked, now: datetime, out: Outcome) -> None:
        """The incident's level rose while a department works to its order. Beyond what its
        tier handles (the route's ``up_to``) the incident goes up to the lowest tier that
        does, as an escalation; else the order's limits become the new level's, counted from
        now, where that is sooner, and the department is sent a revision of its order (its
        limits unchanged when the new level's are not sooner: it is told the level all the
        same, its order read the level it was sent at)."""
        inc = t.incident
        assert inc.tier is not None and inc.accept_by is not None and inc.handle_by is not None
        to = route(self.config, inc.category, inc.place_path, inc.level, exclude=set(t.refused_by))
        now_level = f"now {inc.level.value}"
        tiers = list(Tier)
        if to is not None and tiers.index(to.tier) > tiers.index(inc.tier):
            beyond = f"{now_level}, beyond {inc.department} ({inc.tier.value} tier)"
            self._order(t, to, DispatchKind.ESCALATION, now, out, PLATFORM, beyond)
            return
        accept, handle = self.config.limits(inc.tier, inc.level, inc.category)
        accept_by, handle_by = inc.accept_by, min(inc.handle_by, now + handle)
        if inc.state is IncidentState.DISPATCHED:  # not accepted yet: its accepting limit too
            accept_by = min(inc.accept_by, now + accept)
        same = (accept_by, handle_by) == (inc.accept_by, inc.handle_by)
        t.incident = inc.model_copy(update={"accept_by": accept_by, "handle_by": handle_by})
        by = f"handle by {self.when(handle_by)}"
        if inc.state is IncidentState.DISPATCHED:
            by = f"accept by {self.when(accept_by)}, {by}"
        if same:
            by += " (limits unchanged)"
        self._step(t, Action.NOTE, now, out, reason=f"{now_level}: {by}")
        assert inc.dispatch_id is not None
        revision = self._notice(
            t, DispatchKind.REVISION, now, out, f"{now_level}: {by}", revises=inc.dispatch_id
        )
        t.revisions.append(revision.dispatch_id)

    # -- feedback ------------------------------------------------------------------------

    def _feedback(self, fb: Feedback, out: Outcome) -> None:
        now = self.book.now(fb.ts)
        t = self.book.incidents.get(fb.incident_id)
        try:
            if t is None:
                raise Refused(f"no open or recent incident {fb.incident_id}")
            if fb.feedback_id in t.feedback_ids:
                out.ignored += 1
                return
            target = check_feedback(t.incident, fb, t.revisions)
        except Refused as refused:
            out.refusals.append(Refusal(fb, refused.reason))
            return
        t.feedback_ids.append(fb.feedback_id)
        del t.feedback_ids[:-FEEDBACK_IDS_KEPT]
        made = len(out.updates)
        self._apply(t, fb, target, now, out)
        for n, update in enumerate(out.updates[made:], made):  # its steps say whose they are
            step = update.transition.model_copy(update={"feedback_id": fb.feedback_id})
            out.updates[n] = update.model_copy(update={"transition": step})

    def _apply(
        self, t: Tracked, fb: Feedback, target: IncidentState, now: datetime, out: Outcome
    ) -> None:
        actor = fb.actor
        if fb.action is Action.REJECT:
            assert t.incident.department is not None and t.incident.tier is not None
            t.refused_by.append((t.incident.department, t.incident.tier))
            self._step(t, Action.REJECT, now, out, actor=actor, reason=fb.reason, to=target)
            refused = f"rejected by {t.incident.department}" + (
                f": {fb.reason}" if fb.reason else ""
            )
            self._dispatch(t, now, out, kind=DispatchKind.REASSIGNMENT, why=refused)
        elif fb.action is Action.REASSIGN:
            assert fb.department is not None
            inc = t.incident
            # No tier named: where the routing has the department for it, else where it is.
            routed = routed_tier(self.config, fb.department, inc.category, inc.place_path)
            tier = fb.tier or routed or inc.tier or Tier.STREET
            assignment = Assignment(fb.department, tier, tier_place(t.incident.place_path, tier))
            self._order(t, assignment, DispatchKind.REASSIGNMENT, now, out, actor, fb.reason)
        elif fb.action is Action.REOPEN:
            self._reopen(t, now, out, fb.reason, actor)
        else:
            if fb.action is Action.ACKNOWLEDGE and t.incident.acknowledged_by is None:
                # the first to see it stays; a later one is a step of the timeline
                seen = {"acknowledged_by": actor, "acknowledged_at": now}
                t.incident = t.incident.model_copy(update=seen)
            if target is IncidentState.CLOSED:  # before it was handled: the work stops
                self._withdraw(t, now, out, f"closed by {actor}: {fb.reason}")
            self._step(t, fb.action, now, out, actor=actor, reason=fb.reason, to=target)
            if target is IncidentState.VERIFIED:
                self._verified(t, now, out)
            elif target is IncidentState.CLOSED:
                t.closed_at = now

    # -- the clock -----------------------------------------------------------------------

    def tick(self, at: datetime, out: Outcome | None = None) -> Outcome:
        """Limits that ran out, verification by quiet sensors, closing, digests, forgetting."""
        out = out if out is not None else Outcome()
        now = self.book.now(at)
        for t in list(self.book.incidents.values()):
            self._deadlines(t, now, out)
            inc = t.incident
            if self._back(t, now, out):
                continue
            quiet = t.quiet_since is not None and now - t.quiet_since >= self.config.verify.quiet
            # Every alert ended on a measurement (none fell silent): the sensors can verify.
            measured = (bool(t.alerts) or t.outage_id is not None) and not t.blind
            if inc.state is IncidentState.HANDLED and measured and t.firing == 0 and quiet:
                self._step(
                    t, Action.VERIFY, now, out, reason="sensors normal", to=IncidentState.VERIFIED
                )
                self._verified(t, now, out)
            elif inc.state is IncidentState.VERIFIED and t.verified_at is not None:
                if now - t.verified_at >= self.config.verify.close_after:
                    self._close(t, now, out)
            elif inc.state is IncidentState.CLOSED and t.closed_at is not None:
                keep = max(
                    self.config.storm.reopen_after, self.config.category(inc.category).window
                )
                back = t.back_since is not None and t.firing > 0  # may yet reopen: kept
                if now - t.closed_at > keep and not back:
                    self.book.drop(inc.incident_id)
        self._digests(now, out)
        return out

    def _back(self, t: Tracked, now: datetime, out: Outcome) -> bool:
        """Reopen a verified or closed incident whose alerts fire again, and have for
        ``verify.quiet`` (as long as its sensors had to be quiet to verify it): the problem is
        back, not a sensor flapping, and goes out afresh. True when it reopened."""
        state, waited = t.incident.state, self.config.verify.quiet
        if t.back_since is None or not t.firing or now - t.back_since < waited:
            return False
        minutes = max(1, round(waited.total_seconds() / 60))
        reason = f"firing again for {minutes} min after {state.value}: {t.said}"
        self._reopen(t, now, out, reason)
        return True

    # -- helpers -------------------------------------------------------------------------

    def _open(
        self,
        category: str,
        group: tuple[str, ...],
        level: WarningLevel,
        source: IncidentSource,
        first_signal: str,
        now: datetime,
    ) -> Tracked:
        incident = Incident(
            incident_id=derive_id(category, group, first_signal),
            revision=0,
            category=category,
            state=IncidentState.NEW,
            level=level,
            source=source,
            place_id=group[-1],
            place_path=group,
            title=self._title(category),
            opened_at=now,
            updated_at=now,
        )
        return Tracked(incident=incident, group_path=group, peak=level, last_signal=now)

    def _join(self, category: str, group: tuple[str, ...], now: datetime) -> Tracked | None:
        """The incident a new signal of ``category`` at ``group`` joins, if any: an incident of
        the same category, else of a related one, at the same place, within the window; an
        incident closed within ``reopen_after`` takes it too (as a flap or to reopen)."""
        related = self.config.category(category).related
        candidates = []
        for t in self.book.incidents.values():
            inc = t.incident
            if t.group_path != group or t.outage_id is not None:
                continue
            if inc.category not in (category, *related):
                continue
            if inc.state is IncidentState.CLOSED:
                assert t.closed_at is not None
                if now - t.closed_at > self.config.storm.reopen_after:
                    continue
            elif now - t.last_signal > self.config.category(inc.category).window:
                continue
            candidates.append(t)
        if not candidates:
            return None
        return max(candidates, key=lambda t: (t.incident.category == category, t.last_signal))

    def _outage_at(self, place_path: tuple[str, ...]) -> Tracked | None:
        """The incident of an outage at ``place_path`` not yet verified or closed, if any: a
        place out again joins it, the one tracked again after a restart (which knows no
        outage id any more) too."""
        for t in self.book.incidents.values():
            if (
                t.incident.source is IncidentSource.OUTAGE
                and t.group_path == place_path
                and t.incident.state not in (IncidentState.VERIFIED, IncidentState.CLOSED)
            ):
                return t
        return None

    def _outage_above(self, category: str, place_path: tuple[str, ...]) -> Tracked | None:
        if category not in self.config.outage.mutes:
            return None
        for outage_incident_id in self.book.by_outage.values():
            t = self.book.incidents[outage_incident_id]
            if t.quiet_since is None and place_path[: len(t.group_path)] == t.group_path:
                return t
        return None

    def _group(self, category: str, place_path: tuple[str, ...]) -> tuple[str, ...]:
        depth = self.config.category(category).group_by.depth
        return place_path[: depth + 1]

    def _title(self, category: str) -> str:
        return self.config.category(category).title or category.replace("_", " ")

    def _refresh(
        self, t: Tracked, device_id: str | None, level: WarningLevel | None = None
    ) -> None:
        """Recount the open alerts; raise the level and note the device."""
        inc = t.incident
        devices = inc.devices
        if device_id is not None and device_id not in devices and len(devices) < MAX_DEVICES:
            devices = (*devices, device_id)
        if level is not None and level.rank > t.peak.rank:
            t.peak = level
        firing = t.firing
        if firing:
            t.quiet_since = None
        else:
            t.back_since = None  # a flap that ended
            if t.quiet_since is None:
                t.quiet_since = t.last_signal
        t.incident = inc.model_copy(
            update={
                "alerts": tuple(t.alerts),
                "open_alerts": firing,
                "devices": devices,
                "level": t.peak,
            }
        )

    def _reopen(
        self,
        t: Tracked,
        now: datetime,
        out: Outcome,
        reason: str,
        actor: str = PLATFORM,
        again: bool = False,
    ) -> None:
        """Reopen ``t`` and dispatch it. ``again``: the work it was handled for goes on (a
        worse signal before verification), so the departments that refused it stay skipped
        and it goes to no tier below the one that handled it (an escalation or a person's
        reassignment had sent it there); else it starts afresh, at the lowest tier."""
        floor = t.incident.tier if again else None
        if not again:
            t.refused_by = []
        t.verified_at = t.closed_at = t.back_since = None
        t.incident = t.incident.model_copy(update=UNSEEN)
        self._step(t, Action.REOPEN, now, out, actor=actor, reason=reason, to=IncidentState.NEW)
        self._dispatch(t, now, out, at_least=floor, why=f"reopened: {reason}")

    def _verified(self, t: Tracked, now: datetime, out: Outcome) -> None:
        t.verified_at = now
        if self.config.verify.close_after.total_seconds() == 0:
            self._close(t, now, out)

    def _close(self, t: Tracked, now: datetime, out: Outcome) -> None:
        t.closed_at = now
        self._step(t, Action.CLOSE, now, out, reason="verified", to=IncidentState.CLOSED)


_DONE = (IncidentState.HANDLED, IncidentState.VERIFIED, IncidentState.CLOSED)
"""The states after a department said it handled the incident: a signal above its peak level
reopens it."""

LATE = timedelta(minutes=10)
"""An alert heard of this long after it was measured says when it was measured."""


def _attach_reason(level: WarningLevel | None) -> str:
    return "an alert resolved" if level is None else f"{_signal(level)} joined"


def _signal(level: WarningLevel) -> str:
    """A signal of ``level``, in words.

    >>> _signal(WarningLevel.ORANGE), _signal(WarningLevel.RED)
    ('an orange signal', 'a red signal')
    """
    return f"{'an' if level.value[0] in 'aeiou' else 'a'} {level.value} signal"
