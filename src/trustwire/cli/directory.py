"""Agent names for operator commands: resolve ``NAME|DID`` to a record, label DIDs.

Operator commands print events and alerts that name agents by DID; :class:`Names` turns
those DIDs into the registry names an operator knows. It reads the home's store (the
same file the coordinator uses; SQLite in WAL mode lets both read at once) and falls back
to the bare DID when the store cannot be read or does not know the DID.
"""

from __future__ import annotations

import logging
import time

from trustwire.cli.settings import run
from trustwire.errors import StoreError, UnknownAgent
from trustwire.home import Home
from trustwire.store.base import AgentRecord, Store

__all__ = ["Names", "resolve_agent"]

log = logging.getLogger("trustwire.cli")

RELOAD_INTERVAL = 5.0
"""Seconds before an unknown DID makes :class:`Names` read the store again."""


async def resolve_agent(store: Store, who: str) -> AgentRecord:
    """The enrolled agent named ``who`` (a name or a ``did:`` DID); :class:`UnknownAgent`
    when there is none."""
    if who.startswith("did:"):
        record = await store.agents.get_by_did(who)
    else:
        record = await store.agents.get_by_name(who)
    if record is None:
        raise UnknownAgent(who)
    return record


class Names:
    """DID-to-name labels from the home's agent directory, read lazily.

    A DID the directory did not know makes it re-read the store, at most once every
    :data:`RELOAD_INTERVAL` seconds, so a follower picks up agents enrolled meanwhile.
    """

    def __init__(self, home: Home) -> None:
        self._home = home
        self._names: dict[str, str] = {}
        self._loaded_at: float | None = None
        self._warned = False

    def name(self, did: str | None) -> str | None:
        """The registry name of ``did``, or ``None`` when unknown (or ``did`` is None)."""
        if did is None or not did.startswith("did:"):
            return None
        found = self._names.get(did)
        if found is None and self._stale():
            self._load()
            found = self._names.get(did)
        return found

    def label(self, did: str | None) -> str:
        """The name of ``did`` if known, else ``did`` itself (``-`` for none)."""
        if did is None:
            return "-"
        return self.name(did) or did

    def _stale(self) -> bool:
        return self._loaded_at is None or time.monotonic() - self._loaded_at >= RELOAD_INTERVAL

    def _load(self) -> None:
        self._loaded_at = time.monotonic()
        try:
            records = run(_list_agents(self._home))
        except (StoreError, OSError) as exc:
            if not self._warned:
                self._warned = True
                log.warning("agent names unavailable, showing DIDs: %s", exc)
            return
        self._names = {record.did: record.name for record in records}


async def _list_agents(home: Home) -> list[AgentRecord]:
    store = await home.open_store()
    try:
        return await store.agents.list()
    finally:
        await store.close()
