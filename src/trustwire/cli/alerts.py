"""``trustwire alerts tail``: read the alerts the anomaly detectors raised.

``trustwire serve`` appends every alert to ``HOME/alerts.jsonl`` (one
:meth:`Alert.to_json <trustwire.detect.model.Alert.to_json>` line each, mode 0600). This
command prints the last ones and, with ``--follow``, new ones as they are written. A
line that is not an alert is skipped with a warning; a partial last line (a write in
progress) waits for its newline; a file that shrank or was replaced (rotation) is read
again from its start.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import click

from trustwire.cli.directory import Names
from trustwire.cli.output import Output, format_time, safe
from trustwire.cli.settings import Settings, pass_settings
from trustwire.detect.model import Alert

__all__ = ["alerts"]

FOLLOW_INTERVAL = 0.5
"""Seconds between polls of ``alerts tail --follow``."""

_BLOCK = 64 * 1024

# Indirection so tests can end a --follow loop deterministically.
_sleep: Callable[[float], None] = time.sleep


@click.group(short_help="Read the alerts raised by the anomaly detectors.")
def alerts() -> None:
    """Read the alerts raised by the anomaly detectors (HOME/alerts.jsonl)."""


@alerts.command("tail", short_help="Print the latest alerts; --follow for new ones.")
@click.option(
    "-n",
    "--lines",
    "count",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many of the latest alerts to print.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new alerts until Ctrl-C.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per alert and line.")
@pass_settings
def tail(settings: Settings, count: int, follow: bool, json_mode: bool) -> None:
    """Print the latest alerts: time, severity, kind, agent and summary."""
    out = Output(json_mode=json_mode)
    home = settings.home(keys=False)
    path = home.alerts_path
    printer = _AlertPrinter(out, Names(home))
    follower = _Follower(path)
    if not path.exists():
        if not follow:
            out.line(f"no alerts yet ({safe(str(path))} does not exist)")
            return
    else:
        lines, follower.offset, follower.inode = _last_lines(path, count)
        for line in lines:
            printer.show_line(line)
    if not follow:
        return
    try:
        while True:
            _sleep(FOLLOW_INTERVAL)
            for line in follower.read_new(out):
                printer.show_line(line)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a follow ends


def _last_lines(path: Path, count: int) -> tuple[list[bytes], int, int]:
    """The last ``count`` complete lines of ``path``, the offset just after them, and the
    file's inode. Reads backwards a block at a time, so a long file costs little."""
    with path.open("rb") as handle:
        inode = os.fstat(handle.fileno()).st_ino
        size = handle.seek(0, os.SEEK_END)
        data = _tail_bytes(handle, size, count)
    # Only complete lines: a line still being written is read by the follower later.
    complete_end = data.rfind(b"\n") + 1
    end_offset = size - (len(data) - complete_end)
    lines = [line for line in data[:complete_end].split(b"\n") if line.strip()]
    return lines[-count:] if count else [], end_offset, inode


def _tail_bytes(handle: BinaryIO, size: int, count: int) -> bytes:
    """Enough of the end of the file to hold its last ``count`` complete lines."""
    position = size
    data = b""
    while position > 0 and data.count(b"\n") <= count:
        step = min(_BLOCK, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
    return data


class _Follower:
    """Reads lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.inode: int | None = None
        self._partial = b""

    def read_new(self, out: Output) -> list[bytes]:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return []
        with handle:
            info = os.fstat(handle.fileno())
            if self.inode is not None and info.st_ino != self.inode:
                out.warn(f"{safe(str(self.path))} was replaced; reading it from the start")
                self.offset, self._partial = 0, b""
            elif info.st_size < self.offset:
                out.warn(f"{safe(str(self.path))} shrank; reading it from the start")
                self.offset, self._partial = 0, b""
            self.inode = info.st_ino
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        data = self._partial + data
        complete_end = data.rfind(b"\n") + 1
        self._partial = data[complete_end:]
        return [line for line in data[:complete_end].split(b"\n") if line.strip()]


class _AlertPrinter:
    def __init__(self, out: Output, names: Names) -> None:
        self._out = out
        self._names = names

    def show_line(self, line: bytes) -> None:
        try:
            alert = Alert.from_json(line)
        except ValueError as exc:
            self._out.warn(f"skipped a line that is not an alert: {safe(str(exc))}")
            return
        self.show(alert)

    def show(self, alert: Alert) -> None:
        if self._out.json_mode:
            data = alert.to_dict()
            data["agent_name"] = self._names.name(alert.agent)
            self._out.json(data)
            return
        colour = {"critical": "red", "warning": "yellow"}.get(alert.severity.value, "cyan")
        self._out.line(
            "  ".join(
                [
                    format_time(alert.time),
                    f"[{colour}]{alert.severity.value:<8}[/{colour}]",
                    f"{alert.kind.value:<18}",
                    safe(self._names.label(alert.agent)),
                    safe(alert.summary),
                ]
            )
        )
