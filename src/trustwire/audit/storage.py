"""Where a :class:`~trustwire.audit.log.MerkleLog` keeps its entries: memory or a SQLite file.

Both backends store the entries, the perfect subtrees at the cached levels (see
:mod:`trustwire.audit.merkle`) and the latest signed tree head, and are only ever called
from their log's :class:`Runner`.

Invariants and why (SQLite, following :mod:`trustwire.store.sqlite`):

* **One connection, one thread.** :class:`WorkerRunner` runs every job on one dedicated
  thread that owns the only connection; callers on other threads wait for the result.
* **WAL, ``synchronous=NORMAL`` by default; one ``BEGIN IMMEDIATE`` transaction per
  batch** (entries and the nodes they complete together, so the cache never disagrees
  with the entries after a crash).
* **Versioned, self-identifying schema.** ``merkle_log_version`` marks a file as a Merkle
  log (a trustwire store or any other database is refused), ``meta`` records the log's
  origin so one log's file cannot be opened as another's.
* **Rows read back are checked**: indexes must run without gaps and entries must be blobs,
  else :class:`~trustwire.errors.LogInconsistent`; every ``sqlite3`` error becomes
  :class:`~trustwire.errors.StoreError` at this boundary.
* **Private files.** A new log file is created mode 0600 before SQLite opens it.

:func:`read_entries` opens a log file read-only for auditors: it needs no key and takes
no write lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, Protocol, TypeVar
from urllib.parse import quote

from trustwire.audit.merkle import HASH_SIZE, leaf_hash
from trustwire.errors import LogInconsistent, StoreError
from trustwire.store.sqlite import in_transaction, open_private_wal

__all__ = [
    "SCHEMA_VERSION",
    "SYNCHRONOUS_MODES",
    "LockRunner",
    "LogStorage",
    "MemoryLogStorage",
    "Runner",
    "SqliteLogStorage",
    "WorkerRunner",
    "read_entries",
]

SCHEMA_VERSION: Final = 1
"""The log file schema this code reads and writes."""

SYNCHRONOUS_MODES: Final = ("FULL", "NORMAL")
"""Accepted values of the ``synchronous`` option."""

_T = TypeVar("_T")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class LogStorage(Protocol):
    """What a log needs from storage. Called only from the log's runner.

    Ranges are half-open, ``[start, end)``. A backend returns fewer items than asked for
    only when they are missing; the log treats that as damage.
    """

    def size(self) -> int:
        """Number of stored entries."""
        ...

    def entries(self, start: int, end: int) -> list[bytes]:
        """The stored entries ``start`` to ``end``."""
        ...

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """The leaf hashes of entries ``start`` to ``end``."""
        ...

    def nodes(self, level: int, start: int, end: int) -> list[bytes]:
        """Cached perfect subtrees ``(level, start)`` to ``(level, end)``."""
        ...

    def append(
        self,
        start: int,
        entries: Sequence[bytes],
        leaf_hashes: Sequence[bytes],
        nodes: Sequence[tuple[int, int, bytes]],
    ) -> None:
        """Store entries from index ``start`` and the cached nodes they complete, atomically."""
        ...

    def load_head(self) -> str | None:
        """The latest signed tree head (JSON), if one was saved."""
        ...

    def save_head(self, head: str) -> None:
        """Replace the latest signed tree head."""
        ...

    def close(self) -> None:
        """Release the storage."""
        ...


class MemoryLogStorage:
    """Lists in memory (tests, ``trustwire demo``); lost when the process ends."""

    def __init__(self) -> None:
        self._entries: list[bytes] = []
        self._leaves: list[bytes] = []
        self._levels: dict[int, list[bytes]] = {}
        self._head: str | None = None

    def size(self) -> int:
        return len(self._entries)

    def entries(self, start: int, end: int) -> list[bytes]:
        return self._entries[start:end]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        return self._leaves[start:end]

    def nodes(self, level: int, start: int, end: int) -> list[bytes]:
        return self._levels.get(level, [])[start:end]

    def append(
        self,
        start: int,
        entries: Sequence[bytes],
        leaf_hashes: Sequence[bytes],
        nodes: Sequence[tuple[int, int, bytes]],
    ) -> None:
        self._entries.extend(entries)
        self._leaves.extend(leaf_hashes)
        for level, _index, digest in nodes:
            self._levels.setdefault(level, []).append(digest)

    def load_head(self) -> str | None:
        return self._head

    def save_head(self, head: str) -> None:
        self._head = head

    def close(self) -> None:
        """Nothing to release."""


_SCHEMA: Final = (
    "CREATE TABLE merkle_log_version (version INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    # Perfect subtrees at the cached levels; derived from entries, written with them.
    """CREATE TABLE nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID""",
)


def _rows_in_order(rows: Iterable[tuple[object, object]], start: int, path: str) -> Iterator[bytes]:
    """Yield each row's blob, checking the indexes run ``start, start + 1, ...``."""
    expected = start
    for idx, data in rows:
        if idx != expected:
            if isinstance(idx, int) and idx > expected:
                raise LogInconsistent(f"{path}: entry {expected} is missing")
            raise LogInconsistent(f"{path}: unexpected entry index {idx!r}")
        if type(data) is not bytes:
            raise LogInconsistent(f"{path}: entry {idx} is not a blob")
        yield data
        expected += 1


class SqliteLogStorage:
    """The tables of one log file, used only from the log's worker thread."""

    def __init__(self, path: str, synchronous: str, origin: str) -> None:
        self.path = path
        self._synchronous = synchronous
        self._origin = origin
        self._connection: sqlite3.Connection | None = None

    def open(self) -> None:
        self._connection = open_private_wal(
            self.path, self._synchronous, creating="Merkle log", using="Merkle log"
        )
        self._transaction(self._migrate)

    def _live(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError(f"the Merkle log {self.path} is not open")
        return self._connection

    def _transaction(self, job: Callable[[sqlite3.Connection], None]) -> None:
        in_transaction(self._live(), job)

    def _migrate(self, connection: sqlite3.Connection) -> None:
        tables = {
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute(
                "INSERT INTO merkle_log_version (version) VALUES (?)", (SCHEMA_VERSION,)
            )
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('origin', ?)", (self._origin,)
            )
            return
        if "merkle_log_version" not in tables:
            raise StoreError(f"{self.path} is a SQLite database but not a trustwire Merkle log")
        rows = connection.execute("SELECT version FROM merkle_log_version").fetchall()
        if len(rows) != 1 or not _is_int(rows[0][0]):
            raise StoreError(f"{self.path}: the merkle_log_version table is damaged")
        version: int = rows[0][0]
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has Merkle log schema version {version}; this trustwire "
                f"reads version {SCHEMA_VERSION}"
            )
        row = connection.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
        if row is None or row[0] != self._origin:
            found = None if row is None else row[0]
            raise StoreError(f"{self.path} is the log {found!r}, not {self._origin!r}")

    def size(self) -> int:
        (last,) = self._live().execute("SELECT max(idx) FROM entries").fetchone()
        if last is None:
            return 0
        if not _is_int(last) or last < 0:
            raise LogInconsistent(f"{self.path}: damaged entry index {last!r}")
        return int(last) + 1

    def entries(self, start: int, end: int) -> list[bytes]:
        rows = self._live().execute(
            "SELECT idx, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        )
        found = list(_rows_in_order(rows, start, self.path))
        if len(found) != end - start:
            raise LogInconsistent(f"{self.path}: entry {start + len(found)} is missing")
        return found

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        return [leaf_hash(data) for data in self.entries(start, end)]

    def nodes(self, level: int, start: int, end: int) -> list[bytes]:
        rows = self._live().execute(
            "SELECT hash FROM nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (level, start, end),
        )
        return [digest for (digest,) in rows if type(digest) is bytes and len(digest) == HASH_SIZE]

    def append(
        self,
        start: int,
        entries: Sequence[bytes],
        leaf_hashes: Sequence[bytes],
        nodes: Sequence[tuple[int, int, bytes]],
    ) -> None:
        def job(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "INSERT INTO entries (idx, data) VALUES (?, ?)",
                zip(range(start, start + len(entries)), entries, strict=True),
            )
            if nodes:
                connection.executemany(
                    "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", nodes
                )

        self._transaction(job)

    def load_head(self) -> str | None:
        row = self._live().execute("SELECT value FROM meta WHERE key = 'head'").fetchone()
        return None if row is None else str(row[0])

    def save_head(self, head: str) -> None:
        def job(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('head', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (head,),
            )

        self._transaction(job)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class Runner(Protocol):
    def run(self, job: Callable[[], _T]) -> _T: ...
    def shutdown(self) -> None: ...


class LockRunner:
    """Runs jobs on the calling thread, one at a time (the in-memory log)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def run(self, job: Callable[[], _T]) -> _T:
        with self._lock:
            return job()

    def shutdown(self) -> None:
        """Nothing to stop."""


class WorkerRunner:
    """Runs jobs on one dedicated thread that owns the SQLite connection."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trustwire-log")

    def run(self, job: Callable[[], _T]) -> _T:
        return self._executor.submit(self._translate, job).result()

    def _translate(self, job: Callable[[], _T]) -> _T:
        try:
            return job()
        except sqlite3.Error as exc:
            raise StoreError(f"Merkle log {self._path}: {exc}") from exc

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def read_entries(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Stream the entries of the log file at ``path``, opened read-only, in index order.

    Raises :class:`~trustwire.errors.StoreError` if the file cannot be opened and
    :class:`~trustwire.errors.LogInconsistent` (mid-stream) for a missing index, a
    non-blob entry or missing tables, so :func:`verify_log` reports those as problems.
    """
    file = os.fspath(path)
    if not os.path.isfile(file):
        raise StoreError(f"no Merkle log file at {file}")
    return _read_entries(file)


def _read_entries(file: str) -> Iterator[bytes]:
    try:
        connection = sqlite3.connect(f"file:{quote(file)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open Merkle log {file}: {exc}") from exc
    try:
        try:
            tables = {
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                )
            }
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{file} is not a usable SQLite database ({exc})") from exc
        if "entries" not in tables:
            raise LogInconsistent(f"{file}: the entries table is missing")
        try:
            rows = connection.execute("SELECT idx, data FROM entries ORDER BY idx")
            yield from _rows_in_order(rows, 0, file)
        except sqlite3.Error as exc:
            raise StoreError(f"reading Merkle log {file}: {exc}") from exc
    finally:
        connection.close()
