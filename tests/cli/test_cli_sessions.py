"""``trustwire session list|show|renew|end`` on a real home's sessions database."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from _cli_home import did_of, invoke, make_home, one_error_line

from trustwire.events import EventKind, EventStream, MemorySink
from trustwire.sessions.manager import SessionManager
from trustwire.sessions.model import Session, SessionConfig, new_session_id
from trustwire.sessions.store import SqliteSessionStore

MINUTE = 60.0


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home with alice, bob and carol, copied for each test (creating is slow)."""
    return make_home(tmp_path_factory.mktemp("sessions") / "home", ("alice", "bob", "carol"))


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(template, copy)
    return copy


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def add_sessions(home: Path, *sessions: Session) -> None:
    async def job() -> None:
        store = await SqliteSessionStore.open(home / "sessions.db")
        try:
            for session in sessions:
                await store.create(session)
        finally:
            await store.close()

    run(job())


def stored(home: Path, session_id: str) -> Session | None:
    async def job() -> Session | None:
        store = await SqliteSessionStore.open(home / "sessions.db")
        try:
            return await store.get(session_id)
        finally:
            await store.close()

    result: Session | None = run(job())
    return result


def make_session(
    home: Path, initiator: str, peer: str, *, age: float = 0.0, **changes: Any
) -> Session:
    now = time.time() - age
    session = Session(
        id=new_session_id(),
        initiator=did_of(home, initiator),
        peer=did_of(home, peer),
        created_at=now,
        last_activity=now,
        config=SessionConfig(),
    )
    return dataclasses.replace(session, **changes) if changes else session


def test_list_without_a_sessions_database_creates_nothing(home: Path) -> None:
    result = invoke(home, "session", "list")
    assert result.exit_code == 0, result.stderr
    assert "no active sessions" in result.stdout
    assert not (home / "sessions.db").exists()


def test_list_shows_active_sessions_with_agent_names(home: Path) -> None:
    live = make_session(home, "alice", "bob")
    ended = make_session(home, "bob", "carol", ended_at=time.time(), end_reason="done")
    add_sessions(home, live, ended)
    result = invoke(home, "session", "list")
    assert result.exit_code == 0, result.stderr
    assert live.id in result.stdout and ended.id not in result.stdout
    assert f"alice ({did_of(home, 'alice')})" in result.stdout
    assert f"bob ({did_of(home, 'bob')})" in result.stdout
    everything = invoke(home, "session", "list", "--all")
    assert live.id in everything.stdout and ended.id in everything.stdout
    assert "ended" in everything.stdout


def test_list_filters_by_agent_and_speaks_json(home: Path) -> None:
    a = make_session(home, "alice", "bob")
    b = make_session(home, "bob", "carol")
    add_sessions(home, a, b)
    result = invoke(home, "session", "list", "--agent", "carol", "--json")
    assert result.exit_code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    shown = json.loads(line)
    assert shown["id"] == b.id
    assert (shown["initiatorName"], shown["peerName"]) == ("bob", "carol")
    assert shown["status"] == "active"
    assert shown["timeoutConfig"] == SessionConfig().to_json()
    by_did = invoke(home, "session", "list", "--agent", did_of(home, "alice"), "--json")
    assert [json.loads(x)["id"] for x in by_did.stdout.splitlines()] == [a.id]


def test_list_for_an_unknown_agent_fails_clearly(home: Path) -> None:
    add_sessions(home, make_session(home, "alice", "bob"))
    result = invoke(home, "session", "list", "--agent", "mallory")
    assert result.exit_code == 4
    assert "unknown agent" in one_error_line(result)


def test_show_prints_one_session(home: Path) -> None:
    session = make_session(home, "alice", "bob", metadata={"topic": "invoices"})
    add_sessions(home, session)
    result = invoke(home, "session", "show", session.id)
    assert result.exit_code == 0, result.stderr
    for text in (session.id, "alice (", "bob (", "30 min, autoRenew on", "invoices"):
        assert text in result.stdout
    shown = json.loads(invoke(home, "session", "show", session.id, "--json").stdout)
    assert shown["id"] == session.id and shown["metadata"] == {"topic": "invoices"}
    assert 0 < shown["timeRemaining"] <= 30 * 60_000


def test_show_an_unknown_or_malformed_id_fails_clearly(home: Path) -> None:
    add_sessions(home, make_session(home, "alice", "bob"))
    missing = new_session_id()
    result = invoke(home, "session", "show", missing)
    assert result.exit_code == 1
    assert f"no session with id {missing}" in one_error_line(result)
    malformed = invoke(home, "session", "show", "not-an-id")
    assert malformed.exit_code == 2
    assert "is not a session id" in malformed.stderr


def test_renew_extends_and_counts(home: Path) -> None:
    session = make_session(
        home, "alice", "bob", age=20 * MINUTE, config=SessionConfig(auto_renew=False)
    )
    add_sessions(home, session)
    before = time.time()
    result = invoke(home, "session", "renew", session.id)
    assert result.exit_code == 0, result.stderr
    assert "renewed session" in result.stdout and "renewal 1" in result.stdout
    after = stored(home, session.id)
    assert after is not None
    assert after.renewal_count == 1 and after.version == 1
    assert after.expires_at >= before + 30 * MINUTE


def test_renew_past_the_max_duration_is_refused(home: Path) -> None:
    session = make_session(
        home,
        "alice",
        "bob",
        age=59 * MINUTE,
        config=SessionConfig(timeout_minutes=30, max_duration_minutes=60),
    )
    session = dataclasses.replace(session, renewed_at=time.time() - MINUTE)
    add_sessions(home, session)
    result = invoke(home, "session", "renew", session.id)
    assert result.exit_code != 0
    assert "maximum duration of 60 minutes" in one_error_line(result)
    assert stored(home, session.id) == session


def test_renew_or_end_an_expired_session_says_expired(home: Path) -> None:
    session = make_session(home, "alice", "bob", age=31 * MINUTE)
    add_sessions(home, session)
    for command in ("renew", "end"):
        result = invoke(home, "session", command, session.id)
        assert result.exit_code == 1
        assert "has expired" in one_error_line(result)


def test_end_records_the_operator_and_refuses_twice(home: Path) -> None:
    session = make_session(home, "alice", "bob")
    add_sessions(home, session)
    result = invoke(home, "session", "end", session.id, "--reason", "maintenance")
    assert result.exit_code == 0, result.stderr
    after = stored(home, session.id)
    assert after is not None
    assert (after.end_reason, after.ended_by, after.ended_announced) == ("maintenance", None, False)
    again = invoke(home, "session", "end", session.id)
    assert again.exit_code == 1
    assert "has ended" in one_error_line(again)


def test_end_rejects_an_unprintable_reason(home: Path) -> None:
    session = make_session(home, "alice", "bob")
    add_sessions(home, session)
    result = invoke(home, "session", "end", session.id, "--reason", "bad\x1b[2Jreason")
    assert result.exit_code == 2
    assert stored(home, session.id) == session


def test_a_running_manager_announces_what_the_cli_changed(home: Path) -> None:
    renewed = make_session(home, "alice", "bob", config=SessionConfig(auto_renew=False), age=MINUTE)
    ended = make_session(home, "bob", "carol")
    add_sessions(home, renewed, ended)
    sink = MemorySink()
    notices: list[tuple[str, str]] = []

    async def restarted() -> None:
        store = await SqliteSessionStore.open(home / "sessions.db")
        manager = SessionManager(
            store,
            events=EventStream([sink]),
            may_talk=lambda a, b, now: True,
            known_agent=lambda did: True,
            notify=lambda did, payload: notices.append((did, payload["event"])),
        )
        try:
            await manager.start()
            await manager.reload()
            await manager.sweep()
        finally:
            await manager.close()
            await store.close()

    # The coordinator was running before the operator acted; then it notices.
    async def whole() -> None:
        store = await SqliteSessionStore.open(home / "sessions.db")
        manager = SessionManager(
            store,
            events=EventStream([sink]),
            may_talk=lambda a, b, now: True,
            known_agent=lambda did: True,
            notify=lambda did, payload: notices.append((did, payload["event"])),
        )
        try:
            await manager.start()
            assert (
                await asyncio.to_thread(invoke, home, "session", "renew", renewed.id)
            ).exit_code == 0
            assert (
                await asyncio.to_thread(invoke, home, "session", "end", ended.id)
            ).exit_code == 0
            await manager.reload()
            await manager.sweep()
            await manager.reload()
            await manager.sweep()
        finally:
            await manager.close()
            await store.close()

    run(whole())
    alice, bob, carol = (did_of(home, name) for name in ("alice", "bob", "carol"))
    assert sorted(notices) == sorted(
        [
            (alice, "session.renewed"),
            (bob, "session.renewed"),
            (bob, "session.ended"),
            (carol, "session.ended"),
        ]
    )
    assert len(sink.of_kind(EventKind.SESSION_ENDED)) == 1
    # A restarted coordinator does not announce the end again.
    notices.clear()
    run(restarted())
    assert notices == []
