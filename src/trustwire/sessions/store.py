"""Where sessions live: an abstract store, an in-memory one and a SQLite one.

:func:`open_session_store` picks the backend by URL (``memory://`` or
``sqlite:///absolute/path.db``). The coordinator's :class:`~trustwire.sessions.manager.
SessionManager` and the operator CLI (``trustwire session ...``) open the same SQLite
file; the CLI's changes reach the running coordinator through :meth:`SessionStore.
generation` and :meth:`SessionStore.changes`.

Invariants every backend keeps (the conformance suite in ``tests/sessions`` checks them):

* **Compare-and-set.** :meth:`SessionStore.update` writes a session only if the stored
  ``version`` equals the given one, and stores it with ``version + 1``; on a conflict
  (or when the session is gone) it returns ``None`` and changes nothing. It never raises
  for a conflict: the caller re-reads and decides.
* **Generation.** :meth:`SessionStore.generation` grows with every ``create``,
  ``update`` and ``purge`` that changed something, is kept across reopening and is
  visible to every process sharing the file (one row bumped inside the change's own
  transaction). Each session row carries the generation of its last change, so
  :meth:`SessionStore.changes` lists what changed after a generation.
* **Bounded message metadata.** At most :data:`MAX_MESSAGES_PER_SESSION` message rows are
  kept per session (the oldest, in insertion order, are dropped); a repeated message id
  within a session is stored once. Rows hold envelope metadata, never content.
* **Validated reads.** Every row read back is checked; a damaged row is a
  :class:`~trustwire.errors.StoreError`, never a raw traceback. A SQLite file that is
  not a sessions store, or was written by a newer trustwire, is refused with
  ``StoreError`` when opened.
"""

from __future__ import annotations

import bisect
import builtins
import collections
import dataclasses
import json
import os
import sqlite3
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Final

from trustwire.errors import ConfigurationError, InvalidSessionConfig, StoreError
from trustwire.sessions.model import Session, SessionConfig, SessionMessage
from trustwire.store.sqlite import Database

__all__ = [
    "MAX_MESSAGES_PER_SESSION",
    "SCHEMA_VERSION",
    "MemorySessionStore",
    "SessionStore",
    "SqliteSessionStore",
    "open_session_store",
]

MAX_MESSAGES_PER_SESSION: Final = 10_000
"""Message metadata rows kept per session; older ones are dropped."""

SCHEMA_VERSION: Final = 1
"""The sessions schema version this code reads and writes."""

_MAX_LIST_LIMIT: Final = 1000


def _check_page(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIST_LIMIT:
        raise ValueError(f"limit must be an integer between 1 and {_MAX_LIST_LIMIT}")
    return limit


def _inactive_since(session: Session) -> float:
    return session.ended_at if session.ended_at is not None else session.expires_at


class SessionStore(ABC):
    """Persistent sessions and their message metadata."""

    @abstractmethod
    async def create(self, session: Session) -> None:
        """Store a new session; :class:`StoreError` if its id exists."""

    @abstractmethod
    async def get(self, session_id: str) -> Session | None:
        """The stored session, or ``None``."""

    @abstractmethod
    async def update(self, session: Session) -> Session | None:
        """Compare-and-set: store ``session`` if the stored version is
        ``session.version``; returns it with ``version + 1``, or ``None`` on a conflict
        or when the session does not exist (nothing changed then)."""

    @abstractmethod
    async def list(
        self,
        did: str | None = None,
        *,
        include_inactive: bool = False,
        now: float | None = None,
    ) -> builtins.list[Session]:
        """Sessions (of participant ``did`` if given), oldest first; without
        ``include_inactive`` only those active at ``now`` (required then) by their
        stored state."""

    @abstractmethod
    async def generation(self) -> int:
        """A number that grows with every change (see the module docstring)."""

    @abstractmethod
    async def changes(self, since: int) -> tuple[int, builtins.list[Session]]:
        """``(generation, sessions changed after generation since)``. The generation is
        read first, so a change racing this call is listed again next time, never
        missed."""

    @abstractmethod
    async def record_messages(self, messages: Sequence[SessionMessage]) -> int:
        """Store message metadata rows; returns how many were new."""

    @abstractmethod
    async def messages(
        self,
        session_id: str,
        *,
        limit: int = 50,
        before_ms: int | None = None,
        after_ms: int | None = None,
    ) -> tuple[builtins.list[SessionMessage], bool]:
        """``(messages, has_more)``, newest first, with ``after_ms < timestamp <
        before_ms``. With only ``after_ms`` the ``limit`` messages right after it are
        returned (paging forward); otherwise the newest ``limit`` ones (paging back).
        ``has_more`` says more matched beyond the page."""

    @abstractmethod
    async def purge(self, ended_before: float) -> int:
        """Delete the sessions (and their messages) that ended or expired before
        ``ended_before``, by their stored state; returns how many."""

    @abstractmethod
    async def close(self) -> None:
        """Release the store (idempotent)."""


# -- in memory ---------------------------------------------------------------------------


class MemorySessionStore(SessionStore):
    """A store in this process's memory (tests, ``memory://``)."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[Session, int]] = {}
        self._messages: dict[str, collections.OrderedDict[str, SessionMessage]] = {}
        self._generation = 0

    async def create(self, session: Session) -> None:
        if session.id in self._sessions:
            raise StoreError(f"a session with id {session.id} already exists")
        self._generation += 1
        self._sessions[session.id] = (session, self._generation)

    async def get(self, session_id: str) -> Session | None:
        entry = self._sessions.get(session_id)
        return None if entry is None else entry[0]

    async def update(self, session: Session) -> Session | None:
        entry = self._sessions.get(session.id)
        if entry is None or entry[0].version != session.version:
            return None
        stored = _next_version(session)
        self._generation += 1
        self._sessions[session.id] = (stored, self._generation)
        return stored

    async def list(
        self,
        did: str | None = None,
        *,
        include_inactive: bool = False,
        now: float | None = None,
    ) -> builtins.list[Session]:
        moment = _check_list_args(include_inactive, now)
        found = [
            session
            for session, _ in self._sessions.values()
            if (did is None or session.involves(did))
            and (moment is None or session.status(moment) == "active")
        ]
        return sorted(found, key=lambda session: (session.created_at, session.id))

    async def generation(self) -> int:
        return self._generation

    async def changes(self, since: int) -> tuple[int, builtins.list[Session]]:
        changed = [session for session, gen in self._sessions.values() if gen > since]
        return self._generation, changed

    async def record_messages(self, messages: Sequence[SessionMessage]) -> int:
        added = 0
        for message in messages:
            rows = self._messages.setdefault(message.session_id, collections.OrderedDict())
            if message.message_id in rows:
                continue
            rows[message.message_id] = message
            added += 1
            while len(rows) > MAX_MESSAGES_PER_SESSION:
                rows.popitem(last=False)
        return added

    async def messages(
        self,
        session_id: str,
        *,
        limit: int = 50,
        before_ms: int | None = None,
        after_ms: int | None = None,
    ) -> tuple[builtins.list[SessionMessage], bool]:
        _check_page(limit)
        rows = self._messages.get(session_id, collections.OrderedDict())
        # (timestamp, insertion order) is the order both backends sort by.
        ordered = sorted(
            ((message.timestamp_ms, index), message) for index, message in enumerate(rows.values())
        )
        keys = [key for key, _ in ordered]
        low = 0 if after_ms is None else bisect.bisect_right(keys, (after_ms, float("inf")))
        high = len(ordered) if before_ms is None else bisect.bisect_left(keys, (before_ms, -1))
        window = [message for _, message in ordered[low:high]]
        if after_ms is not None and before_ms is None:
            page = window[:limit]
            return page[::-1], len(window) > limit
        page = window[-limit:] if limit < len(window) else window
        return page[::-1], len(window) > limit

    async def purge(self, ended_before: float) -> int:
        gone = [
            session_id
            for session_id, (session, _) in self._sessions.items()
            if _inactive_since(session) < ended_before
        ]
        for session_id in gone:
            del self._sessions[session_id]
            self._messages.pop(session_id, None)
        if gone:
            self._generation += 1
        return len(gone)

    async def close(self) -> None:
        return None


def _next_version(session: Session) -> Session:
    return dataclasses.replace(session, version=session.version + 1)


def _check_list_args(include_inactive: bool, now: float | None) -> float | None:
    if include_inactive:
        return None
    if now is None:
        raise ValueError("listing active sessions needs now=")
    return now


# -- SQLite ------------------------------------------------------------------------------

_STORE_KIND: Final = "sessions"

# _MIGRATIONS[v] turns a version-v database into version v + 1 (v = 0: an empty file).
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE schema_version (store TEXT NOT NULL, version INTEGER NOT NULL)",
        "INSERT INTO schema_version (store, version) VALUES ('sessions', 0)",
        "CREATE TABLE session_generation (value INTEGER NOT NULL)",
        "INSERT INTO session_generation (value) VALUES (0)",
        """CREATE TABLE sessions (
            id TEXT NOT NULL PRIMARY KEY,
            initiator TEXT NOT NULL,
            peer TEXT NOT NULL,
            created_at REAL NOT NULL,
            last_activity REAL NOT NULL,
            config TEXT NOT NULL,
            renewal_count INTEGER NOT NULL,
            ended_at REAL,
            end_reason TEXT,
            metadata TEXT NOT NULL,
            warned_for REAL,
            expired_announced INTEGER NOT NULL,
            version INTEGER NOT NULL,
            renewed_at REAL,
            ended_by TEXT,
            ended_announced INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            generation INTEGER NOT NULL
        )""",
        "CREATE INDEX sessions_generation ON sessions (generation)",
        "CREATE INDEX sessions_initiator ON sessions (initiator)",
        "CREATE INDEX sessions_peer ON sessions (peer)",
        """CREATE TABLE session_messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            type TEXT NOT NULL,
            size INTEGER NOT NULL,
            timestamp_ms INTEGER NOT NULL,
            UNIQUE (session_id, message_id)
        )""",
        "CREATE INDEX session_messages_time ON session_messages (session_id, timestamp_ms, seq)",
        "CREATE INDEX session_messages_seq ON session_messages (session_id, seq)",
    ),
)

_COLUMNS: Final = (
    "id, initiator, peer, created_at, last_activity, config, renewal_count, ended_at, "
    "end_reason, metadata, warned_for, expired_announced, version, renewed_at, ended_by, "
    "ended_announced"
)
_MESSAGE_COLUMNS: Final = "session_id, message_id, sender, recipient, type, size, timestamp_ms"


def _migrate(connection: sqlite3.Connection, path: str) -> None:
    tables = {
        name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    if "schema_version" in tables:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(schema_version)")}
        if "store" not in columns:
            raise StoreError(f"{path} is a trustwire database but not a sessions store")
        rows = connection.execute("SELECT store, version FROM schema_version").fetchall()
        if len(rows) != 1 or type(rows[0][1]) is not int or rows[0][1] < 0:
            raise StoreError(f"{path}: the schema_version table is damaged")
        if rows[0][0] != _STORE_KIND:
            raise StoreError(f"{path} is a trustwire {rows[0][0]!r} store, not a sessions store")
        version: int = rows[0][1]
    elif tables:
        raise StoreError(f"{path} is a SQLite database but not a trustwire sessions store")
    else:
        version = 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has sessions schema version {version}, newer than the {SCHEMA_VERSION} "
            "this trustwire supports; upgrade trustwire to open it"
        )
    if version == SCHEMA_VERSION:
        return
    for step in _MIGRATIONS[version:]:
        for statement in step:
            connection.execute(statement)
    connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))


def _session_row(session: Session) -> tuple[Any, ...]:
    return (
        session.id,
        session.initiator,
        session.peer,
        session.created_at,
        session.last_activity,
        json.dumps(session.config.to_json(), separators=(",", ":")),
        session.renewal_count,
        session.ended_at,
        session.end_reason,
        json.dumps(dict(session.metadata), separators=(",", ":"), allow_nan=False),
        session.warned_for,
        int(session.expired_announced),
        session.version,
        session.renewed_at,
        session.ended_by,
        int(session.ended_announced),
    )


def _flag(value: object) -> bool:
    if value not in (0, 1) or isinstance(value, float):
        raise TypeError("a flag column is not 0 or 1")
    return bool(value)


def _real(value: object) -> float:
    if type(value) not in (int, float):
        raise TypeError("a time column is not a number")
    return float(value)  # type: ignore[arg-type]


def _optional_real(value: object) -> float | None:
    return None if value is None else _real(value)


def _session_from_row(row: Sequence[Any], path: str) -> Session:
    try:
        config = json.loads(row[5])
        metadata = json.loads(row[9])
        if not isinstance(config, dict) or not isinstance(metadata, dict):
            raise TypeError("config or metadata is not a JSON object")
        return Session(
            id=row[0],
            initiator=row[1],
            peer=row[2],
            created_at=_real(row[3]),
            last_activity=_real(row[4]),
            config=SessionConfig.from_json(config),
            renewal_count=row[6],
            ended_at=_optional_real(row[7]),
            end_reason=row[8],
            metadata=metadata,
            warned_for=_optional_real(row[10]),
            expired_announced=_flag(row[11]),
            version=row[12],
            renewed_at=_optional_real(row[13]),
            ended_by=row[14],
            ended_announced=_flag(row[15]),
        )
    except (ValueError, TypeError, RecursionError, InvalidSessionConfig) as exc:
        raise StoreError(f"{path}: damaged session record ({exc})") from None


def _message_from_row(row: Sequence[Any], path: str) -> SessionMessage:
    try:
        return SessionMessage(*row)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{path}: damaged session message record ({exc})") from None


def _bump(connection: sqlite3.Connection) -> int:
    connection.execute("UPDATE session_generation SET value = value + 1")
    return _read_generation(connection, "")


def _read_generation(connection: sqlite3.Connection, path: str) -> int:
    rows = connection.execute("SELECT value FROM session_generation").fetchall()
    if len(rows) != 1 or type(rows[0][0]) is not int:
        raise StoreError(f"{path}: the session_generation table is damaged")
    value: int = rows[0][0]
    return value


class SqliteSessionStore(SessionStore):
    """Sessions in their own SQLite file (0600, WAL; see
    :class:`trustwire.store.sqlite.Database`). Open with :meth:`open`."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> SqliteSessionStore:
        """Open (creating if absent) the sessions database at ``path``.

        Raises :class:`StoreError` for a file that is not a sessions store or is newer.
        """
        database = Database(os.fspath(path), migrate=_migrate)
        await database.open()
        return cls(database)

    @property
    def path(self) -> str:
        """The database file."""
        return self._db.path

    async def create(self, session: Session) -> None:
        row = (*_session_row(session), session.expires_at)

        def job(connection: sqlite3.Connection) -> None:
            generation = _bump(connection)
            try:
                connection.execute(
                    f"INSERT INTO sessions ({_COLUMNS}, expires_at, generation) "  # noqa: S608
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, generation),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"a session with id {session.id} already exists") from exc

        await self._db.write(job)

    async def get(self, session_id: str) -> Session | None:
        path = self._db.path

        def job(connection: sqlite3.Connection) -> Session | None:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE id = ?",  # noqa: S608
                (session_id,),
            ).fetchone()
            return None if row is None else _session_from_row(row, path)

        return await self._db.run(job)

    async def update(self, session: Session) -> Session | None:
        stored = _next_version(session)
        row = _session_row(stored)

        def job(connection: sqlite3.Connection) -> Session | None:
            found = connection.execute(
                "SELECT version FROM sessions WHERE id = ?", (session.id,)
            ).fetchone()
            if found is None or found[0] != session.version:
                return None
            generation = _bump(connection)
            connection.execute(
                "UPDATE sessions SET last_activity = ?, config = ?, renewal_count = ?, "
                "ended_at = ?, end_reason = ?, metadata = ?, warned_for = ?, "
                "expired_announced = ?, version = ?, renewed_at = ?, ended_by = ?, "
                "ended_announced = ?, expires_at = ?, generation = ? WHERE id = ?",
                (*row[4:], stored.expires_at, generation, session.id),
            )
            return stored

        return await self._db.write(job)

    async def list(
        self,
        did: str | None = None,
        *,
        include_inactive: bool = False,
        now: float | None = None,
    ) -> builtins.list[Session]:
        moment = _check_list_args(include_inactive, now)
        path = self._db.path
        conditions: builtins.list[str] = []
        parameters: builtins.list[Any] = []
        if did is not None:
            conditions.append("(initiator = ? OR peer = ?)")
            parameters += [did, did]
        if moment is not None:
            conditions.append("ended_at IS NULL AND expires_at > ?")
            parameters.append(moment)
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""

        def job(connection: sqlite3.Connection) -> builtins.list[Session]:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM sessions{where} ORDER BY created_at, id",  # noqa: S608
                parameters,
            ).fetchall()
            return [_session_from_row(row, path) for row in rows]

        return await self._db.run(job)

    async def generation(self) -> int:
        path = self._db.path
        return await self._db.run(lambda connection: _read_generation(connection, path))

    async def changes(self, since: int) -> tuple[int, builtins.list[Session]]:
        path = self._db.path

        def job(connection: sqlite3.Connection) -> tuple[int, builtins.list[Session]]:
            generation = _read_generation(connection, path)
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE generation > ? "  # noqa: S608
                "ORDER BY generation",
                (since,),
            ).fetchall()
            return generation, [_session_from_row(row, path) for row in rows]

        return await self._db.run(job)

    async def record_messages(self, messages: Sequence[SessionMessage]) -> int:
        if not messages:
            return 0
        rows = [
            (m.session_id, m.message_id, m.sender, m.recipient, m.type, m.size, m.timestamp_ms)
            for m in messages
        ]
        touched = builtins.list(dict.fromkeys(m.session_id for m in messages))

        def job(connection: sqlite3.Connection) -> int:
            before = connection.total_changes
            connection.executemany(
                f"INSERT OR IGNORE INTO session_messages ({_MESSAGE_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            added = connection.total_changes - before
            for session_id in touched:
                cut = connection.execute(
                    "SELECT seq FROM session_messages WHERE session_id = ? "
                    "ORDER BY seq DESC LIMIT 1 OFFSET ?",
                    (session_id, MAX_MESSAGES_PER_SESSION),
                ).fetchone()
                if cut is not None:
                    connection.execute(
                        "DELETE FROM session_messages WHERE session_id = ? AND seq <= ?",
                        (session_id, cut[0]),
                    )
            return added

        return await self._db.write(job)

    async def messages(
        self,
        session_id: str,
        *,
        limit: int = 50,
        before_ms: int | None = None,
        after_ms: int | None = None,
    ) -> tuple[builtins.list[SessionMessage], bool]:
        _check_page(limit)
        path = self._db.path
        conditions = ["session_id = ?"]
        parameters: builtins.list[Any] = [session_id]
        if after_ms is not None:
            conditions.append("timestamp_ms > ?")
            parameters.append(after_ms)
        if before_ms is not None:
            conditions.append("timestamp_ms < ?")
            parameters.append(before_ms)
        forward = after_ms is not None and before_ms is None
        order = "ASC" if forward else "DESC"
        query = (
            f"SELECT {_MESSAGE_COLUMNS} FROM session_messages "  # noqa: S608
            f"WHERE {' AND '.join(conditions)} "
            f"ORDER BY timestamp_ms {order}, seq {order} LIMIT ?"
        )
        parameters.append(limit + 1)

        def job(connection: sqlite3.Connection) -> tuple[builtins.list[SessionMessage], bool]:
            rows = connection.execute(query, parameters).fetchall()
            page = [_message_from_row(row, path) for row in rows[:limit]]
            if forward:
                page.reverse()
            return page, len(rows) > limit

        return await self._db.run(job)

    async def purge(self, ended_before: float) -> int:
        def job(connection: sqlite3.Connection) -> int:
            ids = [
                row[0]
                for row in connection.execute(
                    "SELECT id FROM sessions WHERE COALESCE(ended_at, expires_at) < ?",
                    (ended_before,),
                )
            ]
            for session_id in ids:
                connection.execute(
                    "DELETE FROM session_messages WHERE session_id = ?", (session_id,)
                )
                connection.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            if ids:
                _bump(connection)
            return len(ids)

        return await self._db.write(job)

    async def close(self) -> None:
        await self._db.close()


async def open_session_store(url: str) -> SessionStore:
    """Open the sessions store ``url`` names: ``memory://`` or
    ``sqlite:///absolute/path.db`` (``sqlite:relative/path.db`` also works).

    Raises :class:`~trustwire.errors.ConfigurationError` for an unsupported or malformed
    URL (the message names the scheme, never the whole URL) and
    :class:`~trustwire.errors.StoreError` when the file cannot be used.
    """
    if not isinstance(url, str):
        raise ConfigurationError("session store URL must be a string")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed session store URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ConfigurationError("memory:// session store URLs take no host, path or query")
        return MemorySessionStore()
    if scheme == "sqlite":
        if parts.netloc or parts.fragment or parts.query:
            raise ConfigurationError(
                "sqlite session store URLs are sqlite:///absolute/path.db (no host or options)"
            )
        path = urllib.parse.unquote(parts.path)
        if not path or path.endswith("/") or "\x00" in path:
            raise ConfigurationError("sqlite session store URL needs a database file path")
        return await SqliteSessionStore.open(path)
    named = repr(scheme) if scheme else "(none)"
    raise ConfigurationError(
        f"unsupported session store URL scheme {named}; supported: memory, sqlite"
    )
