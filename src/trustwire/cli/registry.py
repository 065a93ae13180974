"""``trustwire registry verify|head``: check the identity registry, read-only.

The registry (``HOME/registry.db``) is the Merkle log of identity events that enrolment,
role changes, key rotation, certificate issuance and revocation append to, each entry a
full snapshot of one agent (see :mod:`trustwire.registry`). ``verify`` reads the file the
way an auditor does (:class:`~trustwire.cli.logfile.LogFile`, ``mode=ro``: no write lock,
nothing changed, a running coordinator undisturbed) and checks that:

* the stored head is a registry head (origin ``trustwire/registry``) signed with the log
  key, and every entry it covers rehashes to its root; with ``--since-head`` the log still
  extends a head saved earlier (no rollback, no rewritten history);
* every entry is a well-formed snapshot and the entries replay without contradiction
  (``seq`` counting up per agent, nothing after a revocation, names never reused);
* unless ``--no-directory``, the agent directory in the store agrees with the replayed
  state (names, roles, agreement keys and statements, revocations).

``head`` exports the latest signed registry head, to keep outside the home and pass to
``verify --since-head`` later.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from trustwire.audit.log import TreeHead, verify_log
from trustwire.audit.storage import read_entries
from trustwire.cli.audit import export_head
from trustwire.cli.failure import CommandFailed, ExitCode
from trustwire.cli.logfile import LogFile
from trustwire.cli.output import Output, format_time, safe
from trustwire.cli.settings import Settings, pass_settings, run
from trustwire.crypto.signing import VerifyKey
from trustwire.errors import LogInconsistent, StoreError, TrustwireError
from trustwire.home import Home, read_log_public_key
from trustwire.registry.proof import REGISTRY_ORIGIN
from trustwire.registry.snapshot import RegistryState, decode_snapshot
from trustwire.store.base import AgentRecord

__all__ = ["registry", "verify_registry_file"]

_ATTEMPTS = 5
_RETRY_DELAY = 0.2


@click.group(short_help="Verify the identity registry.")
def registry() -> None:
    """Verify the identity registry (HOME/registry.db)."""


def verify_registry_file(
    path: Path, key: VerifyKey, since: TreeHead | None = None
) -> tuple[TreeHead | None, RegistryState, list[str]]:
    """Check the registry log file at ``path``; return its head, replayed state, problems.

    A writer commits an entry just before it signs the head covering it, so a read that
    finds unsigned entries is repeated a few times before they count as a problem.
    """
    result = _verify_once(path, key, since)
    for _ in range(_ATTEMPTS - 1):
        head, state, problems = result
        if problems or head is None or state.size <= head.size:
            break
        _sleep(_RETRY_DELAY)
        result = _verify_once(path, key, since)
    head, state, problems = result
    if head is not None and state.size > head.size and not problems:
        problems.append(
            f"{state.size - head.size} entries lie beyond the signed head (size {head.size})"
        )
    return result


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _verify_once(
    path: Path, key: VerifyKey, since: TreeHead | None
) -> tuple[TreeHead | None, RegistryState, list[str]]:
    problems: list[str] = []
    state = RegistryState()
    try:
        with LogFile(path) as file:
            origin = file.origin()
            stored = file.head()
    except StoreError as exc:
        return None, state, [str(exc).replace("audit log", "registry log")]
    if origin != REGISTRY_ORIGIN:
        problems.append(f"the file is the log {origin!r}, not the registry")
    head = stored.head
    if head is None:
        problems.append(stored.problem or "the registry holds no signed tree head")
        return None, state, problems
    if head.origin != REGISTRY_ORIGIN:
        problems.append(f"the stored head is for log {head.origin!r}, not {REGISTRY_ORIGIN!r}")
    try:
        report = verify_log(read_entries(path), head, key, since, allow_unsigned_tail=True)
        problems.extend(report.problems)
        for index, entry in enumerate(read_entries(path)):
            try:
                state.apply(index, decode_snapshot(entry))
            except ValueError as exc:
                problems.append(f"registry entry {index}: {exc}")
                break
    except (StoreError, LogInconsistent) as exc:
        problems.append(str(exc))
    return head, state, problems


def _compare(state: RegistryState, records: list[AgentRecord]) -> list[str]:
    problems: list[str] = []
    by_did = {record.did: record for record in records}
    for did, (index, snapshot) in state.latest.items():
        record = by_did.get(did)
        if record is None:
            problems.append(f"{snapshot['name']} ({did}) is in the registry, not the directory")
            continue
        differs = [
            name
            for name, logged, stored in (
                ("name", snapshot["name"], record.name),
                ("roles", snapshot["roles"], list(record.roles)),
                ("agreement_key", snapshot["agreement_key"], record.agreement_key.hex()),
                (
                    "agreement_statement",
                    snapshot["agreement_statement"],
                    record.agreement_statement.hex(),
                ),
                (
                    "agreement_issued_at",
                    snapshot["agreement_issued_at"],
                    record.agreement_issued_at,
                ),
                ("revoked_at", snapshot["revoked_at"], record.revoked_at),
            )
            if logged != stored
        ]
        if differs:
            problems.append(
                f"{record.name} ({did}) differs in {', '.join(differs)} (registry entry {index})"
            )
    for did, record in by_did.items():
        if did not in state.latest:
            problems.append(f"{record.name} ({did}) is in the directory, not the registry")
    return problems


async def _directory(home: Home) -> list[AgentRecord]:
    store = await home.open_store()
    try:
        return await store.agents.list()
    finally:
        await store.close()


def _head_summary(head: TreeHead) -> dict[str, Any]:
    return {
        "size": head.size,
        "root": head.root.hex(),
        "timestamp": head.timestamp,
        "time": format_time(head.timestamp / 1000),
        "origin": head.origin,
    }


def _read_head(path: Path) -> TreeHead:
    try:
        return TreeHead.from_json(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CommandFailed(f"{path}: not a readable tree head ({exc})") from None


@registry.command("verify", short_help="Check the registry log and compare it with the directory.")
@click.option(
    "--since-head",
    "since_head",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A registry head saved earlier: the log must still extend it.",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The registry log file [default: HOME/registry.db].",
)
@click.option(
    "--public-key",
    "public_key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The log public key file [default: HOME/coordinator/log.pub].",
)
@click.option(
    "--no-directory",
    "skip_directory",
    is_flag=True,
    help="Do not compare with the agent directory in the store.",
)
@click.option("--json", "json_mode", is_flag=True, help="Print the result as one JSON object.")
@pass_settings
def verify(
    settings: Settings,
    since_head: Path | None,
    log_path: Path | None,
    public_key_path: Path | None,
    skip_directory: bool,
    json_mode: bool,
) -> None:
    """Check the registry against its signed head, replay it, compare it with the store.

    Exits 0 when everything agrees; otherwise prints each problem and exits 1.
    """
    out = Output(json_mode=json_mode)
    since = _read_head(since_head) if since_head is not None else None
    home = settings.home(keys=False)
    path = log_path or home.registry_path
    key = read_log_public_key(public_key_path or home.log_public_key_path)
    head, state, problems = verify_registry_file(path, key, since)
    if not skip_directory and head is not None:
        try:
            problems.extend(_compare(state, run(_directory(home))))
        except TrustwireError as exc:
            problems.append(f"cannot read the agent directory: {exc}")
    revoked = sum(1 for _, snapshot in state.latest.values() if snapshot["revoked_at"] is not None)
    if json_mode:
        out.json(
            {
                "ok": not problems,
                "log": str(path),
                "entries": state.size,
                "agents": len(state.latest),
                "revoked": revoked,
                "head": _head_summary(head) if head is not None else None,
                "log_key": key.to_bytes().hex(),
                "problems": problems,
            }
        )
    elif not problems and head is not None:
        out.line(f"[green]✔[/green] registry verified: {safe(str(path))}")
        out.table(
            ["check", "value"],
            [
                ["entries", str(state.size)],
                ["agents", f"{len(state.latest)} ({revoked} revoked)"],
                ["signed size", str(head.size)],
                ["root", head.root.hex()],
                ["head time", format_time(head.timestamp / 1000)],
                ["log key", key.to_bytes().hex()],
                ["directory", "not compared" if skip_directory else "agrees"],
            ],
        )
    else:
        out.line(f"[red]✘[/red] registry does NOT verify: {safe(str(path))}")
        for problem in problems:
            out.line(f"  - {safe(problem)}")
    if problems:
        more = len(problems) - 1
        suffix = f" (and {more} more)" if more else ""
        raise CommandFailed(f"registry verification failed: {problems[0]}{suffix}", ExitCode.FAILED)


@registry.command("head", short_help="Export the latest signed registry head.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the head to FILE (replacing it) instead of stdout.",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The registry log file [default: HOME/registry.db].",
)
@click.option(
    "--public-key",
    "public_key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The log public key file [default: HOME/coordinator/log.pub].",
)
@pass_settings
def head(
    settings: Settings, out_path: Path | None, log_path: Path | None, public_key_path: Path | None
) -> None:
    """Export the latest signed registry head as one line of JSON (signature checked).

    Keep it outside the home: `registry verify --since-head FILE` then proves the registry
    still extends it (no identity event removed or rewritten).
    """
    out = Output()
    home = settings.home(keys=False)
    path = log_path or home.registry_path
    key = read_log_public_key(public_key_path or home.log_public_key_path)
    try:
        with LogFile(path) as file:
            stored = file.head()
    except StoreError as exc:
        raise CommandFailed(str(exc).replace("audit log", "registry log")) from None
    export_head(out, path, stored, key, origin=REGISTRY_ORIGIN, what="registry head", to=out_path)
