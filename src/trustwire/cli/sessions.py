"""``trustwire session list|show|renew|end``: the operator's view of sessions.

The commands work on the home's sessions database (``Home.sessions_url``), the file the
coordinator's session manager uses. ``renew`` and ``end`` change it with the same
compare-and-set write the coordinator uses, which bumps the store's generation; a running
``trustwire serve`` notices within its sweep interval and announces the change to both
agents (``session.renewed`` / ``session.ended``). An end made while no coordinator runs is
announced when one next starts.

Renewal follows the session rules (:mod:`trustwire.sessions.model`): it is refused once the
session's expiry has reached its maximum duration, and an expired or ended session cannot
be renewed or ended again; each refusal is one ``error:`` line and a non-zero exit.
Agent DIDs are shown with the names the home's agent directory knows for them.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from trustwire.cli.directory import resolve_agent
from trustwire.cli.output import Output, format_time, safe
from trustwire.cli.settings import Settings, check_recipient, pass_settings, run
from trustwire.errors import StoreError, UnknownSession
from trustwire.home import Home
from trustwire.sessions.model import Session, check_end_reason, check_session_id
from trustwire.sessions.store import SessionStore, open_session_store

__all__ = ["session"]

_WRITE_ATTEMPTS = 5
OPERATOR_END_REASON = "ended by the operator"
"""The reason ``session end`` records when none is given."""


def _check_id(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_session_id(value.strip().lower())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a session id (a UUID)") from None


def _check_reason(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_end_reason(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def session() -> None:
    """List, show, renew and end agent sessions."""


@session.command("list")
@click.option("--all", "include_inactive", is_flag=True, help="Include expired and ended ones.")
@click.option(
    "--agent",
    "who",
    metavar="NAME|DID",
    callback=check_recipient,
    help="Only the sessions this agent takes part in.",
)
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per session and line.")
@pass_settings
def list_sessions(
    settings: Settings, include_inactive: bool, who: str | None, json_mode: bool
) -> None:
    """List active sessions (with --all, also expired and ended ones), oldest first."""
    out = Output(json_mode=json_mode)
    home = settings.home(keys=False)
    now = time.time()
    sessions, names = run(_list(home, who, include_inactive, now))
    if json_mode:
        for found in sessions:
            out.json(_json(found, names, now))
        return
    if not sessions:
        what = "sessions" if include_inactive else "active sessions (--all shows ended ones)"
        out.line(f"no {what}")
        return
    rows = [
        [
            found.id,
            _label(found.initiator, names),
            _label(found.peer, names),
            _status_cell(found, now),
            format_time(found.expires_at),
            str(found.renewal_count),
        ]
        for found in sessions
    ]
    out.table(["id", "initiator", "peer", "status", "expires", "renewals"], rows)


@session.command("show")
@click.argument("session_id", metavar="ID", callback=_check_id)
@click.option("--json", "json_mode", is_flag=True, help="The session as one JSON object.")
@pass_settings
def show(settings: Settings, session_id: str, json_mode: bool) -> None:
    """Show one session: participants, state, times, timeout settings, metadata."""
    out = Output(json_mode=json_mode)
    home = settings.home(keys=False)
    now = time.time()
    found, names = run(_get(home, session_id))
    if json_mode:
        out.json(_json(found, names, now))
        return
    _show(out, found, names, now)


@session.command("renew")
@click.argument("session_id", metavar="ID", callback=_check_id)
@pass_settings
def renew(settings: Settings, session_id: str) -> None:
    """Renew session ID now (as its agents can), even when autoRenew is off.

    Refused once the session has reached its maximum duration, or when it has expired
    or ended.
    """
    out = Output()
    home = settings.home(keys=False)
    now = time.time()
    renewed, names = run(_change(home, session_id, lambda current: current.renewed(now)))
    out.line(
        f"[green]✔[/green] renewed session {renewed.id} "
        f"({_label(renewed.initiator, names)} ↔ {_label(renewed.peer, names)}): "
        f"expires {format_time(renewed.expires_at)}, renewal {renewed.renewal_count}"
    )


@session.command("end")
@click.argument("session_id", metavar="ID", callback=_check_id)
@click.option(
    "--reason",
    metavar="TEXT",
    callback=_check_reason,
    help=f"Why (told to both agents; default {OPERATOR_END_REASON!r}).",
)
@pass_settings
def end(settings: Settings, session_id: str, reason: str | None) -> None:
    """End session ID. Both agents are told (now, if the coordinator runs)."""
    out = Output()
    home = settings.home(keys=False)
    now = time.time()
    text = reason or OPERATOR_END_REASON
    ended, names = run(
        _change(home, session_id, lambda current: current.ended(now, reason=text, by=None))
    )
    out.line(
        f"[green]✔[/green] ended session {ended.id} "
        f"({_label(ended.initiator, names)} ↔ {_label(ended.peer, names)})"
    )


# -- the store ------------------------------------------------------------------------------


def _sessions_file(home: Home) -> Path | None:
    """The home's sessions database file, when the URL names one."""
    parts = urllib.parse.urlsplit(home.sessions_url)
    if parts.scheme != "sqlite":
        return None
    return Path(urllib.parse.unquote(parts.path))


async def _open(home: Home) -> SessionStore | None:
    """The home's session store, or ``None`` when no coordinator ever created it."""
    path = _sessions_file(home)
    if path is not None and not path.exists():
        return None
    return await open_session_store(home.sessions_url)


async def _names(home: Home) -> dict[str, str]:
    """DID -> name from the home's agent directory (empty when it cannot be read)."""
    try:
        store = await home.open_store()
    except (StoreError, OSError):
        return {}
    try:
        return {record.did: record.name for record in await store.agents.list()}
    except StoreError:
        return {}
    finally:
        await store.close()


async def _list(
    home: Home, who: str | None, include_inactive: bool, now: float
) -> tuple[list[Session], dict[str, str]]:
    did: str | None = None
    if who is not None:
        directory = await home.open_store()
        try:
            did = (await resolve_agent(directory, who)).did
        finally:
            await directory.close()
    names = await _names(home)
    store = await _open(home)
    if store is None:
        return [], names
    try:
        found = await store.list(did, include_inactive=include_inactive, now=now)
    finally:
        await store.close()
    return found, names


async def _get(home: Home, session_id: str) -> tuple[Session, dict[str, str]]:
    store = await _open(home)
    if store is None:
        raise UnknownSession(f"no session with id {session_id}")
    try:
        found = await store.get(session_id)
    finally:
        await store.close()
    if found is None:
        raise UnknownSession(f"no session with id {session_id}")
    return found, await _names(home)


async def _change(
    home: Home, session_id: str, transition: Callable[[Session], Session]
) -> tuple[Session, dict[str, str]]:
    """Apply ``transition`` (which may raise) and write it, compare-and-set."""
    store = await _open(home)
    if store is None:
        raise UnknownSession(f"no session with id {session_id}")
    try:
        for _ in range(_WRITE_ATTEMPTS):
            current = await store.get(session_id)
            if current is None:
                raise UnknownSession(f"no session with id {session_id}")
            written = await store.update(transition(current))
            if written is not None:
                break
        else:
            raise StoreError("the session kept changing while it was written; try again")
    finally:
        await store.close()
    return written, await _names(home)


# -- rendering --------------------------------------------------------------------------------


def _label(did: str, names: dict[str, str]) -> str:
    name = names.get(did)
    return f"{safe(name)} ({did})" if name else did


def _status_cell(found: Session, now: float) -> str:
    status = found.status(now)
    if status == "active":
        if found.near_expiration(now):
            return "[yellow]active (expiring)[/yellow]"
        return "active"
    return f"[red]{status}[/red]"


def _json(found: Session, names: dict[str, str], now: float) -> dict[str, Any]:
    shown = found.to_api(now)
    shown["initiatorName"] = names.get(found.initiator)
    shown["peerName"] = names.get(found.peer)
    shown["endedBy"] = found.ended_by
    return shown


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _show(out: Output, found: Session, names: dict[str, str], now: float) -> None:
    config = found.config
    rows = [
        ["id", found.id],
        ["initiator", _label(found.initiator, names)],
        ["peer", _label(found.peer, names)],
        ["status", _status_cell(found, now)],
        ["created", format_time(found.created_at)],
        ["last activity", format_time(found.last_activity)],
        ["expires", f"{format_time(found.expires_at)} ({_minutes(found.remaining(now))} left)"],
        ["max duration until", format_time(found.cap)],
        [
            "timeout",
            f"{config.timeout_minutes} min, autoRenew {'on' if config.auto_renew else 'off'}, "
            f"max {config.max_duration_minutes} min, "
            f"warning {config.warning_threshold_minutes} min",
        ],
        ["renewals", str(found.renewal_count)],
    ]
    if found.ended_at is not None:
        by = _label(found.ended_by, names) if found.ended_by else "the operator"
        rows.append(["ended", f"{format_time(found.ended_at)} by {by}"])
        rows.append(["end reason", safe(found.end_reason or "-")])
    if found.metadata:
        rows.append(["metadata", safe(json.dumps(dict(found.metadata), sort_keys=True))])
    out.table(["field", "value"], rows)
