"""The store conformance suite: every test runs against every backend.

A new backend joins by adding its name to ``BACKENDS`` in ``_store_helpers``; passing
this file is what "implements the store interfaces" means.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from _store_helpers import OpenBackend, agent, message

from trustwire.errors import DuplicateAgent, StoreError, UnknownAgent
from trustwire.store import Store

# -- agents -------------------------------------------------------------------------


async def test_added_agent_is_found_by_did_and_by_name(store: Store) -> None:
    record = agent("alice")
    await store.agents.add(record)
    assert await store.agents.get_by_did(record.did) == record
    assert await store.agents.get_by_name("alice") == record


async def test_every_field_of_an_agent_round_trips(store: Store) -> None:
    record = agent("alice", roles=("admin", "röle with spaces", "worker"))
    await store.agents.add(record)
    fetched = await store.agents.get_by_did(record.did)
    assert fetched is not None
    assert fetched.roles == ("admin", "röle with spaces", "worker")
    assert fetched.agreement_key == record.agreement_key
    assert fetched.agreement_statement == record.agreement_statement
    assert fetched.agreement_issued_at == record.agreement_issued_at
    assert fetched.created_at == record.created_at
    assert fetched.revoked_at is None
    assert not fetched.revoked


async def test_lookups_of_unknown_agents_return_none(store: Store) -> None:
    await store.agents.add(agent("alice"))
    assert await store.agents.get_by_did("did:key:znobody") is None
    assert await store.agents.get_by_name("nobody") is None


async def test_list_returns_every_agent_in_enrollment_order(store: Store) -> None:
    names = ["zed", "amy", "mo"]
    for name in names:
        await store.agents.add(agent(name))
    assert [record.name for record in await store.agents.list()] == names


async def test_list_of_an_empty_directory_is_empty(store: Store) -> None:
    assert await store.agents.list() == []


async def test_add_refuses_a_taken_name(store: Store) -> None:
    await store.agents.add(agent("alice", "did:key:z1"))
    with pytest.raises(DuplicateAgent) as caught:
        await store.agents.add(agent("alice", "did:key:z2"))
    assert caught.value.field == "name"
    assert isinstance(caught.value, StoreError)
    assert await store.agents.get_by_did("did:key:z2") is None


async def test_add_refuses_a_taken_did(store: Store) -> None:
    await store.agents.add(agent("alice", "did:key:z1"))
    with pytest.raises(DuplicateAgent) as caught:
        await store.agents.add(agent("bob", "did:key:z1"))
    assert caught.value.field == "did"
    assert await store.agents.get_by_name("bob") is None


async def test_a_revoked_agent_keeps_its_name_and_did_taken(store: Store) -> None:
    await store.agents.add(agent("alice", "did:key:z1"))
    await store.agents.revoke("did:key:z1", at=5.0)
    with pytest.raises(DuplicateAgent):
        await store.agents.add(agent("alice", "did:key:z2"))
    with pytest.raises(DuplicateAgent):
        await store.agents.add(agent("bob", "did:key:z1"))


async def test_set_roles_replaces_the_roles(store: Store) -> None:
    record = agent("alice", roles=("worker",))
    await store.agents.add(record)
    await store.agents.set_roles(record.did, ["admin", "auditor"])
    fetched = await store.agents.get_by_name("alice")
    assert fetched is not None
    assert fetched.roles == ("admin", "auditor")
    await store.agents.set_roles(record.did, [])
    fetched = await store.agents.get_by_did(record.did)
    assert fetched is not None
    assert fetched.roles == ()


async def test_set_roles_rejects_a_bare_string(store: Store) -> None:
    record = agent("alice", roles=("worker",))
    await store.agents.add(record)
    with pytest.raises(ValueError, match="not a string"):
        await store.agents.set_roles(record.did, "admin")
    fetched = await store.agents.get_by_did(record.did)
    assert fetched is not None
    assert fetched.roles == ("worker",)


async def test_set_roles_of_an_unknown_agent_raises_unknown_agent(store: Store) -> None:
    with pytest.raises(UnknownAgent):
        await store.agents.set_roles("did:key:znobody", ["admin"])


async def test_revoke_records_the_first_revocation_time(store: Store) -> None:
    record = agent("alice")
    await store.agents.add(record)
    await store.agents.revoke(record.did, at=100.0)
    await store.agents.revoke(record.did, at=200.0)
    fetched = await store.agents.get_by_did(record.did)
    assert fetched is not None
    assert fetched.revoked
    assert fetched.revoked_at == 100.0


async def test_revoke_of_an_unknown_agent_raises_unknown_agent(store: Store) -> None:
    with pytest.raises(UnknownAgent):
        await store.agents.revoke("did:key:znobody", at=1.0)


# -- queue: enqueue and order --------------------------------------------------------


async def test_pending_returns_frames_verbatim_in_enqueue_order(store: Store) -> None:
    sent = [message("bob", frame=bytes([i]) * (i * 100)) for i in range(5)]
    assert await store.queue.enqueue_many(sent) == [True] * 5
    got = await store.queue.pending("bob")
    assert [(m.message_id, m.frame, m.sender, m.enqueued_at) for m in got] == [
        (m.message_id, m.frame, m.sender, m.enqueued_at) for m in sent
    ]
    assert all(m.recipient == "bob" for m in got)


async def test_seq_increases_across_recipients_in_enqueue_order(store: Store) -> None:
    first = [message(r) for r in ("alice", "bob", "alice", "carol", "bob")]
    second = [message(r) for r in ("carol", "alice", "bob")]
    await store.queue.enqueue_many(first)
    await store.queue.enqueue_many(second)
    seen = []
    for recipient in ("alice", "bob", "carol"):
        page = await store.queue.pending(recipient)
        assert [m.seq for m in page] == sorted({m.seq for m in page})
        seen.extend(page)
    by_seq = sorted(seen, key=lambda m: m.seq)
    assert len({m.seq for m in seen}) == len(seen) == 8
    assert [m.message_id for m in by_seq] == [m.message_id for m in first + second]


async def test_seq_keeps_growing_after_the_newest_messages_are_gone(
    open_backend: OpenBackend,
) -> None:
    store = await open_backend()
    old = [message("bob"), message("bob")]
    await store.queue.enqueue_many(old)
    highest = max(m.seq for m in await store.queue.pending("bob"))
    await store.queue.remove([old[1].message_id])
    await store.queue.ack("bob", [old[0].message_id], now=1000.0)
    await store.queue.enqueue_many([message("bob")])
    (newest,) = await store.queue.pending("bob")
    assert newest.seq > highest


async def test_an_empty_batch_stores_nothing(store: Store) -> None:
    assert await store.queue.enqueue_many([]) == []
    assert await store.queue.depth() == 0


async def test_a_duplicate_within_one_batch_is_refused(store: Store) -> None:
    mid = os.urandom(16)
    batch = [message("bob", mid, frame=b"first"), message("bob"), message("bob", mid, frame=b"x")]
    assert await store.queue.enqueue_many(batch) == [True, True, False]
    frames = [m.frame for m in await store.queue.pending("bob")]
    assert frames == [b"first", batch[1].frame]


async def test_a_duplicate_across_batches_is_refused(store: Store) -> None:
    mid = os.urandom(16)
    assert await store.queue.enqueue_many([message("bob", mid, frame=b"first")]) == [True]
    assert await store.queue.enqueue_many([message("bob"), message("bob", mid)]) == [True, False]
    assert await store.queue.depth("bob") == 2
    assert (await store.queue.pending("bob"))[0].frame == b"first"


async def test_message_ids_are_unique_across_recipients(store: Store) -> None:
    mid = os.urandom(16)
    await store.queue.enqueue_many([message("alice", mid)])
    assert await store.queue.enqueue_many([message("bob", mid)]) == [False]
    assert await store.queue.depth("bob") == 0


async def test_batches_larger_than_one_lookup_chunk_deduplicate_exactly(store: Store) -> None:
    ids = [os.urandom(16) for _ in range(600)]
    first = [message(f"r{i % 7}", mid) for i, mid in enumerate(ids)]
    # Copies that straddle the 256-id lookup chunks of the SQL backends.
    first += [message("r0", ids[0]), message("r1", ids[300]), message("r2", ids[599])]
    assert await store.queue.enqueue_many(first) == [True] * 600 + [False] * 3
    fresh = [os.urandom(16) for _ in range(300)]
    mixed = [message("r3", mid) for mid in ids[::2] + fresh]
    assert await store.queue.enqueue_many(mixed) == [False] * 300 + [True] * 300
    assert await store.queue.depth() == 900


async def test_concurrent_batches_all_get_distinct_seqs(store: Store) -> None:
    batches = [[message("bob") for _ in range(10)] for _ in range(20)]
    results = await asyncio.gather(*(store.queue.enqueue_many(b) for b in batches))
    assert all(result == [True] * 10 for result in results)
    page = await store.queue.pending("bob", limit=1000)
    assert len({m.seq for m in page}) == 200


# -- queue: pagination ---------------------------------------------------------------


async def test_pending_pages_through_a_queue_with_after_seq_and_limit(store: Store) -> None:
    sent = [message("bob") for _ in range(10)]
    await store.queue.enqueue_many([message("alice"), *sent[:5], message("alice"), *sent[5:]])
    pages, after = [], 0
    while page := await store.queue.pending("bob", after_seq=after, limit=3):
        assert len(page) <= 3
        pages.append(page)
        after = page[-1].seq
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [m.message_id for p in pages for m in p] == [m.message_id for m in sent]


async def test_pending_for_a_recipient_with_no_messages_is_empty(store: Store) -> None:
    await store.queue.enqueue_many([message("alice")])
    assert await store.queue.pending("bob") == []


@pytest.mark.parametrize("limit", [0, -1])
async def test_pending_rejects_a_limit_below_one(store: Store, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.queue.pending("bob", limit=limit)


# -- queue: ack, tombstones, retention -----------------------------------------------


async def test_ack_removes_the_recipients_messages(store: Store) -> None:
    sent = [message("bob") for _ in range(3)]
    await store.queue.enqueue_many(sent)
    assert await store.queue.ack("bob", [sent[0].message_id, sent[2].message_id]) == 2
    assert [m.message_id for m in await store.queue.pending("bob")] == [sent[1].message_id]


async def test_ack_counts_each_message_once(store: Store) -> None:
    sent = message("bob")
    await store.queue.enqueue_many([sent])
    assert await store.queue.ack("bob", [sent.message_id, sent.message_id]) == 1
    assert await store.queue.ack("bob", [sent.message_id]) == 0


async def test_ack_of_unknown_ids_changes_nothing(store: Store) -> None:
    await store.queue.enqueue_many([message("bob")])
    assert await store.queue.ack("bob", [os.urandom(16)]) == 0
    assert await store.queue.ack("bob", []) == 0
    assert await store.queue.depth("bob") == 1


async def test_ack_of_another_recipients_message_does_nothing(store: Store) -> None:
    theirs = message("alice")
    await store.queue.enqueue_many([theirs])
    assert await store.queue.ack("mallory", [theirs.message_id], now=1000.0) == 0
    assert [m.message_id for m in await store.queue.pending("alice")] == [theirs.message_id]
    # Nor did it leave a tombstone: once withdrawn, the id may be queued again.
    assert await store.queue.remove([theirs.message_id]) == 1
    assert await store.queue.enqueue_many([message("alice", theirs.message_id)]) == [True]


async def test_a_duplicate_of_an_acked_id_is_refused_within_retention(
    open_backend: OpenBackend,
) -> None:
    store = await open_backend(dedup_retention=100.0)
    sent = message("bob", at=990.0)
    await store.queue.enqueue_many([sent])
    await store.queue.ack("bob", [sent.message_id], now=1000.0)
    assert await store.queue.enqueue_many([message("bob", sent.message_id, at=1099.0)]) == [False]
    assert await store.queue.depth() == 0


async def test_a_duplicate_of_an_acked_id_is_accepted_after_purge_past_retention(
    open_backend: OpenBackend,
) -> None:
    store = await open_backend(dedup_retention=100.0)
    sent = message("bob", at=990.0)
    await store.queue.enqueue_many([sent])
    await store.queue.ack("bob", [sent.message_id], now=1000.0)
    assert await store.queue.purge_expired(now=1099.0) == 0
    assert await store.queue.enqueue_many([message("bob", sent.message_id, at=1099.0)]) == [False]
    assert await store.queue.purge_expired(now=1100.0) == 1
    assert await store.queue.purge_expired(now=1100.0) == 0
    again = message("bob", sent.message_id, at=1101.0, frame=b"again")
    assert await store.queue.enqueue_many([again]) == [True]
    assert [m.frame for m in await store.queue.pending("bob")] == [b"again"]


async def test_an_expired_tombstone_not_yet_purged_no_longer_refuses(
    open_backend: OpenBackend,
) -> None:
    store = await open_backend(dedup_retention=100.0)
    sent = message("bob", at=990.0)
    await store.queue.enqueue_many([sent])
    await store.queue.ack("bob", [sent.message_id], now=1000.0)
    assert await store.queue.enqueue_many([message("bob", sent.message_id, at=1100.0)]) == [True]
    assert await store.queue.depth("bob") == 1
    # The old tombstone gave way to the new message: purging takes nothing pending.
    assert await store.queue.purge_expired(now=5000.0) == 0
    assert await store.queue.depth("bob") == 1


async def test_ack_without_now_uses_the_current_time(open_backend: OpenBackend) -> None:
    store = await open_backend(dedup_retention=60.0)
    sent = message("bob", at=time.time())
    await store.queue.enqueue_many([sent])
    before = time.time()
    await store.queue.ack("bob", [sent.message_id])
    assert await store.queue.enqueue_many([message("bob", sent.message_id, at=time.time())]) == [
        False
    ]
    assert await store.queue.purge_expired(now=before + 59.0) == 0
    assert await store.queue.purge_expired(now=time.time() + 60.0) == 1


async def test_a_second_ack_does_not_extend_retention(open_backend: OpenBackend) -> None:
    store = await open_backend(dedup_retention=100.0)
    sent = message("bob")
    await store.queue.enqueue_many([sent])
    await store.queue.ack("bob", [sent.message_id], now=1000.0)
    await store.queue.ack("bob", [sent.message_id], now=5000.0)
    assert await store.queue.purge_expired(now=1100.0) == 1


async def test_purge_keeps_pending_messages(store: Store) -> None:
    await store.queue.enqueue_many([message("bob"), message("alice")])
    assert await store.queue.purge_expired(now=1e12) == 0
    assert await store.queue.depth() == 2


# -- queue: remove and depth ---------------------------------------------------------


async def test_remove_drops_messages_without_a_tombstone(store: Store) -> None:
    sent = [message("bob"), message("alice"), message("bob")]
    await store.queue.enqueue_many(sent)
    assert await store.queue.remove([sent[0].message_id, sent[1].message_id, os.urandom(16)]) == 2
    assert [m.message_id for m in await store.queue.pending("bob")] == [sent[2].message_id]
    assert await store.queue.depth("alice") == 0
    assert await store.queue.enqueue_many([message("bob", sent[0].message_id)]) == [True]


async def test_remove_leaves_tombstones_in_place(store: Store) -> None:
    sent = message("bob")
    await store.queue.enqueue_many([sent])
    await store.queue.ack("bob", [sent.message_id], now=1000.0)
    assert await store.queue.remove([sent.message_id]) == 0
    assert await store.queue.enqueue_many([message("bob", sent.message_id, at=1001.0)]) == [False]


async def test_remove_of_nothing_removes_nothing(store: Store) -> None:
    await store.queue.enqueue_many([message("bob")])
    assert await store.queue.remove([]) == 0
    assert await store.queue.depth() == 1


async def test_depth_counts_pending_messages_per_recipient_and_in_total(store: Store) -> None:
    sent = [message("alice"), message("bob"), message("bob"), message("carol")]
    await store.queue.enqueue_many(sent)
    await store.queue.ack("carol", [sent[3].message_id])
    assert await store.queue.depth("alice") == 1
    assert await store.queue.depth("bob") == 2
    assert await store.queue.depth("carol") == 0
    assert await store.queue.depth("nobody") == 0
    assert await store.queue.depth() == 3


# -- lifecycle -----------------------------------------------------------------------


async def test_a_closed_store_refuses_every_call(store: Store) -> None:
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.agents.list()
    with pytest.raises(StoreError, match="closed"):
        await store.queue.enqueue_many([message("bob")])
    with pytest.raises(StoreError, match="closed"):
        await store.queue.depth()


async def test_closing_the_queue_closes_its_siblings(store: Store) -> None:
    await store.queue.close()
    with pytest.raises(StoreError):
        await store.agents.get_by_name("alice")


async def test_the_store_closes_when_its_context_ends(open_backend: OpenBackend) -> None:
    async with await open_backend() as store:
        await store.queue.enqueue_many([message("bob")])
    with pytest.raises(StoreError):
        await store.queue.depth()


# -- agents: key rotation and the directory generation ------------------------------


async def test_rotate_agreement_replaces_the_key_binding(store: Store) -> None:
    record = agent("alice")
    await store.agents.add(record)
    new_key, new_statement = os.urandom(32), os.urandom(64)
    await store.agents.rotate_agreement(
        record.did,
        agreement_key=new_key,
        agreement_statement=new_statement,
        agreement_issued_at=1_800_000_000,
    )
    fetched = await store.agents.get_by_name("alice")
    assert fetched is not None
    assert (fetched.agreement_key, fetched.agreement_statement) == (new_key, new_statement)
    assert fetched.agreement_issued_at == 1_800_000_000
    assert (fetched.roles, fetched.created_at) == (record.roles, record.created_at)


async def test_rotate_agreement_of_an_unknown_agent_raises_unknown_agent(store: Store) -> None:
    with pytest.raises(UnknownAgent):
        await store.agents.rotate_agreement(
            "did:key:znobody",
            agreement_key=os.urandom(32),
            agreement_statement=os.urandom(64),
            agreement_issued_at=1,
        )


async def test_rotate_agreement_refuses_a_revoked_agent(store: Store) -> None:
    record = agent("alice")
    await store.agents.add(record)
    await store.agents.revoke(record.did, at=5.0)
    with pytest.raises(StoreError, match="revoked"):
        await store.agents.rotate_agreement(
            record.did,
            agreement_key=os.urandom(32),
            agreement_statement=os.urandom(64),
            agreement_issued_at=1,
        )
    fetched = await store.agents.get_by_did(record.did)
    assert fetched is not None
    assert fetched.agreement_key == record.agreement_key


async def test_rotate_agreement_rejects_a_key_of_the_wrong_size(store: Store) -> None:
    record = agent("alice")
    await store.agents.add(record)
    with pytest.raises(ValueError, match="32 bytes"):
        await store.agents.rotate_agreement(
            record.did,
            agreement_key=os.urandom(31),
            agreement_statement=os.urandom(64),
            agreement_issued_at=1,
        )


async def test_generation_grows_strictly_with_every_change(store: Store) -> None:
    record = agent("alice")
    seen = [await store.agents.generation()]

    async def changed() -> None:
        now = await store.agents.generation()
        assert now > seen[-1]
        seen.append(now)

    await store.agents.add(record)
    await changed()
    await store.agents.set_roles(record.did, ["admin"])
    await changed()
    await store.agents.rotate_agreement(
        record.did,
        agreement_key=os.urandom(32),
        agreement_statement=os.urandom(64),
        agreement_issued_at=2,
    )
    await changed()
    await store.agents.revoke(record.did, at=9.0)
    await changed()


async def test_generation_is_unchanged_by_reads_and_failed_changes(store: Store) -> None:
    record = agent("alice")
    await store.agents.add(record)
    before = await store.agents.generation()
    await store.agents.get_by_did(record.did)
    await store.agents.list()
    with pytest.raises(DuplicateAgent):
        await store.agents.add(agent("alice"))
    with pytest.raises(UnknownAgent):
        await store.agents.set_roles("did:key:znobody", ["admin"])
    assert await store.agents.generation() == before


async def test_generation_does_not_go_back_when_reopened(open_backend: OpenBackend) -> None:
    first = await open_backend()
    await first.agents.add(agent("alice"))
    reached = await first.agents.generation()
    await first.close()
    second = await open_backend()
    if await second.agents.list():  # a durable backend: the same directory again
        assert await second.agents.generation() == reached
        await second.agents.add(agent("bob"))
        assert await second.agents.generation() > reached


# -- join tokens ----------------------------------------------------------------------


async def test_a_join_token_is_redeemed_once(store: Store) -> None:
    token = os.urandom(32)
    await store.tokens.create(token, name="carol", roles=("worker", "auditor"), expires_at=100.0)
    assert await store.tokens.redeem(token, now=50.0) == ("carol", ("worker", "auditor"))
    assert await store.tokens.redeem(token, now=50.0) is None


async def test_an_unknown_join_token_is_not_redeemed(store: Store) -> None:
    await store.tokens.create(os.urandom(32), name="carol", roles=(), expires_at=100.0)
    assert await store.tokens.redeem(os.urandom(32), now=1.0) is None


async def test_an_expired_join_token_is_not_redeemed(store: Store) -> None:
    token = os.urandom(32)
    await store.tokens.create(token, name="carol", roles=(), expires_at=100.0)
    assert await store.tokens.redeem(token, now=100.0) is None
    assert await store.tokens.redeem(token, now=99.0) == ("carol", ())


async def test_creating_a_join_token_twice_is_refused(store: Store) -> None:
    token = os.urandom(32)
    await store.tokens.create(token, name="carol", roles=(), expires_at=100.0)
    with pytest.raises(StoreError):
        await store.tokens.create(token, name="dave", roles=(), expires_at=200.0)
    assert await store.tokens.redeem(token, now=1.0) == ("carol", ())


async def test_concurrent_redemptions_of_one_token_succeed_once(store: Store) -> None:
    token = os.urandom(32)
    await store.tokens.create(token, name="carol", roles=(), expires_at=100.0)
    results = await asyncio.gather(*(store.tokens.redeem(token, now=1.0) for _ in range(8)))
    assert results.count(("carol", ())) == 1
    assert results.count(None) == 7


async def test_a_used_join_token_stays_used_when_reopened(open_backend: OpenBackend) -> None:
    first = await open_backend()
    token = os.urandom(32)
    await first.tokens.create(token, name="carol", roles=(), expires_at=100.0)
    assert await first.tokens.redeem(token, now=1.0) is not None
    await first.close()
    second = await open_backend()
    assert await second.tokens.redeem(token, now=1.0) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"token_hash": b""},
        {"name": ""},
        {"roles": "admin"},
        {"expires_at": float("nan")},
    ],
)
async def test_malformed_join_tokens_are_rejected(store: Store, bad: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "token_hash": os.urandom(32),
        "name": "carol",
        "roles": (),
        "expires_at": 100.0,
    }
    arguments.update(bad)
    token_hash = arguments.pop("token_hash")
    with pytest.raises(ValueError):
        await store.tokens.create(token_hash, **arguments)  # type: ignore[arg-type]
