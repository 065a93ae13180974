"""The SDK side of shared memory: create, open, read, write, grant, revoke, destroy.

:class:`SharedMemories` (``agent.memory``) makes and opens memories; a
:class:`SharedMemory` is a handle on one. Requests travel through a
:class:`MemoryTransport` (over the agent's coordinator connection in the SDK, or a fake in
tests), so this module does no I/O of its own; the coordinator sees only what
:mod:`trustwire.memory.crypto` produces.

Invariants:

- Plaintext values and data keys exist only in this process. Data keys are cached per
  memory and epoch in memory only (never on disk, never logged, never in an exception).
- Every segment read is checked by :func:`~trustwire.memory.crypto.open_segment` (shape,
  hash, writer signature, decryption) and must be the segment that was asked for;
  anything else raises :class:`~trustwire.errors.SegmentRejected`.
- Every write is a compare-and-set on the segment's version. ``write(key, value)`` without
  ``expected_version`` reads the current version first and still writes conditionally, so
  a concurrent writer makes it fail with :class:`~trustwire.errors.VersionConflict` rather
  than be overwritten.
- The memory id names its owner (:func:`~trustwire.memory.crypto.memory_id_for`, made
  here at creation). Every answer about a memory (create, open, refresh) must name the
  owner the id names, or :class:`~trustwire.errors.ProtocolError` is raised; so the owner
  the client trusts never comes from the coordinator alone.
- A data key is used only if it opens and was signed by the owner, or by an admin that
  carries the owner's admin certificate (:func:`~trustwire.memory.crypto.unwrap_key`);
  who the coordinator lists as admin is never trusted for keys.
- Granting wraps the data key of every epoch for the grantee; revoking starts a new epoch
  whose fresh key is wrapped only for the owner and the remaining unexpired grantees, whose
  X25519 keys come from the caller's registry-verified ``peer_keys`` lookup. Only the
  owner appoints admins: it signs an admin certificate into every key it wraps for a new
  admin, and an admin puts its certificate into every key it wraps.
- Answers from the coordinator are parsed strictly; a malformed one raises
  :class:`~trustwire.errors.ProtocolError`.
"""

from __future__ import annotations

import builtins
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeAlias
from urllib.parse import quote

from trustwire.errors import (
    MemoryAccessDenied,
    MemoryNotFound,
    ProtocolError,
    SegmentRejected,
    SharedMemoryError,
    TrustwireError,
    VersionConflict,
)
from trustwire.identity.did import Did, is_did
from trustwire.identity.keys import AgentIdentity
from trustwire.memory.crypto import (
    AdminCertificate,
    WrappedKey,
    certify_admin,
    check_segment_key,
    generate_data_key,
    is_memory_id,
    memory_id_for,
    open_segment,
    owner_matches,
    seal_segment,
    unwrap_key,
    wrap_key,
)

__all__ = [
    "AccessLevel",
    "Expiry",
    "GrantInfo",
    "MemoryInfo",
    "MemoryTransport",
    "PeerKeys",
    "SegmentInfo",
    "SharedMemories",
    "SharedMemory",
    "Value",
]

AccessLevel: TypeAlias = Literal["read", "write", "admin"]
Expiry: TypeAlias = float | datetime | timedelta | None
"""An expiry: epoch seconds, an aware ``datetime``, a ``timedelta`` from now, or None."""

PeerKeys = Callable[[str], Awaitable[tuple[str, bytes]]]
"""``name-or-DID -> (DID, X25519 agreement public key)``, verified against the registry."""

_LEVELS = ("read", "write", "admin")
_BASE = "/api/memory"


class MemoryTransport(Protocol):
    """How requests reach the coordinator's memory API."""

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        """Send one request; return the JSON body of a 2xx answer, raise the typed
        trustwire error (:class:`~trustwire.errors.MemoryAccessDenied`,
        :class:`~trustwire.errors.VersionConflict`, ...) otherwise."""
        ...


# --------------------------------------------------------------------------- answers


def _malformed(what: str) -> ProtocolError:
    return ProtocolError(f"malformed {what} in the coordinator's answer")


def _int(data: Mapping[str, Any], name: str, what: str, *, minimum: int = 0) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _malformed(what)
    return value


def _str(data: Mapping[str, Any], name: str, what: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise _malformed(what)
    return value


def _ms(data: Mapping[str, Any], name: str, what: str, *, optional: bool = False) -> float | None:
    value = data.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(what)
    return value / 1000


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed(what)
    return value


def _list(value: object, what: str) -> builtins.list[Any]:
    if not isinstance(value, builtins.list):
        raise _malformed(what)
    return value


@dataclass(frozen=True, slots=True)
class GrantInfo:
    """``agent`` may use the memory at ``level`` until ``expires_at`` (epoch s; None: no expiry)."""

    agent: Did
    level: AccessLevel
    expires_at: float | None
    granted_by: Did

    def active(self, now: float) -> bool:
        """Whether the grant still works at ``now``."""
        return self.expires_at is None or now < self.expires_at

    @classmethod
    def from_json(cls, value: object) -> GrantInfo:
        data = _object(value, "grant")
        level = data.get("level")
        if level not in _LEVELS:
            raise _malformed("grant")
        return cls(
            agent=Did(_str(data, "agent", "grant")),
            level=level,
            expires_at=_ms(data, "expiresAt", "grant", optional=True),
            granted_by=Did(_str(data, "grantedBy", "grant")),
        )


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    """A memory's metadata as the coordinator reports it (times in epoch seconds)."""

    id: str
    owner: Did
    type: str
    created_at: float
    expires_at: float | None
    epoch: int
    max_bytes: int
    max_segments: int
    grants: tuple[GrantInfo, ...]
    used_bytes: int
    used_segments: int
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The Memory JSON object as received."""

    @classmethod
    def from_json(cls, value: object) -> MemoryInfo:
        """Parse a Memory JSON object; :class:`ProtocolError` if malformed."""
        data = _object(value, "memory")
        quotas = _object(data.get("quotas"), "memory quotas")
        usage = _object(data.get("usage"), "memory usage")
        created_at = _ms(data, "createdAt", "memory")
        return cls(
            id=_str(data, "id", "memory"),
            owner=Did(_str(data, "owner", "memory")),
            type=_str(data, "type", "memory"),
            created_at=created_at if created_at is not None else 0.0,
            expires_at=_ms(data, "expiresAt", "memory", optional=True),
            epoch=_int(data, "epoch", "memory"),
            max_bytes=_int(quotas, "maxBytes", "memory quotas"),
            max_segments=_int(quotas, "maxSegments", "memory quotas"),
            grants=tuple(
                GrantInfo.from_json(g) for g in _list(data.get("grants"), "memory grants")
            ),
            used_bytes=_int(usage, "bytes", "memory usage"),
            used_segments=_int(usage, "segments", "memory usage"),
            raw=dict(data),
        )

    def grant_of(self, agent: str) -> GrantInfo | None:
        """``agent``'s grant, active or not (the owner holds none: it is implicitly admin)."""
        return next((g for g in self.grants if g.agent == agent), None)

    def expired(self, now: float) -> bool:
        """Whether the memory has expired at ``now``."""
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One segment's metadata, as listings show it (no contents)."""

    key: str
    version: int
    epoch: int
    writer: Did
    size: int
    written_at: float

    @classmethod
    def from_json(cls, value: object) -> SegmentInfo:
        data = _object(value, "segment listing")
        written_at = _ms(data, "writtenAt", "segment listing")
        return cls(
            key=_str(data, "key", "segment listing"),
            version=_int(data, "version", "segment listing", minimum=1),
            epoch=_int(data, "epoch", "segment listing"),
            writer=Did(_str(data, "writer", "segment listing")),
            size=_int(data, "size", "segment listing"),
            written_at=written_at if written_at is not None else 0.0,
        )


@dataclass(frozen=True, slots=True)
class Value:
    """A verified, decrypted value. ``repr`` leaves the data out."""

    data: bytes = field(repr=False)
    version: int
    writer: Did
    written_at: float
    key: str = ""
    epoch: int = 0

    @property
    def text(self) -> str:
        """The data decoded as UTF-8 (``UnicodeDecodeError`` if it is not text)."""
        return self.data.decode("utf-8")


# --------------------------------------------------------------------------- helpers


def _expiry_ms(expires: Expiry, now: float) -> int | None:
    """An expiry as wire epoch milliseconds; ``ValueError`` unless it is in the future."""
    if expires is None:
        return None
    if isinstance(expires, timedelta):
        at = now + expires.total_seconds()
    elif isinstance(expires, datetime):
        if expires.tzinfo is None:
            raise ValueError("an expiry datetime must be timezone-aware")
        at = expires.timestamp()
    elif isinstance(expires, int | float) and not isinstance(expires, bool):
        at = float(expires)
    else:
        raise TypeError("expires must be epoch seconds, a datetime, a timedelta or None")
    if not math.isfinite(at) or at <= now:
        raise ValueError("an expiry must lie in the future")
    return round(at * 1000)


def _quotas_json(quotas: Mapping[str, int] | None) -> dict[str, int] | None:
    if quotas is None:
        return None
    names = {
        "maxBytes": "maxBytes",
        "max_bytes": "maxBytes",
        "maxSegments": "maxSegments",
        "max_segments": "maxSegments",
    }
    out: dict[str, int] = {}
    for name, value in quotas.items():
        if name not in names:
            raise ValueError(f"unknown quota {name!r} (use maxBytes, maxSegments)")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"quota {name} must be a positive int")
        out[names[name]] = value
    return out


def _check_memory_id(memory_id: str) -> str:
    """Refuse, before any request, a string that is no memory id at all. (An id of the
    older UUID form passes here, and is refused once the answer's owner is checked: it
    names no owner.)"""
    if is_memory_id(memory_id):
        return memory_id
    try:
        canonical = str(uuid.UUID(memory_id))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError("a memory id is m1- and 64 lower-case hex digits") from exc
    if canonical != memory_id:
        raise ValueError("a memory id is m1- and 64 lower-case hex digits")
    return memory_id


def _checked(info: MemoryInfo, memory_id: str) -> MemoryInfo:
    """``info`` if it is about ``memory_id`` and names the owner the id names."""
    if info.id != memory_id:
        raise ProtocolError("the coordinator answered with another memory")
    if not owner_matches(memory_id, info.owner):
        raise ProtocolError("the coordinator answered with an owner the memory id does not name")
    return info


def _ms_of(seconds: float | None) -> int:
    """An expiry in epoch seconds as certificate milliseconds (0: no expiry)."""
    return 0 if seconds is None else round(seconds * 1000)


def _segment_path(memory_id: str, key: str) -> str:
    return f"{_BASE}/{memory_id}/segments/{quote(key, safe='')}"


def _epoch_conflict(exc: VersionConflict, epoch: int) -> bool:
    """Whether a 409 says our key epoch is stale (rather than the segment version)."""
    current = getattr(exc, "current_epoch", None)
    return isinstance(current, int) and not isinstance(current, bool) and current != epoch


# --------------------------------------------------------------------------- client


class SharedMemories:
    """An agent's entry point to shared memory (``agent.memory``).

    ``peer_keys`` resolves an agent name or DID to its DID and registry-verified X25519
    agreement key; ``clock`` gives epoch seconds (injected in tests).
    """

    def __init__(
        self,
        transport: MemoryTransport,
        identity: AgentIdentity,
        peer_keys: PeerKeys,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._transport = transport
        self._identity = identity
        self._peer_keys = peer_keys
        self._clock = clock
        # memory id -> epoch -> data key. In memory only; shared by every handle.
        self._keys: dict[str, dict[int, bytes]] = {}

    def __repr__(self) -> str:
        return f"SharedMemories(agent={self._identity.did})"

    @property
    def did(self) -> Did:
        """This agent's DID."""
        return self._identity.did

    async def create(
        self,
        *,
        type: str = "kv",
        expires: Expiry = None,
        quotas: Mapping[str, int] | None = None,
    ) -> SharedMemory:
        """Create a memory owned by this agent, with a fresh epoch-0 data key.

        ``quotas`` may set ``maxBytes`` / ``maxSegments`` (at most the coordinator's limits).
        The memory id is chosen here: it names this agent as the owner
        (:func:`~trustwire.memory.crypto.memory_id_for`), and the wrapped key binds it.
        Share the id out of band: it is what lets grantees tell the real owner.
        """
        memory_id = memory_id_for(self._identity.did)
        data_key = generate_data_key()
        wrapped = wrap_key(
            data_key,
            memory_id=memory_id,
            epoch=0,
            agent_did=self._identity.did,
            agent_public=self._identity.agreement.public,
            wrapper=self._identity,
        )
        body: dict[str, Any] = {"id": memory_id, "type": type, "wrappedKey": wrapped.to_json()}
        expires_ms = _expiry_ms(expires, self._clock())
        if expires_ms is not None:
            body["expiresAt"] = expires_ms
        quota_body = _quotas_json(quotas)
        if quota_body:
            body["quotas"] = quota_body
        info = MemoryInfo.from_json(await self._transport.call("POST", _BASE, body=body))
        if info.id != memory_id:
            raise ProtocolError("the coordinator created the memory under another id")
        _checked(info, memory_id)
        self._keys[memory_id] = {0: data_key}
        return SharedMemory(self, info)

    async def open(self, memory_id: str) -> SharedMemory:
        """A handle on an existing memory this agent owns or holds a grant on.

        :class:`ProtocolError` if the coordinator's answer names an owner other than the
        one ``memory_id`` names (a UUID id names none, so it is always refused)."""
        _check_memory_id(memory_id)
        info = MemoryInfo.from_json(await self._transport.call("GET", f"{_BASE}/{memory_id}"))
        return SharedMemory(self, _checked(info, memory_id))

    async def list(self) -> builtins.list[MemoryInfo]:
        """The memories this agent owns or holds an unexpired grant on, as the coordinator
        reports them (:meth:`open` one to have its owner checked against its id)."""
        answer = _object(await self._transport.call("GET", _BASE), "memory list")
        return [MemoryInfo.from_json(m) for m in _list(answer.get("memories"), "memory list")]


class SharedMemory:
    """A handle on one shared memory. Get one from :meth:`SharedMemories.create` or
    :meth:`SharedMemories.open`; ``info`` is the metadata as last fetched."""

    def __init__(self, memories: SharedMemories, info: MemoryInfo) -> None:
        self._memories = memories
        self._transport = memories._transport
        self._identity = memories._identity
        self.info = info

    def __repr__(self) -> str:
        return f"SharedMemory(id={self.id}, epoch={self.info.epoch})"

    @property
    def id(self) -> str:
        """The memory id (``m1-`` and 64 hex digits; it names the owner)."""
        return self.info.id

    @property
    def _path(self) -> str:
        return f"{_BASE}/{self.id}"

    @property
    def _keys(self) -> dict[int, bytes]:
        return self._memories._keys.setdefault(self.id, {})

    async def refresh(self) -> MemoryInfo:
        """Fetch the memory's metadata again (epoch, grants, usage)."""
        info = _checked(
            MemoryInfo.from_json(await self._transport.call("GET", self._path)), self.id
        )
        self.info = info
        return info

    # -- keys ---------------------------------------------------------------------------

    @property
    def _is_owner(self) -> bool:
        return self.info.owner == self._identity.did

    async def _fetch_keys(self, *, every: bool = False) -> builtins.list[AdminCertificate]:
        """Fetch and unwrap this agent's wrapped keys (every epoch it holds).

        Epochs already keyed are skipped unless ``every``; returns the owner's admin
        certificates for this agent found in the keys opened."""
        answer = _object(await self._transport.call("GET", f"{self._path}/keys"), "keys")
        cache = self._keys
        certificates: builtins.list[AdminCertificate] = []
        for item in _list(answer.get("keys"), "keys"):
            try:
                wrapped = WrappedKey.from_json(item)
            except ValueError as exc:
                raise _malformed("wrapped key") from exc
            if wrapped.epoch in cache and not every:
                continue
            try:
                opened = unwrap_key(
                    wrapped,
                    memory_id=self.id,
                    agent_did=self._identity.did,
                    private=self._identity.agreement,
                    owner=self.info.owner,
                )
            except SegmentRejected:
                # Not for us, tampered, or not wrapped by the owner or an admin it
                # certified: leave the epoch unkeyed. Reading one of its segments then
                # fails with SegmentRejected ("no data key held").
                continue
            cache.setdefault(opened.epoch, opened.data_key)
            if opened.admin_certificate is not None:
                certificates.append(opened.admin_certificate)
        return certificates

    async def _own_certificate(self) -> AdminCertificate | None:
        """The owner's certificate that this agent is an admin, to put into every key it
        wraps (None for the owner, who needs none). It comes from this agent's own wrapped
        keys, of any epoch; the latest-expiring one is used."""
        if self._is_owner:
            return None
        found = await self._fetch_keys(every=True)
        if not found:
            raise SharedMemoryError(
                "this agent holds no admin certificate from the memory's owner: only admins "
                "appointed by the owner can hand out keys"
            )
        best = max(found, key=lambda c: math.inf if c.expires_ms == 0 else c.expires_ms)
        if best.expired(self._memories._clock()):
            raise SharedMemoryError("the owner's appointment of this agent as admin has expired")
        return best

    async def _retire_expired_grants(self) -> None:
        """Before the owner or an admin writes: revoke every grant that has expired.

        The coordinator refuses an expired grant at once, but its holder still has the
        current data key; revoking moves the key to a new epoch first, so nothing written
        from now on can be decrypted with what that agent holds, even by someone handed
        the ciphertext. Write grantees cannot rotate keys: they write under the current
        epoch, and the next write by the owner or an admin rotates it.
        """
        now = self._memories._clock()
        expired = [g.agent for g in self.info.grants if not g.active(now)]
        if not expired:
            return
        mine = self.info.grant_of(self._identity.did)
        if not (
            self._is_owner or (mine is not None and mine.level == "admin" and mine.active(now))
        ):
            return
        for did in expired:
            await self.revoke(did)

    async def _key_for(self, epoch: int) -> bytes:
        if epoch not in self._keys:
            await self._fetch_keys()
        key = self._keys.get(epoch)
        if key is None:
            raise SegmentRejected(f"no data key held for epoch {epoch}")
        return key

    async def _all_keys(self) -> dict[int, bytes]:
        """The data key of every epoch ``0..info.epoch`` (refreshing the metadata first)."""
        await self.refresh()
        if any(e not in self._keys for e in range(self.info.epoch + 1)):
            await self._fetch_keys()
        missing = [e for e in range(self.info.epoch + 1) if e not in self._keys]
        if missing:
            raise SharedMemoryError(
                f"this agent does not hold the data key of epoch(s) {missing[:5]}"
            )
        return {e: self._keys[e] for e in range(self.info.epoch + 1)}

    # -- segments -----------------------------------------------------------------------

    async def _current_version(self, key: str) -> int:
        """The segment's version now, 0 if it does not exist."""
        try:
            segment = await self._transport.call("GET", _segment_path(self.id, key))
        except TrustwireError as exc:
            # A missing segment (404). Should the memory itself be gone, the conditional
            # write that follows reports it.
            if isinstance(exc, MemoryNotFound) or getattr(exc, "status", None) == 404:
                return 0
            raise
        return _int(_object(segment, "segment"), "version", "segment", minimum=1)

    async def write(
        self, key: str, value: bytes | str, *, expected_version: int | None = None
    ) -> int:
        """Encrypt, sign and store ``value`` under ``key``; returns the new version.

        ``expected_version`` is the version the write replaces (0: the key must not
        exist). Without it, the current version is read first; either way the coordinator
        refuses the write with :class:`VersionConflict` if the segment changed meanwhile.
        """
        check_segment_key(key)
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        await self._retire_expired_grants()
        if expected_version is None:
            expected_version = await self._current_version(key)
        if isinstance(expected_version, bool) or expected_version < 0:
            raise ValueError("expected_version must be an int >= 0")
        for attempt in range(2):
            epoch = self.info.epoch
            data_key = await self._key_for(epoch)
            segment = seal_segment(
                self._identity,
                memory_id=self.id,
                key=key,
                version=expected_version + 1,
                epoch=epoch,
                data_key=data_key,
                value=data,
            )
            body = {"expectedVersion": expected_version, "segment": segment}
            try:
                answer = await self._transport.call("PUT", _segment_path(self.id, key), body=body)
            except VersionConflict as exc:
                # The key epoch moved on (a revocation): re-seal under the new key once.
                if attempt == 0 and _epoch_conflict(exc, epoch):
                    await self.refresh()
                    continue
                raise
            version = _object(answer, "write answer").get("version")
            if isinstance(version, int) and not isinstance(version, bool):
                return version
            return expected_version + 1
        raise VersionConflict("the memory's key epoch keeps changing; try again")

    async def read(self, key: str) -> Value:
        """Fetch, verify and decrypt the segment ``key``.

        Raises :class:`SegmentRejected` if it fails any check or is not the segment asked
        for; the coordinator's refusals (no grant, expired ...) as their typed errors.
        """
        check_segment_key(key)
        segment = _object(await self._transport.call("GET", _segment_path(self.id, key)), "segment")
        epoch = segment.get("epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch not in self._keys:
            await self._fetch_keys()
        keys = self._keys
        opened = open_segment(segment, memory_id=self.id, data_key_for=lambda e: keys[e])
        if opened.key != key:
            raise SegmentRejected("the coordinator answered with another key's segment")
        written_at = segment.get("writtenAt")
        return Value(
            data=opened.value,
            version=opened.version,
            writer=opened.writer,
            written_at=(
                written_at / 1000
                if isinstance(written_at, int) and not isinstance(written_at, bool)
                else 0.0
            ),
            key=opened.key,
            epoch=opened.epoch,
        )

    async def list(self) -> builtins.list[SegmentInfo]:
        """Every segment's metadata (keys, versions, writers, sizes; no contents)."""
        found: builtins.list[SegmentInfo] = []
        query: dict[str, str] = {}
        while True:
            answer = _object(
                await self._transport.call("GET", f"{self._path}/segments", query=query),
                "listing",
            )
            page = [SegmentInfo.from_json(s) for s in _list(answer.get("segments"), "listing")]
            found.extend(page)
            after = answer.get("next")
            if after is None or not page:
                return found
            if not isinstance(after, str) or (query and after <= query["after"]):
                raise _malformed("listing cursor")
            query = {"after": after}

    async def delete(self, key: str, *, expected_version: int | None = None) -> None:
        """Delete segment ``key`` (compare-and-set on ``expected_version``, read first if
        not given)."""
        check_segment_key(key)
        if expected_version is None:
            segment = await self._transport.call("GET", _segment_path(self.id, key))
            expected_version = _int(_object(segment, "segment"), "version", "segment", minimum=1)
        await self._transport.call(
            "DELETE",
            _segment_path(self.id, key),
            query={"expectedVersion": str(expected_version)},
        )

    # -- access -------------------------------------------------------------------------

    async def grant(self, agent: str, level: AccessLevel, *, expires: Expiry = None) -> MemoryInfo:
        """Let ``agent`` (name or DID) use the memory at ``level`` (read, write, admin),
        until ``expires`` if given. Wraps the data key of every epoch for the grantee."""
        if level not in _LEVELS:
            raise ValueError("level must be read, write or admin")
        if level == "admin" and not self._is_owner:
            raise MemoryAccessDenied("only the memory's owner can appoint admins")
        expires_ms = _expiry_ms(expires, self._memories._clock())
        did, public = await self._memories._peer_keys(agent)
        keys = await self._all_keys()
        own_certificate = await self._own_certificate()
        recipient_certificate = (
            certify_admin(self._identity, memory_id=self.id, admin_did=did, expires_ms=expires_ms)
            if level == "admin"
            else None
        )
        wrapped = [
            wrap_key(
                k,
                memory_id=self.id,
                epoch=e,
                agent_did=did,
                agent_public=public,
                wrapper=self._identity,
                wrapper_certificate=own_certificate,
                recipient_certificate=recipient_certificate,
            ).to_json()
            for e, k in sorted(keys.items())
        ]
        body: dict[str, Any] = {"agent": did, "level": level, "wrappedKeys": wrapped}
        if expires_ms is not None:
            body["expiresAt"] = expires_ms
        self.info = MemoryInfo.from_json(
            await self._transport.call("POST", f"{self._path}/grants", body=body)
        )
        return self.info

    async def revoke(self, agent: str) -> MemoryInfo:
        """Withdraw ``agent``'s grant (name or DID) and rotate the data key.

        The new epoch's fresh key is wrapped for the owner and every remaining unexpired
        grantee; the revoked agent keeps only what it could read before. An owner
        revoking also hands the remaining admins their certificates again, in the new keys.
        """
        did = agent if is_did(agent) else (await self._memories._peer_keys(agent))[0]
        for attempt in range(2):
            info = await self.refresh()
            own_certificate = await self._own_certificate()
            new_epoch = info.epoch + 1
            data_key = generate_data_key()
            now = self._memories._clock()
            active = [g for g in info.grants if g.active(now) and g.agent != did]
            recipients = [info.owner] + [g.agent for g in active]
            admins = {g.agent: g for g in active if g.level == "admin"}
            wrapped = []
            for recipient in dict.fromkeys(recipients):
                if recipient == did:
                    continue
                public = await self._public_key_of(recipient)
                admin = admins.get(recipient)
                wrapped.append(
                    wrap_key(
                        data_key,
                        memory_id=self.id,
                        epoch=new_epoch,
                        agent_did=recipient,
                        agent_public=public,
                        wrapper=self._identity,
                        wrapper_certificate=own_certificate,
                        recipient_certificate=(
                            certify_admin(
                                self._identity,
                                memory_id=self.id,
                                admin_did=recipient,
                                expires_ms=_ms_of(admin.expires_at),
                            )
                            if admin is not None and self._is_owner
                            else None
                        ),
                    ).to_json()
                )
            body = {"epoch": new_epoch, "wrappedKeys": wrapped}
            try:
                answer = await self._transport.call(
                    "DELETE", f"{self._path}/grants/{quote(did, safe='')}", body=body
                )
            except VersionConflict as exc:
                if attempt == 0 and _epoch_conflict(exc, info.epoch):
                    continue  # someone else rotated meanwhile: rotate from the new epoch
                raise
            self.info = MemoryInfo.from_json(answer)
            if self._identity.did in recipients:
                self._keys[new_epoch] = data_key
            return self.info
        raise VersionConflict("the memory's key epoch keeps changing; try again")

    async def _public_key_of(self, did: str) -> bytes:
        if did == self._identity.did:
            return self._identity.agreement.public
        resolved, public = await self._memories._peer_keys(did)
        if resolved != did:
            raise SharedMemoryError("the key lookup answered for another agent")
        return public

    async def destroy(self) -> None:
        """Delete the memory, its segments and wrapped keys (owner or admin)."""
        await self._transport.call("DELETE", self._path)
        self._memories._keys.pop(self.id, None)
