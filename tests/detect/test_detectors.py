"""Scripted attacks against the detectors, on simulated time.

Every attack is a stream of the events the coordinator emits, stamped by an injected
clock. Each must raise its alert within a few seconds of simulated time, and only one
per storm; normal traffic must raise none.
"""

from __future__ import annotations

import ast
import asyncio
import heapq
import random
import time
from pathlib import Path
from types import ModuleType

import pytest
from _attack import Attack, MakeAttack

import trustwire.detect.detectors as detectors_module
import trustwire.detect.model as model_module
from trustwire.detect import (
    Alert,
    AlertKind,
    BurstThreshold,
    DetectorConfig,
    DetectorSet,
    FanoutDetector,
    MemoryAlertSink,
    RateAnomalyDetector,
    Severity,
)
from trustwire.events import EventKind, EventStream, SecurityEvent


@pytest.fixture
def make_attack() -> MakeAttack:
    def make(config: DetectorConfig | None = None) -> Attack:
        return Attack(config or DetectorConfig())

    return make


@pytest.fixture
def attack(make_attack: MakeAttack) -> Attack:
    return make_attack()


ATTACKER = "did:key:z6MkAttacker"
VICTIM = "did:key:z6MkVictim"


def agent_did(n: int) -> str:
    return f"did:key:z6MkAgent{n:04d}"


# -- authentication failures -------------------------------------------------------------


def test_burst_of_bad_certificates_from_one_address_raises_one_source_alert_within_5_s(
    attack: Attack,
) -> None:
    start = attack.clock.now
    for i in range(30):
        attack.record(
            EventKind.AUTH_FAILURE, reason="tls: SSLError", address=f"203.0.113.7:{40000 + i}"
        )
        attack.clock.advance(0.1)

    [alert] = attack.alerts(AlertKind.AUTH_FAILURE_BURST)
    assert alert.details["scope"] == "address"
    assert alert.details["source"] == "203.0.113.7"
    assert alert.details["count"] == 10
    assert alert.details["top_reason"] == "tls: SSLError"
    assert alert.severity is Severity.WARNING
    assert alert.agent is None
    assert alert.time - start <= 5.0


def test_failures_spread_over_many_addresses_raise_the_overall_alert_only(
    attack: Attack,
) -> None:
    start = attack.clock.now
    for i in range(80):
        attack.record(
            EventKind.AUTH_FAILURE, reason="tls: SSLError", address=f"198.51.100.{i}:5000"
        )
        attack.clock.advance(0.05)

    [alert] = attack.alerts()
    assert alert.kind is AlertKind.AUTH_FAILURE_BURST
    assert alert.details["scope"] == "overall"
    assert alert.severity is Severity.CRITICAL
    assert alert.details["count"] == 50
    assert alert.time - start <= 5.0


def test_a_revoked_agent_retrying_from_many_addresses_is_caught_by_its_did(
    attack: Attack,
) -> None:
    for i in range(12):
        attack.record(
            EventKind.AUTH_FAILURE,
            agent=ATTACKER,
            reason="agent revoked",
            address=f"192.0.2.{i}:443",
        )
        attack.clock.advance(0.2)

    [alert] = attack.alerts()
    assert alert.details["scope"] == "agent"
    assert alert.agent == ATTACKER


def test_ipv6_sources_are_grouped_by_host(attack: Attack) -> None:
    for i in range(10):
        attack.record(EventKind.AUTH_FAILURE, reason="tls: SSLError", address=f"::1:{6000 + i}")
    [alert] = attack.alerts()
    assert alert.details["source"] == "::1"


def test_failures_slower_than_the_window_raise_nothing(attack: Attack) -> None:
    for i in range(40):
        attack.record(EventKind.AUTH_FAILURE, reason="tls: SSLError", address=f"203.0.113.9:{i}")
        attack.clock.advance(1.5)  # 10 failures take 13.5 s > the 10 s window

    assert attack.alerts() == []


# -- replays -----------------------------------------------------------------------------


def test_hundred_replayed_frames_raise_exactly_one_replay_alert_within_5_s(
    attack: Attack,
) -> None:
    start = attack.clock.now
    for _ in range(100):
        attack.record(
            EventKind.REPLAY_DETECTED,
            agent=ATTACKER,
            peer=VICTIM,
            reason="envelope id already seen",
            type="SEALED",
            size=512,
        )
        attack.clock.advance(0.02)

    [alert] = attack.alerts(AlertKind.REPLAY_ATTEMPTS)
    assert alert.agent == ATTACKER
    assert alert.severity is Severity.CRITICAL
    assert alert.time - start <= 5.0
    assert alert.details["top_reason"] == "envelope id already seen"
    assert attack.alerts() == [alert]


def test_stale_timestamps_from_several_agents_count_as_replay_attempts(attack: Attack) -> None:
    for i in range(10):
        attack.record(EventKind.TIMESTAMP_STALE, agent=agent_did(i % 3), peer=VICTIM)
        attack.clock.advance(0.5)

    [alert] = attack.alerts(AlertKind.REPLAY_ATTEMPTS)
    assert alert.agent is None  # several agents: nobody singled out
    assert alert.details["agents"] == 3


def test_a_storm_after_the_cooldown_raises_a_second_alert_reporting_suppressed_hits(
    make_attack: MakeAttack,
) -> None:
    attack = make_attack(DetectorConfig(cooldown=60.0))
    for _ in range(50):
        attack.record(EventKind.REPLAY_DETECTED, agent=ATTACKER)
        attack.clock.advance(0.1)
    attack.clock.advance(60.0)
    for _ in range(10):
        attack.record(EventKind.REPLAY_DETECTED, agent=ATTACKER)
        attack.clock.advance(0.1)

    first, second = attack.alerts(AlertKind.REPLAY_ATTEMPTS)
    assert second.time - first.time >= 60.0
    # Hits 11..50 crossed the threshold during the first cooldown.
    assert first.details["suppressed"] == 0
    assert second.details["suppressed"] == 40


# -- denials -----------------------------------------------------------------------------


def test_denied_message_storm_raises_one_denial_spike_naming_the_agent(
    attack: Attack,
) -> None:
    start = attack.clock.now
    for i in range(500):
        attack.record(
            EventKind.MESSAGE_DENIED,
            agent=ATTACKER,
            peer=agent_did(i % 50),
            reason="no rule allows message",
        )
        attack.clock.advance(0.01)
    for i in range(5):  # a well-behaved agent with a few denials
        attack.record(EventKind.MESSAGE_DENIED, agent=VICTIM, peer=agent_did(i))

    [alert] = attack.alerts()
    assert alert.kind is AlertKind.DENIAL_SPIKE
    assert alert.agent == ATTACKER
    assert alert.details["count"] == 20
    assert alert.time - start <= 5.0


def test_denials_spread_below_the_per_agent_threshold_raise_nothing(attack: Attack) -> None:
    for round_ in range(10):
        for i in range(40):
            attack.record(EventKind.MESSAGE_DENIED, agent=agent_did(i), peer=VICTIM)
        attack.clock.advance(5.0 if round_ % 2 else 0.5)  # at most 4 per agent per 10 s

    assert attack.alerts() == []


# -- rate limiting -----------------------------------------------------------------------


def test_rate_limit_storm_raises_one_alert_per_cooldown(attack: Attack) -> None:
    start = attack.clock.now
    for _ in range(2000):
        attack.record(EventKind.RATE_LIMITED, agent=ATTACKER, peer=VICTIM, reason="limit")
        attack.clock.advance(0.01)  # 20 s of 100 rejections per second

    [alert] = attack.alerts(AlertKind.RATE_LIMIT_STORM)
    assert alert.agent == ATTACKER
    assert alert.time - start <= 5.0


# -- per-agent rate baseline -------------------------------------------------------------


def _steady(attack: Attack, agent: str, rate: float, seconds: float, rng: random.Random) -> None:
    """``rate`` messages per second from ``agent`` to ``VICTIM`` with jittered gaps."""
    end = attack.clock.now + seconds
    while attack.clock.now < end:
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=agent, peer=VICTIM, type="SEALED")
        attack.clock.advance(rng.uniform(0.5, 1.5) / rate)


def test_an_agent_at_20x_its_baseline_raises_a_rate_anomaly_within_5_s(
    attack: Attack,
) -> None:
    rng = random.Random(7)
    _steady(attack, ATTACKER, 5.0, 120.0, rng)
    assert attack.alerts() == []

    start = attack.clock.now
    for _ in range(1000):  # 100 messages/s: 20x the learned 5/s
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=VICTIM, type="SEALED")
        attack.clock.advance(0.01)

    [alert] = attack.alerts(AlertKind.RATE_ANOMALY)
    assert alert.agent == ATTACKER
    assert alert.time - start <= 5.0
    assert 3.0 <= float(alert.details["baseline"]) <= 7.0
    assert float(alert.details["rate"]) > float(alert.details["limit"])


def test_batched_traffic_events_count_as_their_count_of_messages(attack: Attack) -> None:
    rng = random.Random(7)
    _steady(attack, ATTACKER, 5.0, 120.0, rng)
    start = attack.clock.now
    for _ in range(100):  # 100 messages/s as ten events of ten: 20x the learned 5/s
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=VICTIM, count=10)
        attack.clock.advance(0.1)

    [alert] = attack.alerts(AlertKind.RATE_ANOMALY)
    assert alert.time - start <= 5.0
    assert float(alert.details["rate"]) > float(alert.details["limit"])


def test_a_one_second_burst_over_the_burst_limit_is_reported_as_1s(attack: Attack) -> None:
    _steady(attack, ATTACKER, 10.0, 60.0, random.Random(3))
    attack.clock.now = float(int(attack.clock.now) + 1)  # start of a fresh second
    for _ in range(400):  # ~40x the baseline within one second
        attack.record(EventKind.MESSAGE_QUEUED, agent=ATTACKER, peer=VICTIM)
        attack.clock.advance(0.002)

    [alert] = attack.alerts(AlertKind.RATE_ANOMALY)
    assert alert.details["window"] == "1s"
    # Raised by the first message over max(30 x baseline, 100) in that second.
    limit = float(alert.details["limit"])
    assert 250 < limit < 350
    assert alert.details["rate_1s"] == int(limit) + 1


def test_a_new_agent_raises_no_rate_anomaly_during_its_warm_up(attack: Attack) -> None:
    for _ in range(25 * 200):  # 25 s at 200 messages/s from the very first second
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=VICTIM)
        attack.clock.advance(0.005)

    assert attack.alerts(AlertKind.RATE_ANOMALY) == []


def test_a_flood_is_not_learned_into_the_baseline(attack: Attack) -> None:
    _steady(attack, ATTACKER, 5.0, 60.0, random.Random(11))
    detector = next(d for d in attack.detectors.detectors if isinstance(d, RateAnomalyDetector))
    before = detector.baseline(ATTACKER)
    for _ in range(100 * 30):  # 30 s at 100/s
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=VICTIM)
        attack.clock.advance(0.01)

    after = detector.baseline(ATTACKER)
    assert before is not None and after is not None
    assert after < 2 * before
    # Still anomalous after the 60 s cooldown: a second alert.
    attack.clock.advance(31.0)
    for _ in range(100 * 5):
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=VICTIM)
        attack.clock.advance(0.01)
    assert len(attack.alerts(AlertKind.RATE_ANOMALY)) == 2


# -- fan-out -----------------------------------------------------------------------------


def test_fanout_to_50_new_peers_raises_a_fanout_alert_within_5_s(attack: Attack) -> None:
    usual = [agent_did(i) for i in range(3)]
    for i in range(240):  # two minutes of talking to the usual three peers
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=usual[i % 3])
        attack.clock.advance(0.5)

    start = attack.clock.now
    for i in range(50):
        attack.record(EventKind.MESSAGE_QUEUED, agent=ATTACKER, peer=agent_did(100 + i))
        attack.clock.advance(0.1)

    [alert] = attack.alerts()
    assert alert.kind is AlertKind.FANOUT
    assert alert.agent == ATTACKER
    assert alert.details["new_peers"] == 20
    assert alert.time - start <= 5.0


def test_talking_again_to_known_peers_raises_no_fanout_alert(attack: Attack) -> None:
    peers = [agent_did(i) for i in range(100)]
    for i in range(100):  # learned during the warm-up
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=peers[i])
        attack.clock.advance(0.1)
    attack.clock.advance(120.0)
    for i in range(1000):
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=peers[i % 100])
        attack.clock.advance(0.05)

    assert attack.alerts() == []


def test_new_peers_trickling_in_slower_than_the_window_raise_nothing(attack: Attack) -> None:
    attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=VICTIM)
    attack.clock.advance(120.0)
    for i in range(100):
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=agent_did(i))
        attack.clock.advance(4.0)  # 20 new peers take 76 s > the 60 s window

    assert attack.alerts() == []


# -- normal traffic ----------------------------------------------------------------------


def _steady_workload(total: int, agents: int, seed: int) -> list[SecurityEvent]:
    """``total`` message events from ``agents`` agents at ~10/s each, each agent
    talking to its own five peers, with jittered gaps and a few queued messages."""
    rng = random.Random(seed)
    t0 = 1_700_000_000.0
    dids = [agent_did(i) for i in range(agents)]
    peers = [[agent_did(1000 + i * 5 + j) for j in range(5)] for i in range(agents)]
    due = [(t0 + rng.uniform(0, 0.1), i) for i in range(agents)]
    heapq.heapify(due)
    events: list[SecurityEvent] = []
    while len(events) < total:
        when, i = heapq.heappop(due)
        kind = EventKind.MESSAGE_QUEUED if rng.random() < 0.1 else EventKind.MESSAGE_ACCEPTED
        events.append(
            SecurityEvent(
                kind=kind,
                time=when,
                agent=dids[i],
                peer=rng.choice(peers[i]),
                details={"type": "CHANNEL_DATA", "size": rng.randint(64, 4096)},
            )
        )
        heapq.heappush(due, (when + rng.uniform(0.05, 0.15), i))
    return events


def test_steady_workload_of_100000_events_from_20_agents_raises_no_alert() -> None:
    events = _steady_workload(100_000, 20, seed=1)
    sink = MemoryAlertSink()
    detectors = DetectorSet(DetectorConfig(), [sink])

    started = time.perf_counter()
    for event in events:
        detectors.observe(event)
    elapsed = time.perf_counter() - started

    rate = len(events) / elapsed
    print(
        f"\nDetectorSet.observe: {rate:,.0f} events/s ({elapsed * 1e6 / len(events):.2f} µs/event)"
    )
    assert sink.alerts == []
    assert detectors.alerts_raised.total() == 0
    assert rate > 20_000  # far slower would make detection a bottleneck on the hot path


# -- bounded memory ----------------------------------------------------------------------


def test_tracked_agents_are_capped(make_attack: MakeAttack) -> None:
    attack = make_attack(DetectorConfig(max_tracked=100))
    for i in range(1000):
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=agent_did(i), peer=VICTIM)
        attack.record(EventKind.AUTH_FAILURE, reason="tls", address=f"10.0.{i // 256}.{i % 256}:1")
        attack.record(EventKind.MESSAGE_DENIED, agent=agent_did(i), peer=VICTIM)

    for detector in attack.detectors.detectors:
        tracked = getattr(detector, "tracked", 0)
        assert tracked <= 100, detector


def test_idle_agents_are_forgotten_after_the_idle_timeout(make_attack: MakeAttack) -> None:
    attack = make_attack(DetectorConfig(idle_timeout=300.0))
    for i in range(50):
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=agent_did(i), peer=VICTIM)
    fanout = next(d for d in attack.detectors.detectors if isinstance(d, FanoutDetector))
    assert fanout.tracked == 50

    attack.detectors.sweep(attack.clock.now + 301.0)
    assert fanout.tracked == 0


def test_idle_agents_are_also_forgotten_as_later_events_arrive(make_attack: MakeAttack) -> None:
    attack = make_attack(DetectorConfig(idle_timeout=300.0))
    for i in range(50):
        attack.record(EventKind.MESSAGE_ACCEPTED, agent=agent_did(i), peer=VICTIM)
    attack.clock.advance(301.0)
    attack.record(EventKind.MESSAGE_ACCEPTED, agent=ATTACKER, peer=VICTIM)

    fanout = next(d for d in attack.detectors.detectors if isinstance(d, FanoutDetector))
    assert fanout.tracked == 1


# -- time --------------------------------------------------------------------------------


def test_an_event_stamped_in_the_past_counts_at_the_newest_time() -> None:
    sink = MemoryAlertSink()
    detectors = DetectorSet(DetectorConfig(denials=BurstThreshold(3, 1.0)), [sink])
    base = 1_700_000_000.0
    for offset in (0.0, 0.1, -500.0):  # the clock stepped back 500 s
        detectors.observe(SecurityEvent(EventKind.MESSAGE_DENIED, base + offset, agent=ATTACKER))

    [alert] = sink.alerts
    assert alert.time == base + 0.1


# -- the detector set --------------------------------------------------------------------


def test_disabled_detectors_do_not_run(make_attack: MakeAttack) -> None:
    attack = make_attack(DetectorConfig(disabled=frozenset({AlertKind.DENIAL_SPIKE})))
    for _ in range(100):
        attack.record(EventKind.MESSAGE_DENIED, agent=ATTACKER, peer=VICTIM)

    assert attack.alerts() == []
    assert AlertKind.DENIAL_SPIKE not in {
        getattr(d, "kind", None) for d in attack.detectors.detectors
    }


class _BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def send(self, alert: Alert) -> None:
        self.calls += 1
        raise OSError("disk full")


class _BrokenDetector:
    kinds = frozenset({EventKind.MESSAGE_DENIED})

    def observe(self, event: SecurityEvent) -> list[Alert]:
        raise RuntimeError("bug")

    def sweep(self, now: float) -> None:
        pass


def test_a_failing_sink_or_detector_is_counted_and_the_others_still_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = MemoryAlertSink()
    broken = _BrokenSink()
    config = DetectorConfig(denials=BurstThreshold(2, 10.0), cooldown=0.0)
    real = DetectorSet(config).detectors
    detectors = DetectorSet(config, [broken, good], detectors=[_BrokenDetector(), *real])
    for i in range(4):
        detectors.observe(SecurityEvent(EventKind.MESSAGE_DENIED, 1.0 + i, agent=ATTACKER))

    assert len(good.alerts) == 3  # the 2nd, 3rd and 4th denial (no cooldown)
    assert broken.calls == 3
    assert detectors.sink_errors == 3
    assert detectors.detector_errors == 4
    # Logged once per culprit, not once per failure.
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 2


def test_observe_returns_and_publishes_the_same_alerts() -> None:
    sink = MemoryAlertSink()
    detectors = DetectorSet(DetectorConfig(denials=BurstThreshold(1, 1.0)), [sink])
    returned = detectors.observe(SecurityEvent(EventKind.MESSAGE_DENIED, 5.0, agent=ATTACKER))
    assert returned == sink.alerts
    assert detectors.alerts_raised[AlertKind.DENIAL_SPIKE] == 1


def test_events_no_detector_reads_raise_nothing() -> None:
    detectors = DetectorSet()
    for kind in (EventKind.POLICY_RELOADED, EventKind.CONNECTION_OPENED, EventKind.AGENT_ENROLLED):
        assert detectors.observe(SecurityEvent(kind, 1.0, agent=ATTACKER)) == []


async def test_a_detector_set_can_follow_a_subscription() -> None:
    sink = MemoryAlertSink()
    detectors = DetectorSet(DetectorConfig(replays=BurstThreshold(3, 5.0)), [sink])
    stream = EventStream()
    subscription = stream.subscribe(kinds=[EventKind.REPLAY_DETECTED])
    task = asyncio.create_task(detectors.follow(subscription))
    for _ in range(3):
        stream.record(EventKind.REPLAY_DETECTED, agent=ATTACKER)
    subscription.close()
    await asyncio.wait_for(task, 1.0)

    [alert] = sink.alerts
    assert alert.kind is AlertKind.REPLAY_ATTEMPTS


@pytest.mark.parametrize("module", [detectors_module, model_module])
def test_the_detection_core_is_sans_io(module: ModuleType) -> None:
    tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    forbidden = {"asyncio", "socket", "ssl", "threading", "time", "httpx", "os", "sqlite3"}
    assert not imported & forbidden
