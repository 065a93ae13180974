"""Property test: random enqueue/ack/remove/pending/purge sequences against a tiny model.

The model is the module invariants of ``trustwire.store.base`` written as plain dicts.
A small pool of message ids and recipients makes duplicates, foreign acks and re-enqueues
after removal or expiry common. After every step the whole visible state (every
recipient's queue, depths, the order and stability of ``seq``) must match the model.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from _store_helpers import BACKENDS, store_url
from hypothesis import given, settings
from hypothesis import strategies as st

from trustwire.store import NewMessage, QueuedMessage, Store, open_store

RECIPIENTS = ("alice", "bob", "carol")
IDS = tuple(bytes([i]) * 16 for i in range(8))
RETENTION = 5.0


@dataclass(frozen=True)
class Enqueue:
    items: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Ack:
    recipient: str
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Remove:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Page:
    recipient: str
    skip: int
    limit: int


@dataclass(frozen=True)
class Purge:
    pass


@dataclass(frozen=True)
class Tick:
    seconds: int


Operation = Enqueue | Ack | Remove | Page | Purge | Tick

recipients = st.sampled_from(RECIPIENTS)
id_indexes = st.integers(0, len(IDS) - 1)
operations = st.one_of(
    st.builds(Enqueue, st.lists(st.tuples(recipients, id_indexes), max_size=6).map(tuple)),
    st.builds(Ack, recipients, st.lists(id_indexes, max_size=4).map(tuple)),
    st.builds(Remove, st.lists(id_indexes, max_size=3).map(tuple)),
    st.builds(Page, recipients, st.integers(0, 6), st.integers(1, 4)),
    st.just(Purge()),
    st.builds(Tick, st.integers(1, 4)),
)


class Model:
    """The queue semantics in the simplest form: insertion-ordered dicts."""

    def __init__(self) -> None:
        self.now = 1000.0
        # message id -> (recipient, frame); dict order is delivery order.
        self.pending: dict[bytes, tuple[str, bytes]] = {}
        self.tombstones: dict[bytes, float] = {}

    def enqueue(self, items: Sequence[NewMessage]) -> list[bool]:
        results = []
        for item in items:
            until = self.tombstones.get(item.message_id)
            if item.message_id in self.pending or (until is not None and until > item.enqueued_at):
                results.append(False)
                continue
            self.tombstones.pop(item.message_id, None)
            self.pending[item.message_id] = (item.recipient, item.frame)
            results.append(True)
        return results

    def ack(self, recipient: str, ids: Sequence[bytes]) -> int:
        removed = 0
        for mid in dict.fromkeys(ids):
            if mid in self.pending and self.pending[mid][0] == recipient:
                del self.pending[mid]
                self.tombstones[mid] = self.now + RETENTION
                removed += 1
        return removed

    def remove(self, ids: Sequence[bytes]) -> int:
        removed = [mid for mid in dict.fromkeys(ids) if mid in self.pending]
        for mid in removed:
            del self.pending[mid]
        return len(removed)

    def purge(self) -> int:
        expired = [mid for mid, until in self.tombstones.items() if until <= self.now]
        for mid in expired:
            del self.tombstones[mid]
        return len(expired)


async def everything(store: Store) -> list[QueuedMessage]:
    found = []
    for recipient in RECIPIENTS:
        found.extend(await store.queue.pending(recipient, limit=1000))
    return sorted(found, key=lambda m: m.seq)


async def check_against_model(store: Store, model: Model, operations: Sequence[Operation]) -> None:
    seq_of: dict[bytes, int] = {}
    highest_seq = 0
    for step, operation in enumerate(operations):
        queue = store.queue
        match operation:
            case Enqueue(items):
                batch = [
                    NewMessage(r, "sender", IDS[i], f"{step}:{k}".encode(), model.now)
                    for k, (r, i) in enumerate(items)
                ]
                assert await queue.enqueue_many(batch) == model.enqueue(batch)
            case Ack(recipient, indexes):
                ids = [IDS[i] for i in indexes]
                assert await queue.ack(recipient, ids, now=model.now) == model.ack(recipient, ids)
            case Remove(indexes):
                ids = [IDS[i] for i in indexes]
                assert await queue.remove(ids) == model.remove(ids)
            case Page(recipient, skip, limit):
                full = await queue.pending(recipient, limit=1000)
                after = full[min(skip, len(full)) - 1].seq if skip and full else 0
                expected = full[skip : skip + limit] if full else []
                assert await queue.pending(recipient, after_seq=after, limit=limit) == expected
            case Purge():
                assert await queue.purge_expired(now=model.now) == model.purge()
            case Tick(seconds):
                model.now += seconds

        observed = await everything(store)
        assert [(m.message_id, m.recipient, m.frame) for m in observed] == [
            (mid, recipient, frame) for mid, (recipient, frame) in model.pending.items()
        ]
        for m in observed:
            if m.message_id in seq_of:
                assert m.seq == seq_of[m.message_id], "a pending message changed its seq"
            else:
                assert m.seq > highest_seq, "a new message did not get a fresh, higher seq"
        seq_of = {m.message_id: m.seq for m in observed}
        highest_seq = max([highest_seq, *seq_of.values()])
        for recipient in RECIPIENTS:
            expected_depth = sum(1 for r, _ in model.pending.values() if r == recipient)
            assert await store.queue.depth(recipient) == expected_depth
        assert await store.queue.depth() == len(model.pending)


async def run_scenario(backend: str, operations: Sequence[Operation]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = await open_store(store_url(backend, Path(directory)), dedup_retention=RETENTION)
        try:
            await check_against_model(store, Model(), operations)
        finally:
            await store.close()


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(operations=st.lists(operations, max_size=25))
def test_queue_behaves_like_the_model(backend: str, operations: list[Operation]) -> None:
    asyncio.run(run_scenario(backend, operations))
