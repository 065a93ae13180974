"""``trustwire serve``: run the coordinator of a home until a signal stops it.

Every security event goes to ``events.jsonl``, to the audit trail (``audit.db``, a
Merkle log whose heads the domain log key signs), to the Prometheus metrics and, when
the policy's ``monitoring.anomaly_detection`` is on, to the anomaly detectors, whose
alerts go to stderr, ``alerts.jsonl``, the audit trail and (``automatic_alerts`` on and
a webhook configured) a signed webhook; see :mod:`trustwire.cli.instruments`.

Signals: SIGINT and SIGTERM stop it gracefully (agents are told, alert sinks drained,
the audit trail flushed and a final head signed, the store closed); SIGHUP re-reads
``policy.yaml`` and puts it in force (monitoring switches included), keeping the
previous policy when the file is invalid; either way a ``policy.reloaded`` event is
recorded. Every couple of seconds the agent directory is reloaded from the store, so
agents enrolled by ``trustwire agent create`` (another process) can connect without a
restart, and the queue-depth gauge is updated; once a minute expired delivery
tombstones are purged.

The webhook secret is read from ``TRUSTWIRE_WEBHOOK_SECRET`` only (never an option, so
it does not show in process listings) and is never logged; neither is the webhook URL
beyond its scheme, host and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

import click

from trustwire.cli.failure import CommandFailed
from trustwire.cli.instruments import Instruments, Webhook
from trustwire.cli.settings import Settings, pass_settings, run
from trustwire.client.agent import parse_address
from trustwire.coordinator.server import Coordinator, CoordinatorConfig
from trustwire.errors import AuditError, ConfigurationError, StoreError
from trustwire.events import EventKind, EventStream
from trustwire.home import Home
from trustwire.policy import PolicyEngine, load_policy
from trustwire.store.base import Store
from trustwire.transport.tls import server_ssl_context

__all__ = ["WEBHOOK_SECRET_ENV", "WEBHOOK_URL_ENV", "serve"]

log = logging.getLogger("trustwire.cli.serve")

REFRESH_INTERVAL = 2.0
"""Seconds between reloads of the agent directory."""

PURGE_INTERVAL = 60.0
"""Seconds between purges of expired delivery tombstones."""

WEBHOOK_URL_ENV = "TRUSTWIRE_WEBHOOK_URL"
WEBHOOK_SECRET_ENV = "TRUSTWIRE_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret


@click.command(short_help="Run the coordinator.")
@click.option("--host", default=None, help="Address to listen on [default: from the config].")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to listen on; 0 picks a free one [default: from the config].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics; 0 picks a free port "
    "(logged) [default: no metrics endpoint].",
)
@click.option(
    "--metrics-host",
    default=None,
    help="Address of the metrics endpoint [default: the coordinator's]. It has no "
    "authentication: keep it on loopback or behind an authenticating proxy.",
)
@click.option(
    "--webhook-url",
    envvar=WEBHOOK_URL_ENV,
    default=None,
    metavar="URL",
    help=f"POST alerts here, signed with ${WEBHOOK_SECRET_ENV} (when the policy's "
    f"monitoring.automatic_alerts is on) [env {WEBHOOK_URL_ENV}].",
)
@pass_settings
def serve(
    settings: Settings,
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    metrics_host: str | None,
    webhook_url: str | None,
) -> None:
    """Run the coordinator (stop with Ctrl-C or SIGTERM; SIGHUP reloads the policy).

    Security events are written to HOME/events.jsonl and to the signed audit log
    HOME/audit.db; alerts to HOME/alerts.jsonl.
    """
    home = settings.home()
    try:
        config_host, config_port = parse_address(home.config.coordinator)
    except ValueError as exc:
        raise ConfigurationError(f"{home.path}/config.json: {exc}") from None
    webhook = _webhook(webhook_url)
    logger = logging.getLogger("trustwire")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    listen_host = host or config_host
    run(
        _serve(
            home,
            listen_host,
            config_port if port is None else port,
            metrics=None if metrics_port is None else (metrics_host or listen_host, metrics_port),
            webhook=webhook,
        )
    )


def _webhook(url: str | None) -> Webhook | None:
    """The webhook to post alerts to: ``--webhook-url`` with the secret from the
    environment. A URL without a secret is a configuration error, not a silent skip."""
    if not url:
        return None
    secret = os.environ.get(WEBHOOK_SECRET_ENV)
    if not secret:
        raise ConfigurationError(
            f"a webhook URL is set but {WEBHOOK_SECRET_ENV} is not; alerts are signed with it"
        )
    return Webhook(url, secret)


async def _serve(
    home: Home,
    host: str,
    port: int,
    *,
    metrics: tuple[str, int] | None = None,
    webhook: Webhook | None = None,
) -> None:
    config = home.policy()
    policy = PolicyEngine(config)
    tls = server_ssl_context(*home.coordinator_tls())
    try:
        instruments = Instruments.open(home, config.monitoring, webhook=webhook)
    except AuditError as exc:
        # Appending to a log that contradicts its own signed head would bury the damage.
        raise CommandFailed(
            f"{home.audit_path}: {exc}; refusing to append to a damaged audit log (inspect "
            "it with `trustwire audit verify`, then move it aside to start a new one)"
        ) from None
    store: Store | None = None
    coordinator: Coordinator | None = None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    housekeeping: asyncio.Task[None] | None = None
    started = False

    def on_stop(signum: signal.Signals) -> None:
        log.info("received %s, stopping", signum.name)
        stop.set()

    def on_reload() -> None:
        _reload_policy(home, policy, instruments)

    try:
        if metrics is not None:
            try:
                server = instruments.serve_metrics(*metrics)
            except OSError as exc:
                raise CommandFailed(
                    f"cannot serve metrics on {metrics[0]}:{metrics[1]}: {exc.strerror or exc}"
                ) from None
            log.info("metrics on %s", server.url)
        store = await home.open_store()
        coordinator = Coordinator(
            store=store,
            policy=policy,
            tls=tls,
            events=instruments.events,
            config=CoordinatorConfig(host=host, port=port),
        )
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
                loop.add_signal_handler(signum, on_stop, signum)
                installed.append(signum)
        if hasattr(signal, "SIGHUP"):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal.SIGHUP, on_reload)
                installed.append(signal.SIGHUP)
        try:
            await coordinator.start()
        except OSError as exc:
            raise CommandFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        started = True
        log.info(
            "domain %s; policy %s (%d rules); events %s; audit log %s",
            home.config.domain,
            home.policy_path,
            len(policy.config.rules),
            home.events_path,
            home.audit_path,
        )
        housekeeping = asyncio.create_task(_housekeeping(coordinator, store, instruments))
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if housekeeping is not None:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
        if started and coordinator is not None:
            await coordinator.close()
        try:
            await instruments.aclose()
        finally:
            if store is not None:
                await store.close()
        if started:
            head = instruments.log.latest_head()
            log.info(
                "coordinator stopped; audit log signed at size %d",
                head.size if head is not None else 0,
            )


def _reload_policy(home: Home, policy: PolicyEngine, instruments: Instruments) -> None:
    """Put the policy file in force again (SIGHUP), monitoring switches included; keep
    the old policy if the file is invalid. Either way a ``policy.reloaded`` event is
    recorded."""
    events: EventStream = instruments.events
    try:
        config = load_policy(home.policy_path)
        policy.replace(config)
    except ConfigurationError as exc:
        log.error("policy not reloaded, the previous policy stays in force: %s", exc)
        events.record(EventKind.POLICY_RELOADED, reason="invalid policy; previous policy kept")
        return
    log.info("policy reloaded from %s (%d rules)", home.policy_path, len(config.rules))
    events.record(EventKind.POLICY_RELOADED, rules=len(config.rules))
    instruments.apply(config.monitoring)


async def _housekeeping(coordinator: Coordinator, store: Store, instruments: Instruments) -> None:
    """Reload the agent directory and update the queue gauge every few seconds; purge old
    tombstones once a minute."""
    last_purge = time.monotonic()
    while True:
        await asyncio.sleep(REFRESH_INTERVAL)
        try:
            await coordinator.refresh_agents()
            await instruments.tick(store)
            if time.monotonic() - last_purge >= PURGE_INTERVAL:
                last_purge = time.monotonic()
                await store.queue.purge_expired(now=time.time())
        except StoreError as exc:
            log.warning("housekeeping failed (will retry): %s", exc)
