from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustwire.errors import InvalidEnvelope
from trustwire.protocol.envelope import FLAG_RESPONSE, FLAG_SESSION, Envelope, FrameType, decode

ALICE = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
BOB = "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG"


def _sample() -> Envelope:
    return Envelope.create(
        FrameType.CHANNEL_DATA,
        bytes(range(16)),
        ALICE,
        BOB,
        body=b"ciphertext",
        channel_id=bytes(range(16, 32)),
        counter=7,
        timestamp=1_700_000_000_000,
    )


def test_envelope_round_trips() -> None:
    env = _sample()
    back = decode(env.to_bytes())
    assert back == env
    assert back.header == env.header
    assert back.to_bytes() == env.to_bytes()


def test_header_is_everything_before_the_body() -> None:
    raw = _sample().to_bytes()
    env = decode(raw)
    assert raw == env.header + env.body


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(0, 2, "version"), (1, 0x7F, "frame type"), (2, 4, "flags"), (2, 0x80, "flags")],
)
def test_decode_rejects_bad_fixed_fields(offset: int, value: int, message: str) -> None:
    raw = bytearray(_sample().to_bytes())
    raw[offset] = value
    with pytest.raises(InvalidEnvelope, match=message):
        decode(bytes(raw))


SESSION = bytes(range(100, 116))


@pytest.mark.parametrize("ftype", [FrameType.CHANNEL_DATA, FrameType.SEALED])
def test_session_id_round_trips_inside_the_header(ftype: FrameType) -> None:
    env = Envelope.create(ftype, bytes(16), ALICE, BOB, body=b"xyz", session_id=SESSION)
    assert env.flags & FLAG_SESSION
    back = decode(env.to_bytes())
    assert back == env
    assert back.session_id == SESSION
    # The session id is part of the header, so it is covered as associated data.
    assert back.header.endswith(SESSION)
    assert back.body == b"xyz"
    plain = decode(_sample().to_bytes())
    assert plain.session_id == b""


def test_session_flag_is_refused_where_it_does_not_belong() -> None:
    with pytest.raises(ValueError, match="session id"):
        Envelope.create(FrameType.CHANNEL_INIT, bytes(16), ALICE, BOB, session_id=SESSION)
    with pytest.raises(ValueError, match="session id"):
        Envelope.create(
            FrameType.SEALED, bytes(16), ALICE, BOB, session_id=SESSION, flags=FLAG_RESPONSE
        )
    with pytest.raises(ValueError, match="16 bytes"):
        Envelope.create(FrameType.SEALED, bytes(16), ALICE, BOB, session_id=b"short")
    with pytest.raises(ValueError, match="needs a session_id"):
        Envelope.create(FrameType.SEALED, bytes(16), ALICE, BOB, flags=FLAG_SESSION)
    # On the wire: the flag on another frame type, or with too few bytes for the id.
    raw = bytearray(
        Envelope.create(FrameType.CHANNEL_INIT, bytes(16), ALICE, BOB, body=b"x").to_bytes()
    )
    raw[2] = FLAG_SESSION
    with pytest.raises(InvalidEnvelope, match="session id"):
        decode(bytes(raw))
    raw = bytearray(Envelope.create(FrameType.SEALED, bytes(16), ALICE, BOB).to_bytes())
    raw[2] = FLAG_SESSION
    with pytest.raises(InvalidEnvelope, match="truncated session id"):
        decode(bytes(raw))
    raw = bytearray(
        Envelope.create(FrameType.SEALED, bytes(16), ALICE, BOB, session_id=SESSION).to_bytes()
    )
    raw[2] = FLAG_SESSION | FLAG_RESPONSE
    with pytest.raises(InvalidEnvelope, match="session id"):
        decode(bytes(raw))


def test_decode_rejects_body_length_mismatch() -> None:
    raw = _sample().to_bytes()
    with pytest.raises(InvalidEnvelope, match="body length"):
        decode(raw + b"extra")
    with pytest.raises(InvalidEnvelope):
        decode(raw[:-1])


def test_decode_rejects_non_ascii_did() -> None:
    env = _sample()
    raw = bytearray(env.to_bytes())
    raw[20] = 0xFF  # first byte of the sender DID
    with pytest.raises(InvalidEnvelope):
        decode(bytes(raw))


def test_build_header_refuses_bad_fields() -> None:
    with pytest.raises(ValueError):
        Envelope.build_header(FrameType.SEALED, b"short", ALICE, BOB, bytes(16), 0, 0, 0)
    with pytest.raises(ValueError):
        Envelope.build_header(FrameType.SEALED, bytes(16), "x" * 200, BOB, bytes(16), 0, 0, 0)
    with pytest.raises(ValueError):
        Envelope.build_header(FrameType.SEALED, bytes(16), ALICE, BOB, bytes(16), -1, 0, 0)


def test_routed_types_are_the_end_to_end_ones() -> None:
    routed = {t for t in FrameType if t.routed}
    assert routed == {
        FrameType.CHANNEL_INIT,
        FrameType.CHANNEL_ACCEPT,
        FrameType.CHANNEL_DATA,
        FrameType.SEALED,
    }


@given(st.binary(max_size=600))
def test_random_bytes_decode_or_raise_invalid_envelope(data: bytes) -> None:
    try:
        env = decode(data)
    except InvalidEnvelope:
        return
    assert env.to_bytes() == data


@given(st.integers(0, 200))
def test_every_truncation_of_a_valid_envelope_is_rejected(cut: int) -> None:
    raw = _sample().to_bytes()
    if cut >= len(raw):
        return
    with pytest.raises(InvalidEnvelope):
        decode(raw[:cut])


def test_control_json_with_a_huge_integer_is_an_invalid_envelope_not_a_crash() -> None:
    from trustwire.protocol import control

    huge = b'{"status": ' + b"9" * 5000 + b"}"
    for decoder in (control.decode_json, control.decode_api_frame):
        with pytest.raises(InvalidEnvelope):
            decoder(huge)
