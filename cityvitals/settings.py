"""The one settings object. Built once at each entry point and passed down.

Every field can be set from the environment as ``CITYVITALS_<FIELD>`` (e.g.
``CITYVITALS_KAFKA_BOOTSTRAP=kafka-0:9092``); ``deploy/`` uses exactly these names. Nothing
else in the code base reads ``os.environ``.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cityvitals.contracts.base import ZoneName

__all__ = ["ENV_PREFIX", "NOT_SETTINGS", "Settings", "public_url", "unknown_variables"]

ENV_PREFIX = "CITYVITALS_"

Port = Annotated[int, Field(ge=0, le=65535)]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # MQTT: where devices publish and the gateway subscribes.
    mqtt_host: str = "127.0.0.1"
    mqtt_port: Port = 1883
    mqtt_tls_port: Port | None = None
    """A second listener of the local stack's Mosquitto, for devices: MQTT over TLS with the
    certificate and key below, the same logins and ACL (it binds 127.0.0.1 as every server of
    the local stack; a deployment's broker binds where its devices are). The gateway stays on
    ``mqtt_port``."""
    mqtt_tls_certfile: Path | None = None
    """The TLS listener's certificate (PEM; its chain, the server's first)."""
    mqtt_tls_keyfile: Path | None = None
    """The TLS listener's private key (PEM)."""
    mqtt_topic_root: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = "cityvitals"
    mqtt_username: str = "cityvitals-ingest"
    mqtt_password: SecretStr = SecretStr("")
    mqtt_share_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{0,64}$")] = ""
    """Empty: the only gateway, on a plain subscription, which the broker keeps across its
    restart. A name: every gateway of the group on one shared subscription, splitting the
    load (Mosquitto 2.0 drops what is published while it restarts; see ingest.gateway)."""
    mqtt_client_id: str = "cityvitals-ingest-1"
    ingest_receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 4000
    """MQTT 5 receive maximum: at most this many QoS1 messages wait for Kafka at once."""
    ingest_batch_max: Annotated[int, Field(ge=1)] = 500
    ingest_message_max_bytes: Annotated[int, Field(ge=1, le=2_000_000)] = 1_000_000
    """Largest ``readings.raw`` message the gateway writes (about 5,000 readings): a drained
    group of one partition that is larger goes as several, split between MQTT messages (one
    MQTT message, at most 64 KB of payload, is never split). Kafka's clients here take
    messages of up to 4 MB, and the stream stage's output of a message is larger than it:
    at most 2 MB."""
    ingest_linger_ms: Annotated[int, Field(ge=0)] = 100
    """How long the gateway gathers readings at most (up to ``ingest_batch_max``; see also
    ``ingest_idle_ms``) for one Kafka message per partition. The stream stage's cost is
    mostly per message: under a steady 2,500 readings/s, gathering 20 ms made messages so
    small that the stage fell seconds behind (alert latency p50 3.8 s); 50 ms kept up (p50
    249 ms, p99 428 ms); 100 ms gave p50 176 ms, p99 310 ms (`cityvitals bench
    --latency-load 2500 --latency-tick-s 0.02`)."""

    ingest_idle_ms: Annotated[int, Field(ge=0)] = 10
    """Once at least ``ingest_idle_min`` messages are gathered, the gateway sends them when
    nothing more came for this long, before the linger time is up: a burst (devices reporting
    on the minute) goes when it ends. Smaller gatherings wait for the linger time, so the
    stream stage does not get many small messages from a thin or finely broken flow. 0: the
    linger time or a full batch, as before."""
    ingest_idle_min: Annotated[int, Field(ge=1)] = 100
    """The fewest MQTT messages gathered that an idle pause sends."""

    # Kafka.
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: Annotated[str, Field(pattern=r"^[a-z0-9_.-]{0,64}$")] = ""
    kafka_partitions: Annotated[int, Field(ge=1, le=1024)] = 4
    kafka_replication: Annotated[int, Field(ge=1, le=7)] = 1
    kafka_session_timeout_ms: Annotated[int, Field(ge=1000)] = 6000
    kafka_storage: Literal["memory", "s3"] = "memory"
    """Where the local stack's tansu keeps its data: ``memory`` (fast; a broker restart loses
    every topic) or ``s3`` (a local S3 server, moto's, started before it: topics, messages and
    committed offsets survive a broker restart, not a restart of the stack). Production's
    Kafka ignores it."""
    kafka_fetch_wait_ms: Annotated[int, Field(ge=1, le=30_000)] | None = None
    """Longest a fetch of the stream stage waits at the broker for data. Unset: 20 ms, or
    500 ms when tansu keeps its data in S3 (``kafka_storage=s3``). tansu holds an empty fetch
    for the whole wait, so a long one delays each hop; but on S3 it answers with the batches
    it has read within the wait, and a batch read from S3 takes longer than 20 ms: at 20 ms a
    partition behind by dozens of batches got none or one per fetch and fell ever further
    behind, at 1000 ms it got them all, in 200-400 ms either way. In memory, 100 ms instead of
    20 left the stage's rate as it was and lengthened its hop (``cityvitals bench``)."""
    streams_app_id: Name = "cityvitals_streams"
    sink_group: Name = "cityvitals_sinks"

    # PostgreSQL / TimescaleDB.
    database_url: SecretStr = SecretStr("postgresql://cityvitals@127.0.0.1:5432/cityvitals")
    database_schema: Name = "cityvitals"
    database_flavour: Literal["auto", "timescale", "plain"] = "auto"
    """The storage of a new schema: ``auto`` takes TimescaleDB when the server has it."""
    maintenance_interval_s: Annotated[float, Field(ge=0)] = 300.0
    """How often the sinks service keeps the storage (partitions, roll-ups, retention);
    0 leaves it to ``cityvitals maintain`` run by hand or by a scheduler."""
    retention_telemetry_days: Annotated[int, Field(ge=1)] | None = None
    """The longest readings, camera events and their roll-ups are kept, in Kafka and in the
    database (docs/privacy.md); unset: each topic and table keeps its own retention."""
    retention_operational_days: Annotated[int, Field(ge=1)] | None = None
    """The longest alerts, indicators, incidents, dispatch orders, liveness and outages are
    kept on their topics, and indicators and their roll-ups, resolved alerts and closed incidents
    in the database; unset: their own."""
    retention_citizen_days: Annotated[int, Field(ge=1)] | None = None
    """The longest citizen reports are kept on the ``reports`` topic and in the database (but
    not those an open incident lists); unset: their own."""
    retention_diagnostic_days: Annotated[int, Field(ge=1)] | None = None
    """The longest dead letters are kept on the ``deadletter`` topic and in the database;
    unset: their own."""
    sink_batch_max: Annotated[int, Field(ge=1)] = 5000
    sink_linger_ms: Annotated[int, Field(ge=0)] = 250
    """How long the sink gathers messages at most (up to ``sink_batch_max``) for one write."""
    sink_idle_ms: Annotated[int, Field(ge=0)] = 20
    """The sink writes what it gathered once nothing more came for this long, before the
    linger time is up: a burst (devices reporting on the minute) is stored when it ends, and
    a steady flow still fills large writes. 0: the linger time or a full batch. A burst of
    30,000 readings, one per MQTT message, was stored at 18,206-20,081 readings/s without
    it and at 21,271-22,621 with it, in alternating pairs; under 300,000 the rate was the same
    (docs/speed.md, 2026-12-06)."""

    # Device registry: HTTP API and liveness.
    api_host: str = "127.0.0.1"
    api_port: Port = 8080
    liveness_check_interval_s: Annotated[float, Field(gt=0)] = 5.0
    """How often the liveness service judges every device against its cadence."""
    liveness_default_interval_s: Annotated[float, Field(gt=0)] = 300.0
    """Expected reporting interval of a device that has no observed cadence and whose profile
    names none."""
    liveness_late_factor: Annotated[float, Field(gt=1)] = 2.0
    """Late after this many expected intervals without a reading."""
    liveness_offline_factor: Annotated[float, Field(gt=1)] = 4.0
    """Offline after this many expected intervals without a reading."""
    liveness_stall_s: Annotated[float, Field(gt=0)] = 10.0
    """The stream stage committing nothing on a partition of ``readings.raw`` this long while
    messages wait there is a stalled pipeline, not silent devices: liveness judges none of that
    partition's devices until it has worked them off. It commits every 2.8 s; keep this, with
    ``liveness_check_interval_s``, under the time the fastest devices take to go offline
    (``liveness_offline_factor`` times their interval)."""
    ingest_heartbeat_s: Annotated[float, Field(ge=0)] = 2.0
    """How often the gateway, while its MQTT connection is up, sends a heartbeat to every
    partition of ``readings.raw`` (:attr:`~cityvitals.contracts.ReadingBatch.heartbeat`).
    Where none has reached ``readings`` for ``liveness_stall_s`` (the gateway hung or cut off
    from the broker), liveness judges none of the partition's devices, and for
    ``liveness_stall_s`` more once they come again (what the broker kept meanwhile is on its
    way): a hung gateway is no outage of the city. At most half of ``liveness_stall_s``; 0 sends
    none (while stream workers and sinks of a version before heartbeats still run: they
    refuse the field)."""
    outage_min_devices: Annotated[int, Field(ge=2)] = 3
    outage_silent_fraction: Annotated[float, Field(gt=0, le=1)] = 0.8
    """A place is out when at least this share of its (at least ``outage_min_devices``)
    devices are offline; its devices then raise no per-device offline events."""

    # Rules.
    rules_file: Path | None = None
    """YAML rule file; ``None`` uses the default rules shipped with cityvitals."""
    rules_reload_s: Annotated[float, Field(gt=0)] = 2.0
    """How often the stream checks the rule file for changes (hot reload)."""
    indicators_file: Path | None = None
    """YAML indicator catalogue; ``None`` uses the catalogue shipped with cityvitals."""
    indicators_grace_s: Annotated[float, Field(ge=0)] = 60.0
    """A window's indicators are reported this long after the window ends (wall clock)."""
    rules_tick_s: Annotated[float, Field(gt=0)] = 10.0
    """How often the stream's clock ticks to judge silence (absence rules, composite windows)."""
    incidents_file: Path | None = None
    """YAML incident configuration (categories, routing, limits, storm budgets); ``None`` uses
    the one shipped with cityvitals."""

    webhook_urls: Annotated[tuple[str, ...], NoDecode] = ()
    """Where the notifier POSTs dispatch orders and escalations (comma-separated in the
    environment); empty: the notifier sends nothing."""
    webhook_secret: SecretStr = SecretStr("")
    """Key of the HMAC-SHA256 signature in each webhook's ``X-Cityvitals-Signature`` header."""
    webhook_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    webhook_retry_for_s: Annotated[float, Field(gt=0, le=72_000)] = 21_600.0
    """How long a delivery that gets no answer, or a "not now" (408, 429, 5xx), is tried
    again before it is dead-lettered, from its first try (default 6 hours: a receiver's outage
    is waited out, and only its URL waits). At most 20 hours: a notifier waiting longer would
    leave its Kafka group (librdkafka's longest poll interval is a day)."""
    webhook_backoff_s: Annotated[float, Field(ge=0)] = 1.0
    """Wait before a webhook's second try; doubled before each later try."""
    webhook_backoff_max_s: Annotated[float, Field(ge=0)] = 30.0
    """The longest wait between two tries of a webhook."""

    timezone: ZoneName = "UTC"
    """The city's time zone (an IANA name such as ``Asia/Shanghai``): times shown to people
    (``cityvitals vitals``) are in it. Stored and sent times stay UTC."""

    # Observability.
    metrics_port: Port = 0
    """Prometheus port of this process; 0 serves no metrics endpoint."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint binds; 0.0.0.0 in a container that Prometheus scrapes."""
    log_level: str = "INFO"

    # Local stack.
    state_dir: Path = Path(".cityvitals")

    @field_validator("ingest_heartbeat_s")
    @classmethod
    def _beats_within_a_stall(cls, every: float, info: ValidationInfo) -> float:
        stall = info.data.get("liveness_stall_s")
        if every and stall is not None and every * 2 > stall:
            raise ValueError(
                f"a heartbeat every {every:g} s is more than half of liveness_stall_s "
                f"({stall:g} s): liveness would hold every device between two heartbeats"
            )
        return every

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(url.strip() for url in value.split(",") if url.strip())
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{public_url(url)!r} is not an http:// or https:// URL")
            shown = public_url(url)
            if shown in seen:  # the notifier names a receiver, its lane and dead letters by it
                raise ValueError(
                    f"{shown} is given twice (URLs that differ only in a login, query or "
                    "fragment are one receiver): give each receiver its own address"
                )
            seen.add(shown)
        return urls

    @property
    def zone(self) -> ZoneInfo:
        """:attr:`timezone` as a ``tzinfo``."""
        return ZoneInfo(self.timezone)

    @property
    def fetch_wait_ms(self) -> int:
        """:attr:`kafka_fetch_wait_ms`, or its default for :attr:`kafka_storage`.

        >>> Settings().fetch_wait_ms, Settings(kafka_storage="s3").fetch_wait_ms
        (20, 500)
        """
        if self.kafka_fetch_wait_ms is not None:
            return self.kafka_fetch_wait_ms
        return 500 if self.kafka_storage == "s3" else 20

    @property
    def api_url(self) -> str:
        """Where a browser on this machine reaches the API: a wildcard bind (``0.0.0.0``,
        ``::``, as in the container deployments) by loopback, an IPv6 literal in brackets.

        >>> hosts = ("0.0.0.0", "::", "0:0:0:0:0:0:0:0", "::1", "[::1]", "api.example.org")
        >>> [Settings(api_host=h, api_port=8080).api_url for h in hosts]  # doctest: +NORMALIZE_WHITESPACE
        ['http://127.0.0.1:8080', 'http://127.0.0.1:8080', 'http://127.0.0.1:8080',
         'http://[::1]:8080', 'http://[::1]:8080', 'http://api.example.org:8080']
        """
        host = self.api_host.strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # a name
            return f"http://{host or '127.0.0.1'}:{self.api_port}"
        if address.is_unspecified:  # every address: loopback among them (a published port's)
            return f"http://127.0.0.1:{self.api_port}"
        shown = f"[{address}]" if address.version == 6 else str(address)
        return f"http://{shown}:{self.api_port}"

    def topic(self, name: str) -> str:
        """The real Kafka topic name of a logical topic (prefix applied)."""
        return f"{self.topic_prefix}.{name}" if self.topic_prefix else name

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for a child process to rebuild them."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple):  # read back comma-separated (webhook_urls)
                value = ",".join(str(item) for item in value)
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env


NOT_SETTINGS = frozenset({"CITYVITALS_ARTIFACTS", "CITYVITALS_NATIVE"})
"""Variables of the project that are no settings: where the browser tests put their
screenshots, and whether the install compiles the per-reading modules (setup.py)."""


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A line for each ``CITYVITALS_*`` variable that names no setting, with the nearest name
    when one is close: pydantic passes over it, so a misspelt setting would silently keep its
    default.

    >>> unknown_variables({"CITYVITALS_RETENTION_TELEMTRY_DAYS": "5", "CITYVITALS_MQTT_PORT": "1"})
    ['CITYVITALS_RETENTION_TELEMTRY_DAYS names no setting and is ignored (did you mean CITYVITALS_RETENTION_TELEMETRY_DAYS?)']
    """
    known = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]
    lines = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in NOT_SETTINGS:
            continue
        near = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        lines.append(f"{name} names no setting and is ignored{hint}")
    return lines


def public_url(url: str) -> str:
    """A URL as logs, dead letters and the notifier's lanes name it: without a login, query or
    fragment, which may hold a gateway's key (so a key can change and the receiver stays one).

    >>> public_url("https://user:key@sms.example.org:8443/hook?token=abc")
    'https://sms.example.org:8443/hook'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
