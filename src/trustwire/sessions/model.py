"""Sessions as values: their configuration, their expiry rule and every state transition.

A session is a time-bounded conversation between two agents (``initiator`` and ``peer``,
both DIDs). This module is pure: no I/O, no clock (every time is a keyword ``now``, float
epoch seconds), so the manager, the stores and the operator CLI share one definition of
what a session's state is and how it changes.

Configuration (the elizaOS Sessions API semantics, JSON shape
``{"timeoutMinutes": 30, "autoRenew": true, "maxDurationMinutes": 720,
"warningThresholdMinutes": 5}``):

* ``timeoutMinutes`` - inactivity timeout, clamped to [5, 1440], default 30;
* ``autoRenew`` - activity (a message, a heartbeat) renews the session, default true;
* ``maxDurationMinutes`` - hard cap on the session's life, clamped to
  [timeoutMinutes, 2880], default 720;
* ``warningThresholdMinutes`` - when ``session.expiring`` is announced, default 5,
  clamped to [1, 2880].

:meth:`SessionConfig.resolve` merges per-session settings over per-agent defaults over the
built-ins, key by key, then clamps silently. A value of the wrong type (a string, a bool
where a number goes, NaN, a fraction of a minute) or an unknown key is an
:class:`~trustwire.errors.InvalidSessionConfig`, never silently ignored. ``None`` means
"not given" (the next layer decides). :func:`validate_timeout` is the strict variant for
an explicit timeout change: out of range is refused, not clamped.

Invariants of :class:`Session` (each transition below keeps them):

* ``expires_at`` = (``last_activity`` if autoRenew, else the last explicit renewal or the
  creation) + timeout, capped at ``created_at`` + max duration. A session never outlives
  its max duration.
* Status is ``ended`` once ``ended_at`` is set, else ``expired`` once ``now >=
  expires_at``, else ``active``. Nothing makes an ended or expired session active again.
* **Renewal rule.** A renewal (explicit, heartbeat with autoRenew, or message activity
  with autoRenew) is possible while the session is active and its expiry is still short
  of the cap (``expires_at < created_at + max duration``); it moves the expiry to
  ``min(now + timeout, cap)``, counts in ``renewal_count`` and clears the warning state.
  Once the expiry has reached the cap (at the latest when ``now`` reaches it), an explicit
  renewal is refused with :class:`~trustwire.errors.SessionRenewalFailed`; activity then
  renews nothing.
* **Activity renewals are counted at most once a minute.** Every message moves
  ``last_activity`` (and so the expiry, with autoRenew), but ``renewal_count`` grows (and
  ``session.renewed`` is announced) only when at least :data:`ACTIVITY_RENEWAL_INTERVAL`
  seconds passed since the previous counted renewal, so a flood of messages does not
  turn the count into a message counter.
* **Announcements.** ``warned_for`` is the expiry for which ``session.expiring`` was
  announced: a new announcement is due when the remaining time is within the warning
  threshold and the warning is re-armed - ``warned_for`` cleared (by a counted renewal)
  or the expiry moved by more than the threshold since (:func:`warning_rearmed`), so the
  session left the warning zone in between. Message activity moving the expiry by
  seconds does not re-arm it: with a threshold as long as the timeout a session is
  always near expiry, and each sweep would otherwise announce it again.
  ``expired_announced`` and ``ended_announced`` make ``session.expired`` and
  ``session.ended`` one-time announcements; they are stored with the session.
* ``version`` grows by one with every stored change (stores compare-and-set on it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from trustwire.errors import (
    InvalidSessionConfig,
    SessionEnded,
    SessionExpired,
    SessionRenewalFailed,
)

__all__ = [
    "ACTIVITY_RENEWAL_INTERVAL",
    "CONFIG_KEYS",
    "DEFAULT_MAX_DURATION_MINUTES",
    "DEFAULT_TIMEOUT_MINUTES",
    "DEFAULT_WARNING_MINUTES",
    "MAX_END_REASON_CHARS",
    "MAX_MAX_DURATION_MINUTES",
    "MAX_METADATA_BYTES",
    "MAX_TIMEOUT_MINUTES",
    "MAX_WARNING_MINUTES",
    "MIN_TIMEOUT_MINUTES",
    "MIN_WARNING_MINUTES",
    "Session",
    "SessionConfig",
    "SessionMessage",
    "SessionStatus",
    "check_end_reason",
    "check_metadata",
    "check_session_id",
    "expired_error",
    "new_session_id",
    "validate_timeout",
    "warning_rearmed",
]

MIN_TIMEOUT_MINUTES: Final = 5
MAX_TIMEOUT_MINUTES: Final = 1440
DEFAULT_TIMEOUT_MINUTES: Final = 30
DEFAULT_MAX_DURATION_MINUTES: Final = 720
MAX_MAX_DURATION_MINUTES: Final = 2880
DEFAULT_WARNING_MINUTES: Final = 5
MIN_WARNING_MINUTES: Final = 1
MAX_WARNING_MINUTES: Final = MAX_MAX_DURATION_MINUTES
"""Warning thresholds above this are clamped (a longer warning than any session means
nothing)."""

ACTIVITY_RENEWAL_INTERVAL: Final = 60.0
"""Seconds between two counted activity renewals of one session (see the module doc)."""

MAX_METADATA_BYTES: Final = 10 * 1024
"""Largest session metadata, as compact JSON (elizaOS' 10 KB)."""

MAX_END_REASON_CHARS: Final = 200
"""Longest reason an ``end`` may give."""

CONFIG_KEYS: Final = (
    "timeoutMinutes",
    "autoRenew",
    "maxDurationMinutes",
    "warningThresholdMinutes",
)
"""The JSON keys of a session configuration."""

SessionStatus = Literal["active", "expired", "ended"]

_MINUTE: Final = 60.0
_MAX_DID_CHARS: Final = 256
# The canonical (str(uuid.UUID(...))) form, checked without parsing: ids are checked on
# the per-message path.
_SESSION_ID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MESSAGE_ID_RE: Final = re.compile(r"[0-9a-f]{1,64}")


def _minutes(key: str, value: object, where: str) -> int | None:
    """A whole number of minutes from JSON (int, or a float without a fraction)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSessionConfig(
            f"{where}{key} must be a whole number of minutes, not {type(value).__name__}"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidSessionConfig(f"{where}{key} must be a finite number of minutes")
        if not value.is_integer():
            raise InvalidSessionConfig(f"{where}{key} must be a whole number of minutes")
        return int(value)
    return value


def _flag(key: str, value: object, where: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidSessionConfig(
            f"{where}{key} must be true or false, not {type(value).__name__}"
        )
    return value


def _layer(data: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """The given (non-``None``) settings of one layer, type-checked, unclamped."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidSessionConfig(f"{where}must be a JSON object, not {type(data).__name__}")
    unknown = sorted(str(key) for key in data if key not in CONFIG_KEYS)
    if unknown:
        shown = ", ".join(repr(key[:40]) for key in unknown[:5])
        raise InvalidSessionConfig(
            f"{where}unknown setting(s) {shown} (expected: {', '.join(CONFIG_KEYS)})"
        )
    layer: dict[str, Any] = {}
    for key, value in data.items():
        checked = _flag(key, value, where) if key == "autoRenew" else _minutes(key, value, where)
        if checked is not None:
            layer[key] = checked
    return layer


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def validate_timeout(value: object) -> int:
    """A timeout for an explicit change (``PATCH .../timeout``): whole minutes within
    [:data:`MIN_TIMEOUT_MINUTES`, :data:`MAX_TIMEOUT_MINUTES`].

    Unlike creation, nothing is clamped: out of range or of the wrong type raises
    :class:`~trustwire.errors.InvalidSessionConfig`.
    """
    minutes = _minutes("timeoutMinutes", value, "")
    if minutes is None:
        raise InvalidSessionConfig("timeoutMinutes is required")
    if not MIN_TIMEOUT_MINUTES <= minutes <= MAX_TIMEOUT_MINUTES:
        raise InvalidSessionConfig(
            f"timeoutMinutes must be between {MIN_TIMEOUT_MINUTES} and "
            f"{MAX_TIMEOUT_MINUTES}, not {minutes}"
        )
    return minutes


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """A session's timeout settings, always within range (build with :meth:`resolve`)."""

    timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES
    auto_renew: bool = True
    max_duration_minutes: int = DEFAULT_MAX_DURATION_MINUTES
    warning_threshold_minutes: int = DEFAULT_WARNING_MINUTES

    def __post_init__(self) -> None:
        # Built directly (not through resolve), a config must already be in range: the
        # expiry rule relies on it.
        for name, low, high in (
            ("timeout_minutes", MIN_TIMEOUT_MINUTES, MAX_TIMEOUT_MINUTES),
            ("max_duration_minutes", self.timeout_minutes, MAX_MAX_DURATION_MINUTES),
            ("warning_threshold_minutes", MIN_WARNING_MINUTES, MAX_WARNING_MINUTES),
        ):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise InvalidSessionConfig(f"{name} must be an integer in [{low}, {high}]")
        if type(self.auto_renew) is not bool:
            raise InvalidSessionConfig("auto_renew must be a bool")

    @classmethod
    def resolve(
        cls,
        session: Mapping[str, Any] | None = None,
        agent: Mapping[str, Any] | None = None,
    ) -> SessionConfig:
        """Per-session settings over per-agent defaults over the built-ins, key by key,
        clamped silently into range.

        Raises :class:`~trustwire.errors.InvalidSessionConfig` for an unknown key or a
        value of the wrong type in either layer.
        """
        merged = {**_layer(agent, "agent session defaults: "), **_layer(session, "")}
        timeout = _clamp(
            merged.get("timeoutMinutes", DEFAULT_TIMEOUT_MINUTES),
            MIN_TIMEOUT_MINUTES,
            MAX_TIMEOUT_MINUTES,
        )
        return cls(
            timeout_minutes=timeout,
            auto_renew=merged.get("autoRenew", True),
            max_duration_minutes=_clamp(
                merged.get("maxDurationMinutes", DEFAULT_MAX_DURATION_MINUTES),
                timeout,
                MAX_MAX_DURATION_MINUTES,
            ),
            warning_threshold_minutes=_clamp(
                merged.get("warningThresholdMinutes", DEFAULT_WARNING_MINUTES),
                MIN_WARNING_MINUTES,
                MAX_WARNING_MINUTES,
            ),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionConfig:
        """Read :meth:`to_json` output back (missing keys take the built-ins)."""
        return cls.resolve(data)

    def to_json(self) -> dict[str, Any]:
        """The elizaOS ``timeoutConfig`` shape."""
        return {
            "timeoutMinutes": self.timeout_minutes,
            "autoRenew": self.auto_renew,
            "maxDurationMinutes": self.max_duration_minutes,
            "warningThresholdMinutes": self.warning_threshold_minutes,
        }

    def with_timeout(self, timeout_minutes: int) -> SessionConfig:
        """This config with another (already validated) timeout; the max duration is
        raised to it when it was shorter."""
        return dataclasses.replace(
            self,
            timeout_minutes=timeout_minutes,
            max_duration_minutes=_clamp(
                self.max_duration_minutes, timeout_minutes, MAX_MAX_DURATION_MINUTES
            ),
        )


def new_session_id() -> str:
    """A fresh session id (a UUID4 string)."""
    return str(uuid.uuid4())


def check_session_id(value: object) -> str:
    """``value`` if it is a canonical UUID string (the form ids are stored in), else
    :class:`ValueError`. Callers answering a peer turn that into "unknown session"."""
    if not isinstance(value, str) or not _SESSION_ID_RE.fullmatch(value):
        raise ValueError("a session id is a lower-case UUID string")
    return value


def check_metadata(value: object) -> Mapping[str, Any]:
    """Session metadata: a JSON object of at most :data:`MAX_METADATA_BYTES` bytes.

    Returns a read-only deep copy (through JSON). Raises :class:`ValueError` with the
    reason otherwise.
    """
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ValueError(f"session metadata must be a JSON object, not {type(value).__name__}")
    try:
        text = json.dumps(dict(value), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"session metadata is not JSON: {exc}") from None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"session metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
        )
    copied: dict[str, Any] = json.loads(text)
    return MappingProxyType(copied)


def check_end_reason(value: object) -> str:
    """A reason for ending a session: 1-200 printable characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_END_REASON_CHARS:
        raise ValueError(f"an end reason is 1-{MAX_END_REASON_CHARS} characters")
    if not value.isprintable():
        raise ValueError("an end reason must be printable text")
    return value


def _check_did(what: str, value: object) -> None:
    if not isinstance(value, str) or not value.startswith("did:") or len(value) > _MAX_DID_CHARS:
        raise ValueError(f"{what} must be a DID")


def _ms(seconds: float) -> int:
    return math.floor(seconds * 1000)


@dataclass(frozen=True, slots=True)
class Session:
    """One session between ``initiator`` and ``peer`` (DIDs).

    ``renewed_at`` (an addition to the elizaOS model) is the time of the last counted
    renewal: without autoRenew it is the base of the expiry, so an explicit renewal
    extends a session even though activity does not. ``ended_by`` is the DID of the
    participant who ended the session, or ``None`` when the operator did.
    ``ended_announced`` persists the one-time ``session.ended`` announcement as
    ``expired_announced`` does for ``session.expired``.
    """

    id: str
    initiator: str
    peer: str
    created_at: float
    last_activity: float
    config: SessionConfig
    renewal_count: int = 0
    ended_at: float | None = None
    end_reason: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    warned_for: float | None = None
    expired_announced: bool = False
    version: int = 0
    renewed_at: float | None = None
    ended_by: str | None = None
    ended_announced: bool = False

    def __post_init__(self) -> None:
        check_session_id(self.id)
        _check_did("initiator", self.initiator)
        _check_did("peer", self.peer)
        if self.initiator == self.peer:
            raise ValueError("a session needs two different agents")
        for name in ("created_at", "last_activity", "renewed_at", "ended_at", "warned_for"):
            value = getattr(self, name)
            if value is None and name not in ("created_at", "last_activity"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"session {name} must be a number")
            if not math.isfinite(value):
                raise ValueError(f"session {name} must be finite")
        if not isinstance(self.config, SessionConfig):
            raise ValueError("session config must be a SessionConfig")
        for name in ("renewal_count", "version"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"session {name} must be a non-negative integer")
        for name in ("expired_announced", "ended_announced"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"session {name} must be a bool")
        if self.end_reason is not None:
            check_end_reason(self.end_reason)
        if self.ended_by is not None:
            _check_did("ended_by", self.ended_by)
        if not isinstance(self.metadata, MappingProxyType):
            object.__setattr__(self, "metadata", check_metadata(self.metadata))

    # -- reading ----------------------------------------------------------------------

    @property
    def cap(self) -> float:
        """The instant the session ends at the latest: creation + max duration."""
        return self.created_at + self.config.max_duration_minutes * _MINUTE

    @property
    def expires_at(self) -> float:
        """When the session expires unless renewed (see the module docstring)."""
        if self.config.auto_renew:
            base = max(self.last_activity, self.renewed_at or self.created_at)
        else:
            base = self.renewed_at if self.renewed_at is not None else self.created_at
        return min(base + self.config.timeout_minutes * _MINUTE, self.cap)

    def status(self, now: float) -> SessionStatus:
        """``ended``, ``expired`` or ``active`` at ``now``."""
        if self.ended_at is not None:
            return "ended"
        if now >= self.expires_at:
            return "expired"
        return "active"

    def involves(self, did: str | None) -> bool:
        """Whether ``did`` is one of the two participants."""
        return did == self.initiator or did == self.peer

    def other(self, did: str) -> str:
        """The participant that is not ``did``."""
        return self.peer if did == self.initiator else self.initiator

    def remaining(self, now: float) -> float:
        """Seconds until expiry (0 once inactive)."""
        if self.status(now) != "active":
            return 0.0
        return max(0.0, self.expires_at - now)

    def near_expiration(self, now: float) -> bool:
        """``0 < remaining <= warning threshold`` (and the session is active)."""
        remaining = self.remaining(now)
        return 0 < remaining <= self.config.warning_threshold_minutes * _MINUTE

    def warning_due(self, now: float) -> bool:
        """Whether ``session.expiring`` should be announced now (once per approach)."""
        return self.near_expiration(now) and warning_rearmed(
            self.warned_for, self.expires_at, self.config.warning_threshold_minutes * _MINUTE
        )

    def can_renew(self, now: float) -> bool:
        """Whether a renewal at ``now`` is possible (active, expiry short of the cap)."""
        return self.status(now) == "active" and self.expires_at < self.cap

    def to_api(self, now: float) -> dict[str, Any]:
        """The session as the API shows it (times in epoch milliseconds)."""
        status = self.status(now)
        return {
            "id": self.id,
            "initiator": self.initiator,
            "peer": self.peer,
            "createdAt": _ms(self.created_at),
            "lastActivity": _ms(self.last_activity),
            "expiresAt": _ms(self.expires_at),
            "timeoutConfig": self.config.to_json(),
            "renewalCount": self.renewal_count,
            "timeRemaining": _ms(self.remaining(now)),
            "isNearExpiration": self.near_expiration(now),
            "status": status,
            "endedAt": None if self.ended_at is None else _ms(self.ended_at),
            "endReason": self.end_reason,
            "metadata": dict(self.metadata),
        }

    # -- transitions (pure: each returns the next state or raises) ----------------------

    def require_active(self, now: float) -> None:
        """Raise :class:`SessionEnded` or :class:`SessionExpired` unless active."""
        status = self.status(now)
        if status == "ended":
            raise SessionEnded(f"session {self.id} has ended")
        if status == "expired":
            raise expired_error(self)

    def renewed(self, now: float) -> Session:
        """An explicit renewal (works with autoRenew off).

        Raises :class:`SessionEnded`/:class:`SessionExpired` for an inactive session and
        :class:`SessionRenewalFailed` once the expiry has reached the cap.
        """
        self.require_active(now)
        if not self.can_renew(now):
            raise SessionRenewalFailed(
                f"session {self.id} has reached its maximum duration of "
                f"{self.config.max_duration_minutes} minutes and cannot be renewed"
            )
        return dataclasses.replace(
            self,
            last_activity=max(self.last_activity, now),
            renewed_at=now,
            renewal_count=self.renewal_count + 1,
            warned_for=None,
        )

    def heartbeat(self, now: float) -> tuple[Session, bool]:
        """A heartbeat: records activity and, with autoRenew, renews (never raises for
        the cap: a session at its cap just records the activity). Returns the new state
        and whether it was a renewal."""
        self.require_active(now)
        if self.config.auto_renew and self.can_renew(now):
            return self.renewed(now), True
        return dataclasses.replace(self, last_activity=max(self.last_activity, now)), False

    def touched(self, now: float) -> tuple[Session, bool]:
        """Message activity: moves ``last_activity``; returns the new state and whether
        it counts as a renewal (autoRenew, expiry moved, and the previous counted renewal
        at least :data:`ACTIVITY_RENEWAL_INTERVAL` seconds ago)."""
        # The hot path (one call per message): no dataclasses.replace, whose validation
        # would cost more than the rest of the check.
        if now <= self.last_activity:
            return self, False
        moved = self._evolve(last_activity=now)
        if not self.config.auto_renew or moved.expires_at <= self.expires_at:
            return moved, False
        last_counted = self.renewed_at if self.renewed_at is not None else self.created_at
        if now - last_counted < ACTIVITY_RENEWAL_INTERVAL:
            return moved, False
        return (
            self._evolve(
                last_activity=now,
                renewed_at=now,
                renewal_count=self.renewal_count + 1,
                warned_for=None,
            ),
            True,
        )

    def _evolve(self, **changes: Any) -> Session:
        """A copy with ``changes``, skipping validation: only for values derived from
        this (valid) session and the clock."""
        new = object.__new__(Session)
        for name in _FIELDS:
            object.__setattr__(new, name, changes[name] if name in changes else getattr(self, name))
        return new

    def with_timeout(self, timeout_minutes: object, now: float) -> Session:
        """An explicit timeout change: validated strictly (:func:`validate_timeout`), the
        expiry recomputed. Not a renewal. Raises for an inactive session."""
        minutes = validate_timeout(timeout_minutes)
        self.require_active(now)
        return dataclasses.replace(self, config=self.config.with_timeout(minutes))

    def ended(self, now: float, *, reason: str, by: str | None) -> Session:
        """End the session (``by``: the participant's DID, ``None`` for the operator)."""
        check_end_reason(reason)
        self.require_active(now)
        return dataclasses.replace(
            self, ended_at=now, end_reason=reason, ended_by=by, ended_announced=False
        )


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Session))


def warning_rearmed(warned_for: float | None, expires_at: float, threshold: float) -> bool:
    """Whether a ``session.expiring`` announcement may be made again: none was made
    (``warned_for`` is ``None``), or the expiry moved by more than the warning
    ``threshold`` (seconds) since the one made for ``warned_for``."""
    return warned_for is None or abs(expires_at - warned_for) > threshold


def expired_error(session: Session) -> SessionExpired:
    """A :class:`SessionExpired` carrying ``session_id`` and ``expires_at`` (epoch ms)."""
    error = SessionExpired(f"session {session.id} has expired")
    # Structured attributes for the API layer (details.expiresAt).
    setattr(error, "session_id", session.id)  # noqa: B010 - errors.py declares none
    setattr(error, "expires_at", _ms(session.expires_at))  # noqa: B010
    return error


@dataclass(frozen=True, slots=True)
class SessionMessage:
    """Envelope metadata of one message sent in a session - never its content."""

    session_id: str
    message_id: str
    sender: str
    recipient: str
    type: str
    size: int
    timestamp_ms: int

    def __post_init__(self) -> None:
        check_session_id(self.session_id)
        if not isinstance(self.message_id, str) or not _MESSAGE_ID_RE.fullmatch(self.message_id):
            raise ValueError("a message id is 1-64 lower-case hex digits")
        _check_did("sender", self.sender)
        _check_did("recipient", self.recipient)
        if not isinstance(self.type, str) or not 1 <= len(self.type) <= 64:
            raise ValueError("a message type is 1-64 characters")
        # type() is: a bool is not a size. Straight-line checks: this runs per message.
        if type(self.size) is not int or self.size < 0:
            raise ValueError("message size must be a non-negative integer")
        if type(self.timestamp_ms) is not int or self.timestamp_ms < 0:
            raise ValueError("message timestamp_ms must be a non-negative integer")

    def to_api(self) -> dict[str, Any]:
        """The message as the API lists it."""
        return {
            "id": self.message_id,
            "sessionId": self.session_id,
            "sender": self.sender,
            "recipient": self.recipient,
            "type": self.type,
            "size": self.size,
            "createdAt": self.timestamp_ms,
        }
