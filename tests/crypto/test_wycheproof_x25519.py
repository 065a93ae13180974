"""Wycheproof X25519 vectors through :data:`trustwire.crypto.dh.X25519`.

Every case runs, through both ``dh(private, public)`` and ``exchange(keypair, public)``.
``valid`` cases must give the expected secret. ``acceptable`` cases come in two kinds:
a peer key on the twist or in non-canonical form still gives the expected secret, while a
low-order peer key (the shared secret would be all zero, flag ``ZeroSharedSecret``) makes
our recipe raise :class:`~trustwire.errors.CryptoError`: pyca refuses an all-zero result,
and Noise handshakes depend on that refusal to stop a peer from forcing a known key.
"""

from __future__ import annotations

from typing import Any

import pytest

from _vectors import load_json
from trustwire.crypto.dh import X25519
from trustwire.errors import CryptoError

VECTORS: dict[str, Any] = load_json("wycheproof", "x25519_test.json")
CASES: list[dict[str, Any]] = [t for g in VECTORS["testGroups"] for t in g["tests"]]


def check(test: dict[str, Any]) -> None:
    private = bytes.fromhex(test["private"])
    public = bytes.fromhex(test["public"])
    shared = bytes.fromhex(test["shared"])
    pair = X25519.keypair(private)
    if test["result"] == "acceptable" and shared == bytes(32):
        assert "ZeroSharedSecret" in test["flags"]
        with pytest.raises(CryptoError):
            X25519.dh(private, public)
        with pytest.raises(CryptoError):
            X25519.exchange(pair, public)
    elif test["result"] in ("valid", "acceptable"):
        assert X25519.dh(private, public) == shared
        assert X25519.exchange(pair, public) == shared
    else:
        with pytest.raises(CryptoError):
            X25519.dh(private, public)


def test_every_case_in_the_file_runs() -> None:
    assert all(g["curve"] == "curve25519" for g in VECTORS["testGroups"])
    ran = 0
    for test in CASES:
        check(test)
        ran += 1
    assert ran == len(CASES) == VECTORS["numberOfTests"] == 518


@pytest.mark.parametrize("test", CASES[:8], ids=lambda t: f"tc{t['tcId']}")
def test_a_wrong_public_key_gives_a_different_secret(test: dict[str, Any]) -> None:
    # Guards against a check that cannot fail: one flipped bit must change the result.
    public = bytearray.fromhex(test["public"])
    public[0] ^= 0x02
    try:
        result = X25519.dh(bytes.fromhex(test["private"]), bytes(public))
    except CryptoError:
        return
    assert result != bytes.fromhex(test["shared"])


def test_public_keys_of_the_wrong_length_are_refused() -> None:
    private = bytes.fromhex(CASES[0]["private"])
    for length in (0, 31, 33):
        with pytest.raises(CryptoError):
            X25519.dh(private, bytes(length))
