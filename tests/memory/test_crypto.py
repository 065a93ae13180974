"""Shared-memory cryptography: wrapped keys and sealed segments (``trustwire.memory.crypto``)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustwire.crypto import hpke
from trustwire.crypto.aead import AesGcm
from trustwire.crypto.hashes import sha256
from trustwire.errors import SegmentRejected
from trustwire.identity.keys import AgentIdentity
from trustwire.memory.crypto import (
    MAX_KEY_LENGTH,
    MAX_VALUE_SIZE,
    SIGNATURE_LABEL,
    WRAPPED_PLAINTEXT_SIZE,
    AdminCertificate,
    OpenedSegment,
    WrappedKey,
    admin_statement,
    certify_admin,
    generate_data_key,
    is_memory_id,
    key_info,
    key_statement,
    memory_id_for,
    open_segment,
    owner_matches,
    seal_segment,
    segment_ad,
    unwrap_key,
    wrap_key,
)
from trustwire.memory.model import WRAPPED_KEY_CT_SIZE, check_memory_id
from trustwire.protocol.channel import verify_key_of

ALICE = AgentIdentity.generate("alice")
BOB = AgentIdentity.generate("bob")
MALLORY = AgentIdentity.generate("mallory")
MEMORY = memory_id_for(ALICE.did)
CANARY = b"canary-plaintext-7f3a"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(value: str) -> bytes:
    return base64.b64decode(value)


def keys_for(*keys: bytes) -> Callable[[int], bytes]:
    """data_key_for over a list of epoch keys (epoch n -> keys[n]); IndexError past the end."""
    return lambda epoch: keys[epoch]


def sealed(
    *,
    writer: AgentIdentity = ALICE,
    key: str = "plan",
    version: int = 1,
    epoch: int = 0,
    data_key: bytes,
    value: bytes = CANARY,
) -> dict[str, Any]:
    return seal_segment(
        writer,
        memory_id=MEMORY,
        key=key,
        version=version,
        epoch=epoch,
        data_key=data_key,
        value=value,
    )


def resign(
    segment: dict[str, Any], signer: AgentIdentity, *, data_key: bytes | None = None
) -> None:
    """Recompute hash and signature of a (modified) segment as ``signer`` would.

    With ``data_key``, the ciphertext is re-encrypted under the segment's new AD first, so
    the result is a perfectly well-formed segment that only the signature check can catch.
    """
    nonce = unb64(segment["nonce"])
    ad = segment_ad(
        MEMORY, segment["key"], segment["version"], segment["epoch"], segment["writer"], nonce
    )
    if data_key is not None:
        segment["ciphertext"] = b64(AesGcm(data_key).seal(nonce, CANARY, ad))
    digest = sha256(ad + unb64(segment["ciphertext"]))
    segment["hash"] = b64(digest)
    segment["signature"] = b64(signer.signing_key.sign(SIGNATURE_LABEL + digest))


def rejected(segment: Any, data_key_for: Callable[[int], bytes]) -> SegmentRejected:
    with pytest.raises(SegmentRejected) as info:
        open_segment(segment, memory_id=MEMORY, data_key_for=data_key_for)
    assert CANARY.decode() not in str(info.value)
    return info.value


# --- round trip --------------------------------------------------------------------------


def test_a_sealed_segment_opens_to_its_value() -> None:
    k0 = generate_data_key()
    segment = sealed(data_key=k0, version=3)
    opened = open_segment(segment, memory_id=MEMORY, data_key_for=keys_for(k0))
    assert opened == OpenedSegment(key="plan", version=3, epoch=0, writer=ALICE.did, value=CANARY)
    assert CANARY.decode() not in repr(opened)
    assert set(segment) == {
        "key",
        "version",
        "epoch",
        "writer",
        "nonce",
        "ciphertext",
        "hash",
        "signature",
    }
    assert CANARY not in json.dumps(segment).encode()
    assert len(unb64(segment["nonce"])) == 12 and len(unb64(segment["hash"])) == 32
    assert len(unb64(segment["signature"])) == 64
    assert len(unb64(segment["ciphertext"])) == len(CANARY) + 16


def test_server_fields_do_not_disturb_opening() -> None:
    k0 = generate_data_key()
    segment = {**sealed(data_key=k0), "writtenAt": 1_700_000_000_000, "size": 37}
    assert open_segment(segment, memory_id=MEMORY, data_key_for=keys_for(k0)).value == CANARY


def test_the_segment_layout_is_the_documented_one() -> None:
    # Recompute every field from the documented formula, independently of the module.
    k0 = generate_data_key()
    segment = sealed(data_key=k0, key="é/k", version=7, epoch=0)
    nonce, ct = unb64(segment["nonce"]), unb64(segment["ciphertext"])

    def lp(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    ad = (
        b"trustwire/memory-segment/v1"
        + lp(MEMORY.encode())
        + lp("é/k".encode())
        + (7).to_bytes(8, "big")
        + (0).to_bytes(8, "big")
        + lp(ALICE.did.encode())
        + nonce
    )
    assert AesGcm(k0).open(nonce, ct, ad) == CANARY
    assert unb64(segment["hash"]) == sha256(ad + ct)
    ALICE.signing_key.public_key.verify(
        unb64(segment["signature"]), b"trustwire/memory-segment-sig/v1" + sha256(ad + ct)
    )


# --- tampering ---------------------------------------------------------------------------


def _flip_b64(value: str, index: int = 0) -> str:
    raw = bytearray(unb64(value))
    raw[index] ^= 0x01
    return b64(bytes(raw))


TAMPERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "ciphertext": lambda s: s.update(ciphertext=_flip_b64(s["ciphertext"])),
    "tag": lambda s: s.update(ciphertext=_flip_b64(s["ciphertext"], -1)),
    "hash": lambda s: s.update(hash=_flip_b64(s["hash"])),
    "signature": lambda s: s.update(signature=_flip_b64(s["signature"])),
    "nonce": lambda s: s.update(nonce=_flip_b64(s["nonce"])),
    "key": lambda s: s.update(key="other"),
    "version": lambda s: s.update(version=s["version"] + 1),
    "epoch": lambda s: s.update(epoch=s["epoch"] + 1),
    "writer": lambda s: s.update(writer=BOB.did),
}


@pytest.mark.parametrize("field", sorted(TAMPERS))
def test_a_tampered_field_is_rejected(field: str) -> None:
    k0, k1 = generate_data_key(), generate_data_key()
    segment = sealed(data_key=k0, version=2)
    open_segment(segment, memory_id=MEMORY, data_key_for=keys_for(k0, k1))  # untampered: fine
    TAMPERS[field](segment)
    rejected(segment, keys_for(k0, k1))


@pytest.mark.parametrize("field", ["key", "version", "epoch"])
def test_a_moved_segment_fails_decryption_even_when_rehashed_and_resigned(field: str) -> None:
    # Even if the writer itself re-hashed and re-signed a moved ciphertext, the AD no
    # longer matches: decryption, the last check, refuses it.
    k0 = generate_data_key()
    segment = sealed(data_key=k0, version=2)
    TAMPERS[field](segment)
    resign(segment, ALICE)
    error = rejected(segment, keys_for(k0, k0))
    assert "decryption failed" in str(error)


def test_a_segment_for_another_memory_is_rejected() -> None:
    k0 = generate_data_key()
    segment = sealed(data_key=k0)
    with pytest.raises(SegmentRejected, match="hash"):
        open_segment(segment, memory_id=str(uuid.uuid4()), data_key_for=keys_for(k0))


def test_a_segment_signed_by_someone_other_than_its_writer_is_rejected() -> None:
    # Mallory holds the data key (a writer on the memory) and forges a value in Alice's
    # name: ciphertext, AD and hash are all consistent, only the signature is Mallory's.
    k0 = generate_data_key()
    segment = sealed(writer=MALLORY, data_key=k0)
    segment["writer"] = ALICE.did
    resign(segment, MALLORY, data_key=k0)
    error = rejected(segment, keys_for(k0))
    assert "signature" in str(error)
    resign(segment, ALICE, data_key=k0)  # the same bytes signed by Alice do open
    assert open_segment(segment, memory_id=MEMORY, data_key_for=keys_for(k0)).writer == ALICE.did


def test_the_wrong_epoch_key_fails() -> None:
    k0, k1 = generate_data_key(), generate_data_key()
    segment = sealed(data_key=k1, epoch=1)
    error = rejected(segment, keys_for(k0, k0))
    assert "decryption failed" in str(error)


def test_a_missing_epoch_key_is_a_rejection() -> None:
    k0 = generate_data_key()
    segment = sealed(data_key=k0, epoch=1)
    assert "no data key" in str(rejected(segment, keys_for(k0)))


# --- wrapped keys ------------------------------------------------------------------------


def wrap_for(
    agent: AgentIdentity,
    data_key: bytes,
    epoch: int = 0,
    wrapper: AgentIdentity | None = None,
    **certificates: AdminCertificate | None,
) -> WrappedKey:
    return wrap_key(
        data_key,
        memory_id=MEMORY,
        epoch=epoch,
        agent_did=agent.did,
        agent_public=agent.agreement.public,
        wrapper=ALICE if wrapper is None else wrapper,
        **certificates,
    )


#: The test memory's owner: its id names alice.
OWNER = ALICE.did


def unwrap_for(agent: AgentIdentity, wrapped: WrappedKey, owner: str = OWNER) -> bytes:
    """Bob's (or ``agent``'s) data key from ``wrapped``, as a client would open it."""
    return unwrap_key(
        wrapped, memory_id=MEMORY, agent_did=agent.did, private=agent.agreement, owner=owner
    ).data_key


def seal_plaintext(agent: AgentIdentity, plaintext: bytes, epoch: int = 0) -> WrappedKey:
    """A wrapped key around any plaintext (what anyone with the public key can make)."""
    enc, ct = hpke.seal(agent.agreement.public, plaintext, info=key_info(MEMORY, epoch, agent.did))
    return WrappedKey(agent=agent.did, epoch=epoch, enc=enc, ct=ct)


def did_field(did: str) -> bytes:
    return bytes([len(did)]) + did.encode() + bytes(63 - len(did))


# --- memory ids --------------------------------------------------------------------------


def test_a_memory_id_names_its_owner() -> None:
    memory_id = memory_id_for(ALICE.did)
    assert len(memory_id) == 67 and memory_id.startswith("m1-") and is_memory_id(memory_id)
    assert memory_id == memory_id.lower() and check_memory_id(memory_id) == memory_id
    nonce, tag = bytes.fromhex(memory_id[3:35]), bytes.fromhex(memory_id[35:])
    did = ALICE.did.encode()
    expected = sha256(b"trustwire/memory-id/v1" + len(did).to_bytes(2, "big") + did + nonce)
    assert tag == expected[:16]
    assert owner_matches(memory_id, ALICE.did)
    assert memory_id_for(ALICE.did) != memory_id  # a fresh nonce each time


def flip(memory_id: str, index: int) -> str:
    digit = "0" if memory_id[index] != "0" else "1"
    return memory_id[:index] + digit + memory_id[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: flip(m, 3),  # the nonce
        lambda m: flip(m, 34),
        lambda m: flip(m, 35),  # the tag
        lambda m: flip(m, 66),
        lambda m: m.upper(),
        lambda m: "m2-" + m[3:],
        lambda m: m[:-2],
        lambda m: m + "00",
        lambda m: str(uuid.uuid4()),
        lambda m: memory_id_for(BOB.did),
    ],
)
def test_a_tampered_memory_id_does_not_name_the_owner(tamper: Callable[[str], str]) -> None:
    memory_id = memory_id_for(ALICE.did)
    assert not owner_matches(tamper(memory_id), ALICE.did)


def test_a_memory_id_does_not_name_another_owner() -> None:
    memory_id = memory_id_for(ALICE.did)
    for other in (BOB.did, ALICE.did + "x", ALICE.did.upper(), "", "x" * 70_000):
        assert not owner_matches(memory_id, other)
    with pytest.raises(ValueError, match="did:key"):
        memory_id_for("alice")


def test_a_wrapped_key_opens_only_for_the_owner_its_memory_id_names() -> None:
    k = generate_data_key()
    wrapped = wrap_for(BOB, k)
    with pytest.raises(SegmentRejected, match="does not name this owner"):
        unwrap_for(BOB, wrapped, owner=MALLORY.did)
    # A coordinator claiming to own the memory, signing as "the owner", is refused too.
    forged = wrap_for(BOB, k, wrapper=MALLORY)
    with pytest.raises(SegmentRejected, match="does not name this owner"):
        unwrap_for(BOB, forged, owner=MALLORY.did)
    legacy = str(uuid.uuid4())
    with pytest.raises(SegmentRejected, match="does not name this owner"):
        unwrap_key(wrapped, memory_id=legacy, agent_did=BOB.did, private=BOB.agreement, owner=OWNER)


def test_a_wrapped_key_round_trips_through_json() -> None:
    k0 = generate_data_key()
    wrapped = wrap_for(BOB, k0, epoch=5)
    as_json = json.loads(json.dumps(wrapped.to_json()))
    assert as_json["agent"] == BOB.did and as_json["epoch"] == 5
    assert len(unb64(as_json["enc"])) == 32 and len(unb64(as_json["ct"])) == 320
    assert WRAPPED_KEY_CT_SIZE == 320 and WRAPPED_PLAINTEXT_SIZE == 304
    assert WrappedKey.from_json(as_json) == wrapped
    for form in (wrapped, as_json):
        opened = unwrap_key(
            form, memory_id=MEMORY, agent_did=BOB.did, private=BOB.agreement, owner=OWNER
        )
        assert opened.data_key == k0 and opened.epoch == 5 and opened.wrapper == ALICE.did
        assert opened.admin_certificate is None and k0.hex() not in repr(opened)


def test_a_wrapped_key_for_one_agent_cannot_be_opened_by_another() -> None:
    k0 = generate_data_key()
    for_alice = wrap_for(ALICE, k0)
    with pytest.raises(SegmentRejected, match="another agent"):
        unwrap_key(
            for_alice, memory_id=MEMORY, agent_did=BOB.did, private=BOB.agreement, owner=OWNER
        )
    with pytest.raises(SegmentRejected, match="did not open"):
        unwrap_key(
            for_alice, memory_id=MEMORY, agent_did=ALICE.did, private=BOB.agreement, owner=OWNER
        )
    # Relabelled for Bob, it still does not open: the info binds Alice's DID.
    relabelled = WrappedKey(BOB.did, 0, for_alice.enc, for_alice.ct)
    with pytest.raises(SegmentRejected, match="did not open"):
        unwrap_key(
            relabelled, memory_id=MEMORY, agent_did=BOB.did, private=BOB.agreement, owner=OWNER
        )


def test_a_wrapped_key_is_bound_to_its_memory_and_epoch() -> None:
    k0 = generate_data_key()
    wrapped = wrap_for(BOB, k0, epoch=0)
    with pytest.raises(SegmentRejected, match="did not open"):
        unwrap_key(
            wrapped,
            memory_id=memory_id_for(ALICE.did),  # another memory of the same owner
            agent_did=BOB.did,
            private=BOB.agreement,
            owner=OWNER,
        )
    moved = WrappedKey(BOB.did, 1, wrapped.enc, wrapped.ct)
    with pytest.raises(SegmentRejected):
        unwrap_key(moved, memory_id=MEMORY, agent_did=BOB.did, private=BOB.agreement, owner=OWNER)
    assert key_info(MEMORY, 1, BOB.did) == (
        b"trustwire/memory-key/v1" + MEMORY.encode() + (1).to_bytes(8, "big") + BOB.did.encode()
    )


@pytest.mark.parametrize(
    "change",
    [
        {"enc": "AAAA"},
        {"ct": "!!!"},
        {"epoch": -1},
        {"epoch": True},
        {"agent": 7},
        {"enc": b64(bytes(33))},
        {"ct": b64(bytes(4096))},
    ],
)
def test_a_malformed_wrapped_key_is_rejected(change: dict[str, Any]) -> None:
    data = {**wrap_for(BOB, generate_data_key()).to_json(), **change}
    with pytest.raises(SegmentRejected, match="malformed"):
        unwrap_key(data, memory_id=MEMORY, agent_did=BOB.did, private=BOB.agreement, owner=OWNER)


def test_a_wrapped_key_must_be_signed_by_the_owner_or_an_admin_it_certified() -> None:
    """A coordinator (or anyone) can seal a data key of its own to an agent's public key;
    without the owner's signature, or an admin's with the owner's certificate, it is
    refused."""
    k = generate_data_key()
    forged = wrap_for(BOB, k, wrapper=MALLORY)
    with pytest.raises(SegmentRejected, match="did not make an admin"):
        unwrap_for(BOB, forged)
    # A certificate Mallory signed herself (as a coordinator listing itself as admin would).
    self_made = certify_admin(MALLORY, memory_id=MEMORY, admin_did=MALLORY.did)
    with pytest.raises(SegmentRejected, match="did not make an admin"):
        unwrap_for(BOB, wrap_for(BOB, k, wrapper=MALLORY, wrapper_certificate=self_made))
    # The owner's certificate, but for another agent or another memory.
    for certificate in (
        certify_admin(ALICE, memory_id=MEMORY, admin_did=BOB.did),
        certify_admin(ALICE, memory_id=memory_id_for(ALICE.did), admin_did=MALLORY.did),
    ):
        with pytest.raises(SegmentRejected, match="did not make an admin"):
            unwrap_for(BOB, wrap_for(BOB, k, wrapper=MALLORY, wrapper_certificate=certificate))
    # The owner's certificate with its expiry changed does not verify.
    real = certify_admin(ALICE, memory_id=MEMORY, admin_did=MALLORY.did, expires_ms=1000)
    stretched = AdminCertificate(real.signature, expires_ms=0)
    with pytest.raises(SegmentRejected, match="did not make an admin"):
        unwrap_for(BOB, wrap_for(BOB, k, wrapper=MALLORY, wrapper_certificate=stretched))
    # With the owner's certificate naming her, Mallory is an admin: accepted, even though
    # the certificate has expired since (she was entitled when she wrapped it).
    opened = unwrap_key(
        wrap_for(BOB, k, wrapper=MALLORY, wrapper_certificate=real),
        memory_id=MEMORY,
        agent_did=BOB.did,
        private=BOB.agreement,
        owner=OWNER,
    )
    assert opened.data_key == k and opened.wrapper == MALLORY.did
    # A wrapper's signature covers the memory, the epoch, the recipient and the key.
    assert key_statement(MEMORY, 0, BOB.did, k) != key_statement(MEMORY, 1, BOB.did, k)


def test_the_wrapped_key_plaintext_has_a_fixed_layout() -> None:
    k = generate_data_key()
    wrapper_cert = certify_admin(ALICE, memory_id=MEMORY, admin_did=MALLORY.did, expires_ms=7)
    recipient_cert = certify_admin(ALICE, memory_id=MEMORY, admin_did=BOB.did)
    wrapped = wrap_for(
        BOB,
        k,
        epoch=3,
        wrapper=MALLORY,
        wrapper_certificate=wrapper_cert,
        recipient_certificate=recipient_cert,
    )
    plaintext = hpke.open(BOB.agreement, wrapped.enc, wrapped.ct, info=key_info(MEMORY, 3, BOB.did))
    assert len(plaintext) == 32 + 64 + 64 + 72 + 72 == WRAPPED_PLAINTEXT_SIZE
    assert plaintext[:32] == k
    assert plaintext[32:96] == did_field(MALLORY.did)
    verify_key_of(MALLORY.did).verify(plaintext[96:160], key_statement(MEMORY, 3, BOB.did, k))
    assert plaintext[160:232] == wrapper_cert.signature + (7).to_bytes(8, "big")
    assert plaintext[232:] == recipient_cert.signature + bytes(8)
    verify_key_of(ALICE.did).verify(plaintext[232:296], admin_statement(MEMORY, BOB.did, 0))
    mem, did = MEMORY.encode(), BOB.did.encode()
    assert admin_statement(MEMORY, BOB.did, 7) == (
        b"trustwire/memory-admin/v1"
        + len(mem).to_bytes(2, "big")
        + mem
        + len(did).to_bytes(2, "big")
        + did
        + (7).to_bytes(8, "big")
    )
    # The owner wraps with no certificate of its own: those 72 bytes are zeros.
    owners = wrap_for(BOB, k)
    plain = hpke.open(BOB.agreement, owners.enc, owners.ct, info=key_info(MEMORY, 0, BOB.did))
    assert plain[32:96] == did_field(ALICE.did) and plain[160:] == bytes(144)


def test_the_recipient_admin_certificate_round_trips() -> None:
    k = generate_data_key()
    certificate = certify_admin(ALICE, memory_id=MEMORY, admin_did=BOB.did, expires_ms=99)
    opened = unwrap_key(
        wrap_for(BOB, k, recipient_certificate=certificate),
        memory_id=MEMORY,
        agent_did=BOB.did,
        private=BOB.agreement,
        owner=OWNER,
    )
    assert opened.admin_certificate == certificate and opened.data_key == k
    assert certificate.valid_for(memory_id=MEMORY, admin_did=BOB.did, owner_did=ALICE.did)
    assert certificate.expired(0.099) and not certificate.expired(0.098)
    # A certificate for someone else, or not signed by the owner, is not handed back.
    for other in (
        certify_admin(ALICE, memory_id=MEMORY, admin_did=MALLORY.did),
        certify_admin(MALLORY, memory_id=MEMORY, admin_did=BOB.did),
    ):
        opened = unwrap_key(
            wrap_for(BOB, k, recipient_certificate=other),
            memory_id=MEMORY,
            agent_did=BOB.did,
            private=BOB.agreement,
            owner=OWNER,
        )
        assert opened.data_key == k and opened.admin_certificate is None


def test_a_wrapped_key_with_a_bad_layout_is_rejected() -> None:
    k = generate_data_key()
    signature = ALICE.signing_key.sign(key_statement(MEMORY, 0, BOB.did, k))
    good = k + did_field(ALICE.did) + signature + bytes(144)
    assert unwrap_for(BOB, seal_plaintext(BOB, good)) == k
    bad_fields = {
        "padding": k + did_field(ALICE.did)[:-1] + b"\x01" + signature + bytes(144),
        "length": k + b"\x00" + did_field(ALICE.did)[1:] + signature + bytes(144),
        "not a DID": k + did_field("did:web:example.com") + signature + bytes(144),
    }
    for plaintext in bad_fields.values():
        with pytest.raises(SegmentRejected, match="names no valid wrapper"):
            unwrap_for(BOB, seal_plaintext(BOB, plaintext))
    # The DID field names the owner, but the signature is Mallory's.
    mallory_signed = MALLORY.signing_key.sign(key_statement(MEMORY, 0, BOB.did, k))
    with pytest.raises(SegmentRejected, match="wrapper's signature"):
        unwrap_for(BOB, seal_plaintext(BOB, k + did_field(ALICE.did) + mallory_signed + bytes(144)))
    # The old layout (key and signature only) has the wrong size.
    for plaintext in (k + signature, good + b"\x00"):
        with pytest.raises(SegmentRejected):
            unwrap_for(BOB, seal_plaintext(BOB, plaintext))


def test_after_revocation_the_old_epoch_key_cannot_open_new_segments() -> None:
    # Epoch 0 key held by Alice and Bob; Bob is revoked: epoch 1's key goes to Alice only.
    k0 = generate_data_key()
    bobs_k0 = unwrap_for(BOB, wrap_for(BOB, k0))
    k1 = generate_data_key()
    wrapped_for_alice = wrap_for(ALICE, k1, epoch=1)
    after = sealed(data_key=k1, epoch=1, key="after")
    # Bob tries everything he has: his epoch-0 key for epoch 1, and Alice's wrapped key.
    rejected(after, lambda epoch: bobs_k0)
    rejected(after, keys_for(bobs_k0))
    with pytest.raises(SegmentRejected):
        unwrap_key(
            wrapped_for_alice,
            memory_id=MEMORY,
            agent_did=ALICE.did,
            private=BOB.agreement,
            owner=OWNER,
        )
    # Alice reads it, and anything Bob saw before (epoch 0) stays readable with k0.
    alice_k1 = unwrap_for(ALICE, wrapped_for_alice)
    assert (
        open_segment(after, memory_id=MEMORY, data_key_for=keys_for(k0, alice_k1)).value == CANARY
    )
    before = sealed(data_key=k0, epoch=0)
    assert open_segment(before, memory_id=MEMORY, data_key_for=keys_for(bobs_k0)).value == CANARY


# --- limits ------------------------------------------------------------------------------


def test_values_up_to_the_limit_seal_and_larger_ones_are_refused() -> None:
    k0 = generate_data_key()
    big = sealed(data_key=k0, value=bytes(MAX_VALUE_SIZE))
    assert (
        len(open_segment(big, memory_id=MEMORY, data_key_for=keys_for(k0)).value) == MAX_VALUE_SIZE
    )
    with pytest.raises(ValueError, match="limited"):
        sealed(data_key=k0, value=bytes(MAX_VALUE_SIZE + 1))


def test_an_oversized_ciphertext_is_rejected_before_any_crypto() -> None:
    k0 = generate_data_key()
    segment = sealed(data_key=k0)
    segment["ciphertext"] = b64(bytes(MAX_VALUE_SIZE + 17))
    assert "ciphertext" in str(rejected(segment, keys_for(k0)))


@pytest.mark.parametrize(
    "key", ["", "x" * (MAX_KEY_LENGTH + 1), "a\nb", "a\x00b", "tab\there", "del\x7f", "\ud800"]
)
def test_invalid_segment_keys_are_refused_on_seal_and_on_open(key: str) -> None:
    k0 = generate_data_key()
    with pytest.raises(ValueError):
        sealed(data_key=k0, key=key)
    segment = sealed(data_key=k0)
    segment["key"] = key
    assert "bad key" in str(rejected(segment, keys_for(k0)))


def test_the_longest_valid_key_round_trips() -> None:
    k0 = generate_data_key()
    key = "ключ" * (MAX_KEY_LENGTH // 4)
    assert (
        open_segment(sealed(data_key=k0, key=key), memory_id=MEMORY, data_key_for=keys_for(k0)).key
        == key
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 0),
        ("version", True),
        ("version", 2**64),
        ("version", "1"),
        ("epoch", -1),
        ("epoch", 1.0),
        ("writer", "did:key:z6Mk-not-a-key"),
        ("writer", None),
        ("nonce", b64(bytes(11))),
        ("hash", b64(bytes(31))),
        ("signature", b64(bytes(63))),
        ("ciphertext", b64(bytes(15))),
        ("ciphertext", "not base64!"),
        ("hash", None),
    ],
)
def test_a_malformed_field_is_rejected(field: str, value: Any) -> None:
    k0 = generate_data_key()
    segment = sealed(data_key=k0)
    segment[field] = value
    assert "malformed" in str(rejected(segment, keys_for(k0)))


def test_a_missing_field_or_a_non_object_is_rejected() -> None:
    k0 = generate_data_key()
    for name in ("key", "version", "epoch", "writer", "nonce", "ciphertext", "hash", "signature"):
        segment = sealed(data_key=k0)
        del segment[name]
        rejected(segment, keys_for(k0))
    for junk in (None, [], "segment", 42):
        rejected(junk, keys_for(k0))


# --- fuzzing -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["key", "version", "epoch", "writer", "nonce", "ciphertext", "hash", "signature"]
FUZZ_KEY = generate_data_key()
FUZZ_SEGMENT = sealed(data_key=FUZZ_KEY, version=4)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_open_segment_on_arbitrary_json_raises_only_segment_rejected(data: Any) -> None:
    with pytest.raises(SegmentRejected):
        open_segment(data, memory_id=MEMORY, data_key_for=lambda epoch: FUZZ_KEY)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON | st.binary(max_size=80).map(b64), min_size=1))
def test_open_segment_on_a_mutated_valid_segment_raises_only_segment_rejected(
    changes: dict[str, Any],
) -> None:
    segment = {**FUZZ_SEGMENT, **changes}
    try:
        opened = open_segment(segment, memory_id=MEMORY, data_key_for=lambda epoch: FUZZ_KEY)
    except SegmentRejected:
        return
    # Only an unchanged segment may open (a change can coincide with the original value).
    assert all(FUZZ_SEGMENT[name] == value for name, value in changes.items())
    assert opened.value == CANARY
