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
recorded. Five times a second the agent directory's generation counter is read, and
the directory reloaded when it moved, so agents enrolled, revoked or rotated by
``trustwire agent ...`` (another process) take effect within a fraction of a second
without a restart (a revoked agent's connection is cut at once); every couple of
seconds the queue-depth gauge is updated; once a minute expired delivery tombstones
are purged.

Unless ``--no-join``, a join listener (see :mod:`trustwire.coordinator.join`) runs on
``--join-port`` (default: the coordinator's port + 1), where agents invited with
``trustwire agent invite`` enrol with their one-time token.

Sessions (``HOME/sessions.db``) and shared memories (``HOME/memory.db``, ciphertext
only) are served to agents in band; ``--api-port`` also serves the same API over HTTPS
with client certificates (docs/SESSIONS.md, docs/MEMORY.md; the OpenAPI document is at
``/api/openapi.json``). ``--broker secretless.yml`` starts the credential broker of that
file alongside (docs/BROKER.md), sharing the coordinator's policy, directory and audit
trail.

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

from trustwire.cli.broker import BrokerService, start_broker_in
from trustwire.cli.failure import CommandFailed
from trustwire.cli.instruments import Instruments, Webhook
from trustwire.cli.settings import Settings, pass_settings, run
from trustwire.client.agent import parse_address
from trustwire.coordinator.join import JoinConfig, JoinListener
from trustwire.coordinator.server import Coordinator, CoordinatorConfig
from trustwire.coordinator.services import CoordinatorServices
from trustwire.errors import AuditError, ConfigurationError, StoreError
from trustwire.events import EventKind, EventStream
from trustwire.home import Home
from trustwire.policy import PolicyEngine, load_policy
from trustwire.registry.registry import Registry
from trustwire.store.base import Store
from trustwire.transport.tls import join_server_ssl_context, server_ssl_context

__all__ = ["WEBHOOK_SECRET_ENV", "WEBHOOK_URL_ENV", "serve"]

log = logging.getLogger("trustwire.cli.serve")

DIRECTORY_POLL = 0.2
"""Seconds between checks of the agent directory's generation counter."""

REFRESH_INTERVAL = 2.0
"""Seconds between updates of the queue-depth gauge."""

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
@click.option(
    "--join-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the join listener (enrolment by `trustwire agent invite` token); 0 picks "
    "a free one (logged) [default: the coordinator port + 1].",
)
@click.option("--no-join", is_flag=True, help="Run no join listener.")
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also serve the sessions and shared-memory API over HTTPS (client certificate "
    "required) on this port; 0 picks a free one (logged) [default: `api_port` in "
    "config.json, else in band only].",
)
@click.option(
    "--broker",
    "broker_config",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    metavar="FILE",
    help="Start the credential broker of this secretless.yml alongside the coordinator "
    "[default: `broker` in config.json (relative to the home), else none].",
)
@pass_settings
def serve(
    settings: Settings,
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    metrics_host: str | None,
    webhook_url: str | None,
    join_port: int | None,
    no_join: bool,
    api_port: int | None,
    broker_config: str | None,
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
    if api_port is None:
        api_port = home.config.api_port
    if broker_config is None and home.config.broker is not None:
        broker_config = str(home.path / home.config.broker)
    listen_host = host or config_host
    listen_port = config_port if port is None else port
    join_at: tuple[int, bool] | None = None  # (port, whether it was asked for)
    if join_port is not None and not no_join:
        join_at = (join_port, True)
    elif not no_join:
        join_at = (listen_port + 1 if 0 < listen_port < 65535 else 0, False)
    run(
        _serve(
            home,
            listen_host,
            listen_port,
            metrics=None if metrics_port is None else (metrics_host or listen_host, metrics_port),
            webhook=webhook,
            join_port=join_at,
            api_port=api_port,
            broker_config=broker_config,
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
    join_port: tuple[int, bool] | None = None,
    api_port: int | None = None,
    broker_config: str | None = None,
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
    registry: Registry | None = None
    coordinator: Coordinator | None = None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    housekeeping: asyncio.Task[None] | None = None
    joining: JoinListener | None = None
    services: CoordinatorServices | None = None
    broker: BrokerService | None = None
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
        registry = await _open_registry(home, store)
        coordinator = Coordinator(
            store=store,
            policy=policy,
            tls=tls,
            events=instruments.events,
            config=CoordinatorConfig(host=host, port=port),
            registry=registry,
            # Issues the certificates agents renew in band (RENEW) and joiners get.
            issuer=home.ca(),
        )
        services = await CoordinatorServices.open(
            coordinator, sessions_url=home.sessions_url, memory_url=home.memory_url
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
        try:
            await services.start(https=None if api_port is None else (host, api_port, tls))
        except OSError as exc:
            raise CommandFailed(
                f"cannot serve the HTTPS API on {host}:{api_port}: {exc.strerror or exc}"
            ) from None
        if services.https is not None:
            url = services.https.url
            log.info("HTTPS API on %s (OpenAPI document: %s/api/openapi.json)", url, url)
        if broker_config is not None:
            broker = await _start_broker(home, broker_config, coordinator, store)
        if join_port is not None:
            joining = await _start_join(home, coordinator, registry, host, *join_port)
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
        if joining is not None:
            await joining.close()
        if broker is not None:
            await broker.close()
        if services is not None:
            await services.close()
        if started and coordinator is not None:
            await coordinator.close()
        try:
            await instruments.aclose()
        finally:
            try:
                if registry is not None:
                    await registry.close()
            finally:
                if store is not None:
                    await store.close()
        if started:
            head = instruments.log.latest_head()
            log.info(
                "coordinator stopped; audit log signed at size %d",
                head.size if head is not None else 0,
            )


async def _start_broker(
    home: Home, config_path: str, coordinator: Coordinator, store: Store
) -> BrokerService:
    """Start the credential broker of ``config_path`` with the coordinator's policy,
    directory and event stream."""
    try:
        broker = await start_broker_in(
            home, config_path, events=coordinator.events, policy=coordinator.policy, store=store
        )
    except OSError as exc:
        raise CommandFailed(f"cannot start the broker: {exc.strerror or exc}") from None
    for listener in broker.listeners:
        log.info("broker: service %s on %s", listener.service, listener.address)
    return broker


async def _open_registry(home: Home, store: Store) -> Registry:
    """Open the registry and check it against the directory before serving from it.

    A home enrolled before the registry existed has agents and an empty registry log:
    those agents are logged once, from the directory. Any other disagreement stops the
    coordinator rather than serving proofs that contradict what it enforces.
    """
    try:
        registry = await home.open_registry(store)
    except AuditError as exc:
        raise CommandFailed(
            f"{home.registry_path}: {exc}; refusing to serve from a damaged registry log "
            "(inspect it with `trustwire registry verify`)"
        ) from None
    try:
        if registry.head().size == 0:
            imported = await registry.import_directory()
            if imported:
                log.info("registry: logged %d agents enrolled before it existed", imported)
        await registry.verify_against_directory()
    except ConfigurationError as exc:
        await registry.close()
        raise CommandFailed(f"{home.registry_path}: {exc}") from None
    except BaseException:
        await registry.close()
        raise
    return registry


async def _start_join(
    home: Home,
    coordinator: Coordinator,
    registry: Registry,
    host: str,
    port: int,
    required: bool,
) -> JoinListener | None:
    """Start the join listener next to ``coordinator`` (same certificate, same events).

    When its port was not asked for (the default, coordinator port + 1) and is taken,
    serve runs without it and says so; an explicit ``--join-port`` that is taken fails.
    """
    cert_pem, key_pem, _ca_pem = home.coordinator_tls()
    log_key = home.log_verify_key().to_bytes().hex()
    listener = JoinListener(
        store=coordinator.store,
        enrolment=registry,
        issuer=coordinator.issuer or home.ca(),
        tls=join_server_ssl_context(cert_pem, key_pem),
        coordinator=home.config.coordinator,
        registry_key=log_key,  # the registry's heads are signed with the log key
        log_key=log_key,
        events=coordinator.events,
        config=JoinConfig(host=host, port=port),
        on_enrolled=coordinator.refresh_agents,
    )
    try:
        await listener.start()
    except OSError as exc:
        if not required:
            log.warning(
                "no join listener: cannot listen on %s:%d (%s); choose a --join-port",
                host,
                port,
                exc.strerror or exc,
            )
            return None
        raise CommandFailed(
            f"cannot listen for joins on {host}:{port}: {exc.strerror or exc} "
            "(choose another --join-port, or --no-join)"
        ) from None
    return listener


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
    """Watch the agent directory's generation and reload it when it changes (so a
    revocation, rotation or enrolment by another process takes effect within
    ``DIRECTORY_POLL`` seconds); update the queue gauge every ``REFRESH_INTERVAL``
    seconds; purge old tombstones once a minute."""
    last_tick = last_purge = time.monotonic()
    seen: int | None = None
    while True:
        await asyncio.sleep(DIRECTORY_POLL)
        try:
            generation = await store.agents.generation()
            if generation != seen:
                # The first round reloads too: a change between the coordinator's start
                # and the first reading would otherwise go unnoticed.
                await coordinator.refresh_agents()
                seen = generation
            now = time.monotonic()
            if now - last_tick >= REFRESH_INTERVAL:
                last_tick = now
                await instruments.tick(store)
            if now - last_purge >= PURGE_INTERVAL:
                last_purge = now
                await store.queue.purge_expired(now=time.time())
        except StoreError as exc:
            log.warning("housekeeping failed (will retry): %s", exc)
