from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustwire.errors import ReplayDetected, StaleTimestamp
from trustwire.protocol.replay import MessageIdCache, ReplayWindow, check_timestamp


def test_window_accepts_each_counter_once() -> None:
    window = ReplayWindow(size=64)
    for n in (0, 1, 5, 3, 2):
        window.check_and_commit(n)
    for n in (0, 1, 2, 3, 5):
        with pytest.raises(ReplayDetected):
            window.check(n)
    window.check_and_commit(4)


def test_window_rejects_counters_older_than_the_window() -> None:
    window = ReplayWindow(size=8)
    window.check_and_commit(100)
    window.check_and_commit(93)
    with pytest.raises(ReplayDetected, match="older"):
        window.check(92)


def test_check_does_not_change_state() -> None:
    window = ReplayWindow()
    window.check(10)
    window.check(10)
    assert window.highest == -1


def test_window_rejects_out_of_range_counters() -> None:
    with pytest.raises(ReplayDetected):
        ReplayWindow().check(2**64)


@given(st.lists(st.integers(0, 300), max_size=200), st.integers(1, 128))
def test_window_matches_a_simple_model(counters: list[int], size: int) -> None:
    window = ReplayWindow(size=size)
    seen: set[int] = set()
    highest = -1
    for n in counters:
        expect_ok = n not in seen and n > highest - size
        try:
            window.check_and_commit(n)
            ok = True
        except ReplayDetected:
            ok = False
        assert ok == expect_ok
        if ok:
            seen.add(n)
            highest = max(highest, n)


def test_message_id_cache_rejects_repeats_within_ttl_and_forgets_after() -> None:
    cache = MessageIdCache(ttl=10)
    cache.add(b"a" * 16, now=100.0)
    with pytest.raises(ReplayDetected):
        cache.add(b"a" * 16, now=105.0)
    cache.add(b"b" * 16, now=111.0)  # expires "a"
    assert b"a" * 16 not in cache
    cache.add(b"a" * 16, now=111.0)


def test_message_id_cache_is_bounded() -> None:
    cache = MessageIdCache(ttl=1000, max_entries=100)
    for i in range(1000):
        cache.add(i.to_bytes(16, "big"), now=1.0)
    assert len(cache) <= 101


def test_timestamp_window() -> None:
    check_timestamp(1_000_000, now=1000.0, window=120)
    check_timestamp(1_119_000, now=1000.0, window=120)
    with pytest.raises(StaleTimestamp):
        check_timestamp(1_121_000, now=1000.0, window=120)
    with pytest.raises(StaleTimestamp):
        check_timestamp(879_000, now=1000.0, window=120)
