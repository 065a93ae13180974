"""``trustwire serve``: run the coordinator of a home until a signal stops it.

Signals: SIGINT and SIGTERM stop it gracefully (agents are told, the store is flushed
and closed); SIGHUP re-reads ``policy.yaml`` and puts it in force, keeping the previous
policy when the file is invalid. Every couple of seconds the agent directory is reloaded
from the store, so agents enrolled by ``trustwire agent create`` (another process) can
connect without a restart; once a minute expired delivery tombstones are purged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import click

from trustwire.cli.failure import CommandFailed
from trustwire.cli.settings import Settings, pass_settings, run
from trustwire.client.agent import parse_address
from trustwire.coordinator.server import Coordinator, CoordinatorConfig
from trustwire.errors import ConfigurationError, StoreError
from trustwire.events import EventKind, EventStream, JsonlSink
from trustwire.home import Home
from trustwire.policy import PolicyEngine, load_policy
from trustwire.store.base import Store
from trustwire.transport.tls import server_ssl_context

__all__ = ["serve"]

log = logging.getLogger("trustwire.cli.serve")

REFRESH_INTERVAL = 2.0
"""Seconds between reloads of the agent directory."""

PURGE_INTERVAL = 60.0
"""Seconds between purges of expired delivery tombstones."""


@click.command(short_help="Run the coordinator.")
@click.option("--host", default=None, help="Address to listen on [default: from the config].")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to listen on; 0 picks a free one [default: from the config].",
)
@pass_settings
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """Run the coordinator (stop with Ctrl-C or SIGTERM; SIGHUP reloads the policy)."""
    home = settings.home()
    try:
        config_host, config_port = parse_address(home.config.coordinator)
    except ValueError as exc:
        raise ConfigurationError(f"{home.path}/config.json: {exc}") from None
    logger = logging.getLogger("trustwire")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    run(_serve(home, host or config_host, config_port if port is None else port))


async def _serve(home: Home, host: str, port: int) -> None:
    policy = PolicyEngine(home.policy())
    tls = server_ssl_context(*home.coordinator_tls())
    store = await home.open_store()
    events = EventStream([JsonlSink(home.events_path)])
    coordinator = Coordinator(
        store=store,
        policy=policy,
        tls=tls,
        events=events,
        config=CoordinatorConfig(host=host, port=port),
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    housekeeping: asyncio.Task[None] | None = None
    started = False

    def on_stop(signum: signal.Signals) -> None:
        log.info("received %s, stopping", signum.name)
        stop.set()

    def on_reload() -> None:
        _reload_policy(home, policy, events)

    try:
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
            "domain %s; policy %s (%d rules); events %s",
            home.config.domain,
            home.policy_path,
            len(policy.config.rules),
            home.events_path,
        )
        housekeeping = asyncio.create_task(_housekeeping(coordinator, store))
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if housekeeping is not None:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
        if started:
            await coordinator.close()
        await store.close()
        events.close()
        if started:
            log.info("coordinator stopped")


def _reload_policy(home: Home, policy: PolicyEngine, events: EventStream) -> None:
    """Put the policy file in force again (SIGHUP); keep the old one if it is invalid."""
    try:
        config = load_policy(home.policy_path)
        policy.replace(config)
    except ConfigurationError as exc:
        log.error("policy not reloaded, the previous policy stays in force: %s", exc)
        events.record(EventKind.POLICY_RELOADED, reason="invalid policy; previous policy kept")
        return
    log.info("policy reloaded from %s (%d rules)", home.policy_path, len(config.rules))
    events.record(EventKind.POLICY_RELOADED, rules=len(config.rules))


async def _housekeeping(coordinator: Coordinator, store: Store) -> None:
    """Reload the agent directory every few seconds and purge old tombstones."""
    last_purge = time.monotonic()
    while True:
        await asyncio.sleep(REFRESH_INTERVAL)
        try:
            await coordinator.refresh_agents()
            if time.monotonic() - last_purge >= PURGE_INTERVAL:
                last_purge = time.monotonic()
                await store.queue.purge_expired(now=time.time())
        except StoreError as exc:
            log.warning("housekeeping failed (will retry): %s", exc)
