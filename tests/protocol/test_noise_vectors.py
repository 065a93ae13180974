"""Every Noise vector in ``noise/cacophony.txt`` and ``noise/snow.txt``, run both ways.

For each vector an initiator and a responder are built from the vector's keys, prologues
and psks; every handshake message must equal the vector's ciphertext byte for byte and
give the payload back to the receiver; both sides must agree on ``handshake_hash`` (and
match it when the vector has one); the transport messages that follow alternate
directions (one-way patterns: all from the initiator) through the split cipher states.

The run is tallied per file and printed at the end of the session (see ``conftest.py``);
:func:`test_every_vector_is_run_or_expected_not_implemented` pins the set of patterns
allowed to be missing, which is empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from _vectors import load_json
from trustwire.crypto.dh import X448, X25519, DhFunction, KeyPair
from trustwire.errors import NoiseError
from trustwire.protocol.noise import CipherState, HandshakeState
from trustwire.protocol.noise_patterns import PATTERNS, NoiseProtocol, parse_protocol_name

FILES = {"cacophony": "cacophony.txt", "snow": "snow.txt"}
EXPECTED_COUNTS = {"cacophony": 944, "snow": 408}
#: Patterns (with modifiers) whose vectors are allowed to be reported not implemented.
EXPECTED_NOT_IMPLEMENTED: dict[str, list[str]] = {"cacophony": [], "snow": []}

VECTORS: dict[str, list[dict[str, Any]]] = {
    source: load_json("noise", file)["vectors"] for source, file in FILES.items()
}
CASES = [(source, index) for source, vectors in VECTORS.items() for index in range(len(vectors))]
IDS = [f"{s}-{i:04d}-{VECTORS[s][i]['protocol_name']}" for s, i in CASES]

DH: dict[str, DhFunction] = {"25519": X25519, "448": X448}


def _pattern_of(vector: dict[str, Any]) -> str:
    return str(vector["protocol_name"]).split("_")[1]


def _implemented(vector: dict[str, Any]) -> NoiseProtocol | None:
    try:
        return parse_protocol_name(vector["protocol_name"])
    except NoiseError:
        return None


def _side(vector: dict[str, Any], protocol: NoiseProtocol, prefix: str) -> HandshakeState:
    dh = DH[protocol.dh]

    def pair(key: str) -> KeyPair | None:
        return dh.keypair(bytes.fromhex(vector[key])) if key in vector else None

    def public(key: str) -> bytes | None:
        return bytes.fromhex(vector[key]) if key in vector else None

    return HandshakeState.initialize(
        vector["protocol_name"],
        initiator=prefix == "init",
        prologue=bytes.fromhex(vector[f"{prefix}_prologue"]),
        s=pair(f"{prefix}_static"),
        e=pair(f"{prefix}_ephemeral"),
        rs=public(f"{prefix}_remote_static"),
        psks=[bytes.fromhex(psk) for psk in vector.get(f"{prefix}_psks", [])],
    )


def run_vector(vector: dict[str, Any], protocol: NoiseProtocol) -> None:
    """Replay one vector; fails with an assertion naming the first message that differs."""
    initiator = _side(vector, protocol, "init")
    responder = _side(vector, protocol, "resp")
    pattern = protocol.pattern
    handshake_len = len(pattern.messages)
    assert len(vector["messages"]) >= handshake_len
    transport: dict[bool, tuple[CipherState, CipherState]] = {}

    for index, message in enumerate(vector["messages"]):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        from_initiator = pattern.one_way or index % 2 == 0
        if index < handshake_len:
            sender, receiver = (initiator, responder) if from_initiator else (responder, initiator)
            assert sender.write_message(payload) == expected, f"message {index}"
            assert receiver.read_message(expected) == payload, f"message {index}"
            continue
        if not transport:
            assert initiator.is_complete and responder.is_complete
            assert initiator.handshake_hash == responder.handshake_hash
            if "handshake_hash" in vector:
                assert initiator.handshake_hash == bytes.fromhex(vector["handshake_hash"])
            _check_remote_statics(vector, protocol, initiator, responder)
            to_responder, to_initiator = initiator.split()
            responder_in, responder_out = responder.split()
            # Each entry: the sender's cipher state, then the receiver's.
            transport[True] = (to_responder, responder_in)
            transport[False] = (responder_out, to_initiator)
        send, receive = transport[from_initiator]
        assert send.encrypt_with_ad(b"", payload) == expected, f"message {index}"
        assert receive.decrypt_with_ad(b"", expected) == payload, f"message {index}"


def _check_remote_statics(
    vector: dict[str, Any],
    protocol: NoiseProtocol,
    initiator: HandshakeState,
    responder: HandshakeState,
) -> None:
    dh = DH[protocol.dh]
    if "s" in protocol.pattern.needs(True):
        assert responder.remote_static == dh.public_from_private(
            bytes.fromhex(vector["init_static"])
        )
    if "s" in protocol.pattern.needs(False):
        assert initiator.remote_static == dh.public_from_private(
            bytes.fromhex(vector["resp_static"])
        )


@pytest.mark.parametrize(("source", "index"), CASES, ids=IDS)
def test_vector_handshake_and_transport_match(
    source: str, index: int, noise_tally: Callable[[str, int], Any]
) -> None:
    vector = VECTORS[source][index]
    tally = noise_tally(source, len(VECTORS[source]))
    protocol = _implemented(vector)
    if protocol is None:
        tally.not_implemented += 1
        tally.missing_patterns.add(_pattern_of(vector))
        pytest.skip(f"not implemented: {vector['protocol_name']}")
    tally.ran += 1
    run_vector(vector, protocol)
    tally.passed += 1


@pytest.mark.parametrize("source", sorted(FILES))
def test_every_vector_is_run_or_expected_not_implemented(source: str) -> None:
    vectors = VECTORS[source]
    assert len(vectors) == EXPECTED_COUNTS[source]
    assert [index for s, index in CASES if s == source] == list(range(len(vectors)))
    missing = sorted({_pattern_of(v) for v in vectors if _implemented(v) is None})
    assert missing == EXPECTED_NOT_IMPLEMENTED[source]


def test_vector_files_cover_every_pattern_in_the_table() -> None:
    # Every table entry is checked by some vector, so no transcription error can hide.
    base_names = set()
    for vectors in VECTORS.values():
        for vector in vectors:
            match = re.match(r"[A-Z0-9]+", _pattern_of(vector))
            assert match is not None
            base_names.add(match.group(0))
    assert base_names == set(PATTERNS)


def test_a_wrong_expected_ciphertext_makes_the_runner_fail() -> None:
    # Guard against a runner that cannot fail: corrupt one byte of one vector.
    vector = dict(VECTORS["cacophony"][0])
    messages = [dict(m) for m in vector["messages"]]
    ciphertext = bytearray.fromhex(messages[-1]["ciphertext"])
    ciphertext[0] ^= 1
    messages[-1]["ciphertext"] = ciphertext.hex()
    vector["messages"] = messages
    protocol = parse_protocol_name(vector["protocol_name"])
    with pytest.raises(AssertionError):
        run_vector(vector, protocol)
