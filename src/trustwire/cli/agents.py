"""``trustwire agent create|list|revoke|rotate|invite|join``: the agent lifecycle.

* ``revoke`` marks an agent revoked in the registry; a running ``trustwire serve`` cuts
  its connection within a fraction of a second and refuses it from then on.
* ``rotate`` gives an agent a new X25519 agreement key (same DID) and a new certificate.
* ``invite`` prints a one-time token (shown once; only its SHA-256 is stored) with which
  ``join``, on another machine, enrols an agent whose keys never leave that machine.

Every change goes through the registry (``Home.open_registry``): the agent directory
and the signed identity log change together.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from trustwire.cli.directory import resolve_agent
from trustwire.cli.output import Output, format_time, safe
from trustwire.cli.settings import (
    Settings,
    check_address,
    check_agent_name,
    check_recipient,
    check_roles,
    pass_settings,
    run,
)
from trustwire.client.agent import parse_address
from trustwire.client.join import join as join_domain
from trustwire.client.join import normalize_fingerprint
from trustwire.coordinator.join import token_hash
from trustwire.crypto.random import random_bytes
from trustwire.crypto.signing import VerifyKey
from trustwire.crypto.x509 import TlsKey, certificate_common_name, certificate_not_after
from trustwire.errors import ConfigurationError, IdentityError
from trustwire.events import EventKind, EventStream, JsonlSink
from trustwire.home import Home
from trustwire.identity.keys import AgentIdentity
from trustwire.store.base import AgentRecord

__all__ = ["agent"]

DEFAULT_INVITE_TTL = timedelta(hours=1)


@click.group()
def agent() -> None:
    """Enrol, list, revoke, rotate and invite agents; join a domain."""


@agent.command("create")
@click.argument("name", callback=check_agent_name)
@click.option(
    "--role",
    "roles",
    multiple=True,
    callback=check_roles,
    metavar="ROLE",
    help="A role the policy can select the agent by (repeatable).",
)
@pass_settings
def create(settings: Settings, name: str, roles: tuple[str, ...]) -> None:
    """Create agent NAME: keys, a did:key identity, a certificate, and enrolment.

    A running `trustwire serve` notices the new agent within a few seconds.
    """
    out = Output()
    home = settings.home()
    # Opening the CA first checks the passphrase before anything is written: enrolment
    # happens before the certificate is issued, so a wrong passphrase found later would
    # leave an enrolled agent without a certificate.
    home.ca()
    if home.agent_dir(name).exists():
        raise ConfigurationError(f"an agent named {name!r} already exists in {home.path}")
    _warn_undefined_roles(out, home, roles)
    identity = run(home.create_agent(name, roles=roles))
    _record_enrolment(home, identity, roles)
    expiry = home.certificate_expiry(name)
    out.line(f"[green]✔[/green] created agent [bold]{safe(name)}[/bold]")
    out.table(
        ["field", "value"],
        [
            ["DID", identity.did],
            ["roles", safe(", ".join(roles)) or "-"],
            ["certificate", f"expires {format_time(expiry.timestamp())} (renewed on use)"],
            ["keys", safe(str(home.agent_dir(name)))],
        ],
    )


def _warn_undefined_roles(out: Output, home: Home, roles: tuple[str, ...]) -> None:
    """Warn about roles the policy does not define (no rule can select them yet)."""
    try:
        defined = home.policy().roles
    except ConfigurationError as exc:
        out.warn(f"could not read the policy to check roles: {safe(str(exc))}")
        return
    for role in roles:
        if role not in defined:
            out.warn(f"role {safe(role)!r} is not defined in policy.yaml; no rule selects it yet")


def _record_enrolment(home: Home, identity: AgentIdentity, roles: tuple[str, ...]) -> None:
    """Append an ``agent.enrolled`` event to the home's security-event log."""
    events = EventStream([JsonlSink(home.events_path)])
    try:
        events.record(
            EventKind.AGENT_ENROLLED,
            agent=identity.did,
            name=identity.name,
            roles=",".join(roles),
        )
    finally:
        events.close()


@agent.command("list")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per agent and line.")
@pass_settings
def list_agents(settings: Settings, json_mode: bool) -> None:
    """List enrolled agents: name, DID, roles, certificate expiry."""
    out = Output(json_mode=json_mode)
    home = settings.home(keys=False)
    records = run(_list_records(home))
    rows: list[list[str]] = []
    for record in records:
        expiry = _certificate_expiry(home, record.name)
        status = "revoked" if record.revoked else "active"
        if json_mode:
            out.json(
                {
                    "name": record.name,
                    "did": record.did,
                    "roles": list(record.roles),
                    "certificate_expires": format_time(expiry.timestamp()) if expiry else None,
                    "status": status,
                }
            )
            continue
        rows.append(
            [
                safe(record.name),
                record.did,
                safe(", ".join(record.roles)) or "-",
                _expiry_cell(expiry),
                status if status == "active" else f"[red]{status}[/red]",
            ]
        )
    if json_mode:
        return
    if not rows:
        out.line("no agents yet (create one with [cyan]trustwire agent create NAME[/cyan])")
        return
    out.table(["name", "DID", "roles", "certificate expires", "status"], rows)


async def _list_records(home: Home) -> list[AgentRecord]:
    store = await home.open_store()
    try:
        records = await store.agents.list()
    finally:
        await store.close()
    return sorted(records, key=lambda record: record.name)


def _certificate_expiry(home: Home, name: str) -> datetime | None:
    """The agent's certificate expiry, or ``None`` when its files are not in this home."""
    try:
        return home.certificate_expiry(name)
    except (OSError, IdentityError):
        return None


def _expiry_cell(expiry: datetime | None) -> str:
    if expiry is None:
        return "-"
    text = format_time(expiry.timestamp())
    if expiry <= datetime.now(UTC):
        return f"[yellow]{text} (expired; renewed on next use)[/yellow]"
    return text


def _record(home: Home, kind: EventKind, did: str, **details: str) -> None:
    """Append one event to the home's security-event log."""
    events = EventStream([JsonlSink(home.events_path)])
    try:
        events.record(kind, agent=did, **details)
    finally:
        events.close()


@agent.command("revoke")
@click.argument("who", metavar="NAME|DID", callback=check_recipient)
@click.option("--reason", default=None, metavar="TEXT", help="Why (kept in the event log).")
@pass_settings
def revoke(settings: Settings, who: str, reason: str | None) -> None:
    """Revoke agent NAME (or DID) for good.

    A running `trustwire serve` closes its connection within a second, refuses it
    from then on, drops messages queued for it and messages it sent that are still
    queued. Names and DIDs of revoked agents are never reused.
    """
    out = Output()
    home = settings.home()
    record, already = run(_revoke(home, who, datetime.now(UTC).timestamp()))
    if already:
        out.line(
            f"agent [bold]{safe(record.name)}[/bold] was already revoked "
            f"({format_time(record.revoked_at or 0)})"
        )
        return
    _record(
        home,
        EventKind.AGENT_REVOKED,
        record.did,
        name=record.name,
        reason=reason or "revoked by the operator",
    )
    out.line(f"[green]✔[/green] revoked agent [bold]{safe(record.name)}[/bold] ({record.did})")


async def _revoke(home: Home, who: str, now: float) -> tuple[AgentRecord, bool]:
    store = await home.open_store()
    try:
        record = await resolve_agent(store, who)
        if record.revoked:
            return record, True
        registry = await home.open_registry(store)
        try:
            await registry.revoke(record.did, at=now)
        finally:
            await registry.close()
        return record, False
    finally:
        await store.close()


@agent.command("rotate")
@click.argument("name", callback=check_agent_name)
@pass_settings
def rotate(settings: Settings, name: str) -> None:
    """Give agent NAME a new agreement key (same DID) and a new certificate.

    A running `trustwire serve` closes the agent's connection (it reconnects with the
    new keys) and tells its peers, whose SDKs drop their channels with it and look
    its new key up. Messages sealed to the old key and still queued cannot be opened
    with the new one.
    """
    out = Output()
    home = settings.home()
    ca = home.ca()  # checks the passphrase before anything changes
    identity, _credentials = home.load_agent(name, renew=False)
    now = datetime.now(UTC)
    # Strictly later than the key it replaces, even within the same second.
    issued_at = max(int(now.timestamp()), identity.issued_at + 1)
    rotated = identity.rotate_agreement(issued_at=issued_at)
    run(_rotate(home, rotated))
    # The registry first: a failure there leaves the agent's files (and key) unchanged.
    rotated.save(home.agent_dir(name), home.passphrase)
    home.issue_certificate(rotated, now=now, ca=ca)
    out.line(f"[green]✔[/green] rotated the agreement key of [bold]{safe(name)}[/bold]")
    out.table(
        ["field", "value"],
        [
            ["DID", rotated.did],
            ["agreement key", rotated.agreement.public.hex()],
            ["issued at", format_time(issued_at)],
        ],
    )


async def _rotate(home: Home, identity: AgentIdentity) -> None:
    store = await home.open_store()
    try:
        registry = await home.open_registry(store)
        try:
            await registry.rotate_agreement(
                identity.did,
                agreement_key=identity.agreement.public,
                agreement_statement=identity.agreement_statement(issued_at=identity.issued_at),
                agreement_issued_at=identity.issued_at,
            )
        finally:
            await registry.close()
    finally:
        await store.close()


_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _check_ttl(_ctx: click.Context, _param: click.Parameter, value: str) -> timedelta:
    """Click callback: ``30s``, ``15m``, ``1h``, ``7d``."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        raise click.BadParameter(f"{value!r} is not a duration such as 30m, 1h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@agent.command("invite")
@click.argument("name", callback=check_agent_name)
@click.option(
    "--role",
    "roles",
    multiple=True,
    callback=check_roles,
    metavar="ROLE",
    help="A role the joined agent gets (repeatable).",
)
@click.option(
    "--ttl",
    default="1h",
    show_default=True,
    callback=_check_ttl,
    metavar="DURATION",
    help="How long the token stays valid (30m, 1h, 7d).",
)
@pass_settings
def invite(settings: Settings, name: str, roles: tuple[str, ...], ttl: timedelta) -> None:
    """Print a one-time token with which an agent NAME can join from another machine.

    The token is shown once and only its SHA-256 is stored; pass it on privately,
    with the CA fingerprint, to whoever runs `trustwire agent join`.
    """
    out = Output()
    home = settings.home(keys=False)
    _warn_undefined_roles(out, home, roles)
    token = _new_token()
    expires = datetime.now(UTC) + ttl
    run(_invite(home, name, roles, token, expires.timestamp()))
    host, port = parse_address(home.config.coordinator)
    out.line(f"[green]✔[/green] invitation for [bold]{safe(name)}[/bold]")
    out.table(
        ["field", "value"],
        [
            ["token", token],
            ["CA fingerprint", home.config.ca_fingerprint],
            ["roles", safe(", ".join(roles)) or "-"],
            ["expires", format_time(expires.timestamp())],
        ],
    )
    out.line(
        f"on the new machine: trustwire --home DIR agent join TOKEN --name {safe(name)} "
        f"--coordinator {safe(host)}:{port} --ca-fingerprint {home.config.ca_fingerprint}"
    )


def _new_token() -> str:
    """32 random bytes, unpadded base64url, never starting with ``-`` (which the command
    line would take for an option; redrawing costs under 0.03 bits of the 256)."""
    while True:
        token = base64.urlsafe_b64encode(random_bytes(32)).rstrip(b"=").decode("ascii")
        if not token.startswith("-"):
            return token


async def _invite(
    home: Home, name: str, roles: Sequence[str], token: str, expires_at: float
) -> None:
    store = await home.open_store()
    try:
        if await store.agents.get_by_name(name) is not None:
            raise ConfigurationError(f"an agent named {name!r} is already enrolled")
        await store.tokens.create(
            token_hash(token), name=name, roles=tuple(roles), expires_at=expires_at
        )
    finally:
        await store.close()


@agent.command("join")
@click.argument("token")
@click.option("--name", required=True, callback=check_agent_name, help="The invited name.")
@click.option(
    "--coordinator",
    required=True,
    callback=check_address,
    metavar="HOST:PORT",
    help="The coordinator's address (as in the invitation).",
)
@click.option(
    "--join-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the coordinator's join listener [default: the coordinator port + 1].",
)
@click.option(
    "--ca-fingerprint",
    required=True,
    metavar="SHA256",
    help="The domain CA fingerprint the operator passed along with the token.",
)
@click.option(
    "--home",
    "home_path",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to create the agent [default: the global --home].",
)
@pass_settings
def join(
    settings: Settings,
    token: str,
    name: str,
    coordinator: str,
    join_port: int | None,
    ca_fingerprint: str,
    home_path: Path | None,
) -> None:
    """Join a domain as agent NAME with a one-time TOKEN.

    Keys are generated here and never sent; the coordinator's CA must have the given
    fingerprint or nothing (in particular not the token) is sent. Afterwards `trustwire
    send/listen --as NAME` work from this home.
    """
    out = Output()
    try:
        expected = normalize_fingerprint(ca_fingerprint)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ca-fingerprint") from None
    if not re.fullmatch(r"[A-Za-z0-9_-]{43}", token.strip()):
        raise click.BadParameter("not a join token (43 base64url characters)", param_hint="TOKEN")
    where = Home(home_path or settings.home_path)
    if where.agent_dir(name).exists():
        raise ConfigurationError(f"an agent named {name!r} already exists in {where.path}")
    host, port = parse_address(coordinator)
    now = datetime.now(UTC)
    identity = AgentIdentity.generate(name, issued_at=int(now.timestamp()))
    tls_key = TlsKey.generate()
    joined = run(
        join_domain(
            token.strip(),
            identity,
            tls_key,
            host=host,
            port=join_port or port + 1,
            ca_fingerprint=expected,
            now=now,
        )
    )
    home = Home.init_joined(
        where.path,
        domain=certificate_common_name(joined.ca_pem) or "trustwire",
        coordinator=coordinator,
        ca_fingerprint=joined.ca_fingerprint,
        log_key=VerifyKey.from_bytes(bytes.fromhex(joined.log_key)) if joined.log_key else None,
        passphrase=settings.passphrase(),
    )
    home.save_agent(
        identity,
        cert_pem=joined.cert_pem,
        tls_key_pem=tls_key.to_pem(),
        ca_pem=joined.ca_pem,
    )
    expiry = certificate_not_after(joined.cert_pem)
    out.line(f"[green]✔[/green] joined as [bold]{safe(name)}[/bold]")
    out.table(
        ["field", "value"],
        [
            ["DID", identity.did],
            ["coordinator", safe(coordinator)],
            ["certificate", f"expires {format_time(expiry.timestamp())} (renewed on use)"],
            ["keys", safe(str(home.agent_dir(name)))],
        ],
    )
