"""Rate limiting per agent and per role, on the ``limits`` library.

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
- Storage is chosen by URI, exactly as ``limits`` understands it: ``memory://`` for one
  process, ``redis://host:6379`` (or ``redis+cluster://``, ``redis+sentinel://``) for a
  cluster of coordinators sharing counters — no code changes. With shared storage two
  nodes may both pass the test step for the last slot; the later ``hit`` then fails and
  the request is refused, so limits are never exceeded, only occasionally undershot.
"""

from __future__ import annotations

from collections.abc import Sequence

import limits
import limits.errors
import limits.storage
import limits.strategies

from trustwire.errors import ConfigurationError, StoreError
from trustwire.policy.model import parse_rate_limit

__all__ = ["RateLimiter"]

_MAX_CACHED_LIMITS = 4096


class RateLimiter:
    """Admits or refuses requests against named buckets.

    ``strategy`` is a ``limits`` strategy name: ``"moving-window"`` (exact, the
    default), ``"sliding-window-counter"`` or ``"fixed-window"``.
    """

    def __init__(self, storage_uri: str = "memory://", strategy: str = "moving-window") -> None:
        strategy_class = limits.strategies.STRATEGIES.get(strategy)
        if strategy_class is None:
            known = ", ".join(sorted(limits.strategies.STRATEGIES))
            raise ConfigurationError(f"unknown rate-limit strategy {strategy!r} (known: {known})")
        self._storage_scheme = storage_uri.partition(":")[0]
        try:
            self._storage = limits.storage.storage_from_string(storage_uri)
            self._limiter = strategy_class(self._storage)
        except (limits.errors.ConfigurationError, ValueError, NotImplementedError) as exc:
            # Never echo the URI: it may hold a Redis password.
            problem = str(exc).replace(storage_uri, f"{self._storage_scheme}://...")
            raise ConfigurationError(f"unusable rate-limit storage: {problem}") from None
        self._items: dict[str, tuple[limits.RateLimitItem, ...]] = {}

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

    def hit(self, buckets: Sequence[tuple[str, str]], cost: int = 1) -> bool:
        """Consume ``cost`` from every ``(bucket key, limit string)`` if all have room.

        Returns ``False`` (consuming nothing) when any bucket would overflow.
        """
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError("cost must be a positive integer")
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
        try:
            self._storage.reset()
        except (limits.errors.StorageError, ConnectionError, TimeoutError) as exc:
            raise StoreError(f"rate-limit storage failed: {type(exc).__name__}") from exc
