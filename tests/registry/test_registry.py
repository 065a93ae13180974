"""The Registry: identity events become signed snapshot entries; state derives from them."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from _registry_helpers import Clock, identity, memory_registry, record_of

from trustwire.audit.log import MerkleLog
from trustwire.crypto.signing import SigningKey
from trustwire.errors import ConfigurationError, LogInconsistent, StoreError, UnknownAgent
from trustwire.registry import REGISTRY_ORIGIN, Registry, decode_snapshot
from trustwire.registry import proof as proof_module
from trustwire.registry import snapshot as snapshot_module
from trustwire.registry import verifier as verifier_module
from trustwire.store.memory import open_memory_store
from trustwire.store.sqlite import open_sqlite_store


async def test_enrol_adds_to_the_directory_and_logs_a_signed_snapshot() -> None:
    registry, store, key = memory_registry()
    alice = identity("alice")
    index = await registry.enrol(record_of(alice, ("admin",)))
    assert index == 0
    assert await store.agents.get_by_did(alice.did) == record_of(alice, ("admin",))
    entry = decode_snapshot(registry.log.entry(0))
    assert entry["event"] == "enrol"
    assert entry["seq"] == 1
    assert (entry["did"], entry["name"], entry["roles"]) == (alice.did, "alice", ["admin"])
    assert entry["agreement_key"] == alice.agreement.public.hex()
    assert entry["revoked_at"] is None
    head = registry.head()
    assert (head.size, head.origin) == (1, REGISTRY_ORIGIN)
    head.verify(key.public_key, origin=REGISTRY_ORIGIN)


async def test_entries_are_canonical_json() -> None:
    registry, _, _ = memory_registry()
    await registry.enrol(record_of(identity("alice")))
    raw = registry.log.entry(0)
    assert raw == json.dumps(
        json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


async def test_every_event_appends_a_full_snapshot_with_the_next_seq() -> None:
    registry, store, _ = memory_registry()
    alice = identity("alice")
    await registry.enrol(record_of(alice))
    await registry.set_roles(alice.did, ["admin", "auditor"])
    rotated = alice.rotate_agreement(issued_at=alice.issued_at + 10)
    await registry.rotate_agreement(
        alice.did,
        agreement_key=rotated.agreement.public,
        agreement_statement=rotated.agreement_statement(issued_at=rotated.issued_at),
        agreement_issued_at=rotated.issued_at,
    )
    await registry.certificate_issued(alice.did, fingerprint="AB" * 32, not_after=99.0)
    last = await registry.revoke(alice.did, at=123.0)

    entries = [decode_snapshot(e) for e in registry.log.entries()]
    assert [e["event"] for e in entries] == ["enrol", "roles", "rotate", "certificate", "revoke"]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    final = entries[last]
    assert final["roles"] == ["admin", "auditor"]
    assert final["agreement_key"] == rotated.agreement.public.hex()
    assert final["certificate"] == {"fingerprint": "ab" * 32, "not_after": 99.0}
    assert final["revoked_at"] == 123.0
    assert registry.snapshot(alice.did) == final
    assert registry.head().size == 5
    await registry.verify_against_directory()
    fetched = await store.agents.get_by_did(alice.did)
    assert fetched is not None
    assert fetched.revoked_at == 123.0


async def test_revoking_twice_logs_once_and_keeps_the_first_time() -> None:
    registry, _, _ = memory_registry()
    alice = identity("alice")
    await registry.enrol(record_of(alice))
    first = await registry.revoke(alice.did, at=5.0)
    assert await registry.revoke(alice.did, at=9.0) == first
    assert registry.head().size == 2
    snapshot = registry.snapshot(alice.did)
    assert snapshot is not None
    assert snapshot["revoked_at"] == 5.0


async def test_a_revoked_agent_gets_no_new_key_and_no_certificate() -> None:
    registry, _, _ = memory_registry()
    alice = identity("alice")
    await registry.enrol(record_of(alice))
    await registry.revoke(alice.did, at=5.0)
    rotated = alice.rotate_agreement(issued_at=alice.issued_at + 1)
    with pytest.raises(StoreError):
        await registry.rotate_agreement(
            alice.did,
            agreement_key=rotated.agreement.public,
            agreement_statement=rotated.agreement_statement(issued_at=rotated.issued_at),
            agreement_issued_at=rotated.issued_at,
        )
    with pytest.raises(StoreError):
        await registry.certificate_issued(alice.did, fingerprint="ab", not_after=1.0)
    assert registry.head().size == 2


async def test_enrol_refuses_a_statement_the_identity_key_never_signed() -> None:
    registry, store, _ = memory_registry()
    alice, mallory = identity("alice"), identity("mallory")
    forged = dataclasses.replace(record_of(alice), agreement_key=mallory.agreement.public)
    with pytest.raises(ValueError, match="does not verify"):
        await registry.enrol(forged)
    assert await store.agents.list() == []
    assert registry.head().size == 0


async def test_rotation_refuses_a_key_older_than_the_current_one() -> None:
    registry, _, _ = memory_registry()
    alice = identity("alice")
    await registry.enrol(record_of(alice))
    older = alice.rotate_agreement(issued_at=alice.issued_at - 1)
    with pytest.raises(ValueError, match="older"):
        await registry.rotate_agreement(
            alice.did,
            agreement_key=older.agreement.public,
            agreement_statement=older.agreement_statement(issued_at=older.issued_at),
            agreement_issued_at=older.issued_at,
        )
    assert registry.head().size == 1


async def test_changes_to_an_unknown_agent_raise_unknown_agent() -> None:
    registry, _, _ = memory_registry()
    with pytest.raises(UnknownAgent):
        await registry.set_roles("did:key:z6Mknobody", ["admin"])
    with pytest.raises(UnknownAgent):
        await registry.revoke("did:key:z6Mknobody", at=1.0)
    with pytest.raises(UnknownAgent):
        registry.proof_for("did:key:z6Mknobody")


async def test_a_duplicate_enrolment_is_refused_and_not_logged() -> None:
    registry, _, _ = memory_registry()
    alice = identity("alice")
    await registry.enrol(record_of(alice))
    with pytest.raises(StoreError):
        await registry.enrol(record_of(identity("alice")))
    assert registry.head().size == 1


async def test_state_is_derived_again_from_the_log_file_on_reopening(tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = await open_sqlite_store(tmp_path / "store.db")
    try:
        registry = await Registry.open(tmp_path / "registry.db", key, store.agents)
        alice, bob = identity("alice"), identity("bob")
        await registry.enrol(record_of(alice))
        await registry.enrol(record_of(bob))
        await registry.set_roles(bob.did, ["admin"])
        before = (registry.snapshot(alice.did), registry.snapshot(bob.did), registry.head())
        await registry.close()
        again = await Registry.open(tmp_path / "registry.db", key, store.agents)
        try:
            assert (again.snapshot(alice.did), again.snapshot(bob.did), again.head()) == before
            await again.verify_against_directory()
        finally:
            await again.close()
    finally:
        await store.close()


async def test_a_second_registry_on_the_same_file_sees_the_first_ones_entries(
    tmp_path: Path,
) -> None:
    key = SigningKey.generate()
    store = await open_sqlite_store(tmp_path / "store.db")
    first = await Registry.open(tmp_path / "registry.db", key, store.agents)
    second = await Registry.open(tmp_path / "registry.db", key, store.agents)
    try:
        alice, bob = identity("alice"), identity("bob")
        await first.enrol(record_of(alice))
        assert second.snapshot(alice.did) is not None
        await second.enrol(record_of(bob))
        assert first.head() == second.head()
        assert first.head().size == 2
        first.proof_for(bob.did)
    finally:
        await first.close()
        await second.close()
        await store.close()


async def test_verify_against_directory_reports_a_change_made_behind_its_back() -> None:
    registry, store, _ = memory_registry()
    alice = identity("alice")
    await registry.enrol(record_of(alice))
    await registry.verify_against_directory()
    await store.agents.set_roles(alice.did, ["admin"])
    with pytest.raises(ConfigurationError, match="roles"):
        await registry.verify_against_directory()


async def test_verify_against_directory_reports_an_agent_missing_from_the_log() -> None:
    registry, store, _ = memory_registry()
    await store.agents.add(record_of(identity("alice")))
    with pytest.raises(ConfigurationError, match="in the directory, not the registry"):
        await registry.verify_against_directory()


async def test_import_directory_logs_agents_enrolled_before_the_registry() -> None:
    store = open_memory_store()
    alice, bob = identity("alice"), identity("bob")
    await store.agents.add(record_of(alice))
    await store.agents.add(record_of(bob))
    await store.agents.revoke(bob.did, at=7.0)
    registry, _, _ = memory_registry(store=store)
    assert await registry.import_directory() == 2
    assert await registry.import_directory() == 0
    await registry.verify_against_directory()
    snapshot = registry.snapshot(bob.did)
    assert snapshot is not None
    assert (snapshot["event"], snapshot["revoked_at"]) == ("revoke", 7.0)


async def test_a_malformed_entry_in_the_log_is_refused_on_opening() -> None:
    log = MerkleLog.memory(origin=REGISTRY_ORIGIN)
    log.append(b'{"v":1,"event":"enrol"}')
    with pytest.raises(LogInconsistent, match="entry 0"):
        Registry(log, SigningKey.generate(), open_memory_store().agents)


async def test_a_log_of_another_origin_is_refused() -> None:
    with pytest.raises(ValueError, match="origin"):
        Registry(
            MerkleLog.memory(origin="trustwire/audit"),
            SigningKey.generate(),
            open_memory_store().agents,
            clock=Clock(),
        )


def registry_bytes(directory: Path) -> bytes:
    """Every byte of the registry database and its WAL files."""
    return b"".join(
        path.read_bytes() for path in directory.iterdir() if path.name.startswith("registry.db")
    )


async def test_the_registry_file_holds_no_private_key_material(tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = await open_sqlite_store(tmp_path / "store.db")
    agents = [identity(name) for name in ("alice", "bob")]
    try:
        registry = await Registry.open(tmp_path / "registry.db", key, store.agents)
        for agent in agents:
            await registry.enrol(record_of(agent))
            await registry.certificate_issued(agent.did, fingerprint="ab" * 32, not_after=1.0)
        await registry.close()
    finally:
        await store.close()
    data = registry_bytes(tmp_path)
    secrets = [key.to_bytes()]
    for agent in agents:
        secrets += [agent.signing_key.to_bytes(), agent.agreement.private]
    for secret in secrets:
        assert secret not in data
        assert secret.hex().encode() not in data
    # The public halves are there: the scan looks in the right place.
    assert agents[0].agreement.public.hex().encode() in data


def test_the_entry_format_proofs_and_the_sdk_verifier_are_sans_io() -> None:
    forbidden = {"asyncio", "socket", "ssl", "sqlite3", "threading", "time"}
    for module in (snapshot_module, proof_module, verifier_module):
        source = Path(str(module.__file__)).read_text(encoding="utf-8")
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not imported & forbidden, f"{module.__name__} imports {imported & forbidden}"


async def test_an_append_racing_another_process_is_retried_after_catching_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = SigningKey.generate()
    store = await open_sqlite_store(tmp_path / "store.db")
    first = await Registry.open(tmp_path / "registry.db", key, store.agents)
    second = await Registry.open(tmp_path / "registry.db", key, store.agents)
    try:
        alice, bob = identity("alice"), identity("bob")
        await first.enrol(record_of(alice))
        # The second registry misses the first's append once, as if it had reloaded
        # just before the other process wrote: its write at index 0 must fail, not fork.
        real_reload = second.log.reload
        calls = []

        def late_reload() -> bool:
            calls.append(1)
            return False if len(calls) == 1 else real_reload()

        monkeypatch.setattr(second.log, "reload", late_reload)
        assert await second.enrol(record_of(bob)) == 1
        assert len(calls) >= 2
        await second.verify_against_directory()
        assert first.head() == second.head()
    finally:
        await first.close()
        await second.close()
        await store.close()
