"""Agent identities: independent keys, the signed agreement statement, saving and loading."""

from __future__ import annotations

import json
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from trustwire.crypto.dh import X25519
from trustwire.crypto.signing import SigningKey
from trustwire.errors import InvalidSignature, KeyFileError
from trustwire.identity.did import ed25519_from_did
from trustwire.identity.keys import (
    AGREEMENT_KEY_FILE,
    AGREEMENT_LABEL,
    IDENTITY_FILE,
    IDENTITY_KEY_FILE,
    AgentIdentity,
    agreement_statement_bytes,
    check_agent_name,
    verify_agreement_statement,
)

ISSUED_AT = 1_767_225_600
PASSPHRASE = "agent passphrase"


@pytest.fixture
def alice() -> AgentIdentity:
    return AgentIdentity.generate("alice", issued_at=ISSUED_AT)


def test_did_names_the_identity_key(alice: AgentIdentity) -> None:
    assert ed25519_from_did(alice.did) == alice.signing_key.public_key.to_bytes()


def test_identity_and_agreement_keys_are_independent() -> None:
    first = AgentIdentity.generate("a")
    second = AgentIdentity.generate("b")
    assert first.did != second.did
    assert first.agreement.public != second.agreement.public
    assert first.agreement.private != first.signing_key.to_bytes()
    assert X25519.public_from_private(first.signing_key.to_bytes()) != first.agreement.public


def test_statement_bytes_follow_the_documented_layout(alice: AgentIdentity) -> None:
    did = alice.did.encode("ascii")
    expected = (
        b"trustwire/agreement-key/v1"
        + len(did).to_bytes(2, "big")
        + did
        + alice.agreement.public
        + ISSUED_AT.to_bytes(8, "big")
    )
    assert AGREEMENT_LABEL == b"trustwire/agreement-key/v1"
    assert agreement_statement_bytes(alice.did, alice.agreement.public, ISSUED_AT) == expected


def test_agreement_statement_verifies(alice: AgentIdentity) -> None:
    signature = alice.agreement_statement(issued_at=ISSUED_AT)
    verify_agreement_statement(alice.did, alice.agreement.public, ISSUED_AT, signature)
    AgentIdentity.verify_agreement_statement(
        alice.did, alice.agreement.public, ISSUED_AT, signature
    )
    message = agreement_statement_bytes(alice.did, alice.agreement.public, ISSUED_AT)
    alice.signing_key.public_key.verify(signature, message)


def test_statement_for_a_substituted_agreement_key_fails(alice: AgentIdentity) -> None:
    signature = alice.agreement_statement(issued_at=ISSUED_AT)
    attacker_key = X25519.generate().public
    with pytest.raises(InvalidSignature):
        verify_agreement_statement(alice.did, attacker_key, ISSUED_AT, signature)


def test_statement_replayed_for_another_did_fails(alice: AgentIdentity) -> None:
    signature = alice.agreement_statement(issued_at=ISSUED_AT)
    mallory = AgentIdentity.generate("mallory")
    with pytest.raises(InvalidSignature):
        verify_agreement_statement(mallory.did, alice.agreement.public, ISSUED_AT, signature)


def test_statement_with_another_issue_time_fails(alice: AgentIdentity) -> None:
    signature = alice.agreement_statement(issued_at=ISSUED_AT)
    with pytest.raises(InvalidSignature):
        verify_agreement_statement(alice.did, alice.agreement.public, ISSUED_AT + 1, signature)


def test_statement_signed_by_another_identity_fails(alice: AgentIdentity) -> None:
    forger = SigningKey.generate()
    message = agreement_statement_bytes(alice.did, alice.agreement.public, ISSUED_AT)
    with pytest.raises(InvalidSignature):
        verify_agreement_statement(
            alice.did, alice.agreement.public, ISSUED_AT, forger.sign(message)
        )


def test_a_bare_signature_over_the_key_without_the_label_fails(alice: AgentIdentity) -> None:
    # Domain separation: a signature the identity made for another purpose over the
    # same fields, without the label, must not count as a statement.
    did = alice.did.encode()
    unlabelled = (
        struct.pack(">H", len(did)) + did + alice.agreement.public + struct.pack(">Q", ISSUED_AT)
    )
    with pytest.raises(InvalidSignature):
        verify_agreement_statement(
            alice.did, alice.agreement.public, ISSUED_AT, alice.signing_key.sign(unlabelled)
        )


@pytest.mark.parametrize(
    ("did", "public", "issued_at", "signature"),
    [
        ("did:key:bogus", bytes(32), 0, bytes(64)),
        ("did:key:z6LSeu9HkTHSfLLeUs2nnzUSNedgDUevfNQgQjQC23ZCit6F", bytes(32), 0, bytes(64)),
        (None, bytes(32), 0, bytes(64)),
        ("OK", bytes(31), 0, bytes(64)),
        ("OK", bytes(32), -1, bytes(64)),
        ("OK", bytes(32), 2**64, bytes(64)),
        ("OK", bytes(32), "0", bytes(64)),
        ("OK", bytes(32), 0, bytes(63)),
        ("OK", bytes(32), 0, b""),
    ],
)
def test_malformed_statements_raise_invalid_signature(
    alice: AgentIdentity, did: Any, public: bytes, issued_at: Any, signature: bytes
) -> None:
    if did == "OK":
        did = alice.did
    with pytest.raises(InvalidSignature):
        verify_agreement_statement(did, public, issued_at, signature)


def test_rotation_keeps_the_did_and_changes_the_agreement_key(alice: AgentIdentity) -> None:
    rotated = alice.rotate_agreement(issued_at=ISSUED_AT + 60)
    assert rotated.did == alice.did
    assert rotated.agreement.public != alice.agreement.public
    signature = rotated.agreement_statement(issued_at=ISSUED_AT + 60)
    verify_agreement_statement(rotated.did, rotated.agreement.public, ISSUED_AT + 60, signature)


@pytest.mark.parametrize("name", ["", " alice", "a\nb", "x" * 65])
def test_unusable_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="agent name"):
        AgentIdentity.generate(name)


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE])
def test_save_and_load_round_trip(
    tmp_path: Path, alice: AgentIdentity, passphrase: str | None
) -> None:
    alice.save(tmp_path / "alice", passphrase)
    loaded = AgentIdentity.load(tmp_path / "alice", passphrase)
    assert loaded.name == "alice"
    assert loaded.did == alice.did
    assert loaded.signing_key.to_bytes() == alice.signing_key.to_bytes()
    assert loaded.agreement == alice.agreement
    assert loaded.issued_at == ISSUED_AT


def test_saved_files_have_private_modes_and_public_json(
    tmp_path: Path, alice: AgentIdentity
) -> None:
    alice.save(tmp_path, PASSPHRASE)
    for name in (IDENTITY_KEY_FILE, AGREEMENT_KEY_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    document = json.loads((tmp_path / IDENTITY_FILE).read_text())
    assert document["did"] == alice.did
    assert document["name"] == "alice"
    assert document["x25519_public"] == alice.agreement.public.hex()
    assert document["issued_at"] == ISSUED_AT
    verify_agreement_statement(
        alice.did, alice.agreement.public, ISSUED_AT, bytes.fromhex(document["statement"])
    )
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert alice.signing_key.to_bytes() not in raw
    assert alice.agreement.private not in raw
    assert alice.signing_key.to_bytes().hex().encode() not in raw
    assert alice.agreement.private.hex().encode() not in raw


def test_load_with_a_wrong_passphrase_fails(tmp_path: Path, alice: AgentIdentity) -> None:
    alice.save(tmp_path, PASSPHRASE)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        AgentIdentity.load(tmp_path, "wrong")


def _edit(path: Path, **changes: Any) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"did": "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"}, "DID does not match"),
        ({"x25519_public": "00" * 32}, "X25519 key does not match"),
        ({"issued_at": ISSUED_AT + 1}, "does not verify"),
        ({"statement": "00" * 64}, "does not verify"),
        ({"statement": "zz"}, "invalid field"),
        ({"issued_at": "soon"}, "issued_at"),
        ({"issued_at": True}, "issued_at"),
        ({"issued_at": 2**64}, "invalid field"),
        ({"name": ""}, "invalid field"),
        ({"name": 7}, "name"),
        ({"version": 2}, "version"),
    ],
)
def test_load_refuses_a_tampered_identity_file(
    tmp_path: Path, alice: AgentIdentity, changes: dict[str, Any], reason: str
) -> None:
    alice.save(tmp_path, None)
    _edit(tmp_path / IDENTITY_FILE, **changes)
    with pytest.raises(KeyFileError, match=reason):
        AgentIdentity.load(tmp_path, None)


def test_load_refuses_keys_swapped_from_another_identity(
    tmp_path: Path, alice: AgentIdentity
) -> None:
    alice.save(tmp_path / "alice", None)
    AgentIdentity.generate("bob").save(tmp_path / "bob", None)
    (tmp_path / "bob" / AGREEMENT_KEY_FILE).replace(tmp_path / "alice" / AGREEMENT_KEY_FILE)
    with pytest.raises(KeyFileError, match="X25519 key does not match"):
        AgentIdentity.load(tmp_path / "alice", None)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"null", b"[" * 100_000, b"{}" * 20_000])
def test_load_refuses_a_corrupt_identity_file(
    tmp_path: Path, alice: AgentIdentity, content: bytes
) -> None:
    alice.save(tmp_path, None)
    (tmp_path / IDENTITY_FILE).write_bytes(content)
    with pytest.raises(KeyFileError):
        AgentIdentity.load(tmp_path, None)


def test_repr_shows_only_name_and_did(alice: AgentIdentity) -> None:
    text = repr(alice)
    assert alice.did in text
    assert alice.signing_key.to_bytes().hex() not in text
    assert alice.agreement.private.hex() not in text


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "a b", "x" * 65, "é"])
def test_agent_names_that_could_escape_a_directory_or_mislead_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_agent_name(name)
