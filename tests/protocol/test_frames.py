from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustwire.errors import FrameTooLarge, InvalidFrame
from trustwire.protocol.frames import FrameDecoder, encode_frame


def test_decoder_returns_frames_split_across_reads() -> None:
    data = encode_frame(b"hello") + encode_frame(b"world!")
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(data)):
        out.extend(decoder.receive_data(data[i : i + 1]))
    assert out == [b"hello", b"world!"]
    assert decoder.buffered == 0


def test_oversize_length_is_refused_before_the_body_is_buffered() -> None:
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameTooLarge) as info:
        decoder.receive_data(struct.pack(">I", 1 << 30) + b"x" * 10)
    assert info.value.length == 1 << 30
    assert decoder.buffered == 0


def test_decoder_refuses_input_after_an_error() -> None:
    decoder = FrameDecoder(max_frame=16)
    with pytest.raises(FrameTooLarge):
        decoder.receive_data(struct.pack(">I", 17))
    with pytest.raises(InvalidFrame):
        decoder.receive_data(encode_frame(b"ok"))


def test_zero_length_frame_is_invalid() -> None:
    with pytest.raises(InvalidFrame):
        FrameDecoder().receive_data(b"\x00\x00\x00\x00")


def test_eof_inside_a_frame_is_reported() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"abcdef")[:5])
    with pytest.raises(InvalidFrame):
        decoder.receive_eof()


def test_encode_refuses_empty_and_oversize_payloads() -> None:
    with pytest.raises(ValueError):
        encode_frame(b"")
    with pytest.raises(ValueError):
        encode_frame(b"x" * 17, max_frame=16)


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20), st.data())
def test_any_split_of_a_frame_stream_yields_the_same_frames(
    payloads: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    out: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.receive_data(stream[prev:cut]))
        prev = cut
    assert out == payloads


@given(st.binary(max_size=2000))
def test_random_bytes_give_frames_or_clean_errors(data: bytes) -> None:
    decoder = FrameDecoder(max_frame=512)
    try:
        frames = decoder.receive_data(data)
    except (FrameTooLarge, InvalidFrame):
        return
    assert all(1 <= len(f) <= 512 for f in frames)
    assert decoder.buffered <= 512 + 4
