"""The webhook core (:mod:`sinks.webhook`): signatures, which answers are tried again, the
backoff, one delivery with its tries, and the ``notify`` command without URLs. No I/O: the
HTTP POST and the waits are fakes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from cityvitals.contracts import DispatchKind, DispatchOrder, Escalation, Tier, WarningLevel
from cityvitals.settings import Settings
from cityvitals.topics import Topic
from sinks.webhook import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    Notice,
    Verdict,
    backoff_s,
    deliver,
    notice,
    signature_header,
    verdict,
    verify_signature,
)
from wiring.cli import app

T0 = 1_780_000_000
SECRET = "city-secret"


def order(dispatch_id: str = "d" * 32) -> DispatchOrder:
    ts = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    return DispatchOrder(
        dispatch_id=dispatch_id,
        kind=DispatchKind.ORDER,
        incident_id="a" * 32,
        department="street-ops",
        tier=Tier.STREET,
        tier_place_id="s1",
        category="flooding",
        level=WarningLevel.ORANGE,
        place_id="s1",
        place_path=("sh", "pd", "s1"),
        title="Flooding at s1",
        accept_by=ts,
        handle_by=ts,
        ts=ts,
    )


def escalation(ts: datetime) -> Escalation:
    return Escalation(
        incident_id="a" * 32,
        from_tier=Tier.STREET,
        to_tier=Tier.DISTRICT,
        department="water",
        breach="accept",
        deadline=ts,
        ts=ts,
    )


# --- signatures -----------------------------------------------------------------------------


@given(body=st.binary(max_size=2000), secret=st.text(min_size=1, max_size=40))
def test_a_signed_body_verifies_with_its_secret(body: bytes, secret: str) -> None:
    header = signature_header(secret, body, T0)
    assert verify_signature(secret, header, body, 300, now=T0 + 299)


@given(body=st.binary(min_size=1, max_size=500), flip=st.integers(min_value=0))
def test_a_changed_body_does_not_verify(body: bytes, flip: int) -> None:
    header = signature_header(SECRET, body, T0)
    i = flip % len(body)
    tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
    assert not verify_signature(SECRET, header, tampered, 300, now=T0)


def test_a_wrong_secret_a_changed_time_or_an_old_signature_does_not_verify() -> None:
    body = order().model_dump_json().encode()
    header = signature_header(SECRET, body, T0)
    assert verify_signature(SECRET, header, body, 300, now=T0)
    assert not verify_signature("another-secret", header, body, 300, now=T0)
    moved = header.replace(f"t={T0}", f"t={T0 + 1}")  # the same mac, another time
    assert not verify_signature(SECRET, moved, body, 300, now=T0)
    assert not verify_signature(SECRET, header, body, 300, now=T0 + 301)
    assert not verify_signature(SECRET, header, body, 300, now=T0 - 301)


@pytest.mark.parametrize(
    "header", ["", "t=abc,v1=00", f"t={T0}", "v1=00", "garbage", f"t={T0},v1="]
)
def test_a_malformed_header_does_not_verify(header: str) -> None:
    assert not verify_signature(SECRET, header, b"{}", 300, now=T0)


def test_any_of_several_signatures_may_match_while_a_secret_is_rotated() -> None:
    body = b"{}"
    old = signature_header("old", body, T0)
    new = signature_header("new", body, T0).split(",")[1]
    assert verify_signature("new", f"{old},{new}", body, 300, now=T0)
    assert verify_signature("old", f"{old},{new}", body, 300, now=T0)


# --- what is sent ---------------------------------------------------------------------------


def test_a_dispatch_order_is_sent_as_dispatch_with_its_dispatch_id() -> None:
    sent = notice(Topic.DISPATCH, order().model_dump_json().encode())
    assert (sent.event, sent.delivery_id) == ("dispatch", "d" * 32)
    assert DispatchOrder.model_validate_json(sent.body) == order()


def test_an_escalation_s_delivery_id_is_stable_and_differs_by_time() -> None:
    first = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    later = datetime(2026, 5, 1, 11, 0, tzinfo=UTC)
    one = notice(Topic.ESCALATIONS, escalation(first).model_dump_json().encode())
    again = notice(Topic.ESCALATIONS, escalation(first).model_dump_json().encode())
    other = notice(Topic.ESCALATIONS, escalation(later).model_dump_json().encode())
    assert one.event == "escalation"
    assert one.delivery_id == again.delivery_id != other.delivery_id


@pytest.mark.parametrize(
    ("topic", "value"),
    [
        (Topic.DISPATCH, b"not json"),
        (Topic.DISPATCH, b'{"dispatch_id": "x"}'),
        (Topic.ESCALATIONS, order().model_dump_json().encode()),  # a dispatch order
    ],
)
def test_a_message_that_is_not_its_topic_s_contract_is_refused(topic: Topic, value: bytes) -> None:
    with pytest.raises(ValidationError):
        notice(topic, value)


# --- which answers are tried again, and how long to wait ----------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (None, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (599, Verdict.RETRY),
        (301, Verdict.FAIL),
        (307, Verdict.FAIL),
        (400, Verdict.FAIL),
        (401, Verdict.FAIL),
        (403, Verdict.FAIL),
        (404, Verdict.FAIL),
        (410, Verdict.FAIL),
        (422, Verdict.FAIL),
    ],
)
def test_retry_classification(status: int | None, expected: Verdict) -> None:
    assert verdict(status) is expected


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    first=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=1000),
)
def test_the_backoff_never_exceeds_its_cap_and_never_shrinks(
    attempt: int, first: float, cap: float
) -> None:
    wait = backoff_s(attempt, first, cap)
    assert 0 <= wait <= cap
    assert wait <= backoff_s(attempt + 1, first, cap)


def test_the_backoff_doubles_from_the_first_wait() -> None:
    assert [backoff_s(n, 0.5, 100) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


# --- one delivery ---------------------------------------------------------------------------


class FakeServer:
    """Answers with the given statuses in turn (an exception is raised instead), and keeps
    every request."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, bytes, dict[str, str], float]] = []

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, str]:
        self.requests.append((url, body, dict(headers), timeout))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer, ""


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


MESSAGE = Notice("dispatch", "d" * 32, b'{"dispatch_id": "dddd"}')
URL = "http://127.0.0.1:9/hook?token=private"


def send(server: FakeServer, clock: Clock, retry_for_s: float = 60.0) -> Delivery | None:
    return deliver(
        URL,
        MESSAGE,
        secret=SECRET,
        retry_for_s=retry_for_s,
        timeout_s=2.5,
        first_backoff_s=1.0,
        max_backoff_s=3.0,
        post=server,
        wait=clock.wait,
        clock=clock,
        monotonic=clock,
    )


def test_a_delivery_is_retried_on_5xx_with_growing_waits_and_signed_anew_each_try() -> None:
    server, clock = FakeServer(500, 503, 200), Clock()
    result = send(server, clock)
    assert result == Delivery(URL, 3, 200, None, 3.0)
    assert result.delivered
    assert clock.waits == [1.0, 2.0]
    for _url, body, headers, timeout in server.requests:
        assert timeout == 2.5
        assert headers[EVENT_HEADER] == "dispatch"
        assert headers[DELIVERY_HEADER] == "d" * 32  # the same on every try
        assert headers["Content-Type"] == "application/json"
        assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body, 3, now=clock.now)
    times = [h[SIGNATURE_HEADER].split(",")[0] for _u, _b, h, _t in server.requests]
    assert times == [f"t={T0}", f"t={T0 + 1}", f"t={T0 + 3}"]


def test_connection_errors_timeouts_408_and_429_are_retried() -> None:
    server = FakeServer(ConnectionRefusedError("refused"), TimeoutError("timed out"), 408, 429, 204)
    result = send(server, Clock())
    assert result is not None and result.delivered and result.attempts == 5


def test_a_4xx_is_not_retried() -> None:
    server, clock = FakeServer(400, 200), Clock()
    result = send(server, clock)
    assert result == Delivery(URL, 1, 400)
    assert not result.delivered and clock.waits == []
    assert result.reason() == "webhook http://127.0.0.1:9/hook: HTTP 400 after 1 attempt"


def test_a_delivery_gives_up_when_its_time_is_up_with_bounded_waits() -> None:
    server, clock = FakeServer(ConnectionRefusedError(111, "Connection refused")), Clock()
    result = send(server, clock, retry_for_s=10)
    assert result is not None and not result.delivered
    # tries at 0, 1, 3, 6 and 9 s: a sixth would start at 12 s, past the 10 s
    assert result.attempts == 5 and len(server.requests) == 5
    assert clock.waits == [1.0, 2.0, 3.0, 3.0]  # capped at max_backoff_s
    assert result.reason() == (
        "webhook http://127.0.0.1:9/hook: ConnectionRefusedError: [Errno 111] Connection refused"
        " after 5 attempts over 9 s"
    )  # the URL's token is not named


def test_a_delivery_still_failing_with_5xx_names_the_last_status() -> None:
    result = send(FakeServer(502), Clock(), retry_for_s=1.5)
    assert result is not None
    assert result.reason() == "webhook http://127.0.0.1:9/hook: HTTP 502 after 2 attempts over 1 s"


def test_a_receiver_down_for_an_hour_gets_the_message_when_it_is_back() -> None:
    """The outage is waited out (the default gives six hours), each wait at most the cap, and
    each try that failed is told to ``failed`` (the notifier counts and logs them)."""
    clock = Clock()
    back_at = clock.now + 3600

    def server(
        _url: str, _body: bytes, _headers: Mapping[str, str], _timeout: float
    ) -> tuple[int, str]:
        if clock.now < back_at:
            raise ConnectionRefusedError(111, "Connection refused")
        return 200, ""

    told: list[int] = []
    result = deliver(
        URL,
        MESSAGE,
        secret=SECRET,
        retry_for_s=6 * 3600,
        timeout_s=5,
        first_backoff_s=1,
        max_backoff_s=30,
        post=server,
        wait=clock.wait,
        failed=lambda attempt, delivery: told.append(attempt),
        clock=clock,
        monotonic=clock,
    )
    assert result is not None and result.delivered
    assert 3600 <= result.seconds < 3600 + 30
    assert max(clock.waits) == 30
    assert told == list(range(1, result.attempts))


def test_a_stop_during_a_wait_abandons_the_delivery_unsettled() -> None:
    server = FakeServer(500)
    result = deliver(
        URL,
        MESSAGE,
        secret=SECRET,
        retry_for_s=60,
        timeout_s=1,
        first_backoff_s=1,
        max_backoff_s=1,
        post=server,
        wait=lambda _s: True,
    )
    assert result is None and len(server.requests) == 1


# --- the command ----------------------------------------------------------------------------


def test_notify_without_urls_says_so_and_exits_0() -> None:
    result = CliRunner().invoke(app, ["notify"], env={"CITYVITALS_WEBHOOK_URLS": ""})
    assert result.exit_code == 0, result.output
    assert "no webhook URLs configured" in result.output


def test_notify_without_a_secret_refuses_to_start() -> None:
    env = {"CITYVITALS_WEBHOOK_URLS": "http://127.0.0.1:9/hook", "CITYVITALS_WEBHOOK_SECRET": ""}
    result = CliRunner().invoke(app, ["notify"], env=env)
    assert result.exit_code == 1
    assert "CITYVITALS_WEBHOOK_SECRET is empty" in result.output


def test_a_login_in_the_url_is_sent_as_basic_authentication() -> None:
    """The standard library would take ``user:secret@`` for part of the host name (a name
    that never resolves): the login goes in the Authorization header instead."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from sinks.webhook import http_post

    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://ops%40city:s3cr%3At@127.0.0.1:{server.server_port}/hook?x=1"
        assert http_post(url, b"{}", {"Content-Type": "application/json"}, 5.0) == (200, "")
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [("/hook?x=1", "Basic " + base64.b64encode(b"ops@city:s3cr:t").decode())]


def test_two_urls_of_one_receiver_are_refused_naming_neither_key() -> None:
    """The notifier names a receiver, its lane and its dead letters by the URL without its
    login, query or fragment: two URLs that differ only there would be one receiver."""
    with pytest.raises(ValidationError) as raised:
        Settings(webhook_urls=("http://127.0.0.1:9/hook?key=a", "http://u:b@127.0.0.1:9/hook"))
    assert "http://127.0.0.1:9/hook is given twice" in str(raised.value)
