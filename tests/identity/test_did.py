"""did:key encoding against the W3C CCG did:key vectors, plus malformed-input handling."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import base58
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _vectors import load_json
from trustwire.crypto.dh import X25519
from trustwire.crypto.signing import SigningKey
from trustwire.errors import InvalidDid
from trustwire.identity.did import (
    DID_KEY_PREFIX,
    MAX_DID_LENGTH,
    did_from_ed25519,
    ed25519_from_did,
    is_did,
    x25519_from_multibase,
    x25519_multibase,
)

ED25519_VECTORS: dict[str, Any] = load_json("did-key", "ed25519-x25519.json")
X25519_VECTORS: dict[str, Any] = load_json("did-key", "x25519.json")["didDocument"]


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _public_key(method: dict[str, Any]) -> bytes:
    """The raw public key of a verification method, in base58 or JWK form."""
    if "publicKeyBase58" in method:
        return base58.b58decode(method["publicKeyBase58"])
    return _b64url(method["publicKeyJwk"]["x"])


def _private_key(method: dict[str, Any]) -> bytes:
    if "privateKeyBase58" in method:
        return base58.b58decode(method["privateKeyBase58"])
    return _b64url(method["privateKeyJwk"]["d"])


def _x25519_private_from_seed(seed: bytes) -> bytes:
    """Clamped SHA-512(seed)[:32]: the X25519 scalar matching the Ed25519 key of ``seed``."""
    scalar = bytearray(hashlib.sha512(seed).digest()[:32])
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return bytes(scalar)


def _check_ed25519_entry(did: str, entry: dict[str, Any]) -> None:
    verification = entry["verificationKeyPair"]
    agreement = entry["keyAgreementKeyPair"]
    ed_public = _public_key(verification)
    x_public = _public_key(agreement)

    # DID <-> Ed25519 public key, both ways.
    assert did_from_ed25519(ed_public) == did
    assert ed25519_from_did(did) == ed_public
    assert is_did(did)

    # keyAgreement multibase <-> X25519 public key, both ways.
    x_multibase = agreement["id"].split("#", 1)[1]
    assert x25519_multibase(x_public) == x_multibase
    assert x25519_from_multibase(x_multibase) == x_public

    # From the seed: our Ed25519 key and the derived X25519 key reproduce the vector.
    seed = bytes.fromhex(entry["seed"])
    signing_key = SigningKey.from_bytes(seed)
    assert signing_key.public_key.to_bytes() == ed_public
    x_private = _x25519_private_from_seed(seed)
    assert x_private == _private_key(agreement)
    assert X25519.public_from_private(x_private) == x_public
    if "privateKeyJwk" in verification:
        assert _b64url(verification["privateKeyJwk"]["d"]) == seed

    # The DID document's ids are the ones our encoding produces.
    document = entry["didDocument"]
    ed_multibase = did[len(DID_KEY_PREFIX) :]
    assert document["id"] == did
    methods = {method["id"]: method for method in document["verificationMethod"]}
    assert set(methods) == {f"{did}#{ed_multibase}", f"{did}#{x_multibase}"}
    assert _public_key(methods[f"{did}#{ed_multibase}"]) == ed_public
    assert _public_key(methods[f"{did}#{x_multibase}"]) == x_public
    assert document["authentication"] == [f"{did}#{ed_multibase}"]
    assert document["keyAgreement"] == [f"{did}#{x_multibase}"]


def test_every_ed25519_x25519_vector_round_trips() -> None:
    checked = 0
    for did, entry in ED25519_VECTORS.items():
        _check_ed25519_entry(did, entry)
        checked += 1
    assert checked == len(ED25519_VECTORS) == 5


def test_the_jwk_entry_is_among_the_vectors_checked() -> None:
    jwk_entries = [
        entry
        for entry in ED25519_VECTORS.values()
        if "publicKeyJwk" in entry["verificationKeyPair"]
    ]
    assert len(jwk_entries) == 1
    assert jwk_entries[0]["keyAgreementKeyPair"]["publicKeyJwk"]["crv"] == "X25519"


def test_every_x25519_vector_round_trips() -> None:
    checked = 0
    for did, document in X25519_VECTORS.items():
        multibase = did[len(DID_KEY_PREFIX) :]
        (method,) = document["verificationMethod"]
        public = _public_key(method)
        assert x25519_from_multibase(multibase) == public
        assert x25519_multibase(public) == multibase
        assert document["id"] == did
        assert method["id"] == f"{did}#{multibase}"
        assert document["keyAgreement"] == [f"{did}#{multibase}"]
        # An X25519 did:key is not an identity DID.
        with pytest.raises(InvalidDid, match="multicodec"):
            ed25519_from_did(did)
        assert not is_did(did)
        checked += 1
    assert checked == len(X25519_VECTORS) == 4


def test_generated_key_round_trips() -> None:
    public = SigningKey.generate().public_key.to_bytes()
    did = did_from_ed25519(public)
    assert did.startswith("did:key:z6Mk")
    assert ed25519_from_did(did) == public


VALID = next(iter(ED25519_VECTORS))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "not a did:key"),
        ("did:web:example.com", "not a did:key"),
        ("DID:KEY:" + VALID[8:], "not a did:key"),
        ("did:key:", "multibase"),
        ("did:key:" + "m" + VALID[9:], "multibase"),
        ("did:key:z", "base58"),
        ("did:key:z0OIl", "base58"),  # characters outside the base58 alphabet
        (VALID + "#" + VALID[8:], "base58"),  # a DID URL, not a DID
        (VALID + "/path", "base58"),
        (VALID + " ", "base58"),
        ("did:key:z" + base58.b58encode(b"\xed\x01" + bytes(31)).decode(), "32 bytes"),
        ("did:key:z" + base58.b58encode(b"\xed\x01" + bytes(33)).decode(), "32 bytes"),
        ("did:key:z" + base58.b58encode(b"\xe7\x01" + bytes(33)).decode(), "multicodec"),
        ("did:key:z" + base58.b58encode(b"\xed" + bytes(32)).decode(), "multicodec"),
        ("did:key:z1" + VALID[9:], "canonical|multicodec"),  # a leading zero byte
        ("did:key:z" + "1" * 2000, "longer than"),
        (VALID + "a" * (MAX_DID_LENGTH - len(VALID) + 1), "longer than"),
    ],
)
def test_ed25519_from_did_rejects_malformed_input(value: str, reason: str) -> None:
    with pytest.raises(InvalidDid, match=reason):
        ed25519_from_did(value)
    assert not is_did(value)


@pytest.mark.parametrize("value", [None, 42, b"did:key:z6Mk", ["did:key:"]])
def test_ed25519_from_did_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidDid):
        ed25519_from_did(value)  # type: ignore[arg-type]
    assert not is_did(value)


def test_x25519_from_multibase_rejects_an_ed25519_key() -> None:
    with pytest.raises(InvalidDid, match="multicodec"):
        x25519_from_multibase(VALID[len(DID_KEY_PREFIX) :])


def test_x25519_from_multibase_rejects_overlong_input() -> None:
    with pytest.raises(InvalidDid, match="longer than"):
        x25519_from_multibase("z" + "1" * 10_000)


def test_error_message_does_not_echo_the_input() -> None:
    marker = "Zq" * 20
    with pytest.raises(InvalidDid) as caught:
        ed25519_from_did("did:key:z" + marker)
    assert marker not in str(caught.value)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_encoders_refuse_wrong_key_sizes(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        did_from_ed25519(bytes(size))
    with pytest.raises(ValueError, match="32 bytes"):
        x25519_multibase(bytes(size))


@given(st.text(max_size=300))
def test_random_strings_only_raise_invalid_did(value: str) -> None:
    try:
        public = ed25519_from_did(value)
    except InvalidDid:
        return
    assert did_from_ed25519(public) == value


@given(st.text(alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", max_size=80))
def test_random_base58_bodies_only_raise_invalid_did(body: str) -> None:
    for parse in (
        lambda: ed25519_from_did("did:key:z" + body),
        lambda: x25519_from_multibase("z" + body),
    ):
        try:
            parse()
        except InvalidDid:
            pass


@given(st.binary(min_size=32, max_size=32))
def test_any_32_byte_key_round_trips(public: bytes) -> None:
    assert ed25519_from_did(did_from_ed25519(public)) == public
    assert x25519_from_multibase(x25519_multibase(public)) == public
