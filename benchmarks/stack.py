"""A private local stack for a benchmark: its own state folder and free loopback ports."""

from __future__ import annotations

from pathlib import Path
from tempfile import mkdtemp

from cityvitals.settings import Settings
from wiring.localstack import LocalStack, MetricsPorts
from wiring.stack import free_loopback_port

__all__ = ["free_port", "private_stack"]


free_port = free_loopback_port


def private_stack() -> tuple[Settings, LocalStack]:
    """Settings on free ports in a new state folder, and the stack that will run them."""
    settings = Settings(
        mqtt_port=free_port(),
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        database_url=f"postgresql://cityvitals@127.0.0.1:{free_port()}/cityvitals",
        state_dir=Path(mkdtemp(prefix="cityvitals-bench-")),
        log_level="WARNING",
        api_port=free_port(),
    )
    return settings, LocalStack(settings, MetricsPorts(*(free_port() for _ in range(5))))
