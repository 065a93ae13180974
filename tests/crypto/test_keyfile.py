"""Private key files: 0600, atomic, encrypted under a passphrase, strict on reading."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustwire.crypto.dh import X25519
from trustwire.crypto.keyfile import (
    MAX_KEY_FILE_SIZE,
    PASSPHRASE_ENV,
    decode_private_key,
    passphrase_from_env,
    read_agreement_key,
    read_pem_key,
    read_signing_key,
    write_agreement_key,
    write_file_atomic,
    write_pem_key,
    write_signing_key,
)
from trustwire.crypto.signing import SigningKey
from trustwire.crypto.x509 import TlsKey
from trustwire.errors import KeyFileError

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 0, so only the code under test can narrow file modes."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _der_body(pem: bytes) -> bytes:
    lines = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    return base64.b64decode(b"".join(lines))


@pytest.mark.usefixtures("open_umask")
@pytest.mark.parametrize("passphrase", [None, PASSPHRASE])
def test_key_files_are_created_exactly_0600(tmp_path: Path, passphrase: str | None) -> None:
    signing = tmp_path / "identity.key"
    agreement = tmp_path / "agreement.key"
    tls = tmp_path / "tls.key"
    write_signing_key(signing, SigningKey.generate(), passphrase)
    write_agreement_key(agreement, X25519.generate(), passphrase)
    write_pem_key(tls, TlsKey.generate().to_pem(), passphrase)
    for path in (signing, agreement, tls):
        assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "agreement.key",
        "identity.key",
        "tls.key",
    ]


@pytest.mark.usefixtures("open_umask")
def test_overwriting_a_wide_file_leaves_it_0600(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_signing_key(path, SigningKey.generate(), None)
    assert _mode(path) == 0o600


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE, PASSPHRASE.encode()])
def test_signing_key_round_trips(tmp_path: Path, passphrase: str | bytes | None) -> None:
    key = SigningKey.generate()
    path = tmp_path / "identity.key"
    write_signing_key(path, key, passphrase)
    assert read_signing_key(path, passphrase).to_bytes() == key.to_bytes()


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE])
def test_agreement_key_round_trips(tmp_path: Path, passphrase: str | None) -> None:
    keypair = X25519.generate()
    path = tmp_path / "agreement.key"
    write_agreement_key(path, keypair, passphrase)
    assert read_agreement_key(path, passphrase) == keypair


def test_tls_pem_key_round_trips_to_clear_pem(tmp_path: Path) -> None:
    key = TlsKey.generate()
    path = tmp_path / "tls.key"
    write_pem_key(path, key.to_pem(), PASSPHRASE)
    assert b"ENCRYPTED" in path.read_bytes()
    clear = read_pem_key(path, PASSPHRASE)
    assert b"ENCRYPTED" not in clear
    assert TlsKey.from_pem(clear).public_bytes() == key.public_bytes()


def test_clear_file_holds_the_seed_but_encrypted_file_does_not(tmp_path: Path) -> None:
    key = SigningKey.generate()
    seed = key.to_bytes()
    clear = tmp_path / "clear.key"
    sealed = tmp_path / "sealed.key"
    write_signing_key(clear, key, None)
    write_signing_key(sealed, key, PASSPHRASE)
    # The control: an unencrypted PKCS#8 body contains the raw seed.
    assert seed in _der_body(clear.read_bytes())
    raw = sealed.read_bytes()
    assert raw.startswith(b"-----BEGIN TRUSTWIRE ENCRYPTED PRIVATE KEY-----")
    for encoding in (seed, seed.hex().encode(), base64.b64encode(seed)):
        assert encoding not in raw
        assert encoding not in _der_body(raw)
    assert PASSPHRASE.encode() not in raw


def test_encrypted_file_cannot_be_read_without_a_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    write_signing_key(path, SigningKey.generate(), PASSPHRASE)
    with pytest.raises(KeyFileError, match="encrypted and no passphrase") as caught:
        read_signing_key(path, None)
    assert str(path) in str(caught.value)


def test_encrypted_file_cannot_be_read_with_a_wrong_passphrase(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "identity.key"
    write_signing_key(path, key, PASSPHRASE)
    with pytest.raises(KeyFileError, match="wrong passphrase") as caught:
        read_signing_key(path, PASSPHRASE + "!")
    message = str(caught.value)
    assert str(path) in message
    assert key.to_bytes().hex() not in message
    assert PASSPHRASE not in message


def test_passphrase_given_for_a_clear_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    write_signing_key(path, SigningKey.generate(), None)
    with pytest.raises(KeyFileError, match="not encrypted"):
        read_signing_key(path, PASSPHRASE)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        bytes(range(256)),
    ],
)
def test_corrupt_files_raise_key_file_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.key"
    write_file_atomic(path, content)
    passphrase = PASSPHRASE if b"ENCRYPTED" in content else None
    with pytest.raises(KeyFileError) as caught:
        read_signing_key(path, passphrase)
    assert str(path) in str(caught.value)


def test_truncated_encrypted_file_raises_key_file_error(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    write_signing_key(path, SigningKey.generate(), PASSPHRASE)
    data = path.read_bytes()
    write_file_atomic(path, data[: len(data) // 2] + b"\n-----END ENCRYPTED PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError):
        read_signing_key(path, PASSPHRASE)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700, 0o601])
def test_group_or_other_accessible_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.key"
    write_signing_key(path, SigningKey.generate(), None)
    path.chmod(mode)
    if mode & 0o077:
        with pytest.raises(KeyFileError, match="allows group or other access") as caught:
            read_signing_key(path, None)
        assert str(path) in str(caught.value)
    else:
        read_signing_key(path, None)


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.key"
    write_signing_key(target, SigningKey.generate(), None)
    link = tmp_path / "identity.key"
    link.symlink_to(target)
    with pytest.raises(KeyFileError):
        read_signing_key(link, None)


def test_oversized_key_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    write_file_atomic(path, b"A" * (MAX_KEY_FILE_SIZE + 1))
    with pytest.raises(KeyFileError, match="larger than"):
        read_signing_key(path, None)


def test_missing_file_and_directory_raise_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot open"):
        read_signing_key(tmp_path / "absent.key", None)
    with pytest.raises(KeyFileError):
        read_signing_key(tmp_path, None)


def test_writing_into_a_missing_directory_raises_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot create"):
        write_signing_key(tmp_path / "absent" / "identity.key", SigningKey.generate(), None)


def test_reading_a_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agreement.key"
    write_agreement_key(path, X25519.generate(), None)
    with pytest.raises(KeyFileError, match="not an Ed25519"):
        read_signing_key(path, None)
    signing = tmp_path / "identity.key"
    write_signing_key(signing, SigningKey.generate(), None)
    with pytest.raises(KeyFileError, match="not an X25519"):
        read_agreement_key(signing, None)


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "data"
    write_file_atomic(path, b"one")
    write_file_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_empty_passphrase_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        write_signing_key(tmp_path / "k", SigningKey.generate(), "")


def test_passphrase_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    assert passphrase_from_env() is None
    monkeypatch.setenv(PASSPHRASE_ENV, "")
    assert passphrase_from_env() is None
    monkeypatch.setenv(PASSPHRASE_ENV, "pässword")
    assert passphrase_from_env() == "pässword".encode()


@given(st.binary(max_size=4096), st.sampled_from([None, PASSPHRASE]))
def test_random_key_file_contents_only_raise_key_file_error(
    data: bytes, passphrase: str | None
) -> None:
    with pytest.raises(KeyFileError):
        decode_private_key(data, passphrase, source="fuzz")
    armored = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + base64.encodebytes(data)
    armored += b"-----END ENCRYPTED PRIVATE KEY-----\n"
    with pytest.raises(KeyFileError):
        decode_private_key(armored, PASSPHRASE, source="fuzz")
