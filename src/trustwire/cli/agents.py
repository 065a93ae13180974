"""``trustwire agent create|list``: enrol agents and show the registry."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from trustwire.cli.output import Output, format_time, safe
from trustwire.cli.settings import Settings, check_agent_name, check_roles, pass_settings, run
from trustwire.errors import ConfigurationError, IdentityError
from trustwire.events import EventKind, EventStream, JsonlSink
from trustwire.home import Home
from trustwire.identity.keys import AgentIdentity
from trustwire.store.base import AgentRecord

__all__ = ["agent"]


@click.group()
def agent() -> None:
    """Enrol agents and list them."""


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
