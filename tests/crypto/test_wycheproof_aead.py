"""Wycheproof AES-GCM and ChaCha20-Poly1305 vectors through the AEAD recipes.

AES-GCM: only the groups with 96-bit IVs and 256-bit keys run, because :class:`AesGcm`
is AES-256-GCM with 12-byte nonces by contract; the 128/192-bit keys of the other groups
are refused by the recipe (checked below) rather than exercised. ChaCha20-Poly1305: every
group, including the ones with nonces that are not 96 bits, which must be refused.
"""

from __future__ import annotations

from typing import Any

import pytest

from _vectors import load_json
from trustwire.crypto.aead import Aead, AesGcm, ChaChaPoly
from trustwire.errors import DecryptionFailed

AES_GCM: dict[str, Any] = load_json("wycheproof", "aes_gcm_test.json")
CHACHA: dict[str, Any] = load_json("wycheproof", "chacha20_poly1305_test.json")

AES_GROUPS = [g for g in AES_GCM["testGroups"] if g["ivSize"] == 96 and g["keySize"] == 256]
CHACHA_GROUPS = list(CHACHA["testGroups"])


def run_group(cipher: type[Aead], group: dict[str, Any]) -> int:
    """Check every case of a group; return how many ran."""
    ran = 0
    for test in group["tests"]:
        key, iv, aad, msg, ct, tag = (
            bytes.fromhex(test[name]) for name in ("key", "iv", "aad", "msg", "ct", "tag")
        )
        aead = cipher(key)
        if test["result"] == "valid":
            assert aead.seal(iv, msg, aad) == ct + tag, test["tcId"]
            assert aead.open(iv, ct + tag, aad) == msg, test["tcId"]
        else:
            assert test["result"] == "invalid", test["tcId"]
            with pytest.raises(DecryptionFailed):
                aead.open(iv, ct + tag, aad)
            if len(iv) != 12:  # the recipe refuses to seal with such a nonce, too
                with pytest.raises(ValueError, match="nonce"):
                    aead.seal(iv, msg, aad)
        ran += 1
    return ran


def test_the_files_hold_the_expected_number_of_cases() -> None:
    for data in (AES_GCM, CHACHA):
        assert sum(len(g["tests"]) for g in data["testGroups"]) == data["numberOfTests"]
    assert sum(len(g["tests"]) for g in AES_GROUPS) == 66
    assert sum(len(g["tests"]) for g in CHACHA_GROUPS) == CHACHA["numberOfTests"] == 325


@pytest.mark.parametrize("group", AES_GROUPS, ids=lambda g: f"iv{g['ivSize']}-key{g['keySize']}")
def test_aes_gcm_matches_wycheproof(group: dict[str, Any]) -> None:
    assert run_group(AesGcm, group) == len(group["tests"]) > 0


@pytest.mark.parametrize("group", CHACHA_GROUPS, ids=lambda g: f"iv{g['ivSize']}")
def test_chacha20_poly1305_matches_wycheproof(group: dict[str, Any]) -> None:
    assert run_group(ChaChaPoly, group) == len(group["tests"]) > 0


@pytest.mark.parametrize("key_size", [128, 192])
def test_aes_gcm_recipe_refuses_keys_shorter_than_256_bits(key_size: int) -> None:
    group = next(g for g in AES_GCM["testGroups"] if g["keySize"] == key_size and g["ivSize"] == 96)
    with pytest.raises(ValueError, match="32 bytes"):
        AesGcm(bytes.fromhex(group["tests"][0]["key"]))
