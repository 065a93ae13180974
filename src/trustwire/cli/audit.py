"""``trustwire audit verify|head|tail``: check, export and read the audit trail.

The audit trail (``HOME/audit.db``) is the Merkle log that ``trustwire serve`` appends
every security event to, signing a tree head with the domain log key after each batch.
These commands only read it (see :mod:`trustwire.cli.logfile`): no coordinator, no
passphrase and no write access are needed, and a running coordinator is not disturbed.

``verify`` recomputes the tree over every entry and checks it against the log's latest
signed head and, with ``--since-head``, against a head saved earlier outside the home:
any edit, deletion, reordering or insertion changes a root, a truncation leaves too few
entries, entries appended without a signature lie beyond the head, and rolling the
stored head back to an older one (and truncating to match) is caught by the saved head.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click

from trustwire.audit.log import TreeHead, verify_log
from trustwire.audit.storage import read_entries
from trustwire.audit.trail import AUDIT_ORIGIN, decode_event
from trustwire.cli.directory import Names
from trustwire.cli.failure import CommandFailed, ExitCode
from trustwire.cli.logfile import LogFile, StoredHead
from trustwire.cli.output import Output, format_time, safe
from trustwire.cli.settings import Settings, pass_settings
from trustwire.crypto.signing import VerifyKey
from trustwire.errors import InvalidSignature, StoreError
from trustwire.events import EventKind, SecurityEvent
from trustwire.home import read_log_public_key

__all__ = ["Verification", "audit", "verify_audit_log"]

FOLLOW_INTERVAL = 0.5
"""Seconds between polls of ``audit tail --follow``."""

VERIFY_ATTEMPTS = 5
"""How often ``verify`` reads a live log again while its newest entries await their head."""

VERIFY_RETRY_DELAY = 0.2
"""Seconds between those reads (the trail signs a head within its batch interval)."""

TAIL_CHUNK = 512
"""Entries read at a time while looking backwards for the latest events."""

# Indirection so tests can end a --follow loop deterministically.
_sleep: Callable[[float], None] = time.sleep

_KINDS = [kind.value for kind in EventKind]


@click.group(short_help="Verify, export and read the audit trail.")
def audit() -> None:
    """Verify, export and read the audit trail (HOME/audit.db)."""


def _log_option(function: Callable[..., object]) -> Callable[..., object]:
    return click.option(
        "--log",
        "log_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The audit log file [default: HOME/audit.db], e.g. a copy from a backup.",
    )(function)


def _key_option(function: Callable[..., object]) -> Callable[..., object]:
    return click.option(
        "--public-key",
        "public_key_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The log public key file [default: HOME/coordinator/log.pub]; keep a copy "
        "outside the home and pass it here to verify with a key nobody could swap.",
    )(function)


def _locate(
    settings: Settings, log_path: Path | None, public_key_path: Path | None
) -> tuple[Path, VerifyKey]:
    """The log file and the public key to check it with; the home is read only when one
    of them was not given (so a copy can be checked without any home)."""
    if log_path is not None and public_key_path is not None:
        return log_path, read_log_public_key(public_key_path)
    home = settings.home(keys=False)
    return (
        log_path or home.audit_path,
        read_log_public_key(public_key_path or home.log_public_key_path),
    )


# -- verify -------------------------------------------------------------------------------


@dataclass
class Verification:
    """What ``audit verify`` found: the head checked against, and the problems (if any)."""

    path: Path
    head: TreeHead | None
    since: TreeHead | None
    entries: int = 0
    root: bytes | None = None
    problems: list[str] = field(default_factory=list)
    unsigned: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def verify_audit_log(
    path: Path,
    key: VerifyKey,
    since: TreeHead | None = None,
    *,
    attempts: int = VERIFY_ATTEMPTS,
    delay: float = VERIFY_RETRY_DELAY,
) -> Verification:
    """Verify the audit log file at ``path`` against its stored head and ``since``.

    A running coordinator commits a batch of entries just before it signs their head, so
    a reader can catch entries without a head yet; such a read is repeated (``attempts``
    times, ``delay`` apart) before unsigned entries count as a problem.
    """
    result = _verify_once(path, key, since)
    for _ in range(attempts - 1):
        if result.problems or not result.unsigned:
            break
        _sleep(delay)
        result = _verify_once(path, key, since)
    if result.unsigned:
        result.problems.append(
            f"{result.unsigned} entries lie beyond the signed tree head (size "
            f"{result.head.size if result.head else 0}): they were appended without a signature"
        )
    return result


def _verify_once(path: Path, key: VerifyKey, since: TreeHead | None) -> Verification:
    result = Verification(path, None, since)
    try:
        with LogFile(path) as file:
            origin = file.origin()
            stored = file.head()
    except StoreError as exc:
        result.problems.append(str(exc))
        return result
    if origin != AUDIT_ORIGIN:
        result.problems.append(f"the file is the log {origin!r}, not the audit log")
    result.head = stored.head
    if stored.head is None:
        result.problems.append(stored.problem or "the log holds no signed tree head")
        if since is None:
            return result
        # Still say whether the part the saved head covers is intact.
        reference, older = since, None
    else:
        reference, older = stored.head, since
        if stored.head.origin != AUDIT_ORIGIN:
            result.problems.append(
                f"the stored tree head is for log {stored.head.origin!r}, not {AUDIT_ORIGIN!r}"
            )
    try:
        report = verify_log(read_entries(path), reference, key, older, allow_unsigned_tail=True)
    except StoreError as exc:
        result.problems.append(str(exc))
        return result
    result.entries = report.entries
    result.root = report.root
    result.problems.extend(report.problems)
    if report.root is not None and stored.head is not None:
        result.unsigned = max(0, report.entries - reference.size)
    return result


def _read_head_file(path: Path) -> TreeHead:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandFailed(f"{path}: cannot read the saved tree head ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise CommandFailed(f"{path}: not a tree head (not UTF-8)") from None
    try:
        return TreeHead.from_json(text.strip())
    except ValueError as exc:
        raise CommandFailed(f"{path}: not a tree head ({exc})") from None


def _head_summary(head: TreeHead) -> dict[str, object]:
    return {
        "size": head.size,
        "root": head.root.hex(),
        "timestamp": head.timestamp,
        "time": format_time(head.timestamp / 1000),
        "origin": head.origin,
    }


@audit.command("verify", short_help="Check the audit log against its signed tree heads.")
@click.option(
    "--since-head",
    "since_head",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A tree head saved earlier (`audit head --out`): the log must still extend it.",
)
@_log_option
@_key_option
@click.option("--json", "json_mode", is_flag=True, help="Print the result as one JSON object.")
@pass_settings
def verify(
    settings: Settings,
    since_head: Path | None,
    log_path: Path | None,
    public_key_path: Path | None,
    json_mode: bool,
) -> None:
    """Check the audit log against its signed tree head (and a saved one).

    Exits 0 when every entry is covered by a head signed with the log key and matches
    it; otherwise prints each problem and exits 1.
    """
    out = Output(json_mode=json_mode)
    since = _read_head_file(since_head) if since_head is not None else None
    path, key = _locate(settings, log_path, public_key_path)
    result = verify_audit_log(path, key, since)
    head = result.head
    if json_mode:
        out.json(
            {
                "ok": result.ok,
                "log": str(path),
                "entries": result.entries,
                "head": _head_summary(head) if head is not None else None,
                "since_head": _head_summary(since) if since is not None else None,
                "log_key": key.to_bytes().hex(),
                "problems": result.problems,
            }
        )
    elif result.ok and head is not None:
        out.line(f"[green]✔[/green] audit log verified: {safe(str(path))}")
        rows = [
            ["entries", str(result.entries)],
            ["signed size", str(head.size)],
            ["root", head.root.hex()],
            ["head time", format_time(head.timestamp / 1000)],
            ["log key", key.to_bytes().hex()],
        ]
        if since is not None:
            rows.append(
                [
                    "saved head",
                    f"size {since.size} of {format_time(since.timestamp / 1000)} "
                    "is a prefix of this log",
                ]
            )
        out.table(["check", "value"], rows)
    else:
        out.line(f"[red]✘[/red] audit log does NOT verify: {safe(str(path))}")
        for problem in result.problems:
            out.line(f"  - {safe(problem)}")
    if not result.ok:
        more = len(result.problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise CommandFailed(
            f"audit log verification failed: {result.problems[0]}{suffix}", ExitCode.FAILED
        )


# -- head ---------------------------------------------------------------------------------


@audit.command("head", short_help="Export the latest signed tree head.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the head to FILE (replacing it) instead of stdout.",
)
@_log_option
@_key_option
@pass_settings
def head(
    settings: Settings, out_path: Path | None, log_path: Path | None, public_key_path: Path | None
) -> None:
    """Export the latest signed tree head as one line of JSON.

    Keep it outside the home (another machine, a ticket, a notebook): `audit verify
    --since-head FILE` then proves the log still holds everything it covered. The head's
    signature is checked with the log key before it is exported.
    """
    out = Output()
    path, key = _locate(settings, log_path, public_key_path)
    with LogFile(path) as file:
        stored = file.head()
    export_head(out, path, stored, key, origin=AUDIT_ORIGIN, what="tree head", to=out_path)


def export_head(
    out: Output,
    path: Path,
    stored: StoredHead,
    key: VerifyKey,
    *,
    origin: str,
    what: str,
    to: Path | None,
) -> None:
    """Check a log file's stored head with the log key, then print it or save it to ``to``.

    Shared by ``audit head`` and ``registry head``: a head is only ever exported after its
    signature (and origin) verified.
    """
    tree_head = stored.head
    if tree_head is None:
        raise CommandFailed(f"{path}: {stored.problem}")
    try:
        tree_head.verify(key, origin=origin)
    except InvalidSignature as exc:
        raise CommandFailed(
            f"{path}: the stored {what} does not verify with the log key ({exc})"
        ) from None
    line = tree_head.to_json() + "\n"
    if to is None:
        click.echo(line, nl=False)
        return
    to.write_text(line, encoding="utf-8")
    out.note(
        f"saved the {what} of {safe(str(path))} (size {tree_head.size}, "
        f"{format_time(tree_head.timestamp / 1000)}) to {safe(str(to))}"
    )


# -- tail ---------------------------------------------------------------------------------


@audit.command("tail", short_help="Print the latest security events; --follow for new ones.")
@click.option(
    "-n",
    "--lines",
    "count",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many of the latest events to print.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(_KINDS),
    multiple=True,
    metavar="KIND",
    help="Only events of this kind (repeatable), e.g. message.denied.",
)
@_log_option
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per event and line.")
@pass_settings
def tail(
    settings: Settings,
    count: int,
    follow: bool,
    kinds: tuple[str, ...],
    log_path: Path | None,
    json_mode: bool,
) -> None:
    """Print the latest security events from the audit log: time, kind, agent, peer,
    reason. Agents are shown by name when the home knows them."""
    out = Output(json_mode=json_mode)
    home = settings.home(keys=False)
    path = log_path if log_path is not None else home.audit_path
    wanted = frozenset(EventKind(kind) for kind in kinds) or None
    printer = _EventPrinter(out, Names(home))
    with LogFile(path) as file:
        end = file.size()
        for index, event in _latest(file, end, count, wanted, out):
            printer.show(index, event)
        if not follow:
            return
        try:
            while True:
                _sleep(FOLLOW_INTERVAL)
                size = file.size()
                if size < end:
                    out.warn(f"the audit log shrank from {end} to {size} entries")
                    end = size
                    continue
                for index, data in file.entries(end, size):
                    new = _decode(index, data, out)
                    if new is not None and (wanted is None or new.kind in wanted):
                        printer.show(index, new)
                end = size
        except KeyboardInterrupt:
            return  # Ctrl-C is how a follow ends


def _latest(
    file: LogFile, end: int, count: int, wanted: frozenset[EventKind] | None, out: Output
) -> list[tuple[int, SecurityEvent]]:
    """The last ``count`` events of the wanted kinds below index ``end``, oldest first."""
    found: list[tuple[int, SecurityEvent]] = []
    for index, event in _backwards(file, end, out):
        if len(found) >= count:
            break
        if wanted is None or event.kind in wanted:
            found.append((index, event))
    return list(reversed(found))


def _backwards(file: LogFile, end: int, out: Output) -> Iterator[tuple[int, SecurityEvent]]:
    """The events below index ``end``, newest first, read a chunk at a time."""
    while end > 0:
        start = max(0, end - TAIL_CHUNK)
        for index, data in reversed(file.entries(start, end)):
            event = _decode(index, data, out)
            if event is not None:
                yield index, event
        end = start


def _decode(index: int, data: bytes, out: Output) -> SecurityEvent | None:
    try:
        return decode_event(data)
    except ValueError:
        out.warn(f"audit log entry {index} is not a security event")
        return None


class _EventPrinter:
    def __init__(self, out: Output, names: Names) -> None:
        self._out = out
        self._names = names

    def show(self, index: int, event: SecurityEvent) -> None:
        names = self._names
        if self._out.json_mode:
            self._out.json(
                {
                    "index": index,
                    "time": event.time,
                    "kind": event.kind.value,
                    "agent": event.agent,
                    "agent_name": names.name(event.agent),
                    "peer": event.peer,
                    "peer_name": names.name(event.peer),
                    "reason": event.reason,
                    "details": dict(event.details),
                }
            )
            return
        self._out.line(
            "  ".join(
                [
                    format_time(event.time),
                    f"{event.kind.value:<21}",
                    safe(names.label(event.agent)),
                    safe(names.label(event.peer)),
                    safe(event.reason or "-"),
                ]
            )
        )
