"""Bytes from the network: oversize frames, garbage, truncation and mutation.

Every decoder of untrusted bytes answers with a clean trustwire error (a
:class:`~trustwire.errors.TrustwireError`), never another exception, a crash or a hang;
a running coordinator fed the same garbage over real TLS connections closes the offending
connection and keeps serving everyone else. An oversize frame is refused from its 4-byte
length header, before its body is buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from _deployment import Deployment, frame, wait_until
from trustwire.errors import (
    FrameTooLarge,
    InvalidEnvelope,
    InvalidFrame,
    ProtocolError,
    TrustwireError,
)
from trustwire.events import EventKind
from trustwire.identity.keys import AgentIdentity
from trustwire.protocol import control
from trustwire.protocol.channel import open_sealed
from trustwire.protocol.content import decode_content
from trustwire.protocol.control import ErrorCode
from trustwire.protocol.envelope import Envelope, FrameType, decode
from trustwire.protocol.frames import DEFAULT_MAX_FRAME, FrameDecoder

GIB = 1 << 30
LENGTH = struct.Struct(">I")


# -- oversize frames ------------------------------------------------------------------


def test_a_declared_oversize_frame_is_refused_from_its_length_header() -> None:
    decoder = FrameDecoder(DEFAULT_MAX_FRAME)

    with pytest.raises(FrameTooLarge) as refused:
        decoder.receive_data(LENGTH.pack(GIB) + b"x" * 1000)

    assert (refused.value.length, refused.value.limit) == (GIB, DEFAULT_MAX_FRAME)
    assert decoder.buffered == 0  # nothing kept, not even the bytes that came along


def test_an_oversize_length_split_across_reads_is_refused_at_its_fourth_byte() -> None:
    decoder = FrameDecoder(DEFAULT_MAX_FRAME)
    header = LENGTH.pack(GIB)

    assert decoder.receive_data(header[:3]) == []
    assert decoder.buffered == 3
    with pytest.raises(FrameTooLarge):
        decoder.receive_data(header[3:])
    assert decoder.buffered == 0


def test_a_decoder_buffers_only_what_arrived_never_what_was_declared() -> None:
    decoder = FrameDecoder(DEFAULT_MAX_FRAME)

    decoder.receive_data(LENGTH.pack(DEFAULT_MAX_FRAME) + b"y" * 100)

    assert decoder.buffered == 4 + 100


def test_a_decoder_refuses_input_after_an_error() -> None:
    decoder = FrameDecoder(1024)
    with pytest.raises(FrameTooLarge):
        decoder.receive_data(LENGTH.pack(1025))

    with pytest.raises(InvalidFrame):
        decoder.receive_data(LENGTH.pack(1) + b"z")


async def test_the_coordinator_answers_a_1_gib_frame_header_with_a_protocol_error(
    deployment: Deployment,
) -> None:
    raw = await deployment.raw("alice")

    raw.send(LENGTH.pack(GIB) + b"\xaa" * 1024)

    frames = await raw.until_closed()
    assert [env.type for env in frames] == [FrameType.ERROR]
    code, _reason = control.decode_error(frames[0].body)
    assert code == ErrorCode.PROTOCOL
    event = await deployment.wait_event(EventKind.FRAME_INVALID)
    assert event.agent == deployment.did("alice")
    assert event.reason and "exceeds the limit" in event.reason


async def test_the_coordinator_does_not_buffer_the_body_of_an_oversize_frame(
    deployment: Deployment,
) -> None:
    raw = await deployment.raw("alice")
    chunk = b"\xaa" * (64 * 1024)
    sent = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        # Stream up to 16 MiB of "body": a coordinator buffering it would grow with it.
        with contextlib.suppress(ConnectionError, OSError):
            raw.send(LENGTH.pack(GIB))
            while sent < 16 * 1024 * 1024 and not raw.writer.is_closing():
                raw.send(chunk)
                await raw.writer.drain()
                sent += len(chunk)
        with contextlib.suppress(ConnectionError, OSError):
            await raw.until_closed()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert raw.eof, "the coordinator kept the connection open"
    # The whole process (client included) stayed far below the 16 MiB that went by.
    assert peak < 4 * 1024 * 1024, f"peak traced memory {peak} bytes after {sent} bytes"
    assert len(deployment.events(EventKind.FRAME_INVALID)) == 1


# -- sans-I/O decoders on arbitrary bytes ---------------------------------------------

DIDS = st.sampled_from(
    [
        "",
        "coordinator",
        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "did:key:z6Mk" + "1" * 116,
    ]
)


@st.composite
def envelope_bytes(draw: st.DrawFn) -> bytes:
    """A well-formed envelope of any type with an arbitrary body, sometimes damaged."""
    env = Envelope.create(
        draw(st.sampled_from(list(FrameType))),
        draw(st.binary(min_size=16, max_size=16)),
        draw(DIDS),
        draw(DIDS),
        body=draw(st.binary(max_size=600)),
        channel_id=draw(st.binary(min_size=16, max_size=16)),
        counter=draw(st.integers(0, 2**64 - 1)),
        timestamp=draw(st.integers(0, 2**64 - 1)),
    )
    data = bytearray(env.to_bytes())
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data if cut is None else data[:cut])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Byte streams: raw garbage, or length-prefixed (possibly damaged) envelopes."""
    parts = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=200),
                envelope_bytes().map(lambda e: LENGTH.pack(len(e)) + e),
                envelope_bytes().map(lambda e: LENGTH.pack(len(e) + 3) + e),
            ),
            max_size=4,
        )
    )
    return b"".join(parts)


def check_body_decoders(body: bytes) -> None:
    """Every decoder of a body either parses it or raises a TrustwireError."""
    for decoder in (
        control.decode_status,
        control.decode_ack,
        control.decode_error,
        control.decode_json,
        decode_content,
    ):
        with contextlib.suppress(TrustwireError):
            decoder(body)


@settings(max_examples=200, deadline=1000)
@given(streams(), st.lists(st.integers(1, 97), max_size=8))
def test_any_byte_stream_decodes_or_fails_with_a_trustwire_error(
    data: bytes, cuts: list[int]
) -> None:
    decoder = FrameDecoder(DEFAULT_MAX_FRAME)
    pieces, rest = [], data
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    try:
        for piece in pieces:
            for raw in decoder.receive_data(piece):
                try:
                    env = decode(raw)
                except TrustwireError:
                    continue
                assert env.to_bytes() == raw  # a decoded envelope re-encodes exactly
                check_body_decoders(env.body)
        decoder.receive_eof()
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=1000)
@given(envelope_bytes())
def test_any_envelope_decodes_or_fails_with_invalid_envelope(data: bytes) -> None:
    try:
        env = decode(data)
    except TrustwireError:
        return
    check_body_decoders(env.body)


@settings(max_examples=200, deadline=1000)
@given(st.binary(max_size=400))
@example(b"\x01" + bytes(16) + bytes(8) + b"\x01" + b"\xff\xff\xff\xff")  # huge content n
@example(b"\x02\x02" + bytes(8) + b"\xff\xff" + bytes(64))  # receipt claiming 65535 ids
def test_any_inner_plaintext_decodes_or_fails_with_invalid_envelope(data: bytes) -> None:
    with contextlib.suppress(TrustwireError):
        decode_content(data)


def test_deeply_nested_control_json_fails_with_invalid_envelope() -> None:
    with pytest.raises(InvalidEnvelope):
        control.decode_json(b"[" * 16_000)


_SEALED_PARTIES = (AgentIdentity.generate("sender"), AgentIdentity.generate("recipient"))


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300), header_bytes=st.integers(0, 2**64 - 1))
def test_a_sealed_frame_with_any_body_is_refused_with_a_trustwire_error(
    body: bytes, header_bytes: int
) -> None:
    recipient = _SEALED_PARTIES[1]
    env = Envelope.create(
        FrameType.SEALED,
        bytes(16),
        _SEALED_PARTIES[0].did,
        recipient.did,
        body=body,
        timestamp=header_bytes,
    )
    with pytest.raises(TrustwireError):
        open_sealed(recipient, env, sender_agreement_key=_SEALED_PARTIES[0].agreement.public)


# -- the same garbage over real connections -------------------------------------------


async def assert_still_serving(deployment: Deployment) -> None:
    """A fresh connection gets a PONG for its PING."""
    raw = await deployment.raw("bob")
    ping = Envelope.create(FrameType.PING, b"p" * 16, deployment.did("bob"), "")
    raw.send(frame(ping))
    pong = await raw.expect(FrameType.PONG, timeout=2)
    assert pong.message_id == b"p" * 16
    await raw.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=streams())
async def test_garbage_over_a_real_connection_never_crashes_the_coordinator(
    deployment: Deployment, data: bytes
) -> None:
    async with asyncio.timeout(5):  # per example: a hang fails the test
        raw = await deployment.raw("alice")
        raw.send(data)
        with contextlib.suppress(TimeoutError):
            await raw.until_closed(timeout=0.05)
        await raw.close()
        await assert_still_serving(deployment)


async def test_a_connection_cut_inside_a_frame_is_cleaned_up(deployment: Deployment) -> None:
    raw = await deployment.raw("alice")
    raw.send(LENGTH.pack(1000) + b"half a frame")
    await raw.close()

    await deployment.wait_event(EventKind.CONNECTION_CLOSED)
    await wait_until(lambda: not deployment.coordinator.online(deployment.did("alice")))
    await assert_still_serving(deployment)
