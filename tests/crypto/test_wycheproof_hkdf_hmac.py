"""Wycheproof HKDF-SHA256 and HMAC-SHA256/SHA512 vectors through the hash recipes.

HKDF runs through :func:`hkdf_sha256`; its only ``invalid`` cases ask for more than
255 * 32 bytes, which the recipe refuses with ``ValueError``. HMAC runs through
``HASHES[...].hmac`` (the function Noise's HKDF is built on); for truncated-tag groups
the first ``tagSize`` bits are compared, and no ``invalid`` tag may match.
"""

from __future__ import annotations

from typing import Any

import pytest

from _vectors import load_json
from trustwire.crypto.hashes import HASHES, constant_time_equal, hkdf_sha256

HKDF: dict[str, Any] = load_json("wycheproof", "hkdf_sha256_test.json")
HMAC_FILES = {"SHA256": "hmac_sha256_test.json", "SHA512": "hmac_sha512_test.json"}
HMAC: dict[str, dict[str, Any]] = {
    name: load_json("wycheproof", file) for name, file in HMAC_FILES.items()
}


def test_hkdf_sha256_matches_every_wycheproof_case() -> None:
    ran = 0
    for group in HKDF["testGroups"]:
        for test in group["tests"]:
            ikm, salt, info, okm = (
                bytes.fromhex(test[name]) for name in ("ikm", "salt", "info", "okm")
            )
            if test["result"] == "valid":
                assert hkdf_sha256(ikm, salt=salt, info=info, length=test["size"]) == okm
            else:
                assert test["size"] > 255 * 32, test["tcId"]
                with pytest.raises(ValueError):
                    hkdf_sha256(ikm, salt=salt, info=info, length=test["size"])
            ran += 1
    assert ran == HKDF["numberOfTests"] == 86


@pytest.mark.parametrize("hash_name", sorted(HMAC_FILES))
def test_hmac_matches_every_wycheproof_case(hash_name: str) -> None:
    data = HMAC[hash_name]
    hash_function = HASHES[hash_name]
    ran = 0
    for group in data["testGroups"]:
        tag_bytes = group["tagSize"] // 8
        for test in group["tests"]:
            key, msg, tag = (bytes.fromhex(test[name]) for name in ("key", "msg", "tag"))
            assert len(tag) == tag_bytes
            computed = hash_function.hmac(key, msg)[:tag_bytes]
            if test["result"] == "valid":
                assert constant_time_equal(computed, tag), test["tcId"]
            else:
                assert test["result"] == "invalid"
                assert not constant_time_equal(computed, tag), test["tcId"]
            ran += 1
    assert ran == data["numberOfTests"] == 174
    assert {g["tagSize"] for g in data["testGroups"]} == {
        hash_function.hashlen * 8,
        hash_function.hashlen * 4,
    }
