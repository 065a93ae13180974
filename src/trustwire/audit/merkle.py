"""RFC 9162 §2.1 Merkle tree hashing, proofs and their verification (sans-I/O).

Definitions (RFC 9162 §2.1.1, identical to RFC 6962 §2.1):

* leaf hash ``SHA-256(0x00 || data)``, interior node hash ``SHA-256(0x01 || left || right)``;
* ``MTH({})`` is ``SHA-256()``; ``MTH(D[n])`` for ``n > 1`` splits at ``k``, the largest
  power of two *smaller than* ``n`` (not the midpoint), and hashes ``MTH(D[0:k])`` with
  ``MTH(D[k:n])``.

Nodes are addressed as ``(level, index)``: the *perfect* subtree of ``2**level`` leaves
starting at leaf ``index * 2**level``. Every hash a proof needs is either such a perfect
subtree or a right-border range ``[start, end)`` whose hash is the fold of the perfect
subtrees that ``end - start`` decomposes into, so proof generation asks a
:data:`NodeSource` for perfect-subtree hashes only and never looks at leaves itself.

How large trees stay fast. :class:`CompactRange` keeps the right edge of the tree (one
perfect subtree per set bit of the size), so an append costs one leaf hash plus, on
average, one node hash, and the root after any append is a fold of at most 64 hashes.
Appends report each perfect subtree they complete at a *cached level* (a positive
multiple of :data:`CACHE_STRIDE`, i.e. levels 4, 8, 12, ...); storing those costs about one
node per 15 leaves. Any perfect subtree hash is then rebuilt from at most
``2**(CACHE_STRIDE - 1) = 8`` stored hashes (leaf hashes below level 4, cached nodes above),
so a proof over 1,000,000 leaves (about 20 nodes) needs at most about 160 node hashes
and a few dozen lookups, independent of the tree size.

Verification follows the RFC 9162 §2.1.3.2 and §2.1.4.2 algorithms and, before running
them, checks every size and index against its bounds (``index < size``,
``old_size <= new_size``, sizes below ``2**64``) and the proof's length against the exact
length the tree shape dictates, so an oversized or truncated proof is refused before any
hashing. Every failure raises :class:`~trustwire.errors.ProofError`.

Invariant: this module does no I/O and keeps no global state; callers bring the hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

from trustwire.crypto.hashes import constant_time_equal, sha256
from trustwire.errors import ProofError

__all__ = [
    "CACHE_STRIDE",
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_SIZE",
    "CompactRange",
    "MerkleTree",
    "NodeSource",
    "consistency_proof",
    "fold_perfect",
    "inclusion_proof",
    "is_cached_level",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
"""Bytes in every hash of the tree (SHA-256)."""

EMPTY_ROOT: Final = sha256(b"")
"""``MTH({})``: the root of the empty tree."""

MAX_SIZE: Final = (1 << 64) - 1
"""The largest tree size accepted (RFC 9162 sizes are unsigned 64-bit integers)."""

CACHE_STRIDE: Final = 4
"""Perfect subtrees are cached at levels that are positive multiples of this."""

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

NodeSource = Callable[[int, int], bytes]
"""``nodes(level, index)``: the hash of the perfect subtree ``(level, index)``."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one log entry."""
    return sha256(_LEAF_PREFIX + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return sha256(_NODE_PREFIX + left + right)


def is_cached_level(level: int) -> bool:
    """True for the levels whose perfect subtrees a log stores (4, 8, 12, ...)."""
    return level > 0 and level % CACHE_STRIDE == 0


def fold_perfect(hashes: Sequence[bytes]) -> bytes:
    """The root of a perfect subtree given its ``2**k`` aligned children at one level."""
    count = len(hashes)
    if count == 0 or count & (count - 1):
        raise ValueError("fold_perfect needs a power-of-two number of hashes")
    row = list(hashes)
    while len(row) > 1:
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
    return row[0]


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Fold a right edge (largest subtree first) into one hash: ``h0 (h1 (h2 ...))``."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """``MTH`` of a whole sequence of leaf hashes (``EMPTY_ROOT`` when empty); O(n)."""
    compact = CompactRange()
    compact.extend(leaf_hashes)
    return compact.root()


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")


def range_hash(start: int, end: int, nodes: NodeSource) -> bytes:
    """``MTH(D[start:end])`` for a range whose ``start`` is aligned to its size.

    The ranges a proof refers to are all of that shape: ``start`` is a multiple of the
    smallest power of two ``>= end - start``. Such a range is the fold of the perfect
    subtrees ``end - start`` decomposes into, largest (leftmost) first.
    """
    width = end - start
    if width <= 0:
        raise ValueError("range_hash needs a non-empty range")
    if start & ((1 << (width - 1).bit_length()) - 1):
        raise ValueError(f"range [{start}, {end}) is not aligned to its size")
    parts: list[bytes] = []
    position = start
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            parts.append(nodes(level, position >> level))
            position += 1 << level
    return _fold_right(parts)


def inclusion_proof(index: int, size: int, nodes: NodeSource) -> list[bytes]:
    """RFC 9162 ``PATH(index, D[size])``: the audit path of leaf ``index``, leaf first.

    Raises :class:`ValueError` unless ``0 <= index < size``.
    """
    _check_size("index", index)
    _check_size("size", size)
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    low, high = 0, size
    while high - low > 1:
        k = _split(high - low)
        if index < low + k:
            proof.append(range_hash(low + k, high, nodes))
            high = low + k
        else:
            proof.append(range_hash(low, low + k, nodes))
            low += k
    # Collected root-first; the wire order is leaf-first.
    proof.reverse()
    return proof


def consistency_proof(old_size: int, new_size: int, nodes: NodeSource) -> list[bytes]:
    """RFC 9162 ``PROOF(old_size, D[new_size])``, smallest subtree first.

    Empty when ``old_size`` is 0 or equals ``new_size`` (nothing to prove). Raises
    :class:`ValueError` unless ``0 <= old_size <= new_size``.
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    # SUBPROOF(m, D[low:high], complete), unrolled; m is relative to ``low``.
    low, high, m, complete = 0, new_size, old_size, True
    while m != high - low:
        k = _split(high - low)
        if m <= k:
            proof.append(range_hash(low + k, high, nodes))
            high = low + k
        else:
            proof.append(range_hash(low, low + k, nodes))
            low += k
            m -= k
            complete = False
    if not complete:
        proof.append(range_hash(low, high, nodes))
    proof.reverse()
    return proof


# -- verification ---------------------------------------------------------------------


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ProofError(f"{name} is not bytes")
    raw = bytes(value)
    if len(raw) != HASH_SIZE:
        raise ProofError(f"{name} is {len(raw)} bytes, not {HASH_SIZE}")
    return raw


def _check_proof(proof: object, expected: int) -> list[bytes]:
    if isinstance(proof, bytes | bytearray | memoryview | str) or not isinstance(proof, Sequence):
        raise ProofError("a proof must be a sequence of hashes")
    # Length first: an oversized proof is refused before any element is looked at.
    if len(proof) != expected:
        raise ProofError(f"proof has {len(proof)} hashes; this tree shape needs {expected}")
    return [_check_hash(f"proof[{i}]", node) for i, node in enumerate(proof)]


def _check_bounds(name: str, value: int) -> None:
    _check_size(name, value)
    if not 0 <= value <= MAX_SIZE:
        raise ProofError(f"{name} {value} is out of range")


def _inclusion_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is the hash of entry ``index`` in the tree ``root``.

    Raises :class:`~trustwire.errors.ProofError` on any failure: ``index >= size``, a
    size out of range, a proof of the wrong length or with a malformed hash, or a
    computed root that differs (RFC 9162 §2.1.3.2).
    """
    _check_bounds("index", index)
    _check_bounds("size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    result = _check_hash("leaf hash", leaf_hash)
    expected = _check_hash("root", root)
    path = _check_proof(proof, _inclusion_length(index, size))
    fn, sn = index, size - 1
    for sibling in path:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    if not constant_time_equal(result, expected):
        raise ProofError("inclusion proof does not lead to the expected root")


def _consistency_length(old_size: int, new_size: int) -> int:
    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    border = ((old_size - 1) >> inner).bit_count()
    shift = (old_size & -old_size).bit_length() - 1
    seed = 0 if old_size & (old_size - 1) == 0 else 1
    return seed + inner - shift + border


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Check that the tree ``old_root`` of ``old_size`` is a prefix of ``new_root``.

    ``old_size == 0`` is consistent with anything (the proof must be empty and
    ``old_root`` must be :data:`EMPTY_ROOT`); equal sizes need an empty proof and equal
    roots. Otherwise RFC 9162 §2.1.4.2 is applied to a proof of exactly the expected
    length. Raises :class:`~trustwire.errors.ProofError` on any failure, including
    ``old_size > new_size``.
    """
    _check_bounds("old_size", old_size)
    _check_bounds("new_size", new_size)
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    old_root = _check_hash("old root", old_root)
    new_root = _check_hash("new root", new_root)
    if old_size == 0:
        _check_proof(proof, 0)
        if not constant_time_equal(old_root, EMPTY_ROOT):
            raise ProofError("the root of the empty tree is not the empty hash")
        return
    if old_size == new_size:
        _check_proof(proof, 0)
        if not constant_time_equal(old_root, new_root):
            raise ProofError("trees of the same size have different roots")
        return
    path = _check_proof(proof, _consistency_length(old_size, new_size))
    if old_size & (old_size - 1) == 0:
        # The old tree is one perfect subtree of the new one: the proof omits it.
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            first = node_hash(node, first)
            second = node_hash(node, second)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            second = node_hash(second, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    # Compare both, then decide, so the failure does not depend on which root differs.
    old_ok = constant_time_equal(first, old_root)
    new_ok = constant_time_equal(second, new_root)
    if not (old_ok and new_ok):
        raise ProofError("consistency proof does not connect the two roots")


# -- incremental structures -----------------------------------------------------------


class CompactRange:
    """The right edge of a tree: one perfect-subtree hash per set bit of its size.

    ``hashes[0]`` is the largest (leftmost) subtree. Appending costs one node hash per
    trailing one-bit of the old size (one on average) and the root is a fold of at most
    64 hashes, so both are O(log n) in the worst case and O(1) amortized for appends.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self._size = size
        self._hashes = list(hashes)
        if size < 0 or len(self._hashes) != size.bit_count():
            raise ValueError("a compact range holds one hash per set bit of its size")

    @classmethod
    def from_nodes(cls, size: int, nodes: NodeSource) -> CompactRange:
        """Rebuild the right edge of a tree of ``size`` leaves from stored subtrees."""
        hashes: list[bytes] = []
        position = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                hashes.append(nodes(level, position >> level))
                position += 1 << level
        return cls(size, hashes)

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The right-edge subtree hashes, largest first."""
        return tuple(self._hashes)

    def copy(self) -> CompactRange:
        """An independent copy (for rolling back a failed write)."""
        return CompactRange(self._size, self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash; see :meth:`extend` for the result."""
        return self.extend((leaf,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Append leaf hashes in order.

        Returns ``(level, index, hash)`` for every perfect subtree completed at a cached
        level (:func:`is_cached_level`), in completion order: exactly the nodes a log
        stores besides its leaves.
        """
        stack = self._hashes
        size = self._size
        completed: list[tuple[int, int, bytes]] = []
        for leaf in leaf_hashes:
            current = leaf
            carry = size
            level = 0
            while carry & 1:
                current = sha256(_NODE_PREFIX + stack.pop() + current)
                carry >>= 1
                level += 1
                if level % CACHE_STRIDE == 0:
                    # ``carry`` is now ``size >> level``: the completed node's index.
                    completed.append((level, carry, current))
            stack.append(current)
            size += 1
        self._size = size
        return completed

    def root(self) -> bytes:
        """``MTH`` of the leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        return _fold_right(self._hashes)


class MerkleTree:
    """An in-memory append-only tree that serves proofs for any past size.

    It keeps every leaf hash and the cached-level nodes (about ``n / 15`` of them); a
    perfect subtree at level ``l`` is rebuilt from at most 8 of those (see the module
    docstring), so a proof costs O(log n) hashing regardless of ``n``.
    """

    __slots__ = ("_compact", "_levels")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._compact = CompactRange()
        # _levels[j] holds the nodes at level j * CACHE_STRIDE; _levels[0] the leaves.
        self._levels: list[list[bytes]] = [[]]
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._compact.size

    def append(self, leaf: bytes) -> int:
        """Append one leaf hash and return its index."""
        self.extend((leaf,))
        return self.size - 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaf hashes in order."""
        leaves = [_check_leaf(h) for h in leaf_hashes]
        for level, index, digest in self._compact.extend(leaves):
            slot = level // CACHE_STRIDE
            while len(self._levels) <= slot:
                self._levels.append([])
            row = self._levels[slot]
            if len(row) != index:  # pragma: no cover - completion order is sequential
                raise RuntimeError("cached nodes completed out of order")
            row.append(digest)
        self._levels[0].extend(leaves)

    def leaf(self, index: int) -> bytes:
        """The hash of leaf ``index``."""
        if not 0 <= index < self.size:
            raise IndexError(f"no leaf {index} in a tree of size {self.size}")
        return self._levels[0][index]

    def node(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree ``(level, index)``, which must be complete."""
        if level < 0 or index < 0 or (index + 1) << level > self.size:
            raise ValueError(f"subtree ({level}, {index}) is not complete at size {self.size}")
        base = level - level % CACHE_STRIDE
        first = index << (level - base)
        count = 1 << (level - base)
        return fold_perfect(self._levels[base // CACHE_STRIDE][first : first + count])

    def root(self, size: int | None = None) -> bytes:
        """``MTH`` of the first ``size`` leaves (default: all of them)."""
        if size is None or size == self.size:
            return self._compact.root()
        _check_size("size", size)
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} is beyond the tree size {self.size}")
        if size == 0:
            return EMPTY_ROOT
        return range_hash(0, size, self.node)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of ``size`` leaves (default: all)."""
        size = self.size if size is None else size
        if size > self.size:
            raise ValueError(f"size {size} is beyond the tree size {self.size}")
        return inclusion_proof(index, size, self.node)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The consistency proof from ``old_size`` to ``new_size`` (default: all)."""
        new_size = self.size if new_size is None else new_size
        if new_size > self.size:
            raise ValueError(f"size {new_size} is beyond the tree size {self.size}")
        return consistency_proof(old_size, new_size, self.node)


def _check_leaf(value: bytes) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes")
    return value
