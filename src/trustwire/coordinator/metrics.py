"""Prometheus metrics for the coordinator.

:class:`CoordinatorMetrics` owns every collector, registered in its own
:class:`~prometheus_client.CollectorRegistry` (never the process-global one, so two
coordinators in one process — tests — do not collide). :class:`MetricsSink` keeps the
counters in step with the security-event stream (it is an ``EventSink``) and counts
alerts (it is also an ``AlertSink``); the coordinator sets the gauges and timings it
alone knows. :func:`serve_metrics` exposes ``/metrics`` over HTTP, on loopback unless
told otherwise. Every metric is documented in ``docs/DETECTION.md``.

Invariants:

- Label values come from closed sets (outcomes, event kinds, alert kinds, a fixed list
  of authentication-failure causes), never from DIDs, addresses or free-text reasons,
  so the number of time series is bounded whatever the traffic.
- Updating a metric takes a lock held for a few operations; ``MetricsSink.emit`` does a
  dictionary lookup and one or two increments per event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from trustwire.detect.model import Alert, AlertKind, Severity
from trustwire.events import EventKind, SecurityEvent

__all__ = [
    "AUTH_FAILURE_CAUSES",
    "LATENCY_BUCKETS",
    "OUTCOMES",
    "CoordinatorMetrics",
    "MetricsServer",
    "MetricsSink",
    "auth_failure_cause",
    "serve_metrics",
]

OUTCOMES: Final = ("forwarded", "queued", "duplicate", "denied", "rate_limited", "replay")
"""The values of ``trustwire_messages_total``'s ``outcome`` label."""

AUTH_FAILURE_CAUSES: Final = (
    "tls",
    "no_did",
    "not_enrolled",
    "revoked",
    "connection_limit",
    "renewal",
    "other",
)
"""The values of ``trustwire_auth_failures_total``'s ``cause`` label."""

LATENCY_BUCKETS: Final = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Histogram buckets (seconds) for frame processing time: 50 µs to 2.5 s."""

# The coordinator's auth.failure reasons, mapped to a closed set of label values. The
# match is on stable prefixes; an unknown reason counts as "other" rather than creating
# a new time series.
_CAUSE_PREFIXES: Final = (
    ("tls:", "tls"),
    ("no DID", "no_did"),
    ("DID not enrolled", "not_enrolled"),
    ("agent revoked", "revoked"),
    ("connection limit", "connection_limit"),
    ("renewal", "renewal"),
)


def _count_of(event: SecurityEvent) -> int:
    """How many messages a routine event stands for: its ``count`` detail (the
    coordinator emits one per read and recipient), else one."""
    count = event.details.get("count", 1)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def auth_failure_cause(reason: str | None) -> str:
    """The ``cause`` label for an ``auth.failure`` event's reason (one of
    :data:`AUTH_FAILURE_CAUSES`)."""
    if reason:
        for prefix, cause in _CAUSE_PREFIXES:
            if reason.startswith(prefix):
                return cause
    return "other"


class CoordinatorMetrics:
    """Every coordinator metric, in a dedicated registry (:attr:`registry`).

    Counters move through :class:`MetricsSink` (from events) and the ``count_*``
    methods; gauges through :meth:`set_connections` and :meth:`set_queue_depth`;
    latency through :meth:`observe_batch`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge(
            "trustwire_connections", "Authenticated agent connections open.", registry=r
        )
        self.queue_depth = Gauge(
            "trustwire_queue_depth",
            "Messages stored and not yet acknowledged by their recipients.",
            registry=r,
        )
        self.messages = Counter(
            "trustwire_messages_total",
            "Routed frames by outcome.",
            ["outcome"],
            registry=r,
        )
        self.denials = Counter(
            "trustwire_denials_total",
            "Refused sends: 'message' for message.denied events (policy, unknown or "
            "revoked recipient, size, sender mismatch), 'impersonation' for "
            "impersonation.attempt events.",
            ["kind"],
            registry=r,
        )
        self.replays = Counter(
            "trustwire_replays_total",
            "Frames refused by replay protection: 'replay' (id seen before) or "
            "'stale_timestamp' (outside the timestamp window).",
            ["kind"],
            registry=r,
        )
        self.auth_failures = Counter(
            "trustwire_auth_failures_total",
            "Failed connection authentications by cause.",
            ["cause"],
            registry=r,
        )
        self.events = Counter(
            "trustwire_security_events_total",
            "Security events by kind.",
            ["kind"],
            registry=r,
        )
        self.alerts = Counter(
            "trustwire_alerts_total",
            "Alerts raised by the anomaly detectors, by kind and severity.",
            ["kind", "severity"],
            registry=r,
        )
        self.frame_seconds = Histogram(
            "trustwire_frame_processing_seconds",
            "Time to process frames read in one go: scope='batch' per batch, "
            "scope='message' the batch time divided by its routed frames (one sample "
            "per batch).",
            ["scope"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Touch every label value so each series is exported (at 0) from the start:
        # rate() and absent() alerts then work before the first event of a kind.
        for outcome in OUTCOMES:
            self.messages.labels(outcome=outcome)
        for kind in ("message", "impersonation"):
            self.denials.labels(kind=kind)
        for kind in ("replay", "stale_timestamp"):
            self.replays.labels(kind=kind)
        for cause in AUTH_FAILURE_CAUSES:
            self.auth_failures.labels(cause=cause)
        for event_kind in EventKind:
            self.events.labels(kind=event_kind.value)
        for alert_kind in AlertKind:
            for severity in Severity:
                self.alerts.labels(kind=alert_kind.value, severity=severity.value)
        self._batch = self.frame_seconds.labels(scope="batch")
        self._per_message = self.frame_seconds.labels(scope="message")

    def count_messages(self, outcome: str, amount: int = 1) -> None:
        """Count ``amount`` routed frames with ``outcome`` (one of :data:`OUTCOMES`).

        The coordinator calls this for ``duplicate`` (no event describes it); the
        other outcomes are counted from events by :class:`MetricsSink`.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown message outcome {outcome!r}")
        if amount < 0:
            raise ValueError("amount must be non-negative")
        if amount:
            self.messages.labels(outcome=outcome).inc(amount)

    def count_alert(self, alert: Alert) -> None:
        """Count one alert."""
        self.alerts.labels(kind=alert.kind.value, severity=alert.severity.value).inc()

    def set_connections(self, count: int) -> None:
        """Set the open-connection gauge (overrides what events moved it to)."""
        self.connections.set(count)

    def set_queue_depth(self, depth: int) -> None:
        """Set the queue-depth gauge."""
        self.queue_depth.set(depth)

    def observe_batch(self, seconds: float, messages: int) -> None:
        """Record the processing time of one batch of ``messages`` routed frames."""
        if seconds < 0:
            raise ValueError("seconds must be non-negative")
        self._batch.observe(seconds)
        if messages > 0:
            self._per_message.observe(seconds / messages)


class MetricsSink:
    """Updates :class:`CoordinatorMetrics` from security events and alerts.

    As an ``EventSink`` (``emit``): every event counts in
    ``trustwire_security_events_total``; ``message.accepted`` / ``queued`` / ``denied``,
    ``rate.limited``, ``replay.detected`` and ``timestamp.stale`` count as message
    outcomes (``message.accepted`` and ``queued`` as many as their ``count`` detail);
    denials, replays and authentication failures have their own counters;
    ``auth.success`` and ``connection.closed`` move the connection gauge. It must see
    routine events, so attach it to a stream that includes them. As an ``AlertSink``
    (``send``): counts the alert.
    """

    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics
        m = metrics
        forwarded = m.messages.labels(outcome="forwarded")
        queued = m.messages.labels(outcome="queued")
        denied = m.messages.labels(outcome="denied")
        rate_limited = m.messages.labels(outcome="rate_limited")
        replay = m.messages.labels(outcome="replay")
        denial = m.denials.labels(kind="message")
        impersonation = m.denials.labels(kind="impersonation")
        replayed = m.replays.labels(kind="replay")
        stale = m.replays.labels(kind="stale_timestamp")
        connections = m.connections
        self._by_kind = {kind: m.events.labels(kind=kind.value) for kind in EventKind}

        def on_denied(_: SecurityEvent) -> None:
            denied.inc()
            denial.inc()

        def on_replay(_: SecurityEvent) -> None:
            replay.inc()
            replayed.inc()

        def on_stale(_: SecurityEvent) -> None:
            replay.inc()
            stale.inc()

        def on_auth_failure(event: SecurityEvent) -> None:
            m.auth_failures.labels(cause=auth_failure_cause(event.reason)).inc()

        self._handlers: dict[EventKind, Callable[[SecurityEvent], None]] = {
            EventKind.MESSAGE_ACCEPTED: lambda event: forwarded.inc(_count_of(event)),
            EventKind.MESSAGE_QUEUED: lambda event: queued.inc(_count_of(event)),
            EventKind.MESSAGE_DENIED: on_denied,
            EventKind.RATE_LIMITED: lambda _: rate_limited.inc(),
            EventKind.REPLAY_DETECTED: on_replay,
            EventKind.TIMESTAMP_STALE: on_stale,
            EventKind.IMPERSONATION_ATTEMPT: lambda _: impersonation.inc(),
            EventKind.AUTH_FAILURE: on_auth_failure,
            EventKind.AUTH_SUCCESS: lambda _: connections.inc(),
            EventKind.CONNECTION_CLOSED: lambda _: connections.dec(),
        }

    def emit(self, event: SecurityEvent) -> None:
        """Count ``event``."""
        self._by_kind[event.kind].inc()
        handler = self._handlers.get(event.kind)
        if handler is not None:
            handler(event)

    def send(self, alert: Alert) -> None:
        """Count ``alert``."""
        self.metrics.count_alert(alert)


class MetricsServer:
    """A running ``/metrics`` HTTP endpoint (a daemon thread); :meth:`close` stops it."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port: int = self._server.server_port
        """The bound port (useful with ``port=0``)."""
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        """The scrape URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def serve_metrics(
    metrics: CoordinatorMetrics | CollectorRegistry,
    host: str = "127.0.0.1",
    port: int = 9464,
) -> MetricsServer:
    """Serve ``metrics`` as Prometheus text on ``http://host:port/metrics``.

    Loopback by default: the endpoint is unauthenticated, and the counts it reveals
    (agents connected, denials, alerts) are worth keeping from the network; put a
    reverse proxy with TLS and authentication in front before binding elsewhere.
    ``port=0`` picks a free port (read it from :attr:`MetricsServer.port`). Blocking
    (binds a socket): call it before starting the event loop or in a thread.
    """
    registry = metrics.registry if isinstance(metrics, CoordinatorMetrics) else metrics
    return MetricsServer(host, port, registry)
