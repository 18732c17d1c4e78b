"""Settings handed to a child process (``to_env``) come back the same on the other side."""

from __future__ import annotations

import os
from unittest import mock

import pytest
from pydantic import ValidationError

from cityvitals.settings import Settings


@pytest.mark.parametrize(
    "urls", [(), ("http://127.0.0.1:8080/sms",), ("http://a.example/x", "https://b.example/y")]
)
def test_webhook_urls_survive_the_trip_through_the_environment(urls: tuple[str, ...]) -> None:
    settings = Settings(webhook_urls=urls)
    with mock.patch.dict(os.environ, settings.to_env(), clear=True):
        assert Settings().webhook_urls == urls


def test_a_webhook_that_is_not_http_is_refused_by_name() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'ftp://x' is not an http:// or https:// URL"):
        Settings(webhook_urls=("ftp://x",))


def test_heartbeats_more_than_half_a_stall_apart_are_refused_and_0_sends_none() -> None:
    """Heartbeats further apart than half of ``liveness_stall_s`` would make liveness hold
    every device between two of them: refused, naming both settings."""
    with pytest.raises(ValidationError, match="more than half of liveness_stall_s"):
        Settings(liveness_stall_s=3.0, ingest_heartbeat_s=2.0)
    assert Settings(liveness_stall_s=4.0, ingest_heartbeat_s=2.0).ingest_heartbeat_s == 2.0
    assert Settings(ingest_heartbeat_s=0).ingest_heartbeat_s == 0  # the gateway sends none
