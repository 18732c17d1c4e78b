"""The stream's Faust app fetches with a short wait (a broker that holds an empty fetch for the
whole wait, as tansu does, must not delay each hop by Faust's fixed 1.5 s) and its tables
serialize with orjson."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from cityvitals.settings import Settings
from streams.app import create_app
from streams.transport import FETCH_MAX_WAIT_MS
from wiring.services import load_catalogue, load_rules


def test_the_stream_consumer_waits_at_most_the_short_fetch_wait() -> None:
    async def fetch_wait() -> Any:
        settings = Settings(kafka_bootstrap="127.0.0.1:1")  # nothing is connected
        app = create_app(
            settings, load_rules(settings), load_catalogue(settings), CollectorRegistry()
        )
        worker = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return worker._fetch_max_wait_ms
        finally:
            await worker.stop()

    assert FETCH_MAX_WAIT_MS <= 100
    assert asyncio.run(fetch_wait()) == FETCH_MAX_WAIT_MS


def test_the_stream_tables_serialize_with_orjson() -> None:
    """Faust writes a changelog record per table change (a device's marks, its rule memory):
    with orjson a record costs about 2 µs instead of 17."""
    from faust.utils import json as faust_json

    assert faust_json.orjson is not None
    marks = {
        "t": [["2026-12-01T04:00:00+00:00", 7]],
        "w": {"aqi": [["2026-12-01T04:00:00+00:00", 7, ["c"]]]},
    }
    assert faust_json.loads(faust_json.dumps(marks)) == marks
