"""The Merkle log and the audit trail.

* :mod:`trustwire.audit.merkle`: RFC 9162 tree hashing, proofs and their verification
  (pure, sans-I/O);
* :mod:`trustwire.audit.log`: :class:`MerkleLog`, the signed append-only log on SQLite
  or in memory, shared by the registry and the audit trail, and :func:`verify_log`;
* :mod:`trustwire.audit.trail`: :class:`AuditTrail`, the security-event sink that
  batches events into the log and signs a tree head per batch.
"""

from __future__ import annotations

from trustwire.audit.log import MerkleLog, Report, TreeHead, read_entries, verify_log
from trustwire.audit.merkle import (
    MerkleTree,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from trustwire.audit.trail import AUDIT_ORIGIN, AuditTrail, decode_event, encode_event

__all__ = [
    "AUDIT_ORIGIN",
    "AuditTrail",
    "MerkleLog",
    "MerkleTree",
    "Report",
    "TreeHead",
    "decode_event",
    "encode_event",
    "leaf_hash",
    "node_hash",
    "read_entries",
    "root",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
]
