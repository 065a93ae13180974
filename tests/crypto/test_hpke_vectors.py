"""RFC 9180 HPKE test vectors through :mod:`trustwire.crypto.hpke`.

Selected: every base-mode (mode 0) vector whose suite the wrapper exposes — KEM
DHKEM(X25519, HKDF-SHA256) (0x0020) with any of the HKDF-SHA256/384/512 KDFs and any of the
AES-128-GCM / AES-256-GCM / ChaCha20-Poly1305 AEADs (export-only suites carry no encryptions).
For each, the recipient key pair must match (``pkRm`` from ``skRm``), and the encryption at
sequence number 0 (the one a single-shot ``open`` can reach: its nonce is the base nonce) must
decrypt with ``skRm`` and ``enc`` to the listed plaintext. The later encryptions of a vector
belong to a multi-message context, which the wrapper deliberately does not offer; one of them
is used to check that single-shot ``open`` refuses it. Tamper cases use the suite trustwire
itself uses (0x0020, 0x0001, 0x0002).
"""

from __future__ import annotations

from typing import Any

import pytest

from _vectors import load_json
from trustwire.crypto import hpke
from trustwire.crypto.dh import X25519
from trustwire.errors import CryptoError, DecryptionFailed

VECTORS: list[dict[str, Any]] = load_json("hpke", "test-vectors.json")
SELECTED: list[dict[str, Any]] = [
    v
    for v in VECTORS
    if v["mode"] == 0
    and v["kem_id"] == hpke.KEM_X25519_HKDF_SHA256
    and v["kdf_id"] in (hpke.KDF_HKDF_SHA256, hpke.KDF_HKDF_SHA384, hpke.KDF_HKDF_SHA512)
    and v["aead_id"] in (hpke.AEAD_AES_128_GCM, hpke.AEAD_AES_256_GCM, hpke.AEAD_CHACHA20_POLY1305)
]


def _suite_id(v: dict[str, Any]) -> str:
    return f"kem{v['kem_id']:#06x}-kdf{v['kdf_id']:#06x}-aead{v['aead_id']:#06x}"


def _suite(v: dict[str, Any]) -> hpke.HpkeSuite:
    return hpke.HpkeSuite(v["kem_id"], v["kdf_id"], v["aead_id"])


def _hex(v: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(v[name])


def check(v: dict[str, Any]) -> None:
    """Check one selected vector; raises on any mismatch."""
    suite = _suite(v)
    sk, enc, info = _hex(v, "skRm"), _hex(v, "enc"), _hex(v, "info")
    assert X25519.public_from_private(sk) == _hex(v, "pkRm")
    assert enc == _hex(v, "pkEm")
    first = v["encryptions"][0]
    assert first["nonce"] == v["base_nonce"]  # sequence number 0
    ct, aad, pt = (
        bytes.fromhex(first["ct"]),
        bytes.fromhex(first["aad"]),
        bytes.fromhex(first["pt"]),
    )
    assert suite.open(sk, enc, ct, info=info, aad=aad) == pt
    assert suite.open(X25519.keypair(sk), enc, ct, info=info, aad=aad) == pt


def test_every_selected_vector_runs() -> None:
    ran = 0
    for v in SELECTED:
        check(v)
        ran += 1
    suites = sorted({_suite_id(v) for v in SELECTED})
    # The file holds one base-mode vector per suite: 2 KDFs (SHA-256, SHA-512) x 3 AEADs.
    assert ran == len(SELECTED) == len(suites) == 6
    assert any(
        (v["kdf_id"], v["aead_id"]) == (hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_256_GCM)
        for v in SELECTED
    )
    print(f"HPKE RFC 9180: {ran} base-mode X25519 vectors opened ({', '.join(suites)})")


@pytest.mark.parametrize("v", SELECTED, ids=_suite_id)
def test_vector_opens_and_a_fresh_seal_round_trips(v: dict[str, Any]) -> None:
    check(v)
    suite = _suite(v)
    pt, info = bytes.fromhex(v["encryptions"][0]["pt"]), _hex(v, "info")
    enc, ct = suite.seal(_hex(v, "pkRm"), pt, info=info, aad=b"context")
    assert len(enc) == hpke.ENC_SIZE and len(ct) == len(pt) + hpke.TAG_SIZE
    assert suite.open(_hex(v, "skRm"), enc, ct, info=info, aad=b"context") == pt
    enc2, ct2 = suite.seal(_hex(v, "pkRm"), pt, info=info, aad=b"context")
    assert enc2 != enc and ct2 != ct  # a fresh ephemeral key every time


@pytest.mark.parametrize("v", SELECTED, ids=_suite_id)
def test_a_later_sequence_number_does_not_open_single_shot(v: dict[str, Any]) -> None:
    second = v["encryptions"][1]
    assert second["nonce"] != v["base_nonce"]
    with pytest.raises(DecryptionFailed):
        _suite(v).open(
            _hex(v, "skRm"),
            _hex(v, "enc"),
            bytes.fromhex(second["ct"]),
            info=_hex(v, "info"),
            aad=bytes.fromhex(second["aad"]),
        )


TRUSTWIRE_VECTOR = next(
    v
    for v in SELECTED
    if (v["kdf_id"], v["aead_id"]) == (hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_256_GCM)
)


def _flip(data: bytes, index: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def _tampered_cases() -> list[Any]:
    v = TRUSTWIRE_VECTOR
    first = v["encryptions"][0]
    good = {
        "private": _hex(v, "skRm"),
        "enc": _hex(v, "enc"),
        "ct": bytes.fromhex(first["ct"]),
        "info": _hex(v, "info"),
        "aad": bytes.fromhex(first["aad"]),
    }
    cases = {
        "flipped enc": {"enc": _flip(good["enc"])},
        "flipped ct": {"ct": _flip(good["ct"])},
        "flipped tag": {"ct": _flip(good["ct"], -1)},
        "flipped aad": {"aad": _flip(good["aad"])},
        "empty aad": {"aad": b""},
        "flipped info": {"info": _flip(good["info"])},
        "empty info": {"info": b""},
        "truncated ct": {"ct": good["ct"][:-1]},
        "ct shorter than a tag": {"ct": good["ct"][: hpke.TAG_SIZE - 1]},
        "short enc": {"enc": good["enc"][:-1]},
        "long enc": {"enc": good["enc"] + b"\x00"},
        "zero enc": {"enc": bytes(32)},
        "other private key": {"private": X25519.generate().private},
        "oversized info": {"info": bytes(hpke.MAX_INFO_SIZE + 1)},
        "oversized aad": {"aad": bytes(hpke.MAX_AAD_SIZE + 1)},
    }
    return [pytest.param({**good, **change}, id=name) for name, change in cases.items()]


def test_the_untampered_reference_opens() -> None:
    # Guards the tamper cases below against passing for an unrelated reason.
    first = TRUSTWIRE_VECTOR["encryptions"][0]
    v = TRUSTWIRE_VECTOR
    assert hpke.open(
        _hex(v, "skRm"),
        _hex(v, "enc"),
        bytes.fromhex(first["ct"]),
        info=_hex(v, "info"),
        aad=bytes.fromhex(first["aad"]),
    ) == bytes.fromhex(first["pt"])


@pytest.mark.parametrize("case", _tampered_cases())
def test_a_tampered_input_fails_to_open(case: dict[str, bytes]) -> None:
    with pytest.raises(DecryptionFailed):
        hpke.open(case["private"], case["enc"], case["ct"], info=case["info"], aad=case["aad"])


def test_seal_and_open_round_trip_with_the_trustwire_suite() -> None:
    pair = X25519.generate()
    enc, ct = hpke.seal(pair.public, b"k" * 32, info=b"trustwire/test")
    assert hpke.open(pair, enc, ct, info=b"trustwire/test") == b"k" * 32
    assert hpke.open(pair.private, enc, ct, info=b"trustwire/test") == b"k" * 32
    with pytest.raises(DecryptionFailed):
        hpke.open(pair, enc, ct, info=b"trustwire/other")
    with pytest.raises(DecryptionFailed):
        hpke.open(pair, enc, ct, info=b"trustwire/test", aad=b"x")


def test_seal_refuses_bad_recipient_keys_and_oversized_input() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        hpke.seal(bytes(31), b"x", info=b"")
    with pytest.raises(CryptoError):
        hpke.seal(bytes(32), b"x", info=b"")  # low-order point: the DH result would be zero
    public = X25519.generate().public
    with pytest.raises(ValueError, match="plaintext"):
        hpke.seal(public, bytes(hpke.MAX_PLAINTEXT_SIZE + 1), info=b"")
    with pytest.raises(ValueError, match="info"):
        hpke.seal(public, b"x", info=bytes(hpke.MAX_INFO_SIZE + 1))


def test_open_refuses_a_malformed_private_key_as_misuse() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        hpke.open(bytes(31), bytes(32), bytes(16), info=b"")


def test_only_x25519_suites_with_known_ids_can_be_built() -> None:
    with pytest.raises(ValueError, match="X25519"):
        hpke.HpkeSuite(0x0010, 1, 2)
    with pytest.raises(ValueError, match="KDF"):
        hpke.HpkeSuite(0x0020, 9, 2)
    with pytest.raises(ValueError, match="AEAD"):
        hpke.HpkeSuite(0x0020, 1, 0xFFFF)
    assert hpke.SUITE == hpke.HpkeSuite(0x0020, 0x0001, 0x0002)
