"""A non-blocking append-only JSON-lines file writer, shared by the event and alert sinks.

``write(line)`` only queues the line, so callers on the event loop never wait for the
disk; a daemon thread appends queued lines either every ``flush_interval`` seconds or, with
``flush_interval=None``, as soon as any are queued. ``close()`` writes what is left.

Invariants: the file is created (or tightened) to mode 0600 — the lines are security
metadata naming agents and addresses; at most ``max_pending`` lines wait in memory, beyond
that new lines are dropped and counted in :attr:`JsonlWriter.dropped`; a failed write
loses only the lines of that write (counted in :attr:`JsonlWriter.write_errors`).
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["JsonlWriter"]

_log = logging.getLogger("trustwire.jsonl")


class JsonlWriter:
    """Appends queued lines to ``path`` from a background thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float | None,
        max_pending: int,
        what: str,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if flush_interval is not None and flush_interval <= 0:
            raise ValueError("flush_interval must be positive (or None: write at once)")
        self._path = os.fspath(path)
        self._what = what
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # An existing file keeps its mode on open: make sure nobody else can read it.
            os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._pending: list[str] = []
        self._max_pending = max_pending
        self._interval = flush_interval
        self._closed = False
        self.dropped = 0
        """Lines discarded because ``max_pending`` lines were waiting."""
        self.write_errors = 0
        """Failed writes (the lines of a failed write are lost)."""
        self._thread = threading.Thread(
            target=self._run, name=f"trustwire-{what}:{self._path}", daemon=True
        )
        self._thread.start()

    @property
    def path(self) -> str:
        """The file being appended to."""
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, line: str) -> None:
        """Queue one line (with its newline); ``ValueError`` after :meth:`close`."""
        with self._cond:
            if self._closed:
                raise ValueError(f"the {self._what} file writer is closed")
            if len(self._pending) >= self._max_pending:
                self.dropped += 1
                return
            self._pending.append(line)
            if self._interval is None:
                self._cond.notify()

    def flush(self) -> None:
        """Write every queued line now (blocking; not for the event loop)."""
        # ``_cond`` guards only the queue swap, so ``write`` on the event loop never
        # waits for a disk write, which happens under ``_write_lock``.
        with self._write_lock:
            with self._cond:
                lines, self._pending = self._pending, []
            if not lines or self._file.closed:
                return
            try:
                self._file.write("".join(lines))
                self._file.flush()
            except OSError:
                self.write_errors += 1
                _log.exception("writing %s to %s failed", self._what, self._path)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._interval is None:
                    self._cond.wait_for(lambda: self._pending or self._closed)
                else:
                    self._cond.wait_for(lambda: self._closed, timeout=self._interval)
                if self._closed:
                    return
            self.flush()

    def close(self) -> None:
        """Write what is queued, stop the writer thread and close the file."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self.flush()
        with self._write_lock:
            self._file.close()
