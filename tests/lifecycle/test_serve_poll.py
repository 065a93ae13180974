"""``serve``'s housekeeping reloads the agent directory only when its generation moves."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from _deployment import wait_until
from trustwire.cli import serve


class Directory:
    def __init__(self) -> None:
        self.value = 7
        self.reads = 0

    async def generation(self) -> int:
        self.reads += 1
        return self.value


class Queue:
    async def purge_expired(self, *, now: float) -> int:
        return 0


class Store:
    def __init__(self) -> None:
        self.agents = Directory()
        self.queue = Queue()


class Coordinator:
    def __init__(self) -> None:
        self.refreshes = 0

    async def refresh_agents(self) -> None:
        self.refreshes += 1


class Instruments:
    async def tick(self, store: object) -> None:
        pass


async def test_the_directory_is_reloaded_once_per_generation_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serve, "DIRECTORY_POLL", 0.005)
    store, coordinator = Store(), Coordinator()
    task = asyncio.create_task(
        serve._housekeeping(cast(Any, coordinator), cast(Any, store), cast(Any, Instruments()))
    )
    try:
        await wait_until(lambda: store.agents.reads >= 10)
        assert coordinator.refreshes == 1  # the first reading, then nothing changed
        store.agents.value += 1
        await wait_until(lambda: coordinator.refreshes == 2)
        reads = store.agents.reads
        await wait_until(lambda: store.agents.reads >= reads + 10)
        assert coordinator.refreshes == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
