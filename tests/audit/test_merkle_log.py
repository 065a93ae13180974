"""The signed Merkle log (``trustwire.audit.log``) on both backends, and ``verify_log``."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trustwire.audit.log import MAX_ENTRY_SIZE, MerkleLog, Report, TreeHead, verify_log
from trustwire.audit.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from trustwire.audit.storage import read_entries
from trustwire.crypto.signing import SigningKey
from trustwire.errors import InvalidSignature, LogInconsistent, ProofError, StoreError

NOW = 1_750_000_000.25
OpenLog = Callable[..., MerkleLog]


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.from_bytes(bytes(range(32)))


@pytest.fixture(params=["memory", "sqlite"])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenLog]:
    opened: list[MerkleLog] = []

    def open_(origin: str = "test/log") -> MerkleLog:
        if request.param == "memory":
            log = MerkleLog.memory(origin=origin)
        else:
            log = MerkleLog.open_sqlite(tmp_path / "log.db", origin=origin)
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()


def _entries(start: int, count: int) -> list[bytes]:
    return [b"entry-%06d" % i for i in range(start, start + count)]


def _reference(count: int) -> MerkleTree:
    return MerkleTree(leaf_hash(e) for e in _entries(0, count))


# -- appending and reading ------------------------------------------------------------


def test_append_many_returns_the_indexes_of_the_new_entries(open_log: OpenLog) -> None:
    log = open_log()
    assert log.append_many(_entries(0, 3)) == range(0, 3)
    assert log.append_many([]) == range(3, 3)
    assert log.append(b"entry-000003") == 3
    assert log.append_many(_entries(4, 10)) == range(4, 14)
    assert log.size == 14


def test_entries_read_back_in_order_across_read_chunks(open_log: OpenLog) -> None:
    log = open_log()
    written = _entries(0, 5000)  # more than one 4096-entry read chunk
    log.append_many(written)
    assert list(log.entries()) == written
    assert list(log.entries(4090, 4100)) == written[4090:4100]
    assert log.entry(0) == written[0]
    assert log.entry(4999) == written[4999]


def test_the_root_after_every_batch_is_the_rfc9162_root_of_the_entries(
    open_log: OpenLog,
) -> None:
    log = open_log()
    assert log.root() == EMPTY_ROOT
    reference = _reference(1200)
    rng = random.Random(5)
    size = 0
    while size < 1200:
        count = min(rng.randint(1, 97), 1200 - size)
        log.append_many(_entries(size, count))
        size += count
        assert log.root() == reference.root(size)
    for past in (0, 1, 15, 16, 17, 255, 256, 257, 1023, 1199):
        assert log.root(past) == reference.root(past)


def test_proofs_served_for_past_and_present_sizes_verify(open_log: OpenLog) -> None:
    log = open_log()
    log.append_many(_entries(0, 700))
    rng = random.Random(6)
    for size in (1, 2, 17, 256, 300, 513, 700):
        tree_root = log.root(size)
        for index in {0, size - 1, rng.randrange(size)}:
            proof = log.inclusion_proof(index, size)
            verify_inclusion(index, size, leaf_hash(log.entry(index)), proof, tree_root)
        for old in {0, 1, size, rng.randint(1, size)}:
            proof = log.consistency_proof(old, size)
            verify_consistency(old, size, log.root(old), tree_root, proof)
    # The defaults are the current size.
    assert log.inclusion_proof(5) == log.inclusion_proof(5, 700)
    assert log.consistency_proof(5) == log.consistency_proof(5, 700)


def test_appends_from_many_threads_all_land_and_the_log_verifies(
    open_log: OpenLog, key: SigningKey
) -> None:
    log = open_log()

    def writer(n: int) -> None:
        for j in range(20):
            log.append_many([b"thread %d batch %d item %d" % (n, j, k) for k in range(5)])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.size == 4 * 20 * 5
    head = log.signed_tree_head(key, now=NOW)
    assert verify_log(log.entries(), head, key.public_key).ok


def test_append_refuses_bad_entries_before_writing_anything(open_log: OpenLog) -> None:
    log = open_log()
    log.append_many(_entries(0, 2))
    with pytest.raises(TypeError):
        log.append_many([b"fine", "not bytes"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        log.append_many([b"fine", b"x" * (MAX_ENTRY_SIZE + 1)])
    assert log.size == 2
    assert log.root() == _reference(2).root()
    log.append(b"x" * MAX_ENTRY_SIZE)  # the limit itself is allowed
    assert log.size == 3


def test_a_failed_write_leaves_the_tree_unchanged(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()
    log.append_many(_entries(0, 15))
    before = log.root()

    def broken(*args: object) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(log._storage, "append", broken)
    with pytest.raises(StoreError):
        log.append_many(_entries(15, 10))
    monkeypatch.undo()
    assert log.size == 15
    assert log.root() == before
    log.append_many(_entries(15, 10))
    assert log.root() == _reference(25).root()


def test_misuse_raises_value_and_type_errors(open_log: OpenLog) -> None:
    log = open_log()
    log.append_many(_entries(0, 4))
    with pytest.raises(ValueError):
        log.entry(4)
    with pytest.raises(ValueError):
        log.entry(-1)
    with pytest.raises(ValueError):
        log.inclusion_proof(4)
    with pytest.raises(ValueError):
        log.inclusion_proof(0, 5)
    with pytest.raises(ValueError):
        log.consistency_proof(3, 5)
    with pytest.raises(ValueError):
        log.root(5)
    with pytest.raises(ValueError):
        list(log.entries(3, 5))
    with pytest.raises(TypeError):
        log.entry("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        log.root(True)


def test_a_closed_log_refuses_every_call(open_log: OpenLog, key: SigningKey) -> None:
    log = open_log()
    log.append(b"x")
    log.close()
    log.close()  # idempotent
    for call in (
        lambda: log.append(b"y"),
        lambda: log.root(),
        lambda: log.entry(0),
        lambda: log.signed_tree_head(key, now=NOW),
    ):
        with pytest.raises(StoreError):
            call()


# -- tree heads -----------------------------------------------------------------------


def test_a_signed_tree_head_verifies_and_survives_json(open_log: OpenLog, key: SigningKey) -> None:
    log = open_log()
    log.append_many(_entries(0, 9))
    head = log.signed_tree_head(key, now=NOW)
    assert (head.size, head.root, head.timestamp, head.origin) == (
        9,
        _reference(9).root(),
        1_750_000_000_250,
        "test/log",
    )
    head.verify(key.public_key)
    head.verify(key.public_key, origin="test/log")
    text = head.to_json()
    assert "\n" not in text
    assert TreeHead.from_json(text) == head
    assert TreeHead.from_json(text.encode()) == head
    assert log.latest_head() == head


def test_the_signed_message_is_the_documented_text(key: SigningKey) -> None:
    root = bytes(range(32))
    head = TreeHead.sign(key, origin="trustwire/audit", size=12, root=root, timestamp=34)
    message = (
        b"trustwire tree head v1\ntrustwire/audit\n12\n34\n"
        b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
    )
    assert TreeHead.signed_message("trustwire/audit", 12, root, 34) == message
    key.public_key.verify(head.signature, message)


def test_a_tree_head_fails_verification_under_another_key_or_origin(key: SigningKey) -> None:
    head = TreeHead.sign(key, origin="trustwire/audit", size=3, root=EMPTY_ROOT, timestamp=1)
    with pytest.raises(InvalidSignature):
        head.verify(SigningKey.generate().public_key)
    with pytest.raises(InvalidSignature):
        head.verify(key.public_key, origin="trustwire/registry")


@pytest.mark.parametrize(
    "field", ["size", "root", "timestamp", "origin", "signature"], ids=lambda f: f"altered-{f}"
)
def test_altering_any_field_of_a_tree_head_breaks_its_signature(
    field: str, key: SigningKey
) -> None:
    head = TreeHead.sign(key, origin="test/log", size=3, root=EMPTY_ROOT, timestamp=1)
    data = json.loads(head.to_json())
    data[field] = {
        "size": 4,
        "root": "00" * 32,
        "timestamp": 2,
        "origin": "test/other",
        "signature": "A" * 86 + "==",
    }[field]
    altered = TreeHead.from_json(json.dumps(data))
    with pytest.raises(InvalidSignature):
        altered.verify(key.public_key)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("[]", id="array"),
        pytest.param("{", id="truncated"),
        pytest.param('{"size":1}', id="missing-fields"),
        pytest.param("EXTRA", id="extra-field"),
        pytest.param("size=-1", id="negative-size"),
        pytest.param("size=true", id="bool-size"),
        pytest.param("size=1.0", id="float-size"),
        pytest.param(f"size={2**64}", id="size-over-64-bits"),
        pytest.param("timestamp=-5", id="negative-timestamp"),
        pytest.param('root="00"', id="short-root"),
        pytest.param(f'root="{"AB" * 32}"', id="uppercase-root"),
        pytest.param('signature="!!"', id="signature-not-base64"),
        pytest.param('signature="AAAA"', id="short-signature"),
        pytest.param('origin=""', id="empty-origin"),
        pytest.param('origin="has space"', id="origin-with-space"),
        pytest.param('origin="line\\nbreak"', id="origin-with-newline"),
    ],
)
def test_tree_head_from_json_refuses_malformed_text(text: str, key: SigningKey) -> None:
    good = json.loads(
        TreeHead.sign(key, origin="test/log", size=1, root=EMPTY_ROOT, timestamp=1).to_json()
    )
    if text == "EXTRA":
        text = json.dumps({**good, "extra": 1})
    elif "=" in text and not text.startswith("{"):
        name, value = text.split("=", 1)
        text = json.dumps({**good, name: json.loads(value)})
    with pytest.raises(ValueError):
        TreeHead.from_json(text)


@pytest.mark.parametrize("now", [float("nan"), float("inf"), -1.0, True])
def test_signed_tree_head_refuses_a_bad_clock_value(
    now: float, open_log: OpenLog, key: SigningKey
) -> None:
    with pytest.raises(ValueError):
        open_log().signed_tree_head(key, now=now)


def test_a_log_origin_must_be_printable_without_spaces() -> None:
    for origin in ("", "a b", "x" * 256, "caf\u00e9"):
        with pytest.raises(ValueError):
            MerkleLog.memory(origin=origin)


# -- SQLite specifics -----------------------------------------------------------------


def test_a_reopened_log_continues_the_same_tree(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "log.db"
    with MerkleLog.open_sqlite(path, origin="test/log") as log:
        log.append_many(_entries(0, 1000))
        head = log.signed_tree_head(key, now=NOW)
    with MerkleLog.open_sqlite(path, origin="test/log") as log:
        assert log.size == 1000
        assert log.root() == head.root
        assert log.latest_head() == head
        log.append_many(_entries(1000, 777))
        assert log.root() == _reference(1777).root()
        proof = log.consistency_proof(1000)
        verify_consistency(1000, 1777, head.root, log.root(), proof)


def test_a_new_log_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    MerkleLog.open_sqlite(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_log_file_cannot_be_opened_as_another_log(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    MerkleLog.open_sqlite(path, origin="trustwire/audit").close()
    with pytest.raises(StoreError, match="trustwire/audit"):
        MerkleLog.open_sqlite(path, origin="trustwire/registry")


def test_files_that_are_not_merkle_logs_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite"):
        MerkleLog.open_sqlite(garbage)
    other = tmp_path / "other.db"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE schema_version (version INTEGER)")
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match="not a trustwire Merkle log"):
        MerkleLog.open_sqlite(other)


def test_a_log_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    MerkleLog.open_sqlite(path).close()
    connection = sqlite3.connect(path)
    connection.execute("UPDATE merkle_log_version SET version = 99")
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match="version 99"):
        MerkleLog.open_sqlite(path)


def test_synchronous_full_is_accepted_and_unknown_modes_are_not(tmp_path: Path) -> None:
    MerkleLog.open_sqlite(tmp_path / "a.db", synchronous="full").close()
    with pytest.raises(ValueError):
        MerkleLog.open_sqlite(tmp_path / "b.db", synchronous="OFF")


def _raw(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    connection = sqlite3.connect(path)
    for sql, args in statements:
        connection.execute(sql, args)
    connection.commit()
    connection.close()


def test_reopening_refuses_a_node_cache_that_no_longer_matches_the_signed_head(
    tmp_path: Path, key: SigningKey
) -> None:
    path = tmp_path / "log.db"
    with MerkleLog.open_sqlite(path) as log:
        log.append_many(_entries(0, 300))
        log.signed_tree_head(key, now=NOW)
    # 300 = 256 + 32 + 8 + 4: the root's largest subtree is the cached node (8, 0).
    _raw(path, ("UPDATE nodes SET hash = zeroblob(32) WHERE level = 8 AND idx = 0", ()))
    with pytest.raises(LogInconsistent, match="no longer matches"):
        MerkleLog.open_sqlite(path)


def test_a_damaged_node_cache_serves_proofs_that_fail_verification(
    tmp_path: Path, key: SigningKey
) -> None:
    path = tmp_path / "log.db"
    with MerkleLog.open_sqlite(path) as log:
        log.append_many(_entries(0, 300))
        head = log.signed_tree_head(key, now=NOW)
    # (4, 3) covers entries 48..63; it is not on the right edge, so the log still opens,
    # but the proof for entry 32 uses it as a sibling: clients see the damage.
    _raw(path, ("UPDATE nodes SET hash = zeroblob(32) WHERE level = 4 AND idx = 3", ()))
    with MerkleLog.open_sqlite(path) as log:
        proof = log.inclusion_proof(32, 300)
        with pytest.raises(ProofError):
            verify_inclusion(32, 300, leaf_hash(log.entry(32)), proof, head.root)


def test_reopening_refuses_a_missing_cached_node(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with MerkleLog.open_sqlite(path) as log:
        log.append_many(_entries(0, 256))
    _raw(path, ("DELETE FROM nodes WHERE level = 8", ()))
    with pytest.raises(LogInconsistent, match="incomplete"):
        MerkleLog.open_sqlite(path)


def test_reopening_refuses_a_damaged_stored_head(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "log.db"
    with MerkleLog.open_sqlite(path) as log:
        log.append(b"x")
        log.signed_tree_head(key, now=NOW)
    _raw(path, ("UPDATE meta SET value = '{}' WHERE key = 'head'", ()))
    with pytest.raises(LogInconsistent, match="damaged"):
        MerkleLog.open_sqlite(path)


# -- verify_log -----------------------------------------------------------------------


@pytest.fixture
def signed_log(key: SigningKey) -> tuple[list[bytes], TreeHead, TreeHead]:
    """Entries, a head at 40 (saved earlier) and a head at 100."""
    log = MerkleLog.memory(origin="test/log")
    log.append_many(_entries(0, 40))
    early = log.signed_tree_head(key, now=NOW)
    log.append_many(_entries(40, 60))
    late = log.signed_tree_head(key, now=NOW + 1)
    entries = list(log.entries())
    log.close()
    return entries, early, late


def test_an_untouched_log_verifies_against_both_heads(
    signed_log: tuple[list[bytes], TreeHead, TreeHead], key: SigningKey
) -> None:
    entries, early, late = signed_log
    report = verify_log(entries, late, key.public_key, since_head=early)
    assert report == Report(100, late, late.root, ())
    assert report.ok
    report.check()


def test_an_empty_log_verifies_against_a_head_of_size_zero(key: SigningKey) -> None:
    head = TreeHead.sign(key, origin="test/log", size=0, root=EMPTY_ROOT, timestamp=0)
    assert verify_log([], head, key.public_key).ok


def test_verification_with_another_key_reports_the_signatures(
    signed_log: tuple[list[bytes], TreeHead, TreeHead],
) -> None:
    entries, early, late = signed_log
    report = verify_log(entries, late, SigningKey.generate().public_key, since_head=early)
    assert not report.ok
    assert any("tree head's signature" in p for p in report.problems)
    assert any("saved tree head's signature" in p for p in report.problems)


def test_a_rolled_back_head_is_caught_by_the_saved_head(
    signed_log: tuple[list[bytes], TreeHead, TreeHead], key: SigningKey
) -> None:
    # The attacker truncates to 40 entries and presents the genuine head at 40.
    entries, early, late = signed_log
    report = verify_log(entries[:40], early, key.public_key, since_head=late)
    assert any("rolled back" in p for p in report.problems)
    assert any("truncated" in p for p in report.problems)


def test_a_truncated_log_is_reported(
    signed_log: tuple[list[bytes], TreeHead, TreeHead], key: SigningKey
) -> None:
    entries, _, late = signed_log
    report = verify_log(entries[:99], late, key.public_key)
    assert report.root is None
    assert report.problems == (
        "the log has 99 entries, fewer than the 100 of the tree head: it was truncated",
    )
    with pytest.raises(LogInconsistent) as caught:
        report.check()
    assert caught.value.problems == report.problems


def test_a_changed_prefix_is_reported_against_the_saved_head(
    signed_log: tuple[list[bytes], TreeHead, TreeHead], key: SigningKey
) -> None:
    entries, early, late = signed_log
    changed = [*entries]
    changed[7] = b"forged"
    report = verify_log(changed, late, key.public_key, since_head=early)
    assert len(report.problems) == 2
    assert "first 40 entries do not match the saved head" in report.problems[0]
    assert "first 100 entries do not match the tree head" in report.problems[1]


def test_entries_beyond_the_head_are_reported_unless_allowed(
    signed_log: tuple[list[bytes], TreeHead, TreeHead], key: SigningKey
) -> None:
    entries, early, _ = signed_log
    strict = verify_log(entries, early, key.public_key)
    assert strict.problems == ("60 entries lie beyond the signed tree head",)
    assert strict.root == early.root
    assert verify_log(entries, early, key.public_key, allow_unsigned_tail=True).ok


def test_a_saved_head_of_another_log_is_reported(
    signed_log: tuple[list[bytes], TreeHead, TreeHead], key: SigningKey
) -> None:
    entries, early, late = signed_log
    other = TreeHead.sign(key, origin="test/other", size=40, root=early.root, timestamp=1)
    report = verify_log(entries, late, key.public_key, since_head=other)
    assert report.problems == ("the saved head is for log 'test/other', not 'test/log'",)


def test_read_entries_streams_a_log_file_read_only(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "log.db"
    with MerkleLog.open_sqlite(path) as log:
        log.append_many(_entries(0, 50))
        head = log.signed_tree_head(key, now=NOW)
    os.chmod(path, 0o400)
    try:
        assert list(read_entries(path)) == _entries(0, 50)
        assert verify_log(read_entries(path), head, key.public_key).ok
    finally:
        os.chmod(path, 0o600)


def test_read_entries_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        read_entries(tmp_path / "absent.db")


@pytest.mark.parametrize(
    ("statement", "finding"),
    [
        ("DELETE FROM entries WHERE idx = 5", "entry 5 is missing"),
        ("UPDATE entries SET data = 'text' WHERE idx = 6", "entry 6 is not a blob"),
        ("UPDATE entries SET data = 7 WHERE idx = 7", "entry 7 is not a blob"),
        ("UPDATE entries SET idx = -1 WHERE idx = 0", "unexpected entry index -1"),
        ("DROP TABLE entries", "the entries table is missing"),
    ],
)
def test_damaged_rows_become_problems_in_the_report(
    statement: str, finding: str, tmp_path: Path, key: SigningKey
) -> None:
    path = tmp_path / "log.db"
    with MerkleLog.open_sqlite(path) as log:
        log.append_many(_entries(0, 20))
        head = log.signed_tree_head(key, now=NOW)
    _raw(path, (statement, ()))
    report = verify_log(read_entries(path), head, key.public_key)
    assert not report.ok
    assert any(finding in problem for problem in report.problems), report.problems


def test_verify_log_hashes_a_streamed_log_without_holding_it(key: SigningKey) -> None:
    # A generator is consumed once, entry by entry.
    count = 20_000
    reference = MerkleTree(leaf_hash(b"%d" % i) for i in range(count))
    head = TreeHead.sign(
        key, origin="test/log", size=count, root=reference.root(), timestamp=int(time.time())
    )
    consumed = 0

    def stream() -> Iterator[bytes]:
        nonlocal consumed
        for i in range(count):
            consumed += 1
            yield b"%d" % i

    assert verify_log(stream(), head, key.public_key).ok
    assert consumed == count
