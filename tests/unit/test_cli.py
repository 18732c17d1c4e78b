"""``cityvitals`` as a shell runs it (``wiring.cli.main``): how a command ends when a service
does not answer."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cityvitals import db, kafka
from wiring.cli import main

DOWN = db.DatabaseUnavailable("connection refused")


def refuse(error: Exception) -> Callable[..., None]:
    def call(*_args: object, **_kwargs: object) -> None:
        raise error

    return call


@pytest.mark.parametrize(
    "argv",
    [
        ["alerts", "list"],
        ["incidents", "list"],
        ["vitals", "sim"],
        ["maintain"],
        ["devices", "list"],  # the registry's commands end the same way
        ["users", "list"],
    ],
)
def test_a_database_that_does_not_answer_ends_any_command_in_one_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(db, "connect", refuse(DOWN))
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 1
    assert capsys.readouterr().err == f"error: {DOWN}\n"


def test_kafka_that_does_not_answer_ends_the_command_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    down = kafka.KafkaUnavailable("127.0.0.1:9092", "no answer")
    monkeypatch.setattr(kafka, "ensure_topics", refuse(down))
    with pytest.raises(SystemExit) as ended:
        main(["topics"])
    assert ended.value.code == 1
    assert capsys.readouterr().err == "error: Kafka at 127.0.0.1:9092 is unavailable: no answer\n"


def test_an_unexpected_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "connect", refuse(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["alerts", "list"])
