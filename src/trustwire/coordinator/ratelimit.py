"""Rate limiting per agent and per role: in process, or on the ``limits`` library.

The policy engine says which buckets a request falls in
(:meth:`trustwire.policy.engine.PolicyEngine.rate_limits_for`: the agent's own bucket
and one shared bucket per role); :class:`RateLimiter` admits the request only if every
bucket has room.

Invariants:

- All or nothing: every bucket is *tested* before any is *hit*, so a request refused by
  one bucket consumes nothing from the others (a flooding agent cannot drain its role's
  shared bucket with requests its own bucket refuses).
- Each limit string is parsed once and cached (bounded); a bad limit string raises
  :class:`~trustwire.errors.ConfigurationError`.
- Storage is chosen by URI. ``memory://`` (one process) uses :class:`_LocalCounters`
  below; any other URI goes to ``limits`` exactly as it understands it:
  ``redis://host:6379`` (or ``redis+cluster://``, ``redis+sentinel://``) for a cluster
  of coordinators sharing counters — no code changes. With shared storage two nodes may
  both pass the test step for the last slot; the later ``hit`` then fails and the
  request is refused, so limits are never exceeded, only occasionally undershot.

Why not ``limits``' own memory storage: it costs 11-19 us per hit for the moving window
(a Python list per bucket, inserted into at the front and bisected), and it expires
entries from a ``threading.Timer`` restarted every 10 ms of traffic, whose
``Thread.start()`` blocks the coordinator's event loop for milliseconds under load.

In-process semantics (``memory://``), for a limit of *N* per period *T* (the ``limits``
notation: ``"200/second"``, ``"10/second;500/hour"`` — every item is enforced):

- ``fixed-window``: as ``limits``' fixed window: a window of length *T* starts at a
  bucket's first hit after the previous window ended; at most *N* units per window.
- ``moving-window`` (the default) and ``sliding-window-counter``: a sliding-window
  counter, as ``limits``' ``sliding-window-counter``: consecutive windows of length
  *T*; a request of cost *c* is admitted when ``previous * (1 - elapsed / T) + current
  + c <= N`` (``elapsed``: time into the current window). O(1) per bucket and no thread.
  It is exact while the traffic is steady; against an exact moving window it can admit
  more only when the previous window's hits bunched at its end — at most *N* more in
  the worst case over any span of *T*, never more than *2N*. Configure a shared
  storage URI (``limits``' moving window) where the exact bound matters.

Counters live in a dict keyed by bucket and limit item; it holds one entry per active
bucket (agents and roles), and entries idle for two periods are swept when it grows
past a bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import limits
import limits.errors
import limits.storage
import limits.strategies

from trustwire.errors import ConfigurationError, StoreError
from trustwire.policy.model import parse_rate_limit

__all__ = ["RateLimiter"]

_MAX_CACHED_LIMITS = 4096
#: Counters kept before idle ones are swept (and, if none is idle, all are forgotten).
_MAX_COUNTERS = 65_536

#: (bucket key, amount, period in seconds) -> [window start, previous count, current count]
_CounterKey = tuple[str, int, int]


class _LocalCounters:
    """In-process window counters for ``memory://`` (semantics in the module docstring).

    ``clock`` is monotonic seconds; tests may pin it.
    """

    def __init__(self, *, sliding: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._sliding = sliding
        self._clock = clock
        self._counters: dict[_CounterKey, list[float]] = {}

    def _window(self, key: _CounterKey, now: float) -> list[float]:
        """The counter for ``key``, its windows advanced to ``now``."""
        period = key[2]
        window = self._counters.get(key)
        if window is None:
            if len(self._counters) >= _MAX_COUNTERS:
                self._sweep(now)
            window = self._counters[key] = [now, 0.0, 0.0]
            return window
        elapsed = now - window[0]
        if elapsed >= period:
            if not self._sliding or elapsed >= 2 * period:
                window[0], window[1], window[2] = now, 0.0, 0.0
            else:
                window[0], window[1], window[2] = window[0] + period, window[2], 0.0
        return window

    def _room(self, key: _CounterKey, now: float) -> float:
        """Units ``key`` can still admit at ``now``."""
        window = self._window(key, now)
        used = window[2]
        if self._sliding and window[1]:
            used += window[1] * (1.0 - (now - window[0]) / key[2])
        return key[1] - used

    def test(self, keys: Sequence[_CounterKey], cost: int) -> bool:
        now = self._clock()
        return all(self._room(key, now) >= cost for key in keys)

    def hit(self, keys: Sequence[_CounterKey], cost: int) -> bool:
        now = self._clock()
        for key in keys:
            if self._room(key, now) < cost:
                return False
        for key in keys:
            self._counters[key][2] += cost
        return True

    def reset(self) -> None:
        self._counters.clear()

    def _sweep(self, now: float) -> None:
        idle = [key for key, w in self._counters.items() if now - w[0] >= 2 * key[2]]
        for key in idle:
            del self._counters[key]
        if len(self._counters) >= _MAX_COUNTERS:
            self._counters.clear()


class RateLimiter:
    """Admits or refuses requests against named buckets.

    ``strategy`` is a ``limits`` strategy name: ``"moving-window"`` (the default; exact
    with shared storage, a sliding-window counter in process),
    ``"sliding-window-counter"`` or ``"fixed-window"``.
    """

    def __init__(self, storage_uri: str = "memory://", strategy: str = "moving-window") -> None:
        strategy_class = limits.strategies.STRATEGIES.get(strategy)
        if strategy_class is None:
            known = ", ".join(sorted(limits.strategies.STRATEGIES))
            raise ConfigurationError(f"unknown rate-limit strategy {strategy!r} (known: {known})")
        self._storage_scheme = storage_uri.partition(":")[0]
        self._items: dict[str, tuple[limits.RateLimitItem, ...]] = {}
        self._keys: dict[tuple[str, str], tuple[_CounterKey, ...]] = {}
        self._local: _LocalCounters | None = None
        if self._storage_scheme == "memory":
            self._local = _LocalCounters(sliding=strategy != "fixed-window")
            return
        try:
            self._storage = limits.storage.storage_from_string(storage_uri)
            self._limiter = strategy_class(self._storage)
        except (limits.errors.ConfigurationError, ValueError, NotImplementedError) as exc:
            # Never echo the URI: it may hold a Redis password.
            problem = str(exc).replace(storage_uri, f"{self._storage_scheme}://...")
            raise ConfigurationError(f"unusable rate-limit storage: {problem}") from None

    @property
    def storage_scheme(self) -> str:
        """The storage URI's scheme (``memory``, ``redis``, ...)."""
        return self._storage_scheme

    def _parse(self, limit: str) -> tuple[limits.RateLimitItem, ...]:
        items = self._items.get(limit)
        if items is None:
            items = parse_rate_limit(limit)
            if len(self._items) >= _MAX_CACHED_LIMITS:
                self._items.clear()
            self._items[limit] = items
        return items

    def _local_keys(self, buckets: Sequence[tuple[str, str]]) -> list[_CounterKey]:
        keys: list[_CounterKey] = []
        for bucket in buckets:
            resolved = self._keys.get(bucket)
            if resolved is None:
                resolved = tuple(
                    (bucket[0], item.amount, item.get_expiry()) for item in self._parse(bucket[1])
                )
                if len(self._keys) >= _MAX_CACHED_LIMITS:
                    self._keys.clear()
                self._keys[bucket] = resolved
            keys.extend(resolved)
        return keys

    def hit(self, buckets: Sequence[tuple[str, str]], cost: int = 1) -> bool:
        """Consume ``cost`` from every ``(bucket key, limit string)`` if all have room.

        Returns ``False`` (consuming nothing) when any bucket would overflow.
        """
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError("cost must be a positive integer")
        if self._local is not None:
            return self._local.hit(self._local_keys(buckets), cost)
        resolved = [(key, item) for key, limit in buckets for item in self._parse(limit)]
        try:
            for key, item in resolved:
                if not self._limiter.test(item, key, cost=cost):
                    return False
            admitted = True
            for key, item in resolved:
                admitted = self._limiter.hit(item, key, cost=cost) and admitted
            return admitted
        except (limits.errors.StorageError, ConnectionError, TimeoutError) as exc:
            raise StoreError(f"rate-limit storage failed: {type(exc).__name__}") from exc

    def test(self, buckets: Sequence[tuple[str, str]], cost: int = 1) -> bool:
        """Whether :meth:`hit` would admit the request now, without consuming anything."""
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError("cost must be a positive integer")
        if self._local is not None:
            return self._local.test(self._local_keys(buckets), cost)
        try:
            return all(
                self._limiter.test(item, key, cost=cost)
                for key, limit in buckets
                for item in self._parse(limit)
            )
        except (limits.errors.StorageError, ConnectionError, TimeoutError) as exc:
            raise StoreError(f"rate-limit storage failed: {type(exc).__name__}") from exc

    def reset(self) -> None:
        """Forget every counter (all buckets start empty)."""
        if self._local is not None:
            self._local.reset()
            return
        try:
            self._storage.reset()
        except (limits.errors.StorageError, ConnectionError, TimeoutError) as exc:
            raise StoreError(f"rate-limit storage failed: {type(exc).__name__}") from exc
