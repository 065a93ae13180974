"""RFC 9162 tree hashing, proofs and verification (``trustwire.audit.merkle``).

Three kinds of evidence:

* the Certificate Transparency reference tree (the 8 leaves every RFC 6962
  implementation tests against, with its published roots for sizes 0..8, subtree hashes
  and inclusion/consistency proofs), so our hashes agree with everyone else's;
* an independent, deliberately naive implementation written here from the RFC's
  recursive definitions (MTH, PATH, PROOF over Python slices), compared with the
  incremental code for every size 1..1024 and every index/pair in smaller trees;
* corruption: every way of damaging a valid proof must be refused (hypothesis).

A note on "wrong size" corruptions: the verifier binds a size to a root only through the
shape of the path, so a proof checked against the *same* root under another size whose
path has the same shape would pass; no verifier can tell, which is why a signed tree head
carries both. The meaningful attack is a proof presented for another size *with that
size's root*, and that is what these tests corrupt.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trustwire.audit
from trustwire.audit import merkle
from trustwire.audit.merkle import (
    CACHE_STRIDE,
    EMPTY_ROOT,
    MAX_SIZE,
    CompactRange,
    MerkleTree,
    consistency_proof,
    fold_perfect,
    inclusion_proof,
    is_cached_level,
    leaf_hash,
    node_hash,
    range_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from trustwire.errors import ProofError

# -- the Certificate Transparency reference tree (public test data) --------------------

CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# Every complete subtree of the 8-leaf tree: CT_NODES[level][index].
CT_NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
# (index, size, proof) with 0-based indexes.
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old_size, new_size, proof).
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def _hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


@pytest.fixture(scope="module")
def ct_tree() -> MerkleTree:
    return MerkleTree(leaf_hash(data) for data in CT_LEAVES)


# -- an independent reference, straight from the RFC's recursive definitions -----------


def _ref_sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Reference:
    """MTH, PATH and PROOF of RFC 9162 §2.1, over list slices, memoized by range."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.mth = functools.cache(self._mth)

    @staticmethod
    def k(n: int) -> int:
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return _ref_sha256(b"")
        if n == 1:
            return _ref_sha256(b"\x00" + self.leaves[lo])
        k = self.k(n)
        return _ref_sha256(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = self.k(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self.mth(lo, hi)]
        k = self.k(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, complete), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        return self.subproof(m, 0, n, True) if 0 < m < n else []


def _data(i: int) -> bytes:
    return b"entry %d" % i


BIG = 1024
# Twice BIG leaves, so every size a corruption test claims (up to 2 * BIG) has a real root.
BIG_DATA = [_data(i) for i in range(2 * BIG)]
_BIG_TREE = MerkleTree(leaf_hash(d) for d in BIG_DATA)


@pytest.fixture(scope="module")
def big_tree() -> MerkleTree:
    return _BIG_TREE


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference(BIG_DATA)


# -- hashing and the reference tree ----------------------------------------------------


def test_leaf_and_node_hashes_use_the_rfc6962_domain_prefixes() -> None:
    # Published RFC 6962 hasher answers (HashLeaf("L123456"), HashChildren("N123","N456")).
    assert (
        leaf_hash(b"L123456").hex()
        == "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert (
        node_hash(b"N123", b"N456").hex()
        == "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


def test_the_empty_tree_root_is_the_hash_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert root([]) == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(9))
def test_roots_of_the_reference_tree_match_the_published_values(
    size: int, ct_tree: MerkleTree
) -> None:
    assert ct_tree.root(size).hex() == CT_ROOTS[size]
    assert root([leaf_hash(d) for d in CT_LEAVES[:size]]).hex() == CT_ROOTS[size]


def test_the_full_reference_tree_has_the_root_5dc9da79(ct_tree: MerkleTree) -> None:
    assert ct_tree.root().hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


def test_every_subtree_of_the_reference_tree_matches_the_published_node_hashes(
    ct_tree: MerkleTree,
) -> None:
    for level, row in enumerate(CT_NODES):
        for index, expected in enumerate(row):
            assert ct_tree.node(level, index).hex() == expected, (level, index)


def test_the_compact_range_after_each_append_matches_the_published_right_edges() -> None:
    # The right edge is one complete subtree per set bit of the size, largest first.
    compact = CompactRange()
    for size, data in enumerate(CT_LEAVES, start=1):
        compact.append(leaf_hash(data))
        position = 0
        expected = []
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                expected.append(CT_NODES[level][position >> level])
                position += 1 << level
        assert [h.hex() for h in compact.hashes] == expected
        assert compact.root().hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_published_inclusion_proofs_are_generated_and_verify(
    index: int, size: int, proof: list[str], ct_tree: MerkleTree
) -> None:
    assert [p.hex() for p in ct_tree.inclusion_proof(index, size)] == proof
    verify_inclusion(
        index, size, leaf_hash(CT_LEAVES[index]), _hexes(proof), bytes.fromhex(CT_ROOTS[size])
    )


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_published_consistency_proofs_are_generated_and_verify(
    old: int, new: int, proof: list[str], ct_tree: MerkleTree
) -> None:
    assert [p.hex() for p in ct_tree.consistency_proof(old, new)] == proof
    verify_consistency(
        old, new, bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new]), _hexes(proof)
    )


# -- agreement with the independent reference -----------------------------------------


def test_root_after_each_append_equals_the_recursive_mth_for_every_size_up_to_1024(
    reference: Reference,
) -> None:
    compact = CompactRange()
    tree = MerkleTree()
    for size in range(1, BIG + 1):
        digest = leaf_hash(BIG_DATA[size - 1])
        compact.append(digest)
        tree.append(digest)
        expected = reference.mth(0, size)
        assert compact.root() == expected, size
        assert tree.root() == expected, size


def test_roots_of_past_sizes_come_from_the_node_cache_and_equal_the_reference(
    big_tree: MerkleTree, reference: Reference
) -> None:
    for size in range(BIG + 1):
        assert big_tree.root(size) == reference.mth(0, size), size


def test_every_inclusion_proof_up_to_size_128_equals_the_reference_and_verifies(
    big_tree: MerkleTree, reference: Reference
) -> None:
    checked = 0
    for size in range(1, 129):
        tree_root = reference.mth(0, size)
        for index in range(size):
            proof = big_tree.inclusion_proof(index, size)
            assert proof == reference.path(index, 0, size), (index, size)
            verify_inclusion(index, size, big_tree.leaf(index), proof, tree_root)
            checked += 1
    assert checked == 128 * 129 // 2


def test_sampled_inclusion_proofs_up_to_size_1024_equal_the_reference_and_verify(
    big_tree: MerkleTree, reference: Reference
) -> None:
    rng = random.Random(1)
    for size in range(129, BIG + 1):
        tree_root = reference.mth(0, size)
        for index in {0, size - 1, rng.randrange(size), rng.randrange(size)}:
            proof = big_tree.inclusion_proof(index, size)
            assert proof == reference.path(index, 0, size), (index, size)
            verify_inclusion(index, size, big_tree.leaf(index), proof, tree_root)


def test_every_consistency_proof_up_to_size_64_equals_the_reference_and_verifies(
    big_tree: MerkleTree, reference: Reference
) -> None:
    for new in range(0, 65):
        for old in range(0, new + 1):
            proof = big_tree.consistency_proof(old, new)
            assert proof == reference.proof(old, new), (old, new)
            verify_consistency(old, new, reference.mth(0, old), reference.mth(0, new), proof)


def test_sampled_consistency_proofs_up_to_size_1024_equal_the_reference_and_verify(
    big_tree: MerkleTree, reference: Reference
) -> None:
    rng = random.Random(2)
    for new in range(65, BIG + 1):
        for old in {1, new - 1, new, rng.randrange(1, new), rng.randrange(1, new)}:
            proof = big_tree.consistency_proof(old, new)
            assert proof == reference.proof(old, new), (old, new)
            verify_consistency(old, new, reference.mth(0, old), reference.mth(0, new), proof)


# -- large trees ----------------------------------------------------------------------


class _CountingNodes:
    """A virtual tree of any size whose leaves are all the same entry.

    Its perfect subtree hashes depend on the level only, so a tree of 2**64 - 1 leaves
    costs 64 hashes to set up, and every proof over it is a genuine one.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.by_level = [leaf_hash(b"same")]
        for _ in range(64):
            self.by_level.append(node_hash(self.by_level[-1], self.by_level[-1]))

    def __call__(self, level: int, index: int) -> bytes:
        self.calls += 1
        return self.by_level[level]


@pytest.mark.parametrize("size", [1_000_000, 1_000_001, 2**40 + 12345, MAX_SIZE])
def test_proofs_over_huge_trees_need_a_logarithmic_number_of_subtrees(size: int) -> None:
    nodes = _CountingNodes()
    tree_root = range_hash(0, size, nodes)
    rng = random.Random(size)
    for index in (0, size - 1, rng.randrange(size)):
        nodes.calls = 0
        proof = inclusion_proof(index, size, nodes)
        # One lookup per set bit of each right-border range: at most 2 * log2(size).
        assert nodes.calls <= 2 * size.bit_length()
        # The leaf of a virtual tree is the (0, index) node.
        verify_inclusion(index, size, nodes(0, index), proof, tree_root)
    old = rng.randrange(1, size)
    nodes.calls = 0
    proof = consistency_proof(old, size, nodes)
    assert nodes.calls <= 3 * size.bit_length()
    verify_consistency(old, size, range_hash(0, old, nodes), tree_root, proof)


def test_a_subtree_is_rebuilt_from_at_most_eight_stored_hashes() -> None:
    # Every level is at most CACHE_STRIDE - 1 above a stored one (leaves or a cached level).
    assert CACHE_STRIDE == 4
    assert [level for level in range(17) if is_cached_level(level)] == [4, 8, 12, 16]
    tree = MerkleTree(leaf_hash(b"%d" % i) for i in range(4096))
    reads: list[int] = []
    original = fold_perfect

    def counting(hashes: list[bytes]) -> bytes:
        reads.append(len(hashes))
        return original(hashes)

    merkle_fold = merkle.fold_perfect
    try:
        merkle.fold_perfect = counting  # type: ignore[assignment]
        for level in range(13):
            tree.node(level, 0)
    finally:
        merkle.fold_perfect = merkle_fold
    assert max(reads) <= 8
    assert len(reads) == 13


def test_the_tree_caches_about_one_node_per_fifteen_leaves() -> None:
    size = 1 << 16
    compact = CompactRange()
    completed = compact.extend(hashlib.sha256(b"%d" % i).digest() for i in range(size))
    assert {level for level, _, _ in completed} == {4, 8, 12, 16}
    assert len(completed) == size // 16 + size // 256 + size // 4096 + 1
    tree = MerkleTree()
    tree.extend(hashlib.sha256(b"%d" % i).digest() for i in range(size))
    for level, index, digest in completed[::97]:
        assert tree.node(level, index) == digest


# -- verifiers refuse bad input before hashing -----------------------------------------


def _small_case() -> tuple[MerkleTree, bytes]:
    tree = MerkleTree(_BIG_TREE.leaf(i) for i in range(11))
    return tree, tree.root()


def test_verify_inclusion_refuses_an_index_at_or_beyond_the_size() -> None:
    tree, tree_root = _small_case()
    proof = tree.inclusion_proof(10)
    for index, size in [(11, 11), (12, 11), (0, 0)]:
        with pytest.raises(ProofError):
            verify_inclusion(index, size, tree.leaf(10), proof, tree_root)


@pytest.mark.parametrize(
    ("index", "size"), [(-1, 11), (0, -1), (0, MAX_SIZE + 1), (MAX_SIZE + 5, MAX_SIZE + 6)]
)
def test_verify_inclusion_refuses_sizes_outside_64_bits(index: int, size: int) -> None:
    tree, tree_root = _small_case()
    with pytest.raises(ProofError):
        verify_inclusion(index, size, tree.leaf(0), tree.inclusion_proof(0), tree_root)


def test_verify_inclusion_refuses_an_oversized_proof_before_hashing() -> None:
    tree, tree_root = _small_case()
    huge = [b"\x00" * 32] * 100_000
    with pytest.raises(ProofError, match="needs 4"):
        verify_inclusion(3, 11, tree.leaf(3), huge, tree_root)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda p: [*p[:-1], p[-1][:31]], id="short-node"),
        pytest.param(lambda p: [*p[:-1], p[-1] + b"\x00"], id="long-node"),
        pytest.param(lambda p: [*p[:-1], p[-1].hex()], id="str-node"),
        pytest.param(lambda p: b"".join(p), id="bytes-instead-of-list"),
        pytest.param(lambda p: None, id="none"),
    ],
)
def test_verify_inclusion_refuses_malformed_proofs(bad: object) -> None:
    tree, tree_root = _small_case()
    proof = tree.inclusion_proof(3)
    with pytest.raises(ProofError):
        verify_inclusion(3, 11, tree.leaf(3), bad(proof), tree_root)  # type: ignore[operator]


def test_verify_inclusion_refuses_malformed_leaf_and_root_hashes() -> None:
    tree, tree_root = _small_case()
    proof = tree.inclusion_proof(3)
    with pytest.raises(ProofError):
        verify_inclusion(3, 11, b"WrongLeaf", proof, tree_root)
    with pytest.raises(ProofError):
        verify_inclusion(3, 11, tree.leaf(3), proof, b"")
    with pytest.raises(TypeError):
        verify_inclusion(True, 11, tree.leaf(3), proof, tree_root)


def test_a_one_leaf_tree_proves_inclusion_with_an_empty_path_only() -> None:
    digest = leaf_hash(b"data")
    verify_inclusion(0, 1, digest, [], digest)
    with pytest.raises(ProofError):
        verify_inclusion(0, 1, digest, [digest], digest)
    with pytest.raises(ProofError):
        verify_inclusion(0, 1, digest, [], EMPTY_ROOT)


def test_consistency_with_the_empty_tree_needs_an_empty_proof_and_the_empty_root() -> None:
    _, tree_root = _small_case()
    verify_consistency(0, 11, EMPTY_ROOT, tree_root, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        verify_consistency(0, 11, EMPTY_ROOT, tree_root, [EMPTY_ROOT])
    with pytest.raises(ProofError):
        verify_consistency(0, 11, tree_root, tree_root, [])


def test_consistency_between_equal_sizes_needs_equal_roots_and_no_proof() -> None:
    tree, tree_root = _small_case()
    verify_consistency(11, 11, tree_root, tree_root, [])
    with pytest.raises(ProofError):
        verify_consistency(11, 11, tree_root, tree.root(10), [])
    with pytest.raises(ProofError):
        verify_consistency(11, 11, tree_root, tree_root, [tree_root])


def test_consistency_refuses_an_old_size_larger_than_the_new() -> None:
    tree, tree_root = _small_case()
    with pytest.raises(ProofError):
        verify_consistency(11, 10, tree_root, tree.root(10), tree.consistency_proof(10, 11))
    with pytest.raises(ProofError):
        verify_consistency(2, 1, tree.root(2), tree.root(1), [])


def test_consistency_refuses_an_empty_proof_between_different_sizes() -> None:
    tree, _ = _small_case()
    with pytest.raises(ProofError):
        verify_consistency(1, 2, tree.root(1), tree.root(2), [])


def test_consistency_refuses_an_oversized_proof_before_hashing() -> None:
    tree, tree_root = _small_case()
    with pytest.raises(ProofError, match="needs"):
        verify_consistency(3, 11, tree.root(3), tree_root, [b"\x01" * 32] * 100_000)


def test_proof_generation_rejects_impossible_requests() -> None:
    tree, _ = _small_case()
    with pytest.raises(ValueError):
        tree.inclusion_proof(11)
    with pytest.raises(ValueError):
        tree.inclusion_proof(0, 12)
    with pytest.raises(ValueError):
        tree.consistency_proof(5, 12)
    with pytest.raises(ValueError):
        tree.consistency_proof(6, 5)
    with pytest.raises(ValueError):
        tree.node(2, 3)  # leaves 12..15 do not exist yet
    with pytest.raises(ValueError):
        range_hash(1, 3, tree.node)  # not aligned
    with pytest.raises(ValueError):
        fold_perfect([b"x"] * 3)
    with pytest.raises(ValueError):
        MerkleTree([b"short"])


# -- corruption (hypothesis) ----------------------------------------------------------


@st.composite
def _inclusion_case(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(min_value=1, max_value=BIG))
    return draw(st.integers(min_value=0, max_value=size - 1)), size


def _flip(proof: list[bytes], node: int, bit: int) -> list[bytes]:
    damaged = list(proof)
    value = bytearray(damaged[node])
    value[bit // 8] ^= 1 << (bit % 8)
    damaged[node] = bytes(value)
    return damaged


_INCLUSION_CORRUPTIONS = [
    "index+1",
    "index-1",
    "size+1",
    "size-1",
    "size*2",
    "size//2",
    "flip",
    "swap",
    "truncate",
    "extend",
    "prepend",
    "wrong-root",
    "wrong-leaf",
]


@settings(max_examples=500, deadline=None)
@given(
    case=_inclusion_case(),
    corruption=st.sampled_from(_INCLUSION_CORRUPTIONS),
    data=st.data(),
)
def test_corrupted_inclusion_proofs_never_verify(
    case: tuple[int, int], corruption: str, data: st.DataObject
) -> None:
    index, size = case
    tree = _BIG_TREE
    proof = tree.inclusion_proof(index, size)
    leaf, tree_root = tree.leaf(index), tree.root(size)
    verify_inclusion(index, size, leaf, proof, tree_root)  # the undamaged proof is fine
    claim_index, claim_size, claim_root = index, size, tree_root
    if corruption == "index+1":
        claim_index = index + 1
    elif corruption == "index-1":
        claim_index = index - 1
    elif corruption.startswith("size"):
        claim_size = {"size+1": size + 1, "size-1": size - 1, "size*2": size * 2}.get(
            corruption, size // 2
        )
        # The other size's genuine root (see the module docstring).
        claim_root = tree.root(claim_size) if claim_size > 0 else tree_root
    elif corruption == "flip":
        if not proof:
            proof = [tree_root]  # an empty path has nothing to flip; any node is damage
        else:
            node = data.draw(st.integers(0, len(proof) - 1))
            proof = _flip(proof, node, data.draw(st.integers(0, 255)))
    elif corruption == "swap":
        if len(proof) < 2:
            proof = [*proof, *proof, tree_root]
        else:
            i, j = data.draw(
                st.lists(st.integers(0, len(proof) - 1), min_size=2, max_size=2, unique=True)
            )
            proof[i], proof[j] = proof[j], proof[i]
    elif corruption == "truncate":
        proof = proof[:-1] if proof else [tree_root]
    elif corruption == "extend":
        proof = [*proof, data.draw(st.sampled_from([tree_root, leaf, EMPTY_ROOT]))]
    elif corruption == "prepend":
        proof = [data.draw(st.sampled_from([tree_root, leaf, EMPTY_ROOT])), *proof]
    elif corruption == "wrong-root":
        claim_root = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != tree_root))
    elif corruption == "wrong-leaf":
        leaf = leaf_hash(b"not entry %d" % index)
    with pytest.raises(ProofError):
        verify_inclusion(claim_index, claim_size, leaf, proof, claim_root)


_CONSISTENCY_CORRUPTIONS = [
    "old+1",
    "old-1",
    "new+1",
    "new-1",
    "flip",
    "swap",
    "truncate",
    "extend",
    "prepend",
    "wrong-old-root",
    "wrong-new-root",
    "swapped-roots",
]


@st.composite
def _consistency_case(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(min_value=2, max_value=BIG))
    return draw(st.integers(min_value=1, max_value=new - 1)), new


@settings(max_examples=500, deadline=None)
@given(
    case=_consistency_case(),
    corruption=st.sampled_from(_CONSISTENCY_CORRUPTIONS),
    data=st.data(),
)
def test_corrupted_consistency_proofs_never_verify(
    case: tuple[int, int], corruption: str, data: st.DataObject
) -> None:
    old, new = case
    tree = _BIG_TREE
    proof = tree.consistency_proof(old, new)
    old_root, new_root = tree.root(old), tree.root(new)
    verify_consistency(old, new, old_root, new_root, proof)
    claim_old, claim_new = old, new
    if corruption in ("old+1", "old-1", "new+1", "new-1"):
        claim_old += {"old+1": 1, "old-1": -1}.get(corruption, 0)
        claim_new += {"new+1": 1, "new-1": -1}.get(corruption, 0)
        # The claimed sizes' genuine roots (see the module docstring).
        old_root, new_root = tree.root(claim_old), tree.root(claim_new)
        if claim_old == claim_new:
            # Equal sizes with equal roots are consistent with an empty proof; ours isn't.
            assert proof
    elif corruption == "flip":
        node = data.draw(st.integers(0, len(proof) - 1))
        proof = _flip(proof, node, data.draw(st.integers(0, 255)))
    elif corruption == "swap":
        if len(proof) < 2:
            proof = [*proof, old_root]
        else:
            i, j = data.draw(
                st.lists(st.integers(0, len(proof) - 1), min_size=2, max_size=2, unique=True)
            )
            proof[i], proof[j] = proof[j], proof[i]
    elif corruption == "truncate":
        proof = proof[:-1]
    elif corruption == "extend":
        proof = [*proof, data.draw(st.sampled_from([old_root, new_root, proof[0]]))]
    elif corruption == "prepend":
        proof = [data.draw(st.sampled_from([old_root, new_root, proof[0]])), *proof]
    elif corruption == "wrong-old-root":
        old_root = tree.root(old - 1)
    elif corruption == "wrong-new-root":
        new_root = tree.root(new - 1)
    elif corruption == "swapped-roots":
        old_root, new_root = new_root, old_root
    with pytest.raises(ProofError):
        verify_consistency(claim_old, claim_new, old_root, new_root, proof)


# -- layering -------------------------------------------------------------------------


def test_the_merkle_core_is_sans_io() -> None:
    source = Path(merkle.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    forbidden = {"asyncio", "socket", "ssl", "sqlite3", "selectors", "threading", "time", "os"}
    assert not imported & forbidden


def test_the_audit_package_exports_a_sorted_public_api() -> None:
    names = trustwire.audit.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(trustwire.audit, name), name
