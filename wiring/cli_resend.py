"""``cityvitals resend``: deliver again the dispatch orders and escalations the notifier gave
up on (its dead letters), each to the URL it failed at, the oldest first (a URL that does not
take one is sent none after it in the run, so each receiver still gets them in order). One
delivered is recorded (``deadletters_resent``) and is no longer owed: ``cityvitals audit``
counts those still owed, and a second ``resend`` skips the delivered. The delivery carries its
first ``X-Cityvitals-Delivery``, so a receiver that got it after all drops it. ``--forget``
records them instead, sending nothing: for a receiver no longer configured, whose department
was told another way."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Annotated

import psycopg
import typer
from pydantic import ValidationError

from cityvitals.settings import Settings, public_url
from cityvitals.topics import Topic
from wiring.cli_common import settings, time_option

__all__ = ["resend"]


def _topic_of(source: str, conf: Settings) -> Topic | None:
    """The notifier's topic a dead letter's source (``topic[partition]@offset``) names."""
    name = source.split("[", 1)[0]
    return next((t for t in (Topic.DISPATCH, Topic.ESCALATIONS) if conf.topic(t) == name), None)


def _unusable(message: str) -> typer.Exit:
    """Exit 2: nothing was tried (1 is kept for "some are still owed")."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def resend(
    since: Annotated[
        str | None,
        typer.Option(help="only given up on at or after (ISO time, 19:55, or 15m back)"),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="only to the URLs whose address holds this text")
    ] = None,
    retry_for: Annotated[
        float,
        typer.Option(
            min=0.1, help="seconds to keep trying each one that gets no answer or a 'not now'"
        ),
    ] = 30.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list what would be sent, send nothing")
    ] = False,
    forget: Annotated[
        bool,
        typer.Option(
            "--forget",
            help="send nothing: record them as handled by hand (the department was told "
            "another way), so they are owed no more",
        ),
    ] = False,
) -> None:
    """Deliver again the dispatch orders and escalations the notifier gave up on, each to the
    URL it failed at. Exit 0 when every one was delivered (or forgotten), 1 when some were
    not, 2 when nothing could be tried (no secret, the database unreadable)."""
    from cityvitals import db
    from sinks.deadletters import mark_resent, owed
    from sinks.webhook import deliver_as, duration, http_post, notice
    from wiring.cli_registry_common import actor

    conf = settings()
    after = time_option(since, "--since")
    if not (dry_run or forget) and not conf.webhook_secret.get_secret_value():
        raise _unusable("CITYVITALS_WEBHOOK_SECRET is empty: receivers could not trust a signature")
    by = actor()  # before anything is sent: a delivery is recorded right after it
    configured = {public_url(u): u for u in conf.webhook_urls}
    try:
        with db.connect(conf) as conn:
            found = [o for o in owed(conn, after) if url is None or url in o.url]
            if not found:
                typer.echo("nothing owed: every delivery the notifier gave up on was sent again")
                return
            typer.echo(f"{len(found)} owed (oldest first):")
            sent = failed = 0
            down: set[str] = set()  # URLs that did not take one in this run: later ones wait
            for one in found:
                letter = one.letter
                what = f"{letter.received_at:%Y-%m-%d %H:%M:%S} UTC  {letter.source} -> {one.url}"
                if forget:
                    mark_resent(conn, one, by, datetime.now(UTC), forgotten=True)
                    conn.commit()
                    typer.echo(f"  {what}: forgotten (recorded by {by})")
                    sent += 1
                    continue
                topic = _topic_of(letter.source, conf)
                if topic is None:
                    typer.echo(f"  {what}: not sent: not a message of dispatch or escalations here")
                    failed += 1
                    continue
                try:
                    message = notice(topic, base64.b64decode(letter.payload_b64))
                except ValidationError as exc:
                    typer.echo(f"  {what}: not sent: not its topic's contract: {exc}")
                    failed += 1
                    continue
                label = f"{message.event} {message.delivery_id}"
                full = configured.get(one.url)
                if full is None:
                    typer.echo(
                        f"  {what}: {label}: not sent: the URL is not in CITYVITALS_WEBHOOK_URLS "
                        f"(configured: {', '.join(configured) or 'none'}; --forget once the "
                        "department was told another way)"
                    )
                    failed += 1
                    continue
                if dry_run:
                    typer.echo(f"  {what}: {label}: would be sent")
                    continue
                if one.url in down:
                    typer.echo(f"  {what}: {label}: not sent: the URL did not take an earlier one")
                    failed += 1
                    continue
                result = deliver_as(
                    conf, full, message, post=http_post, wait=_sleep, retry_for_s=retry_for
                )
                assert result is not None  # _sleep never stops a delivery
                if result.delivered:
                    mark_resent(conn, one, by, datetime.now(UTC))
                    conn.commit()
                    tries = f" after {result.attempts} attempts over {duration(result.seconds)}"
                    typer.echo(
                        f"  {what}: {label}: delivered{tries if result.attempts > 1 else ''}"
                    )
                    sent += 1
                else:
                    typer.echo(f"  {what}: {label}: still not delivered: {result.outcome()}")
                    down.add(one.url)
                    failed += 1
    except psycopg.Error as exc:
        raise _unusable(f"the database cannot be read: {exc}") from None
    if dry_run:
        return
    typer.echo(f"{sent} {'forgotten' if forget else 'delivered'}, {failed} not")
    if failed:
        raise typer.Exit(1)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
