"""The shared-memory SDK client (``trustwire.memory.client``).

First against :class:`FakeServer`, a small in-test stand-in for the coordinator's memory
API that stores the JSON blobs as given (enough to test the client's own logic: compare-
and-set, key caching, grant and revoke key handling, verification of what it reads). The
tests at the end run the real client against the real ``MemoryService`` through
``Api.handle`` (see ``test_against_the_real_service_*``).
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest

from trustwire.coordinator.api import Api, ApiRequest, Caller, raise_for
from trustwire.errors import (
    MemoryAccessDenied,
    MemoryExpired,
    MemoryNotFound,
    ProtocolError,
    SegmentRejected,
    SharedMemoryError,
    VersionConflict,
)
from trustwire.events import EventStream, MemorySink
from trustwire.identity.keys import AgentIdentity
from trustwire.memory.api import register_memory_routes
from trustwire.memory.client import MemoryInfo, SharedMemories, SharedMemory, Value
from trustwire.memory.crypto import (
    is_memory_id,
    open_segment,
    owner_matches,
    seal_segment,
    unwrap_key,
)
from trustwire.memory.model import WRAPPED_KEY_CT_SIZE, StoredSegment
from trustwire.memory.service import MemoryService
from trustwire.memory.store import MemoryStore, open_memory_store
from trustwire.policy import PolicyEngine, parse_policy
from trustwire.store.base import AgentRecord

CANARY = b"client-canary-5d1e"
LEVELS = {"read": 1, "write": 2, "admin": 3}
START = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def conflict(message: str, **attributes: int) -> VersionConflict:
    exc = VersionConflict(message)
    for name, value in attributes.items():
        setattr(exc, name, value)
    return exc


@dataclass
class FakeServer:
    """The memory API's rules, minimally: JSON blobs in dicts, grant checks, CAS."""

    clock: Clock
    memories: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, dict[int, dict[str, Any]]]] = field(default_factory=dict)
    segments: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def now_ms(self) -> int:
        return round(self.clock() * 1000)

    def _memory(self, memory_id: str, caller: str, need: str) -> dict[str, Any]:
        memory = self.memories.get(memory_id)
        if memory is None:
            raise MemoryNotFound("no such memory")
        if memory["expiresAt"] is not None and self.now_ms() >= memory["expiresAt"]:
            raise MemoryExpired("the memory has expired")
        if caller == memory["owner"]:
            return memory
        grant = next((g for g in memory["grants"] if g["agent"] == caller), None)
        if grant is None:
            raise MemoryAccessDenied("access denied")
        if grant["expiresAt"] is not None and self.now_ms() >= grant["expiresAt"]:
            raise MemoryExpired("the grant has expired")
        if LEVELS[grant["level"]] < LEVELS[need]:
            raise MemoryAccessDenied("access denied")
        return memory

    def _active(self, memory: dict[str, Any], agent: str) -> bool:
        if agent == memory["owner"]:
            return True
        grant = next((g for g in memory["grants"] if g["agent"] == agent), None)
        return grant is not None and (
            grant["expiresAt"] is None or self.now_ms() < grant["expiresAt"]
        )

    def handle(
        self, caller: str, method: str, path: str, query: Mapping[str, str], body: Any
    ) -> Any:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        assert parts[:2] == ["api", "memory"], path
        rest = parts[2:]
        self.calls.append((caller, method, "/".join(["{id}", *rest[1:]]) if rest else ""))
        self.requests.append((method, path, copy.deepcopy(body)))
        body = copy.deepcopy(body)
        if not rest:
            if method == "POST":
                memory_id = body["id"]
                assert memory_id not in self.memories
                wrapped = body["wrappedKey"]
                assert wrapped["agent"] == caller and wrapped["epoch"] == 0
                self.memories[memory_id] = {
                    "id": memory_id,
                    "owner": caller,
                    "type": body.get("type", "kv"),
                    "createdAt": self.now_ms(),
                    "expiresAt": body.get("expiresAt"),
                    "epoch": 0,
                    "quotas": {
                        "maxBytes": 16 << 20,
                        "maxSegments": 10_000,
                        **body.get("quotas", {}),
                    },
                    "grants": [],
                    "usage": {"bytes": 0, "segments": 0},
                }
                self.keys[memory_id] = {caller: {0: wrapped}}
                self.segments[memory_id] = {}
                return copy.deepcopy(self.memories[memory_id])
            assert method == "GET"
            return {
                "memories": [
                    copy.deepcopy(m) for m in self.memories.values() if self._active(m, caller)
                ]
            }
        memory_id, rest = rest[0], rest[1:]
        if not rest:
            if method == "GET":
                return copy.deepcopy(self._memory(memory_id, caller, "read"))
            assert method == "DELETE"
            self._memory(memory_id, caller, "admin")
            del self.memories[memory_id], self.keys[memory_id], self.segments[memory_id]
            return {"destroyed": True}
        if rest == ["keys"]:
            self._memory(memory_id, caller, "read")
            return {"keys": list(self.keys[memory_id].get(caller, {}).values())}
        if rest == ["segments"]:
            self._memory(memory_id, caller, "read")
            return {
                "segments": [
                    {k: s[k] for k in ("key", "version", "epoch", "writer", "size", "writtenAt")}
                    for s in self.segments[memory_id].values()
                ]
            }
        if rest[0] == "segments":
            key = rest[1]
            stored = self.segments[memory_id] if memory_id in self.segments else {}
            current = stored.get(key)
            version = current["version"] if current else 0
            if method == "GET":
                self._memory(memory_id, caller, "read")
                if current is None:
                    raise MemoryNotFound("no such segment")
                return copy.deepcopy(current)
            memory = self._memory(memory_id, caller, "write")
            if method == "PUT":
                segment = body["segment"]
                assert segment["writer"] == caller and segment["key"] == key
                if segment["epoch"] != memory["epoch"]:
                    raise conflict("stale epoch", current_epoch=memory["epoch"])
                if body["expectedVersion"] != version or segment["version"] != version + 1:
                    raise conflict("stale version", current_version=version)
                size = len(base64.b64decode(segment["ciphertext"]))
                stored[key] = {**segment, "writtenAt": self.now_ms(), "size": size}
                return {"key": key, "version": segment["version"]}
            assert method == "DELETE"
            if current is None or int(query["expectedVersion"]) != version:
                raise conflict("stale version", current_version=version)
            del stored[key]
            return {"deleted": True}
        if rest[0] == "grants":
            memory = self._memory(memory_id, caller, "admin")
            if method == "POST":
                agent = body["agent"]
                epochs = sorted(k["epoch"] for k in body["wrappedKeys"])
                assert epochs == list(range(memory["epoch"] + 1)), epochs
                assert all(k["agent"] == agent for k in body["wrappedKeys"])
                memory["grants"] = [g for g in memory["grants"] if g["agent"] != agent] + [
                    {
                        "agent": agent,
                        "level": body["level"],
                        "expiresAt": body.get("expiresAt"),
                        "grantedBy": caller,
                    }
                ]
                self.keys[memory_id][agent] = {k["epoch"]: k for k in body["wrappedKeys"]}
                return copy.deepcopy(memory)
            assert method == "DELETE"
            agent = rest[1]
            if body["epoch"] != memory["epoch"] + 1:
                raise conflict("stale epoch", current_epoch=memory["epoch"])
            memory["grants"] = [g for g in memory["grants"] if g["agent"] != agent]
            expected = {memory["owner"]} | {
                g["agent"] for g in memory["grants"] if self._active(memory, g["agent"])
            }
            given = {k["agent"] for k in body["wrappedKeys"]}
            assert given == expected, (given, expected)
            assert all(k["epoch"] == body["epoch"] for k in body["wrappedKeys"])
            memory["epoch"] = body["epoch"]
            for k in body["wrappedKeys"]:
                self.keys[memory_id].setdefault(k["agent"], {})[k["epoch"]] = k
            self.keys[memory_id].pop(agent, None)
            return copy.deepcopy(memory)
        raise AssertionError(f"unexpected {method} {path}")


class FakeTransport:
    def __init__(self, server: FakeServer, caller: str) -> None:
        self.server, self.caller = server, caller

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        # Round-trip through JSON, as the wire does.
        body = json.loads(json.dumps(body))
        answer = self.server.handle(self.caller, method, path, query or {}, body)
        return json.loads(json.dumps(answer))


class Directory:
    """The registry-verified key lookup the SDK passes as ``peer_keys``."""

    def __init__(self, *identities: AgentIdentity) -> None:
        self.by_name = {i.name: i for i in identities} | {i.did: i for i in identities}
        self.lookups: list[str] = []

    async def __call__(self, who: str) -> tuple[str, bytes]:
        self.lookups.append(who)
        identity = self.by_name[who]
        return identity.did, identity.agreement.public


@dataclass
class World:
    clock: Clock
    server: FakeServer
    directory: Directory
    ids: dict[str, AgentIdentity]

    def client(self, name: str) -> SharedMemories:
        identity = self.ids[name]
        return SharedMemories(
            FakeTransport(self.server, identity.did), identity, self.directory, clock=self.clock
        )

    def did(self, name: str) -> str:
        return self.ids[name].did


IDS = {n: AgentIdentity.generate(n) for n in ("alice", "bob", "carol", "dave")}


@pytest.fixture
def world() -> World:
    clock = Clock()
    return World(clock, FakeServer(clock), Directory(*IDS.values()), IDS)


# --- create, write, read ---------------------------------------------------------------


async def test_create_write_read_round_trip(world: World) -> None:
    alice = world.client("alice")
    mem = await alice.create(type="notes", expires=timedelta(hours=1), quotas={"maxSegments": 5})
    assert isinstance(mem, SharedMemory)
    assert mem.info.owner == world.did("alice") and mem.info.type == "notes"
    assert mem.info.expires_at == START + 3600 and mem.info.epoch == 0
    assert mem.info.max_segments == 5 and mem.info.grants == ()
    assert await mem.write("plan", CANARY) == 1
    assert await mem.write("plan", "second, as text") == 2
    value = await mem.read("plan")
    assert value == Value(
        data=b"second, as text",
        version=2,
        writer=world.did("alice"),
        written_at=START,
        key="plan",
        epoch=0,
    )
    assert value.text == "second, as text" and "second" not in repr(value)


async def test_the_coordinator_holds_no_plaintext_and_no_data_key(world: World) -> None:
    alice = world.client("alice")
    mem = await alice.create()
    await mem.write("k", CANARY)
    await mem.grant("bob", "read")
    dump = json.dumps([world.server.memories, world.server.keys, world.server.segments])
    assert CANARY.decode() not in dump and base64.b64encode(CANARY).decode() not in dump
    data_key = alice._keys[mem.id][0]
    assert base64.b64encode(data_key).decode() not in dump and data_key.hex() not in dump
    assert data_key.hex() not in repr(mem) + repr(alice)


async def test_create_chooses_the_id_its_wrapped_key_is_bound_to(world: World) -> None:
    mem = await world.client("alice").create()
    assert is_memory_id(mem.id) and owner_matches(mem.id, world.did("alice"))
    assert not owner_matches(mem.id, world.did("bob"))
    method, _, body = world.server.requests[0]
    assert method == "POST" and body["id"] == mem.id
    key = unwrap_key(
        body["wrappedKey"],
        memory_id=mem.id,
        agent_did=world.did("alice"),
        private=IDS["alice"].agreement,
        owner=world.did("alice"),
    )
    assert len(key.data_key) == 32 and key.wrapper == world.did("alice")
    assert key.admin_certificate is None


async def test_an_owner_the_memory_id_does_not_name_is_refused(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "read")
    theirs = await bob.open(mem.id)
    # The coordinator claims another owner (one it could sign keys as).
    world.server.memories[mem.id]["owner"] = world.did("carol")
    for attempt in (bob.open(mem.id), theirs.refresh()):
        with pytest.raises(ProtocolError, match="owner the memory id does not name"):
            await attempt
    assert theirs.info.owner == world.did("alice")  # the handle kept what it had checked


async def test_a_uuid_memory_id_is_refused_by_the_client(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "read")
    legacy = str(uuid.uuid4())
    world.server.memories[legacy] = {**world.server.memories[mem.id], "id": legacy}
    with pytest.raises(ProtocolError, match="owner the memory id does not name"):
        await bob.open(legacy)


async def test_a_create_answer_naming_another_owner_is_refused(world: World) -> None:
    alice = world.client("alice")
    original = world.server.handle

    def lying(caller: str, method: str, path: str, query: Any, body: Any) -> Any:
        answer = original(caller, method, path, query, body)
        return {**answer, "owner": world.did("carol")}

    world.server.handle = lying  # type: ignore[method-assign]
    with pytest.raises(ProtocolError, match="owner the memory id does not name"):
        await alice.create()


async def test_open_list_and_refresh(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.write("a", b"1")
    await mem.write("b", b"22")
    assert [m.id for m in await alice.list()] == [mem.id]
    assert await bob.list() == []
    await mem.grant("bob", "write")
    assert [m.id for m in await bob.list()] == [mem.id]
    theirs = await bob.open(mem.id)
    assert theirs.info.grant_of(world.did("bob")) is not None
    listing = await theirs.list()
    assert [(s.key, s.version, s.size, s.writer) for s in listing] == [
        ("a", 1, 17, world.did("alice")),
        ("b", 1, 18, world.did("alice")),
    ]
    with pytest.raises(ValueError, match="m1-"):
        await bob.open("not-an-id")


# --- admins ------------------------------------------------------------------------------


def _open_stored(world: World, memory_id: str, name: str, epoch: int) -> Any:
    return unwrap_key(
        world.server.keys[memory_id][world.did(name)][epoch],
        memory_id=memory_id,
        agent_did=world.did(name),
        private=IDS[name].agreement,
        owner=world.did("alice"),
    )


async def test_only_the_owner_appoints_admins_and_an_admin_proves_it_in_its_keys(
    world: World,
) -> None:
    alice, bob, carol = world.client("alice"), world.client("bob"), world.client("carol")
    mem = await alice.create()
    await mem.write("plan", CANARY)
    await mem.grant("bob", "admin", expires=START + 600)
    # Bob's key carries the owner's certificate that he is an admin (until his expiry).
    certificate = _open_stored(world, mem.id, "bob", 0).admin_certificate
    assert certificate is not None and certificate.expires_ms == round((START + 600) * 1000)
    assert certificate.valid_for(
        memory_id=mem.id, admin_did=world.did("bob"), owner_did=world.did("alice")
    )

    theirs = await bob.open(mem.id)
    before = len(world.server.calls)
    with pytest.raises(MemoryAccessDenied, match="owner"):
        await theirs.grant("carol", "admin")
    assert len(world.server.calls) == before  # refused before any request

    await theirs.grant("carol", "write")
    carols = _open_stored(world, mem.id, "carol", 0)
    assert carols.wrapper == world.did("bob") and carols.admin_certificate is None
    assert (await (await carol.open(mem.id)).read("plan")).data == CANARY

    # Bob revokes dave's way in: the new epoch's keys, wrapped by bob, open for everyone.
    await mem.grant("dave", "read")
    await theirs.revoke("dave")
    for name in ("alice", "bob", "carol"):
        opened = _open_stored(world, mem.id, name, 1)
        assert opened.wrapper == world.did("bob")
    # Alice's revocation hands bob a fresh certificate in the new epoch's key.
    await mem.revoke("carol")
    renewed = _open_stored(world, mem.id, "bob", 2)
    assert renewed.wrapper == world.did("alice") and renewed.admin_certificate == certificate


async def test_an_admin_the_owner_did_not_appoint_cannot_hand_out_keys(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "read")
    # The coordinator lists bob as an admin; his keys carry no certificate from alice.
    world.server.memories[mem.id]["grants"][0]["level"] = "admin"
    theirs = await bob.open(mem.id)
    with pytest.raises(SharedMemoryError, match="appointed by the owner"):
        await theirs.grant("carol", "read")
    with pytest.raises(SharedMemoryError, match="appointed by the owner"):
        await theirs.revoke("alice")
    assert world.did("carol") not in world.server.keys[mem.id]


async def test_an_expired_admin_appointment_is_not_used(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "admin", expires=START + 60)
    theirs = await bob.open(mem.id)
    # The coordinator keeps bob's grant alive past the expiry the owner certified.
    world.server.memories[mem.id]["grants"][0]["expiresAt"] = None
    world.clock.now += 61
    with pytest.raises(SharedMemoryError, match="expired"):
        await theirs.grant("carol", "read")


# --- compare-and-set ---------------------------------------------------------------------


async def test_a_stale_expected_version_is_refused(world: World) -> None:
    mem = await world.client("alice").create()
    assert await mem.write("k", b"v1", expected_version=0) == 1
    with pytest.raises(VersionConflict):
        await mem.write("k", b"again", expected_version=0)
    assert await mem.write("k", b"v2", expected_version=1) == 2
    assert (await mem.read("k")).data == b"v2"


async def test_a_write_without_expected_version_still_refuses_a_concurrent_writer(
    world: World,
) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "write")
    await mem.write("k", b"v1")
    bobs = await bob.open(mem.id)

    # Bob's write lands between Alice's version read and her conditional write.
    original = world.server.handle

    def interleaved(caller: str, method: str, path: str, query: Any, body: Any) -> Any:
        answer = original(caller, method, path, query, body)
        if caller == world.did("alice") and method == "GET" and path.endswith("/segments/k"):
            world.server.handle = original  # type: ignore[method-assign]
            original(world.did("bob"), "PUT", path, {}, bobs_put)
        return answer

    bobs_put = {
        "expectedVersion": 1,
        "segment": seal_segment(
            IDS["bob"],
            memory_id=mem.id,
            key="k",
            version=2,
            epoch=0,
            data_key=await bobs._key_for(0),
            value=b"bob's",
        ),
    }
    world.server.handle = interleaved  # type: ignore[method-assign]
    with pytest.raises(VersionConflict):
        await mem.write("k", b"alice's")
    value = await mem.read("k")
    assert (value.data, value.version, value.writer) == (b"bob's", 2, world.did("bob"))


async def test_delete_is_compare_and_set(world: World) -> None:
    mem = await world.client("alice").create()
    await mem.write("k", b"v1")
    await mem.write("k", b"v2")
    with pytest.raises(VersionConflict):
        await mem.delete("k", expected_version=1)
    await mem.delete("k")
    assert await mem.list() == []
    assert await mem.write("k", b"new") == 1  # absent again: version starts over


# --- keys --------------------------------------------------------------------------------


async def test_wrapped_keys_are_fetched_once_per_epoch_and_cached(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "read")
    await mem.write("a", b"1")
    await mem.write("b", b"2")
    theirs = await bob.open(mem.id)
    for _ in range(3):
        await theirs.read("a")
        await theirs.read("b")
    key_fetches = [c for c in world.server.calls if c[2] == "{id}/keys"]
    assert key_fetches == [(world.did("bob"), "GET", "{id}/keys")]
    # A second handle on the same memory shares the cache.
    await (await bob.open(mem.id)).read("a")
    assert len([c for c in world.server.calls if c[2] == "{id}/keys"]) == 1


async def test_grant_wraps_every_epoch_for_the_grantee(world: World) -> None:
    alice, carol = world.client("alice"), world.client("carol")
    mem = await alice.create()
    await mem.grant("bob", "read")
    await mem.write("old", b"epoch 0")
    await mem.revoke("bob")
    await mem.write("new", b"epoch 1")
    await mem.grant("carol", "read", expires=START + 60)
    _, _, body = world.server.requests[-1]
    assert body["agent"] == world.did("carol") and body["expiresAt"] == round((START + 60) * 1000)
    assert sorted(k["epoch"] for k in body["wrappedKeys"]) == [0, 1]
    for k in body["wrappedKeys"]:
        opened = unwrap_key(
            k,
            memory_id=mem.id,
            agent_did=world.did("carol"),
            private=IDS["carol"].agreement,
            owner=world.did("alice"),
        )
        assert opened.data_key == alice._keys[mem.id][k["epoch"]]
        assert opened.admin_certificate is None  # a read grant carries no certificate
    theirs = await carol.open(mem.id)
    assert (await theirs.read("old")).data == b"epoch 0"
    assert (await theirs.read("new")).data == b"epoch 1"


async def test_grant_needs_the_keys_of_every_epoch(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "admin")
    theirs = await bob.open(mem.id)
    # Bob's wrapped key for epoch 0 is damaged on the server: he cannot hand it on.
    stored = world.server.keys[mem.id][world.did("bob")][0]
    stored["ct"] = base64.b64encode(bytes(WRAPPED_KEY_CT_SIZE)).decode()
    with pytest.raises(SharedMemoryError, match="epoch"):
        await theirs.grant("carol", "read")


async def test_revoke_rewraps_for_the_owner_and_remaining_unexpired_grantees(world: World) -> None:
    alice = world.client("alice")
    mem = await alice.create()
    await mem.grant("bob", "read")
    await mem.grant("carol", "write")
    await mem.grant("dave", "read", expires=timedelta(minutes=5))
    world.clock.now += 600  # dave's grant has expired
    world.directory.lookups.clear()
    info = await mem.revoke("bob")
    assert info.epoch == 1 and info.grant_of(world.did("bob")) is None
    _, path, body = world.server.requests[-1]
    assert unquote(path).endswith(f"/grants/{world.did('bob')}")
    assert body["epoch"] == 1
    assert sorted(k["agent"] for k in body["wrappedKeys"]) == sorted(
        [world.did("alice"), world.did("carol")]
    )
    # Keys were looked up (registry-verified) for the other remaining grantee only.
    assert world.directory.lookups == ["bob", world.did("carol")]
    new_key = alice._keys[mem.id][1]
    assert new_key != alice._keys[mem.id][0]
    for k in body["wrappedKeys"]:
        who = next(i for i in IDS.values() if i.did == k["agent"])
        owner = world.did("alice")
        assert (
            unwrap_key(
                k, memory_id=mem.id, agent_did=who.did, private=who.agreement, owner=owner
            ).data_key
            == new_key
        )
        for other in ("bob", "dave"):
            with pytest.raises(SegmentRejected):
                unwrap_key(
                    k,
                    memory_id=mem.id,
                    agent_did=who.did,
                    private=IDS[other].agreement,
                    owner=owner,
                )


async def test_a_revoked_agent_is_refused_and_its_old_key_cannot_open_new_segments(
    world: World,
) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "read")
    await mem.write("plan", b"before")
    theirs = await bob.open(mem.id)
    assert (await theirs.read("plan")).data == b"before"  # Bob now holds the epoch-0 key
    await mem.revoke(world.did("bob"))
    await mem.write("plan", CANARY)
    with pytest.raises(MemoryAccessDenied):
        await theirs.read("plan")
    # Even handed the new ciphertext, Bob's keys (epoch 0 only) do not open it.
    stolen = world.server.segments[mem.id]["plan"]
    assert stolen["epoch"] == 1
    bobs_keys = bob._keys[mem.id]
    assert set(bobs_keys) == {0}
    with pytest.raises(SegmentRejected, match="no data key"):
        open_segment(stolen, memory_id=mem.id, data_key_for=lambda e: bobs_keys[e])
    with pytest.raises(SegmentRejected, match="decryption failed"):
        open_segment(stolen, memory_id=mem.id, data_key_for=lambda e: bobs_keys[0])


async def test_a_write_on_a_stale_epoch_is_resealed_under_the_new_key(world: World) -> None:
    alice, carol = world.client("alice"), world.client("carol")
    mem = await alice.create()
    await mem.grant("bob", "read")
    await mem.grant("carol", "admin")
    await mem.write("k", b"v1")
    assert mem.info.epoch == 0
    await (await carol.open(mem.id)).revoke("bob")  # Carol rotates; Alice's handle is stale
    assert await mem.write("k", b"v2") == 2
    assert world.server.segments[mem.id]["k"]["epoch"] == 1 and mem.info.epoch == 1
    assert (await mem.read("k")).data == b"v2"


async def test_destroy_forgets_the_keys(world: World) -> None:
    alice = world.client("alice")
    mem = await alice.create()
    await mem.write("k", b"v")
    await mem.destroy()
    assert mem.id not in alice._keys and mem.id not in world.server.memories
    with pytest.raises(MemoryNotFound):
        await alice.open(mem.id)


# --- what the client refuses -------------------------------------------------------------


async def test_a_tampered_stored_segment_is_rejected_by_the_reader(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "read")
    await mem.write("k", CANARY)
    stored = world.server.segments[mem.id]["k"]
    raw = bytearray(base64.b64decode(stored["ciphertext"]))
    raw[0] ^= 1
    stored["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SegmentRejected) as info:
        await (await bob.open(mem.id)).read("k")
    assert CANARY.decode() not in str(info.value)


async def test_a_segment_served_for_another_key_is_rejected(world: World) -> None:
    mem = await world.client("alice").create()
    await mem.write("public", b"fine to show")
    await mem.write("secret", b"other")
    segments = world.server.segments[mem.id]
    segments["public"] = segments["secret"]  # a valid, signed segment — of another key
    with pytest.raises(SegmentRejected, match="another key"):
        await mem.read("public")


async def test_a_wrapped_key_for_someone_else_is_not_used(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "read")
    await mem.write("k", b"v")
    # The server hands Bob Alice's wrapped key instead of his own.
    keys = world.server.keys[mem.id]
    keys[world.did("bob")] = {0: keys[world.did("alice")][0]}
    with pytest.raises(SegmentRejected, match="no data key"):
        await (await bob.open(mem.id)).read("k")


async def test_malformed_answers_raise_protocol_error(world: World) -> None:
    alice = world.client("alice")
    mem = await alice.create()

    async def broken(*args: Any, **kwargs: Any) -> Any:
        return {"id": mem.id, "owner": 7}

    mem._transport.call = broken  # type: ignore[method-assign]
    with pytest.raises(ProtocolError):
        await mem.refresh()
    with pytest.raises(ProtocolError):
        MemoryInfo.from_json([])


async def test_expiry_forms(world: World) -> None:
    alice = world.client("alice")
    at = datetime.fromtimestamp(START + 120, tz=UTC)
    assert (await alice.create(expires=at)).info.expires_at == START + 120
    assert (await alice.create(expires=START + 5)).info.expires_at == START + 5
    with pytest.raises(ValueError, match="future"):
        await alice.create(expires=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="timezone"):
        await alice.create(expires=datetime(2030, 1, 1))  # naive
    with pytest.raises(ValueError, match="quota"):
        await alice.create(quotas={"bytes": 5})


async def test_expired_grants_and_memories_stop_working(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    mem = await alice.create(expires=timedelta(hours=1))
    await mem.write("k", b"v")
    await mem.grant("bob", "read", expires=timedelta(minutes=1))
    theirs = await bob.open(mem.id)
    assert (await theirs.read("k")).data == b"v"
    world.clock.now += 61
    with pytest.raises(MemoryExpired):
        await theirs.read("k")
    world.clock.now += 3600
    with pytest.raises(MemoryExpired):
        await mem.read("k")


async def test_invalid_arguments_are_refused_before_any_request(world: World) -> None:
    mem = await world.client("alice").create()
    before = len(world.server.calls)
    with pytest.raises(ValueError):
        await mem.write("", b"v")
    with pytest.raises(ValueError):
        await mem.write("k", bytes(128 * 1024 + 1), expected_version=0)
    with pytest.raises(ValueError, match="level"):
        await mem.grant("bob", "owner")  # type: ignore[arg-type]
    assert len(world.server.calls) == before


# --- the real client against the real service ------------------------------------------
#
# The real MemoryService behind Api.handle, reached through a transport that builds the
# ApiRequest objects the SDK's connection would (one Caller per test identity), on both
# store backends.


POLICY = """version: 1
policies:
  communication:
    default: deny
    rules:
      - id: memory-for-all
        effect: allow
        from: "*"
        to: "*"
        actions: [memory.read, memory.write]
  access_control:
    roles:
      worker: w
"""


class ApiTransport:
    """Requests as the SDK sends them: an ApiRequest from this caller, through Api.handle."""

    def __init__(self, api: Api, identity: AgentIdentity) -> None:
        self.api = api
        self.caller = Caller(did=identity.did, name=identity.name, roles=("worker",))

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        request = ApiRequest(
            caller=self.caller,
            method=method,
            path=path,
            query=dict(query or {}),
            body=json.loads(json.dumps(body)),
        )
        response = await self.api.handle(request)
        raise_for(response)
        return json.loads(json.dumps(response.body))


@dataclass
class Deployment:
    clock: Clock
    store: MemoryStore
    api: Api
    directory: dict[str, AgentRecord]
    sink: MemorySink

    async def peer_keys(self, who: str) -> tuple[str, bytes]:
        record = self.directory.get(who) or next(
            r for r in self.directory.values() if r.name == who
        )
        return record.did, record.agreement_key

    def client(self, name: str) -> SharedMemories:
        identity = IDS[name]
        return SharedMemories(
            ApiTransport(self.api, identity), identity, self.peer_keys, clock=self.clock
        )


@pytest.fixture(params=["memory", "sqlite"])
async def deployment(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    clock = Clock()
    url = "memory://" if request.param == "memory" else f"sqlite://{tmp_path / 'memory.db'}"
    store = await open_memory_store(url)
    directory = {
        i.did: AgentRecord(
            name=i.name,
            did=i.did,
            roles=("worker",),
            agreement_key=i.agreement.public,
            agreement_statement=i.agreement_statement(issued_at=i.issued_at),
            agreement_issued_at=i.issued_at,
            created_at=START - 86400,
        )
        for i in IDS.values()
    }
    sink = MemorySink()
    service = MemoryService(
        store,
        policy=PolicyEngine(parse_policy(POLICY)),
        agents=directory.get,
        events=EventStream([sink]),
        clock=clock,
    )
    api = Api()
    register_memory_routes(api, service)
    yield Deployment(clock, store, api, directory, sink)
    await store.close()


async def test_against_the_real_service_grants_reads_revokes_and_rotates(
    deployment: Deployment, tmp_path: Any
) -> None:
    alice, bob, carol = (deployment.client(n) for n in ("alice", "bob", "carol"))
    mem = await alice.create(expires=timedelta(hours=1))
    await mem.write("plan", CANARY)
    await mem.grant("bob", "read")
    theirs = await bob.open(mem.id)
    assert (await theirs.read("plan")).data == CANARY
    info = await mem.revoke("bob")
    assert info.epoch == 1
    await mem.write("plan", b"after the revocation")
    await mem.grant("carol", "read")
    carols = await carol.open(mem.id)
    value = await carols.read("plan")
    assert (value.data, value.version, value.epoch) == (b"after the revocation", 2, 1)
    for path in tmp_path.iterdir():  # the SQLite backend's files, when it is the one used
        assert CANARY not in path.read_bytes()


async def test_against_the_real_service_a_reader_without_a_grant_gets_nothing(
    deployment: Deployment,
) -> None:
    alice, carol = deployment.client("alice"), deployment.client("carol")
    mem = await alice.create()
    await mem.write("plan", CANARY)
    with pytest.raises(MemoryAccessDenied):
        await carol.open(mem.id)
    transport = ApiTransport(deployment.api, IDS["carol"])
    for path in (f"/api/memory/{mem.id}/keys", f"/api/memory/{mem.id}/segments/plan"):
        with pytest.raises(MemoryAccessDenied):
            await transport.call("GET", path)
    # And had the coordinator handed Carol the ciphertext, she holds no key for it.
    assert await deployment.store.wrapped_keys(mem.id, IDS["carol"].did) == []
    stored = await deployment.store.get_segment(mem.id, "plan")
    assert stored is not None and CANARY not in stored.ciphertext


async def test_against_the_real_service_an_expired_grant_gets_nothing(
    deployment: Deployment,
) -> None:
    alice, bob = deployment.client("alice"), deployment.client("bob")
    mem = await alice.create()
    await mem.write("plan", b"v1")
    await mem.grant("bob", "write", expires=timedelta(minutes=5))
    theirs = await bob.open(mem.id)
    assert (await theirs.read("plan")).data == b"v1"
    deployment.clock.now += 300  # the grant stops at its expiry exactly
    with pytest.raises(MemoryAccessDenied):
        await theirs.read("plan")
    with pytest.raises(MemoryAccessDenied):
        await theirs.write("plan", b"v2", expected_version=1)
    assert (await mem.read("plan")).data == b"v1"


async def test_an_expired_grant_cannot_decrypt_what_the_owner_writes_after_its_expiry(
    deployment: Deployment,
) -> None:
    alice, bob = deployment.client("alice"), deployment.client("bob")
    mem = await alice.create()
    await mem.write("plan", b"before")
    await mem.grant("bob", "read", expires=timedelta(minutes=5))
    theirs = await bob.open(mem.id)
    assert (await theirs.read("plan")).data == b"before"
    bobs_keys = dict(theirs._keys)  # everything bob could ever decrypt with
    deployment.clock.now += 300
    await mem.write("plan", CANARY)  # retires the expired grant first: a new key epoch
    assert mem.info.epoch == 1 and mem.info.grant_of(IDS["bob"].did) is None
    stored = await deployment.store.get_segment(mem.id, "plan")
    assert stored is not None and stored.epoch == 1
    segment = (await ApiTransport(deployment.api, IDS["alice"]).call(
        "GET", f"/api/memory/{mem.id}/segments/plan"
    ))  # fmt: skip
    with pytest.raises(SegmentRejected):
        open_segment(segment, memory_id=mem.id, data_key_for=lambda epoch: bobs_keys[epoch])
    assert (await mem.read("plan")).data == CANARY


async def test_against_the_real_service_a_revoked_agent_cannot_read_what_follows(
    deployment: Deployment,
) -> None:
    alice, bob = deployment.client("alice"), deployment.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "read")
    await mem.write("plan", b"before")
    theirs = await bob.open(mem.id)
    assert (await theirs.read("plan")).data == b"before"
    await mem.revoke("bob")
    await mem.write("plan", CANARY)
    with pytest.raises(MemoryAccessDenied):
        await theirs.read("plan")
    with pytest.raises(MemoryAccessDenied):
        await ApiTransport(deployment.api, IDS["bob"]).call("GET", f"/api/memory/{mem.id}/keys")
    # Bob's old key against the post-revocation ciphertext, straight from the store.
    stored = await deployment.store.get_segment(mem.id, "plan")
    assert stored is not None and stored.epoch == 1
    bobs_keys = bob._keys[mem.id]
    assert set(bobs_keys) == {0}
    for lookup in (lambda e: bobs_keys[e], lambda e: bobs_keys[0]):
        with pytest.raises(SegmentRejected):
            open_segment(stored.to_json(), memory_id=mem.id, data_key_for=lookup)


async def test_against_the_real_service_a_tampered_stored_segment_is_rejected(
    deployment: Deployment,
) -> None:
    alice, bob = deployment.client("alice"), deployment.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "read")
    await mem.write("plan", CANARY)
    theirs = await bob.open(mem.id)
    stored = await deployment.store.get_segment(mem.id, "plan")
    assert stored is not None
    flipped = bytearray(stored.ciphertext)
    flipped[0] ^= 1
    for tampered in (
        {"ciphertext": bytes(flipped)},
        {"hash": bytes(32)},
        {"signature": bytes(64)},
    ):
        current = await deployment.store.get_segment(mem.id, "plan")
        assert current is not None
        # Rewrite it at rest, beneath the service's checks, as a compromised store could.
        assert await deployment.store.delete_segment(mem.id, "plan", expected_version=1)
        await deployment.store.put_segment(
            mem.id,
            StoredSegment(
                **{
                    **{f: getattr(stored, f) for f in ("key", "version", "epoch", "writer")},
                    **{f: getattr(stored, f) for f in ("nonce", "ciphertext", "hash", "signature")},
                    "written_at": stored.written_at,
                    **tampered,
                }
            ),
            expected_version=0,
            agent_max_bytes=1 << 30,
            agent_max_segments=1 << 20,
        )
        with pytest.raises(SegmentRejected) as info:
            await theirs.read("plan")
        assert CANARY.decode() not in str(info.value)


async def test_against_the_real_service_a_stale_version_write_is_refused(
    deployment: Deployment,
) -> None:
    alice, bob = deployment.client("alice"), deployment.client("bob")
    mem = await alice.create()
    await mem.grant("bob", "write")
    assert await mem.write("plan", b"v1") == 1
    theirs = await bob.open(mem.id)
    assert await theirs.write("plan", b"bob's v2", expected_version=1) == 2
    with pytest.raises(VersionConflict) as info:
        await mem.write("plan", b"alice's v2", expected_version=1)
    assert getattr(info.value, "current_version", None) == 2
    with pytest.raises(VersionConflict):
        await mem.write("plan", b"new", expected_version=0)
    value = await mem.read("plan")
    assert (value.data, value.writer) == (b"bob's v2", IDS["bob"].did)


def test_the_package_exports_are_sorted_and_resolve() -> None:
    import trustwire.memory as package

    assert package.__all__ == sorted(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert package.SharedMemories is SharedMemories
    with pytest.raises(AttributeError):
        package.MemoryService  # noqa: B018 - server names are imported from their modules


async def test_listing_many_segments_goes_page_by_page(deployment: Deployment) -> None:
    """Over the agent's connection an answer must fit one frame: a memory with more
    segments than a page is listed in pages, and the client follows them all."""
    alice = deployment.client("alice")
    mem = await alice.create()
    keys = [f"k{i:04d}-" + "x" * 200 for i in range(450)]
    for key in keys:
        await mem.write(key, b"v", expected_version=0)
    transport = ApiTransport(deployment.api, IDS["alice"])
    first = await transport.call("GET", f"/api/memory/{mem.id}/segments")
    assert len(first["segments"]) == 200 and first["next"] == keys[199]
    assert len(json.dumps(first)) < 255 * 1024
    listed = await mem.list()
    assert [s.key for s in listed] == keys
    last = await transport.call(
        "GET", f"/api/memory/{mem.id}/segments", query={"after": keys[-2], "limit": "5"}
    )
    assert [s["key"] for s in last["segments"]] == [keys[-1]] and last["next"] is None
