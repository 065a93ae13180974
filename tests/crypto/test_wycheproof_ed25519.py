"""Wycheproof Ed25519 verification vectors (including the RFC 8032 KATs) through VerifyKey."""

from __future__ import annotations

from typing import Any

import pytest

from _vectors import load_json
from trustwire.crypto.signing import VerifyKey
from trustwire.errors import InvalidSignature

VECTORS: dict[str, Any] = load_json("wycheproof", "ed25519_test.json")
CASES: list[tuple[str, dict[str, Any]]] = [
    (group["publicKey"]["pk"], test) for group in VECTORS["testGroups"] for test in group["tests"]
]


def test_every_vector_in_the_file_is_collected() -> None:
    assert len(CASES) == VECTORS["numberOfTests"] == 151
    assert {test["result"] for _, test in CASES} <= {"valid", "invalid", "acceptable"}
    assert any("Ktv" in test["flags"] for _, test in CASES)  # the RFC 8032 answers


@pytest.mark.parametrize(
    ("public_hex", "test"), CASES, ids=[f"tc{test['tcId']}" for _, test in CASES]
)
def test_verify_matches_the_wycheproof_verdict(public_hex: str, test: dict[str, Any]) -> None:
    key = VerifyKey.from_bytes(bytes.fromhex(public_hex))
    message = bytes.fromhex(test["msg"])
    signature = bytes.fromhex(test["sig"])
    if test["result"] == "valid":
        key.verify(signature, message)
    elif test["result"] == "invalid":
        with pytest.raises(InvalidSignature):
            key.verify(signature, message)
    else:  # "acceptable": either verdict is allowed, but only as a clean outcome
        try:
            key.verify(signature, message)
        except InvalidSignature:
            pass
