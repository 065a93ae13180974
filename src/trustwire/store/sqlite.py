"""SQLite backend (``sqlite:///path.db``): the embedded, durable default.

Invariants and why:

* **One connection, one thread.** Every ``sqlite3`` call runs on a single dedicated worker
  thread (a one-thread executor) that owns the only connection, so the event loop never
  blocks on disk and calls are serialized in submission order without locks. Closing
  queues behind work already submitted, so that work finishes first.
* **WAL, ``synchronous=NORMAL`` by default.** In WAL mode a commit appends to the log;
  with ``NORMAL`` the log is fsynced only at checkpoints. A committed transaction then
  survives a crash or kill of the *process* (the OS still holds the written pages), which
  is what a coordinator restart needs, at a fraction of the cost of an fsync per commit.
  Only an OS crash or power loss can lose the last commits. ``synchronous="FULL"`` fsyncs
  every commit and survives power loss too.
* **One transaction per batch.** ``enqueue_many`` and ``ack`` each run in one
  ``BEGIN IMMEDIATE`` ... ``COMMIT`` (group commit); ``IMMEDIATE`` takes the write lock up
  front, so a check-then-write inside it cannot race another process using the same file.
* **``seq`` never goes back.** It is an ``AUTOINCREMENT`` key: SQLite never reuses a value,
  even after the newest rows are deleted or the file is reopened.
* **A message's row is its own tombstone.** ``ack`` empties the frame and sets
  ``tombstone_until``; ``purge_expired`` deletes the row. So the ``UNIQUE`` message id
  column alone enforces deduplication, and the store stops holding a frame once it is
  delivered (its ciphertext bytes may linger in free pages until SQLite reuses them).
* **Private files.** A new database file is created mode 0600 before SQLite opens it;
  SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.
* **Versioned schema.** ``schema_version`` holds one row. A database from a newer trustwire
  is refused rather than misread; a file that is not SQLite, or a SQLite database that is
  not a trustwire store, is refused with :class:`~trustwire.errors.StoreError`. Every
  ``sqlite3`` error is translated to ``StoreError`` at this boundary, and rows read back
  are validated, so a damaged file yields a clear error, never a raw traceback.
  Migrations run in one transaction on open: version 1 files (no join tokens, no
  directory generation) are upgraded in place to version 2.
* **The directory generation lives in the file.** One row of ``directory_generation`` is
  bumped inside the transaction of every directory change, so another process's changes
  are seen by the next ``generation()`` read (a single-row SELECT).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from trustwire.errors import DuplicateAgent, StoreError, UnknownAgent
from trustwire.store.base import (
    AgentDirectory,
    AgentRecord,
    DeliveryQueue,
    JoinTokens,
    NewMessage,
    QueuedMessage,
    Store,
    check_agreement,
    check_limit,
    check_retention,
    check_roles,
    check_text,
    check_time,
    check_token,
)

__all__ = [
    "SCHEMA_VERSION",
    "SYNCHRONOUS_MODES",
    "Database",
    "SqliteAgentDirectory",
    "SqliteDeliveryQueue",
    "SqliteJoinTokens",
    "in_transaction",
    "open_private_wal",
    "open_sqlite_store",
]

SCHEMA_VERSION: Final = 2
"""The schema version this code reads and writes."""

SYNCHRONOUS_MODES: Final = ("FULL", "NORMAL")
"""Accepted values of the ``synchronous`` option."""

_BUSY_TIMEOUT_MS: Final = 5000

# _MIGRATIONS[v] turns a version-v database into version v + 1 (v = 0: an empty file).
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "INSERT INTO schema_version (version) VALUES (0)",
        """CREATE TABLE agents (
            did TEXT NOT NULL PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            roles TEXT NOT NULL,
            agreement_key BLOB NOT NULL,
            agreement_statement BLOB NOT NULL,
            agreement_issued_at INTEGER NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )""",
        # One row per message id. While pending, tombstone_until is NULL; ack empties
        # the frame and sets tombstone_until, turning the row into its own tombstone.
        # One UPDATE per acked message touches fewer B-trees than moving it to a
        # separate tombstone table (measured: over twice the ack throughput). The
        # partial indexes keep pending lookups and purges off each other's rows.
        """CREATE TABLE queue (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            recipient TEXT NOT NULL,
            sender TEXT NOT NULL,
            message_id BLOB NOT NULL UNIQUE,
            frame BLOB NOT NULL,
            enqueued_at REAL NOT NULL,
            tombstone_until REAL
        )""",
        """CREATE INDEX queue_pending ON queue (recipient, seq)
            WHERE tombstone_until IS NULL""",
        """CREATE INDEX queue_tombstones ON queue (tombstone_until)
            WHERE tombstone_until IS NOT NULL""",
    ),
    (
        # Version 2: one-time join tokens (by hash) and the directory generation.
        """CREATE TABLE join_tokens (
            token_hash BLOB NOT NULL PRIMARY KEY,
            name TEXT NOT NULL,
            roles TEXT NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL
        )""",
        "CREATE TABLE directory_generation (value INTEGER NOT NULL)",
        "INSERT INTO directory_generation (value) VALUES (0)",
    ),
)

# ``IN (?, ?, ...)`` lists are padded (by repeating the last id, which changes no result)
# to one of a few sizes, so the connection's statement cache holds a handful of
# statements instead of one per batch size. The largest stays under SQLite's historic
# limit of 999 bound parameters.
_IN_SIZES: Final = (1, 4, 16, 64, 256)

_T = TypeVar("_T")


class Database:
    """A SQLite file behind one worker thread and the one connection it owns.

    Reusable by other stores (sessions, shared memory) with their own schema: ``migrate``
    runs inside one transaction when the file is opened and must create or upgrade the
    schema (or raise :class:`~trustwire.errors.StoreError`). Files are created 0600, in WAL
    mode; every ``sqlite3`` error becomes ``StoreError``.
    """

    def __init__(
        self,
        path: str,
        synchronous: str = "NORMAL",
        migrate: Callable[[sqlite3.Connection, str], None] | None = None,
    ) -> None:
        self.path = path
        self._migrate = _migrate if migrate is None else migrate
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trustwire-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    async def open(self) -> None:
        try:
            await self._submit(self._open)
        except BaseException:
            await self.close()
            raise

    async def run(self, job: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``job(connection)`` on the worker thread, outside a transaction."""
        if self._closed:
            raise StoreError(f"the SQLite store {self.path} is closed")
        return await self._submit(lambda: job(self._live()))

    async def write(self, job: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``job(connection)`` on the worker thread inside one write transaction."""
        return await self.run(lambda connection: in_transaction(connection, job))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._submit(self._close_connection)
        finally:
            # The worker is idle now (the close job was the last one), so this join is
            # immediate and does not hold up the event loop.
            self._executor.shutdown(wait=True)

    async def _submit(self, job: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._translate, job)

    def _translate(self, job: Callable[[], _T]) -> _T:
        try:
            return job()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _live(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError(f"the SQLite store {self.path} is not open")
        return self._connection

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _open(self) -> None:
        connection = open_private_wal(
            self.path, self._synchronous, creating="SQLite store", using="trustwire store"
        )
        self._connection = connection
        in_transaction(connection, lambda c: self._migrate(c, self.path))


def open_private_wal(
    path: str, synchronous: str, *, creating: str, using: str
) -> sqlite3.Connection:
    """Open (creating it 0600 if needed) the SQLite file ``path`` in WAL mode with a busy
    timeout and ``synchronous``, with no implicit transactions (``BEGIN``/``COMMIT`` are
    issued explicitly, see :func:`in_transaction`). ``creating`` and ``using`` name the
    file's role in the :class:`StoreError` raised when it cannot be created or is not a
    usable SQLite database."""
    _create_private(path, creating)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: could not enable WAL journal mode (got {mode!r})")
        connection.execute(f"PRAGMA synchronous = {synchronous}")
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise StoreError(
            f"{path} is not a usable SQLite database ({exc}); refusing to use it as a {using}"
        ) from exc
    except BaseException:
        connection.close()
        raise
    return connection


def _create_private(path: str, creating: str) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite would use 0644)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create {creating} {path}: {exc.strerror}") from exc
    os.close(fd)


def in_transaction(connection: sqlite3.Connection, job: Callable[[sqlite3.Connection], _T]) -> _T:
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = job(connection)
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result


def _migrate(connection: sqlite3.Connection, path: str) -> None:
    tables = {
        name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    if "schema_version" in tables:
        rows = connection.execute("SELECT version FROM schema_version").fetchall()
        if len(rows) != 1 or type(rows[0][0]) is not int or rows[0][0] < 0:
            raise StoreError(f"{path}: the schema_version table is damaged")
        version: int = rows[0][0]
    elif tables:
        raise StoreError(f"{path} is a SQLite database but not a trustwire store")
    else:
        version = 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than the {SCHEMA_VERSION} this "
            "trustwire supports; upgrade trustwire to open it"
        )
    if version == SCHEMA_VERSION:
        return
    for step in _MIGRATIONS[version:]:
        for statement in step:
            connection.execute(statement)
    connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))


def _in_chunks(ids: Sequence[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    """Yield ``(placeholders, parameters)`` for ``IN (...)`` over ``ids`` (non-empty)."""
    largest = _IN_SIZES[-1]
    for start in range(0, len(ids), largest):
        chunk = list(ids[start : start + largest])
        size = next(s for s in _IN_SIZES if s >= len(chunk))
        chunk.extend(chunk[-1:] * (size - len(chunk)))
        yield ",".join("?" * size), chunk


def _agent_from_row(row: tuple[Any, ...], path: str) -> AgentRecord:
    try:
        roles = json.loads(row[2])
        if not isinstance(roles, list):
            raise TypeError("roles is not a list")
        return AgentRecord(
            name=row[0],
            did=row[1],
            roles=tuple(roles),
            agreement_key=row[3],
            agreement_statement=row[4],
            agreement_issued_at=row[5],
            created_at=row[6],
            revoked_at=row[7],
        )
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{path}: damaged agent record ({exc})") from exc


def _message_from_row(row: tuple[Any, ...], path: str) -> QueuedMessage:
    try:
        return QueuedMessage(*row)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{path}: damaged queued message ({exc})") from exc


_AGENT_COLUMNS: Final = (
    "name, did, roles, agreement_key, agreement_statement, agreement_issued_at, "
    "created_at, revoked_at"
)
_MESSAGE_COLUMNS: Final = "seq, recipient, sender, message_id, frame, enqueued_at"


class SqliteAgentDirectory(AgentDirectory):
    """:class:`~trustwire.store.base.AgentDirectory` in the ``agents`` table."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(self, record: AgentRecord) -> None:
        def job(connection: sqlite3.Connection) -> None:
            for field, value in (("name", record.name), ("did", record.did)):
                query = f"SELECT 1 FROM agents WHERE {field} = ?"  # noqa: S608 - fixed names
                if connection.execute(query, (value,)).fetchone() is not None:
                    raise DuplicateAgent(field, value)
            connection.execute(
                f"INSERT INTO agents ({_AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (
                    record.name,
                    record.did,
                    json.dumps(builtins.list(record.roles)),
                    record.agreement_key,
                    record.agreement_statement,
                    record.agreement_issued_at,
                    record.created_at,
                    record.revoked_at,
                ),
            )
            _bump_generation(connection)

        await self._db.write(job)

    async def get_by_did(self, did: str) -> AgentRecord | None:
        return await self._get("did", did)

    async def get_by_name(self, name: str) -> AgentRecord | None:
        return await self._get("name", name)

    async def set_roles(self, did: str, roles: Sequence[str]) -> None:
        encoded = json.dumps(builtins.list(check_roles(roles)))

        def job(connection: sqlite3.Connection) -> None:
            cursor = connection.execute("UPDATE agents SET roles = ? WHERE did = ?", (encoded, did))
            if cursor.rowcount == 0:
                raise UnknownAgent(f"no agent with DID {did!r}")
            _bump_generation(connection)

        await self._db.write(job)

    async def revoke(self, did: str, *, at: float) -> None:
        def job(connection: sqlite3.Connection) -> None:
            # COALESCE keeps the first revocation time when revoking twice.
            cursor = connection.execute(
                "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?) WHERE did = ?", (at, did)
            )
            if cursor.rowcount == 0:
                raise UnknownAgent(f"no agent with DID {did!r}")
            _bump_generation(connection)

        await self._db.write(job)

    async def rotate_agreement(
        self,
        did: str,
        *,
        agreement_key: bytes,
        agreement_statement: bytes,
        agreement_issued_at: int,
    ) -> None:
        check_agreement(agreement_key, agreement_statement, agreement_issued_at)

        def job(connection: sqlite3.Connection) -> None:
            row = connection.execute(
                "SELECT revoked_at FROM agents WHERE did = ?", (did,)
            ).fetchone()
            if row is None:
                raise UnknownAgent(f"no agent with DID {did!r}")
            if row[0] is not None:
                raise StoreError(f"agent {did!r} is revoked; its key cannot be rotated")
            connection.execute(
                "UPDATE agents SET agreement_key = ?, agreement_statement = ?, "
                "agreement_issued_at = ? WHERE did = ?",
                (agreement_key, agreement_statement, agreement_issued_at, did),
            )
            _bump_generation(connection)

        await self._db.write(job)

    async def generation(self) -> int:
        path = self._db.path

        def job(connection: sqlite3.Connection) -> int:
            rows = connection.execute("SELECT value FROM directory_generation").fetchall()
            if len(rows) != 1 or type(rows[0][0]) is not int:
                raise StoreError(f"{path}: the directory_generation table is damaged")
            value: int = rows[0][0]
            return value

        return await self._db.run(job)

    async def close(self) -> None:
        await self._db.close()

    async def list(self) -> builtins.list[AgentRecord]:
        path = self._db.path

        def job(connection: sqlite3.Connection) -> builtins.list[AgentRecord]:
            rows = connection.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY rowid"  # noqa: S608
            ).fetchall()
            return [_agent_from_row(row, path) for row in rows]

        return await self._db.run(job)

    async def _get(self, field: str, value: str) -> AgentRecord | None:
        path = self._db.path

        def job(connection: sqlite3.Connection) -> AgentRecord | None:
            row = connection.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents WHERE {field} = ?",  # noqa: S608
                (value,),
            ).fetchone()
            return None if row is None else _agent_from_row(row, path)

        return await self._db.run(job)


def _bump_generation(connection: sqlite3.Connection) -> None:
    """Advance the directory generation; runs inside the change's own transaction."""
    connection.execute("UPDATE directory_generation SET value = value + 1")


class SqliteJoinTokens(JoinTokens):
    """:class:`~trustwire.store.base.JoinTokens` in the ``join_tokens`` table."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(
        self, token_hash: bytes, *, name: str, roles: Sequence[str], expires_at: float
    ) -> None:
        check_token(token_hash)
        check_text("name", name)
        encoded = json.dumps(builtins.list(check_roles(roles)))
        check_time("expires_at", expires_at)

        def job(connection: sqlite3.Connection) -> None:
            try:
                connection.execute(
                    "INSERT INTO join_tokens (token_hash, name, roles, expires_at) "
                    "VALUES (?, ?, ?, ?)",
                    (token_hash, name, encoded, float(expires_at)),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError("a join token with this hash already exists") from exc

        await self._db.write(job)

    async def redeem(self, token_hash: bytes, *, now: float) -> tuple[str, tuple[str, ...]] | None:
        check_token(token_hash)
        check_time("now", now)
        path = self._db.path

        def job(connection: sqlite3.Connection) -> tuple[str, tuple[str, ...]] | None:
            # The guarded UPDATE is the atomic test-and-set: only one redemption can
            # turn used_at from NULL, even across processes sharing the file.
            cursor = connection.execute(
                "UPDATE join_tokens SET used_at = ? "
                "WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
                (now, token_hash, now),
            )
            if cursor.rowcount == 0:
                return None
            row = connection.execute(
                "SELECT name, roles FROM join_tokens WHERE token_hash = ?", (token_hash,)
            ).fetchone()
            try:
                roles = json.loads(row[1])
                if not isinstance(row[0], str) or not isinstance(roles, list):
                    raise TypeError("wrong column types")
                return row[0], check_roles(roles)
            except (ValueError, TypeError) as exc:
                raise StoreError(f"{path}: damaged join token ({exc})") from exc

        return await self._db.write(job)

    async def close(self) -> None:
        await self._db.close()


class SqliteDeliveryQueue(DeliveryQueue):
    """:class:`~trustwire.store.base.DeliveryQueue` in the ``queue`` table.

    A row is pending while ``tombstone_until`` is NULL, and a tombstone (frame emptied)
    once acknowledged. Every query on pending messages says ``tombstone_until IS NULL``
    literally, which is what lets SQLite use the partial index.
    """

    def __init__(self, database: Database, *, dedup_retention: float) -> None:
        self._db = database
        self._retention = check_retention(dedup_retention)

    async def enqueue_many(self, items: Sequence[NewMessage]) -> list[bool]:
        if not items:
            return []

        def job(connection: sqlite3.Connection) -> list[bool]:
            ids = builtins.list(dict.fromkeys(item.message_id for item in items))
            # message id -> None if pending, else the end of its tombstone's retention.
            known: dict[bytes, float | None] = {}
            for marks, chunk in _in_chunks(ids):
                known.update(
                    connection.execute(
                        "SELECT message_id, tombstone_until FROM queue "  # noqa: S608
                        f"WHERE message_id IN ({marks})",
                        chunk,
                    ).fetchall()
                )
            results: list[bool] = []
            rows: list[tuple[str, str, bytes, bytes, float]] = []
            stale: list[tuple[bytes]] = []
            for item in items:
                mid = item.message_id
                if mid in known:
                    until = known[mid]
                    if until is None or until > item.enqueued_at:
                        results.append(False)
                        continue
                    # An expired tombstone not yet purged: it gives way to the new message.
                    stale.append((mid,))
                # Later copies in this batch see it as pending.
                known[mid] = None
                results.append(True)
                rows.append((item.recipient, item.sender, mid, item.frame, item.enqueued_at))
            if stale:
                connection.executemany(
                    "DELETE FROM queue WHERE message_id = ? AND tombstone_until IS NOT NULL",
                    stale,
                )
            if rows:
                connection.executemany(
                    "INSERT INTO queue (recipient, sender, message_id, frame, enqueued_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            return results

        return await self._db.write(job)

    async def pending(
        self, recipient: str, *, after_seq: int = 0, limit: int = 256
    ) -> list[QueuedMessage]:
        check_limit(limit)
        path = self._db.path

        def job(connection: sqlite3.Connection) -> list[QueuedMessage]:
            rows = connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM queue "  # noqa: S608
                "WHERE recipient = ? AND seq > ? AND tombstone_until IS NULL "
                "ORDER BY seq LIMIT ?",
                (recipient, after_seq, limit),
            ).fetchall()
            return [_message_from_row(row, path) for row in rows]

        return await self._db.run(job)

    async def ack(
        self, recipient: str, message_ids: Sequence[bytes], *, now: float | None = None
    ) -> int:
        ids = builtins.list(dict.fromkeys(message_ids))
        if not ids:
            return 0
        until = (time.time() if now is None else now) + self._retention
        updates = [(until, mid, recipient) for mid in ids]

        def job(connection: sqlite3.Connection) -> int:
            cursor = connection.executemany(
                "UPDATE queue SET frame = x'', tombstone_until = ? "
                "WHERE message_id = ? AND recipient = ? AND tombstone_until IS NULL",
                updates,
            )
            return cursor.rowcount

        return await self._db.write(job)

    async def remove(self, message_ids: Sequence[bytes]) -> int:
        ids = builtins.list(dict.fromkeys(message_ids))
        if not ids:
            return 0

        def job(connection: sqlite3.Connection) -> int:
            cursor = connection.executemany(
                "DELETE FROM queue WHERE message_id = ? AND tombstone_until IS NULL",
                [(mid,) for mid in ids],
            )
            return cursor.rowcount

        return await self._db.write(job)

    async def depth(self, recipient: str | None = None) -> int:
        def job(connection: sqlite3.Connection) -> int:
            if recipient is None:
                row = connection.execute(
                    "SELECT count(*) FROM queue WHERE tombstone_until IS NULL"
                ).fetchone()
            else:
                row = connection.execute(
                    "SELECT count(*) FROM queue WHERE recipient = ? AND tombstone_until IS NULL",
                    (recipient,),
                ).fetchone()
            return int(row[0])

        return await self._db.run(job)

    async def purge_expired(self, *, now: float) -> int:
        def job(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                "DELETE FROM queue WHERE tombstone_until IS NOT NULL AND tombstone_until <= ?",
                (now,),
            )
            return cursor.rowcount

        return await self._db.write(job)

    async def close(self) -> None:
        await self._db.close()


async def open_sqlite_store(
    path: str | os.PathLike[str],
    *,
    dedup_retention: float = 86400.0,
    synchronous: str = "NORMAL",
) -> Store:
    """Open (creating if absent) the SQLite store at ``path``.

    ``synchronous`` is ``"NORMAL"`` (survives a process crash) or ``"FULL"`` (also
    survives power loss); see the module docstring. Raises
    :class:`~trustwire.errors.StoreError` if the file cannot be created or opened, is not
    a trustwire store, or has a newer schema; ``ValueError`` for bad arguments.
    """
    retention = check_retention(dedup_retention)
    mode = synchronous.upper() if isinstance(synchronous, str) else synchronous
    if mode not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
    database = Database(os.fspath(path), mode)
    await database.open()
    return Store(
        agents=SqliteAgentDirectory(database),
        queue=SqliteDeliveryQueue(database, dedup_retention=retention),
        tokens=SqliteJoinTokens(database),
    )
