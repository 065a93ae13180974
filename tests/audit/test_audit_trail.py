"""The audit trail (``trustwire.audit.trail``): a non-blocking, batching event sink."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from trustwire.audit.log import MerkleLog, TreeHead, verify_log
from trustwire.audit.storage import read_entries
from trustwire.audit.trail import AUDIT_ORIGIN, AuditTrail, decode_event, encode_event
from trustwire.crypto.signing import SigningKey
from trustwire.errors import StoreError
from trustwire.events import EventKind, EventStream, SecurityEvent

WAIT = 5.0


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.from_bytes(b"\x07" * 32)


@pytest.fixture
def log() -> Iterator[MerkleLog]:
    opened = MerkleLog.memory(origin=AUDIT_ORIGIN)
    yield opened
    opened.close()


def _event(i: int, **details: str | int | float | bool) -> SecurityEvent:
    return SecurityEvent(
        kind=EventKind.MESSAGE_ACCEPTED,
        time=1_750_000_000.0 + i,
        agent="did:key:z6Mkalice",
        peer="did:key:z6Mkbob",
        details={"message_id": f"{i:08x}", "size": i % 4096, **details},
    )


def _wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


class _Gate:
    """Makes ``log.append_many`` wait until released, and says when a call is waiting."""

    def __init__(self, log: MerkleLog, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        original = log.append_many

        def gated(entries: Sequence[bytes]) -> range:
            self.entered.set()
            if not self.release.wait(WAIT):
                raise AssertionError("gate never released")
            return original(entries)

        monkeypatch.setattr(log, "append_many", gated)


# -- entries --------------------------------------------------------------------------


def test_encode_event_is_canonical_json_with_sorted_keys() -> None:
    a = SecurityEvent(kind=EventKind.AUTH_FAILURE, time=1.5, reason="x", details={"b": 1, "a": 2})
    b = SecurityEvent(kind=EventKind.AUTH_FAILURE, time=1.5, reason="x", details={"a": 2, "b": 1})
    encoded = encode_event(a)
    assert encoded == encode_event(b)
    assert encoded == (
        b'{"agent":null,"details":{"a":2,"b":1},"kind":"auth.failure",'
        b'"peer":null,"reason":"x","time":1.5}'
    )
    assert decode_event(encoded) == a


def test_encode_event_escapes_non_ascii_text_so_entries_are_pure_ascii() -> None:
    event = SecurityEvent(kind=EventKind.POLICY_RELOADED, time=2.0, details={"by": "zoë ✓"})
    encoded = encode_event(event)
    assert encoded.isascii()
    assert b'"by":"zo\\u00eb \\u2713"' in encoded
    assert decode_event(encoded) == event


def test_decode_event_refuses_an_entry_that_is_not_an_event() -> None:
    with pytest.raises(ValueError):
        decode_event(b'{"hello": "world"}')


def test_emitted_events_are_appended_in_order(log: MerkleLog, key: SigningKey) -> None:
    events = [_event(i) for i in range(2500)]
    trail = AuditTrail(log, key, max_batch=300)
    for event in events:
        trail.emit(event)
    trail.close()
    assert trail.appended == 2500
    assert trail.dropped == 0
    stored = list(log.entries())
    assert stored == [encode_event(event) for event in events]
    assert [decode_event(entry) for entry in stored] == events


# -- heads ----------------------------------------------------------------------------


def test_a_signed_head_is_published_after_each_batch(log: MerkleLog, key: SigningKey) -> None:
    heads: list[TreeHead] = []
    trail = AuditTrail(log, key, batch_interval=10, max_batch=100, on_head=heads.append)
    assert trail.head() is None
    for i in range(350):
        trail.emit(_event(i))
    flushed = trail.flush()
    trail.close()
    sizes = [head.size for head in heads]
    # The writer may have taken the first full batch before flush(); either way every
    # batch is at most 100 and each got its own head.
    assert sizes[-1] == 350
    assert all(b - a <= 100 for a, b in zip([0, *sizes], sizes, strict=False))
    assert len(sizes) >= 4
    for head in heads:
        head.verify(key.public_key, origin=AUDIT_ORIGIN)
        assert head.root == log.root(head.size)
    assert flushed == trail.head() == log.latest_head() == heads[-1]


def test_the_writer_wakes_as_soon_as_a_full_batch_waits(log: MerkleLog, key: SigningKey) -> None:
    trail = AuditTrail(log, key, batch_interval=10, max_batch=50)
    try:
        for i in range(50):
            trail.emit(_event(i))
        # Far sooner than the 10 s interval.
        _wait_for(lambda: (trail.head() or _NO_HEAD).size == 50)
    finally:
        trail.close()


def test_a_partial_batch_is_written_within_the_interval(log: MerkleLog, key: SigningKey) -> None:
    trail = AuditTrail(log, key, batch_interval=0.02)
    try:
        for i in range(3):
            trail.emit(_event(i))
        _wait_for(lambda: (trail.head() or _NO_HEAD).size == 3, timeout=2.0)
    finally:
        trail.close()


_NO_HEAD = TreeHead(0, b"\x00" * 32, 0, b"\x00" * 64, "none")


# -- never blocking -------------------------------------------------------------------


def test_emit_does_not_wait_for_a_stalled_log(
    log: MerkleLog, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _Gate(log, monkeypatch)
    trail = AuditTrail(log, key, max_batch=10, max_pending=100_000)
    try:
        for i in range(10):
            trail.emit(_event(i))
        assert gate.entered.wait(WAIT)  # the writer is now stuck inside append_many
        started = time.perf_counter()
        for i in range(10, 20_010):
            trail.emit(_event(i))
        elapsed = time.perf_counter() - started
        # 20,000 emits while the log is stalled: nothing waited for it.
        assert elapsed < 1.0
        assert trail.pending == 20_000
    finally:
        gate.release.set()
        trail.close()
    assert log.size == 20_010
    assert trail.dropped == 0


def test_a_full_buffer_drops_and_counts_events_instead_of_blocking(
    log: MerkleLog,
    key: SigningKey,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = _Gate(log, monkeypatch)
    trail = AuditTrail(log, key, max_batch=10, max_pending=100)
    try:
        for i in range(10):
            trail.emit(_event(i))
        assert gate.entered.wait(WAIT)
        with caplog.at_level(logging.WARNING, logger="trustwire.audit.trail"):
            for i in range(10, 160):
                trail.emit(_event(i))
        assert trail.dropped == 50
        assert trail.pending == 100
        warnings = [r for r in caplog.records if "dropping" in r.getMessage()]
        assert len(warnings) == 1  # logged once, not per event
    finally:
        gate.release.set()
        trail.close()
    assert log.size == 110
    assert [decode_event(e).details["message_id"] for e in log.entries()] == [
        f"{i:08x}" for i in range(110)
    ]


def test_a_refused_batch_is_counted_and_later_batches_still_land(
    log: MerkleLog, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = log.append_many
    calls = 0

    def flaky(entries: Sequence[bytes]) -> range:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreError("disk full")
        return original(entries)

    monkeypatch.setattr(log, "append_many", flaky)
    trail = AuditTrail(log, key, batch_interval=10)
    for i in range(5):
        trail.emit(_event(i))
    trail.flush()
    for i in range(5, 8):
        trail.emit(_event(i))
    trail.close()
    assert (trail.write_errors, trail.dropped, trail.appended) == (1, 5, 3)
    assert log.size == 3


def test_an_on_head_callback_that_raises_does_not_stop_the_trail(
    log: MerkleLog, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(head: TreeHead) -> None:
        raise RuntimeError("witness unreachable")

    trail = AuditTrail(log, key, batch_interval=10, on_head=broken)
    with caplog.at_level(logging.ERROR, logger="trustwire.audit.trail"):
        trail.emit(_event(0))
        trail.flush()
        trail.emit(_event(1))
        trail.close()
    assert log.size == 2
    assert (trail.head() or _NO_HEAD).size == 2
    assert any("on_head" in record.getMessage() for record in caplog.records)


# -- lifecycle ------------------------------------------------------------------------


def test_close_flushes_then_refuses_events_and_leaves_the_log_open(
    log: MerkleLog, key: SigningKey
) -> None:
    trail = AuditTrail(log, key, batch_interval=10)
    for i in range(7):
        trail.emit(_event(i))
    trail.close()
    trail.close()  # idempotent
    assert (trail.head() or _NO_HEAD).size == 7
    with pytest.raises(ValueError):
        trail.emit(_event(8))
    assert log.size == 7  # still usable: the log belongs to the caller


def test_an_event_stream_feeds_the_trail_and_closes_it(log: MerkleLog, key: SigningKey) -> None:
    trail = AuditTrail(log, key)
    stream = EventStream([trail], clock=lambda: 42.0)
    stream.record(EventKind.REPLAY_DETECTED, agent="did:key:z6Mkeve", reason="replay", counter=7)
    stream.close()
    (entry,) = log.entries()
    event = decode_event(entry)
    assert (event.kind, event.agent, event.reason, event.time) == (
        EventKind.REPLAY_DETECTED,
        "did:key:z6Mkeve",
        "replay",
        42.0,
    )
    assert dict(event.details) == {"counter": 7}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_interval": 0},
        {"batch_interval": -1},
        {"max_batch": 0},
        {"max_batch": 100, "max_pending": 10},
    ],
)
def test_bad_batching_settings_are_refused(
    kwargs: dict[str, float], log: MerkleLog, key: SigningKey
) -> None:
    with pytest.raises(ValueError):
        AuditTrail(log, key, **kwargs)  # type: ignore[arg-type]


# -- on disk --------------------------------------------------------------------------


def test_a_sqlite_trail_verifies_after_reopening(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "audit.db"
    events = [_event(i, note="ok") for i in range(3000)]
    with MerkleLog.open_sqlite(path, origin=AUDIT_ORIGIN) as log:
        trail = AuditTrail(log, key)
        for event in events:
            trail.emit(event)
        trail.close()
        head = trail.head()
    assert head is not None
    assert head.size == 3000
    assert verify_log(read_entries(path), head, key.public_key).ok
    assert [decode_event(entry) for entry in read_entries(path)] == events
    with MerkleLog.open_sqlite(path, origin=AUDIT_ORIGIN) as log:
        assert log.latest_head() == head
        assert AuditTrail(log, key).head() == head  # a new trail resumes from it


def test_the_trail_keeps_up_with_thousands_of_events_per_second(
    tmp_path: Path, key: SigningKey
) -> None:
    # The coordinator emits an event per message at several thousand per second. The
    # bench measures ~40,000/s end to end; this floor only catches a collapse.
    count = 10_000
    events = [_event(i) for i in range(count)]
    with MerkleLog.open_sqlite(tmp_path / "audit.db", origin=AUDIT_ORIGIN) as log:
        trail = AuditTrail(log, key)
        started = time.perf_counter()
        for event in events:
            trail.emit(event)
        trail.close()
        elapsed = time.perf_counter() - started
        assert log.size == count
    assert count / elapsed > 3000, f"{count / elapsed:.0f} events/s"
