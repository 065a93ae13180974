"""What ``trustwire serve`` attaches to the security-event stream, and in which order.

:class:`Instruments` owns the event stream and everything that consumes it::

    coordinator ──events──▶ EventStream ──▶ JsonlSink      HOME/events.jsonl
                                        ├─▶ AuditTrail     HOME/audit.db (signed Merkle log)
                                        ├─▶ MetricsSink    /metrics (with --metrics-port)
                                        └─▶ DetectorSet    when monitoring.anomaly_detection
                                              ├─▶ LogAlertSink         stderr
                                              ├─▶ MetricsSink          trustwire_alerts_total
                                              ├─▶ JsonlAlertSink       HOME/alerts.jsonl
                                              ├─▶ AlertRecorder        alert.raised ─▶ stream
                                              └─▶ WebhookAlertSink     when automatic_alerts
                                                                       and a webhook is set

Invariants and why:

* **The detectors come last** among the stream's sinks, so an ``alert.raised`` event
  (which the :class:`AlertRecorder` emits into the same stream while the detectors
  handle the triggering event) lands in the audit trail after the event that raised it.
  No detector reads ``alert.raised``, so this cannot loop.
* **Monitoring switches follow the policy.** :meth:`Instruments.apply` attaches or
  detaches the detectors and the webhook when a reloaded policy turns
  ``anomaly_detection`` or ``automatic_alerts`` on or off; objects are built once and
  closed once, at shutdown, whether attached or not.
* **The log always has a signed head**: one is signed when the instruments open (so a
  coordinator that saw no event still leaves a verifiable log) and one after the trail's
  final flush at close.
* **Close order** (:meth:`Instruments.aclose`): alert sinks first (the webhook drains its
  queue), then the stream's sinks (the events file, then the trail: flushed and a head
  signed), a final head, the log, and the metrics endpoint last so it can be scraped
  until the end. Nothing here logs the webhook secret or the webhook URL's path.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trustwire.audit.log import MerkleLog
from trustwire.audit.trail import AUDIT_ORIGIN, AuditTrail
from trustwire.coordinator.metrics import (
    CoordinatorMetrics,
    MetricsServer,
    MetricsSink,
    serve_metrics,
)
from trustwire.crypto.signing import SigningKey
from trustwire.detect import (
    Alert,
    DetectorConfig,
    DetectorSet,
    JsonlAlertSink,
    LogAlertSink,
    WebhookAlertSink,
)
from trustwire.errors import ConfigurationError
from trustwire.events import EventKind, EventStream, JsonlSink
from trustwire.home import Home
from trustwire.policy import Monitoring
from trustwire.store.base import Store

__all__ = ["AlertRecorder", "Instruments", "Webhook"]

log = logging.getLogger("trustwire.cli.serve")


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where automatic alerts are posted. The secret never appears in a ``repr``."""

    url: str
    secret: str = field(repr=False)


class AlertRecorder:
    """An alert sink that records each alert as an ``alert.raised`` security event, so
    alerts enter the audit trail (and ``events.jsonl``) with everything else.

    The event names the alert kind as its reason, the blamed agent (if any) as its agent,
    and carries the alert's id, severity and summary; alerts hold metadata only.
    """

    def __init__(self, events: EventStream) -> None:
        self._events = events

    def send(self, alert: Alert) -> None:
        """Record ``alert`` on the stream."""
        self._events.record(
            EventKind.ALERT_RAISED,
            agent=alert.agent,
            reason=alert.kind.value,
            alert_id=alert.id,
            severity=alert.severity.value,
            summary=alert.summary,
        )


class Instruments:
    """The event stream of a served home with its sinks, detectors and metrics.

    Build it with :meth:`open`; hand :attr:`events` to the coordinator; call
    :meth:`apply` after a policy reload, :meth:`tick` from housekeeping, and
    ``await aclose()`` after the coordinator has closed.
    """

    def __init__(
        self,
        home: Home,
        log_key: SigningKey,
        merkle_log: MerkleLog,
        events_file: JsonlSink,
        *,
        webhook: WebhookAlertSink | None,
        clock: Callable[[], float],
    ) -> None:
        """Use :meth:`open`."""
        self.home = home
        self.metrics = CoordinatorMetrics()
        self.metrics_sink = MetricsSink(self.metrics)
        self.log = merkle_log
        self._key = log_key
        self._clock = clock
        self.trail = AuditTrail(merkle_log, log_key, clock=clock)
        # The events file first: it is what operators read most; detectors are added last.
        self.events = EventStream([events_file, self.trail, self.metrics_sink], clock=clock)
        self.webhook = webhook
        self.detectors: DetectorSet | None = None
        self.metrics_server: MetricsServer | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        home: Home,
        monitoring: Monitoring,
        *,
        webhook: Webhook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Instruments:
        """Open the audit log (creating the log key of an older home), the events file and
        the webhook sink, then apply ``monitoring``.

        Raises :class:`ConfigurationError` for an unusable webhook URL or secret, and
        whatever opening the key or the log raises; nothing is left open then.
        """
        key = home.log_signing_key()
        with contextlib.ExitStack() as undo:
            sink = None
            if webhook is not None:
                try:
                    sink = WebhookAlertSink(webhook.url, webhook.secret)
                except ValueError as exc:
                    raise ConfigurationError(f"webhook: {exc}") from None
                undo.callback(sink.close)
            merkle_log = MerkleLog.open_sqlite(home.audit_path, origin=AUDIT_ORIGIN)
            undo.callback(merkle_log.close)
            events_file = JsonlSink(home.events_path)
            undo.callback(events_file.close)
            instruments = cls(home, key, merkle_log, events_file, webhook=sink, clock=clock)
            undo.pop_all()
        try:
            merkle_log.signed_tree_head(key, now=clock())
            instruments.apply(monitoring)
        except BaseException:
            instruments.close_now()
            raise
        return instruments

    # -- monitoring switches ------------------------------------------------------------

    def apply(self, monitoring: Monitoring) -> None:
        """Attach or detach the detectors and the webhook as ``monitoring`` says."""
        if monitoring.anomaly_detection:
            detectors = self._detectors()
            if detectors not in self.events.sinks:
                self.events.add_sink(detectors)  # last, see the module docstring
                log.info("anomaly detection on; alerts go to %s", self.home.alerts_path)
        elif self.detectors is not None and self.detectors in self.events.sinks:
            self.events.remove_sink(self.detectors)
            log.info("anomaly detection off (policy monitoring.anomaly_detection)")
        if self.webhook is None:
            return
        if self.detectors is None:
            log.info("alert webhook not used: anomaly detection is off in the policy")
            return
        wanted = monitoring.automatic_alerts and monitoring.anomaly_detection
        attached = self.webhook in self.detectors.sinks
        if wanted and not attached:
            self.detectors.add_sink(self.webhook)
            log.info("alerts are posted to the webhook %r", self.webhook)
        elif not wanted and attached:
            self.detectors.remove_sink(self.webhook)
            log.info("alert webhook off (policy monitoring.automatic_alerts)")
        elif not wanted:
            log.info("alert webhook not used: automatic alerts are off in the policy")

    def _detectors(self) -> DetectorSet:
        if self.detectors is None:
            alerts_file = JsonlAlertSink(self.home.alerts_path)
            self.detectors = DetectorSet(
                DetectorConfig(),
                [LogAlertSink(), self.metrics_sink, alerts_file, AlertRecorder(self.events)],
            )
        return self.detectors

    # -- running ------------------------------------------------------------------------

    def serve_metrics(self, host: str, port: int) -> MetricsServer:
        """Serve ``/metrics`` on ``host:port`` (0: any free port); blocking, see
        :func:`~trustwire.coordinator.metrics.serve_metrics`."""
        self.metrics_server = serve_metrics(self.metrics, host, port)
        return self.metrics_server

    async def tick(self, store: Store) -> None:
        """Housekeeping: set the queue-depth gauge and let idle detector state go."""
        self.metrics.set_queue_depth(await store.queue.depth())
        if self.detectors is not None:
            self.detectors.sweep(self._clock())

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close everything in order (see the module docstring); idempotent."""
        if self._closed:
            return
        if self.detectors is not None:
            await self.detectors.aclose()  # the webhook drains, alerts.jsonl is flushed
        if self.webhook is not None:
            await self.webhook.aclose()  # when detached it was not closed above
        self.close_now()

    def close_now(self) -> None:
        """Close without draining the webhook (what :meth:`aclose` does after draining)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.detectors is not None:
                self.detectors.close()
            if self.webhook is not None:
                self.webhook.close()
            self.events.close()  # the events file, then the trail: flushed, head signed
            self.log.signed_tree_head(self._key, now=self._clock())
        finally:
            self.log.close()
            if self.metrics_server is not None:
                self.metrics_server.close()
