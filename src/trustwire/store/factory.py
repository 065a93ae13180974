"""Choose and open a storage backend from a URL.

Supported URLs:

* ``memory://`` - in-process, nothing survives the process.
* ``sqlite:///absolute/path.db`` or ``sqlite:relative/path.db`` - a SQLite file;
  option ``synchronous="NORMAL"|"FULL"``, also accepted as ``?synchronous=FULL``.

Backends register an opener under their scheme in ``_OPENERS``; the scheme is the only
thing the factory looks at before handing over. Error messages name the scheme but never
echo the whole URL, because future URLs (``postgresql://user:password@host``) carry
credentials.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Mapping

from trustwire.errors import ConfigurationError
from trustwire.store.base import Store, check_retention
from trustwire.store.memory import open_memory_store

__all__ = ["open_store", "supported_schemes"]

_Opener = Callable[[urllib.parse.SplitResult, float, dict[str, object]], Awaitable[Store]]


async def _open_memory(
    url: urllib.parse.SplitResult, dedup_retention: float, options: dict[str, object]
) -> Store:
    if url.netloc or url.path or url.query:
        raise ConfigurationError("memory:// store URLs take no host, path or query")
    _reject_unknown("memory", options, allowed=())
    return open_memory_store(dedup_retention=dedup_retention)


async def _open_sqlite(
    url: urllib.parse.SplitResult, dedup_retention: float, options: dict[str, object]
) -> Store:
    # Imported here so that memory-only users never load sqlite3.
    from trustwire.store.sqlite import SYNCHRONOUS_MODES, open_sqlite_store

    if url.netloc or url.fragment:
        raise ConfigurationError(
            "sqlite store URLs are sqlite:///absolute/path.db or sqlite:relative/path.db"
        )
    path = urllib.parse.unquote(url.path)
    if not path or path.endswith("/") or "\x00" in path:
        raise ConfigurationError("sqlite store URL needs a database file path")
    for key, value in _query_options("sqlite", url.query).items():
        if key in options:
            raise ConfigurationError(
                f"sqlite store option {key!r} given in the URL and as argument"
            )
        options[key] = value
    _reject_unknown("sqlite", options, allowed=("synchronous",))
    synchronous = options.get("synchronous", "NORMAL")
    if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS_MODES:
        raise ConfigurationError(
            f"sqlite option synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}"
        )
    return await open_sqlite_store(
        path, dedup_retention=dedup_retention, synchronous=synchronous.upper()
    )


_OPENERS: dict[str, _Opener] = {
    "memory": _open_memory,
    "sqlite": _open_sqlite,
}


def supported_schemes() -> list[str]:
    """Return the URL schemes :func:`open_store` accepts, sorted."""
    return sorted(_OPENERS)


async def open_store(url: str, *, dedup_retention: float = 86400.0, **options: object) -> Store:
    """Open the store that ``url`` names.

    ``dedup_retention`` is how long, in seconds, an acknowledged message id keeps
    refusing duplicates. ``options`` are backend-specific (see the module docstring).
    Raises :class:`~trustwire.errors.ConfigurationError` for an unknown scheme, a
    malformed URL or a bad option, and :class:`~trustwire.errors.StoreError` when the
    backend itself cannot be opened.
    """
    if not isinstance(url, str):
        raise ConfigurationError("store URL must be a string")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed store URL: {exc}") from None
    scheme = parts.scheme.lower()
    opener = _OPENERS.get(scheme)
    if opener is None:
        named = repr(scheme) if scheme else "(none)"
        raise ConfigurationError(
            f"unsupported store URL scheme {named}; supported: " + ", ".join(supported_schemes())
        )
    try:
        retention = check_retention(dedup_retention)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return await opener(parts, retention, dict(options))


def _query_options(scheme: str, query: str) -> dict[str, str]:
    """Parse ``?a=b`` options; each may appear once."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ConfigurationError(f"malformed query in {scheme}: store URL") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise ConfigurationError(f"option {key!r} given twice in {scheme}: store URL")
        options[key] = value
    return options


def _reject_unknown(
    scheme: str, options: Mapping[str, object], *, allowed: tuple[str, ...]
) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise ConfigurationError(
            f"unknown {scheme} store option(s): {', '.join(unknown)} (accepted: {accepted})"
        )
