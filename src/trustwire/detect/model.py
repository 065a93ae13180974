"""The detection data model: alerts, their kinds and severities, and detector thresholds.

An :class:`Alert` is a frozen value holding metadata only: its ``details`` accept
``str``, ``int``, ``float`` and ``bool`` values and refuse ``bytes`` outright, so message
content or key material cannot slip into an alert by accident. It serialises to one line
of strict JSON (:meth:`Alert.to_json`) and back (:meth:`Alert.from_json`).

:class:`DetectorConfig` holds every threshold with documented defaults; it is built
from a plain mapping (:meth:`DetectorConfig.from_mapping`) so a policy-file section can
carry it, and every bad value is a :class:`~trustwire.errors.ConfigurationError` that
names the setting. No I/O here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NewType, Protocol, runtime_checkable

from trustwire.crypto.random import random_bytes
from trustwire.errors import ConfigurationError
from trustwire.events import DetailValue

__all__ = [
    "Alert",
    "AlertId",
    "AlertKind",
    "AlertSink",
    "BurstThreshold",
    "DetectorConfig",
    "FanoutConfig",
    "RateBaselineConfig",
    "Severity",
    "new_alert_id",
]

AlertId = NewType("AlertId", str)


class AlertKind(StrEnum):
    """What a detector noticed. The string values are stable (logs, metrics, webhooks)."""

    AUTH_FAILURE_BURST = "auth_failure_burst"
    REPLAY_ATTEMPTS = "replay_attempts"
    DENIAL_SPIKE = "denial_spike"
    RATE_LIMIT_STORM = "rate_limit_storm"
    RATE_ANOMALY = "rate_anomaly"
    FANOUT = "fanout"


class Severity(StrEnum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


def new_alert_id() -> AlertId:
    """A fresh random alert id (24 hex digits) from trustwire's one random source."""
    return AlertId(random_bytes(12).hex())


def _check_detail(key: object, value: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"Alert.details keys must be str, not {type(key).__name__}")
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"Alert.details[{key!r}] is bytes; alerts carry metadata only")
    if not isinstance(value, str | int | float):  # bool is an int
        raise TypeError(
            f"Alert.details[{key!r}] must be str, int, float or bool, not {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Alert.details[{key!r}] must be a finite number")


_ALERT_FIELDS = ("id", "kind", "severity", "time", "agent", "summary", "details")


@dataclass(frozen=True, slots=True)
class Alert:
    """One anomaly worth a human's attention.

    ``agent`` is the DID the alert is about when one agent is to blame (``None`` for
    unauthenticated sources and stream-wide storms), ``summary`` one human-readable line,
    ``details`` the numbers behind it (counts, window, threshold, source address, ...).
    """

    id: AlertId
    kind: AlertKind
    severity: Severity
    time: float
    summary: str
    agent: str | None = None
    details: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", AlertKind(self.kind))
        object.__setattr__(self, "severity", Severity(self.severity))
        if not isinstance(self.id, str) or not self.id:
            raise TypeError("Alert.id must be a non-empty str")
        if isinstance(self.time, bool) or not isinstance(self.time, int | float):
            raise TypeError(f"Alert.time must be a number, not {type(self.time).__name__}")
        if not math.isfinite(self.time):
            raise ValueError("Alert.time must be a finite number")
        if not isinstance(self.summary, str):
            raise TypeError("Alert.summary must be a str")
        if self.agent is not None and not isinstance(self.agent, str):
            raise TypeError("Alert.agent must be a str or None")
        if not isinstance(self.details, Mapping):
            raise TypeError("Alert.details must be a mapping")
        copied: dict[str, DetailValue] = {}
        for key, value in self.details.items():
            _check_detail(key, value)
            copied[key] = value
        object.__setattr__(self, "details", MappingProxyType(copied))

    def to_dict(self) -> dict[str, Any]:
        """The alert as a JSON-ready dict."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "severity": self.severity.value,
            "time": self.time,
            "agent": self.agent,
            "summary": self.summary,
            "details": dict(self.details),
        }

    def to_json(self) -> str:
        """Serialise to one line of strict JSON (the webhook body, one ``alerts.jsonl``
        line)."""
        return json.dumps(
            self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Alert:
        """Parse what :meth:`to_json` produced; raises :class:`ValueError` otherwise."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not a JSON alert: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("a serialised alert must be a JSON object")
        unknown = sorted(set(data) - set(_ALERT_FIELDS))
        if unknown:
            raise ValueError(f"unknown alert field(s): {', '.join(unknown)}")
        missing = [
            name for name in ("id", "kind", "severity", "time", "summary") if name not in data
        ]
        if missing:
            raise ValueError(f"a serialised alert needs {', '.join(missing)}")
        try:
            return cls(
                id=AlertId(data["id"]),
                kind=AlertKind(data["kind"]),
                severity=Severity(data["severity"]),
                time=data["time"],
                summary=data["summary"],
                agent=data.get("agent"),
                details=data.get("details") or {},
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid alert: {exc}") from None


@runtime_checkable
class AlertSink(Protocol):
    """Receives alerts. ``send`` must not block: it runs on the event loop."""

    def send(self, alert: Alert) -> None:
        """Accept one alert."""


# -- configuration -----------------------------------------------------------------------


def _number(section: str, name: str, value: object, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "an integer" if integer else "a number"
        raise ConfigurationError(f"{section}.{name} must be {kind}")
    if integer and not isinstance(value, int):
        raise ConfigurationError(f"{section}.{name} must be an integer")
    if not math.isfinite(value):
        raise ConfigurationError(f"{section}.{name} must be finite")
    return value


def _positive(section: str, name: str, value: float) -> None:
    if value <= 0:
        raise ConfigurationError(f"{section}.{name} must be greater than 0")


def _apply(section: str, default: Any, data: object) -> Any:
    """Return ``default`` (a config dataclass) with the numeric fields in ``data``."""
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{section} must be a mapping")
    known = {f.name: f for f in fields(default)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigurationError(f"{section}: unknown setting(s): {', '.join(unknown)}")
    changes: dict[str, Any] = {}
    for name, value in data.items():
        integer = isinstance(getattr(default, name), int)
        number = _number(section, name, value, integer=integer)
        changes[name] = int(number) if integer else float(number)
    try:
        return replace(default, **changes)
    except ValueError as exc:
        raise ConfigurationError(f"{section}: {exc}") from None


@dataclass(frozen=True, slots=True)
class BurstThreshold:
    """Alert when ``count`` events fall within ``window`` seconds."""

    count: int
    window: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError("count must be an integer of at least 1")
        if not math.isfinite(self.window) or self.window <= 0:
            raise ValueError("window must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class RateBaselineConfig:
    """The per-agent message-rate baseline.

    The baseline is an exponentially weighted moving average (smoothing ``alpha``) of an
    agent's messages per second (``message.accepted`` + ``message.queued``), idle
    seconds included. For the first ``warmup`` seconds after the detector first sees an
    agent it only learns (the average is a plain mean then). Afterwards it alerts when
    the last 5 s average exceeds ``max(factor * baseline, floor)`` or the current second
    exceeds ``max(burst_factor * baseline, burst_floor)``. Seconds over the 5-s limit
    are not learned, so a sustained flood keeps looking like one.
    """

    factor: float = 10.0
    floor: float = 20.0
    burst_factor: float = 30.0
    burst_floor: float = 100.0
    alpha: float = 0.05
    warmup: float = 30.0

    def __post_init__(self) -> None:
        for name in ("factor", "floor", "burst_factor", "burst_floor"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if not 0 < self.alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if not math.isfinite(self.warmup) or self.warmup < 0:
            raise ValueError("warmup must be a non-negative number of seconds")


@dataclass(frozen=True, slots=True)
class FanoutConfig:
    """Alert when an agent messages ``count`` peers it had never messaged before within
    ``window`` seconds. The first ``warmup`` seconds after the detector first sees an
    agent only learn its peers; at most ``known_peers`` peers are remembered per agent
    (the least recently messaged is forgotten first)."""

    count: int = 20
    window: float = 60.0
    warmup: float = 60.0
    known_peers: int = 4096

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("count must be at least 1")
        if not math.isfinite(self.window) or self.window <= 0:
            raise ValueError("window must be a positive number of seconds")
        if not math.isfinite(self.warmup) or self.warmup < 0:
            raise ValueError("warmup must be a non-negative number of seconds")
        if self.known_peers < self.count:
            raise ValueError("known_peers must be at least count")


_BURST_SECTIONS = (
    "auth_failures",
    "auth_failures_per_source",
    "replays",
    "denials",
    "rate_limited",
)
_TOP_LEVEL_NUMBERS = ("cooldown", "idle_timeout", "max_tracked")


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Every detector threshold, with defaults meant for a small deployment.

    - ``auth_failures``: ``auth.failure`` events overall (default 50 in 10 s);
    - ``auth_failures_per_source``: per source address (the host part of the event's
      ``address`` detail) and per agent DID (default 10 in 10 s);
    - ``replays``: ``replay.detected`` + ``timestamp.stale`` overall (default 10 in 10 s);
    - ``denials``: ``message.denied`` per agent (default 20 in 10 s);
    - ``rate_limited``: ``rate.limited`` overall (default 100 in 10 s);
    - ``rate``: the per-agent baseline (:class:`RateBaselineConfig`);
    - ``fanout``: new peers per agent (:class:`FanoutConfig`);
    - ``cooldown``: seconds between two alerts of one kind about one key (default 60);
    - ``max_tracked``: agents/addresses tracked per detector (default 10,000);
    - ``idle_timeout``: seconds after which an idle agent/address is forgotten
      (default 900; its rate baseline and known peers are learned again);
    - ``disabled``: alert kinds not to run.

    :meth:`from_mapping` reads the same names from a policy-file section.
    """

    auth_failures: BurstThreshold = BurstThreshold(50, 10.0)
    auth_failures_per_source: BurstThreshold = BurstThreshold(10, 10.0)
    replays: BurstThreshold = BurstThreshold(10, 10.0)
    denials: BurstThreshold = BurstThreshold(20, 10.0)
    rate_limited: BurstThreshold = BurstThreshold(100, 10.0)
    rate: RateBaselineConfig = RateBaselineConfig()
    fanout: FanoutConfig = FanoutConfig()
    cooldown: float = 60.0
    max_tracked: int = 10_000
    idle_timeout: float = 900.0
    disabled: frozenset[AlertKind] = frozenset()

    def __post_init__(self) -> None:
        if not math.isfinite(self.cooldown) or self.cooldown < 0:
            raise ValueError("cooldown must be a non-negative number of seconds")
        if self.max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        if not math.isfinite(self.idle_timeout) or self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be a positive number of seconds")
        object.__setattr__(self, "disabled", frozenset(AlertKind(k) for k in self.disabled))

    def enabled(self, kind: AlertKind) -> bool:
        """Whether detectors of ``kind`` run."""
        return kind not in self.disabled

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> DetectorConfig:
        """Build a config from a mapping (a parsed policy-file section).

        Unknown names, non-numbers (booleans included) and out-of-range values raise
        :class:`~trustwire.errors.ConfigurationError`; omitted names keep their defaults.
        Example: ``{"denials": {"count": 5}, "rate": {"factor": 8}, "cooldown": 30,
        "disabled": ["fanout"]}``.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError("anomaly detection settings must be a mapping")
        known = set(_BURST_SECTIONS) | set(_TOP_LEVEL_NUMBERS) | {"rate", "fanout", "disabled"}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ConfigurationError(f"anomaly detection: unknown setting(s): {', '.join(unknown)}")
        default = cls()
        changes: dict[str, Any] = {}
        for name in _BURST_SECTIONS:
            if name in data:
                changes[name] = _apply(name, getattr(default, name), data[name])
        for name in ("rate", "fanout"):
            if name in data:
                changes[name] = _apply(name, getattr(default, name), data[name])
        for name in _TOP_LEVEL_NUMBERS:
            if name in data:
                integer = name == "max_tracked"
                number = _number("anomaly detection", name, data[name], integer=integer)
                if name != "cooldown":
                    _positive("anomaly detection", name, number)
                changes[name] = int(number) if integer else float(number)
        if "disabled" in data:
            raw = data["disabled"]
            if isinstance(raw, str) or not isinstance(raw, Iterable):
                raise ConfigurationError("disabled must be a list of alert kinds")
            kinds: set[AlertKind] = set()
            for item in raw:
                try:
                    kinds.add(AlertKind(item))
                except ValueError:
                    names = ", ".join(k.value for k in AlertKind)
                    raise ConfigurationError(
                        f"disabled: unknown alert kind {item!r} (known: {names})"
                    ) from None
            changes["disabled"] = frozenset(kinds)
        try:
            return replace(default, **changes)
        except ValueError as exc:
            raise ConfigurationError(f"anomaly detection: {exc}") from None

    def to_mapping(self) -> dict[str, object]:
        """The config as plain data; ``from_mapping(c.to_mapping()) == c``."""
        out: dict[str, object] = {}
        for name in (*_BURST_SECTIONS, "rate", "fanout"):
            value = getattr(self, name)
            out[name] = {f.name: getattr(value, f.name) for f in fields(value)}
        for name in _TOP_LEVEL_NUMBERS:
            out[name] = getattr(self, name)
        out["disabled"] = sorted(kind.value for kind in self.disabled)
        return out
