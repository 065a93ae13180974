"""``trustwire broker serve|check``: run the credential broker of a home, or check a config.

``serve`` reads a Secretless ``version: "2"`` file and starts one listener per service
(see :mod:`trustwire.broker.proxy`). TCP listeners use TLS 1.3 with a server certificate
issued at start by the home's domain CA (kept in memory only, never written) and require
the agents' trustwire client certificates; unix-socket listeners are created 0600 and act
for ``--unix-agent``. Policy comes from the home's ``policy.yaml`` (``broker.use``; SIGHUP
reloads it), agents from the home's directory (re-read when it changes, so a revoked agent
is refused within a fraction of a second), and every brokered request is a security event
in ``events.jsonl`` and the signed audit trail, as with ``trustwire serve``.

Run standalone, the broker appends to the home's audit trail itself, so do not run it at
the same time as ``trustwire serve`` on the same home: start it with the coordinator
instead (:func:`start_broker_in`, which shares the coordinator's event stream, policy and
store).

``check`` parses a config and lists its services, or prints the precise error (exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from trustwire.broker.config import BrokerConfig, ServiceConfig, load_config
from trustwire.cli.failure import CommandFailed
from trustwire.cli.output import Output, safe
from trustwire.cli.settings import Settings, pass_settings, run
from trustwire.errors import AuditError, StoreError
from trustwire.events import EventStream
from trustwire.home import Home
from trustwire.policy import PolicyEngine
from trustwire.store.base import AgentRecord, Store
from trustwire.transport.tls import server_ssl_context

if TYPE_CHECKING:  # the proxy (aiohttp, httpx, authlib) is imported when a broker starts
    from trustwire.broker.proxy import Listener, RunningBroker

__all__ = ["AgentCache", "BrokerService", "broker", "start_broker_in"]

log = logging.getLogger("trustwire.cli.broker")

DIRECTORY_POLL = 0.2
"""Seconds between checks of the agent directory's generation counter."""

_WILDCARDS = {"", "0.0.0.0", "::"}  # noqa: S104 - names, not a bind


class AgentCache:
    """The home's agent directory in memory, for the broker's synchronous lookups.

    :meth:`lookup` takes a DID or an agent name. :meth:`run` re-reads the directory
    whenever its generation counter moves (an agent enrolled, revoked or rotated by
    another process).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_did: dict[str, AgentRecord] = {}
        self._by_name: dict[str, AgentRecord] = {}
        self._generation: int | None = None

    async def load(self) -> None:
        """Read the whole directory now."""
        generation = await self._store.agents.generation()
        records = await self._store.agents.list()
        self._by_did = {record.did: record for record in records}
        self._by_name = {record.name: record for record in records}
        self._generation = generation

    def lookup(self, key: str) -> AgentRecord | None:
        """The record of the agent with DID or name ``key``, or ``None``."""
        if key.startswith("did:"):
            return self._by_did.get(key)
        return self._by_name.get(key)

    async def run(self, interval: float = DIRECTORY_POLL) -> None:
        """Reload whenever the directory changes; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._store.agents.generation() != self._generation:
                    await self.load()
            except StoreError as exc:
                log.warning("broker: agent directory not reloaded (will retry): %s", exc)


class BrokerService:
    """The broker started in a home: its listeners and the directory watcher.
    ``await close()`` stops both (and closes the store if it opened it)."""

    def __init__(
        self,
        running: RunningBroker,
        cache: AgentCache,
        watcher: asyncio.Task[None],
        owned_store: Store | None,
    ) -> None:
        self.running = running
        self.cache = cache
        self._watcher = watcher
        self._owned_store = owned_store

    @property
    def listeners(self) -> list[Listener]:
        """Where each service listens (TCP ports as bound)."""
        return list(self.running.listeners)

    async def close(self) -> None:
        """Stop the listeners and the watcher; idempotent."""
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        try:
            await self.running.close()
        finally:
            if self._owned_store is not None:
                store, self._owned_store = self._owned_store, None
                await store.close()


def _server_names(config: BrokerConfig, extra: Sequence[str]) -> tuple[str, ...]:
    names = ["localhost", "127.0.0.1", "::1"]
    for service in config.services.values():
        host = service.listen_on.host
        if service.listen_on.scheme == "tcp" and host and host not in _WILDCARDS:
            names.append(host)
    names.extend(extra)
    return tuple(dict.fromkeys(names))


async def start_broker_in(
    home: Home,
    config_path: str | os.PathLike[str],
    *,
    events: EventStream,
    policy: PolicyEngine | None = None,
    store: Store | None = None,
    upstream_ca: str | None = None,
    unix_agent: str | None = None,
    server_names: Sequence[str] = (),
    clock: Callable[[], float] = time.time,
) -> BrokerService:
    """Start the broker of ``config_path`` in ``home``, emitting into ``events``.

    ``policy`` and ``store`` default to the home's (a store opened here is closed by
    :meth:`BrokerService.close`); pass the coordinator's to share its policy reloads
    and directory. The TCP listeners' server certificate is issued now by the domain CA
    for localhost, the listeners' host names and ``server_names``. ``unix_agent`` (a
    name or DID) is the enrolled agent unix-socket listeners act for.

    Raises :class:`~trustwire.errors.ConfigurationError` for a bad config file and
    ``OSError`` when a listener cannot bind.
    """
    from trustwire.broker.proxy import start_broker

    config = load_config(config_path)
    if policy is None:
        policy = PolicyEngine(home.policy())
    ca = home.ca()
    issued = ca.issue_server_certificate(_server_names(config, server_names), now=datetime.now(UTC))
    tls = server_ssl_context(issued.cert_pem, issued.key_pem, ca.cert_pem)
    owned: Store | None = None
    if store is None:
        store = owned = await home.open_store()
    try:
        cache = AgentCache(store)
        await cache.load()
        if unix_agent is not None and cache.lookup(unix_agent) is None:
            raise CommandFailed(f"--unix-agent {unix_agent!r}: no such enrolled agent")
        running = await start_broker(
            config,
            policy=policy,
            agents=cache.lookup,
            tls=tls,
            events=events,
            upstream_ca=upstream_ca,
            clock=clock,
            unix_agent=unix_agent,
        )
    except BaseException:
        if owned is not None:
            await owned.close()
        raise
    watcher = asyncio.create_task(cache.run(), name="broker-directory")
    return BrokerService(running, cache, watcher, owned)


@click.group()
def broker() -> None:
    """Run the credential broker (agents use services without holding their secrets)."""


@broker.command("check")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Secretless version 2 file (secretless.yml).",
)
def check(config_path: Path) -> None:
    """Validate a broker config and list its services (exit 3 with the precise error)."""
    config = load_config(config_path)
    out = Output()
    out.table(
        ["service", "listens on", "credentials", "injects", "forceSSL", "OAuth2"],
        [_service_row(service) for service in config.services.values()],
    )
    out.line(f"{len(config.services)} service(s) in {safe(str(config_path))}: configuration valid")


def _service_row(service: ServiceConfig) -> list[str]:
    listen = service.listen_on
    where = (
        f"unix://{listen.path}" if listen.scheme == "unix" else f"tcp://{listen.host}:{listen.port}"
    )
    credentials = ", ".join(
        f"{name} ({source.provider})" for name, source in service.credentials.items()
    )
    injects = [f"header {name}" for name in service.http.headers]
    injects += [f"query {name}" for name in service.http.query_params]
    return [
        safe(service.name),
        safe(where),
        safe(credentials) or "-",
        safe(", ".join(injects)) or "-",
        "yes" if service.http.force_ssl else "no",
        "yes" if service.oauth2 is not None else "no",
    ]


@broker.command("serve")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Secretless version 2 file (secretless.yml).",
)
@click.option(
    "--upstream-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="PEM bundle trusted for upstream TLS instead of the system roots.",
)
@click.option(
    "--unix-agent",
    default=None,
    metavar="NAME",
    help="The agent (name or DID) that unix-socket listeners act for.",
)
@click.option(
    "--server-name",
    "server_names",
    multiple=True,
    metavar="NAME",
    help="An extra host name or address for the broker's TLS certificate (repeatable).",
)
@pass_settings
def serve(
    settings: Settings,
    config_path: Path,
    upstream_ca: Path | None,
    unix_agent: str | None,
    server_names: tuple[str, ...],
) -> None:
    """Run the credential broker of the home until Ctrl-C or SIGTERM (SIGHUP reloads
    the policy).

    Each brokered request is a security event in HOME/events.jsonl and the audit log.
    """
    home = settings.home()
    load_config(config_path)  # a bad file is reported before anything is opened
    logger = logging.getLogger("trustwire")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    run(
        _serve(
            home,
            config_path,
            upstream_ca=None if upstream_ca is None else str(upstream_ca),
            unix_agent=unix_agent,
            server_names=server_names,
        )
    )


async def _serve(
    home: Home,
    config_path: Path,
    *,
    upstream_ca: str | None,
    unix_agent: str | None,
    server_names: Sequence[str],
) -> None:
    from trustwire.cli.instruments import Instruments  # the audit trail and its sinks

    policy_config = home.policy()
    policy = PolicyEngine(policy_config)
    try:
        instruments = Instruments.open(home, policy_config.monitoring)
    except AuditError as exc:
        raise CommandFailed(
            f"{home.audit_path}: {exc}; refusing to append to a damaged audit log"
        ) from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    service: BrokerService | None = None

    def on_stop(signum: signal.Signals) -> None:
        log.info("received %s, stopping", signum.name)
        stop.set()

    def on_reload() -> None:
        from trustwire.cli.serve import _reload_policy

        _reload_policy(home, policy, instruments)

    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, on_stop, signum)
                installed.append(signum)
        if hasattr(signal, "SIGHUP"):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal.SIGHUP, on_reload)
                installed.append(signal.SIGHUP)
        try:
            service = await start_broker_in(
                home,
                config_path,
                events=instruments.events,
                policy=policy,
                upstream_ca=upstream_ca,
                unix_agent=unix_agent,
                server_names=server_names,
            )
        except OSError as exc:
            raise CommandFailed(f"cannot start the broker: {exc.strerror or exc}") from None
        out = Output()
        out.table(
            ["service", "listening on", "agents authenticate by"],
            [
                [
                    safe(item.service),
                    safe(item.address),
                    "client certificate (mTLS)"
                    if item.scheme == "tcp"
                    else f"socket permissions (acts for {safe(unix_agent or '?')})",
                ]
                for item in service.listeners
            ],
        )
        out.line("credential broker running; stop with Ctrl-C")
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        try:
            if service is not None:
                await service.close()
        finally:
            await instruments.aclose()
        log.info("credential broker stopped")
