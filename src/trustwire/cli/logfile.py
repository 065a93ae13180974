"""Reading an audit log file the way an auditor does: read-only, without the log key.

:class:`LogFile` opens the SQLite file of a :class:`~trustwire.audit.log.MerkleLog` with
``mode=ro``, so the operator commands never take a write lock, never create anything
and never change what they inspect, even while ``trustwire serve`` appends to the log.
It reads the stored latest tree head and entries by index; whole-log verification
streams the entries through :func:`trustwire.audit.log.read_entries` instead, which
checks the index sequence as it goes.

Why not :meth:`MerkleLog.open_sqlite`: opening a log for writing checks its node cache
against the stored head and refuses a damaged file, and an auditor needs to read exactly
the damaged file; it would also want a write lock that a running coordinator holds.

The schema read here is version 1 of :mod:`trustwire.audit.storage` (tables
``merkle_log_version``, ``meta``, ``entries``); another version is refused.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from trustwire.audit.log import TreeHead
from trustwire.audit.storage import SCHEMA_VERSION
from trustwire.errors import StoreError

__all__ = ["LogFile", "StoredHead"]


class StoredHead:
    """The ``head`` row of a log file: parsed when well-formed, else the reason why not."""

    def __init__(self, head: TreeHead | None, problem: str | None) -> None:
        self.head = head
        self.problem = problem


class LogFile:
    """A read-only view of one Merkle log file. Close it with :meth:`close` (or ``with``).

    Raises :class:`~trustwire.errors.StoreError` when ``path`` is missing, is not a
    SQLite database, or is not a Merkle log of the schema this code reads.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"no audit log at {self.path}")
        try:
            self._connection = sqlite3.connect(
                f"file:{quote(os.fspath(self.path))}?mode=ro", uri=True
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            self._check_schema()
        except BaseException:
            self._connection.close()
            raise

    def _check_schema(self) -> None:
        try:
            tables = {
                name
                for (name,) in self._connection.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                )
            }
            if "merkle_log_version" not in tables:
                raise StoreError(f"{self.path} is not a trustwire Merkle log")
            rows = self._connection.execute("SELECT version FROM merkle_log_version").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path} is not a usable SQLite database ({exc})") from exc
        if rows != [(SCHEMA_VERSION,)]:
            raise StoreError(f"{self.path}: unsupported or damaged Merkle log schema version")

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def __enter__(self) -> LogFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def origin(self) -> str | None:
        """The origin recorded when the log was created (``None`` if the row is gone)."""
        row = self._query_one("SELECT value FROM meta WHERE key = 'origin'")
        return row if isinstance(row, str) else None

    def head(self) -> StoredHead:
        """The latest signed tree head stored in the file (not yet verified)."""
        text = self._query_one("SELECT value FROM meta WHERE key = 'head'")
        if text is None:
            return StoredHead(None, "the log holds no signed tree head")
        if not isinstance(text, str):
            return StoredHead(None, "the stored tree head is damaged (not text)")
        try:
            return StoredHead(TreeHead.from_json(text), None)
        except ValueError as exc:
            return StoredHead(None, f"the stored tree head is damaged ({exc})")

    def size(self) -> int:
        """One past the highest entry index (the log's size when nothing is missing)."""
        last = self._query_one("SELECT max(idx) FROM entries")
        if last is None:
            return 0
        if not isinstance(last, int) or last < 0:
            raise StoreError(f"{self.path}: damaged entry index {last!r}")
        return last + 1

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """The stored entries with ``start <= index < end``, as (index, data), in order.

        Rows that are not blobs are skipped; gaps are not filled (verification, not
        display, is where damage is reported).
        """
        try:
            rows = self._connection.execute(
                "SELECT idx, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"reading {self.path}: {exc}") from exc
        return [(idx, data) for idx, data in rows if isinstance(idx, int) and type(data) is bytes]

    def _query_one(self, sql: str) -> object:
        try:
            row = self._connection.execute(sql).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"reading {self.path}: {exc}") from exc
        return None if row is None else row[0]
