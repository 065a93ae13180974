"""The security-event stream: events, sinks, subscriptions."""

from __future__ import annotations

import asyncio
import json
import math
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustwire.events import (
    ROUTINE_KINDS,
    EventKind,
    EventSink,
    EventStream,
    JsonlSink,
    MemorySink,
    SecurityEvent,
)

ALICE = "did:key:z6MkAlice"
BOB = "did:key:z6MkBob"


def event(kind: EventKind = EventKind.MESSAGE_DENIED, **details: Any) -> SecurityEvent:
    return SecurityEvent(kind, 1_700_000_000.5, ALICE, BOB, "policy_denied", details)


# -- SecurityEvent -----------------------------------------------------------------------


def test_event_kinds_are_the_documented_stable_strings() -> None:
    assert {kind.value for kind in EventKind} == {
        "auth.success",
        "auth.failure",
        "connection.opened",
        "connection.closed",
        "channel.handshake",
        "message.accepted",
        "message.queued",
        "message.delivered",
        "message.denied",
        "replay.detected",
        "timestamp.stale",
        "rate.limited",
        "frame.invalid",
        "policy.reloaded",
        "agent.enrolled",
        "agent.revoked",
        "impersonation.attempt",
        "certificate.issued",
        "alert.raised",
        "session.created",
        "session.renewed",
        "session.expiring",
        "session.expired",
        "session.ended",
        "session.denied",
        "memory.created",
        "memory.read",
        "memory.written",
        "memory.deleted",
        "memory.granted",
        "memory.revoked",
        "memory.destroyed",
        "memory.purged",
        "memory.denied",
        "broker.request",
        "broker.denied",
        "broker.error",
    }
    assert ROUTINE_KINDS == {
        EventKind.MESSAGE_ACCEPTED,
        EventKind.MESSAGE_QUEUED,
        EventKind.MESSAGE_DELIVERED,
    }


@pytest.mark.parametrize("content", [b"secret", bytearray(b"secret"), memoryview(b"secret")])
def test_event_refuses_bytes_in_details(content: object) -> None:
    with pytest.raises(TypeError, match="metadata only"):
        SecurityEvent(EventKind.MESSAGE_ACCEPTED, 0.0, details={"payload": content})  # type: ignore[dict-item]


@pytest.mark.parametrize("value", [["a"], {"a": 1}, None, object()])
def test_event_refuses_non_scalar_details(value: object) -> None:
    with pytest.raises(TypeError):
        SecurityEvent(EventKind.MESSAGE_ACCEPTED, 0.0, details={"x": value})  # type: ignore[dict-item]


def test_event_refuses_non_string_detail_keys() -> None:
    with pytest.raises(TypeError):
        SecurityEvent(EventKind.MESSAGE_ACCEPTED, 0.0, details={1: "x"})  # type: ignore[dict-item]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_event_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError):
        SecurityEvent(EventKind.MESSAGE_ACCEPTED, bad)
    with pytest.raises(ValueError):
        SecurityEvent(EventKind.MESSAGE_ACCEPTED, 0.0, details={"x": bad})


def test_event_refuses_bad_field_types() -> None:
    with pytest.raises(TypeError):
        SecurityEvent(EventKind.AUTH_FAILURE, "now")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SecurityEvent(EventKind.AUTH_FAILURE, True)
    with pytest.raises(TypeError):
        SecurityEvent(EventKind.AUTH_FAILURE, 0.0, agent=b"did")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SecurityEvent("no.such.kind", 0.0)  # type: ignore[arg-type]


def test_event_accepts_a_kind_string_and_normalises_it() -> None:
    made = SecurityEvent("replay.detected", 1.0)  # type: ignore[arg-type]
    assert made.kind is EventKind.REPLAY_DETECTED


def test_event_details_are_a_frozen_copy() -> None:
    details: dict[str, Any] = {"size": 10}
    made = SecurityEvent(EventKind.MESSAGE_ACCEPTED, 0.0, details=details)
    details["size"] = 99
    assert made.details["size"] == 10
    with pytest.raises(TypeError):
        made.details["size"] = 5  # type: ignore[index]


def test_event_round_trips_through_json() -> None:
    original = event(size=512, ok=True, ratio=0.25, channel="c1")
    text = original.to_json()
    assert "\n" not in text
    assert json.loads(text)["kind"] == "message.denied"
    assert SecurityEvent.from_json(text) == original


def test_event_json_stays_one_line_with_newlines_in_strings() -> None:
    original = SecurityEvent(EventKind.FRAME_INVALID, 3.0, reason="bad\nframe", details={"a": "\n"})
    assert "\n" not in original.to_json()
    assert SecurityEvent.from_json(original.to_json()) == original


def test_event_is_routine_only_for_traffic_kinds() -> None:
    assert event(EventKind.MESSAGE_DELIVERED).is_routine
    assert not event(EventKind.MESSAGE_DENIED).is_routine


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{}",
        '{"kind": "auth.success"}',
        '{"kind": "nope", "time": 1}',
        '{"kind": "auth.success", "time": "1"}',
        '{"kind": "auth.success", "time": 1, "content": "x"}',
        '{"kind": "auth.success", "time": 1, "details": {"x": [1]}}',
        '{"kind": "auth.success", "time": 1, "details": []}',
        '{"kind": "auth.success", "time": NaN}',
        "[" * 100_000,
    ],
)
def test_from_json_rejects_malformed_input_with_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        SecurityEvent.from_json(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_from_json_never_raises_anything_but_value_error(text: str) -> None:
    try:
        SecurityEvent.from_json(text)
    except ValueError:
        pass


detail_values = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(EventKind)),
    st.floats(min_value=0, max_value=4e9),
    st.one_of(st.none(), st.text(max_size=30)),
    st.dictionaries(st.text(max_size=10), detail_values, max_size=5),
)
def test_any_valid_event_round_trips_through_json(
    kind: EventKind, when: float, reason: str | None, details: dict[str, Any]
) -> None:
    original = SecurityEvent(kind, when, ALICE, None, reason, details)
    assert SecurityEvent.from_json(original.to_json()) == original


# -- EventStream and sinks ---------------------------------------------------------------


def test_memory_sink_satisfies_the_sink_protocol() -> None:
    assert isinstance(MemorySink(), EventSink)


def test_stream_fans_out_to_every_sink() -> None:
    first, second = MemorySink(), MemorySink()
    stream = EventStream([first])
    stream.add_sink(second)
    stream.emit(event())
    assert first.events == [event()]
    assert second.events == [event()]
    assert stream.sinks == (first, second)


def test_removed_sink_receives_nothing_more() -> None:
    sink = MemorySink()
    stream = EventStream([sink])
    stream.remove_sink(sink)
    stream.emit(event())
    assert sink.events == []


def test_routine_events_skip_sinks_when_excluded_but_security_events_do_not() -> None:
    sink = MemorySink()
    stream = EventStream([sink], include_routine=False)
    for kind in EventKind:
        stream.emit(event(kind))
    assert set(sink.kinds()) == set(EventKind) - ROUTINE_KINDS
    assert not stream.include_routine


def test_routine_events_reach_sinks_by_default() -> None:
    sink = MemorySink()
    stream = EventStream([sink])
    stream.emit(event(EventKind.MESSAGE_DELIVERED))
    assert sink.kinds() == [EventKind.MESSAGE_DELIVERED]


class ExplodingSink:
    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: SecurityEvent) -> None:
        self.calls += 1
        raise OSError("disk full")


def test_a_failing_sink_neither_raises_nor_starves_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, healthy = ExplodingSink(), MemorySink()
    stream = EventStream([broken, healthy])
    stream.emit(event())
    stream.emit(event())
    assert len(healthy) == 2
    assert broken.calls == 2
    assert stream.sink_errors == 2
    # Logged once, not once per event.
    assert sum("sink" in record.message for record in caplog.records) == 1


def test_record_stamps_the_event_with_the_stream_clock() -> None:
    sink = MemorySink()
    stream = EventStream([sink], clock=lambda: 42.0)
    made = stream.record(EventKind.RATE_LIMITED, agent=ALICE, reason="rate_limited", cost=3)
    assert made == SecurityEvent(
        EventKind.RATE_LIMITED, 42.0, ALICE, None, "rate_limited", {"cost": 3}
    )
    assert sink.events == [made]


def test_memory_sink_keeps_only_the_newest_events() -> None:
    sink = MemorySink(maxlen=3)
    for number in range(5):
        sink.emit(SecurityEvent(EventKind.AUTH_SUCCESS, float(number)))
    assert [e.time for e in sink.events] == [2.0, 3.0, 4.0]
    assert sink.kinds() == [EventKind.AUTH_SUCCESS] * 3
    assert len(sink.of_kind(EventKind.AUTH_SUCCESS)) == 3
    assert sink.of_kind(EventKind.AUTH_FAILURE) == []
    sink.clear()
    assert len(sink) == 0


def test_memory_sink_events_is_a_snapshot() -> None:
    sink = MemorySink()
    snapshot = sink.events
    sink.emit(event())
    assert snapshot == []
    assert sink.events[-1] == event()


# -- subscriptions -----------------------------------------------------------------------


async def test_subscriber_receives_events_emitted_after_subscribing() -> None:
    stream = EventStream()
    stream.emit(event(EventKind.AUTH_SUCCESS))  # before: not delivered
    subscription = stream.subscribe()
    stream.emit(event(EventKind.AUTH_FAILURE))
    stream.emit(event(EventKind.REPLAY_DETECTED))
    subscription.close()
    received = [e.kind async for e in subscription]
    assert received == [EventKind.AUTH_FAILURE, EventKind.REPLAY_DETECTED]


async def test_waiting_subscriber_wakes_when_an_event_arrives() -> None:
    stream = EventStream()
    subscription = stream.subscribe()

    async def first() -> SecurityEvent:
        return await anext(subscription)

    task = asyncio.create_task(first())
    await asyncio.sleep(0)
    assert not task.done()
    stream.emit(event())
    assert await asyncio.wait_for(task, 1.0) == event()


async def test_slow_subscriber_drops_the_oldest_and_counts_drops() -> None:
    stream = EventStream()
    subscription = stream.subscribe(maxlen=3)
    for number in range(10):
        stream.emit(SecurityEvent(EventKind.AUTH_FAILURE, float(number)))
    assert subscription.dropped == 7
    assert len(subscription) == 3
    subscription.close()
    assert [e.time async for e in subscription] == [7.0, 8.0, 9.0]


async def test_subscriber_can_filter_kinds_and_ignores_include_routine() -> None:
    stream = EventStream(include_routine=False)
    subscription = stream.subscribe(kinds=[EventKind.MESSAGE_DELIVERED])
    stream.emit(event(EventKind.AUTH_FAILURE))
    stream.emit(event(EventKind.MESSAGE_DELIVERED))
    subscription.close()
    assert [e.kind async for e in subscription] == [EventKind.MESSAGE_DELIVERED]


async def test_closed_subscription_receives_nothing_more() -> None:
    stream = EventStream()
    async with stream.subscribe() as subscription:
        stream.emit(event())
    assert subscription.closed
    stream.emit(event())
    assert len(subscription) == 1


async def test_closing_the_stream_ends_waiting_subscribers() -> None:
    stream = EventStream()
    subscription = stream.subscribe()

    async def drain() -> list[SecurityEvent]:
        return [e async for e in subscription]

    task = asyncio.create_task(drain())
    await asyncio.sleep(0)
    stream.close()
    assert await asyncio.wait_for(task, 1.0) == []


def test_subscription_maxlen_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventStream().subscribe(maxlen=0)


# -- JsonlSink ---------------------------------------------------------------------------


def read_events(path: Path) -> list[SecurityEvent]:
    return [SecurityEvent.from_json(line) for line in path.read_text().splitlines()]


def test_jsonl_sink_creates_a_private_file_and_writes_one_event_per_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        sink.emit(event(size=1))
        sink.emit(event(EventKind.AUTH_FAILURE))
    finally:
        sink.close()
    assert read_events(path) == [event(size=1), event(EventKind.AUTH_FAILURE)]


def test_jsonl_sink_flushes_without_being_closed(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.emit(event())
        deadline = time.monotonic() + 2.0
        while not path.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert read_events(path) == [event()]


def test_jsonl_sink_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.emit(event(EventKind.AUTH_SUCCESS))
    with JsonlSink(path) as sink:
        sink.emit(event(EventKind.AUTH_FAILURE))
    assert [e.kind for e in read_events(path)] == [EventKind.AUTH_SUCCESS, EventKind.AUTH_FAILURE]


def test_jsonl_sink_refuses_events_after_close(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "events.jsonl")
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        sink.emit(event())


def test_jsonl_sink_drops_rather_than_growing_without_bound(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, max_pending=2, flush_interval=0.2)
    try:
        for _ in range(5):
            sink.emit(event())
    finally:
        sink.close()
    # The writer may have drained the queue between emits, so at least 2 and at most 5.
    written = len(read_events(path))
    assert 2 <= written <= 5
    assert written + sink.dropped == 5


def test_jsonl_sink_rejects_a_flush_interval_over_200_ms(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        JsonlSink(tmp_path / "events.jsonl", flush_interval=1.0)
    assert not (tmp_path / "events.jsonl").exists()


def test_stream_close_closes_sinks_and_flushes(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    stream = EventStream([JsonlSink(path), MemorySink()], include_routine=False)
    stream.record(EventKind.AUTH_FAILURE, peer="127.0.0.1:5000", reason="authentication_failed")
    stream.record(EventKind.MESSAGE_ACCEPTED, agent=ALICE)
    stream.close()
    assert [e.kind for e in read_events(path)] == [EventKind.AUTH_FAILURE]


def test_jsonl_sink_tightens_an_existing_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("")
    path.chmod(0o644)
    JsonlSink(path).close()
    assert (path.stat().st_mode & 0o777) == 0o600
