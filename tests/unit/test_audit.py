"""The reconciliation of ``cityvitals audit``: figures in, named gaps out."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wiring.audit import Figures, Hop, Stored, exit_code, hops_from_exposition, reconcile

T = datetime(2026, 12, 1, 8, tzinfo=UTC)


def figures(
    *,
    ingest: Hop | None = None,
    streams: Hop | None = None,
    sinks: Hop | None = None,
    stored: Stored | None = None,
    published: int | None = None,
) -> Figures:
    """A stack that took 10 messages: 2 refused at the gateway, 1 at the stream, 7 stored."""
    hops = {
        "ingest": ingest or Hop(10, 8, {"values": 2}, T),
        "streams": streams or Hop(8, 7, {"unknown": 1}, T),
        "sinks": sinks or Hop(4, 4, {}, T),
    }
    db = stored or Stored(7, 0, {"ingest": 2, "streams": 1}, device_deadletters=3)
    return Figures(hops, db, db, published)


def failing(f: Figures) -> list[str]:
    return [line.detail for line in reconcile(f) if line.ok is False]


def test_a_stack_that_lost_nothing_reconciles() -> None:
    lines = reconcile(figures(published=10))
    assert [line.ok for line in lines] == [True] * len(lines)
    assert exit_code(lines) == 0
    checks = " | ".join(line.check for line in lines)
    for words in ("ingest: received 10", "gateway → stream", "stream → database", "published 10"):
        assert words in checks


def test_a_reading_lost_between_the_stream_and_the_database_is_named() -> None:
    f = figures(stored=Stored(6, 0, {"ingest": 2, "streams": 1}, 3), published=10)
    gaps = failing(f)
    assert (
        gaps[0]
        == "1 forwarded by the stream but not stored (stream → database), beyond 0 out of order"
    )
    assert gaps[1].startswith("1 published but neither stored nor dead-lettered")
    assert exit_code(reconcile(f)) == 1


def test_a_message_the_gateway_neither_forwarded_nor_refused_is_named() -> None:
    gaps = failing(figures(ingest=Hop(11, 8, {"values": 2}, T)))
    assert gaps == ["1 received by ingest neither forwarded nor refused (in ingest)"]


def test_in_flight_at_the_gateway_is_not_a_gap() -> None:
    assert failing(figures(ingest=Hop(11, 8, {"values": 2}, T, in_flight=1))) == []


def test_a_refusal_without_a_stored_dead_letter_is_named() -> None:
    f = figures(stored=Stored(7, 0, {"ingest": 1, "streams": 1}, 2))
    assert "1 refused by ingest but no dead letter stored" in " ".join(failing(f))


def test_readings_the_gateway_forwarded_but_the_stream_never_received_are_named() -> None:
    gaps = failing(figures(streams=Hop(6, 5, {"unknown": 1}, T)))
    assert gaps[0].startswith("2 forwarded by the gateway not received by the stream")


def test_replays_do_not_count_as_loss() -> None:
    # The stream re-read 3 readings (at least once) and forwarded them again; a device sent
    # one twice: stored once each, counted out of order by the stream.
    replayed = Hop(11, 10, {"unknown": 1}, T, out_of_order=3)
    lines = reconcile(figures(streams=replayed, published=10))
    assert exit_code(lines) == 0
    details = " ".join(line.detail for line in lines)
    assert "3 more: replayed at least once, or sent by another producer" in details
    assert "3 duplicates or replays stored once" in details


def test_more_missing_than_out_of_order_is_a_gap() -> None:
    f = figures(streams=Hop(9, 8, {"unknown": 1}, T, out_of_order=0))
    assert failing(f)[0].startswith("1 forwarded by the stream but not stored")


def test_a_restarted_hop_is_skipped_not_called_a_gap() -> None:
    later = T + timedelta(hours=1)
    lines = reconcile(figures(streams=Hop(2, 2, {}, later), published=10))
    skipped = [line for line in lines if line.ok is None]
    assert skipped and all("streams restarted at" in line.detail for line in skipped)
    assert exit_code(lines) == 0


def test_a_process_started_over_10_s_after_the_first_restarted() -> None:
    # A stack starts its services within a second or two.
    def gateway_to_stream(after_s: int) -> bool | None:
        lines = reconcile(figures(streams=Hop(2, 2, {}, T + timedelta(seconds=after_s))))
        (line,) = [line for line in lines if line.check.startswith("gateway → stream")]
        return line.ok

    assert gateway_to_stream(10) is False  # compared: 8 forwarded, 2 received
    assert gateway_to_stream(11) is None


def test_the_incident_stage_s_two_hops_dead_letter_under_its_name() -> None:
    # Its forward refused 1 message, its desk 2 inputs: 3 dead letters of "incidents".
    hops = {"incidents": Hop(5, 4, {"bad_alert": 1}, T)}
    hops["incidents_desk"] = Hop(4, 2, {"refused_feedback": 2}, T)
    hops["sinks"] = Hop(3, 3, {}, T)

    def letters(kept: int) -> list[str]:
        db = Stored(0, 0, {"incidents": kept}, 0)
        lines = reconcile(Figures(hops, db, db))
        return [f"{line.check}: {line.detail}" for line in lines if "dead letters" in line.check]

    assert letters(3)[0] == "dead letters of incidents: refused 3 = stored 3: OK"
    assert letters(2)[0].endswith(
        "1 refused by incidents but no dead letter stored "
        "(incidents → database: in transit or lost)"
    )
    # The desk restarted (its process is the forward's too): skipped.
    hops["incidents_desk"] = Hop(0, 0, {}, T + timedelta(hours=1))
    assert "not comparable: incidents_desk restarted" in letters(3)[0]


def test_a_restarted_stream_is_still_checked_against_the_database_since_its_start() -> None:
    # The stream restarted an hour in: it forwarded 2 since, the database holds 2 received
    # since then (and 7 since the first start, which its counters do not cover).
    later = T + timedelta(hours=1)
    since_first = Stored(7, 0, {"ingest": 2, "streams": 1}, 3)
    hops = {"ingest": Hop(10, 8, {"values": 2}, T), "streams": Hop(2, 2, {}, later)}
    hops["sinks"] = Hop(4, 4, {}, T)

    def checks(since_stream: Stored) -> dict[str, bool | None]:
        lines = reconcile(Figures(hops, since_first, since_first, since_stream=since_stream))
        return {line.check.split(": ")[0]: line.ok for line in lines}

    ok = checks(Stored(2, 0, {}, 0))
    assert ok["stream → database (received since it started at 2026-12-01T09:00:00+00:00)"]
    # What its counters cannot be compared with is still skipped.
    assert ok["gateway → stream"] is None and ok["dead letters of streams"] is None
    assert ok["dead letters of ingest"] is True
    # One of its two not stored is named, not skipped.
    lost = checks(Stored(1, 0, {}, 0))
    assert (
        lost["stream → database (received since it started at 2026-12-01T09:00:00+00:00)"] is False
    )
    # Its start unknown, the database since the first start is all there is: compared with
    # the stream's counters, which cannot say whether they cover it.
    hops["streams"] = Hop(7, 7, {}, None)
    assert checks(Stored(2, 0, {}, 0))["stream → database"] is True


def test_without_the_database_since_the_stream_started_only_its_restart_skips() -> None:
    later = T + timedelta(hours=1)
    lines = reconcile(figures(sinks=Hop(1, 1, {}, later)))
    (line,) = [line for line in lines if line.check.startswith("stream → database")]
    assert line.ok is True
    lines = reconcile(figures(streams=Hop(2, 2, {}, later)))
    (line,) = [line for line in lines if line.check.startswith("stream → database")]
    assert line.ok is None and "streams restarted at" in line.detail


def test_a_restarted_sink_skips_only_its_own_dead_letters() -> None:
    # The sinks restarted: the database keeps what they wrote before, so every check but the
    # sinks' own refusals against their dead letters still holds, and a gap is still named.
    later = T + timedelta(hours=1)
    sinks = Hop(1, 1, {}, later)
    stored = Stored(7, 0, {"ingest": 2, "streams": 1}, 3)
    hops = {"ingest": Hop(10, 8, {"values": 2}, T), "streams": Hop(8, 7, {"unknown": 1}, T)}
    hops["sinks"] = sinks
    lines = reconcile(Figures(hops, stored, stored, published=10, since_stream=stored))
    skipped = [line.check for line in lines if line.ok is None]
    assert skipped == ["dead letters of sinks: refused 0 = stored 0"]
    assert exit_code(lines) == 0
    lost = Stored(6, 0, {"ingest": 1, "streams": 1}, 2)
    gaps = failing(Figures(hops, lost, lost, since_stream=lost))
    assert gaps[0].startswith("1 forwarded by the stream but not stored")
    assert gaps[1].startswith("1 refused by ingest but no dead letter stored")


def test_a_backlog_received_before_the_stream_started_is_left_out_of_both_sides() -> None:
    # The stream forwarded 7 received since it started and 5 received before (held on Kafka
    # across a restart); the database, counting what was received since the stream started,
    # holds the 7.
    streams = Hop(13, 12, {"unknown": 1}, T, backlog=5)
    since_stream = Stored(7, 0, {"ingest": 2, "streams": 1}, 3)
    hops = {"ingest": Hop(10, 8, {"values": 2}, T), "streams": streams, "sinks": Hop(4, 4, {}, T)}
    lines = reconcile(Figures(hops, since_stream, since_stream, since_stream=since_stream))
    (line,) = [line for line in lines if line.check.startswith("stream → database")]
    assert (
        line.check
        == "stream → database: forwarded 7 (less 5 received before it started) = stored 7"
    )
    assert line.ok is True
    # Counted against the database since the stream started, not since the first process.
    since_first = Stored(9, 0, {"ingest": 2, "streams": 1}, 3)
    lines = reconcile(Figures(hops, since_first, since_first, since_stream=since_stream))
    (line,) = [line for line in lines if line.check.startswith("stream → database")]
    assert line.ok is True
    # Without the backlog left out, the same figures would show a gap that is not one.
    plain = Hop(13, 12, {"unknown": 1}, T)
    hops["streams"] = plain
    assert "5 forwarded by the stream but not stored" in " ".join(
        failing(Figures(hops, since_stream, since_stream, since_stream=since_stream))
    )


def test_undecodable_kafka_messages_are_not_readings_the_gateway_sent() -> None:
    streams = Hop(9, 7, {"unknown": 1, "bad_batch": 1}, T, undecodable=1)
    f = figures(streams=streams, stored=Stored(7, 0, {"ingest": 2, "streams": 2}, 3))
    assert failing(f) == []


def test_the_sinks_conflicts_are_dead_letters_beside_their_refusals() -> None:
    """A reading whose key was stored with another value: its message was forwarded, its
    dead letter is the sinks' own, and it is a dead letter of what a device published."""
    sinks = hops_from_exposition(
        "cityvitals_sinks_received_total 5.0\n"
        "cityvitals_sinks_forwarded_total 5.0\n"
        "cityvitals_sinks_conflicts_total 1.0\n"
    )["sinks"]
    assert (sinks.received, sinks.forwarded, sinks.refused, sinks.conflicts) == (5, 5, 0, 1)
    lost = Stored(7, 0, {"ingest": 2, "streams": 1}, device_deadletters=3)
    assert failing(figures(sinks=sinks, stored=lost)) == [
        "1 refused by sinks but no dead letter stored (sinks → database: in transit or lost)"
    ]
    kept = Stored(7, 0, {"ingest": 2, "streams": 1, "sinks": 1}, device_deadletters=4)
    assert failing(figures(sinks=sinks, stored=kept, published=11)) == []


def test_items_the_database_refused_are_the_sinks_dead_letters_too() -> None:
    """Each table's refused items (dead-lettered, their messages forwarded) add up."""
    sinks = hops_from_exposition(
        "cityvitals_sinks_received_total 5.0\n"
        "cityvitals_sinks_forwarded_total 5.0\n"
        "cityvitals_sinks_conflicts_total 1.0\n"
        'cityvitals_sinks_refused_items_total{table="readings"} 2.0\n'
        'cityvitals_sinks_refused_items_total{table="alerts"} 1.0\n'
    )["sinks"]
    assert (sinks.refused, sinks.conflicts, sinks.unstored) == (0, 4, 2)
    # Two readings forwarded by the stream were refused by the database: not a loss.
    stored = Stored(5, 0, {"ingest": 2, "streams": 1, "sinks": 4}, device_deadletters=7)
    lines = reconcile(figures(sinks=sinks, stored=stored))
    (line,) = [line for line in lines if line.check.startswith("stream → database")]
    assert line.ok and "less 2 the database refused" in line.check, line
    assert failing(figures(sinks=replace(sinks, unstored=0), stored=stored)) == [
        "2 forwarded by the stream but not stored (stream → database), beyond 0 out of order"
    ]


def test_the_exposition_gives_each_stage_its_counters() -> None:
    text = "\n".join(
        [
            "process_start_time_seconds 1.7645796e+09",
            "cityvitals_started_seconds 1.7645797123456e+09",
            "cityvitals_streams_received_total 9.0",
            "cityvitals_streams_forwarded_total 7.0",
            'cityvitals_streams_rejected_total{reason="unknown"} 1.0',
            'cityvitals_streams_rejected_total{reason="bad_batch"} 1.0',
            "cityvitals_streams_out_of_order_total 2.0",
            "cityvitals_streams_backlog_total 4.0",
            "cityvitals_incidents_received_total 3.0",
            "cityvitals_incidents_forwarded_total 3.0",
            "cityvitals_incidents_desk_received_total 3.0",
            "cityvitals_incidents_desk_forwarded_total 2.0",
            'cityvitals_incidents_desk_rejected_total{reason="refused_feedback"} 1.0',
            "",
        ]
    )
    hops = hops_from_exposition(text)
    assert set(hops) == {"streams", "incidents", "incidents_desk"}
    s = hops["streams"]
    assert (s.received, s.forwarded, s.refused, s.out_of_order, s.undecodable) == (9, 7, 2, 2, 1)
    assert (s.backlog, hops["incidents"].backlog) == (4, 0)
    desk = hops["incidents_desk"]
    assert (desk.received, desk.forwarded, desk.refused) == (3, 2, 1)
    # The service's own start, to the microsecond, not the kernel's (a second early at most).
    assert s.started == datetime.fromtimestamp(1.7645797123456e9, UTC)
    older = hops_from_exposition(text.replace("cityvitals_started_seconds", "other"))
    assert older["streams"].started == datetime.fromtimestamp(1.7645796e9, UTC)
    assert hops["incidents"].undecodable == 0


def test_a_gap_names_the_local_stack_s_last_stop_when_it_left_messages_in_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that left messages in the in-memory broker is a known cause of readings
    published and never stored: the audit says what that stop said."""
    from typer.testing import CliRunner

    from wiring import cli_audit
    from wiring.cli import app
    from wiring.localstack import Drained
    from wiring.stack import StackPaths

    monkeypatch.setenv("CITYVITALS_STATE_DIR", str(tmp_path))
    lost = figures(stored=Stored(6, 0, {"ingest": 2, "streams": 1}, 3), published=10)
    monkeypatch.setattr(cli_audit, "_figures", lambda *_: lost)
    said = "292 messages in Kafka not yet stored by the stream or the sinks (postgres not running)"
    StackPaths(tmp_path).state_dir.mkdir(parents=True, exist_ok=True)
    Drained(said, False).keep(StackPaths(tmp_path))
    result = CliRunner().invoke(app, ["audit", "--published", "10"])
    assert result.exit_code == 1, result.output
    assert f"note: the local stack's last stop said: {said}" in result.output
    Drained("the stream and the sinks stored everything Kafka held", True).keep(
        StackPaths(tmp_path)
    )
    clean = CliRunner().invoke(app, ["audit", "--published", "10"])
    assert clean.exit_code == 1 and "last stop" not in clean.output
    # read once, a gap may be in flight: the audit says how to read again
    assert "--wait 15 reads again until it closes" in clean.output
    waited = CliRunner().invoke(app, ["audit", "--published", "10", "--wait", "0.1"])
    assert waited.exit_code == 1 and "--wait 15" not in waited.output


def test_a_reading_s_values_refused_alone_are_stream_dead_letters_beside_its_refusals() -> None:
    """A reading taken whose unlisted metric was refused: forwarded (the hop balances), and
    its dead letter is the stream's, counted by values_refused_total."""
    streams = hops_from_exposition(
        "cityvitals_streams_received_total 9.0\n"
        "cityvitals_streams_forwarded_total 8.0\n"
        'cityvitals_streams_rejected_total{reason="unknown_device"} 1.0\n'
        "cityvitals_streams_values_refused_total 2.0\n"
    )["streams"]
    assert (streams.refused, streams.conflicts) == (1, 2)
    short = Stored(8, 0, {"ingest": 2, "streams": 1}, device_deadletters=3)
    assert failing(figures(streams=streams, stored=short)) == [
        "2 refused by streams but no dead letter stored (streams → database: in transit or lost)"
    ]
    kept = Stored(8, 0, {"ingest": 2, "streams": 3}, device_deadletters=3)
    assert failing(figures(streams=streams, stored=kept)) == []
