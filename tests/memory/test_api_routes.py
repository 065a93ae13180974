"""The /api/memory routes through Api.handle: every route's status codes and bodies, the
OpenAPI document, and the SDK client end to end against the real routes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from _fixtures import T0, Agent, World, open_backend, seal, wrapped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustwire.coordinator.api import Api, ApiRequest, ApiResponse, Caller, raise_for
from trustwire.errors import (
    MemoryAccessDenied,
    MemoryQuotaExceeded,
    SegmentRejected,
    VersionConflict,
)
from trustwire.identity.keys import AgentIdentity
from trustwire.memory.api import register_memory_routes
from trustwire.memory.client import SharedMemories
from trustwire.memory.crypto import memory_id_for, seal_segment
from trustwire.memory.model import WRAPPED_KEY_CT_SIZE, MemoryLimits, Segment
from trustwire.memory.store import InMemoryMemoryStore
from trustwire.store.base import AgentRecord


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_json(agent: str, epoch: int) -> dict[str, Any]:
    return wrapped(agent, epoch).to_json()


def segment_json(segment: Segment) -> dict[str, Any]:
    return {
        "key": segment.key,
        "version": segment.version,
        "epoch": segment.epoch,
        "writer": segment.writer,
        "nonce": b64(segment.nonce),
        "ciphertext": b64(segment.ciphertext),
        "hash": b64(segment.hash),
        "signature": b64(segment.signature),
    }


class Client:
    """Calls Api.handle as one agent, with JSON round trips like a real transport."""

    def __init__(self, api: Api, agent: Agent) -> None:
        self.api = api
        self.caller = Caller(agent.did, agent.name, agent.record.roles)

    async def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        sent = None if body is None else json.loads(json.dumps(body))
        response = await self.api.handle(
            ApiRequest(self.caller, method, path, dict(query or {}), sent)
        )
        return ApiResponse(response.status, json.loads(json.dumps(response.body)))


class Setup:
    def __init__(self, world: World) -> None:
        self.world = world
        self.api = Api()
        register_memory_routes(self.api, world.service)
        self.owner = world.add("owner")
        self.reader = world.add("reader")
        self.writer = world.add("writer")
        self.stranger = world.add("stranger")

    def client(self, agent: Agent) -> Client:
        return Client(self.api, agent)

    async def memory(self, **body: Any) -> dict[str, Any]:
        response = await self.client(self.owner)(
            "POST", "/api/memory", {"wrappedKey": key_json(self.owner.did, 0), **body}
        )
        assert response.status == 201, response.body
        memory_id = response.body["id"]
        for agent, level in ((self.reader, "read"), (self.writer, "write")):
            granted = await self.client(self.owner)(
                "POST",
                f"/api/memory/{memory_id}/grants",
                {"agent": agent.did, "level": level, "wrappedKeys": [key_json(agent.did, 0)]},
            )
            assert granted.status == 201, granted.body
        return dict(granted.body)

    async def put(
        self, agent: Agent, memory_id: str, key: str, expected: int = 0, **kw: Any
    ) -> ApiResponse:
        segment = seal(memory_id, agent, key, version=expected + 1, **kw)
        path = f"/api/memory/{memory_id}/segments/{key}"
        return await self.client(agent)(
            "PUT", path, {"expectedVersion": expected, "segment": segment_json(segment)}
        )


@pytest.fixture
async def setup() -> Setup:
    return Setup(World(InMemoryMemoryStore()))


# -- memories ------------------------------------------------------------------------------


async def test_create_answers_201_with_the_memory(setup: Setup) -> None:
    memory_id = "0c9d1f3e-8c44-4d52-9d6f-1f0b2a3c4d5e"
    response = await setup.client(setup.owner)(
        "POST",
        "/api/memory",
        {
            "id": memory_id,
            "type": "notes",
            "expiresAt": int(T0 * 1000) + 60_000,
            "quotas": {"maxBytes": 4096},
            "wrappedKey": key_json(setup.owner.did, 0),
        },
    )
    assert response.status == 201
    assert response.body == {
        "id": memory_id,
        "owner": setup.owner.did,
        "type": "notes",
        "createdAt": int(T0 * 1000),
        "expiresAt": int(T0 * 1000) + 60_000,
        "epoch": 0,
        "quotas": {"maxBytes": 4096, "maxSegments": 10_000},
        "grants": [],
        "usage": {"bytes": 0, "segments": 0},
    }
    again = await setup.client(setup.owner)(
        "POST", "/api/memory", {"id": memory_id, "wrappedKey": key_json(setup.owner.did, 0)}
    )
    assert again.status == 400


async def test_create_accepts_an_owner_binding_id_and_checks_only_its_shape(setup: Setup) -> None:
    memory_id = memory_id_for(setup.owner.did)
    body = {"id": memory_id, "wrappedKey": key_json(setup.owner.did, 0)}
    response = await setup.client(setup.owner)("POST", "/api/memory", body)
    assert (response.status, response.body["id"]) == (201, memory_id)
    fetched = await setup.client(setup.owner)("GET", f"/api/memory/{memory_id}")
    assert (fetched.status, fetched.body["owner"]) == (200, setup.owner.did)
    for bad in (memory_id.upper(), memory_id[:-1], "m2-" + memory_id[3:], memory_id + "0"):
        refused = await setup.client(setup.owner)("POST", "/api/memory", {**body, "id": bad})
        assert (refused.status, refused.body["error"]) == (400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (None, "JSON object"),
        ([], "JSON object"),
        ({}, "wrappedKey"),
        (
            {"wrappedKey": {"epoch": 0, "enc": "!!", "ct": b64(bytes(WRAPPED_KEY_CT_SIZE))}},
            "base64",
        ),
        (
            {
                "wrappedKey": {
                    "epoch": 0,
                    "enc": b64(bytes(31)),
                    "ct": b64(bytes(WRAPPED_KEY_CT_SIZE)),
                }
            },
            "32 bytes",
        ),
        (
            {
                "wrappedKey": {
                    "epoch": 0,
                    "enc": "A" * 10_000,
                    "ct": b64(bytes(WRAPPED_KEY_CT_SIZE)),
                }
            },
            "longer",
        ),
        (
            {
                "wrappedKey": {
                    "epoch": 1,
                    "enc": b64(bytes(32)),
                    "ct": b64(bytes(WRAPPED_KEY_CT_SIZE)),
                }
            },
            "epoch",
        ),
        ({"surprise": 1}, "unknown field"),
        ({"type": "x" * 65}, "type"),
        ({"type": "bad\nname"}, "control"),
        ({"expiresAt": "tomorrow"}, "expiresAt"),
        ({"expiresAt": True}, "expiresAt"),
        ({"quotas": {"maxBytes": -1}}, "maxBytes"),
        ({"id": "NOT-A-UUID"}, "UUID"),
    ],
)
async def test_create_answers_400_for_malformed_bodies(
    setup: Setup, body: Any, fragment: str
) -> None:
    if isinstance(body, dict) and body and "wrappedKey" not in body:
        body = {**body, "wrappedKey": key_json(setup.owner.did, 0)}
    response = await setup.client(setup.owner)("POST", "/api/memory", body)
    assert response.status == 400
    assert response.body["error"] == "VALIDATION_ERROR"
    assert fragment in response.body["message"]


async def test_create_answers_400_for_a_key_wrapped_for_someone_else(setup: Setup) -> None:
    response = await setup.client(setup.owner)(
        "POST", "/api/memory", {"wrappedKey": key_json(setup.reader.did, 0)}
    )
    assert response.status == 400


async def test_create_answers_403_for_a_revoked_agent_and_413_past_the_limit() -> None:
    setup = Setup(World(InMemoryMemoryStore(), limits=MemoryLimits(max_memories_owned=1)))
    await setup.memory()
    over = await setup.client(setup.owner)(
        "POST", "/api/memory", {"wrappedKey": key_json(setup.owner.did, 0)}
    )
    assert over.status == 413
    assert over.body["error"] == "QUOTA_EXCEEDED"
    assert over.body["details"]["quota"] == "agent.maxMemories"
    setup.world.revoke_agent(setup.owner)
    revoked = await setup.client(setup.owner)(
        "POST", "/api/memory", {"wrappedKey": key_json(setup.owner.did, 0)}
    )
    assert revoked.status == 403
    assert revoked.body == {
        "error": "FORBIDDEN",
        "message": "access denied",
        "details": {"resource": "memory"},
    }


async def test_get_list_and_destroy(setup: Setup) -> None:
    memory = await setup.memory()
    path = f"/api/memory/{memory['id']}"
    got = await setup.client(setup.reader)("GET", path)
    assert (got.status, got.body) == (200, memory)
    listed = await setup.client(setup.reader)("GET", "/api/memory")
    assert (listed.status, listed.body) == (200, {"memories": [memory]})
    assert (await setup.client(setup.stranger)("GET", "/api/memory")).body == {"memories": []}
    assert (await setup.client(setup.stranger)("GET", path)).status == 403
    assert (await setup.client(setup.writer)("DELETE", path)).status == 403
    destroyed = await setup.client(setup.owner)("DELETE", path)
    assert (destroyed.status, destroyed.body) == (200, {"destroyed": True})
    gone = await setup.client(setup.owner)("GET", path)
    assert (gone.status, gone.body["error"]) == (404, "MEMORY_NOT_FOUND")
    assert (await setup.client(setup.owner)("GET", "/api/memory/not-a-uuid")).status == 400


async def test_an_expired_memory_answers_410(setup: Setup) -> None:
    memory = await setup.memory(expiresAt=int(T0 * 1000) + 1000)
    setup.world.clock.advance(1)
    response = await setup.client(setup.reader)("GET", f"/api/memory/{memory['id']}")
    assert (response.status, response.body["error"]) == (410, "MEMORY_EXPIRED")


async def test_keys_returns_the_callers_own_keys(setup: Setup) -> None:
    memory = await setup.memory()
    response = await setup.client(setup.reader)("GET", f"/api/memory/{memory['id']}/keys")
    assert response.status == 200
    [key] = response.body["keys"]
    assert (key["agent"], key["epoch"]) == (setup.reader.did, 0)
    assert (
        len(base64.b64decode(key["enc"])) == 32
        and len(base64.b64decode(key["ct"])) == WRAPPED_KEY_CT_SIZE
    )
    assert (
        await setup.client(setup.stranger)("GET", f"/api/memory/{memory['id']}/keys")
    ).status == 403


# -- segments ------------------------------------------------------------------------------


async def test_put_then_get_a_segment(setup: Setup) -> None:
    memory = await setup.memory()
    written = await setup.put(setup.writer, memory["id"], "notes%2Fday-1")
    # The path parameter is percent-decoded: the key holds a slash.
    assert written.status == 400  # the segment says "notes%2Fday-1", the path "notes/day-1"
    segment = seal(memory["id"], setup.writer, "notes/day-1")
    path = f"/api/memory/{memory['id']}/segments/notes%2Fday-1"
    written = await setup.client(setup.writer)(
        "PUT", path, {"expectedVersion": 0, "segment": segment_json(segment)}
    )
    assert (written.status, written.body) == (200, {"key": "notes/day-1", "version": 1})
    read = await setup.client(setup.reader)("GET", path)
    assert read.status == 200
    assert read.body == {
        **segment_json(segment),
        "writtenAt": int(T0 * 1000),
        "size": len(segment.ciphertext),
    }
    listing = await setup.client(setup.reader)("GET", f"/api/memory/{memory['id']}/segments")
    assert listing.body == {
        "segments": [
            {
                "key": "notes/day-1",
                "version": 1,
                "epoch": 0,
                "writer": setup.writer.did,
                "size": len(segment.ciphertext),
                "writtenAt": int(T0 * 1000),
            }
        ],
        "next": None,
    }


async def test_a_segment_sealed_by_the_client_library_is_accepted(setup: Setup) -> None:
    identity = AgentIdentity.generate("sdk-writer")
    record = AgentRecord(
        name="sdk-writer",
        did=identity.did,
        roles=("worker",),
        agreement_key=identity.agreement.public,
        agreement_statement=identity.agreement_statement(issued_at=0),
        agreement_issued_at=0,
        created_at=T0,
    )
    setup.world.directory[identity.did] = record
    memory = await setup.memory()
    await setup.client(setup.owner)(
        "POST",
        f"/api/memory/{memory['id']}/grants",
        {"agent": identity.did, "level": "write", "wrappedKeys": [key_json(identity.did, 0)]},
    )
    segment = seal_segment(
        identity,
        memory_id=memory["id"],
        key="k",
        version=1,
        epoch=0,
        data_key=os.urandom(32),
        value=b"hello",
    )
    sdk = Client(setup.api, Agent("sdk-writer", identity.signing_key, record))
    response = await sdk(
        "PUT", f"/api/memory/{memory['id']}/segments/k", {"expectedVersion": 0, "segment": segment}
    )
    assert (response.status, response.body) == (200, {"key": "k", "version": 1})


async def test_put_answers_409_with_the_current_version_and_epoch(setup: Setup) -> None:
    memory = await setup.memory()
    assert (await setup.put(setup.writer, memory["id"], "k")).status == 200
    stale = await setup.put(setup.writer, memory["id"], "k")
    assert (stale.status, stale.body["error"]) == (409, "VERSION_CONFLICT")
    assert stale.body["details"] == {"currentVersion": 1}
    with pytest.raises(VersionConflict) as caught:
        raise_for(ApiResponse(stale.status, stale.body))
    assert caught.value.current_version == 1  # type: ignore[attr-defined]
    revoke = await setup.client(setup.owner)(
        "DELETE",
        f"/api/memory/{memory['id']}/grants/{setup.reader.did}",
        {
            "epoch": 1,
            "wrappedKeys": [key_json(setup.owner.did, 1), key_json(setup.writer.did, 1)],
        },
    )
    assert (revoke.status, revoke.body["epoch"]) == (200, 1)
    old_epoch = await setup.put(setup.writer, memory["id"], "k", expected=1, epoch=0)
    assert old_epoch.status == 409
    assert old_epoch.body["details"] == {"currentVersion": 1, "currentEpoch": 1}


async def test_put_answers_400_for_a_bad_signature_and_403_for_a_forged_writer(
    setup: Setup,
) -> None:
    memory = await setup.memory()
    segment = seal(memory["id"], setup.writer, "k")
    body = segment_json(segment)
    body["signature"] = b64(bytes(64))
    path = f"/api/memory/{memory['id']}/segments/k"
    bad = await setup.client(setup.writer)("PUT", path, {"expectedVersion": 0, "segment": body})
    assert (bad.status, bad.body["error"]) == (400, "SEGMENT_REJECTED")
    with pytest.raises(SegmentRejected):
        raise_for(ApiResponse(bad.status, bad.body))
    forged = await setup.client(setup.owner)(
        "PUT", path, {"expectedVersion": 0, "segment": segment_json(segment)}
    )
    assert forged.status == 403
    read_only = await setup.put(setup.reader, memory["id"], "k")
    assert read_only.status == 403
    with pytest.raises(MemoryAccessDenied):
        raise_for(ApiResponse(read_only.status, read_only.body))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"nonce": b64(bytes(11))}, "nonce"),
        ({"ciphertext": b64(bytes(8))}, "ciphertext"),
        ({"ciphertext": "A" * 200_000}, "ciphertext"),
        ({"hash": "not base64!"}, "hash"),
        ({"signature": b64(bytes(65))}, "signature"),
        ({"version": "1"}, "version"),
        ({"writer": "did:key:zNotAKey"}, "writer"),
        ({"key": "a\x00b"}, "control"),
        ({"extra": True}, "unknown field"),
    ],
)
async def test_put_answers_400_for_malformed_segments(
    setup: Setup, change: dict[str, Any], fragment: str
) -> None:
    memory = await setup.memory()
    body = {**segment_json(seal(memory["id"], setup.writer, "k")), **change}
    response = await setup.client(setup.writer)(
        "PUT",
        f"/api/memory/{memory['id']}/segments/k",
        {"expectedVersion": 0, "segment": body},
    )
    assert response.status == 400
    assert fragment in response.body["message"]


async def test_put_answers_413_with_the_quota_named(setup: Setup) -> None:
    memory_id = (
        await setup.client(setup.owner)(
            "POST",
            "/api/memory",
            {"quotas": {"maxBytes": 100}, "wrappedKey": key_json(setup.owner.did, 0)},
        )
    ).body["id"]
    response = await setup.put(setup.owner, memory_id, "k", value=b"x" * 85)
    assert response.status == 413
    assert response.body["details"] == {
        "quota": "memory.maxBytes",
        "limit": 100,
        "used": 0,
        "requested": 101,
    }
    with pytest.raises(MemoryQuotaExceeded):
        raise_for(ApiResponse(response.status, response.body))


async def test_get_of_a_missing_segment_answers_404(setup: Setup) -> None:
    memory = await setup.memory()
    response = await setup.client(setup.reader)("GET", f"/api/memory/{memory['id']}/segments/nope")
    assert response.status == 404
    assert response.body["details"] == {"resource": "segment"}


async def test_delete_segment_needs_the_expected_version(setup: Setup) -> None:
    memory = await setup.memory()
    await setup.put(setup.writer, memory["id"], "k")
    path = f"/api/memory/{memory['id']}/segments/k"
    client = setup.client(setup.writer)
    assert (await client("DELETE", path)).status == 400
    assert (await client("DELETE", path, query={"expectedVersion": "x"})).status == 400
    stale = await client("DELETE", path, query={"expectedVersion": "2"})
    assert (stale.status, stale.body["details"]) == (409, {"currentVersion": 1})
    assert (
        await setup.client(setup.reader)("DELETE", path, query={"expectedVersion": "1"})
    ).status == 403
    deleted = await client("DELETE", path, query={"expectedVersion": "1"})
    assert (deleted.status, deleted.body) == (200, {"deleted": True})
    assert (await client("DELETE", path, query={"expectedVersion": "1"})).status == 404


# -- grants --------------------------------------------------------------------------------


async def test_grant_and_revoke_status_codes(setup: Setup) -> None:
    memory = await setup.memory()
    grants = f"/api/memory/{memory['id']}/grants"
    newcomer = setup.world.add("newcomer")
    body = {"agent": newcomer.did, "level": "read", "wrappedKeys": [key_json(newcomer.did, 0)]}
    assert (await setup.client(setup.writer)("POST", grants, body)).status == 403
    assert (
        await setup.client(setup.owner)("POST", grants, {**body, "level": "root"})
    ).status == 400
    assert (
        await setup.client(setup.owner)("POST", grants, {**body, "wrappedKeys": []})
    ).status == 400
    granted = await setup.client(setup.owner)(
        "POST", grants, {**body, "expiresAt": int(T0 * 1000) + 5000}
    )
    assert granted.status == 201
    assert granted.body["grants"][-1] == {
        "agent": newcomer.did,
        "level": "read",
        "expiresAt": int(T0 * 1000) + 5000,
        "grantedBy": setup.owner.did,
    }
    revoke_path = f"{grants}/{newcomer.did}"
    remaining = [key_json(d, 1) for d in (setup.owner.did, setup.reader.did, setup.writer.did)]
    wrong_epoch = await setup.client(setup.owner)(
        "DELETE", revoke_path, {"epoch": 2, "wrappedKeys": remaining}
    )
    assert (wrong_epoch.status, wrong_epoch.body["details"]) == (409, {"currentEpoch": 0})
    missing = await setup.client(setup.owner)(
        "DELETE", revoke_path, {"epoch": 1, "wrappedKeys": remaining[:2]}
    )
    assert missing.status == 400
    assert (await setup.client(setup.owner)("DELETE", revoke_path)).status == 400
    revoked = await setup.client(setup.owner)(
        "DELETE", revoke_path, {"epoch": 1, "wrappedKeys": remaining}
    )
    assert revoked.status == 200
    assert revoked.body["epoch"] == 1
    assert newcomer.did not in [g["agent"] for g in revoked.body["grants"]]
    gone = await setup.client(newcomer)("GET", f"/api/memory/{memory['id']}")
    assert gone.status == 403


# -- the document --------------------------------------------------------------------------

ROUTES = {
    ("/api/memory", "post"): {"201", "400", "403", "413"},
    ("/api/memory", "get"): {"200"},
    ("/api/memory/{id}", "get"): {"200", "400", "403", "404", "410"},
    ("/api/memory/{id}", "delete"): {"200", "403", "404", "410"},
    ("/api/memory/{id}/keys", "get"): {"200", "403", "404"},
    ("/api/memory/{id}/segments/{key}", "put"): {"200", "400", "403", "404", "409", "410", "413"},
    ("/api/memory/{id}/segments/{key}", "get"): {"200", "403", "404", "410"},
    ("/api/memory/{id}/segments", "get"): {"200", "403", "404"},
    ("/api/memory/{id}/segments/{key}", "delete"): {"200", "400", "403", "404", "409"},
    ("/api/memory/{id}/grants", "post"): {"201", "400", "403", "404", "413"},
    ("/api/memory/{id}/grants/{agent}", "delete"): {"200", "400", "403", "404", "409"},
}


def test_the_openapi_document_describes_every_route(setup: Setup) -> None:
    document = setup.api.openapi()
    paths = document["paths"]
    for (path, method), codes in ROUTES.items():
        operation = paths[path][method]
        assert codes <= set(operation["responses"]), (path, method)
        assert operation["tags"] == ["memory"]
    schemas = document["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for item in node for r in refs(item)]
        return []

    for ref in refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


# -- the SDK end to end --------------------------------------------------------------------


class ApiTransport:
    """The SDK's MemoryTransport over Api.handle, as the coordinator connection carries it."""

    def __init__(self, api: Api, caller: Caller) -> None:
        self.api = api
        self.caller = caller

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        sent = None if body is None else json.loads(json.dumps(body))
        response = await self.api.handle(
            ApiRequest(self.caller, method, path, dict(query or {}), sent)
        )
        answer = ApiResponse(response.status, json.loads(json.dumps(response.body)))
        raise_for(answer)
        return answer.body


@pytest.fixture
async def sqlite_world(tmp_path: Path) -> AsyncIterator[World]:
    store = await open_backend("sqlite", tmp_path)
    yield World(store)
    await store.close()


async def test_the_sdk_round_trip_leaves_no_plaintext_in_the_coordinators_files(
    sqlite_world: World, tmp_path: Path
) -> None:
    world = sqlite_world
    api = Api()
    register_memory_routes(api, world.service)
    identities = {name: AgentIdentity.generate(name) for name in ("alice", "bob")}
    for name, identity in identities.items():
        world.directory[identity.did] = AgentRecord(
            name=name,
            did=identity.did,
            roles=("worker",),
            agreement_key=identity.agreement.public,
            agreement_statement=identity.agreement_statement(issued_at=0),
            agreement_issued_at=0,
            created_at=T0,
        )

    async def peer_keys(name_or_did: str) -> tuple[str, bytes]:
        for name, identity in identities.items():
            if name_or_did in (name, identity.did):
                return identity.did, identity.agreement.public
        raise LookupError(name_or_did)

    def sdk(name: str) -> SharedMemories:
        identity = identities[name]
        caller = Caller(identity.did, name, ("worker",))
        return SharedMemories(ApiTransport(api, caller), identity, peer_keys, clock=world.clock)

    alice, bob = sdk("alice"), sdk("bob")
    canary = b"PLAINTEXT-CANARY-" + os.urandom(8).hex().encode()
    memory = await alice.create(type="notes")
    await memory.write("plan", canary)
    await memory.grant("bob", "read")
    bobs = await bob.open(memory.id)
    assert (await bobs.read("plan")).data == canary
    await memory.revoke("bob")
    with pytest.raises(MemoryAccessDenied):
        await bobs.read("plan")
    await memory.write("plan", canary + b"-after-revocation")
    assert (await memory.read("plan")).data == canary + b"-after-revocation"
    stored = await world.store.get_segment(memory.id, "plan")
    assert stored is not None
    await world.store.close()
    files = read_files(tmp_path)
    # The scan reads the files the coordinator wrote: the ciphertext is there, the
    # plaintext nowhere.
    assert any(stored.ciphertext in content for content in files.values())
    for name, content in files.items():
        assert canary not in content, name


def read_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}


# -- untrusted bodies ----------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _fuzz_setup() -> tuple[Setup, str]:
    setup = Setup(World(InMemoryMemoryStore()))
    memory = asyncio.run(setup.memory())
    return setup, memory["id"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(["create", "put", "grant", "revoke"]),
    field=st.sampled_from(["", "segment", "wrappedKey", "wrappedKeys", "agent", "epoch", "key"]),
    value=JSON,
    whole=st.booleans(),
)
def test_no_request_body_makes_a_route_fail_with_500(
    route: str, field: str, value: Any, whole: bool
) -> None:
    setup, memory_id = _fuzz_setup()
    valid: dict[str, Any] = {
        "create": {"wrappedKey": key_json(setup.owner.did, 0)},
        "put": {
            "expectedVersion": 0,
            "segment": segment_json(seal(memory_id, setup.owner, "k")),
        },
        "grant": {
            "agent": setup.stranger.did,
            "level": "read",
            "wrappedKeys": [key_json(setup.stranger.did, 0)],
        },
        "revoke": {"epoch": 1, "wrappedKeys": [key_json(setup.owner.did, 1)]},
    }[route]
    if whole:
        body: Any = value
    elif field in ("segment", "key") and route == "put":
        body = {**valid, "segment": {**valid["segment"], field: value}}
    else:
        body = {**valid, (field or "extra"): value}
    method, path = {
        "create": ("POST", "/api/memory"),
        "put": ("PUT", f"/api/memory/{memory_id}/segments/k"),
        "grant": ("POST", f"/api/memory/{memory_id}/grants"),
        "revoke": ("DELETE", f"/api/memory/{memory_id}/grants/{setup.writer.did}"),
    }[route]
    response = asyncio.run(setup.client(setup.owner)(method, path, body))
    assert response.status in {200, 201, 400, 403, 404, 409, 410, 413}, response.body
    assert isinstance(response.body, dict)
