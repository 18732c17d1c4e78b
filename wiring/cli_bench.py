"""``cityvitals bench``: the pipeline's speed figures on a private local stack, as one JSON
document with each figure's target and the gap to it (see :mod:`benchmarks.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["bench"]


def bench(
    readings: Annotated[int, typer.Option(help="readings of each end-to-end run")] = 200_000,
    devices: Annotated[int, typer.Option(help="devices publishing them")] = 30,
    pack: Annotated[
        int, typer.Option(min=2, max=500, help="readings per MQTT message of the packed run")
    ] = 10,
    latency_s: Annotated[
        float,
        typer.Option(
            help="seconds of the alert-latency run at half the top load (a marker every 0.2 s)"
        ),
    ] = 30.0,
    latency_load: Annotated[
        float,
        typer.Option(
            help="background readings/s of the latency run (default: half the end-to-end rate)"
        ),
    ] = 0.0,
    latency_tick_s: Annotated[
        float,
        typer.Option(
            min=0.005,
            max=1.0,
            help="the latency run writes its load every this many seconds (0.1: bursts, "
            "0.02: a steadier trickle)",
        ),
    ] = 0.1,
    stream_readings: Annotated[
        int, typer.Option(help="readings of the streams-stage run (and its ceiling)")
    ] = 30_000,
    small_job_readings: Annotated[
        int,
        typer.Option(
            min=50_000,
            max=1_000_000,
            help="readings of the small job, on our streams stage and on Quix Streams (at least "
            "50,000: ours takes 250 a Kafka message, and 40 messages came out at once, timing "
            "nothing)",
        ),
    ] = 100_000,
    quix_python: Annotated[
        Path | None,
        typer.Option(help="Python of the environment holding Quix Streams (default: .cache/quix)"),
    ] = None,
    sink_rows: Annotated[int, typer.Option(help="rows of the sink-vs-COPY run")] = 100_000,
    timeout_s: Annotated[
        float, typer.Option(help="longest wait for a run's readings to arrive")
    ] = 120.0,
    stream_workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=8,
            help="stream workers in one group on the end-to-end and latency runs (one a core, "
            "as a deployment runs them)",
        ),
    ] = 1,
) -> None:
    """Measure end to end, alert latency, the streams stage (and beside Quix Streams on a
    small job) and the reading sink, each beside its ceiling, on private stacks; print one
    JSON document."""
    from benchmarks.bench import BenchOptions, main
    from benchmarks.small_job import QUIX_PYTHON

    main(
        BenchOptions(
            quix_python=quix_python or QUIX_PYTHON,
            readings=readings,
            devices=devices,
            pack=pack,
            latency_s=latency_s,
            latency_load=latency_load,
            latency_tick_s=latency_tick_s,
            stream_readings=stream_readings,
            small_job_readings=small_job_readings,
            sink_rows=sink_rows,
            timeout_s=timeout_s,
            stream_workers=stream_workers,
        )
    )
