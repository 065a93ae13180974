"""Rate limiting on `limits`: per-agent and shared role buckets, all-or-nothing admission."""

from __future__ import annotations

import limits.storage
import limits.strategies
import pytest

from trustwire.coordinator.ratelimit import RateLimiter, _LocalCounters
from trustwire.errors import ConfigurationError
from trustwire.policy import PolicyEngine, Principal, parse_policy

# Per-day and per-month windows: the tests run well inside one window (even the
# fixed-window strategy, which aligns windows to the clock), so no counter can
# slide out from under an assertion.
THREE = "3/day"


STRATEGIES = ["moving-window", "fixed-window", "sliding-window-counter"]


def _on_limits(limiter: RateLimiter, strategy: str) -> RateLimiter:
    """``limiter`` with its counters on ``limits``' memory storage: the code path every
    shared storage URI (Redis) takes, testable without a server."""
    limiter._local = None
    limiter._storage = limits.storage.MemoryStorage()
    limiter._limiter = limits.strategies.STRATEGIES[strategy](limiter._storage)
    return limiter


@pytest.fixture(params=[(s, b) for b in ("in-process", "limits") for s in STRATEGIES], ids=str)
def limiter(request: pytest.FixtureRequest) -> RateLimiter:
    strategy, backend = request.param
    made = RateLimiter(strategy=strategy)
    return _on_limits(made, strategy) if backend == "limits" else made


def test_limit_admits_up_to_the_amount_then_refuses(limiter: RateLimiter) -> None:
    buckets = [("agent:a", THREE)]
    assert [limiter.hit(buckets) for _ in range(5)] == [True, True, True, False, False]


def test_cost_consumes_several_units(limiter: RateLimiter) -> None:
    buckets = [("agent:a", "5/day")]
    assert limiter.hit(buckets, cost=3)
    assert not limiter.hit(buckets, cost=3)  # only 2 left: refused
    assert limiter.hit(buckets, cost=2)
    assert not limiter.hit(buckets)


def test_cost_larger_than_the_limit_is_refused(limiter: RateLimiter) -> None:
    assert not limiter.hit([("agent:a", THREE)], cost=4)
    assert limiter.hit([("agent:a", THREE)], cost=3)


def test_separate_agents_have_independent_buckets(limiter: RateLimiter) -> None:
    for _ in range(3):
        assert limiter.hit([("agent:a", THREE)])
    assert not limiter.hit([("agent:a", THREE)])
    assert limiter.hit([("agent:b", THREE)])


def test_role_bucket_is_shared_by_its_members(limiter: RateLimiter) -> None:
    role = ("role:worker", THREE)
    assert limiter.hit([("agent:a", "100/day"), role])
    assert limiter.hit([("agent:b", "100/day"), role])
    assert limiter.hit([("agent:c", "100/day"), role])
    # Each agent is far below its own limit, but the role's shared bucket is full.
    assert not limiter.hit([("agent:d", "100/day"), role])


def test_refused_request_consumes_nothing_from_the_other_buckets(limiter: RateLimiter) -> None:
    role = ("role:worker", THREE)
    flooding = [("agent:a", "1/day"), role]
    assert limiter.hit(flooding)
    for _ in range(10):
        assert not limiter.hit(flooding)  # refused by the agent's own bucket
    # The shared role bucket still has the two units the refusals did not take.
    assert limiter.hit([("agent:b", "100/day"), role])
    assert limiter.hit([("agent:c", "100/day"), role])
    assert not limiter.hit([("agent:d", "100/day"), role])


def test_multi_window_limit_string_enforces_every_window(limiter: RateLimiter) -> None:
    buckets = [("agent:a", "100/day;2/month")]
    assert limiter.hit(buckets)
    assert limiter.hit(buckets)
    assert not limiter.hit(buckets)


def test_test_reports_without_consuming(limiter: RateLimiter) -> None:
    buckets = [("agent:a", "1/day")]
    assert limiter.test(buckets)
    assert limiter.test(buckets)
    assert limiter.hit(buckets)
    assert not limiter.test(buckets)


def test_reset_empties_every_bucket(limiter: RateLimiter) -> None:
    for _ in range(3):
        limiter.hit([("agent:a", THREE)])
    assert not limiter.hit([("agent:a", THREE)])
    limiter.reset()
    assert limiter.hit([("agent:a", THREE)])


def test_no_buckets_means_no_limit(limiter: RateLimiter) -> None:
    assert limiter.hit([])


@pytest.mark.parametrize("limit", ["lots", "10/fortnight", "0/second", ""])
def test_bad_limit_string_is_a_configuration_error(limit: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid rate limit"):
        RateLimiter().hit([("agent:a", limit)])


@pytest.mark.parametrize("cost", [0, -1, True])
def test_cost_must_be_a_positive_integer(cost: int) -> None:
    with pytest.raises(ValueError, match="cost"):
        RateLimiter().hit([("agent:a", THREE)], cost=cost)


def test_unknown_strategy_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="strategy"):
        RateLimiter(strategy="leaky-bucket")


def test_unknown_storage_scheme_is_a_configuration_error_without_the_uri() -> None:
    with pytest.raises(ConfigurationError) as info:
        RateLimiter("nosuch://user:hunter2@host/0")
    assert "hunter2" not in str(info.value)


def test_buckets_from_the_policy_engine_are_enforced() -> None:
    engine = PolicyEngine(
        parse_policy(
            "version: 1\n"
            "policies:\n"
            "  communication: {default: deny, rules: []}\n"
            "  access_control:\n"
            "    roles: {worker: w}\n"
            "    rate_limits:\n"
            "      default: 100/day\n"
            "      roles: {worker: 3/day}\n"
            "      agents: {alice: 2/day}\n"
        )
    )
    limiter = RateLimiter()
    alice = Principal("did:key:z6MkAlice", "alice", ("worker",))
    bob = Principal("did:key:z6MkBob", "bob", ("worker",))
    carol = Principal("did:key:z6MkCarol", "carol", ())
    assert limiter.hit(engine.rate_limits_for(alice))
    assert limiter.hit(engine.rate_limits_for(alice))
    assert not limiter.hit(engine.rate_limits_for(alice))  # alice's own 2/day
    assert limiter.hit(engine.rate_limits_for(bob))
    assert not limiter.hit(engine.rate_limits_for(bob))  # the workers' shared 3/day
    assert all(limiter.hit(engine.rate_limits_for(carol)) for _ in range(10))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_in_process_fixed_window_refills_when_the_window_ends() -> None:
    clock = _Clock()
    counters = _LocalCounters(sliding=False, clock=clock)
    key = [("agent:a", 2, 10)]
    assert counters.hit(key, 2)
    assert not counters.hit(key, 1)
    clock.now += 9.9
    assert not counters.hit(key, 1)
    clock.now += 0.1
    assert counters.hit(key, 2)


def test_in_process_sliding_window_weighs_the_previous_window() -> None:
    clock = _Clock()
    counters = _LocalCounters(sliding=True, clock=clock)
    key = [("agent:a", 10, 10)]
    assert counters.hit(key, 10)
    clock.now += 15  # halfway into the next window: the previous one counts for 5
    assert counters.hit(key, 5)
    assert not counters.hit(key, 1)
    clock.now += 1  # 4 of the previous window's 10 still count
    assert counters.test(key, 1)
    assert not counters.test(key, 2)
    clock.now += 20  # two windows later: all forgotten
    assert counters.hit(key, 10)


def test_in_process_counters_never_admit_more_than_twice_the_limit_per_period() -> None:
    clock = _Clock()
    counters = _LocalCounters(sliding=True, clock=clock)
    key = [("agent:a", 100, 1)]
    admitted: list[float] = []
    for step in range(5000):
        clock.now = 1000.0 + step * 0.001
        if counters.hit(key, 1):
            admitted.append(clock.now)
    for i, start in enumerate(admitted):
        within = [t for t in admitted[i:] if t < start + 1]
        assert len(within) <= 200
