"""Coordinator metrics: counters driven by security events, and the /metrics endpoint."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from _deployment import Deployment, wait_until
from trustwire.coordinator.metrics import (
    AUTH_FAILURE_CAUSES,
    OUTCOMES,
    CoordinatorMetrics,
    MetricsSink,
    auth_failure_cause,
    serve_metrics,
)
from trustwire.detect import (
    Alert,
    AlertId,
    AlertKind,
    BurstThreshold,
    DetectorConfig,
    DetectorSet,
    MemoryAlertSink,
    Severity,
)
from trustwire.events import EventKind, EventStream

ALICE = "did:key:z6MkAlice"
BOB = "did:key:z6MkBob"


def value(metrics: CoordinatorMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


@pytest.fixture
def metrics() -> CoordinatorMetrics:
    return CoordinatorMetrics()


@pytest.fixture
def stream(metrics: CoordinatorMetrics) -> EventStream:
    return EventStream([MetricsSink(metrics)], clock=lambda: 1_700_000_000.0)


def test_every_series_is_exported_at_zero_before_any_event(metrics: CoordinatorMetrics) -> None:
    for outcome in OUTCOMES:
        assert value(metrics, "trustwire_messages_total", outcome=outcome) == 0
    for cause in AUTH_FAILURE_CAUSES:
        assert value(metrics, "trustwire_auth_failures_total", cause=cause) == 0
    for kind in AlertKind:
        assert value(metrics, "trustwire_alerts_total", kind=kind.value, severity="warning") == 0
    assert value(metrics, "trustwire_connections") == 0
    assert value(metrics, "trustwire_queue_depth") == 0


def test_message_outcomes_follow_the_events(
    metrics: CoordinatorMetrics, stream: EventStream
) -> None:
    for _ in range(3):
        stream.record(EventKind.MESSAGE_ACCEPTED, agent=ALICE, peer=BOB, size=10)
    stream.record(EventKind.MESSAGE_QUEUED, agent=ALICE, peer=BOB)
    stream.record(EventKind.MESSAGE_DENIED, agent=ALICE, peer=BOB, reason="policy")
    stream.record(EventKind.RATE_LIMITED, agent=ALICE, peer=BOB)
    stream.record(EventKind.REPLAY_DETECTED, agent=ALICE, peer=BOB)
    stream.record(EventKind.TIMESTAMP_STALE, agent=ALICE, peer=BOB)
    stream.record(EventKind.IMPERSONATION_ATTEMPT, agent=ALICE, peer=BOB)
    metrics.count_messages("duplicate", 2)

    expected = {
        "forwarded": 3,
        "queued": 1,
        "denied": 1,
        "rate_limited": 1,
        "replay": 2,
        "duplicate": 2,
    }
    for outcome, count in expected.items():
        assert value(metrics, "trustwire_messages_total", outcome=outcome) == count, outcome
    assert value(metrics, "trustwire_denials_total", kind="message") == 1
    assert value(metrics, "trustwire_denials_total", kind="impersonation") == 1
    assert value(metrics, "trustwire_replays_total", kind="replay") == 1
    assert value(metrics, "trustwire_replays_total", kind="stale_timestamp") == 1
    assert value(metrics, "trustwire_security_events_total", kind="message.accepted") == 3


def test_a_batched_routine_event_counts_as_its_count_of_messages(
    metrics: CoordinatorMetrics, stream: EventStream
) -> None:
    stream.record(EventKind.MESSAGE_ACCEPTED, agent=ALICE, peer=BOB, count=7, bytes=7000)
    stream.record(EventKind.MESSAGE_QUEUED, agent=ALICE, peer=BOB, count=2, bytes=100)
    stream.record(EventKind.MESSAGE_QUEUED, agent=ALICE, peer=BOB)  # no count: one
    assert value(metrics, "trustwire_messages_total", outcome="forwarded") == 7
    assert value(metrics, "trustwire_messages_total", outcome="queued") == 3
    assert value(metrics, "trustwire_security_events_total", kind="message.accepted") == 1


def test_auth_failures_are_counted_by_a_bounded_cause(
    metrics: CoordinatorMetrics, stream: EventStream
) -> None:
    reasons = [
        "tls: SSLError",
        "tls: TimeoutError",
        "no DID in certificate",
        "DID not enrolled",
        "agent revoked",
        "connection limit",
        "renewal: bad signature",
        "something new",
        None,
    ]
    for reason in reasons:
        stream.record(EventKind.AUTH_FAILURE, reason=reason, address="192.0.2.1:4000")

    assert value(metrics, "trustwire_auth_failures_total", cause="tls") == 2
    assert value(metrics, "trustwire_auth_failures_total", cause="other") == 2
    for cause in ("no_did", "not_enrolled", "revoked", "connection_limit", "renewal"):
        assert value(metrics, "trustwire_auth_failures_total", cause=cause) == 1
    assert {auth_failure_cause(r) for r in reasons} <= set(AUTH_FAILURE_CAUSES)


def test_connections_gauge_follows_logins_and_closes_and_can_be_set(
    metrics: CoordinatorMetrics, stream: EventStream
) -> None:
    stream.record(EventKind.AUTH_SUCCESS, agent=ALICE, address="127.0.0.1:1")
    stream.record(EventKind.AUTH_SUCCESS, agent=BOB, address="127.0.0.1:2")
    stream.record(EventKind.CONNECTION_CLOSED, agent=ALICE)
    assert value(metrics, "trustwire_connections") == 1
    metrics.set_connections(7)
    assert value(metrics, "trustwire_connections") == 7


def test_queue_depth_latency_and_alerts(metrics: CoordinatorMetrics) -> None:
    metrics.set_queue_depth(42)
    metrics.observe_batch(0.004, messages=8)
    metrics.observe_batch(0.001, messages=0)  # a batch of acks only
    sink = MetricsSink(metrics)
    sink.send(
        Alert(
            id=AlertId("a"),
            kind=AlertKind.RATE_ANOMALY,
            severity=Severity.WARNING,
            time=1.0,
            summary="fast",
        )
    )

    assert value(metrics, "trustwire_queue_depth") == 42
    name = "trustwire_frame_processing_seconds"
    assert value(metrics, f"{name}_count", scope="batch") == 2
    assert value(metrics, f"{name}_sum", scope="batch") == pytest.approx(0.005)
    assert value(metrics, f"{name}_count", scope="message") == 1
    assert value(metrics, f"{name}_sum", scope="message") == pytest.approx(0.0005)
    assert value(metrics, f"{name}_bucket", scope="message", le="0.0005") == 1
    assert value(metrics, "trustwire_alerts_total", kind="rate_anomaly", severity="warning") == 1


def test_misuse_is_refused(metrics: CoordinatorMetrics) -> None:
    with pytest.raises(ValueError, match="outcome"):
        metrics.count_messages("lost")
    with pytest.raises(ValueError):
        metrics.count_messages("queued", -1)
    with pytest.raises(ValueError):
        metrics.observe_batch(-1.0, messages=1)


def test_metrics_live_in_their_own_registry_not_the_global_one() -> None:
    first, second = CoordinatorMetrics(), CoordinatorMetrics()  # no duplicate-name clash
    first.count_messages("queued")
    assert second.registry.get_sample_value("trustwire_messages_total", {"outcome": "queued"}) == 0
    assert REGISTRY.get_sample_value("trustwire_messages_total", {"outcome": "queued"}) is None
    shared = CollectorRegistry()
    assert CoordinatorMetrics(shared).registry is shared


def test_scraping_metrics_shows_the_counters_moved(
    metrics: CoordinatorMetrics, stream: EventStream
) -> None:
    with serve_metrics(metrics, port=0) as server:
        assert server.host == "127.0.0.1"
        before = httpx.get(server.url, timeout=5.0)
        for _ in range(5):
            stream.record(EventKind.MESSAGE_ACCEPTED, agent=ALICE, peer=BOB)
        stream.record(EventKind.AUTH_FAILURE, reason="tls: SSLError", address="192.0.2.1:1")
        metrics.set_queue_depth(3)
        after = httpx.get(server.url, timeout=5.0)

    assert before.status_code == after.status_code == 200

    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    old, new = samples(before.text), samples(after.text)
    forwarded = ("trustwire_messages_total", (("outcome", "forwarded"),))
    tls = ("trustwire_auth_failures_total", (("cause", "tls"),))
    assert (old[forwarded], new[forwarded]) == (0, 5)
    assert (old[tls], new[tls]) == (0, 1)
    assert new[("trustwire_queue_depth", ())] == 3


def test_a_closed_metrics_server_releases_its_port(metrics: CoordinatorMetrics) -> None:
    server = serve_metrics(metrics, port=0)
    port = server.port
    server.close()
    server.close()  # idempotent
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # would fail with EADDRINUSE if still bound
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=1.0)


# -- wired into a real coordinator -------------------------------------------------------


async def test_a_real_coordinator_drives_metrics_and_detectors(deployment: Deployment) -> None:
    metrics = CoordinatorMetrics()
    metrics_sink = MetricsSink(metrics)
    alerts = MemoryAlertSink()
    detectors = DetectorSet(
        DetectorConfig(auth_failures_per_source=BurstThreshold(3, 60.0)), [alerts, metrics_sink]
    )
    deployment.coordinator.events.add_sink(metrics_sink)
    deployment.coordinator.events.add_sink(detectors)

    # Three connections without a client certificate: refused in the TLS handshake.
    for _ in range(3):
        raw = await deployment.raw(deployment.bare_context(), ready=False)
        assert await raw.read_envelope() is None
    await wait_until(lambda: bool(alerts.of_kind(AlertKind.AUTH_FAILURE_BURST)))

    [alert] = alerts.alerts
    assert alert.details["source"] == "127.0.0.1"
    assert value(metrics, "trustwire_auth_failures_total", cause="tls") == 3
    assert (
        value(metrics, "trustwire_alerts_total", kind="auth_failure_burst", severity="warning") == 1
    )

    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    await alice.send("bob", "hello")
    await bob.receive(timeout=5)
    assert value(metrics, "trustwire_messages_total", outcome="forwarded") >= 1
    assert value(metrics, "trustwire_connections") == 2
