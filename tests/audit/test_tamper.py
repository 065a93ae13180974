"""Tamper evidence of the Merkle log, as an attacker with write access to the file sees it.

Two properties:

* every proof a log serves verifies: for random logs of 1..300 entries built in random
  batches, every inclusion proof (each entry, at the current and at a past size) and every
  consistency proof (from each past size) checks out against the log's roots;
* 1,000 random single tampers applied to the SQLite file with raw SQL, as an attacker
  with file access would (edit, delete, reorder, insert, truncate the tail; each with a
  few variants, e.g. deleting a row and renumbering the rest so no index is missing), are
  every one detected by ``verify_log`` against the tree head saved before the attack.
  The tally is printed (``pytest -s``).

Trials are reproducible: the random generator is seeded with ``SEED``.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustwire.audit.log import MerkleLog, TreeHead, verify_log
from trustwire.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from trustwire.audit.storage import read_entries
from trustwire.crypto.signing import SigningKey

SEED = 20_250_601
TRIALS = 1000
KEY = SigningKey.from_bytes(b"\x42" * 32)
NOW = 1_750_000_000.0


def _build(log: MerkleLog, size: int, rng: random.Random) -> None:
    while log.size < size:
        count = min(rng.randint(1, 40), size - log.size)
        start = log.size
        log.append_many(
            [
                b"event %d: %s" % (i, rng.randbytes(rng.randint(0, 40)))
                for i in range(start, start + count)
            ]
        )


def _check_every_proof(log: MerkleLog, rng: random.Random) -> int:
    size = log.size
    checked = 0
    roots = [log.root(m) for m in range(size + 1)]
    leaves = [leaf_hash(entry) for entry in log.entries()]
    past = rng.randint(1, size)
    for tree_size in {size, past}:
        for index in range(tree_size):
            proof = log.inclusion_proof(index, tree_size)
            verify_inclusion(index, tree_size, leaves[index], proof, roots[tree_size])
            checked += 1
    for old in range(size + 1):
        verify_consistency(old, size, roots[old], roots[size], log.consistency_proof(old, size))
        checked += 1
    return checked


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=1, max_value=300), seed=st.integers(0, 2**32))
def test_every_proof_a_random_memory_log_serves_verifies(size: int, seed: int) -> None:
    rng = random.Random(seed)
    with MerkleLog.memory() as log:
        _build(log, size, rng)
        assert _check_every_proof(log, rng) >= 2 * size + 1


@settings(max_examples=10, deadline=None)
@given(size=st.integers(min_value=1, max_value=300), seed=st.integers(0, 2**32))
def test_every_proof_a_random_sqlite_log_serves_verifies(size: int, seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        with MerkleLog.open_sqlite(path) as log:
            _build(log, size // 2, rng)
        # Reopened half way: proofs must not depend on what stayed in memory.
        with MerkleLog.open_sqlite(path) as log:
            _build(log, size, rng)
            assert _check_every_proof(log, rng) >= 2 * size + 1


# -- the attacker ---------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A closed log file and the head its owner saved before the attack."""

    path: Path
    size: int
    head: TreeHead


Tamper = Callable[[sqlite3.Connection, Base, random.Random], str]


def _shift_up(db: sqlite3.Connection, start: int) -> None:
    """Renumber rows ``idx >= start`` to ``idx + 1`` (through negatives: no key clash)."""
    db.execute("UPDATE entries SET idx = -idx - 1 WHERE idx >= ?", (start,))
    db.execute("UPDATE entries SET idx = -idx WHERE idx < 0")


def _shift_down(db: sqlite3.Connection, after: int) -> None:
    """Renumber rows ``idx > after`` to ``idx - 1``."""
    db.execute("UPDATE entries SET idx = -idx WHERE idx > ?", (after,))
    db.execute("UPDATE entries SET idx = -idx - 1 WHERE idx < 0")


def _data(db: sqlite3.Connection, index: int) -> bytes:
    (data,) = db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
    assert isinstance(data, bytes)
    return data


def edit(db: sqlite3.Connection, base: Base, rng: random.Random) -> str:
    k = rng.randrange(base.size)
    old = _data(db, k)
    variant = rng.choice(["flip-bit", "rewrite", "copy-other", "append-byte", "empty", "text"])
    if variant == "flip-bit" and old:
        bit = rng.randrange(len(old) * 8)
        new: bytes | str = bytes(
            b ^ (1 << (bit % 8)) if i == bit // 8 else b for i, b in enumerate(old)
        )
    elif variant == "copy-other" and base.size > 1:
        new = _data(db, rng.choice([i for i in range(base.size) if i != k]))
    elif variant == "append-byte":
        new = old + b"\x00"
    elif variant == "empty" and old:
        new = b""
    elif variant == "text":
        new = old.decode("latin-1")  # same characters, stored as TEXT
    else:
        variant = "rewrite"
        new = b"forged " + rng.randbytes(16)
    if new == old:  # a no-op is not a tamper
        new = old + b"!"
    db.execute("UPDATE entries SET data = ? WHERE idx = ?", (new, k))
    return f"edit/{variant}"


def delete(db: sqlite3.Connection, base: Base, rng: random.Random) -> str:
    k = rng.randrange(base.size)
    db.execute("DELETE FROM entries WHERE idx = ?", (k,))
    if rng.random() < 0.5:
        _shift_down(db, k)  # hide the gap
        return "delete/renumbered"
    return "delete/gap"


def reorder(db: sqlite3.Connection, base: Base, rng: random.Random) -> str:
    if rng.random() < 0.5:
        i = rng.randrange(base.size - 1)
        j, variant = i + 1, "adjacent"
    else:
        i, j = rng.sample(range(base.size), 2)
        variant = "any-two"
    if rng.random() < 0.5:
        a, b = _data(db, i), _data(db, j)
        db.execute("UPDATE entries SET data = ? WHERE idx = ?", (b, i))
        db.execute("UPDATE entries SET data = ? WHERE idx = ?", (a, j))
        return f"reorder/{variant}-swap-data"
    db.execute("UPDATE entries SET idx = -1 WHERE idx = ?", (i,))
    db.execute("UPDATE entries SET idx = ? WHERE idx = ?", (i, j))
    db.execute("UPDATE entries SET idx = ? WHERE idx = -1", (j,))
    return f"reorder/{variant}-swap-index"


def insert(db: sqlite3.Connection, base: Base, rng: random.Random) -> str:
    k = rng.randint(0, base.size)
    forged = _data(db, rng.randrange(base.size)) if rng.random() < 0.5 else b"forged"
    _shift_up(db, k)
    db.execute("INSERT INTO entries (idx, data) VALUES (?, ?)", (k, forged))
    return "insert/at-end" if k == base.size else "insert/inside"


def truncate(db: sqlite3.Connection, base: Base, rng: random.Random) -> str:
    k = rng.randrange(base.size)
    db.execute("DELETE FROM entries WHERE idx >= ?", (k,))
    return "truncate/all" if k == 0 else "truncate/tail"


KINDS: dict[str, Tamper] = {
    "edit": edit,
    "delete": delete,
    "reorder": reorder,
    "insert": insert,
    "truncate": truncate,
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> list[Base]:
    rng = random.Random(SEED)
    directory = tmp_path_factory.mktemp("tamper-bases")
    sizes = [1, 2, 3, 16, 17, 300, *(rng.randint(4, 300) for _ in range(6))]
    made = []
    for n, size in enumerate(sizes):
        path = directory / f"base-{n}.db"
        with MerkleLog.open_sqlite(path, origin="test/audit") as log:
            _build(log, size, rng)
            head = log.signed_tree_head(KEY, now=NOW)
        # Closing checkpointed the WAL: the main file alone is the whole log.
        assert not Path(f"{path}-wal").exists()
        made.append(Base(path, size, head))
    return made


def _attack(base: Base, target: Path, tamper: Tamper, rng: random.Random) -> str:
    shutil.copyfile(base.path, target)
    db = sqlite3.connect(target)
    db.execute("PRAGMA synchronous = OFF")  # the attacker does not care about power loss
    try:
        label = tamper(db, base, rng)
        db.commit()
    finally:
        db.close()
    return label


def test_an_untouched_copy_of_each_base_log_verifies(bases: list[Base], tmp_path: Path) -> None:
    for base in bases:
        target = tmp_path / "copy.db"
        shutil.copyfile(base.path, target)
        assert verify_log(read_entries(target), base.head, KEY.public_key).ok


def test_every_random_single_tamper_of_the_file_is_detected(
    bases: list[Base], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    kinds = list(KINDS)
    tally: Counter[str] = Counter()
    detected: Counter[str] = Counter()
    missed: list[str] = []
    for trial in range(TRIALS):
        kind = kinds[trial % len(kinds)]
        candidates = [b for b in bases if b.size >= 2] if kind == "reorder" else bases
        base = rng.choice(candidates)
        target = tmp_path / f"trial-{trial % 2}.db"
        for suffix in ("-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        label = _attack(base, target, KINDS[kind], rng)
        report = verify_log(read_entries(target), base.head, KEY.public_key)
        tally[kind] += 1
        if report.ok:
            missed.append(f"trial {trial}: {label} on a log of {base.size}")
        else:
            detected[kind] += 1
        tally[label] += 1
    lines = [f"tamper trials (seed {SEED}):"]
    for kind in kinds:
        variants = ", ".join(
            f"{label.split('/')[1]} {count}"
            for label, count in sorted(tally.items())
            if label.startswith(kind + "/")
        )
        lines.append(f"  {kind:9} {detected[kind]:4}/{tally[kind]:<4} detected  ({variants})")
    total = sum(detected[k] for k in kinds)
    lines.append(f"  total     {total}/{TRIALS} detected")
    print("\n".join(lines))
    assert sum(tally[k] for k in kinds) == TRIALS
    assert not missed, missed


def test_rolling_back_the_stored_head_and_truncating_is_caught_by_a_saved_head(
    tmp_path: Path,
) -> None:
    # The attacker truncates to an older size and puts that size's genuine head back as
    # the log's latest: the file is self-consistent, so only a head saved elsewhere earlier
    # can tell.
    path = tmp_path / "log.db"
    rng = random.Random(SEED)
    with MerkleLog.open_sqlite(path) as log:
        _build(log, 100, rng)
        old_head = log.signed_tree_head(KEY, now=NOW)
        _build(log, 180, rng)
        saved = log.signed_tree_head(KEY, now=NOW + 60)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM entries WHERE idx >= 100")
    db.execute("DELETE FROM nodes WHERE (idx + 1) << level > 100")
    db.execute("UPDATE meta SET value = ? WHERE key = 'head'", (old_head.to_json(),))
    db.commit()
    db.close()
    with MerkleLog.open_sqlite(path) as log:  # the rollback is invisible from inside
        stored = log.latest_head()
        assert stored == old_head
    assert verify_log(read_entries(path), stored, KEY.public_key).ok
    report = verify_log(read_entries(path), stored, KEY.public_key, since_head=saved)
    assert any("rolled back" in problem for problem in report.problems)
    assert any("truncated" in problem for problem in report.problems)
