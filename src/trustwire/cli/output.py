"""Terminal output: rich when stdout is a terminal, plain text otherwise, JSON on request.

Invariants:

- Text that came from elsewhere (message content, names served by the coordinator,
  file paths) goes through :func:`safe` before it reaches a terminal: control and format
  characters are shown escaped, so a sender cannot move the cursor, rewrite earlier lines
  or reorder text (bidi overrides) on the listener's screen, and rich markup in it is
  inert.
- JSON output is one object per line, ASCII only (``ensure_ascii``), so even C1 control
  characters arrive escaped.
- Reports go to stdout, diagnostics (warnings, the failure line) to stderr.
- Plain output never wraps: a DID or fingerprint stays on one line for ``grep`` and
  ``cut``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import click
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

__all__ = ["Output", "format_time", "safe"]


def safe(text: str) -> str:
    """``text`` with unprintable characters escaped and rich markup made inert.

    Newlines and tabs are kept; every other control or format character (ANSI escapes,
    bidi overrides, NUL, ...) is replaced by its ``\\x..``/``\\u....`` escape.
    """
    parts: list[str] = []
    for char in text:
        if char.isprintable() or char in "\n\t":
            parts.append(char)
        else:
            code = ord(char)
            parts.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return escape("".join(parts))


def format_time(epoch: float) -> str:
    """An epoch time as ISO 8601 UTC to the second (``2026-01-02T03:04:05Z``)."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Output:
    """Where a command writes. ``json_mode`` turns human output off (only :meth:`json`)."""

    def __init__(self, *, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        # emoji=False: ``did:key:...`` must not become "did🔑...".
        self.console = Console(highlight=False, soft_wrap=True, emoji=False)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

    @property
    def rich(self) -> bool:
        """Whether human output is rendered with colours, tables and panels."""
        return self.console.is_terminal and not self.json_mode

    def line(self, markup: str = "") -> None:
        """Print one line of human output (rich markup; plain when not a terminal)."""
        if self.json_mode:
            return
        if self.rich:
            self.console.print(markup)
        else:
            click.echo(_plain(markup))

    def show(self, renderable: RenderableType) -> None:
        """Print a rich renderable (panel, table) in human mode."""
        if not self.json_mode:
            self.console.print(renderable)

    def note(self, markup: str) -> None:
        """A diagnostic line on stderr (shown in every mode)."""
        if self.errors.is_terminal:
            self.errors.print(markup)
        else:
            click.echo(_plain(markup), err=True)

    def warn(self, markup: str) -> None:
        """A warning on stderr."""
        self.note(f"[yellow]warning:[/yellow] {markup}")

    def json(self, value: object) -> None:
        """One JSON object on one line of stdout."""
        sys.stdout.write(json.dumps(value, ensure_ascii=True, sort_keys=True) + "\n")
        sys.stdout.flush()

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[str]], *, title: str | None = None
    ) -> None:
        """A table: boxed with rich on a terminal, aligned plain columns otherwise.

        Cells are markup (pass user data through :func:`safe`).
        """
        if self.json_mode:
            return
        if self.rich:
            table = Table(title=title, show_lines=False, header_style="bold")
            for column in columns:
                table.add_column(column, overflow="fold")
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
            return
        plain = [[_plain(cell) for cell in row] for row in rows]
        header = list(columns)
        widths = [
            max(len(header[i]), *(len(row[i]) for row in plain)) if plain else len(header[i])
            for i in range(len(columns))
        ]
        for row in [header, *plain]:
            click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _plain(markup: str) -> str:
    """The text of ``markup`` without styles (and without emoji codes expanded)."""
    return Text.from_markup(markup, emoji=False).plain
