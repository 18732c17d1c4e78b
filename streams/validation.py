"""What a reading or camera event must pass before the stream judges it, and what it gains.

The stream keeps a small slice of each device's registry entry (:func:`registry_entry`, newest
change wins: :func:`is_newer`). An item is refused, with a reason naming the problem and a
reason kind, when its device is unknown, not active or provisioned, sends a metric its profile
does not list or a value outside its profile's valid range (:func:`problem`), or, once enriched
with its device's type and place (:func:`enrich`), is stamped too far ahead of the stream's
clock (:func:`ahead`); a refused item becomes a dead letter (:func:`refusal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cityvitals.contracts import CameraEvent, DeadLetter, Device, DeviceState, Reading, trusted
from cityvitals.stage import dead_letter

__all__ = [
    "FUTURE_TOLERANCE",
    "PAST_TOLERANCE",
    "PROCESSED_STATES",
    "VALUES_REFUSED",
    "ahead",
    "enrich",
    "is_newer",
    "problem",
    "refusal",
    "registry_entry",
    "span",
    "split_values",
    "too_old",
    "value_faults",
]

FUTURE_TOLERANCE = timedelta(minutes=10)
"""A reading stamped further ahead of the stream's clock is refused: it would move its
device's watermark into the future and make every later reading late."""

PAST_TOLERANCE = timedelta(days=365)
"""A reading stamped further behind the stream's clock is refused: a device whose clock was
reset reports 1970 or 2000, and one such reading would open an incident for a long-gone past
and make the vital signs report every window since."""

PROCESSED_STATES = frozenset({DeviceState.ACTIVE, DeviceState.PROVISIONED})
"""A provisioned device's first valid reading is processed (the liveness service then asks
the registry to activate it); a suspended or retired device's readings are refused."""


def registry_entry(device: Device) -> dict[str, Any]:
    """The slice of a Device the stream needs per reading, kept small in the table."""
    return {
        "device_type": device.device_type,
        "profile_id": device.profile_id,
        "place_path": list(device.place_path),
        "tags": list(device.tags),
        "state": device.state.value,
        "updated_at": device.updated_at.isoformat(),
        "valid_ranges": {m: list(r) for m, r in device.valid_ranges.items()},
        "expected_interval_s": device.expected_interval_s,
    }


def is_newer(device: Device, entry: Mapping[str, Any] | None) -> bool:
    """Whether a registry change is newer than what the table holds (last writer wins)."""
    return entry is None or device.updated_at >= datetime.fromisoformat(entry["updated_at"])


def value_faults(
    device_id: str, values: Mapping[str, float], entry: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """Each value the device's profile refuses, as (metric, why, kind): a metric it does not
    list (``unlisted_metric``), or a value outside the metric's valid range
    (``out_of_range``). A device with a profile may send only its profile's metrics (the
    registry publishes them as ``valid_ranges``); a device without a profile is not limited
    but by the ranges it has.

    >>> entry = {"profile_id": "aq-v2", "valid_ranges": {"pm25": (0, 1000), "no2": (0, None)}}
    >>> for fault in value_faults("aq-1", {"pm25": 1200, "no2": 80, "o3": 120}, entry):
    ...     print(fault)
    ('pm25', "pm25=1200 is outside the profile's valid range [0, 1000]", 'out_of_range')
    ('o3', "metric 'o3' is not in profile 'aq-v2' of device 'aq-1' (it lists: no2, pm25)", 'unlisted_metric')
    """
    profile_id = entry.get("profile_id")
    ranges = entry.get("valid_ranges") or {}
    faults = []
    for metric, value in values.items():
        if profile_id is not None and metric not in ranges:
            why = (
                f"metric {metric!r} is not in profile {profile_id!r} of device {device_id!r} "
                f"(it lists: {', '.join(sorted(ranges)) or 'no metrics'})"
            )
            faults.append((metric, why, "unlisted_metric"))
            continue
        low, high = ranges.get(metric, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            why = f"{metric}={value:g} is outside the profile's valid range [{low}, {high}]"
            faults.append((metric, why, "out_of_range"))
    return faults


VALUES_REFUSED = "values_refused"
"""The cause of the dead letter of a reading's values refused while its other values were
taken (counted by ``cityvitals_streams_values_refused_total``, beside the refusals: the reading
itself was forwarded)."""


def split_values(item: Reading, faults: list[tuple[str, str, str]]) -> tuple[Reading, Reading, str]:
    """The reading with the values its profile takes, a copy with those it refuses (what the
    dead letter keeps), and why they were refused (``faults``: :func:`value_faults`, not every
    value of the reading).

    >>> from datetime import UTC, datetime
    >>> r = Reading(device_id="aq-1", ts=datetime(2026, 7, 1, tzinfo=UTC), seq=1,
    ...             values={"pm25": 170, "o3": 120})
    >>> taken, refused, why = split_values(r, [("o3", "metric 'o3' is not listed", "x")])
    >>> taken.values, refused.values, refused.seq
    ({'pm25': 170.0}, {'o3': 120.0}, 1)
    >>> why
    "metric 'o3' is not listed; refused alone: the reading's other metrics were taken (pm25)"
    """
    bad = {metric for metric, _why, _kind in faults}
    good = {m: v for m, v in item.values.items() if m not in bad}
    fields = item.__dict__
    taken = trusted(Reading, {**fields, "values": good})
    refused = trusted(Reading, {**fields, "values": {m: item.values[m] for m in bad}})
    why = "; ".join(w for _m, w, _k in faults)
    why += f"; refused alone: the reading's other metrics were taken ({', '.join(sorted(good))})"
    return taken, refused, why


def problem(item: Reading | CameraEvent, entry: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """Why the item is refused by its registry entry, and the reason's kind; ``(None, "")``
    when it passes (its instant is asked of :func:`ahead` once it is enriched)."""
    if entry is None:
        return f"unknown device {item.device_id!r}: not in the registry", "unknown_device"
    if entry["state"] not in PROCESSED_STATES:
        state = entry["state"]
        return f"device {item.device_id!r} is {state}, not active or provisioned", "inactive_device"
    # A camera's event is its metric camera.<event type> to a profile, as to the rules. A
    # reading's values are judged one by one (value_faults): its good ones are taken.
    if isinstance(item, CameraEvent):
        faults = value_faults(item.device_id, {item.metric: item.value}, entry)
        if faults:
            return faults[0][1], faults[0][2]
    return None, ""


def span(seconds: float) -> str:
    """A length of time as a refusal names it, in the unit a person reads it in.

    >>> span(45), span(660), span(28797), span(96955520)
    ('45 s', '11 min', '8.0 h', '1122 days')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds // 86400:.0f} days"


def ahead(ts: datetime, now: datetime, limit: datetime, what: str = "ts") -> str | None:
    """Why an instant is refused as too far ahead of the stream's clock ``now`` (``limit`` is
    ``now + FUTURE_TOLERANCE``, computed once a batch; ``what`` names the instant); None
    when it is not. Asked of the
    enriched item: its instant in the standard library's UTC zone compares in 26 ns, the
    zone pydantic decodes in 514 (it is called back at each comparison).

    >>> now = datetime(2026, 7, 1, tzinfo=UTC)
    >>> ahead(now + timedelta(minutes=11), now, now + FUTURE_TOLERANCE)
    "ts 2026-07-01T00:11:00+00:00 is 11 min ahead of the stream's clock: more than 10 min ahead is refused"
    >>> ahead(now + timedelta(days=1122), now, now + FUTURE_TOLERANCE)
    "ts 2029-07-27T00:00:00+00:00 is 1122 days ahead of the stream's clock: more than 10 min ahead is refused"
    >>> ahead(now + timedelta(minutes=10), now, now + FUTURE_TOLERANCE) is None
    True
    """
    if ts > limit:
        return (
            f"{what} {ts.isoformat()} is {span((ts - now).total_seconds())} ahead of the stream's "
            f"clock: more than {span(FUTURE_TOLERANCE.total_seconds())} ahead is refused"
        )
    return None


def too_old(ts: datetime, now: datetime, earliest: datetime) -> str | None:
    """Why an instant is refused as too far behind the stream's clock ``now`` (``earliest``
    is ``now - PAST_TOLERANCE``, computed once a batch); None when it is not.

    >>> now = datetime(2026, 7, 1, tzinfo=UTC)
    >>> too_old(datetime(1970, 1, 1, tzinfo=UTC), now, now - PAST_TOLERANCE)
    "ts 1970-01-01T00:00:00+00:00 is 20635 days behind the stream's clock (a device clock reset?): older than 365 days is refused"
    >>> too_old(now - timedelta(days=30), now, now - PAST_TOLERANCE) is None
    True
    """
    if ts < earliest:
        return (
            f"ts {ts.isoformat()} is {(now - ts).days} days behind the stream's clock (a "
            f"device clock reset?): older than {PAST_TOLERANCE.days} days is refused"
        )
    return None


def refusal(
    item: Reading | CameraEvent, reason: str, cause: str, source: str, now: datetime
) -> DeadLetter:
    """The dead letter of a refused item: its JSON, the reason and what it was counted as,
    where it came from."""
    payload = item.model_dump_json().encode()
    return dead_letter(
        "streams", reason, payload, source, cause=cause, device_id=item.device_id, received_at=now
    )


def enrich(item: Reading | CameraEvent, entry: Mapping[str, Any]) -> Reading | CameraEvent:
    """The item with its device's type and place from the registry entry (a copy), its
    instant in the standard library's UTC zone (the same instant): the zone pydantic decodes
    is called back at every comparison and format of the instant, and the stage makes several
    of each (514 ns a comparison against 26)."""
    fields = item.__dict__.copy()
    fields["device_type"] = entry["device_type"]
    fields["place_path"] = tuple(entry["place_path"])
    ts = item.ts
    if ts.tzinfo is not UTC:
        # astimezone, not replace: the same instant, for under half of what replace() costs
        fields["ts"] = ts.astimezone(UTC)
    return trusted(type(item), fields)
