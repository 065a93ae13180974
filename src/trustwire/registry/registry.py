"""The registry: every identity event as a signed entry of a Merkle log.

:class:`Registry` pairs the store's agent directory (the fast operational index the
coordinator reads) with the registry log (the verifiable record peers check). Each change
goes to the directory first, which enforces uniqueness and refuses what is not allowed,
and is then appended to the log as a full snapshot of the agent
(:mod:`trustwire.registry.snapshot`), after which a new tree head is signed. So:

* **The log only records changes the directory accepted**, and every change the registry
  makes to the directory is logged. If the process dies between the two, the directory is
  ahead of the log; :meth:`Registry.verify_against_directory` (run by ``trustwire serve``
  at start) reports exactly that instead of serving a registry that disagrees with what
  the coordinator enforces.
* **State is derived from the log.** Opening replays every entry and checks it
  (well-formed, ``seq`` counting up per agent, no event after a revocation), keeping for
  each DID the index and snapshot of its newest entry.
* **Every appended entry is covered by a signed head before the call returns**, so a
  proof can always be built for the newest snapshot of any agent. A head left unsigned by
  a crash is signed on the next open or sync.
* **Several processes may share the file** (``trustwire serve`` and the CLI): before each
  append and each proof the log is reloaded if another process extended it. Appends are
  serialized within a process; two processes appending at the same instant make one of
  them fail cleanly (the entry index is a primary key) rather than fork the log.
* **Public data only.** Snapshots hold DIDs, names, roles, public agreement keys and
  their signed statements, certificate fingerprints and times; never private keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from trustwire.audit.log import MerkleLog, TreeHead, verify_log
from trustwire.crypto.signing import SigningKey
from trustwire.errors import (
    ConfigurationError,
    InvalidSignature,
    LogInconsistent,
    StoreError,
    UnknownAgent,
)
from trustwire.identity.keys import verify_agreement_statement
from trustwire.registry.proof import REGISTRY_ORIGIN
from trustwire.registry.snapshot import (
    RegistryState,
    decode_snapshot,
    encode_snapshot,
    snapshot_of,
)
from trustwire.store.base import AgentDirectory, AgentRecord, check_roles

__all__ = ["Registry"]

_APPEND_ATTEMPTS = 3
"""Tries per entry when another process appends to the same file at the same moment."""


def _record_of(snapshot: dict[str, Any], created_at: float) -> AgentRecord:
    return AgentRecord(
        name=snapshot["name"],
        did=snapshot["did"],
        roles=tuple(snapshot["roles"]),
        agreement_key=bytes.fromhex(snapshot["agreement_key"]),
        agreement_statement=bytes.fromhex(snapshot["agreement_statement"]),
        agreement_issued_at=snapshot["agreement_issued_at"],
        created_at=created_at,
        revoked_at=snapshot["revoked_at"],
    )


class Registry:
    """The identity registry of one trust domain; see the module docstring.

    Mutating methods return the index of the entry they appended. Misuse raises
    ``ValueError``; an unknown DID :class:`~trustwire.errors.UnknownAgent`; a change the
    directory refuses its :class:`~trustwire.errors.StoreError`.
    """

    def __init__(
        self,
        log: MerkleLog,
        signing_key: SigningKey,
        directory: AgentDirectory,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wrap an open log (origin ``trustwire/registry``) and replay it.

        Raises :class:`~trustwire.errors.LogInconsistent` if an entry is malformed or
        contradicts the ones before it.
        """
        if log.origin != REGISTRY_ORIGIN:
            raise ValueError(f"the registry log's origin must be {REGISTRY_ORIGIN!r}")
        self._log = log
        self._key = signing_key
        self._directory = directory
        self._clock = clock
        self._writing = asyncio.Lock()
        self._state = threading.Lock()
        self._derived = RegistryState()
        self._latest = self._derived.latest
        self._head: TreeHead | None = None
        with self._state:
            self._sync()

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        signing_key: SigningKey,
        directory: AgentDirectory,
        *,
        clock: Callable[[], float] = time.time,
    ) -> Registry:
        """Open (creating if absent) the registry log file at ``path``."""

        def build() -> Registry:
            log = MerkleLog.open_sqlite(path, origin=REGISTRY_ORIGIN)
            try:
                return cls(log, signing_key, directory, clock=clock)
            except BaseException:
                log.close()
                raise

        return await asyncio.to_thread(build)

    async def close(self) -> None:
        """Close the log."""
        await asyncio.to_thread(self._log.close)

    # -- reading -------------------------------------------------------------------------

    @property
    def log(self) -> MerkleLog:
        """The underlying Merkle log (read it; append only through this class)."""
        return self._log

    def head(self) -> TreeHead:
        """The latest signed tree head; it covers every entry."""
        with self._state:
            self._sync()
            if self._head is None:  # _sync always signs one; this keeps mypy honest
                raise LogInconsistent("the registry has no signed head")
            return self._head

    def snapshot(self, did: str) -> dict[str, Any] | None:
        """The newest snapshot of ``did`` (a copy), or ``None``."""
        with self._state:
            self._sync()
            found = self._latest.get(did)
        return None if found is None else json.loads(json.dumps(found[1]))

    def answer(
        self, did: str, *, known_size: int | None = None
    ) -> tuple[dict[str, Any], dict[str, object]] | None:
        """The newest snapshot of ``did`` with its :meth:`proof_for`, or ``None``."""
        try:
            proof = self.proof_for(did, known_size=known_size)
        except UnknownAgent:
            return None
        entry = proof["entry"]
        if not isinstance(entry, str):  # proof_for always decodes it; keeps mypy honest
            raise LogInconsistent("registry proof entry is not text")
        return decode_snapshot(entry.encode("ascii")), proof

    def proof_for(self, did: str, *, known_size: int | None = None) -> dict[str, object]:
        """A proof of the newest snapshot of ``did`` under the latest head.

        With ``known_size`` (the size of a head the verifier already holds) the proof also
        carries ``consistency`` from that size to the head's; a ``known_size`` beyond the
        head gets none, and the verifier will refuse the shorter head. Raises
        :class:`~trustwire.errors.UnknownAgent` for a DID never enrolled.
        """
        if known_size is not None and (
            not isinstance(known_size, int) or isinstance(known_size, bool) or known_size < 0
        ):
            raise ValueError("known_size must be an int >= 0")
        with self._state:
            self._sync()
            found = self._latest.get(did)
            head = self._head
            if found is None or head is None:
                raise UnknownAgent(f"no agent with DID {did!r} in the registry")
            index = found[0]
            proof: dict[str, object] = {
                "index": index,
                "entry": self._log.entry(index).decode("ascii"),
                "inclusion": [h.hex() for h in self._log.inclusion_proof(index, head.size)],
                "head": json.loads(head.to_json()),
            }
            if known_size is not None and known_size <= head.size:
                proof["consistency"] = [
                    h.hex() for h in self._log.consistency_proof(known_size, head.size)
                ]
        return proof

    async def verify_against_directory(self) -> None:
        """Replay the whole log and compare the result with the directory.

        Rehashes every entry against the signed head, then requires that the directory and
        the log know the same agents with the same name, roles, agreement key, statement,
        issue time and revocation time. Raises
        :class:`~trustwire.errors.ConfigurationError` listing the differences.
        """
        records = await self._directory.list()
        problems = await asyncio.to_thread(self._compare, records)
        if problems:
            shown = "; ".join(problems[:10])
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise ConfigurationError(
                f"the registry log and the agent directory disagree: {shown}{more}"
            )

    # -- changing ------------------------------------------------------------------------

    async def enrol(self, record: AgentRecord) -> int:
        """Add ``record`` to the directory and log its enrolment.

        The agreement statement must verify against the DID (``ValueError`` otherwise);
        :class:`~trustwire.errors.DuplicateAgent` for a taken name or DID.
        """
        _check_statement(
            record.did, record.agreement_key, record.agreement_issued_at, record.agreement_statement
        )
        if record.revoked:
            raise ValueError("cannot enrol an agent that is already revoked")
        async with self._writing:
            await self._directory.add(record)
            return await asyncio.to_thread(self._append, record, "enrol", None)

    async def set_roles(self, did: str, roles: Sequence[str]) -> int:
        """Replace the agent's roles and log the change."""
        checked = check_roles(roles)
        async with self._writing:
            await self._require(did)
            await self._directory.set_roles(did, checked)
            return await self._append_current(did, "roles", None)

    async def rotate_agreement(
        self,
        did: str,
        *,
        agreement_key: bytes,
        agreement_statement: bytes,
        agreement_issued_at: int,
    ) -> int:
        """Replace the agent's agreement key and log the change.

        The statement must verify against the DID and ``agreement_issued_at`` must not be
        older than the current key's (``ValueError``); a revoked agent is refused
        (:class:`~trustwire.errors.StoreError`).
        """
        _check_statement(did, agreement_key, agreement_issued_at, agreement_statement)
        async with self._writing:
            current = await self._require(did)
            if agreement_issued_at < current["agreement_issued_at"]:
                raise ValueError("a rotated agreement key must not be older than the current one")
            await self._directory.rotate_agreement(
                did,
                agreement_key=agreement_key,
                agreement_statement=agreement_statement,
                agreement_issued_at=agreement_issued_at,
            )
            return await self._append_current(did, "rotate", None)

    async def certificate_issued(self, did: str, *, fingerprint: str, not_after: float) -> int:
        """Log that a TLS certificate was issued to the agent (its SHA-256 fingerprint)."""
        certificate = {"fingerprint": fingerprint.lower(), "not_after": not_after}
        async with self._writing:
            current = await self._require(did)
            if current["revoked_at"] is not None:
                raise StoreError(f"agent {did!r} is revoked; no certificate may be issued")
            return await self._append_current(did, "certificate", certificate)

    async def revoke(self, did: str, *, at: float) -> int:
        """Revoke the agent in the directory and log it.

        Revoking again changes nothing and returns the index of the revocation entry.
        """
        async with self._writing:
            current = await self._require(did)
            if current["revoked_at"] is not None:
                with self._state:
                    return self._latest[did][0]
            await self._directory.revoke(did, at=at)
            return await self._append_current(did, "revoke", None)

    async def import_directory(self) -> int:
        """Log every directory agent the registry does not know yet; return how many.

        For deployments that enrolled agents before the registry existed: each missing
        agent gets an ``enrol`` entry (and a ``revoke`` entry if it is revoked). Run it
        only when the directory is trusted, e.g. once on upgrade.
        """
        imported = 0
        async with self._writing:
            for record in await self._directory.list():
                with self._state:
                    self._sync()
                    known = record.did in self._latest
                if known:
                    continue
                live = dataclasses.replace(record, revoked_at=None)
                await asyncio.to_thread(self._append, live, "enrol", None)
                if record.revoked:
                    await asyncio.to_thread(self._append, record, "revoke", None)
                imported += 1
        return imported

    # -- internals -------------------------------------------------------------------------

    async def _require(self, did: str) -> dict[str, Any]:
        with self._state:
            self._sync()
            found = self._latest.get(did)
        if found is None:
            raise UnknownAgent(f"no agent with DID {did!r} in the registry")
        return found[1]

    async def _append_current(
        self, did: str, event: str, certificate: dict[str, Any] | None
    ) -> int:
        record = await self._directory.get_by_did(did)
        if record is None:
            raise UnknownAgent(f"no agent with DID {did!r}")
        return await asyncio.to_thread(self._append, record, event, certificate)

    def _append(self, record: AgentRecord, event: str, certificate: dict[str, Any] | None) -> int:
        for attempt in range(_APPEND_ATTEMPTS):
            with self._state:
                self._sync()
                previous = self._latest.get(record.did)
                seq = 1 if previous is None else previous[1]["seq"] + 1
                kept = previous[1]["certificate"] if previous is not None else None
                now = self._clock()
                snapshot = snapshot_of(
                    record,
                    event=event,
                    seq=seq,
                    time=now,
                    certificate=certificate if certificate is not None else kept,
                )
                try:
                    index = self._log.append(encode_snapshot(snapshot))
                except StoreError:
                    # Another process took this index between our reload and our write
                    # (entry indexes are unique, so nothing was written): catch up, retry.
                    if attempt + 1 == _APPEND_ATTEMPTS:
                        raise
                    continue
                self._apply(index, snapshot)
                self._head = self._log.signed_tree_head(self._key, now=now)
                return index
        raise StoreError("the registry log could not be appended to")  # pragma: no cover

    def _sync(self) -> None:
        """Fold entries appended since the last sync (by anyone) and sign a head if due.

        Called with ``self._state`` held.
        """
        self._log.reload()
        size = self._log.size
        start = self._derived.size
        if start < size:
            for index, entry in enumerate(self._log.entries(start, size), start):
                try:
                    snapshot = decode_snapshot(entry)
                except ValueError as exc:
                    raise LogInconsistent(f"registry entry {index} is malformed ({exc})") from None
                self._apply(index, snapshot)
        head = self._log.latest_head()
        if head is None or head.size != size:
            head = self._log.signed_tree_head(self._key, now=self._clock())
        self._head = head

    def _apply(self, index: int, snapshot: dict[str, Any]) -> None:
        try:
            self._derived.apply(index, snapshot)
        except ValueError as exc:
            raise LogInconsistent(f"registry {exc}") from None

    def _compare(self, records: list[AgentRecord]) -> list[str]:
        problems: list[str] = []
        with self._state:
            self._sync()
            head = self._head
            latest = dict(self._latest)
        if head is None:
            return ["the registry has no signed head"]
        report = verify_log(self._log.entries(0, head.size), head, self._key.public_key)
        problems.extend(report.problems)
        by_did = {record.did: record for record in records}
        for did, (index, snapshot) in latest.items():
            record = by_did.get(did)
            if record is None:
                problems.append(f"{snapshot['name']} ({did}) is in the registry, not the directory")
                continue
            expected = _record_of(snapshot, record.created_at)
            if expected != record:
                fields = [
                    f.name
                    for f in dataclasses.fields(AgentRecord)
                    if getattr(expected, f.name) != getattr(record, f.name)
                ]
                problems.append(
                    f"{record.name} ({did}) differs in {', '.join(fields)} (registry entry {index})"
                )
        for did, record in by_did.items():
            if did not in latest:
                problems.append(f"{record.name} ({did}) is in the directory, not the registry")
        return problems


def _check_statement(did: str, key: bytes, issued_at: int, statement: bytes) -> None:
    try:
        verify_agreement_statement(did, key, issued_at, statement)
    except InvalidSignature as exc:
        raise ValueError(
            "the agreement statement does not verify against the DID; refusing to log it"
        ) from exc
