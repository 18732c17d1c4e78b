"""The one settings object: from the environment, and back to it for a child process."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cityvitals.settings import Settings


def test_settings_survive_the_trip_to_a_child_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(
        webhook_urls=("http://127.0.0.1:9000/a", "https://ops.example/hook"),
        webhook_secret="s3cret",
        timezone="Asia/Shanghai",
    )
    env = settings.to_env()
    assert env["CITYVITALS_WEBHOOK_URLS"] == "http://127.0.0.1:9000/a,https://ops.example/hook"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings
    monkeypatch.setenv("CITYVITALS_WEBHOOK_URLS", "")
    assert Settings().webhook_urls == ()


def test_a_webhook_that_is_not_http_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="'ftp://x' is not an http:// or https:// URL"):
        Settings(webhook_urls=("ftp://x",))
