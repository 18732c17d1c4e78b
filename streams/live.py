"""The stream's metrics and the rule set in force (re-read when its file changes)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from cityvitals.stage import StageMetrics
from rules import RuleFileError, RuleSet, parse_rules

__all__ = ["STALLED_S", "LiveFile", "LiveRules", "LoopWatch", "StreamMetrics"]

log = logging.getLogger("cityvitals.streams")


class StreamMetrics(StageMetrics):
    """The stage's counters (readings and camera events; refusals by reason; a message that
    does not decode counts as one), plus the rules, devices and indicators."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("streams", registry, "Readings and camera events")
        self.out_of_order = self.counter(
            "out_of_order_total",
            "Readings stored but not judged: not newer than their device's newest, within grace",
        )
        self.backlog = self.counter(
            "backlog_total",
            "Readings and camera events forwarded that the gateway received before this process "
            "started (or that carry no time of receipt): a backlog held on readings.raw across a "
            "restart. The audit leaves them out of its stream-to-database check, whose database "
            "side counts what was received since the stream started",
        )
        self.values_refused = self.counter(
            "values_refused_total",
            "Readings forwarded whose other values were refused (a metric their device's "
            "profile does not list, a value outside its range): a dead letter each, beside "
            "the refusals",
        )
        self.evaluations = self.counter(
            "rule_evaluations_total", "Rule evaluations (one rule judging one value or one tick)"
        )
        self.alerts = self.counter(
            "alert_transitions_total", "Alert transitions emitted", "status", "level"
        )
        self.rules = self.gauge("rules", "Rules in the rule set in force")
        self.rules_version = self.gauge(
            "rules_info",
            "The rule set in force (its version label is a hash of the file)",
            "version",
        )
        self.reload_errors = self.counter(
            "rules_reload_errors_total",
            "Rule file changes refused (the previous rules stay in force)",
        )
        self.devices = self.gauge("devices", "Devices known to this worker")
        self.loop_silent = self.gauge(
            "loop_silent_seconds",
            f"Seconds since the stage's event loop last turned (it turns every second; "
            f"from {STALLED_S:g} s the stage is not ready)",
        )
        self.group_seconds = self.histogram(
            "group_seconds",
            "A group of readings.raw messages: decoding it (decode, with any dead letter "
            "of a message that does not decode), judging its readings (judge: process_batch), "
            "the rest of its work until its outputs, table changes and window partials are "
            "handed to the producer (hand: table reads and writes, encoding, dead letters), "
            "then waiting for Kafka to confirm them (confirm)",
            (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            "phase",
        )
        self.group_size = self.histogram(
            "group_messages",
            "readings.raw messages per group (those that decode)",
            (1, 2, 4, 8, 16, 32, 64, 100),
        )
        self.indicators = self.counter(
            "indicators_total", "Indicator values reported, by quality", "quality"
        )
        where = ("indicator", "place_id", "place_level")
        value_doc = "Latest reported value of a vital sign (city, districts and streets)"
        self.indicator = Gauge("cityvitals_indicator", value_doc, where, registry=registry)
        coverage_doc = "Share of the expected devices behind the latest value of a vital sign"
        self.coverage = Gauge(
            "cityvitals_indicator_coverage", coverage_doc, where, registry=registry
        )


STALLED_S = 30.0
"""How long the stage's event loop may go without turning before the stage says it is not
ready: a loop held by one piece of work takes nothing else (the agents, the clock ticks)."""


class LoopWatch:
    """Whether the stage can do its work: its partitions are assigned and its event loop
    turns. A timer on the loop beats every second; the readiness gauges ask at each scrape,
    in the metrics server's thread, so a stuck loop shows as not ready.

    >>> watch = LoopWatch()
    >>> watch.ready()
    0.0
    >>> watch.assigned = True
    >>> watch.ready()
    1.0
    >>> watch.last -= STALLED_S
    >>> watch.ready(), watch.silent_s() >= STALLED_S
    (0.0, True)
    """

    def __init__(self) -> None:
        self.assigned = False
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def silent_s(self) -> float:
        """Seconds since the loop last turned."""
        return time.monotonic() - self.last

    def ready(self) -> float:
        return 1.0 if self.assigned and self.silent_s() < STALLED_S else 0.0


class Versioned(Protocol):
    @property
    def version(self) -> str: ...


C = TypeVar("C", bound=Versioned)


class LiveFile(Generic[C]):
    """A configuration in force (``what``: "rule file", "incident file"), re-read from its
    file when the file changes.

    A file that no longer parses is refused with every problem logged and counted in
    ``errors``; the configuration in force stays. Without a file (the shipped one) nothing
    reloads.
    """

    def __init__(
        self,
        what: str,
        current: C,
        path: Path | None,
        parse: Callable[[str, str], C],
        errors: Counter,
    ) -> None:
        self.what = what
        self.current = current
        self.path = path
        self.parse = parse
        self.errors = errors
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def check(self) -> bool:
        """Reload if the file changed; True if a new configuration is in force."""
        stamp = self._stamp()
        if self.path is None or stamp is None or stamp == self._seen:
            return False
        self._seen = stamp
        keeping = f"keeping version {self.current.version}"
        try:
            new = self.parse(self.path.read_text(), str(self.path))
        except (OSError, UnicodeDecodeError) as exc:
            log.error("%s %s unreadable, %s: %s", self.what, self.path, keeping, exc)
            self.errors.inc()
            return False
        except RuleFileError as exc:
            log.error("%s refused, %s:\n%s", self.what, keeping, exc)
            self.errors.inc()
            return False
        except Exception:  # a reload must never stop the stream: keep the one in force
            log.exception("%s refused, %s", self.what, keeping)
            self.errors.inc()
            return False
        if new.version == self.current.version:
            return False
        log.info("%s reloaded: version %s → %s", self.what, self.current.version, new.version)
        self.current = new
        return True


class LiveRules(LiveFile[RuleSet]):
    """The rule set in force, re-read from its file when the file changes (:class:`LiveFile`)."""

    def __init__(self, rules: RuleSet, path: Path | None, metrics: StreamMetrics) -> None:
        parse = functools.partial(parse_rules, zone=rules.zone)  # the city's, as at start
        super().__init__("rule file", rules, path, parse, metrics.reload_errors)
        self.metrics = metrics
        self._show()
        if path is None:
            log.info(
                "rules: the shipped defaults, version %s; they do not reload (name a copy of "
                "them, 'cityvitals rules defaults', in CITYVITALS_RULES_FILE to change rules)",
                rules.version,
            )
        else:
            log.info(
                "rules: %s, version %s (rules in it: %d); a change to the file is reloaded "
                "(checked every CITYVITALS_RULES_RELOAD_S)",
                path,
                rules.version,
                len(rules),
            )

    def _show(self) -> None:
        self.metrics.rules.set(len(self.current))
        self.metrics.rules_version.clear()
        self.metrics.rules_version.labels(self.current.version).set(1)

    def check(self) -> bool:
        """Reload if the file changed; True if new rules are in force."""
        if not super().check():
            return False
        log.info("rules in force: %d", len(self.current))
        self._show()
        return True
