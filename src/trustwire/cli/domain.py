"""``trustwire init``: create a trust domain in the home directory."""

from __future__ import annotations

import re

import click

from trustwire.cli.output import Output, safe
from trustwire.cli.settings import Settings, check_address, pass_settings
from trustwire.client.agent import parse_address
from trustwire.home import DEFAULT_COORDINATOR, Home
from trustwire.identity.ca import CA_CERT_FILE, CA_KEY_FILE

__all__ = ["init"]

_DOMAIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_WILDCARD = ("0.0.0.0", "::")  # noqa: S104 - names we refuse to put in a certificate


def _check_domain(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not _DOMAIN_RE.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not a domain name (1-64 letters, digits, spaces, '.', '_' or '-')"
        )
    return value


@click.command(short_help="Create a trust domain (CA, certificates, policy).")
@click.option(
    "--domain",
    default="trustwire",
    show_default=True,
    callback=_check_domain,
    help="Name of the trust domain (the CA's common name).",
)
@click.option(
    "--coordinator",
    default=DEFAULT_COORDINATOR,
    show_default=True,
    callback=check_address,
    metavar="HOST:PORT",
    help="Where the coordinator will listen and agents will connect.",
)
@pass_settings
def init(settings: Settings, domain: str, coordinator: str) -> None:
    """Create a trust domain: CA, coordinator certificate, default policy, config.

    The default policy lets every enrolled agent message every other one. Refuses to
    overwrite an existing home.
    """
    out = Output()
    passphrase = settings.passphrase(confirm=True)
    host, _port = parse_address(coordinator)
    hosts = _LOOPBACK if host in _LOOPBACK or host in _WILDCARD else (*_LOOPBACK, host)
    home = Home.init(
        settings.home_path,
        domain=domain,
        coordinator=coordinator,
        passphrase=passphrase,
        hosts=hosts,
    )
    config = home.config
    protection = "encrypted with the passphrase" if passphrase else "unencrypted"
    path = safe(str(home.path))
    out.line(f"[green]✔[/green] created trust domain [bold]{safe(domain)}[/bold] in {path}")
    out.table(
        ["item", "file", "details"],
        [
            ["domain CA", f"ca/{CA_CERT_FILE}", f"key ca/{CA_KEY_FILE}, {protection}"],
            [
                "coordinator certificate",
                "coordinator/tls.crt",
                f"for {', '.join(safe(h) for h in hosts)}; key {protection}",
            ],
            [
                "audit log key",
                "coordinator/log.pub",
                f"signs the audit log's tree heads; key coordinator/log.key, {protection}",
            ],
            ["policy", "policy.yaml", "default deny; enrolled agents may message each other"],
            [
                "config",
                "config.json",
                f"coordinator {safe(config.coordinator)}, store {safe(config.store_url)}",
            ],
            ["agents", "agents/", "none yet"],
        ],
    )
    out.line(f"CA fingerprint (SHA-256): [bold]{config.ca_fingerprint}[/bold]")
    out.line("next: [cyan]trustwire agent create NAME[/cyan], then [cyan]trustwire serve[/cyan]")
    if passphrase is None:
        out.warn(
            "private keys are stored unencrypted; set TRUSTWIRE_PASSPHRASE or pass "
            "--ask-passphrase to encrypt them"
        )
