"""The audit trail: every security event, appended to a signed Merkle log.

:class:`AuditTrail` is an :class:`~trustwire.events.EventSink`. The coordinator emits an
event per message at several thousand per second, so the sink does almost nothing on the
caller's thread and batches everything else.

Invariants and why:

* **``emit`` never blocks and does no I/O.** It appends the event to a buffer under a
  lock held for one list append. A writer thread wakes every ``batch_interval`` seconds,
  or as soon as ``max_batch`` events wait, and does the work: canonical JSON, one
  transaction per batch of at most ``max_batch`` entries, one signed tree head per batch.
  Batching is what makes the log cheap: a signature and a commit per batch, not per event.
* **Entries keep emit order** and each is one event in *canonical JSON*: the fields of
  :meth:`SecurityEvent.to_json <trustwire.events.SecurityEvent.to_json>` with sorted keys,
  no whitespace, non-ASCII characters escaped, strict JSON (:func:`encode_event`), so the
  same event always hashes the same bytes and :func:`decode_event` reads it back. Events
  carry metadata only (:class:`~trustwire.events.SecurityEvent` refuses bytes in its
  details).
* **Memory is bounded.** When more than ``max_pending`` events wait (the disk stalled), new
  ones are dropped and counted in :attr:`AuditTrail.dropped`, and a warning is logged
  once, rather than growing without limit or blocking the event loop. A batch the log
  refuses to store is counted in :attr:`AuditTrail.write_errors` and its events in
  ``dropped``.
* **``close()`` flushes**: it stops the writer, appends what is left and signs a final
  head. It does not close the log, which belongs to the caller. Events emitted after
  ``close()`` raise :class:`ValueError` (``EventStream`` counts that as a sink error).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from trustwire.audit.log import MerkleLog, TreeHead
from trustwire.crypto.signing import SigningKey
from trustwire.events import SecurityEvent

__all__ = ["AUDIT_ORIGIN", "AuditTrail", "decode_event", "encode_event"]

_log = logging.getLogger(__name__)

AUDIT_ORIGIN = "trustwire/audit"
"""The origin an audit log should be opened with."""


# One encoder for every call: json.dumps builds a new one per call when given options.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def encode_event(event: SecurityEvent) -> bytes:
    """The canonical JSON of ``event``: sorted keys, no whitespace, ASCII (``\\uXXXX``)."""
    return _CANONICAL.encode(
        {
            "agent": event.agent,
            "details": dict(event.details),
            "kind": event.kind.value,
            "peer": event.peer,
            "reason": event.reason,
            "time": event.time,
        }
    ).encode("ascii")


def decode_event(entry: bytes) -> SecurityEvent:
    """Parse an audit entry back into the event (:class:`ValueError` if it is not one)."""
    return SecurityEvent.from_json(entry)


class AuditTrail:
    """Appends every emitted event to ``log`` and signs a tree head after each batch.

    ``signing_key`` is the log key that signs the heads; ``clock`` gives the heads'
    timestamps (seconds). ``on_head`` is called on the writer thread with each new head
    (to hand it to witnesses or metrics); its exceptions are logged, not raised.
    """

    def __init__(
        self,
        log: MerkleLog,
        signing_key: SigningKey,
        *,
        batch_interval: float = 0.05,
        max_batch: int = 1000,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
        on_head: Callable[[TreeHead], None] | None = None,
    ) -> None:
        if not 0 < batch_interval <= 10:
            raise ValueError("batch_interval must be in (0, 10] seconds")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_pending < max_batch:
            raise ValueError("max_pending must be at least max_batch")
        self._log = log
        self._key = signing_key
        self._interval = batch_interval
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._clock = clock
        self._on_head = on_head
        # _lock guards only the buffer, so emit never waits for a write; _write_lock
        # serialises writers (the thread and explicit flush calls) to keep emit order.
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: list[SecurityEvent] = []
        self._wake = threading.Event()
        self._stop = False
        self._closed = False
        self._head = log.latest_head()
        self._warned_drop = False
        self._warned_write = False
        self.dropped = 0
        """Events lost: the buffer was full, or the log refused their batch."""
        self.write_errors = 0
        """Batches the log refused to store."""
        self.appended = 0
        """Events appended to the log by this trail."""
        self._thread = threading.Thread(target=self._run, name="trustwire-audit", daemon=True)
        self._thread.start()

    @property
    def log(self) -> MerkleLog:
        """The log this trail appends to."""
        return self._log

    @property
    def pending(self) -> int:
        """Events emitted but not yet appended."""
        return len(self._pending)

    def emit(self, event: SecurityEvent) -> None:
        """Queue ``event`` for the log; never blocks. :class:`ValueError` after close."""
        with self._lock:
            if self._closed:
                raise ValueError("AuditTrail is closed")
            pending = self._pending
            if len(pending) >= self._max_pending:
                self.dropped += 1
                warn = not self._warned_drop
                self._warned_drop = True
            else:
                pending.append(event)
                if len(pending) == self._max_batch:
                    self._wake.set()
                return
        if warn:
            _log.warning("audit trail buffer full (%d events); dropping events", self._max_pending)

    def head(self) -> TreeHead | None:
        """The latest signed tree head (``None`` before the first batch of a new log)."""
        return self._head

    def flush(self) -> TreeHead | None:
        """Append every queued event now and return the new head (blocking)."""
        self._write()
        return self._head

    def close(self) -> None:
        """Stop the writer, append what is queued and sign a final head."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop = True
        self._wake.set()
        self._thread.join()
        self._write()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._write()

    def _write(self) -> None:
        with self._write_lock:
            with self._lock:
                events, self._pending = self._pending, []
            for start in range(0, len(events), self._max_batch):
                self._append(events[start : start + self._max_batch])

    def _append(self, batch: list[SecurityEvent]) -> None:
        try:
            self._log.append_many([encode_event(event) for event in batch])
        except Exception:
            self.dropped += len(batch)
            self._write_failed("appending %d events to the audit log failed", len(batch))
            return
        self.appended += len(batch)
        try:
            head = self._log.signed_tree_head(self._key, now=self._clock())
        except Exception:
            # The entries are stored; the next batch's head will cover them.
            self._write_failed("signing a tree head over %d entries failed", self._log.size)
            return
        self._head = head
        if self._on_head is not None:
            try:
                self._on_head(head)
            except Exception:
                _log.exception("audit trail on_head callback failed")

    def _write_failed(self, message: str, count: int) -> None:
        self.write_errors += 1
        if not self._warned_write:
            self._warned_write = True
            _log.exception(message, count)
