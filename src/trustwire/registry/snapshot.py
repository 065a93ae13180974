"""Registry log entries: one canonical JSON *snapshot* of an agent after each event.

Every identity event (enrolment, a change of roles, an agreement-key rotation, a
certificate issuance, a revocation) appends one entry to the registry's Merkle log. The
entry is not a diff but the agent's whole public state after the event, so one inclusion
proof shows everything a peer needs: the DID, name, roles, the agreement key and the
identity key's statement binding it, whether and when the agent was revoked, and its
latest certificate::

    {"agreement_issued_at":1767225600,"agreement_key":"<64 hex>",
     "agreement_statement":"<128 hex>","certificate":{"fingerprint":"<hex>",
     "not_after":1767312000.0},"did":"did:key:z6Mk...","event":"certificate",
     "name":"bob","revoked_at":null,"roles":["worker"],"seq":2,"time":1767225600.5,"v":1}

Invariants:

* **Canonical bytes.** Sorted keys, no insignificant whitespace, ASCII only
  (:func:`encode_snapshot`); the leaf hash covers these exact bytes, so verifiers never
  re-encode, they hash what they were given and then parse it.
* **``seq`` counts one agent's events**, starting at 1 with ``enrol`` and growing by one
  per event, so a verifier that remembers an agent's ``seq`` notices an older snapshot.
* **Public data only.** No field ever holds private key material.

This module is pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from trustwire.store.base import AGREEMENT_KEY_SIZE, AgentRecord

__all__ = [
    "EVENTS",
    "SNAPSHOT_VERSION",
    "RegistryState",
    "decode_snapshot",
    "encode_snapshot",
    "snapshot_of",
]

SNAPSHOT_VERSION: Final = 1
"""The value of ``"v"`` in every entry this code writes and reads."""

EVENTS: Final = ("enrol", "roles", "rotate", "certificate", "revoke")
"""Every event kind, in no particular order."""

_FIELDS: Final = frozenset(
    {
        "v",
        "event",
        "seq",
        "did",
        "name",
        "roles",
        "agreement_key",
        "agreement_statement",
        "agreement_issued_at",
        "revoked_at",
        "certificate",
        "time",
    }
)
_HEX: Final = re.compile(r"(?:[0-9a-f]{2})+")


def encode_snapshot(snapshot: dict[str, Any]) -> bytes:
    """The canonical bytes of ``snapshot`` (checked first: ``ValueError`` if malformed)."""
    _check(snapshot)
    return json.dumps(
        snapshot, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def decode_snapshot(entry: bytes) -> dict[str, Any]:
    """Parse and check one entry; ``ValueError`` for anything that is not a snapshot."""
    try:
        data = json.loads(entry.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"a registry entry is ASCII JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("a registry entry is a JSON object")
    _check(data)
    return data


def snapshot_of(
    record: AgentRecord,
    *,
    event: str,
    seq: int,
    time: float,
    certificate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The snapshot of ``record`` after ``event`` (checked: ``ValueError`` if malformed)."""
    snapshot: dict[str, Any] = {
        "v": SNAPSHOT_VERSION,
        "event": event,
        "seq": seq,
        "did": record.did,
        "name": record.name,
        "roles": list(record.roles),
        "agreement_key": record.agreement_key.hex(),
        "agreement_statement": record.agreement_statement.hex(),
        "agreement_issued_at": record.agreement_issued_at,
        "revoked_at": record.revoked_at,
        "certificate": certificate,
        "time": time,
    }
    _check(snapshot)
    return snapshot


class RegistryState:
    """The state derived from a registry log: each DID's newest entry.

    :meth:`apply` folds entries in log order and refuses one that contradicts those
    before it (``ValueError``): a ``seq`` that does not count up by one per agent, any
    event after a revocation, a change of name, or a name taken by another DID.
    """

    def __init__(self) -> None:
        #: DID -> (index, snapshot) of its newest entry.
        self.latest: dict[str, tuple[int, dict[str, Any]]] = {}
        self.names: dict[str, str] = {}
        self.size = 0

    def apply(self, index: int, snapshot: dict[str, Any]) -> None:
        """Fold entry ``index`` (the next one: ``index == size``)."""
        if index != self.size:
            raise ValueError(f"entry {index} applied out of order (expected {self.size})")
        did = snapshot["did"]
        previous = self.latest.get(did)
        expected = 1 if previous is None else previous[1]["seq"] + 1
        if snapshot["seq"] != expected:
            raise ValueError(f"entry {index}: seq {snapshot['seq']} for {did}, expected {expected}")
        if previous is not None:
            if previous[1]["revoked_at"] is not None:
                raise ValueError(f"entry {index}: an event after {did} was revoked")
            if previous[1]["name"] != snapshot["name"]:
                raise ValueError(f"entry {index}: {did} changed its name")
        elif self.names.get(snapshot["name"], did) != did:
            raise ValueError(f"entry {index}: the name {snapshot['name']!r} is taken")
        self.latest[did] = (index, snapshot)
        self.names[snapshot["name"]] = did
        self.size = index + 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"registry entry field {key!r} must be a non-empty string")
    return value


def _check(data: dict[str, Any]) -> None:
    if set(data) != _FIELDS:
        raise ValueError(f"a registry entry has exactly the fields {sorted(_FIELDS)}")
    if data["v"] != SNAPSHOT_VERSION or not _is_int(data["v"]):
        raise ValueError(f"unsupported registry entry version {data['v']!r}")
    if data["event"] not in EVENTS:
        raise ValueError(f"unknown registry event {data['event']!r}")
    if not _is_int(data["seq"]) or data["seq"] < 1:
        raise ValueError("registry entry seq must be an int >= 1")
    if (data["event"] == "enrol") != (data["seq"] == 1):
        raise ValueError("an agent's first registry entry, and only it, is its enrolment")
    _text(data, "did")
    _text(data, "name")
    roles = data["roles"]
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise ValueError("registry entry roles must be a list of non-empty strings")
    key = _text(data, "agreement_key")
    if not _HEX.fullmatch(key) or len(key) != 2 * AGREEMENT_KEY_SIZE:
        raise ValueError("registry entry agreement_key must be 64 lowercase hex digits")
    if not _HEX.fullmatch(_text(data, "agreement_statement")):
        raise ValueError("registry entry agreement_statement must be lowercase hex")
    if not _is_int(data["agreement_issued_at"]):
        raise ValueError("registry entry agreement_issued_at must be an int")
    if data["revoked_at"] is not None and not _is_time(data["revoked_at"]):
        raise ValueError("registry entry revoked_at must be a number or null")
    if data["event"] == "revoke" and data["revoked_at"] is None:
        raise ValueError("a revoke entry must carry revoked_at")
    certificate = data["certificate"]
    if certificate is not None:
        if (
            not isinstance(certificate, dict)
            or set(certificate) != {"fingerprint", "not_after"}
            or not isinstance(certificate["fingerprint"], str)
            or not _HEX.fullmatch(certificate["fingerprint"])
            or not _is_time(certificate["not_after"])
        ):
            raise ValueError(
                "registry entry certificate must be {fingerprint: hex, not_after: number}"
            )
    if not _is_time(data["time"]):
        raise ValueError("registry entry time must be a number")
