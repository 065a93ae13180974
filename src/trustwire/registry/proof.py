"""Checking a registry proof: the verifier's half of the registry (sans-I/O).

A registry proof (what :meth:`~trustwire.registry.registry.Registry.proof_for` builds and
the coordinator sends in ``LOOKUP_RESULT``) is a JSON object::

    {"index": 7,                      # the entry's position in the registry log
     "entry": "{...}",                # the snapshot, exactly as logged (a JSON string)
     "inclusion": ["<hex>", ...],     # RFC 9162 audit path of entry ``index``
     "head": {...},                   # the signed tree head it leads to (TreeHead JSON)
     "consistency": ["<hex>", ...]}   # only when the verifier said which size it knows

:func:`verify_registry_proof` accepts it only if the head is signed by the domain's
registry key *for the registry log* (origin ``trustwire/registry``: a head of the audit
log, signed by the same key, is refused), the entry is included under that head, the
entry is a well-formed snapshot of the DID asked about, and, when the verifier saw a head
before, the new head extends it (a consistency proof; a shorter head or a different root
at the same size is a *split view*: the log shown to this verifier was forked or rolled
back). Every failure is a :class:`~trustwire.errors.ProofError`.

What it does not show: that the entry is the *newest* one for the DID (see
``docs/SECURITY.md``), or that the head is recent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from trustwire.audit.log import TreeHead
from trustwire.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from trustwire.crypto.signing import VerifyKey
from trustwire.errors import InvalidSignature, ProofError
from trustwire.registry.snapshot import decode_snapshot

__all__ = ["MAX_PROOF_HASHES", "REGISTRY_ORIGIN", "parse_head", "verify_registry_proof"]

REGISTRY_ORIGIN: Final = "trustwire/registry"
"""The origin bound into every registry tree head."""

MAX_PROOF_HASHES: Final = 130
"""More hashes than any proof over a tree of fewer than 2**64 entries needs."""

_HASH_HEX: Final = re.compile(r"[0-9a-f]{64}")


def parse_head(value: object) -> TreeHead:
    """A :class:`TreeHead` from its JSON text or the object it encodes (unverified).

    :class:`~trustwire.errors.ProofError` if it is not one.
    """
    try:
        if isinstance(value, Mapping):
            return TreeHead.from_json(json.dumps(dict(value)))
        if isinstance(value, str | bytes):
            return TreeHead.from_json(value)
    except (ValueError, TypeError) as exc:
        raise ProofError(f"malformed registry tree head ({exc})") from None
    raise ProofError("the registry tree head is missing")


def _hashes(proof: Mapping[str, Any], key: str) -> list[bytes]:
    value = proof.get(key)
    if not isinstance(value, list) or len(value) > MAX_PROOF_HASHES:
        raise ProofError(f"registry proof field {key!r} must be a list of hashes")
    hashes: list[bytes] = []
    for item in value:
        if not isinstance(item, str) or not _HASH_HEX.fullmatch(item):
            raise ProofError(f"registry proof field {key!r} holds a malformed hash")
        hashes.append(bytes.fromhex(item))
    return hashes


def verify_registry_proof(
    did: str,
    proof: Mapping[str, Any],
    *,
    public_key: VerifyKey,
    last_head: TreeHead | None,
) -> tuple[dict[str, Any], TreeHead]:
    """Check ``proof`` for ``did``; return the snapshot and the (verified) head.

    ``last_head`` is the newest registry head this verifier accepted before, or ``None``.
    Raises :class:`~trustwire.errors.ProofError`; a head that does not extend
    ``last_head`` raises one whose message starts with ``"split view"``.
    """
    if not isinstance(proof, Mapping):
        raise ProofError("a registry proof is a JSON object")
    head = parse_head(proof.get("head"))
    try:
        head.verify(public_key, origin=REGISTRY_ORIGIN)
    except InvalidSignature as exc:
        raise ProofError(f"registry tree head refused: {exc}") from None

    index = proof.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ProofError("registry proof index must be an int")
    entry = proof.get("entry")
    if not isinstance(entry, str):
        raise ProofError("registry proof entry must be a string")
    try:
        raw = entry.encode("ascii")
    except UnicodeEncodeError:
        raise ProofError("registry proof entry must be ASCII") from None
    verify_inclusion(index, head.size, leaf_hash(raw), _hashes(proof, "inclusion"), head.root)
    try:
        snapshot = decode_snapshot(raw)
    except ValueError as exc:
        raise ProofError(f"the registry entry is malformed ({exc})") from None
    if snapshot["did"] != did:
        raise ProofError("the registry entry is for another DID")

    if last_head is not None:
        _check_extends(last_head, head, proof)
    return snapshot, head


def _check_extends(last: TreeHead, head: TreeHead, proof: Mapping[str, Any]) -> None:
    if last.origin != head.origin:
        raise ProofError("split view: the last head belongs to another log")
    if head.size < last.size:
        raise ProofError(
            f"split view: the registry head (size {head.size}) is older than one already "
            f"seen (size {last.size})"
        )
    consistency = _hashes(proof, "consistency") if "consistency" in proof else []
    try:
        verify_consistency(last.size, head.size, last.root, head.root, consistency)
    except ProofError as exc:
        raise ProofError(
            f"split view: the registry head (size {head.size}) does not extend the one "
            f"already seen (size {last.size}): {exc}"
        ) from None
