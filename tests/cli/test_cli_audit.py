"""``trustwire audit verify|head|tail`` over a real audit log file, tampered with raw SQL."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from _cli_home import (
    T0,
    append_events,
    did_of,
    invoke,
    make_home,
    message_event,
    one_error_line,
    stored_head,
    tamper,
)

from trustwire.audit.log import MerkleLog, TreeHead
from trustwire.audit.trail import AUDIT_ORIGIN, encode_event
from trustwire.cli import audit as audit_module
from trustwire.cli.failure import ExitCode
from trustwire.crypto.signing import SigningKey
from trustwire.events import EventKind, SecurityEvent
from trustwire.home import Home

ENTRIES = 20


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with alice and bob and an audit log of 20 events, built once."""
    home = make_home(tmp_path_factory.mktemp("audit") / "home")
    alice, bob = did_of(home, "alice"), did_of(home, "bob")
    events = [message_event(alice, bob, T0 + i) for i in range(ENTRIES - 2)]
    events.insert(5, SecurityEvent(EventKind.MESSAGE_DENIED, T0 + 5.5, bob, alice, "policy"))
    events.append(SecurityEvent(EventKind.AUTH_FAILURE, T0 + 30, None, "192.0.2.7:4000", "tls"))
    append_events(home, events)
    return home


@pytest.fixture
def home(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the pristine home, free to tamper with."""
    copy = tmp_path / "home"
    shutil.copytree(pristine, copy)
    return copy


def _entry(home: Path, index: int) -> bytes:
    with sqlite3.connect(home / "audit.db") as connection:
        (data,) = connection.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
    return bytes(data)


def _reheaded(home: Path, **changes: object) -> str:
    """The stored head with some fields changed (its signature then no longer fits)."""
    data = json.loads(stored_head(home))
    data.update(changes)
    return json.dumps(data, separators=(",", ":"))


def _forged(at: float = T0 + 99) -> bytes:
    return encode_event(SecurityEvent(EventKind.POLICY_RELOADED, at, reason="forged"))


# -- verify ---------------------------------------------------------------------------------


def test_verify_passes_an_intact_log_and_prints_its_size_root_and_head_time(home: Path) -> None:
    result = invoke(home, "audit", "verify")
    assert result.exit_code == 0, result.stderr
    with MerkleLog.open_sqlite(home / "audit.db", origin=AUDIT_ORIGIN) as log:
        root = log.root().hex()
    assert "audit log verified" in result.stdout
    assert root in result.stdout
    assert f"entries      {ENTRIES}" in result.stdout
    assert "2025-06-15T15:06:40Z" in result.stdout  # T0, the head's time
    assert Home(home).log_verify_key().to_bytes().hex() in result.stdout


def test_verify_json_reports_ok_entries_and_the_head(home: Path) -> None:
    result = invoke(home, "audit", "verify", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["entries"] == report["head"]["size"] == ENTRIES
    assert report["head"]["origin"] == AUDIT_ORIGIN


def _swap(home: Path, first: int, second: int) -> list[tuple[str, tuple[object, ...]]]:
    a, b = _entry(home, first), _entry(home, second)
    return [
        ("UPDATE entries SET data = ? WHERE idx = ?", (b, first)),
        ("UPDATE entries SET data = ? WHERE idx = ?", (a, second)),
    ]


def _edited(home: Path, index: int) -> bytes:
    return _entry(home, index).replace(b"CHANNEL_DATA", b"CHANNEL_INIT")


TAMPERS = {
    # name: (statements builder, expected problem text)
    "edit an entry": (
        lambda home: [("UPDATE entries SET data = ? WHERE idx = 7", (_edited(home, 7),))],
        "entries do not match the tree head",
    ),
    "delete an entry": (
        lambda home: [("DELETE FROM entries WHERE idx = 7", ())],
        "entry 7 is missing",
    ),
    "delete an entry and renumber the rest": (
        lambda home: [
            ("DELETE FROM entries WHERE idx = 7", ()),
            ("UPDATE entries SET idx = -idx WHERE idx > 7", ()),
            ("UPDATE entries SET idx = -idx - 1 WHERE idx < 0", ()),
        ],
        f"fewer than the {ENTRIES} of the tree head",
    ),
    "reorder two entries": (
        lambda home: _swap(home, 3, 12),
        "entries do not match the tree head",
    ),
    "insert an entry": (
        lambda home: [
            ("UPDATE entries SET idx = -idx - 1 WHERE idx >= 7", ()),
            ("UPDATE entries SET idx = -idx WHERE idx < 0", ()),
            ("INSERT INTO entries (idx, data) VALUES (7, ?)", (_forged(),)),
        ],
        "entries do not match the tree head",
    ),
    "append an entry": (
        lambda home: [("INSERT INTO entries (idx, data) VALUES (?, ?)", (ENTRIES, _forged()))],
        "1 entries lie beyond the signed tree head",
    ),
    "truncate the tail": (
        lambda home: [("DELETE FROM entries WHERE idx >= ?", (ENTRIES - 3,))],
        f"the log has {ENTRIES - 3} entries, fewer than the {ENTRIES}",
    ),
    "forge the stored head": (
        lambda home: [
            ("UPDATE meta SET value = ? WHERE key = 'head'", (_reheaded(home, root="0" * 64),))
        ],
        "signature does not verify with the log key",
    ),
    "remove the stored head": (
        lambda home: [("DELETE FROM meta WHERE key = 'head'", ())],
        "the log holds no signed tree head",
    ),
    "drop the entries table": (
        lambda home: [("DROP TABLE entries", ())],
        "the entries table is missing",
    ),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_verify_exits_non_zero_and_names_the_problem_for_each_kind_of_tamper(
    home: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_module, "_sleep", lambda _seconds: None)
    assert invoke(home, "audit", "verify").exit_code == 0
    build, expected = TAMPERS[name]
    tamper(home, *build(home))
    result = invoke(home, "audit", "verify")
    assert result.exit_code == ExitCode.FAILED
    assert "does NOT verify" in result.stdout
    assert expected in result.stdout
    assert one_error_line(result).startswith("error: audit log verification failed: ")


def test_a_garbage_audit_file_is_reported_not_crashed_on(home: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (home / f"audit.db{suffix}").unlink(missing_ok=True)
    (home / "audit.db").write_bytes(b"this is not a database" * 100)
    result = invoke(home, "audit", "verify")
    assert result.exit_code == ExitCode.FAILED
    assert "not a usable SQLite database" in one_error_line(result)


def test_verify_without_an_audit_log_fails(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", agents=())
    result = invoke(home, "audit", "verify")
    assert result.exit_code == ExitCode.FAILED
    assert "no audit log at" in one_error_line(result)


def test_verify_since_head_accepts_a_log_that_grew_and_catches_a_rollback(home: Path) -> None:
    alice, bob = did_of(home, "alice"), did_of(home, "bob")
    old_head_text = stored_head(home)
    append_events(home, [message_event(bob, alice, T0 + 100 + i) for i in range(5)], now=T0 + 200)
    saved = home.parent / "saved-head.json"
    exported = invoke(home, "audit", "head", "--out", str(saved))
    assert exported.exit_code == 0, exported.stderr
    assert "size 25" in exported.stderr
    append_events(home, [message_event(alice, bob, T0 + 300)], now=T0 + 300)
    grown = invoke(home, "audit", "verify", "--since-head", str(saved))
    assert grown.exit_code == 0, grown.stdout + grown.stderr
    assert "size 25 of" in grown.stdout and "is a prefix of this log" in grown.stdout

    # Roll back to the genuine older head and truncate to match: consistent on its own...
    tamper(
        home,
        ("DELETE FROM entries WHERE idx >= ?", (ENTRIES,)),
        ("UPDATE meta SET value = ? WHERE key = 'head'", (old_head_text,)),
    )
    assert invoke(home, "audit", "verify").exit_code == 0
    # ...but not with the head saved elsewhere.
    caught = invoke(home, "audit", "verify", "--since-head", str(saved))
    assert caught.exit_code == ExitCode.FAILED
    assert "the log was rolled back" in caught.stdout
    assert f"the log has {ENTRIES} entries, fewer than the 25 of the saved head" in caught.stdout


def test_a_log_re_signed_with_a_swapped_key_fails_against_the_saved_head_and_pinned_key(
    home: Path,
) -> None:
    saved = home.parent / "saved-head.json"
    pinned = home.parent / "log.pub"
    assert invoke(home, "audit", "head", "--out", str(saved)).exit_code == 0
    pinned.write_bytes((home / "coordinator" / "log.pub").read_bytes())
    # The attacker rewrites history under a key of their own and swaps log.pub.
    entries = [_entry(home, i) for i in range(ENTRIES) if i != 5]
    for suffix in ("", "-wal", "-shm"):
        (home / f"audit.db{suffix}").unlink(missing_ok=True)
    rogue = SigningKey.generate()
    with MerkleLog.open_sqlite(home / "audit.db", origin=AUDIT_ORIGIN) as log:
        log.append_many(entries)
        log.signed_tree_head(rogue, now=T0)
    (home / "coordinator" / "log.pub").write_text(rogue.public_key.to_bytes().hex() + "\n")

    assert invoke(home, "audit", "verify").exit_code == 0  # self-consistent forgery
    with_saved = invoke(home, "audit", "verify", "--since-head", str(saved))
    assert with_saved.exit_code == ExitCode.FAILED
    assert "the saved tree head's signature does not verify" in with_saved.stdout
    with_pinned = invoke(home, "audit", "verify", "--public-key", str(pinned))
    assert with_pinned.exit_code == ExitCode.FAILED
    assert "the tree head's signature does not verify" in with_pinned.stdout


def test_verify_checks_a_copied_log_with_a_copied_key_without_any_home(
    home: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "audit.db").write_bytes((home / "audit.db").read_bytes())
    (backup / "log.pub").write_bytes((home / "coordinator" / "log.pub").read_bytes())
    nowhere = tmp_path / "no-home-here"
    args = ["--log", str(backup / "audit.db"), "--public-key", str(backup / "log.pub")]
    result = invoke(nowhere, "audit", "verify", *args)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert not nowhere.exists()


def test_verify_refuses_a_since_head_file_that_is_not_a_head(home: Path) -> None:
    bogus = home.parent / "bogus.json"
    bogus.write_text('{"size": 3}')
    result = invoke(home, "audit", "verify", "--since-head", str(bogus))
    assert result.exit_code == ExitCode.FAILED
    assert "not a tree head" in one_error_line(result)


# -- head -----------------------------------------------------------------------------------


def test_head_prints_the_latest_signed_head_which_verifies_with_the_log_key(home: Path) -> None:
    result = invoke(home, "audit", "head")
    assert result.exit_code == 0, result.stderr
    head = TreeHead.from_json(result.stdout.strip())
    head.verify(Home(home).log_verify_key(), origin=AUDIT_ORIGIN)
    assert head.size == ENTRIES
    assert result.stdout.strip() == stored_head(home)


def test_head_refuses_to_export_a_head_the_log_key_did_not_sign(home: Path) -> None:
    forged = _reheaded(home, size=ENTRIES - 1)
    tamper(home, ("UPDATE meta SET value = ? WHERE key = 'head'", (forged,)))
    result = invoke(home, "audit", "head")
    assert result.exit_code == ExitCode.FAILED
    assert "does not verify with the log key" in one_error_line(result)
    assert result.stdout == ""


# -- tail -----------------------------------------------------------------------------------


def test_tail_prints_the_last_events_oldest_first_with_agent_names(home: Path) -> None:
    result = invoke(home, "audit", "tail", "-n", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[1:4] == ["message.accepted", "alice", "bob"]
    assert lines[-1].split()[1:] == ["auth.failure", "-", "192.0.2.7:4000", "tls"]
    assert lines[-1].startswith("2025-06-15T15:07:10Z")


def test_tail_filters_by_kind_and_prints_json(home: Path) -> None:
    result = invoke(home, "audit", "tail", "--kind", "message.denied", "--json")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 1
    assert rows[0]["kind"] == "message.denied"
    assert rows[0]["index"] == 5
    assert (rows[0]["agent_name"], rows[0]["peer_name"]) == ("bob", "alice")
    assert rows[0]["agent"] == did_of(home, "bob")
    assert rows[0]["reason"] == "policy"


def test_tail_reads_backwards_past_a_chunk_to_find_rare_kinds(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_module, "TAIL_CHUNK", 4)
    result = invoke(home, "audit", "tail", "--kind", "message.denied", "--kind", "auth.failure")
    assert result.exit_code == 0, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()] == [
        "message.denied",
        "auth.failure",
    ]
    assert invoke(home, "audit", "tail", "-n", "0").stdout == ""


def test_tail_follow_prints_new_events_until_ctrl_c(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = did_of(home, "alice"), did_of(home, "bob")
    polls: list[float] = []

    def poll(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:
            event = SecurityEvent(EventKind.MESSAGE_DENIED, T0 + 500, alice, bob, "late")
            append_events(home, [event], now=T0 + 500)
        elif len(polls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(audit_module, "_sleep", poll)
    result = invoke(home, "audit", "tail", "-n", "1", "--follow", "--kind", "message.denied")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[1:] == ["message.denied", "bob", "alice", "policy"]
    assert lines[1].split()[1:] == ["message.denied", "alice", "bob", "late"]


def test_tail_warns_about_an_entry_that_is_not_an_event(home: Path) -> None:
    tamper(home, ("UPDATE entries SET data = ? WHERE idx = ?", (b"not json", ENTRIES - 1)))
    result = invoke(home, "audit", "tail", "-n", "1")
    assert result.exit_code == 0
    assert f"audit log entry {ENTRIES - 1} is not a security event" in result.stderr
    assert result.stdout.split()[1] == "message.accepted"
