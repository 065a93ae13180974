"""The identity registry: a signed Merkle log of every identity event (DESIGN §3).

* :mod:`trustwire.registry.snapshot`: the entry format, one canonical JSON snapshot of an
  agent per event (pure);
* :mod:`trustwire.registry.proof`: :func:`verify_registry_proof`, what a peer runs on a
  proof served by the coordinator (pure);
* :mod:`trustwire.registry.verifier`: :class:`RegistryVerifier`, the state and checks
  the SDK applies to every lookup answer (pure);
* :mod:`trustwire.registry.registry`: :class:`Registry`, which keeps the store's agent
  directory and the registry log in step and builds proofs.
"""

from __future__ import annotations

from trustwire.registry.proof import REGISTRY_ORIGIN, parse_head, verify_registry_proof
from trustwire.registry.registry import Registry
from trustwire.registry.snapshot import EVENTS, decode_snapshot, encode_snapshot
from trustwire.registry.verifier import RegistryVerifier

__all__ = [
    "EVENTS",
    "REGISTRY_ORIGIN",
    "Registry",
    "RegistryVerifier",
    "decode_snapshot",
    "encode_snapshot",
    "parse_head",
    "verify_registry_proof",
]
