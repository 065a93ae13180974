"""Unit and attack tests for the Noise implementation (the vectors live in test_noise_vectors)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustwire.crypto.aead import AesGcm, ChaChaPoly
from trustwire.crypto.dh import X448, X25519, KeyPair
from trustwire.crypto.random import set_random_source
from trustwire.errors import (
    DecryptionFailed,
    HandshakeFailed,
    NoiseError,
    TrustwireError,
)
from trustwire.protocol.noise import (
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    CipherState,
    HandshakeState,
)
from trustwire.protocol.noise_patterns import PATTERNS, parse_protocol_name

IK = "Noise_IK_25519_AESGCM_SHA256"
XX = "Noise_XX_25519_ChaChaPoly_BLAKE2s"
NN = "Noise_NN_25519_AESGCM_SHA256"


def keypair(seed: int) -> KeyPair:
    return X25519.keypair(hashlib.sha256(bytes([seed])).digest())


ALICE = keypair(1)
BOB = keypair(2)
MALLORY = keypair(3)


def ik_pair(
    *, prologue: tuple[bytes, bytes] = (b"", b""), rs: bytes | None = None
) -> tuple[HandshakeState, HandshakeState]:
    initiator = HandshakeState.initialize(
        IK, initiator=True, prologue=prologue[0], s=ALICE, rs=rs or BOB.public
    )
    responder = HandshakeState.initialize(IK, initiator=False, prologue=prologue[1], s=BOB)
    return initiator, responder


def complete(
    initiator: HandshakeState, responder: HandshakeState
) -> tuple[tuple[CipherState, CipherState], tuple[CipherState, CipherState]]:
    """Run the handshake to the end; return each side's (send, receive) cipher states."""
    sender, receiver = initiator, responder
    while not (initiator.is_complete and responder.is_complete):
        receiver.read_message(sender.write_message(b"payload"))
        sender, receiver = receiver, sender
    c1, c2 = initiator.split()
    r1, r2 = responder.split()
    return (c1, c2), (r2, r1)


@pytest.fixture
def pinned_random() -> Iterator[None]:
    counter = iter(range(1_000_000))

    def source(n: int) -> bytes:
        block = hashlib.sha512(next(counter).to_bytes(8, "big")).digest()
        return (block * (n // len(block) + 1))[:n]

    set_random_source(source)
    try:
        yield
    finally:
        set_random_source(None)


# -- handshakes -----------------------------------------------------------------------


def test_ik_handshake_authenticates_both_statics_and_agrees_on_keys() -> None:
    initiator, responder = ik_pair()
    (send, receive), (peer_send, peer_receive) = complete(initiator, responder)
    assert responder.remote_static == ALICE.public
    assert initiator.remote_static == BOB.public
    assert initiator.remote_ephemeral is not None and responder.remote_ephemeral is not None
    assert initiator.handshake_hash == responder.handshake_hash
    assert peer_receive.decrypt_with_ad(b"ad", send.encrypt_with_ad(b"ad", b"hi")) == b"hi"
    assert receive.decrypt_with_ad(b"", peer_send.encrypt_with_ad(b"", b"yo")) == b"yo"


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_every_pattern_completes_with_448_chachapoly_blake2b(name: str) -> None:
    protocol = f"Noise_{name}psk1_448_ChaChaPoly_BLAKE2b"
    pattern = parse_protocol_name(protocol).pattern
    pairs = {True: X448.keypair(bytes(range(56))), False: X448.keypair(bytes(range(1, 57)))}
    sides = []
    for initiator in (True, False):
        needs = pattern.needs(initiator)
        sides.append(
            HandshakeState.initialize(
                protocol,
                initiator=initiator,
                s=pairs[initiator] if "s" in needs else None,
                rs=pairs[not initiator].public if "rs" in needs else None,
                psks=[bytes(32)],
            )
        )
    (send, _), (_, peer_receive) = complete(sides[0], sides[1])
    assert peer_receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"x")) == b"x"


def test_tampered_handshake_message_is_rejected_and_kills_the_handshake() -> None:
    initiator, responder = ik_pair()
    message = initiator.write_message(b"hello")
    for position in (0, 40, len(message) - 1):  # ephemeral, encrypted static, tag
        _, victim = ik_pair()
        tampered = bytearray(message)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionFailed):
            victim.read_message(bytes(tampered))
        # The failed state cannot be continued, not even with the genuine message.
        with pytest.raises(NoiseError, match="unusable"):
            victim.read_message(message)
        with pytest.raises(NoiseError, match="unusable"):
            victim.write_message(b"")
    assert responder.read_message(message) == b"hello"


def test_wrong_prologue_fails_the_handshake() -> None:
    initiator, responder = ik_pair(prologue=(b"channel-1", b"channel-2"))
    with pytest.raises(DecryptionFailed):
        responder.read_message(initiator.write_message(b""))


def test_wrong_prologue_fails_even_where_the_first_message_is_cleartext() -> None:
    initiator = HandshakeState.initialize(NN, initiator=True, prologue=b"a")
    responder = HandshakeState.initialize(NN, initiator=False, prologue=b"b")
    assert responder.read_message(initiator.write_message(b"clear")) == b"clear"
    with pytest.raises(DecryptionFailed):
        initiator.read_message(responder.write_message(b""))


def test_psk_mismatch_fails_the_handshake() -> None:
    name = "Noise_NNpsk0_25519_AESGCM_SHA256"
    initiator = HandshakeState.initialize(name, initiator=True, psks=[b"\x01" * 32])
    responder = HandshakeState.initialize(name, initiator=False, psks=[b"\x02" * 32])
    with pytest.raises(DecryptionFailed):
        responder.read_message(initiator.write_message(b""))


def test_impersonated_responder_cannot_read_the_first_ik_message() -> None:
    # The initiator encrypts to Bob's registered key; Mallory holds a different one.
    initiator = HandshakeState.initialize(IK, initiator=True, s=ALICE, rs=BOB.public)
    mallory = HandshakeState.initialize(IK, initiator=False, s=MALLORY)
    with pytest.raises(DecryptionFailed):
        mallory.read_message(initiator.write_message(b"secret"))


def test_initiator_rejects_a_reply_from_the_wrong_responder() -> None:
    initiator = HandshakeState.initialize(XX, initiator=True, s=ALICE)
    responder = HandshakeState.initialize(XX, initiator=False, s=MALLORY)
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    # XX authenticates but does not pin: the application must check remote_static.
    assert initiator.remote_static == MALLORY.public != BOB.public


@pytest.mark.parametrize("length", [0, 1, 31, 32 + 48 + 15])
def test_short_handshake_message_is_rejected(length: int) -> None:
    initiator, responder = ik_pair()
    message = initiator.write_message(b"")
    with pytest.raises(HandshakeFailed, match="too short"):
        responder.read_message(message[:length])
    with pytest.raises(NoiseError, match="unusable"):
        responder.read_message(message)


def test_low_order_ephemeral_key_aborts_the_handshake() -> None:
    initiator, responder = ik_pair()
    message = bytearray(initiator.write_message(b""))
    message[:32] = bytes(32)  # the all-zero point has order 1
    with pytest.raises(HandshakeFailed, match="key agreement"):
        responder.read_message(bytes(message))


def test_low_order_ephemeral_in_cleartext_message_aborts_the_reply() -> None:
    responder = HandshakeState.initialize(NN, initiator=False)
    responder.read_message(bytes(32))
    with pytest.raises(HandshakeFailed, match="key agreement"):
        responder.write_message(b"")
    with pytest.raises(NoiseError, match="unusable"):
        responder.write_message(b"")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_reader(message: bytes) -> None:
    _, responder = ik_pair()
    try:
        responder.read_message(message)
    except TrustwireError:
        pass


# -- misuse ---------------------------------------------------------------------------


def test_writing_out_of_turn_is_refused_without_harm() -> None:
    initiator, responder = ik_pair()
    with pytest.raises(NoiseError, match="out of turn"):
        responder.write_message(b"")
    with pytest.raises(NoiseError, match="out of turn"):
        initiator.read_message(b"x" * 100)
    # Misuse is detected before processing, so both sides still work.
    complete(initiator, responder)


def test_using_a_complete_handshake_is_refused() -> None:
    initiator, responder = ik_pair()
    complete(initiator, responder)
    with pytest.raises(NoiseError, match="complete"):
        initiator.write_message(b"")
    with pytest.raises(NoiseError, match="complete"):
        responder.read_message(b"")


def test_split_is_refused_before_completion_and_a_second_time() -> None:
    initiator, responder = ik_pair()
    with pytest.raises(NoiseError, match="not complete"):
        initiator.split()
    responder.read_message(initiator.write_message(b""))
    initiator.read_message(responder.write_message(b""))
    initiator.split()
    with pytest.raises(NoiseError, match="already"):
        initiator.split()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initiator": True, "s": ALICE}, "needs rs"),
        ({"initiator": True, "rs": BOB.public}, "needs s"),
        ({"initiator": False}, "needs s"),
        ({"initiator": True, "s": ALICE, "rs": BOB.public[:31]}, "32 bytes"),
        ({"initiator": True, "s": X448.generate(), "rs": BOB.public}, "32-byte"),
        ({"initiator": True, "s": ALICE, "rs": BOB.public, "psks": [bytes(32)]}, "psks"),
    ],
)
def test_missing_or_malformed_keys_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(NoiseError, match=match):
        HandshakeState.initialize(IK, **kwargs)  # type: ignore[arg-type]


def test_psk_of_wrong_size_is_refused() -> None:
    with pytest.raises(NoiseError, match="32 bytes"):
        HandshakeState.initialize(
            "Noise_NNpsk0_25519_AESGCM_SHA256", initiator=True, psks=[bytes(31)]
        )


@pytest.mark.parametrize(
    "name",
    [
        "Noise_XXfallback_25519_AESGCM_SHA256",
        "Noise_XXpsk4_25519_AESGCM_SHA256",
        "Noise_XXpsk0+psk0_25519_AESGCM_SHA256",
        "Noise_XY_25519_AESGCM_SHA256",
        "Noise_XX_P256_AESGCM_SHA256",
        "Noise_XX_25519_AES256_SHA256",
        "Noise_XX_25519_AESGCM_SHA3",
        "Noisy_XX_25519_AESGCM_SHA256",
        "Noise_XX_25519_AESGCM",
        "Noise_xx_25519_AESGCM_SHA256",
        "Noise_" + "X" * 300 + "_25519_AESGCM_SHA256",
    ],
)
def test_unsupported_protocol_names_are_refused(name: str) -> None:
    with pytest.raises(NoiseError):
        parse_protocol_name(name)


def test_psk_modifiers_place_tokens_as_the_spec_says() -> None:
    pattern = parse_protocol_name("Noise_XXpsk0+psk3_25519_AESGCM_SHA256").pattern
    assert pattern.name == "XXpsk0+psk3"
    assert pattern.messages == (("psk", "e"), ("e", "ee", "s", "es"), ("s", "se", "psk"))
    assert pattern.psk_count == 2


def test_every_table_pattern_is_valid() -> None:
    # Spec §7.3: a DH token needs both keys to exist, and no key is sent twice.
    for pattern in PATTERNS.values():
        have = {(True, key) for key in pattern.initiator_pre}
        have |= {(False, key) for key in pattern.responder_pre}
        for index, message in enumerate(pattern.messages):
            writer = index % 2 == 0
            for token in message:
                if token in ("e", "s"):
                    assert (writer, token) not in have, pattern.name
                    have.add((writer, token))
                elif token != "psk":
                    needed = {(True, token[0]), (False, token[1])}
                    assert needed <= have, (pattern.name, token)


def test_noise_core_imports_no_io_modules() -> None:
    code = (
        "import sys, trustwire.protocol.noise\n"
        "bad = {'asyncio', 'socket', 'ssl', 'sqlite3', 'selectors'} & set(sys.modules)\n"
        "print(','.join(sorted(bad)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


# -- message size limit ---------------------------------------------------------------


def test_handshake_message_of_exactly_65535_bytes_is_accepted() -> None:
    initiator, responder = ik_pair()
    overhead = len(ik_pair()[0].write_message(b""))
    assert overhead == 32 + (32 + 16) + 16  # e, encrypted s, payload tag
    payload = b"p" * (MAX_MESSAGE_LEN - overhead)
    message = initiator.write_message(payload)
    assert len(message) == MAX_MESSAGE_LEN
    assert responder.read_message(message) == payload


def test_handshake_message_over_65535_bytes_is_refused_before_any_change() -> None:
    initiator, responder = ik_pair()
    with pytest.raises(NoiseError, match="exceeds"):
        initiator.write_message(b"p" * (MAX_MESSAGE_LEN - 96 + 1))
    assert responder.read_message(initiator.write_message(b"ok")) == b"ok"
    _, fresh = ik_pair()
    with pytest.raises(HandshakeFailed, match="exceeds"):
        fresh.read_message(bytes(MAX_MESSAGE_LEN + 1))


def test_transport_messages_are_limited_to_65535_bytes() -> None:
    (send, _), (_, receive) = complete(*ik_pair())
    with pytest.raises(NoiseError, match="65535"):
        send.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 16 + 1))
    with pytest.raises(NoiseError, match="65535"):
        send.encrypt_at(0, b"", bytes(MAX_MESSAGE_LEN - 16 + 1))
    with pytest.raises(NoiseError, match="65535"):
        receive.decrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN + 1))
    assert send.n == 0 and receive.n == 0
    biggest = bytes(MAX_MESSAGE_LEN - 16)
    assert receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", biggest)) == biggest


# -- transport ------------------------------------------------------------------------


def test_replayed_transport_message_is_rejected() -> None:
    (send, _), (_, receive) = complete(*ik_pair())
    message = send.encrypt_with_ad(b"", b"pay 10")
    assert receive.decrypt_with_ad(b"", message) == b"pay 10"
    with pytest.raises(DecryptionFailed):
        receive.decrypt_with_ad(b"", message)


def test_reflected_transport_message_is_rejected() -> None:
    (send, receive), _ = complete(*ik_pair())
    with pytest.raises(DecryptionFailed):
        receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"echo"))


def test_decrypt_with_wrong_nonce_fails_and_does_not_advance() -> None:
    (send, _), (_, receive) = complete(*ik_pair())
    first = send.encrypt_with_ad(b"", b"one")
    second = send.encrypt_with_ad(b"", b"two")
    with pytest.raises(DecryptionFailed):
        receive.decrypt_with_ad(b"", second)
    assert receive.n == 0
    assert receive.decrypt_with_ad(b"", first) == b"one"
    assert receive.decrypt_with_ad(b"", second) == b"two"
    assert receive.n == 2


def test_decrypt_with_wrong_associated_data_fails() -> None:
    (send, _), (_, receive) = complete(*ik_pair())
    with pytest.raises(DecryptionFailed):
        receive.decrypt_with_ad(b"header-b", send.encrypt_with_ad(b"header-a", b"x"))


@pytest.mark.parametrize("cipher", ["AESGCM", "ChaChaPoly"])
def test_encrypt_at_and_decrypt_at_use_the_explicit_nonce_without_state_change(
    cipher: str,
) -> None:
    key = bytes(range(32))
    sender, receiver, reference = (CipherState(cipher, key) for _ in range(3))
    reference.set_nonce(7)
    expected = reference.encrypt_with_ad(b"ad", b"message")
    assert sender.encrypt_at(7, b"ad", b"message") == expected
    assert receiver.decrypt_at(7, b"ad", expected) == b"message"
    assert sender.n == 0 and receiver.n == 0
    with pytest.raises(DecryptionFailed):
        receiver.decrypt_at(8, b"ad", expected)


@pytest.mark.parametrize(("cipher", "byteorder"), [("AESGCM", "big"), ("ChaChaPoly", "little")])
def test_nonce_encoding_follows_the_spec(cipher: str, byteorder: Literal["big", "little"]) -> None:
    key = bytes(range(32))
    n = 0x0102030405060708
    nonce = bytes(4) + n.to_bytes(8, byteorder)
    aead = AesGcm(key) if cipher == "AESGCM" else ChaChaPoly(key)
    assert CipherState(cipher, key).encrypt_at(n, b"a", b"m") == aead.seal(nonce, b"m", b"a")


@pytest.mark.parametrize("n", [-1, MAX_NONCE, MAX_NONCE + 1])
def test_explicit_nonce_outside_the_usable_range_is_refused(n: int) -> None:
    state = CipherState("AESGCM", bytes(32))
    with pytest.raises(NoiseError, match="nonce"):
        state.encrypt_at(n, b"", b"")
    with pytest.raises(NoiseError, match="nonce"):
        state.decrypt_at(n, b"", bytes(16))


def test_explicit_nonce_methods_refuse_an_unkeyed_state() -> None:
    state = CipherState("AESGCM")
    with pytest.raises(NoiseError, match="no key"):
        state.encrypt_at(0, b"", b"plain")
    with pytest.raises(NoiseError, match="no key"):
        state.decrypt_at(0, b"", b"plain")


def test_unkeyed_cipher_state_passes_data_through_as_the_spec_says() -> None:
    state = CipherState("ChaChaPoly")
    assert not state.has_key()
    assert state.encrypt_with_ad(b"ad", b"plain") == b"plain"
    assert state.decrypt_with_ad(b"ad", b"plain") == b"plain"
    assert state.n == 0


def test_nonce_2_64_minus_1_is_reserved() -> None:
    sender = CipherState("AESGCM", bytes(32))
    receiver = CipherState("AESGCM", bytes(32))
    sender.set_nonce(MAX_NONCE - 1)
    receiver.set_nonce(MAX_NONCE - 1)
    assert receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"last")) == b"last"
    assert sender.n == MAX_NONCE
    with pytest.raises(NoiseError, match="exhausted"):
        sender.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(NoiseError, match="exhausted"):
        receiver.decrypt_with_ad(b"", bytes(32))
    with pytest.raises(NoiseError):
        sender.set_nonce(MAX_NONCE + 1)


@pytest.mark.parametrize("cipher", ["AESGCM", "ChaChaPoly"])
def test_rekey_derives_the_spec_key_and_keeps_the_nonce(cipher: str) -> None:
    key = bytes(range(32))
    maxnonce = (
        bytes(4) + MAX_NONCE.to_bytes(8, "big")
        if cipher == "AESGCM"
        else bytes(4) + MAX_NONCE.to_bytes(8, "little")
    )
    aead = AesGcm(key) if cipher == "AESGCM" else ChaChaPoly(key)
    new_key = aead.seal(maxnonce, bytes(32), b"")[:32]

    sender, receiver = CipherState(cipher, key), CipherState(cipher, key)
    receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"before"))
    sender.rekey()
    assert sender.n == 1
    message = sender.encrypt_with_ad(b"", b"after")
    expected = CipherState(cipher, new_key)
    expected.set_nonce(1)
    assert message == expected.encrypt_with_ad(b"", b"after")
    # A receiver that did not rekey cannot read it; after rekeying it can.
    with pytest.raises(DecryptionFailed):
        receiver.decrypt_with_ad(b"", message)
    receiver.rekey()
    assert receiver.decrypt_with_ad(b"", message) == b"after"


def test_rekey_without_a_key_is_refused() -> None:
    with pytest.raises(NoiseError, match="rekey"):
        CipherState("AESGCM").rekey()


@pytest.mark.parametrize(
    ("cipher", "key"), [("AES256GCM", bytes(32)), ("AESGCM", bytes(16)), ("AESGCM", bytes(33))]
)
def test_cipher_state_refuses_unknown_cipher_or_bad_key(cipher: str, key: bytes) -> None:
    with pytest.raises(NoiseError):
        CipherState(cipher, key)


def test_reprs_never_show_keys() -> None:
    key = bytes(range(100, 132))
    state = CipherState("AESGCM", key)
    initiator, _ = ik_pair()
    texts = [repr(state), repr(initiator), str(state)]
    for secret in (key, ALICE.private, BOB.private):
        for text in texts:
            assert secret.hex() not in text
            assert repr(secret) not in text


# -- randomness -----------------------------------------------------------------------


def test_pinned_randomness_gives_deterministic_handshakes(pinned_random: None) -> None:
    first = HandshakeState.initialize(IK, initiator=True, s=ALICE, rs=BOB.public)
    first_message = first.write_message(b"x")
    set_random_source(lambda n: b"\x07" * n)
    second = HandshakeState.initialize(IK, initiator=True, s=ALICE, rs=BOB.public)
    third = HandshakeState.initialize(IK, initiator=True, s=ALICE, rs=BOB.public)
    second_message = second.write_message(b"x")
    assert second_message == third.write_message(b"x")
    assert second_message[:32] == X25519.public_from_private(b"\x07" * 32)
    assert second_message != first_message


def test_unpinned_handshakes_use_fresh_ephemerals() -> None:
    one = HandshakeState.initialize(IK, initiator=True, s=ALICE, rs=BOB.public)
    two = HandshakeState.initialize(IK, initiator=True, s=ALICE, rs=BOB.public)
    assert one.write_message(b"")[:32] != two.write_message(b"")[:32]
