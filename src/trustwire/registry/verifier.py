"""What an agent keeps between registry lookups, and the checks it runs on each answer.

:class:`RegistryVerifier` is the SDK's half of the registry (sans-I/O: the SDK sends the
query it builds and hands back the answer). Per answer it checks, in order:

1. the proof itself (:func:`~trustwire.registry.proof.verify_registry_proof`): the head is
   signed by the domain's registry key for the registry log, the snapshot is included
   under it and is for the DID asked about;
2. the head extends the newest head this verifier accepted before (no *split view*);
3. the answer the coordinator gives (DID, name, agreement key, statement, issue time) is
   exactly the logged snapshot, so the key the SDK will use is the one in the log;
4. the snapshot is not revoked;
5. the snapshot is not older (``seq``) than one already seen for that agent.

The newest head accepted is kept (:attr:`last_head`) and its size sent with the next query
(:meth:`query`), so the coordinator can prove consistency from it. Queries must be
answered one at a time (each builds on the previous head); the SDK serializes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trustwire.audit.log import TreeHead
from trustwire.crypto.signing import VerifyKey
from trustwire.errors import ProofError
from trustwire.registry.proof import verify_registry_proof

__all__ = ["RegistryVerifier"]

_COMPARED = ("did", "name", "roles", "agreement_key", "agreement_statement", "agreement_issued_at")


class RegistryVerifier:
    """Verifies registry proofs for one agent; see the module docstring."""

    def __init__(self, public_key: VerifyKey, *, last_head: TreeHead | None = None) -> None:
        self.public_key = public_key
        self.last_head = last_head
        self._seq: dict[str, int] = {}

    def query(self, who: str) -> bytes:
        """The ``LOOKUP`` body for ``who``, telling the coordinator the head size we know."""
        known = None if self.last_head is None else self.last_head.size
        body: dict[str, Any] = {"who": who}
        if known is not None:
            body["known_size"] = known
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")

    def check(self, did: str, answer: Mapping[str, Any]) -> dict[str, Any]:
        """Check a ``LOOKUP_RESULT`` for ``did``; return the verified snapshot.

        Raises :class:`~trustwire.errors.ProofError` (a message starting ``"split view"``
        when the head does not extend the last one). On success the head becomes
        :attr:`last_head`.
        """
        proof = answer.get("registry")
        if not isinstance(proof, Mapping):
            raise ProofError("the coordinator's answer carries no registry proof")
        snapshot, head = verify_registry_proof(
            did, proof, public_key=self.public_key, last_head=self.last_head
        )
        for key in _COMPARED:
            if answer.get(key) != snapshot[key]:
                raise ProofError(f"the answer's {key} is not the one in the registry log")
        if snapshot["revoked_at"] is not None:
            raise ProofError("the registry log shows the agent revoked")
        if snapshot["seq"] < self._seq.get(did, 0):
            raise ProofError("the registry entry is older than one already seen for the agent")
        self._seq[did] = snapshot["seq"]
        self.last_head = head
        return snapshot
