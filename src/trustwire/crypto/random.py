"""The one source of randomness in trustwire.

Everything that needs random bytes calls :func:`random_bytes`. Tests that need
determinism replace the generator with :func:`set_random_source` (and restore it with
``set_random_source(None)``); production code never does.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["random_bytes", "set_random_source"]

_source: Callable[[int], bytes] = os.urandom


def random_bytes(n: int) -> bytes:
    """Return ``n`` cryptographically secure random bytes."""
    if n < 0:
        raise ValueError("n must be non-negative")
    return _source(n)


def set_random_source(source: Callable[[int], bytes] | None) -> None:
    """Replace the random source (tests only); ``None`` restores ``os.urandom``."""
    global _source
    _source = os.urandom if source is None else source
