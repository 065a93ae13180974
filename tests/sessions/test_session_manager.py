"""The session manager with an injected clock: expiry, renewal, announcements, restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from trustwire.errors import (
    InvalidSessionConfig,
    PolicyDenied,
    RateLimited,
    SessionEnded,
    SessionExpired,
    SessionRenewalFailed,
    StoreError,
    UnknownSession,
)
from trustwire.events import EventKind, EventStream, MemorySink
from trustwire.sessions.manager import SessionManager
from trustwire.sessions.model import SessionMessage, new_session_id
from trustwire.sessions.store import MemorySessionStore, SessionStore, SqliteSessionStore

ALICE = "did:key:z6MkhaXgBZDvotDkL5257faiztiKC2RSkwWjTLW1Mm4qVbcG"
BOB = "did:key:z6MkfrQREUK7mDSoV9Bn3RhD7GZbYjXXkcVm5Vd3n4hmuW2e"
CAROL = "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH"
MALLORY = "did:key:z6MkwFKSdPj6nWk5aDN9o8DX6Y6BNNwR5uF4Zp5Tk7C3qq9r"
T0 = 1_750_000_000.0
MINUTE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class World:
    """A manager and everything it talks to."""

    def __init__(self, store: SessionStore, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or Clock()
        self.sink = MemorySink()
        self.notices: list[tuple[str, dict[str, Any]]] = []
        self.allowed: set[frozenset[str]] = {frozenset({ALICE, BOB}), frozenset({BOB, CAROL})}
        self.known = {ALICE, BOB, CAROL}
        self.defaults: dict[str, Mapping[str, Any]] = {}
        self.manager = self.make_manager()

    def make_manager(self) -> SessionManager:
        return SessionManager(
            self.store,
            events=EventStream([self.sink]),
            may_talk=lambda a, b, now: frozenset({a, b}) in self.allowed,
            known_agent=lambda did: did in self.known,
            agent_defaults=lambda did: self.defaults.get(did),
            notify=lambda did, payload: self.notices.append((did, payload)),
            clock=self.clock,
        )

    def told(self, event: str) -> list[tuple[str, str]]:
        """(recipient, session id) of each notice of ``event``."""
        return [
            (did, payload["session"]["id"])
            for did, payload in self.notices
            if payload["event"] == event
        ]

    def events(self, kind: EventKind) -> list[str]:
        return [str(event.details.get("session", "")) for event in self.sink.of_kind(kind)]


MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture(params=["memory", "sqlite"])
async def make_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeWorld]:
    stores: list[SessionStore] = []

    async def make(clock: Clock | None = None) -> World:
        if request.param == "memory":
            store: SessionStore = MemorySessionStore()
        else:
            store = await SqliteSessionStore.open(tmp_path / f"sessions{len(stores)}.db")
        stores.append(store)
        world = World(store, clock)
        await world.manager.start()
        return world

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def world(make_world: MakeWorld) -> World:
    return await make_world()


# -- create ------------------------------------------------------------------------------


async def test_create_announces_to_both_participants(world: World) -> None:
    session = await world.manager.create(ALICE, BOB, metadata={"topic": "x"})
    assert session.config.timeout_minutes == 30
    assert sorted(world.told("session.created")) == sorted([(ALICE, session.id), (BOB, session.id)])
    assert world.events(EventKind.SESSION_CREATED) == [session.id]
    assert await world.store.get(session.id) == session


async def test_create_clamps_the_config(world: World) -> None:
    session = await world.manager.create(
        ALICE,
        BOB,
        config={"timeoutMinutes": 1, "maxDurationMinutes": 1, "warningThresholdMinutes": 0},
    )
    assert session.config.to_json() == {
        "timeoutMinutes": 5,
        "autoRenew": True,
        "maxDurationMinutes": 5,
        "warningThresholdMinutes": 1,
    }


async def test_create_refuses_malformed_config(world: World) -> None:
    with pytest.raises(InvalidSessionConfig):
        await world.manager.create(ALICE, BOB, config={"timeoutMinutes": "30"})
    assert await world.store.list(include_inactive=True) == []


async def test_precedence_session_over_agent_over_builtin(world: World) -> None:
    world.defaults[ALICE] = {"timeoutMinutes": 60, "autoRenew": False}
    session = await world.manager.create(ALICE, BOB, config={"timeoutMinutes": 10})
    assert (session.config.timeout_minutes, session.config.auto_renew) == (10, False)
    assert session.config.max_duration_minutes == 720
    # The initiator's defaults apply, not the peer's.
    other = await world.manager.create(BOB, ALICE)
    assert (other.config.timeout_minutes, other.config.auto_renew) == (30, True)


@pytest.mark.parametrize(
    ("initiator", "peer", "reason"),
    [
        (ALICE, MALLORY, "unknown_agent"),  # not enrolled (or revoked)
        (MALLORY, ALICE, "unknown_agent"),
        (ALICE, CAROL, "policy_denied"),  # enrolled, but policy says no
    ],
)
async def test_create_refuses_unknown_agents_and_policy_denials(
    world: World, initiator: str, peer: str, reason: str
) -> None:
    with pytest.raises(PolicyDenied):
        await world.manager.create(initiator, peer)
    (denied,) = world.sink.of_kind(EventKind.SESSION_DENIED)
    assert denied.reason == reason
    assert await world.store.list(include_inactive=True) == []
    assert world.notices == []


async def test_create_refuses_a_session_with_oneself(world: World) -> None:
    with pytest.raises(ValueError, match="two different agents"):
        await world.manager.create(ALICE, ALICE)
    assert world.sink.of_kind(EventKind.SESSION_DENIED)[0].reason == "self"


async def test_an_agent_may_initiate_only_so_many_active_sessions(world: World) -> None:
    world.manager.max_active_per_agent = 3
    sessions = [await world.manager.create(ALICE, BOB) for _ in range(3)]
    with pytest.raises(RateLimited, match="at most 3 active sessions"):
        await world.manager.create(ALICE, BOB)
    assert world.sink.of_kind(EventKind.SESSION_DENIED)[-1].reason == "too_many_sessions"
    # Others are not affected, and ending one makes room again.
    await world.manager.create(BOB, ALICE)
    await world.manager.end(sessions[0].id, caller=ALICE)
    await world.manager.create(ALICE, BOB)


# -- access ------------------------------------------------------------------------------


async def test_a_non_participant_cannot_tell_a_session_exists(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    for call in (
        world.manager.get(session.id, caller=CAROL),
        world.manager.renew(session.id, caller=CAROL),
        world.manager.heartbeat(session.id, caller=CAROL),
        world.manager.end(session.id, caller=CAROL),
        world.manager.set_timeout(session.id, 60, caller=CAROL),
        world.manager.messages(session.id, caller=CAROL),
    ):
        with pytest.raises(UnknownSession) as raised:
            await call
        assert str(raised.value) == "unknown session"
    with pytest.raises(UnknownSession) as unknown:
        await world.manager.get(new_session_id(), caller=CAROL)
    assert str(unknown.value) == "unknown session"
    assert (await world.manager.get(session.id, caller=None)).id == session.id
    # The session is untouched by the attempts.
    assert await world.store.get(session.id) == session


async def test_check_message_only_between_the_two_participants(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    now = world.clock.now
    assert world.manager.check_message(session.id, ALICE, BOB, now=now).id == session.id
    assert world.manager.check_message(session.id, BOB, ALICE, now=now).id == session.id
    for sender, recipient in ((CAROL, BOB), (ALICE, CAROL), (ALICE, ALICE), (BOB, BOB)):
        with pytest.raises(UnknownSession):
            world.manager.check_message(session.id, sender, recipient, now=now)
    with pytest.raises(UnknownSession):
        world.manager.check_message(new_session_id(), ALICE, BOB, now=now)


# -- expiry ------------------------------------------------------------------------------


async def test_expiry_with_auto_renew_follows_messages(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    for _ in range(4):  # a message every 20 minutes keeps it alive for 80 minutes
        world.clock.advance(20 * MINUTE)
        world.manager.check_message(session.id, ALICE, BOB, now=world.clock.now)
    world.clock.advance(30 * MINUTE - 1)
    world.manager.check_message(session.id, BOB, ALICE, now=world.clock.now)
    world.clock.advance(30 * MINUTE)
    with pytest.raises(SessionExpired):
        world.manager.check_message(session.id, ALICE, BOB, now=world.clock.now)
    await world.manager.sweep()
    stored = await world.store.get(session.id)
    assert stored is not None and stored.renewal_count == 5
    assert stored.last_activity == T0 + 110 * MINUTE - 1


async def test_expiry_without_auto_renew_ignores_messages(world: World) -> None:
    session = await world.manager.create(ALICE, BOB, config={"autoRenew": False})
    world.clock.advance(20 * MINUTE)
    world.manager.check_message(session.id, ALICE, BOB, now=world.clock.now)
    world.clock.advance(10 * MINUTE)
    with pytest.raises(SessionExpired):
        world.manager.check_message(session.id, ALICE, BOB, now=world.clock.now)
    # The explicit renewal is what extends it.
    other = await world.manager.create(ALICE, BOB, config={"autoRenew": False})
    world.clock.advance(25 * MINUTE)
    renewed = await world.manager.renew(other.id, caller=BOB)
    assert renewed.renewal_count == 1
    world.clock.advance(29 * MINUTE)
    world.manager.check_message(other.id, ALICE, BOB, now=world.clock.now)


async def test_heartbeat_renews_only_with_auto_renew(world: World) -> None:
    on = await world.manager.create(ALICE, BOB)
    off = await world.manager.create(ALICE, BOB, config={"autoRenew": False})
    world.clock.advance(20 * MINUTE)
    beat_on = await world.manager.heartbeat(on.id, caller=ALICE)
    beat_off = await world.manager.heartbeat(off.id, caller=ALICE)
    assert beat_on.renewal_count == 1 and beat_on.expires_at == world.clock.now + 30 * MINUTE
    assert beat_off.renewal_count == 0 and beat_off.expires_at == T0 + 30 * MINUTE
    assert world.told("session.renewed") == [(ALICE, on.id), (BOB, on.id)]


async def test_expired_is_reported_as_expired_not_unknown(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    world.clock.advance(31 * MINUTE)
    with pytest.raises(SessionExpired) as raised:
        world.manager.check_message(session.id, ALICE, BOB, now=world.clock.now)
    assert raised.value.expires_at == int((T0 + 30 * MINUTE) * 1000)  # type: ignore[attr-defined]
    for call in (
        world.manager.get(session.id, caller=ALICE),
        world.manager.renew(session.id, caller=ALICE),
        world.manager.heartbeat(session.id, caller=BOB),
        world.manager.end(session.id, caller=BOB),
        world.manager.set_timeout(session.id, 60, caller=ALICE),
    ):
        with pytest.raises(SessionExpired):
            await call
    await world.manager.sweep()
    world.clock.advance(24 * 3600)
    await world.manager.sweep()
    with pytest.raises(SessionExpired):
        await world.manager.get(session.id, caller=ALICE)
    # A restart keeps telling it apart.
    restarted = world.make_manager()
    await restarted.start()
    with pytest.raises(SessionExpired):
        restarted.check_message(session.id, ALICE, BOB, now=world.clock.now)


async def test_expired_sessions_are_purged_after_the_retention(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    world.clock.advance(30 * MINUTE + 8 * 86400)
    await world.manager.sweep()
    with pytest.raises(UnknownSession):
        await world.manager.get(session.id, caller=ALICE)
    assert await world.store.get(session.id) is None


async def test_ended_sessions_refuse_everything(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    ended = await world.manager.end(session.id, caller=ALICE, reason="done")
    assert ended.ended_by == ALICE
    assert world.told("session.ended") == [(ALICE, session.id), (BOB, session.id)]
    (event,) = world.sink.of_kind(EventKind.SESSION_ENDED)
    assert event.reason == "done" and event.details["endedBy"] == ALICE
    with pytest.raises(SessionEnded):
        world.manager.check_message(session.id, BOB, ALICE, now=world.clock.now)
    for call in (
        world.manager.renew(session.id, caller=BOB),
        world.manager.end(session.id, caller=BOB),
        world.manager.get(session.id, caller=BOB),
    ):
        with pytest.raises(SessionEnded):
            await call
    await world.manager.sweep()
    assert len(world.told("session.ended")) == 2  # not announced again


# -- renewal -----------------------------------------------------------------------------


async def test_renewal_refused_past_max_duration(world: World) -> None:
    session = await world.manager.create(
        ALICE, BOB, config={"timeoutMinutes": 30, "maxDurationMinutes": 60}
    )
    world.clock.advance(20 * MINUTE)
    await world.manager.renew(session.id, caller=ALICE)
    world.clock.advance(20 * MINUTE)
    capped = await world.manager.renew(session.id, caller=BOB)
    assert capped.expires_at == T0 + 60 * MINUTE
    world.clock.advance(5 * MINUTE)
    with pytest.raises(SessionRenewalFailed):
        await world.manager.renew(session.id, caller=ALICE)
    assert (await world.manager.get(session.id, caller=None)).renewal_count == 2
    # Messages keep working until the cap, and the session never outlives it.
    world.manager.check_message(session.id, ALICE, BOB, now=T0 + 60 * MINUTE - 1)
    with pytest.raises(SessionExpired):
        world.manager.check_message(session.id, ALICE, BOB, now=T0 + 60 * MINUTE)


async def test_set_timeout_rejects_out_of_range_and_recomputes(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    for bad in (4, 1441, "60", None, True):
        with pytest.raises(InvalidSessionConfig):
            await world.manager.set_timeout(session.id, bad, caller=ALICE)
    changed = await world.manager.set_timeout(session.id, 120, caller=BOB)
    assert changed.expires_at == T0 + 120 * MINUTE
    assert changed.renewal_count == 0
    assert world.sink.of_kind(EventKind.SESSION_RENEWED)[0].reason == "timeout_changed"


async def test_a_message_flood_counts_one_renewal_a_minute(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    for tick in range(1, 601):  # ten messages a second for a minute
        world.manager.check_message(session.id, ALICE, BOB, now=T0 + tick / 10)
    world.clock.now = T0 + 60
    await world.manager.sweep()
    stored = await world.store.get(session.id)
    assert stored is not None
    assert stored.renewal_count == 1
    assert stored.last_activity == T0 + 60
    assert stored.expires_at == T0 + 60 + 30 * MINUTE
    assert world.told("session.renewed") == [(ALICE, session.id), (BOB, session.id)]


# -- warnings ----------------------------------------------------------------------------


async def test_expiring_is_sent_once_per_approach_and_rearmed_by_renewal(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    world.clock.advance(24 * MINUTE)
    await world.manager.sweep()
    assert world.told("session.expiring") == []
    for _ in range(5):  # the threshold is crossed; many sweeps, one warning
        world.clock.advance(30)
        await world.manager.sweep()
    assert world.told("session.expiring") == [(ALICE, session.id), (BOB, session.id)]
    payload = next(p for _, p in world.notices if p["event"] == "session.expiring")
    assert payload["session"]["isNearExpiration"] is True
    await world.manager.renew(session.id, caller=ALICE)  # re-arms
    world.clock.advance(24 * MINUTE)
    await world.manager.sweep()
    assert len(world.told("session.expiring")) == 2
    world.clock.advance(2 * MINUTE)
    await world.manager.sweep()
    await world.manager.sweep()
    assert len(world.told("session.expiring")) == 4
    assert len(world.events(EventKind.SESSION_EXPIRING)) == 2


async def test_expired_is_announced_exactly_once(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    world.clock.advance(31 * MINUTE)
    for _ in range(3):
        await world.manager.sweep()
    assert world.told("session.expired") == [(ALICE, session.id), (BOB, session.id)]
    stored = await world.store.get(session.id)
    assert stored is not None and stored.expired_announced


# -- restart -----------------------------------------------------------------------------


async def test_a_restart_keeps_sessions_state_and_announcement_flags(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    clock = Clock()
    first = World(await SqliteSessionStore.open(path), clock)
    await first.manager.start()
    warned = await first.manager.create(ALICE, BOB)
    clock.advance(10 * MINUTE)
    expired = await first.manager.create(BOB, CAROL, config={"timeoutMinutes": 5})
    ended = await first.manager.create(ALICE, BOB)
    await first.manager.end(ended.id, caller=BOB, reason="bye")
    first.manager.check_message(warned.id, ALICE, BOB, now=clock.now)  # renews, batched
    clock.advance(26 * MINUTE)  # warned: 4 minutes left; expired: 21 minutes ago
    await first.manager.sweep()
    assert first.told("session.expiring") == [(ALICE, warned.id), (BOB, warned.id)]
    assert first.told("session.expired") == [(BOB, expired.id), (CAROL, expired.id)]
    await first.manager.close()
    await first.store.close()

    second = World(await SqliteSessionStore.open(path), clock)
    try:
        await second.manager.start()
        await second.manager.sweep()
        assert second.notices == []  # nothing repeated
        kept = await second.manager.get(warned.id, caller=ALICE)
        assert kept.last_activity == T0 + 10 * MINUTE and kept.renewal_count == 1
        assert kept.warned_for == kept.expires_at
        with pytest.raises(SessionExpired):
            second.manager.check_message(expired.id, BOB, CAROL, now=clock.now)
        with pytest.raises(SessionEnded):
            second.manager.check_message(ended.id, ALICE, BOB, now=clock.now)
        clock.advance(5 * MINUTE)
        await second.manager.sweep()
        assert second.told("session.expired") == [(ALICE, warned.id), (BOB, warned.id)]
    finally:
        await second.store.close()


async def test_activity_is_flushed_on_close(tmp_path: Path) -> None:
    store = await SqliteSessionStore.open(tmp_path / "sessions.db")
    try:
        world = World(store)
        await world.manager.start()
        session = await world.manager.create(ALICE, BOB)
        world.manager.check_message(session.id, ALICE, BOB, now=T0 + 90)
        world.manager.record_message(
            SessionMessage(
                session.id, "aa" * 16, ALICE, BOB, "CHANNEL_DATA", 42, int((T0 + 90) * 1000)
            )
        )
        await world.manager.close()
        stored = await store.get(session.id)
        assert stored is not None and stored.last_activity == T0 + 90
        messages, _ = await store.messages(session.id)
        assert [m.size for m in messages] == [42]
    finally:
        await store.close()


# -- another process (the CLI) ---------------------------------------------------------------


async def test_reload_announces_an_operator_end_once(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    world = World(await SqliteSessionStore.open(path))
    cli = await SqliteSessionStore.open(path)
    try:
        await world.manager.start()
        session = await world.manager.create(ALICE, BOB)
        world.manager.check_message(session.id, ALICE, BOB, now=T0 + 30)  # unflushed activity
        stored = await cli.get(session.id)
        assert stored is not None
        assert await cli.update(stored.ended(T0 + 40, reason="operator", by=None)) is not None
        await world.manager.reload()
        await world.manager.sweep()
        await world.manager.reload()
        await world.manager.sweep()
        assert world.told("session.ended") == [(ALICE, session.id), (BOB, session.id)]
        (event,) = world.sink.of_kind(EventKind.SESSION_ENDED)
        assert event.details["endedBy"] == "operator" and event.reason == "operator"
        with pytest.raises(SessionEnded):
            world.manager.check_message(session.id, ALICE, BOB, now=T0 + 50)
        final = await cli.get(session.id)
        assert final is not None and final.ended_announced and final.last_activity == T0 + 30
    finally:
        await cli.close()
        await world.store.close()


async def test_reload_announces_an_operator_renewal(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    world = World(await SqliteSessionStore.open(path))
    cli = await SqliteSessionStore.open(path)
    try:
        await world.manager.start()
        session = await world.manager.create(ALICE, BOB, config={"autoRenew": False})
        stored = await cli.get(session.id)
        assert stored is not None
        assert await cli.update(stored.renewed(T0 + 20 * MINUTE)) is not None
        await world.manager.reload()
        assert world.told("session.renewed") == [(ALICE, session.id), (BOB, session.id)]
        world.manager.check_message(session.id, ALICE, BOB, now=T0 + 45 * MINUTE)
    finally:
        await cli.close()
        await world.store.close()


async def test_a_conflicting_write_merges_instead_of_losing_changes(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    world = World(await SqliteSessionStore.open(path))
    cli = await SqliteSessionStore.open(path)
    try:
        await world.manager.start()
        session = await world.manager.create(ALICE, BOB)
        stored = await cli.get(session.id)
        assert stored is not None
        # The operator renews behind the manager's back; the manager renews too.
        assert await cli.update(stored.renewed(T0 + 60)) is not None
        renewed = await world.manager.renew(session.id, caller=ALICE)
        assert renewed.renewal_count == 2
        assert (await cli.get(session.id)) == renewed
    finally:
        await cli.close()
        await world.store.close()


# -- messages, listing, health, the loop -------------------------------------------------


async def test_messages_are_listed_for_participants_newest_first(world: World) -> None:
    session = await world.manager.create(ALICE, BOB)
    for n in range(5):
        world.manager.record_message(
            SessionMessage(session.id, f"{n:032x}", ALICE, BOB, "CHANNEL_DATA", n, 1000 + n)
        )
    page = await world.manager.messages(session.id, caller=BOB, limit=2)
    assert [m["createdAt"] for m in page["messages"]] == [1004, 1003]
    assert page["hasMore"] is True
    assert page["cursors"] == {"before": 1003, "after": 1004}
    rest = await world.manager.messages(session.id, caller=ALICE, limit=500, before=1003)
    assert [m["createdAt"] for m in rest["messages"]] == [1002, 1001, 1000]
    assert rest["hasMore"] is False
    with pytest.raises(ValueError, match="limit"):
        await world.manager.messages(session.id, caller=ALICE, limit="5")  # type: ignore[arg-type]


async def test_list_and_health(world: World) -> None:
    a = await world.manager.create(ALICE, BOB)
    world.clock.advance(1)
    b = await world.manager.create(BOB, CAROL, config={"timeoutMinutes": 5})
    world.clock.advance(3 * MINUTE - 1)
    health = await world.manager.health()
    assert health["activeSessions"] == 2 and health["expiringSoon"] == 1
    assert health["status"] == "healthy" and health["uptime"] == 3 * MINUTE
    world.clock.advance(3 * MINUTE)
    assert [s.id for s in await world.manager.list()] == [a.id]
    assert [s.id for s in await world.manager.list(include_inactive=True)] == [a.id, b.id]
    assert [s.id for s in await world.manager.list(did=CAROL, include_inactive=True)] == [b.id]


class FlakyStore(MemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def generation(self) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreError("disk on fire")
        return await super().generation()


async def test_run_survives_store_errors_and_keeps_sweeping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    world = World(store)
    await world.manager.start()
    session = await world.manager.create(ALICE, BOB)
    world.clock.advance(31 * MINUTE)
    store.failures = 3
    with caplog.at_level(logging.WARNING, logger="trustwire.sessions.manager"):
        task = asyncio.create_task(world.manager.run(interval=0.001))
        for _ in range(500):
            await asyncio.sleep(0.001)
            if world.told("session.expired"):
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert world.told("session.expired") == [(ALICE, session.id), (BOB, session.id)]
    assert "disk on fire" in caplog.text


async def test_a_failing_notify_does_not_stop_the_change(world: World) -> None:
    def broken(did: str, payload: dict[str, Any]) -> None:
        raise ConnectionError("gone")

    manager = SessionManager(
        world.store,
        events=EventStream([world.sink]),
        may_talk=lambda a, b, now: True,
        known_agent=lambda did: True,
        notify=broken,
        clock=world.clock,
    )
    await manager.start()
    session = await manager.create(ALICE, BOB)
    assert await world.store.get(session.id) == session


async def test_message_metadata_for_unknown_sessions_is_not_stored(world: World) -> None:
    stray = new_session_id()
    world.manager.record_message(SessionMessage(stray, "ab" * 16, ALICE, BOB, "CHANNEL_DATA", 1, 1))
    await world.manager.sweep()
    assert await world.store.messages(stray) == ([], False)


async def test_an_end_made_while_no_coordinator_ran_is_announced_at_start(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    session = await world.manager.create(ALICE, BOB)
    stored = await world.store.get(session.id)
    assert stored is not None
    # Another process ends it; this manager is gone before it could reload.
    assert await world.store.update(stored.ended(T0 + 5, reason="operator", by=None)) is not None
    world.notices.clear()
    restarted = world.make_manager()
    await restarted.start()
    await restarted.sweep()
    await restarted.sweep()
    assert world.told("session.ended") == [(ALICE, session.id), (BOB, session.id)]
