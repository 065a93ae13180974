"""Replay protection primitives (sans-I/O; time is passed in).

* :class:`ReplayWindow` — a sliding window over 64-bit counters, as IPsec (RFC 4303 §3.4.3)
  and DTLS use: counters above the highest seen are accepted and slide the window; counters
  inside the window are accepted once; counters older than the window are rejected.
  ``check`` does not change state, ``commit`` records a counter: callers check, then
  authenticate (AEAD), then commit, so a forged frame cannot poison the window.
* :class:`MessageIdCache` — remembers message ids for ``ttl`` seconds with a hard size bound,
  paired with a timestamp window (:func:`check_timestamp`) no wider than ``ttl`` so that any
  frame old enough to have left the cache is rejected as stale instead.
"""

from __future__ import annotations

from collections import OrderedDict

from trustwire.errors import ReplayDetected, StaleTimestamp

__all__ = ["MessageIdCache", "ReplayWindow", "check_timestamp"]


class ReplayWindow:
    """Sliding-window replay check for one direction of one channel."""

    __slots__ = ("_bitmap", "_highest", "size")

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError("window size must be positive")
        self.size = size
        self._highest = -1
        self._bitmap = 0  # bit i set = counter (highest - i) seen

    @property
    def highest(self) -> int:
        """Highest committed counter, or -1 when none yet."""
        return self._highest

    def check(self, counter: int) -> None:
        """Raise :class:`ReplayDetected` if ``counter`` was seen or is too old."""
        if counter < 0 or counter >= 2**64:
            raise ReplayDetected("counter out of range")
        if counter > self._highest:
            return
        offset = self._highest - counter
        if offset >= self.size:
            raise ReplayDetected("counter older than the replay window")
        if (self._bitmap >> offset) & 1:
            raise ReplayDetected("counter already seen")

    def commit(self, counter: int) -> None:
        """Record ``counter`` as seen (call only after the frame authenticated)."""
        if counter > self._highest:
            shift = counter - self._highest
            self._bitmap = ((self._bitmap << shift) | 1) & ((1 << self.size) - 1)
            self._highest = counter
        else:
            self._bitmap |= 1 << (self._highest - counter)

    def check_and_commit(self, counter: int) -> None:
        """:meth:`check` then :meth:`commit` (for callers that already authenticated)."""
        self.check(counter)
        self.commit(counter)


class MessageIdCache:
    """Bounded, time-limited set of recently seen message ids."""

    def __init__(self, ttl: float, max_entries: int = 1_000_000) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl and max_entries must be positive")
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            t = next(iter(seen.values()))
            if now - t < self.ttl and len(seen) <= self.max_entries:
                break
            seen.popitem(last=False)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._seen

    def add(self, message_id: bytes, *, now: float) -> None:
        """Record ``message_id``; raise :class:`ReplayDetected` if already present."""
        self._expire(now)
        if message_id in self._seen:
            raise ReplayDetected("message id already seen")
        self._seen[message_id] = now


def check_timestamp(timestamp_ms: int, *, now: float, window: float) -> None:
    """Raise :class:`StaleTimestamp` unless ``timestamp_ms`` is within ``window`` s of ``now``."""
    skew = timestamp_ms / 1000.0 - now
    if not -window <= skew <= window:
        raise StaleTimestamp(f"timestamp is {skew:+.1f} s from now (window ±{window:.0f} s)")
