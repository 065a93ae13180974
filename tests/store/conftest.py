"""Fixtures that run the store tests once per backend.

``open_backend`` opens stores of the parametrized backend (each SQLite store of one test
on the same file, so reopening sees earlier data) and closes them all at teardown;
``store`` is one such store with the default retention.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _store_helpers import BACKENDS, OpenBackend, store_url

from trustwire.store import Store, open_store


@pytest.fixture(params=BACKENDS)
async def open_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenBackend]:
    opened: list[Store] = []

    async def open_(*, dedup_retention: float = 86400.0) -> Store:
        store = await open_store(
            store_url(request.param, tmp_path), dedup_retention=dedup_retention
        )
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_backend: OpenBackend) -> Store:
    return await open_backend()
