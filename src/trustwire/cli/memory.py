"""``trustwire memory ...``: end-to-end encrypted shared memories, used as an agent.

Every command connects as the agent named by ``--as`` and works through the SDK
(:attr:`trustwire.client.agent.Agent.memory`): values are encrypted and signed here,
before they leave the process, and decrypted and verified here; the coordinator only
stores ciphertext and wrapped keys (docs/MEMORY.md)::

    trustwire memory create --as alice --expires 1h           # prints the memory id
    trustwire memory write  --as alice ID plan "ship friday"
    trustwire memory grant  --as alice ID bob read --expires 30m
    trustwire memory read   --as bob   ID plan
    trustwire memory list   --as bob   [ID]                    # memories, or one's keys
    trustwire memory show   --as alice ID                      # owner, grants, quotas, usage
    trustwire memory revoke --as alice ID bob                  # rotates the data key
    trustwire memory delete --as alice ID plan
    trustwire memory destroy --as alice ID
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import click

from trustwire.cli.failure import CommandFailed, ExitCode
from trustwire.cli.output import Output, format_time, safe
from trustwire.cli.settings import (
    Settings,
    check_agent_name,
    check_recipient,
    coordinator_option,
    pass_settings,
    run,
)
from trustwire.client.agent import Agent
from trustwire.memory.client import MemoryInfo, SegmentInfo

__all__ = ["memory"]

T = TypeVar("T")

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_VALUE = 128 * 1024


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    if value is None:
        return None
    match = _DURATION.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        raise click.BadParameter(f"{value!r} is not a duration such as 30m, 1h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _as_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--as",
        "name",
        required=True,
        callback=check_agent_name,
        metavar="NAME",
        help="The agent to act as.",
    )(function)


def _json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "json_mode", is_flag=True, help="Print JSON.")(function)


def _timeout_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=30.0,
        show_default=True,
        help="Seconds to wait for the coordinator.",
    )(function)


def _as_agent(
    settings: Settings,
    name: str,
    coordinator: str | None,
    timeout: float,
    work: Callable[[Agent], Awaitable[T]],
) -> T:
    home = settings.home()
    identity, credentials = home.load_agent(name)
    address = settings.coordinator(coordinator, home)

    async def go() -> T:
        agent: Agent | None = None
        try:
            async with asyncio.timeout(timeout):
                agent = await Agent.connect(
                    identity, credentials, coordinator=address, timeout=timeout
                )
                return await work(agent)
        except TimeoutError:
            raise CommandFailed(
                f"timed out after {timeout:g} s talking to {address}", ExitCode.TIMED_OUT
            ) from None
        finally:
            if agent is not None:
                await agent.close()

    return run(go())


def _info_json(info: MemoryInfo) -> dict[str, Any]:
    return dict(info.raw)


def _usage(info: MemoryInfo) -> str:
    return (
        f"{info.used_bytes} of {info.max_bytes} bytes, "
        f"{info.used_segments} of {info.max_segments} segments"
    )


def _show_info(out: Output, info: MemoryInfo) -> None:
    if out.json_mode:
        out.json(_info_json(info))
        return
    out.table(
        ["field", "value"],
        [
            ["id", info.id],
            ["owner", safe(info.owner)],
            ["type", safe(info.type)],
            ["created", format_time(info.created_at)],
            ["expires", "never" if info.expires_at is None else format_time(info.expires_at)],
            ["key epoch", str(info.epoch)],
            [
                "usage",
                f"{info.used_bytes} of {info.max_bytes} bytes, "
                f"{info.used_segments} of {info.max_segments} segments",
            ],
        ],
    )
    if info.grants:
        out.table(
            ["agent", "level", "expires", "granted by"],
            [
                [
                    safe(g.agent),
                    g.level,
                    "never" if g.expires_at is None else format_time(g.expires_at),
                    safe(g.granted_by),
                ]
                for g in info.grants
            ],
            title="grants",
        )
    else:
        out.line("no grants: only the owner can use it")


@click.group(short_help="End-to-end encrypted shared memories.")
def memory() -> None:
    """Create, write, read and share end-to-end encrypted memories, as an agent.

    Values are encrypted (AES-256-GCM) and signed by the writing agent before they leave
    this process; the data key is wrapped for each authorized agent with HPKE. The
    coordinator stores only ciphertext and wrapped keys.
    """


@memory.command("create")
@_as_option
@click.option("--type", "kind", default="kv", show_default=True, help="Free-form memory type.")
@click.option("--expires", callback=_duration, default=None, help="Lifetime, e.g. 1h or 7d.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None, help="Byte quota.")
@click.option("--max-segments", type=click.IntRange(min=1), default=None, help="Key quota.")
@_timeout_option
@coordinator_option
@_json_option
@pass_settings
def create(
    settings: Settings,
    name: str,
    kind: str,
    expires: timedelta | None,
    max_bytes: int | None,
    max_segments: int | None,
    timeout: float,
    coordinator: str | None,
    json_mode: bool,
) -> None:
    """Create a memory owned by --as and print its id."""
    out = Output(json_mode=json_mode)
    quotas: dict[str, int] = {}
    if max_bytes is not None:
        quotas["maxBytes"] = max_bytes
    if max_segments is not None:
        quotas["maxSegments"] = max_segments

    async def work(agent: Agent) -> MemoryInfo:
        made = await agent.memory.create(type=kind, expires=expires, quotas=quotas or None)
        return made.info

    info = _as_agent(settings, name, coordinator, timeout, work)
    if out.json_mode:
        out.json(_info_json(info))
    else:
        out.line(f"[green]✔ created[/green] memory {info.id}")


@memory.command("write")
@_as_option
@click.argument("memory_id", metavar="ID")
@click.argument("key")
@click.argument("value", required=False)
@click.option(
    "--file",
    "source",
    type=click.File("rb"),
    default=None,
    help="Read the value from this file ('-' for stdin) instead of VALUE.",
)
@click.option(
    "--expected-version",
    type=click.IntRange(min=0),
    default=None,
    help="Write only if KEY is at this version (0: only if it does not exist).",
)
@_timeout_option
@coordinator_option
@_json_option
@pass_settings
def write(
    settings: Settings,
    name: str,
    memory_id: str,
    key: str,
    value: str | None,
    source: Any,
    expected_version: int | None,
    timeout: float,
    coordinator: str | None,
    json_mode: bool,
) -> None:
    """Encrypt, sign and store VALUE under KEY (compare-and-set on its version)."""
    out = Output(json_mode=json_mode)
    if (value is None) == (source is None):
        raise click.UsageError("give either VALUE or --file")
    data = value.encode("utf-8") if value is not None else source.read(_MAX_VALUE + 1)
    if len(data) > _MAX_VALUE:
        raise click.UsageError(f"a value holds at most {_MAX_VALUE} bytes")

    async def work(agent: Agent) -> int:
        handle = await agent.memory.open(memory_id)
        return await handle.write(key, data, expected_version=expected_version)

    version = _as_agent(settings, name, coordinator, timeout, work)
    if out.json_mode:
        out.json({"memory": memory_id, "key": key, "version": version})
    else:
        out.line(f"[green]✔ written[/green] {safe(key)} version {version}")


@memory.command("read")
@_as_option
@click.argument("memory_id", metavar="ID")
@click.argument("key")
@_timeout_option
@coordinator_option
@_json_option
@pass_settings
def read(
    settings: Settings,
    name: str,
    memory_id: str,
    key: str,
    timeout: float,
    coordinator: str | None,
    json_mode: bool,
) -> None:
    """Fetch KEY, verify its writer's signature and content hash, decrypt, print it.

    Piped or redirected, the value goes to stdout as is (bytes); on a terminal, control
    characters are shown escaped. With --json, one object with the value as text when it
    is UTF-8, else base64.
    """
    out = Output(json_mode=json_mode)

    async def work(agent: Agent) -> Any:
        handle = await agent.memory.open(memory_id)
        return await handle.read(key)

    found = _as_agent(settings, name, coordinator, timeout, work)
    if out.json_mode:
        import base64

        try:
            body: dict[str, Any] = {"text": found.data.decode("utf-8")}
        except UnicodeDecodeError:
            body = {"base64": base64.b64encode(found.data).decode("ascii")}
        out.json(
            {
                "memory": memory_id,
                "key": key,
                "version": found.version,
                "writer": found.writer,
                "written_at": format_time(found.written_at),
                **body,
            }
        )
        return
    if sys.stdout.isatty():
        # Another grantee wrote this value: on a terminal, control characters (escape
        # sequences) are shown escaped, never interpreted. Piped, the bytes go out as is.
        text = found.data.decode("utf-8", errors="replace")
        shown = "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)
        click.echo(shown if shown.endswith("\n") else shown + "\n", nl=False)
        return
    sys.stdout.buffer.write(found.data)
    sys.stdout.flush()


@memory.command("list")
@_as_option
@click.argument("memory_id", metavar="[ID]", required=False)
@_timeout_option
@coordinator_option
@_json_option
@pass_settings
def list_(
    settings: Settings,
    name: str,
    memory_id: str | None,
    timeout: float,
    coordinator: str | None,
    json_mode: bool,
) -> None:
    """List the memories --as may use, or the keys of memory ID."""
    out = Output(json_mode=json_mode)
    if memory_id is None:

        async def memories(agent: Agent) -> list[MemoryInfo]:
            return await agent.memory.list()

        infos = _as_agent(settings, name, coordinator, timeout, memories)
        if out.json_mode:
            out.json({"memories": [_info_json(i) for i in infos]})
            return
        out.table(
            ["id", "owner", "type", "expires", "epoch", "grants", "bytes"],
            [
                [
                    i.id,
                    safe(i.owner),
                    safe(i.type),
                    "never" if i.expires_at is None else format_time(i.expires_at),
                    str(i.epoch),
                    str(len(i.grants)),
                    str(i.used_bytes),
                ]
                for i in infos
            ],
        )
        return

    async def segments(agent: Agent) -> list[SegmentInfo]:
        handle = await agent.memory.open(memory_id)
        return await handle.list()

    items = _as_agent(settings, name, coordinator, timeout, segments)
    if out.json_mode:
        out.json(
            {
                "memory": memory_id,
                "segments": [
                    {
                        "key": s.key,
                        "version": s.version,
                        "epoch": s.epoch,
                        "writer": s.writer,
                        "size": s.size,
                        "written_at": format_time(s.written_at),
                    }
                    for s in items
                ],
            }
        )
        return
    out.table(
        ["key", "version", "epoch", "writer", "bytes", "written"],
        [
            [
                safe(s.key),
                str(s.version),
                str(s.epoch),
                safe(s.writer),
                str(s.size),
                format_time(s.written_at),
            ]
            for s in items
        ],
    )


@memory.command("show")
@_as_option
@click.argument("memory_id", metavar="ID")
@_timeout_option
@coordinator_option
@_json_option
@pass_settings
def show(
    settings: Settings,
    name: str,
    memory_id: str,
    timeout: float,
    coordinator: str | None,
    json_mode: bool,
) -> None:
    """Owner, grants, quotas and usage of memory ID."""
    out = Output(json_mode=json_mode)

    async def work(agent: Agent) -> MemoryInfo:
        return (await agent.memory.open(memory_id)).info

    _show_info(out, _as_agent(settings, name, coordinator, timeout, work))


@memory.command("grant")
@_as_option
@click.argument("memory_id", metavar="ID")
@click.argument("agent", callback=check_recipient, metavar="AGENT")
@click.argument("level", type=click.Choice(["read", "write", "admin"]))
@click.option("--expires", callback=_duration, default=None, help="Grant lifetime, e.g. 30m.")
@_timeout_option
@coordinator_option
@_json_option
@pass_settings
def grant(
    settings: Settings,
    name: str,
    memory_id: str,
    agent: str,
    level: str,
    expires: timedelta | None,
    timeout: float,
    coordinator: str | None,
    json_mode: bool,
) -> None:
    """Give AGENT LEVEL access to memory ID (wraps every data key for it)."""
    out = Output(json_mode=json_mode)

    async def work(me: Agent) -> MemoryInfo:
        handle = await me.memory.open(memory_id)
        return await handle.grant(agent, level, expires=expires)  # type: ignore[arg-type]

    info = _as_agent(settings, name, coordinator, timeout, work)
    if out.json_mode:
        out.json(_info_json(info))
    else:
        out.line(f"[green]✔ granted[/green] {level} on {memory_id} to {safe(agent)}")


@memory.command("revoke")
@_as_option
@click.argument("memory_id", metavar="ID")
@click.argument("agent", callback=check_recipient, metavar="AGENT")
@_timeout_option
@coordinator_option
@_json_option
@pass_settings
def revoke(
    settings: Settings,
    name: str,
    memory_id: str,
    agent: str,
    timeout: float,
    coordinator: str | None,
    json_mode: bool,
) -> None:
    """Revoke AGENT's grant: refused at once, and the data key moves to a new epoch
    that only the remaining agents receive."""
    out = Output(json_mode=json_mode)

    async def work(me: Agent) -> MemoryInfo:
        handle = await me.memory.open(memory_id)
        return await handle.revoke(agent)

    info = _as_agent(settings, name, coordinator, timeout, work)
    if out.json_mode:
        out.json(_info_json(info))
    else:
        out.line(
            f"[green]✔ revoked[/green] {safe(agent)} on {memory_id}; data key now at epoch "
            f"{info.epoch}"
        )


@memory.command("delete")
@_as_option
@click.argument("memory_id", metavar="ID")
@click.argument("key")
@_timeout_option
@coordinator_option
@pass_settings
def delete(
    settings: Settings,
    name: str,
    memory_id: str,
    key: str,
    timeout: float,
    coordinator: str | None,
) -> None:
    """Delete KEY from memory ID."""

    async def work(me: Agent) -> None:
        handle = await me.memory.open(memory_id)
        await handle.delete(key)

    _as_agent(settings, name, coordinator, timeout, work)
    Output().line(f"[green]✔ deleted[/green] {safe(key)}")


@memory.command("destroy")
@_as_option
@click.argument("memory_id", metavar="ID")
@_timeout_option
@coordinator_option
@pass_settings
def destroy(
    settings: Settings,
    name: str,
    memory_id: str,
    timeout: float,
    coordinator: str | None,
) -> None:
    """Destroy memory ID: every segment, grant and wrapped key."""

    async def work(me: Agent) -> None:
        handle = await me.memory.open(memory_id)
        await handle.destroy()

    _as_agent(settings, name, coordinator, timeout, work)
    Output().line(f"[green]✔ destroyed[/green] memory {memory_id}")
