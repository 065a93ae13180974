"""Anomaly detectors over the security-event stream (sans-I/O).

Each detector consumes :class:`~trustwire.events.SecurityEvent` objects through
``observe(event) -> list[Alert]`` and keeps a little state per agent or address. A
:class:`DetectorSet` runs every enabled detector and hands the alerts to alert sinks
(:mod:`trustwire.detect.alerts`); it is itself an ``EventSink``, so it can be attached to
an :class:`~trustwire.events.EventStream` directly.

Invariants:

- **Sans-I/O.** No sockets, threads, ``asyncio`` or wall clock in here. Time is the
  ``time`` of the events (the coordinator's injected clock); an event older than the
  newest one seen is treated as happening at the newest time, so a clock step backwards
  cannot break a window. :meth:`DetectorSet.sweep` takes ``now`` explicitly.
- **Bounded memory.** Every per-agent or per-address table holds at most
  ``DetectorConfig.max_tracked`` keys (least recently seen evicted first) and forgets keys
  idle for ``idle_timeout`` seconds. Windows keep at most ``count`` timestamps; the
  fan-out detector remembers at most ``known_peers`` peers per agent.
- **One alert per storm.** Every alert kind has a cooldown per key (``cooldown``
  seconds): while it runs, further threshold crossings are counted and reported in the
  next alert's ``suppressed`` detail instead of raising new alerts.
- **Metadata only.** Alerts hold counts, ids, DIDs, addresses and reasons copied from
  events, never message content or key material.

The alert type and the thresholds live in :mod:`trustwire.detect.model`; the thresholds
are documented on :class:`~trustwire.detect.model.DetectorConfig` and in
``docs/DETECTION.md``.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Generic, Protocol, TypeVar, runtime_checkable

from trustwire.detect.model import (
    Alert,
    AlertKind,
    AlertSink,
    BurstThreshold,
    DetectorConfig,
    RateBaselineConfig,
    Severity,
    new_alert_id,
)
from trustwire.events import DetailValue, EventKind, SecurityEvent

__all__ = [
    "AuthFailureDetector",
    "DenialSpikeDetector",
    "Detector",
    "DetectorSet",
    "FanoutDetector",
    "RateAnomalyDetector",
    "RateLimitStormDetector",
    "ReplayAttemptDetector",
]

_log = logging.getLogger(__name__)


# -- bounded per-key state ---------------------------------------------------------------


class _Stateful(Protocol):
    last_seen: float


S = TypeVar("S", bound=_Stateful)


class _Tracked(Generic[S]):
    """A table of per-key state: at most ``capacity`` keys, idle ones swept away.

    Keys are kept in least-recently-seen order (``move_to_end`` on every touch), so both
    the capacity eviction and the idle sweep only ever look at the front.
    """

    __slots__ = ("_capacity", "_factory", "_idle", "_items", "_next_sweep", "evicted")

    def __init__(self, factory: Callable[[float], S], *, capacity: int, idle: float) -> None:
        self._items: collections.OrderedDict[str, S] = collections.OrderedDict()
        self._factory = factory
        self._capacity = capacity
        self._idle = idle
        self._next_sweep = -math.inf
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def peek(self, key: str) -> S | None:
        """The state of ``key`` without marking it as seen."""
        return self._items.get(key)

    def touch(self, key: str, now: float) -> S:
        if now >= self._next_sweep:
            self.sweep(now)
        items = self._items
        state = items.get(key)
        if state is None:
            if len(items) >= self._capacity:
                items.popitem(last=False)
                self.evicted += 1
            state = self._factory(now)
            items[key] = state
        else:
            items.move_to_end(key)
        state.last_seen = now
        return state

    def sweep(self, now: float) -> None:
        """Forget keys idle for longer than the idle timeout."""
        items = self._items
        horizon = now - self._idle
        while items:
            key = next(iter(items))
            if items[key].last_seen >= horizon:
                break
            del items[key]
            self.evicted += 1
        # Sweeping is O(evicted); doing it at most a few times per idle period keeps the
        # per-event cost flat.
        self._next_sweep = now + self._idle / 4


class _Clock:
    """The newest event time seen; earlier event times are clamped to it."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = -math.inf

    def advance(self, time: float) -> float:
        if time > self.now:
            self.now = time
        return self.now


class _Cooldown:
    """When a key last alerted, and how many crossings were suppressed since."""

    __slots__ = ("last_alert", "suppressed")

    def __init__(self) -> None:
        self.last_alert = -math.inf
        self.suppressed = 0

    def ready(self, now: float, cooldown: float) -> bool:
        """True (and the cooldown restarted) if an alert may be raised now."""
        if now - self.last_alert >= cooldown:
            self.last_alert = now
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count


_Hit = tuple[float, str | None, str | None]  # (time, agent, reason)


class _Burst:
    """The last ``count`` hits of one key, and its cooldown."""

    __slots__ = ("cooldown", "hits", "last_seen")

    def __init__(self, count: int, now: float) -> None:
        self.hits: collections.deque[_Hit] = collections.deque(maxlen=count)
        self.cooldown = _Cooldown()
        self.last_seen = now

    def hit(self, now: float, agent: str | None, reason: str | None, window: float) -> bool:
        """Record one hit; True when the last ``count`` hits span at most ``window``."""
        hits = self.hits
        hits.append((now, agent, reason))
        return len(hits) == hits.maxlen and now - hits[0][0] <= window


def _most_common(values: Iterable[str | None]) -> str | None:
    counter = collections.Counter(v for v in values if v is not None)
    if not counter:
        return None
    return counter.most_common(1)[0][0]


def _burst_details(
    burst: _Burst, threshold: BurstThreshold, scope: str, **extra: DetailValue
) -> dict[str, DetailValue]:
    hits = burst.hits
    agents = {agent for _, agent, _ in hits if agent is not None}
    details: dict[str, DetailValue] = {
        "scope": scope,
        "count": len(hits),
        "threshold": threshold.count,
        "window": threshold.window,
        "span": round(hits[-1][0] - hits[0][0], 6),
        "first_time": hits[0][0],
        "agents": len(agents),
        "suppressed": burst.cooldown.take_suppressed(),
    }
    reason = _most_common(reason for _, _, reason in hits)
    if reason is not None:
        details["top_reason"] = reason
    details.update(extra)
    return details


def _single_agent(burst: _Burst) -> str | None:
    agents = {agent for _, agent, _ in burst.hits}
    if len(agents) == 1:
        return next(iter(agents))
    return None


# -- detectors ---------------------------------------------------------------------------


@runtime_checkable
class Detector(Protocol):
    """Consumes events, returns the alerts they trigger (usually none)."""

    kinds: frozenset[EventKind]
    """The event kinds this detector reads; others are never passed to it."""

    def observe(self, event: SecurityEvent) -> list[Alert]:
        """Account for ``event``; return any alerts it triggers."""

    def sweep(self, now: float) -> None:
        """Forget state idle for longer than the configured idle timeout."""


class AuthFailureDetector:
    """Bursts of ``auth.failure``: overall, per source address and per agent DID."""

    kind = AlertKind.AUTH_FAILURE_BURST
    kinds = frozenset({EventKind.AUTH_FAILURE})

    def __init__(self, config: DetectorConfig) -> None:
        self._overall_threshold = config.auth_failures
        self._source_threshold = config.auth_failures_per_source
        self._cooldown = config.cooldown
        self._clock = _Clock()
        self._overall = _Burst(config.auth_failures.count, 0.0)
        count = config.auth_failures_per_source.count
        self._sources: _Tracked[_Burst] = _Tracked(
            lambda now: _Burst(count, now), capacity=config.max_tracked, idle=config.idle_timeout
        )

    @property
    def tracked(self) -> int:
        """How many addresses and agents are tracked now."""
        return len(self._sources)

    def observe(self, event: SecurityEvent) -> list[Alert]:
        """Count one failure overall and against its source address and agent."""
        if event.kind is not EventKind.AUTH_FAILURE:
            return []
        now = self._clock.advance(event.time)
        alerts: list[Alert] = []
        agent, reason = event.agent, event.reason
        address = event.details.get("address")
        host = _host(address) if isinstance(address, str) else None
        threshold = self._source_threshold
        for key, scope in ((host, "address"), (agent, "agent")):
            if key is None:
                continue
            burst = self._sources.touch(f"{scope}:{key}", now)
            if burst.hit(now, agent, reason, threshold.window) and burst.cooldown.ready(
                now, self._cooldown
            ):
                alerts.append(
                    Alert(
                        id=new_alert_id(),
                        kind=self.kind,
                        severity=Severity.WARNING,
                        time=now,
                        agent=agent if scope == "agent" else _single_agent(burst),
                        summary=(
                            f"{len(burst.hits)} authentication failures from {scope} {key} "
                            f"within {threshold.window:g} s"
                        ),
                        details=_burst_details(burst, threshold, scope, source=key),
                    )
                )
        overall = self._overall
        if overall.hit(now, agent, reason, self._overall_threshold.window) and (
            overall.cooldown.ready(now, self._cooldown)
        ):
            alerts.append(
                Alert(
                    id=new_alert_id(),
                    kind=self.kind,
                    severity=Severity.CRITICAL,
                    time=now,
                    agent=None,
                    summary=(
                        f"{len(overall.hits)} authentication failures within "
                        f"{self._overall_threshold.window:g} s across all sources"
                    ),
                    details=_burst_details(overall, self._overall_threshold, "overall"),
                )
            )
        return alerts

    def sweep(self, now: float) -> None:
        """Forget idle sources."""
        self._sources.sweep(now)


def _host(address: str) -> str | None:
    """The host part of an ``ip:port`` address as the coordinator writes it."""
    if not address or address == "?":
        return None
    if address.startswith("["):  # [v6]:port
        end = address.find("]")
        return address[1:end] if end > 0 else address
    host, sep, port = address.rpartition(":")
    if sep and host and port.isdigit():
        return host
    return address


class _StreamBurstDetector:
    """A burst of some event kinds across the whole stream (one key, one cooldown)."""

    kind: AlertKind
    kinds: frozenset[EventKind]
    severity: Severity
    noun: str

    def __init__(self, threshold: BurstThreshold, cooldown: float) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = _Clock()
        self._burst = _Burst(threshold.count, 0.0)

    def observe(self, event: SecurityEvent) -> list[Alert]:
        """Count ``event`` if it is one of :attr:`kinds`; alert on a burst."""
        if event.kind not in self.kinds:
            return []
        now = self._clock.advance(event.time)
        burst = self._burst
        threshold = self._threshold
        if not (
            burst.hit(now, event.agent, event.reason, threshold.window)
            and burst.cooldown.ready(now, self._cooldown)
        ):
            return []
        agent = _single_agent(burst)
        who = f" from {agent}" if agent is not None else ""
        return [
            Alert(
                id=new_alert_id(),
                kind=self.kind,
                severity=self.severity,
                time=now,
                agent=agent,
                summary=f"{len(burst.hits)} {self.noun}{who} within {threshold.window:g} s",
                details=_burst_details(burst, threshold, "overall"),
            )
        ]

    def sweep(self, now: float) -> None:
        """Nothing to forget: the state is one bounded window."""


class ReplayAttemptDetector(_StreamBurstDetector):
    """Bursts of ``replay.detected`` and ``timestamp.stale`` across the stream."""

    kind = AlertKind.REPLAY_ATTEMPTS
    kinds = frozenset({EventKind.REPLAY_DETECTED, EventKind.TIMESTAMP_STALE})
    severity = Severity.CRITICAL
    noun = "replayed or stale frames"

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config.replays, config.cooldown)


class RateLimitStormDetector(_StreamBurstDetector):
    """Storms of ``rate.limited`` across the stream."""

    kind = AlertKind.RATE_LIMIT_STORM
    kinds = frozenset({EventKind.RATE_LIMITED})
    severity = Severity.WARNING
    noun = "rate-limited frames"

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config.rate_limited, config.cooldown)


class DenialSpikeDetector:
    """Spikes of ``message.denied`` per sending agent."""

    kind = AlertKind.DENIAL_SPIKE
    kinds = frozenset({EventKind.MESSAGE_DENIED})

    def __init__(self, config: DetectorConfig) -> None:
        self._threshold = config.denials
        self._cooldown = config.cooldown
        self._clock = _Clock()
        count = config.denials.count
        self._agents: _Tracked[_Burst] = _Tracked(
            lambda now: _Burst(count, now), capacity=config.max_tracked, idle=config.idle_timeout
        )

    @property
    def tracked(self) -> int:
        """How many agents are tracked now."""
        return len(self._agents)

    def observe(self, event: SecurityEvent) -> list[Alert]:
        """Count a denial against its agent; alert on a spike."""
        agent = event.agent
        if event.kind is not EventKind.MESSAGE_DENIED or agent is None:
            return []
        now = self._clock.advance(event.time)
        burst = self._agents.touch(agent, now)
        threshold = self._threshold
        if not (
            burst.hit(now, agent, event.reason, threshold.window)
            and burst.cooldown.ready(now, self._cooldown)
        ):
            return []
        return [
            Alert(
                id=new_alert_id(),
                kind=self.kind,
                severity=Severity.WARNING,
                time=now,
                agent=agent,
                summary=(
                    f"{len(burst.hits)} denied messages from {agent} within {threshold.window:g} s"
                ),
                details=_burst_details(burst, threshold, "agent"),
            )
        ]

    def sweep(self, now: float) -> None:
        """Forget idle agents."""
        self._agents.sweep(now)


_TRAFFIC = frozenset({EventKind.MESSAGE_ACCEPTED, EventKind.MESSAGE_QUEUED})
_RECENT = 4  # completed seconds that, with the current one, make the 5-s window


class _Rate:
    """One agent's per-second counts and learned baseline."""

    __slots__ = (
        "baseline",
        "burst_limit",
        "cooldown",
        "count",
        "first_second",
        "last_seen",
        "learned",
        "recent",
        "recent_sum",
        "second",
        "sustained_limit",
    )

    def __init__(self, now: float, config: RateBaselineConfig) -> None:
        self.last_seen = now
        self.second = math.floor(now)
        self.first_second = self.second
        self.count = 0
        self.recent: collections.deque[int] = collections.deque(maxlen=_RECENT)
        self.recent_sum = 0
        self.baseline = 0.0
        self.learned = 0
        self.sustained_limit = config.floor
        self.burst_limit = config.burst_floor
        self.cooldown = _Cooldown()


class RateAnomalyDetector:
    """An agent sending far above its own learned per-second baseline.

    See :class:`RateBaselineConfig` for the model. The per-event cost is a table lookup,
    an increment and two comparisons; the baseline is updated once per second of the
    agent's traffic.
    """

    kind = AlertKind.RATE_ANOMALY
    kinds = _TRAFFIC

    def __init__(self, config: DetectorConfig) -> None:
        rate = config.rate
        self._config = rate
        self._cooldown = config.cooldown
        self._clock = _Clock()
        self._agents: _Tracked[_Rate] = _Tracked(
            lambda now: _Rate(now, rate), capacity=config.max_tracked, idle=config.idle_timeout
        )

    @property
    def tracked(self) -> int:
        """How many agents are tracked now."""
        return len(self._agents)

    def baseline(self, agent: str) -> float | None:
        """The learned messages-per-second baseline of ``agent`` (``None`` if untracked)."""
        state = self._agents.peek(agent)
        return None if state is None else state.baseline

    def observe(self, event: SecurityEvent) -> list[Alert]:
        """Count one message against its sender; alert when far above its baseline."""
        agent = event.agent
        if event.kind not in _TRAFFIC or agent is None:
            return []
        now = self._clock.advance(event.time)
        state = self._agents.touch(agent, now)
        second = math.floor(now)
        if second != state.second:
            self._roll(state, second)
        # A routine event may stand for several messages (the coordinator emits one per
        # read and recipient, with a ``count``).
        count = event.details.get("count", 1)
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            state.count += count
        else:
            state.count += 1
        config = self._config
        if second - state.first_second < config.warmup:
            return []
        count = state.count
        if count > state.burst_limit:
            window, rate, limit = "1s", float(count), state.burst_limit
        elif state.recent_sum + count > 5 * state.sustained_limit:
            window, rate, limit = "5s", (state.recent_sum + count) / 5, state.sustained_limit
        else:
            return []
        if not state.cooldown.ready(now, self._cooldown):
            return []
        return [
            Alert(
                id=new_alert_id(),
                kind=self.kind,
                severity=Severity.WARNING,
                time=now,
                agent=agent,
                summary=(
                    f"{agent} is sending {rate:.1f} messages/s over {window}, "
                    f"{rate / max(state.baseline, 1e-9):.0f}x its baseline of "
                    f"{state.baseline:.2f}/s"
                    if state.baseline > 0
                    else f"{agent} is sending {rate:.1f} messages/s over {window} after being idle"
                ),
                details={
                    "window": window,
                    "rate": round(rate, 3),
                    "limit": round(limit, 3),
                    "baseline": round(state.baseline, 6),
                    "rate_1s": count,
                    "rate_5s": round((state.recent_sum + count) / 5, 3),
                    "suppressed": state.cooldown.take_suppressed(),
                },
            )
        ]

    def _roll(self, state: _Rate, second: int) -> None:
        """Close the agent's current second (and any idle ones) and update its limits."""
        config = self._config
        closed = state.count
        gap = second - state.second - 1  # idle seconds in between
        in_warmup = state.second - state.first_second < config.warmup
        if in_warmup or closed <= state.sustained_limit:
            state.learned += 1
            # A plain mean until 1/alpha seconds are learned, then the EWMA: the early
            # baseline is not biased towards zero.
            weight = max(config.alpha, 1.0 / state.learned)
            state.baseline += weight * (closed - state.baseline)
        if gap > 0:
            mean_steps = min(gap, max(0, math.ceil(1.0 / config.alpha) - state.learned))
            for _ in range(mean_steps):
                state.learned += 1
                state.baseline -= state.baseline / state.learned
            rest = gap - mean_steps
            if rest:
                state.learned += rest
                state.baseline *= (1.0 - config.alpha) ** rest
        recent = state.recent
        recent.append(closed)
        for _ in range(min(gap, _RECENT)):
            recent.append(0)
        state.recent_sum = sum(recent)
        state.second = second
        state.count = 0
        state.sustained_limit = max(config.factor * state.baseline, config.floor)
        state.burst_limit = max(config.burst_factor * state.baseline, config.burst_floor)

    def sweep(self, now: float) -> None:
        """Forget idle agents (their baseline is learned again when they return)."""
        self._agents.sweep(now)


class _Peers:
    """The peers one agent has messaged, and when it first messaged recent new ones."""

    __slots__ = ("cooldown", "first_seen", "known", "last_seen", "new")

    def __init__(self, now: float, count: int) -> None:
        self.last_seen = now
        self.first_seen = now
        self.known: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.new: collections.deque[float] = collections.deque(maxlen=count)
        self.cooldown = _Cooldown()


class FanoutDetector:
    """An agent suddenly messaging many peers it never messaged before."""

    kind = AlertKind.FANOUT
    kinds = _TRAFFIC

    def __init__(self, config: DetectorConfig) -> None:
        fanout = config.fanout
        self._config = fanout
        self._cooldown = config.cooldown
        self._clock = _Clock()
        self._agents: _Tracked[_Peers] = _Tracked(
            lambda now: _Peers(now, fanout.count),
            capacity=config.max_tracked,
            idle=config.idle_timeout,
        )

    @property
    def tracked(self) -> int:
        """How many agents are tracked now."""
        return len(self._agents)

    def observe(self, event: SecurityEvent) -> list[Alert]:
        """Note the (agent, peer) pair; alert when new peers pile up within the window."""
        agent, peer = event.agent, event.peer
        if event.kind not in _TRAFFIC or agent is None or peer is None:
            return []
        now = self._clock.advance(event.time)
        state = self._agents.touch(agent, now)
        known = state.known
        if peer in known:
            known.move_to_end(peer)
            return []
        config = self._config
        if len(known) >= config.known_peers:
            known.popitem(last=False)
        known[peer] = None
        if now - state.first_seen < config.warmup:
            return []
        new = state.new
        new.append(now)
        if not (
            len(new) == new.maxlen
            and now - new[0] <= config.window
            and state.cooldown.ready(now, self._cooldown)
        ):
            return []
        return [
            Alert(
                id=new_alert_id(),
                kind=self.kind,
                severity=Severity.WARNING,
                time=now,
                agent=agent,
                summary=(f"{agent} messaged {len(new)} new peers within {config.window:g} s"),
                details={
                    "scope": "agent",
                    "new_peers": len(new),
                    "threshold": config.count,
                    "window": config.window,
                    "span": round(now - new[0], 6),
                    "known_peers": len(known),
                    "suppressed": state.cooldown.take_suppressed(),
                },
            )
        ]

    def sweep(self, now: float) -> None:
        """Forget idle agents (their peers are learned again when they return)."""
        self._agents.sweep(now)


_DETECTORS: tuple[tuple[AlertKind, Callable[[DetectorConfig], Detector]], ...] = (
    (AlertKind.AUTH_FAILURE_BURST, AuthFailureDetector),
    (AlertKind.REPLAY_ATTEMPTS, ReplayAttemptDetector),
    (AlertKind.DENIAL_SPIKE, DenialSpikeDetector),
    (AlertKind.RATE_LIMIT_STORM, RateLimitStormDetector),
    (AlertKind.RATE_ANOMALY, RateAnomalyDetector),
    (AlertKind.FANOUT, FanoutDetector),
)


class DetectorSet:
    """Runs every enabled detector over events and fans the alerts out to sinks.

    Use it as an ``EventSink`` (``stream.add_sink(detectors)``; the stream must include
    routine kinds, which the rate and fan-out detectors read) or feed it a subscription
    with :meth:`follow`. Each event reaches only the detectors that read its kind. A
    detector or sink that raises is counted and logged once; the event loop never sees
    the exception.
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        sinks: Iterable[AlertSink] = (),
        *,
        detectors: Iterable[Detector] | None = None,
    ) -> None:
        self.config = config if config is not None else DetectorConfig()
        if detectors is None:
            detectors = [
                make(self.config) for kind, make in _DETECTORS if self.config.enabled(kind)
            ]
        self._detectors: tuple[Detector, ...] = tuple(detectors)
        routes: dict[EventKind, list[Detector]] = {}
        for detector in self._detectors:
            for kind in detector.kinds:
                routes.setdefault(kind, []).append(detector)
        self._routes: dict[EventKind, tuple[Detector, ...]] = {
            kind: tuple(found) for kind, found in routes.items()
        }
        self._sinks: list[AlertSink] = list(sinks)
        self._failed: set[int] = set()
        self.alerts_raised: collections.Counter[AlertKind] = collections.Counter()
        """Alerts raised so far, by kind."""
        self.detector_errors = 0
        """How many times a detector raised (the event was skipped by that detector)."""
        self.sink_errors = 0
        """How many times an alert sink raised (the alert still reached the others)."""

    @property
    def detectors(self) -> tuple[Detector, ...]:
        """The detectors that run."""
        return self._detectors

    @property
    def sinks(self) -> tuple[AlertSink, ...]:
        """The alert sinks attached."""
        return tuple(self._sinks)

    def add_sink(self, sink: AlertSink) -> None:
        """Attach another alert sink."""
        self._sinks.append(sink)

    def remove_sink(self, sink: AlertSink) -> None:
        """Detach ``sink`` (no error if it was not attached)."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    def observe(self, event: SecurityEvent) -> list[Alert]:
        """Run the detectors that read ``event.kind``; send and return any alerts."""
        detectors = self._routes.get(event.kind)
        if detectors is None:
            return []
        alerts: list[Alert] = []
        for detector in detectors:
            try:
                found = detector.observe(event)
            except Exception:
                self.detector_errors += 1
                self._log_once(detector, "anomaly detector %r failed")
                continue
            if found:
                alerts.extend(found)
        for alert in alerts:
            self.publish(alert)
        return alerts

    def emit(self, event: SecurityEvent) -> None:
        """``EventSink`` entry point: :meth:`observe`, discarding the returned list."""
        self.observe(event)

    def publish(self, alert: Alert) -> None:
        """Hand ``alert`` to every sink (also usable for alerts raised elsewhere)."""
        self.alerts_raised[alert.kind] += 1
        for sink in self._sinks:
            try:
                sink.send(alert)
            except Exception:
                self.sink_errors += 1
                self._log_once(sink, "alert sink %r failed")

    async def follow(self, events: AsyncIterable[SecurityEvent]) -> None:
        """Observe every event of an async feed (e.g. ``stream.subscribe()``) until it
        ends."""
        async for event in events:
            self.observe(event)

    def sweep(self, now: float) -> None:
        """Forget agents and addresses idle for longer than ``config.idle_timeout``.

        Detectors also sweep by themselves as events arrive; call this from a timer to
        release memory when the stream is quiet.
        """
        for detector in self._detectors:
            detector.sweep(now)

    def close(self) -> None:
        """Close every sink that has a ``close()`` method (the event stream calls this)."""
        for sink in self._sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    _log.exception("closing alert sink %r failed", sink)

    async def aclose(self) -> None:
        """Close every sink, awaiting ``aclose()`` where a sink has one (webhooks drain
        their queue)."""
        for sink in self._sinks:
            aclose = getattr(sink, "aclose", None)
            close = getattr(sink, "close", None)
            try:
                if callable(aclose):
                    await aclose()
                elif callable(close):
                    close()
            except Exception:
                _log.exception("closing alert sink %r failed", sink)

    def _log_once(self, culprit: object, message: str) -> None:
        # Once per culprit, not once per event: a broken sink must not flood the log.
        if id(culprit) not in self._failed:
            self._failed.add(id(culprit))
            _log.exception(message, culprit)
