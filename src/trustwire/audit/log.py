"""A signed, append-only Merkle log: the one log behind the registry and the audit trail.

:class:`MerkleLog` appends entries (opaque bytes) in batches, keeps the RFC 9162 tree over
them (:mod:`trustwire.audit.merkle`), signs tree heads with an Ed25519 log key and serves
inclusion and consistency proofs for any past size. :func:`verify_log` recomputes the tree
from the stored entries and checks it against a signed head and, optionally, an older
saved head; :func:`read_entries` streams the entries of a log file read-only, for
auditors who hold no key and open nothing for writing.

Invariants and why:

* **Entries are the truth; nodes are a cache.** Storage (:mod:`trustwire.audit.storage`)
  holds the entries and the perfect subtrees at cached levels (4, 8, 12, ...; about one
  node per 15 entries), written in the same transaction as the entries they cover.
  Proofs and roots for any past size come from those nodes and at most 8 entries per
  node, so serving a proof costs a few dozen lookups whatever the log size.
  :func:`verify_log` never trusts the cache: it rehashes every entry.
* **Synchronous and thread-safe.** Every job runs on the storage's runner: the one
  worker thread that owns the SQLite connection, or a lock for the in-memory log. asyncio
  callers use ``asyncio.to_thread``; the audit trail calls from its own writer thread.
* **A failed append changes nothing.** The right edge of the tree is copied before a batch
  and restored if the write fails, so memory never runs ahead of storage.
* **Tree heads are domain-separated.** The signed message names the log's *origin*
  (``trustwire/audit``, ``trustwire/registry``, ...), so a head of one log never passes as
  a head of another even when both use the same key. The latest signed head is stored
  with the log; on reopening, the node cache must reproduce it or the log refuses to open
  (:class:`~trustwire.errors.LogInconsistent`).
* **What verification proves.** Against a signed head of size ``n``, any edit, deletion,
  reordering or insertion among the first ``n`` entries changes the recomputed root (short
  of a SHA-256 collision), and a truncation leaves fewer than ``n`` entries; entries
  beyond ``n`` are reported too (no head covers them). An attacker who can write the file
  can also roll the stored head back to an older genuine one and truncate to match; that
  is what ``since_head`` (a head saved *elsewhere* earlier) catches.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from trustwire.audit.merkle import (
    CACHE_STRIDE,
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_SIZE,
    CompactRange,
    consistency_proof,
    fold_perfect,
    inclusion_proof,
    leaf_hash,
    range_hash,
)
from trustwire.audit.storage import (
    SYNCHRONOUS_MODES,
    LockRunner,
    LogStorage,
    MemoryLogStorage,
    Runner,
    SqliteLogStorage,
    WorkerRunner,
    read_entries,
)
from trustwire.crypto.hashes import constant_time_equal
from trustwire.crypto.signing import SIGNATURE_SIZE, SigningKey, VerifyKey
from trustwire.errors import InvalidSignature, LogInconsistent, StoreError

__all__ = [
    "DEFAULT_ORIGIN",
    "MAX_ENTRY_SIZE",
    "MerkleLog",
    "Report",
    "TreeHead",
    "read_entries",
    "verify_log",
]

DEFAULT_ORIGIN: Final = "trustwire/log"
"""The origin of a log opened without one; real logs name themselves."""

MAX_ENTRY_SIZE: Final = 1 << 20
"""The largest entry accepted (1 MiB): logs hold metadata, not payloads."""

_HEAD_CONTEXT: Final = "trustwire tree head v1"
_ORIGIN_RE: Final = re.compile(r"[\x21-\x7e]{1,255}")
_READ_CHUNK: Final = 4096
_MAX_TIMESTAMP: Final = (1 << 63) - 1

_T = TypeVar("_T")


# -- tree heads -----------------------------------------------------------------------


def _check_origin(origin: object) -> str:
    if not isinstance(origin, str) or not _ORIGIN_RE.fullmatch(origin):
        raise ValueError("a log origin is 1 to 255 printable ASCII characters without spaces")
    return origin


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed statement "the log ``origin`` had ``size`` entries with root ``root``".

    ``timestamp`` is in milliseconds since the Unix epoch. The signature is Ed25519 over
    :meth:`signed_message`, a short text that other implementations can rebuild::

        trustwire tree head v1
        <origin>
        <size>
        <timestamp>
        <root, lowercase hex>
    """

    size: int
    root: bytes
    timestamp: int
    signature: bytes
    origin: str

    def __post_init__(self) -> None:
        if not _is_int(self.size) or not 0 <= self.size <= MAX_SIZE:
            raise ValueError("TreeHead.size must be an int in [0, 2**64)")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise ValueError(f"TreeHead.root must be {HASH_SIZE} bytes")
        if not _is_int(self.timestamp) or not 0 <= self.timestamp <= _MAX_TIMESTAMP:
            raise ValueError("TreeHead.timestamp must be a non-negative int (milliseconds)")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise ValueError(f"TreeHead.signature must be {SIGNATURE_SIZE} bytes")
        _check_origin(self.origin)

    @staticmethod
    def signed_message(origin: str, size: int, root: bytes, timestamp: int) -> bytes:
        """The exact bytes a tree head's signature covers."""
        return (
            f"{_HEAD_CONTEXT}\n{_check_origin(origin)}\n{size}\n{timestamp}\n{root.hex()}\n"
        ).encode("ascii")

    @classmethod
    def sign(
        cls, signing_key: SigningKey, *, origin: str, size: int, root: bytes, timestamp: int
    ) -> TreeHead:
        """Sign a head for ``size`` and ``root`` with the log key."""
        signature = signing_key.sign(cls.signed_message(origin, size, root, timestamp))
        return cls(size, root, timestamp, signature, origin)

    def verify(self, public_key: VerifyKey, *, origin: str | None = None) -> None:
        """Raise :class:`~trustwire.errors.InvalidSignature` unless the log key signed this.

        With ``origin``, a head of another log is refused too.
        """
        if origin is not None and origin != self.origin:
            raise InvalidSignature(f"tree head is for log {self.origin!r}, not {origin!r}")
        message = self.signed_message(self.origin, self.size, self.root, self.timestamp)
        public_key.verify(self.signature, message)

    def to_json(self) -> str:
        """One line of JSON (hex root, base64 signature)."""
        return json.dumps(
            {
                "origin": self.origin,
                "size": self.size,
                "timestamp": self.timestamp,
                "root": self.root.hex(),
                "signature": base64.b64encode(self.signature).decode("ascii"),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> TreeHead:
        """Parse :meth:`to_json` output; :class:`ValueError` for anything else.

        Parsing checks shape only; call :meth:`verify` before trusting the head.
        """
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not a JSON tree head: {exc}") from None
        fields = {"origin", "size", "timestamp", "root", "signature"}
        if not isinstance(data, dict) or set(data) != fields:
            raise ValueError(f"a tree head is a JSON object with exactly {sorted(fields)}")
        root, signature = data["root"], data["signature"]
        if not isinstance(root, str) or not re.fullmatch(r"[0-9a-f]{64}", root):
            raise ValueError("tree head root must be 64 lowercase hex digits")
        if not isinstance(signature, str):
            raise ValueError("tree head signature must be a base64 string")
        try:
            raw_signature = base64.b64decode(signature, validate=True)
        except binascii.Error as exc:
            raise ValueError("tree head signature is not valid base64") from exc
        return cls(
            data["size"], bytes.fromhex(root), data["timestamp"], raw_signature, data["origin"]
        )


# -- the log --------------------------------------------------------------------------


def _check_index(name: str, value: object) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value  # type: ignore[return-value]


class MerkleLog:
    """An append-only log of byte entries under an RFC 9162 Merkle tree.

    Open one with :meth:`memory` or :meth:`open_sqlite`; close it with :meth:`close` (or
    ``with``). Every method is thread-safe and synchronous (see the module docstring).
    Misuse (an index beyond the log, a bad argument) raises :class:`ValueError` or
    :class:`TypeError`; storage failures :class:`~trustwire.errors.StoreError`.
    """

    def __init__(self, storage: LogStorage, runner: Runner, *, origin: str) -> None:
        """Use :meth:`memory` or :meth:`open_sqlite`."""
        self._storage = storage
        self._runner = runner
        self._origin = _check_origin(origin)
        self._closed = False
        self._compact = CompactRange()
        self._latest: TreeHead | None = None

    # -- opening and closing

    @classmethod
    def memory(cls, *, origin: str = DEFAULT_ORIGIN) -> MerkleLog:
        """A log held in memory (tests, demos)."""
        return cls(MemoryLogStorage(), LockRunner(), origin=origin)

    @classmethod
    def open_sqlite(
        cls,
        path: str | os.PathLike[str],
        *,
        origin: str = DEFAULT_ORIGIN,
        synchronous: str = "NORMAL",
    ) -> MerkleLog:
        """Open (creating if absent) the log file at ``path``.

        A new file records ``origin``; an existing one must have been created with the
        same origin. Raises :class:`~trustwire.errors.StoreError` if the file cannot be
        opened, is not a Merkle log or is another log, and
        :class:`~trustwire.errors.LogInconsistent` if its stored tree no longer matches its
        latest signed head.
        """
        _check_origin(origin)
        mode = synchronous.upper() if isinstance(synchronous, str) else synchronous
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        file = os.fspath(path)
        storage = SqliteLogStorage(file, mode, origin)
        runner = WorkerRunner(file)
        log = cls(storage, runner, origin=origin)
        try:
            runner.run(storage.open)
            runner.run(log._load)
        except BaseException:
            log.close()
            raise
        return log

    def _load(self) -> None:
        size = self._storage.size()
        self._compact = CompactRange.from_nodes(size, self._node)
        text = self._storage.load_head()
        if text is None:
            return
        try:
            head = TreeHead.from_json(text)
        except ValueError as exc:
            raise LogInconsistent(f"the stored tree head is damaged ({exc})") from None
        if head.origin != self._origin or head.size > size:
            raise LogInconsistent("the stored tree head does not belong to these entries")
        if not constant_time_equal(self._root_at(head.size), head.root):
            raise LogInconsistent("the stored tree no longer matches its latest signed head")
        self._latest = head

    def reload(self) -> bool:
        """Pick up entries and heads another process appended to the same file.

        Returns whether anything changed. Cheap when nothing did (two single-row reads);
        otherwise the right edge of the tree is rebuilt from the stored nodes and the
        stored head is checked against it, as on opening.
        """

        def job() -> bool:
            size = self._storage.size()
            text = self._storage.load_head()
            current = None if self._latest is None else self._latest.to_json()
            if size == self._compact.size and text == current:
                return False
            self._load()
            return True

        return self._run(job)

    def close(self) -> None:
        """Close the storage; later calls raise :class:`~trustwire.errors.StoreError`."""
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._storage.close)
        finally:
            self._runner.shutdown()

    def __enter__(self) -> MerkleLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, job: Callable[[], _T]) -> _T:
        if self._closed:
            raise StoreError("the Merkle log is closed")
        return self._runner.run(job)

    # -- properties

    @property
    def origin(self) -> str:
        """The log's name, bound into every tree head it signs."""
        return self._origin

    @property
    def size(self) -> int:
        """Number of entries."""
        return self._compact.size

    # -- appending

    def append(self, entry: bytes) -> int:
        """Append one entry and return its index."""
        return self.append_many([entry]).start

    def append_many(self, entries: Sequence[bytes]) -> range:
        """Append entries in order, in one transaction; return their indexes.

        Raises :class:`TypeError` for a non-bytes entry and :class:`ValueError` for one over
        :data:`MAX_ENTRY_SIZE`, before anything is written.
        """
        batch: list[bytes] = []
        for entry in entries:
            if not isinstance(entry, bytes | bytearray | memoryview):
                raise TypeError(f"log entries are bytes, not {type(entry).__name__}")
            data = bytes(entry)
            if len(data) > MAX_ENTRY_SIZE:
                raise ValueError(f"a log entry is at most {MAX_ENTRY_SIZE} bytes")
            batch.append(data)

        def job() -> range:
            start = self._compact.size
            if not batch:
                return range(start, start)
            before = self._compact.copy()
            leaves = [leaf_hash(data) for data in batch]
            nodes = self._compact.extend(leaves)
            try:
                self._storage.append(start, batch, leaves, nodes)
            except BaseException:
                self._compact = before
                raise
            return range(start, start + len(batch))

        return self._run(job)

    # -- heads

    def signed_tree_head(self, signing_key: SigningKey, *, now: float) -> TreeHead:
        """Sign the current size and root at time ``now`` (seconds) and store the head."""
        if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise ValueError("now must be a finite number of seconds")
        if now < 0:
            raise ValueError("now must not be before the epoch")
        timestamp = int(now * 1000)

        def job() -> TreeHead:
            head = TreeHead.sign(
                signing_key,
                origin=self._origin,
                size=self._compact.size,
                root=self._compact.root(),
                timestamp=timestamp,
            )
            self._storage.save_head(head.to_json())
            self._latest = head
            return head

        return self._run(job)

    def latest_head(self) -> TreeHead | None:
        """The most recent head :meth:`signed_tree_head` produced (kept across restarts)."""
        return self._latest

    # -- reading

    def root(self, size: int | None = None) -> bytes:
        """The root of the first ``size`` entries (default: all)."""
        return self._run(lambda: self._root_at(self._size_arg(size)))

    def entry(self, index: int) -> bytes:
        """Entry ``index``."""
        _check_index("index", index)

        def job() -> bytes:
            if not 0 <= index < self._compact.size:
                raise ValueError(f"no entry {index} in a log of {self._compact.size}")
            return self._storage.entries(index, index + 1)[0]

        return self._run(job)

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Entries ``start`` to ``end`` (default: the current size), read in chunks."""
        _check_index("start", start)
        stop = self.size if end is None else _check_index("end", end)
        if not 0 <= start <= stop <= self.size:
            raise ValueError(f"no entries [{start}, {stop}) in a log of {self.size}")
        return self._iter_entries(start, stop)

    def _iter_entries(self, start: int, stop: int) -> Iterator[bytes]:
        for chunk in range(start, stop, _READ_CHUNK):
            yield from self._run(
                functools.partial(self._storage.entries, chunk, min(chunk + _READ_CHUNK, stop))
            )

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of entry ``index`` in the tree of ``size`` entries (default: all)."""
        _check_index("index", index)
        return self._run(lambda: inclusion_proof(index, self._size_arg(size), self._node))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The proof that the tree of ``old_size`` entries is a prefix of ``new_size``."""
        _check_index("old_size", old_size)
        return self._run(lambda: consistency_proof(old_size, self._size_arg(new_size), self._node))

    # -- internals (run on the runner)

    def _size_arg(self, size: int | None) -> int:
        if size is None:
            return self._compact.size
        _check_index("size", size)
        if not 0 <= size <= self._compact.size:
            raise ValueError(f"size {size} is beyond the log size {self._compact.size}")
        return size

    def _root_at(self, size: int) -> bytes:
        if size == self._compact.size:
            return self._compact.root()
        if size == 0:
            return EMPTY_ROOT
        return range_hash(0, size, self._node)

    def _node(self, level: int, index: int) -> bytes:
        """The perfect subtree ``(level, index)`` from at most 8 stored hashes."""
        base = level - level % CACHE_STRIDE
        count = 1 << (level - base)
        first = index << (level - base)
        if base == 0:
            hashes = self._storage.leaf_hashes(first, first + count)
        else:
            hashes = self._storage.nodes(base, first, first + count)
        if len(hashes) != count:
            raise LogInconsistent(f"stored subtree ({level}, {index}) is incomplete")
        return fold_perfect(hashes)


# -- verification ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """What :func:`verify_log` found.

    ``entries`` is how many entries were read, ``root`` the root recomputed over the
    first ``head.size`` of them (``None`` if there were fewer), ``problems`` one sentence
    per finding. The log checks out exactly when ``problems`` is empty.
    """

    entries: int
    head: TreeHead
    root: bytes | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def check(self) -> None:
        """Raise :class:`~trustwire.errors.LogInconsistent` listing the problems, if any."""
        if self.problems:
            raise LogInconsistent(self.problems)


def verify_log(
    entries: Iterable[bytes],
    head: TreeHead,
    public_key: VerifyKey,
    since_head: TreeHead | None = None,
    *,
    allow_unsigned_tail: bool = False,
) -> Report:
    """Recompute the tree over ``entries`` and check it against signed heads.

    ``head`` must be signed by ``public_key`` and its root must equal the root of the
    first ``head.size`` entries. ``since_head`` (a head saved earlier, outside the log's
    storage) must be signed too, belong to the same log and not be newer than ``head``,
    and its root must equal the root of the first ``since_head.size`` entries: a
    truncation below it or a changed prefix is caught even if ``head`` itself was
    replaced by an older genuine head. Entries beyond ``head.size`` are a problem unless
    ``allow_unsigned_tail`` (a live log may have grown since its last head).

    Memory use is O(log n): entries are hashed as they stream by. A
    :class:`~trustwire.errors.LogInconsistent` raised by ``entries`` itself (as
    :func:`read_entries` does for a missing or damaged row) becomes a problem too.
    """
    problems: list[str] = []
    try:
        head.verify(public_key)
    except InvalidSignature:
        problems.append("the tree head's signature does not verify with the log key")
    marks = {head.size: "head"}
    if since_head is not None:
        if since_head.origin != head.origin:
            problems.append(f"the saved head is for log {since_head.origin!r}, not {head.origin!r}")
        try:
            since_head.verify(public_key)
        except InvalidSignature:
            problems.append("the saved tree head's signature does not verify with the log key")
        if since_head.size > head.size:
            problems.append(
                f"the tree head (size {head.size}) is older than the saved head "
                f"(size {since_head.size}): the log was rolled back"
            )
        marks.setdefault(since_head.size, "since")
    roots: dict[int, bytes] = {}
    compact = CompactRange()
    if 0 in marks:
        roots[0] = EMPTY_ROOT
    count = 0
    try:
        for data in entries:
            if not isinstance(data, bytes):
                raise TypeError(f"log entries are bytes, not {type(data).__name__}")
            compact.extend((leaf_hash(data),))
            count += 1
            if count in marks:
                roots[count] = compact.root()
    except LogInconsistent as exc:
        problems.extend(exc.problems)
        return Report(count, head, None, tuple(problems))
    if since_head is not None:
        if count < since_head.size:
            problems.append(
                f"the log has {count} entries, fewer than the {since_head.size} of the "
                "saved head: it was truncated"
            )
        elif not constant_time_equal(roots[since_head.size], since_head.root):
            problems.append(
                f"the first {since_head.size} entries do not match the saved head: "
                "entries were changed, removed, reordered or inserted"
            )
    if count < head.size:
        problems.append(
            f"the log has {count} entries, fewer than the {head.size} of the tree head: "
            "it was truncated"
        )
    elif not constant_time_equal(roots[head.size], head.root):
        problems.append(
            f"the first {head.size} entries do not match the tree head: "
            "entries were changed, removed, reordered or inserted"
        )
    if count > head.size and not allow_unsigned_tail:
        problems.append(f"{count - head.size} entries lie beyond the signed tree head")
    return Report(count, head, roots.get(head.size), tuple(problems))
