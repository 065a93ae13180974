"""What every command shares: the home directory, the passphrase, the coordinator address.

The root group builds one :class:`Settings` from ``--home``/``TRUSTWIRE_HOME``,
``--ask-passphrase`` and ``--verbose``; commands receive it with ``@pass_settings``.
The passphrase is read (from ``TRUSTWIRE_PASSPHRASE`` or a prompt) only by commands that
open private keys, and never printed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from trustwire.client.agent import parse_address
from trustwire.crypto.keyfile import passphrase_from_env
from trustwire.errors import ConfigurationError
from trustwire.home import Home

__all__ = [
    "COORDINATOR_ENV",
    "DEFAULT_HOME",
    "HOME_ENV",
    "Settings",
    "check_address",
    "check_agent_name",
    "check_recipient",
    "check_roles",
    "coordinator_option",
    "pass_settings",
    "run",
]

HOME_ENV = "TRUSTWIRE_HOME"
COORDINATOR_ENV = "TRUSTWIRE_COORDINATOR"
DEFAULT_HOME = ".trustwire"

# Stricter than the identity layer's printable-name rule: the name becomes a directory
# under HOME/agents, so separators and dot-only names must be impossible, and policy
# files can only select names of this shape anyway.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_ROLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

T = TypeVar("T")


@dataclass
class Settings:
    """Options of the root ``trustwire`` group."""

    home_path: Path
    ask_passphrase: bool = False
    verbose: int = 0
    _passphrase: bytes | None = field(default=None, repr=False)
    _passphrase_read: bool = field(default=False, repr=False)

    def passphrase(self, *, confirm: bool = False) -> bytes | None:
        """The key passphrase: prompted for with ``--ask-passphrase``, else from the
        environment, else ``None`` (keys unencrypted). Read once per command."""
        if not self._passphrase_read:
            if self.ask_passphrase:
                value: str = click.prompt(
                    "Passphrase", hide_input=True, confirmation_prompt=confirm, err=True
                )
                self._passphrase = value.encode("utf-8") or None
            else:
                self._passphrase = passphrase_from_env()
            self._passphrase_read = True
        return self._passphrase

    def home(self, *, keys: bool = True) -> Home:
        """The deployment directory; with ``keys=False`` no passphrase is asked for.

        Raises :class:`ConfigurationError` (before asking for a passphrase) when there
        is no home at the path.
        """
        home = Home(self.home_path)
        home.config  # noqa: B018 - a missing home is reported before any prompt
        if keys:
            home.passphrase = self.passphrase()
        return home

    def coordinator(self, option: str | None, home: Home) -> str:
        """``--coordinator``/``TRUSTWIRE_COORDINATOR`` if given, else the home's config."""
        if option:
            return option
        address = home.config.coordinator
        try:
            parse_address(address)
        except ValueError as exc:
            raise ConfigurationError(f"{home.path}/config.json: {exc}") from None
        return address


pass_settings = click.make_pass_decorator(Settings)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a fresh event loop (each command owns its loop)."""
    return asyncio.run(coroutine)


def check_agent_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Click callback: an agent name usable as a directory and in policy files."""
    if value is not None and not _NAME_RE.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not an agent name (1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit)"
        )
    return value


def check_recipient(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Click callback: an agent name or a ``did:key`` DID."""
    if value is None or value.startswith("did:"):
        if value is not None and (len(value) > 128 or not value.isascii()):
            raise click.BadParameter(f"{value!r} is not a DID")
        return value
    return check_agent_name(_ctx, _param, value)


def check_roles(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """Click callback: role names as policy files spell them, without duplicates."""
    for role in value:
        if not _ROLE_RE.fullmatch(role):
            raise click.BadParameter(
                f"{role!r} is not a role name (1-64 letters, digits, '.', '_' or '-')"
            )
    return tuple(dict.fromkeys(value))


def check_address(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Click callback: ``HOST:PORT``."""
    if value is None:
        return None
    try:
        parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def coordinator_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--coordinator HOST:PORT`` option of agent commands."""
    return click.option(
        "--coordinator",
        envvar=COORDINATOR_ENV,
        callback=check_address,
        metavar="HOST:PORT",
        help=f"Coordinator address [env {COORDINATOR_ENV}; default: the home's config].",
    )(function)
