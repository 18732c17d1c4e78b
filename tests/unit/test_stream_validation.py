"""The stream's check of each reading against its device's registry entry: the metrics its
profile lists, and the lifecycle states whose readings are processed."""

import base64
from datetime import UTC, datetime, timedelta

from cityvitals.contracts import (
    CameraEvent,
    CameraEventType,
    Device,
    DeviceState,
    Reading,
    ReadingBatch,
)
from rules import parse_rules
from streams import process_batch, registry_entry

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
RULES = parse_rules("rules:\n  - {id: pm25-red, metric: pm25, levels: {red: 250}}\n")


def water_level(
    device_id: str,
    profile_id: str | None = "wl-v1",
    state: DeviceState = DeviceState.ACTIVE,
) -> Device:
    ranges: dict[str, tuple[float | None, float | None]] = (
        {"water_level_cm": (0.0, 500.0)} if profile_id else {}
    )
    return Device(
        device_id=device_id,
        device_type="water_level",
        profile_id=profile_id,
        place_path=("c", "d1"),
        state=state,
        valid_ranges=ranges,
        updated_at=T0,
    )


def reading(device_id: str, minutes: int = 1, **values: float) -> Reading:
    return Reading(
        device_id=device_id, ts=T0 + timedelta(minutes=minutes), seq=minutes, values=values
    )


def test_a_metric_the_profile_does_not_list_is_dead_lettered_and_raises_no_alert() -> None:
    devices = {"wl-1": registry_entry(water_level("wl-1"))}
    batch = ReadingBatch(
        readings=(reading("wl-1", 1, pm25=300), reading("wl-1", 2, water_level_cm=3))
    )
    out = process_batch(batch, devices, {}, RULES, "raw[0]", T0)
    assert [r.values for r in out.enriched.readings] == [{"water_level_cm": 3.0}]
    assert not out.alerts
    (letter,) = out.dead_letters
    assert letter.reason == (
        "metric 'pm25' is not in profile 'wl-v1' of device 'wl-1' (it lists: water_level_cm)"
    )
    assert out.refused == {"unlisted_metric": 1}


def test_a_reading_s_good_values_are_taken_and_its_refused_values_kept_alone() -> None:
    """A firmware update adds a metric the profile lacks: the reading's other values (an
    orange PM2.5, a water level) are stored and judged, not dropped with it; the values
    refused (unlisted, out of range) are a dead letter of their own. A reading whose values
    are all refused is refused whole, as before."""
    rules = parse_rules("rules:\n  - {id: deep, metric: water_level_cm, levels: {red: 40}}\n")
    devices = {"wl-2": registry_entry(water_level("wl-2"))}
    batch = ReadingBatch(
        readings=(
            reading("wl-2", 1, water_level_cm=45, pm25=300),
            reading("wl-2", 2, water_level_cm=46, pm25=300, no2=-1),
            reading("wl-2", 3, water_level_cm=-5, pm25=300),
        )
    )
    out = process_batch(batch, devices, {}, rules, "raw[0]", T0)
    assert [(r.seq, r.values) for r in out.enriched.readings] == [
        (1, {"water_level_cm": 45.0}),
        (2, {"water_level_cm": 46.0}),
    ]
    assert [a.rule_id for a in out.alerts] == ["deep"]  # judged on the values taken
    parts, whole = out.dead_letters[:2], out.dead_letters[2]
    assert [p.cause for p in parts] == ["values_refused", "values_refused"]
    assert [Reading.model_validate_json(base64.b64decode(p.payload_b64)).values for p in parts] == [
        {"pm25": 300.0},
        {"pm25": 300.0, "no2": -1.0},
    ]
    assert parts[0].reason == (
        "metric 'pm25' is not in profile 'wl-v1' of device 'wl-2' (it lists: water_level_cm); "
        "refused alone: the reading's other metrics were taken (water_level_cm)"
    )
    assert (whole.cause, whole.reason) == (
        "out_of_range",
        "water_level_cm=-5 is outside the profile's valid range [0.0, 500.0]; metric 'pm25' is "
        "not in profile 'wl-v1' of device 'wl-2' (it lists: water_level_cm)",
    )
    assert out.values_refused == 2 and out.refused == {"out_of_range": 1}


def test_a_camera_event_is_held_to_its_profile_as_its_metric_camera_event_type() -> None:
    """A camera's profile lists its events as camera.<event type> (as the rules name them):
    an event it does not list, one outside its range, or an event from a sensor whose
    profile lists no camera metric is refused like a reading."""
    camera = Device(
        device_id="cam-1",
        device_type="camera",
        profile_id="cam-v1",
        place_path=("c", "d1"),
        state=DeviceState.ACTIVE,
        valid_ranges={"camera.waterlogging": (0.0, 1.0), "camera.smoke_fire": (0.0, 1.0)},
        updated_at=T0,
    )
    devices = {"cam-1": registry_entry(camera), "wl-4": registry_entry(water_level("wl-4"))}

    def event(device: str, minute: int, kind: CameraEventType, value: float) -> CameraEvent:
        ts = T0 + timedelta(minutes=minute)
        return CameraEvent(
            camera_id=device, ts=ts, seq=minute, event_type=kind, value=value, confidence=0.9
        )

    batch = ReadingBatch(
        camera_events=(
            event("cam-1", 1, CameraEventType.WATERLOGGING, 0.8),
            event("cam-1", 2, CameraEventType.WATERLOGGING, 7.5),
            event("cam-1", 3, CameraEventType.ILLEGAL_PARKING, 0.5),
            event("wl-4", 4, CameraEventType.SMOKE_FIRE, 0.9),
        )
    )
    out = process_batch(batch, devices, {}, RULES, "raw[0]", T0)
    assert [e.seq for e in out.enriched.camera_events] == [1]
    assert [d.reason for d in out.dead_letters] == [
        "camera.waterlogging=7.5 is outside the profile's valid range [0.0, 1.0]",
        "metric 'camera.illegal_parking' is not in profile 'cam-v1' of device 'cam-1' "
        "(it lists: camera.smoke_fire, camera.waterlogging)",
        "metric 'camera.smoke_fire' is not in profile 'wl-v1' of device 'wl-4' "
        "(it lists: water_level_cm)",
    ]
    assert out.refused == {"out_of_range": 1, "unlisted_metric": 2}


def test_a_device_without_a_profile_may_send_any_metric() -> None:
    devices = {"wl-3": registry_entry(water_level("wl-3", profile_id=None))}
    out = process_batch(
        ReadingBatch(readings=(reading("wl-3", 1, pm25=3),)), devices, {}, RULES, "r", T0
    )
    assert len(out.enriched.readings) == 1 and not out.dead_letters


def test_a_provisioned_devices_reading_is_processed_and_a_suspended_ones_refused() -> None:
    devices = {
        "wl-4": registry_entry(water_level("wl-4", state=DeviceState.PROVISIONED)),
        "wl-5": registry_entry(water_level("wl-5", state=DeviceState.SUSPENDED)),
    }
    batch = ReadingBatch(
        readings=(reading("wl-4", 1, water_level_cm=3), reading("wl-5", 1, water_level_cm=3))
    )
    out = process_batch(batch, devices, {}, RULES, "r", T0)
    assert [r.device_id for r in out.enriched.readings] == ["wl-4"]
    assert [d.device_id for d in out.dead_letters] == ["wl-5"]
    assert "suspended" in out.dead_letters[0].reason


def test_the_forwarded_readings_instants_are_in_the_standard_librarys_utc_zone() -> None:
    """Decoded from JSON, an instant carries pydantic's zone, called back at each comparison;
    forwarded, it carries the standard library's UTC (the same instant, whatever the offset
    it came with), and one stamped over 10 minutes ahead of the stream's clock is refused."""
    devices = {"wl-1": registry_entry(water_level("wl-1", profile_id=None))}
    raw = (
        '{"readings": ['
        '{"device_id": "wl-1", "ts": "2026-07-01T08:01:00Z", "seq": 1, "values": {"w": 1}},'
        '{"device_id": "wl-1", "ts": "2026-07-01T16:02:00+08:00", "seq": 2, "values": {"w": 2}},'
        '{"device_id": "wl-1", "ts": "2026-07-01T08:13:00Z", "seq": 3, "values": {"w": 3}}]}'
    )
    batch = ReadingBatch.model_validate_json(raw)
    assert all(r.ts.tzinfo is not UTC for r in batch.readings)
    out = process_batch(batch, devices, {}, RULES, "raw[0]", T0 + timedelta(minutes=2))
    assert [(r.seq, r.ts) for r in out.enriched.readings] == [
        (1, T0 + timedelta(minutes=1)),
        (2, T0 + timedelta(minutes=2)),
    ]
    assert all(r.ts.tzinfo is UTC for r in out.enriched.readings)
    assert out.refused == {"future": 1}
    assert out.dead_letters[0].reason == (
        "ts 2026-07-01T08:13:00+00:00 is 11 min ahead of the stream's clock: more than 10 min "
        "ahead is refused"
    )


def test_a_reading_from_a_reset_clock_is_refused_and_raises_nothing() -> None:
    """A device whose clock reset reports 1970: refused, named, and no alert, where it once
    fired a red alert, opened an incident and made the vital signs walk every window since."""
    devices = {"aq-1": registry_entry(water_level("aq-1", profile_id=None))}
    epoch = Reading(
        device_id="aq-1", ts=datetime(1970, 1, 1, tzinfo=UTC), seq=1, values={"pm25": 500.0}
    )
    batch = ReadingBatch(readings=(epoch, reading("aq-1", 2, pm25=500)))
    out = process_batch(batch, devices, {}, RULES, "raw[0]", T0)
    assert [r.seq for r in out.enriched.readings] == [2]  # the rest of the batch goes on
    assert out.refused == {"too_old": 1}
    assert out.dead_letters[0].reason.startswith(
        "ts 1970-01-01T00:00:00+00:00 is 20635 days behind the stream's clock"
    )
    assert [a.ts for a in out.alerts] == [T0 + timedelta(minutes=2)]  # the real one alone
