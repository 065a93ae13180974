"""Anomaly detection over the security-event stream, and where its alerts go.

:class:`DetectorSet` runs the detectors of :mod:`trustwire.detect.detectors` (sans-I/O;
the :class:`Alert` type and the :class:`DetectorConfig` thresholds are in
:mod:`trustwire.detect.model`) over :class:`~trustwire.events.SecurityEvent`
objects and sends each :class:`Alert` to the sinks of :mod:`trustwire.detect.alerts`
(log, ``alerts.jsonl``, signed webhook, memory). See ``docs/DETECTION.md``.
"""

from trustwire.detect.alerts import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    JsonlAlertSink,
    LogAlertSink,
    MemoryAlertSink,
    WebhookAlertSink,
    backoff_delay,
    sign_body,
    verify_signature,
)
from trustwire.detect.detectors import (
    AuthFailureDetector,
    DenialSpikeDetector,
    Detector,
    DetectorSet,
    FanoutDetector,
    RateAnomalyDetector,
    RateLimitStormDetector,
    ReplayAttemptDetector,
)
from trustwire.detect.model import (
    Alert,
    AlertId,
    AlertKind,
    AlertSink,
    BurstThreshold,
    DetectorConfig,
    FanoutConfig,
    RateBaselineConfig,
    Severity,
    new_alert_id,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Alert",
    "AlertId",
    "AlertKind",
    "AlertSink",
    "AuthFailureDetector",
    "BurstThreshold",
    "DenialSpikeDetector",
    "Detector",
    "DetectorConfig",
    "DetectorSet",
    "FanoutConfig",
    "FanoutDetector",
    "JsonlAlertSink",
    "LogAlertSink",
    "MemoryAlertSink",
    "RateAnomalyDetector",
    "RateBaselineConfig",
    "RateLimitStormDetector",
    "ReplayAttemptDetector",
    "Severity",
    "WebhookAlertSink",
    "backoff_delay",
    "new_alert_id",
    "sign_body",
    "verify_signature",
]
