"""Webhooks: dispatch orders and escalations POSTed, signed, to a city's gateways.

The core of the notifier (:mod:`sinks.notifier` runs it on Kafka): what is sent for a message
(:func:`notice`), how it is signed (:func:`signature_header`, and :func:`verify_signature` for
receivers), which answers are worth another try (:func:`verdict`), how long to wait before it
(:func:`backoff_s`), and one delivery to one URL with its tries (:func:`deliver`).

Each POST carries the message's JSON and three headers:

- ``X-Cityvitals-Event``: ``dispatch`` or ``escalation``;
- ``X-Cityvitals-Delivery``: the same on every try and every replay of one message (a dispatch
  order's ``dispatch_id``, a hash of an escalation's incident and time), so a receiver drops
  what it has already seen;
- ``X-Cityvitals-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with
  the shared secret, signed anew at each try.

A 2xx answer delivers. A connection error, a timeout, 408, 429 and 5xx are tried again after
``webhook_backoff_s``, doubled each time up to ``webhook_backoff_max_s``, until
``webhook_retry_for_s`` has passed since the first try (a receiver's outage is waited out);
any other answer (3xx, 4xx) ends the delivery at once.

>>> verdict(204), verdict(503), verdict(None), verdict(404)
(<Verdict.DELIVERED: 'delivered'>, <Verdict.RETRY: 'retry'>, <Verdict.RETRY: 'retry'>, <Verdict.FAIL: 'fail'>)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from http.client import HTTPException

from cityvitals.contracts import DispatchOrder, Escalation
from cityvitals.settings import Settings, public_url
from cityvitals.topics import Topic

__all__ = [
    "DELIVERY_HEADER",
    "EVENTS",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "Delivery",
    "Failed",
    "Notice",
    "Post",
    "Verdict",
    "backoff_s",
    "deliver",
    "deliver_as",
    "duration",
    "http_post",
    "notice",
    "public_url",
    "signature_header",
    "verdict",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Cityvitals-Signature"
EVENT_HEADER = "X-Cityvitals-Event"
DELIVERY_HEADER = "X-Cityvitals-Delivery"

EVENTS: Mapping[Topic, str] = {Topic.DISPATCH: "dispatch", Topic.ESCALATIONS: "escalation"}
"""The topics the notifier follows and the event name each message is sent as."""

RETRIED_STATUSES = frozenset({408, 429})
"""Besides every 5xx: the answers that say "not now" rather than "never"."""

Post = Callable[[str, bytes, Mapping[str, str], float], tuple[int, str]]
"""``post(url, body, headers, timeout_s)``: the HTTP status of one POST and, for an error
status, the start of the receiver's answer (what it says is wrong). Raises ``OSError``
(connection refused, timeout, ...) or ``http.client.HTTPException`` when no answer came."""

ANSWER_CHARS = 200
"""How much of a receiver's error answer a dead letter keeps."""


# --- what is sent ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice:
    """One message as it is sent: its event name, delivery id and body."""

    event: str
    delivery_id: str
    body: bytes


def notice(topic: Topic, value: bytes) -> Notice:
    """The notice of a message of ``dispatch`` or ``escalations``; raises pydantic's
    ``ValidationError`` when the bytes are not that topic's contract.

    >>> n = notice(Topic.ESCALATIONS, (
    ...     b'{"incident_id": "' + b"a" * 32 + b'", "from_tier": "street", "to_tier": "district",'
    ...     b' "department": "water", "breach": "accept", "deadline": "2026-05-01T10:00:00Z",'
    ...     b' "ts": "2026-05-01T10:00:05Z"}'))
    >>> n.event, len(n.delivery_id), n.delivery_id == notice(Topic.ESCALATIONS, n.body).delivery_id
    ('escalation', 32, True)
    """
    if topic is Topic.DISPATCH:
        order = DispatchOrder.model_validate_json(value)
        return Notice(EVENTS[topic], order.dispatch_id, order.model_dump_json().encode())
    if topic is Topic.ESCALATIONS:
        escalation = Escalation.model_validate_json(value)
        key = f"{escalation.incident_id}|{escalation.ts.isoformat()}"
        delivery_id = hashlib.sha256(key.encode()).hexdigest()[:32]
        return Notice(EVENTS[topic], delivery_id, escalation.model_dump_json().encode())
    raise ValueError(f"the notifier sends nothing for topic {topic.value!r}")


# --- signatures -----------------------------------------------------------------------------


def _mac(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, t: int) -> str:
    """The ``X-Cityvitals-Signature`` value of ``body`` sent at unix time ``t``.

    >>> signature_header("k", b"{}", 1700000000)[:16]
    't=1700000000,v1='
    """
    return f"t={t},v1={_mac(secret, t, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, tolerance_s: float, now: float | None = None
) -> bool:
    """Whether ``header`` (an ``X-Cityvitals-Signature`` value) signs exactly ``body`` with
    ``secret``, at a time no further than ``tolerance_s`` seconds from ``now`` (default: the
    clock). For receivers: verify the raw body before parsing it, then drop a delivery id
    already seen. Any ``v1`` in the header may match (a sender rotating its secret signs twice).

    >>> body = b'{"dispatch_id": "..."}'
    >>> header = signature_header("s3cret", body, 1700000000)
    >>> verify_signature("s3cret", header, body, 300, now=1700000060)
    True
    >>> verify_signature("s3cret", header, body + b" ", 300, now=1700000060)  # body changed
    False
    >>> verify_signature("other", header, body, 300, now=1700000060)  # wrong secret
    False
    >>> verify_signature("s3cret", header, body, 300, now=1700000301)  # too old: a replay
    False
    >>> verify_signature("s3cret", "v1=abc", body, 300, now=1700000060)  # no time
    False
    """
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1":
            macs.append(value)
    if t is None or not macs:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = _mac(secret, t, body)
    return any(hmac.compare_digest(expected, mac) for mac in macs)


# --- tries ----------------------------------------------------------------------------------


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAIL = "fail"


def verdict(status: int | None) -> Verdict:
    """What an answer means: ``status`` is the HTTP status, ``None`` when none came
    (connection error or timeout). 2xx delivers; 408, 429, 5xx and no answer are worth another
    try; the rest (3xx: a redirect is not followed, 4xx: the receiver refuses) are final."""
    if status is None or status in RETRIED_STATUSES or 500 <= status <= 599:
        return Verdict.RETRY
    if 200 <= status <= 299:
        return Verdict.DELIVERED
    return Verdict.FAIL


def backoff_s(attempt: int, first_s: float, max_s: float) -> float:
    """The wait after try number ``attempt`` (from 1): ``first_s`` doubled per try, at most
    ``max_s``.

    >>> [backoff_s(n, 1.0, 10.0) for n in range(1, 7)]
    [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    """
    return min(max_s, first_s * 2.0 ** min(attempt - 1, 64))


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one delivery to one URL ended, after ``attempts`` tries over ``seconds``: the last
    status, or the last error when no answer came."""

    url: str
    attempts: int
    status: int | None
    error: str | None = None
    seconds: float = 0.0
    answer: str = ""
    """The start of the receiver's last error answer (its body), if it gave one."""

    @property
    def delivered(self) -> bool:
        return verdict(self.status) is Verdict.DELIVERED and self.error is None

    def reason(self) -> str:
        """Why it failed, for the dead letter.

        >>> Delivery("http://127.0.0.1:9/x?k=1", 1, 400).reason()
        'webhook http://127.0.0.1:9/x: HTTP 400 after 1 attempt'
        >>> Delivery("http://127.0.0.1:9/x", 700, 503, seconds=21_600.4).reason()
        'webhook http://127.0.0.1:9/x: HTTP 503 after 700 attempts over 6 h'
        >>> Delivery("http://127.0.0.1:9/x", 1, 400, answer="  no field: dept ").reason()
        'webhook http://127.0.0.1:9/x: HTTP 400 ("no field: dept") after 1 attempt'
        """
        return f"webhook {public_url(self.url)}: {self.outcome()}"

    def outcome(self) -> str:
        """The last answer and the tries, without the URL (``HTTP 503 after 3 attempts over
        12 s``)."""
        what = f"HTTP {self.status}" if self.error is None else self.error
        said = " ".join(self.answer.split())
        if said and self.error is None:
            what += f' ("{said}")'
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        over = f" over {duration(self.seconds)}" if self.attempts > 1 else ""
        return f"{what} after {tries}{over}"


def duration(seconds: float) -> str:
    """A span in its largest whole unit, as people say it.

    >>> duration(0.4), duration(59.6), duration(125), duration(7_300), duration(90_000)
    ('0 s', '60 s', '2 min', '2 h', '25 h')
    """
    if seconds < 99.5:
        return f"{seconds:.0f} s"
    if seconds < 5_970:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


Failed = Callable[[int, "Delivery"], None]
"""``failed(attempt, delivery)``: told of each try that will be tried again, with how it went
(the notifier counts and logs them while a receiver is down)."""


def deliver(
    url: str,
    message: Notice,
    *,
    secret: str,
    retry_for_s: float,
    timeout_s: float,
    first_backoff_s: float,
    max_backoff_s: float,
    post: Post,
    wait: Callable[[float], bool],
    failed: Failed = lambda _attempt, _delivery: None,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> Delivery | None:
    """POST ``message`` to ``url`` until it is delivered, refused for good, or tries have
    failed for ``retry_for_s`` seconds since the first (the last try starts before then).
    ``wait(seconds)`` sleeps between tries and returns True when the service is stopping: then
    the delivery is abandoned and None returned (the message is neither delivered nor
    dead-lettered, and is sent again after a restart)."""
    began = monotonic()
    attempt = 0
    while True:
        attempt += 1
        t = int(clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "cityvitals-notifier",
            EVENT_HEADER: message.event,
            DELIVERY_HEADER: message.delivery_id,
            SIGNATURE_HEADER: signature_header(secret, message.body, t),
        }
        answer = ""
        try:
            (status, answer), error = post(url, message.body, headers, timeout_s), None
        except (OSError, HTTPException) as exc:
            status, error = None, _describe(exc)
        result = verdict(status)
        delivery = Delivery(url, attempt, status, error, monotonic() - began, answer)
        if result is Verdict.DELIVERED:
            return delivery
        pause = backoff_s(attempt, first_backoff_s, max_backoff_s)
        if result is Verdict.FAIL or delivery.seconds + pause > retry_for_s:
            return delivery
        failed(attempt, delivery)
        if wait(pause):
            return None


def deliver_as(
    settings: Settings,
    url: str,
    message: Notice,
    *,
    post: Post,
    wait: Callable[[float], bool],
    retry_for_s: float | None = None,
    failed: Failed = lambda _attempt, _delivery: None,
) -> Delivery | None:
    """:func:`deliver` with the settings' secret, timeout and backoff (and retry horizon,
    unless ``retry_for_s`` is given)."""
    return deliver(
        url,
        message,
        secret=settings.webhook_secret.get_secret_value(),
        retry_for_s=settings.webhook_retry_for_s if retry_for_s is None else retry_for_s,
        timeout_s=settings.webhook_timeout_s,
        first_backoff_s=settings.webhook_backoff_s,
        max_backoff_s=settings.webhook_backoff_max_s,
        post=post,
        wait=wait,
        failed=failed,
    )


def _describe(exc: BaseException) -> str:
    """An error in a few words: its class and message (a URLError's underlying reason)."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    return f"{type(exc).__name__}: {exc}".strip()


# --- HTTP -----------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect comes back as its 3xx status: a POST is not resent elsewhere."""

    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


# No proxy from the environment: every setting comes from Settings.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def http_post(
    url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
) -> tuple[int, str]:
    """:data:`Post` with the standard library: the status of one POST (an error status too,
    with the start of its answer). A login in the URL (``https://user:secret@host/...``) is
    sent as HTTP basic authentication, the URL without it (the standard library would take it
    for the host)."""
    url, headers = _with_login(url, headers)
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        try:
            said = exc.read(ANSWER_CHARS * 4).decode("utf-8", "replace")[:ANSWER_CHARS]
        except (OSError, HTTPException):
            said = ""
        finally:
            exc.close()
        return int(exc.code), said


def _with_login(url: str, headers: Mapping[str, str]) -> tuple[str, Mapping[str, str]]:
    """The URL without its login, and the headers with it as basic authentication.

    >>> _with_login("http://u%40x:p%3Aw@127.0.0.1:8/h?q=1", {})
    ('http://127.0.0.1:8/h?q=1', {'Authorization': 'Basic dUB4OnA6dw=='})
    >>> _with_login("http://127.0.0.1/h", {"A": "b"})
    ('http://127.0.0.1/h', {'A': 'b'})
    """
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, headers
    login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    host = parts.netloc.rsplit("@", 1)[1]
    bare = urllib.parse.urlunsplit(parts._replace(netloc=host))
    basic = base64.b64encode(login.encode()).decode()
    return bare, {**headers, "Authorization": f"Basic {basic}"}
