"""The Cedar-backed policy engine: decisions, time limits, the cache, hot reload."""

from __future__ import annotations

import datetime
import time
from typing import Any

import cedarpy
import pytest

from trustwire.errors import ConfigurationError
from trustwire.policy import (
    Decision,
    Effect,
    PolicyConfig,
    PolicyEngine,
    Principal,
    Rule,
    Selector,
    default_policy,
    parse_policy,
)

ALICE = Principal("did:key:z6MkAlice1111111111111111111111111111111111", "alice", ("worker",))
BOB = Principal("did:key:z6MkBob11111111111111111111111111111111111", "bob", ())
CAROL = Principal("did:key:z6MkCaro11111111111111111111111111111111111", "carol", ("auditor",))

NOW = 1_780_000_000.0  # 2026-05-28, inside the windows used below
START = int(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp())
END = int(datetime.datetime(2026, 12, 31, tzinfo=datetime.UTC).timestamp())


def policy(rules: str, roles: str = "worker: w\n      auditor: a") -> PolicyConfig:
    """A policy with the given YAML rules list (indented as under `rules:`)."""
    return parse_policy(
        "version: 1\n"
        "policies:\n"
        "  communication:\n"
        "    default: deny\n"
        "    rules:\n"
        f"{rules}"
        "  access_control:\n"
        "    roles:\n"
        f"      {roles}\n"
    )


def rule(
    rule_id: str, effect: str, source: str = '"*"', target: str = '"*"', extra: str = ""
) -> str:
    text = (
        f"      - id: {rule_id}\n"
        f"        effect: {effect}\n"
        f"        from: {source}\n"
        f"        to: {target}\n"
        f"        actions: [message]\n"
    )
    if extra:
        text += "".join(f"        {line}\n" for line in extra.splitlines())
    return text


@pytest.fixture
def cedar_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records every request that reaches cedarpy."""
    calls: list[dict[str, Any]] = []
    real = cedarpy.is_authorized

    def counting(request: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(request)
        return real(request, *args, **kwargs)

    monkeypatch.setattr(cedarpy, "is_authorized", counting)
    return calls


def test_default_policy_allows_any_agent_to_message_any_other() -> None:
    engine = PolicyEngine(default_policy())
    decision = engine.authorize(ALICE, "message", BOB, now=NOW)
    assert decision == Decision(True, "agents-may-message", "allowed by rule agents-may-message")
    assert engine.authorize(BOB, "message", CAROL, now=NOW).allowed


def test_default_policy_allows_an_agent_to_message_itself() -> None:
    assert PolicyEngine(default_policy()).authorize(ALICE, "message", ALICE, now=NOW).allowed


def test_default_policy_denies_actions_it_does_not_grant() -> None:
    decision = PolicyEngine(default_policy()).authorize(ALICE, "broker.use", BOB, now=NOW)
    assert decision == Decision(False, None, "no rule allows this (default deny)")


def test_policy_without_rules_denies_everything() -> None:
    engine = PolicyEngine(policy("      []\n"))
    decision = engine.authorize(ALICE, "message", BOB, now=NOW)
    assert not decision.allowed
    assert decision.rule is None
    assert decision.reason == "no rule allows this (default deny)"
    assert not decision


def test_unknown_action_is_denied_not_raised() -> None:
    decision = PolicyEngine(default_policy()).authorize(ALICE, "launch", BOB, now=NOW)
    assert not decision.allowed
    assert "unknown action" in decision.reason


@pytest.mark.parametrize("deny_first", [True, False])
def test_matching_deny_overrides_allow_whatever_the_rule_order(deny_first: bool) -> None:
    allow = rule("everyone", "allow")
    deny = rule("not-to-bob", "deny", target="{agents: [bob]}")
    engine = PolicyEngine(policy(deny + allow if deny_first else allow + deny))
    assert engine.authorize(ALICE, "message", BOB, now=NOW) == Decision(
        False, "not-to-bob", "denied by rule not-to-bob"
    )
    assert engine.authorize(ALICE, "message", CAROL, now=NOW) == Decision(
        True, "everyone", "allowed by rule everyone"
    )


def test_role_selector_matches_agents_holding_the_role() -> None:
    engine = PolicyEngine(policy(rule("workers-send", "allow", source="{roles: [worker]}")))
    assert engine.authorize(ALICE, "message", BOB, now=NOW).allowed
    assert not engine.authorize(BOB, "message", ALICE, now=NOW).allowed
    assert not engine.authorize(CAROL, "message", ALICE, now=NOW).allowed


def test_role_selector_on_the_recipient_side() -> None:
    engine = PolicyEngine(policy(rule("to-auditors", "allow", target="{roles: [auditor]}")))
    assert engine.authorize(BOB, "message", CAROL, now=NOW).allowed
    assert not engine.authorize(CAROL, "message", BOB, now=NOW).allowed


def test_agent_name_selector_matches_by_registry_name() -> None:
    engine = PolicyEngine(policy(rule("bob-only", "allow", source="{agents: [bob]}")))
    assert engine.authorize(BOB, "message", ALICE, now=NOW).allowed
    assert not engine.authorize(ALICE, "message", BOB, now=NOW).allowed


def test_agent_did_selector_matches_by_did_not_by_name() -> None:
    engine = PolicyEngine(policy(rule("by-did", "allow", source=f'{{agents: ["{BOB.did}"]}}')))
    assert engine.authorize(BOB, "message", ALICE, now=NOW).allowed
    impostor = Principal("did:key:z6MkOther1111111111111111111111111111111111", "bob", ())
    assert not engine.authorize(impostor, "message", ALICE, now=NOW).allowed


def test_selector_with_agents_and_roles_matches_either() -> None:
    engine = PolicyEngine(
        policy(rule("mixed", "allow", source="{agents: [bob], roles: [auditor]}"))
    )
    assert engine.authorize(BOB, "message", ALICE, now=NOW).allowed
    assert engine.authorize(CAROL, "message", ALICE, now=NOW).allowed
    assert not engine.authorize(ALICE, "message", BOB, now=NOW).allowed


def test_rule_only_grants_the_actions_it_lists() -> None:
    text = rule("read", "allow").replace("[message]", "[memory.read]")
    engine = PolicyEngine(policy(text))
    assert engine.authorize(ALICE, "memory.read", BOB, now=NOW).allowed
    assert not engine.authorize(ALICE, "message", BOB, now=NOW).allowed


def test_decision_names_the_first_matching_rule_in_file_order() -> None:
    engine = PolicyEngine(policy(rule("first", "allow") + rule("second", "allow")))
    assert engine.authorize(ALICE, "message", BOB, now=NOW).rule == "first"


TIMED = rule(
    "timed",
    "allow",
    extra="not_before: 2026-01-01T00:00:00Z\nexpires_at: 2026-12-31T00:00:00Z",
)


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (START - 86_400, False),
        (START - 0.001, False),
        (START, True),
        (START + 0.5, True),
        (END - 0.001, True),
        (END, False),
        (END + 86_400, False),
    ],
)
def test_time_limited_rule_applies_from_not_before_until_expires_at(
    now: float, allowed: bool
) -> None:
    engine = PolicyEngine(policy(TIMED))
    assert engine.authorize(ALICE, "message", BOB, now=now).allowed is allowed


def test_cached_denial_expires_exactly_when_a_grant_begins(
    cedar_calls: list[dict[str, Any]],
) -> None:
    engine = PolicyEngine(policy(TIMED))
    assert not engine.authorize(ALICE, "message", BOB, now=START - 1).allowed
    assert not engine.authorize(ALICE, "message", BOB, now=START - 0.001).allowed
    assert len(cedar_calls) == 1  # the second answer came from the cache
    assert engine.authorize(ALICE, "message", BOB, now=START).allowed
    assert len(cedar_calls) == 2


def test_cached_grant_expires_exactly_at_expires_at(cedar_calls: list[dict[str, Any]]) -> None:
    engine = PolicyEngine(policy(TIMED))
    assert engine.authorize(ALICE, "message", BOB, now=END - 10).allowed
    assert engine.authorize(ALICE, "message", BOB, now=END - 0.001).allowed
    assert len(cedar_calls) == 1
    decision = engine.authorize(ALICE, "message", BOB, now=END)
    assert decision == Decision(False, None, "no rule allows this (default deny)")


def test_cached_grant_is_not_used_when_the_clock_goes_back_before_not_before() -> None:
    engine = PolicyEngine(policy(TIMED))
    assert engine.authorize(ALICE, "message", BOB, now=NOW).allowed
    assert not engine.authorize(ALICE, "message", BOB, now=START - 1).allowed


def test_repeated_decisions_are_served_from_the_cache(cedar_calls: list[dict[str, Any]]) -> None:
    engine = PolicyEngine(default_policy())
    for offset in range(100):
        assert engine.authorize(ALICE, "message", BOB, now=NOW + offset).allowed
    assert len(cedar_calls) == 1


def test_cache_key_includes_roles_so_a_role_change_is_reevaluated() -> None:
    engine = PolicyEngine(policy(rule("workers-send", "allow", source="{roles: [worker]}")))
    assert engine.authorize(ALICE, "message", BOB, now=NOW).allowed
    demoted = Principal(ALICE.did, ALICE.name, ())
    assert not engine.authorize(demoted, "message", BOB, now=NOW).allowed


def test_cache_is_bounded(cedar_calls: list[dict[str, Any]]) -> None:
    engine = PolicyEngine(default_policy(), cache_size=2)
    for target in (ALICE, BOB, CAROL):
        engine.authorize(ALICE, "message", target, now=NOW)
    assert len(cedar_calls) == 3
    engine.authorize(ALICE, "message", CAROL, now=NOW)  # still cached
    assert len(cedar_calls) == 3
    engine.authorize(ALICE, "message", ALICE, now=NOW)  # evicted first
    assert len(cedar_calls) == 4


def test_replace_takes_effect_on_the_next_call() -> None:
    engine = PolicyEngine(default_policy())
    assert engine.authorize(ALICE, "message", BOB, now=NOW).allowed
    stricter = policy(
        rule("everyone", "allow") + rule("not-to-bob", "deny", target="{agents: [bob]}")
    )
    engine.replace(stricter)
    assert engine.config is stricter
    assert engine.authorize(ALICE, "message", BOB, now=NOW) == Decision(
        False, "not-to-bob", "denied by rule not-to-bob"
    )


def test_replace_with_an_untranslatable_config_keeps_the_old_policy() -> None:
    engine = PolicyEngine(default_policy())
    broken = PolicyConfig(
        rules=(
            Rule(
                id="bogus",
                effect=Effect.ALLOW,
                source=Selector.everyone(),
                target=Selector.everyone(),
                actions=("teleport",),
            ),
        )
    )
    with pytest.raises(ConfigurationError, match="Cedar"):
        engine.replace(broken)
    assert engine.config == default_policy()
    assert engine.authorize(ALICE, "message", BOB, now=NOW).allowed


def test_cedar_failure_denies_with_the_error_and_is_not_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = PolicyEngine(default_policy())

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine on fire")

    monkeypatch.setattr(cedarpy, "is_authorized", broken)
    decision = engine.authorize(ALICE, "message", BOB, now=NOW)
    assert not decision.allowed
    assert decision.rule is None
    assert "engine on fire" in decision.reason
    monkeypatch.undo()
    assert engine.authorize(ALICE, "message", BOB, now=NOW).allowed


def test_evaluation_errors_reported_by_cedar_deny(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = PolicyEngine(default_policy())

    class Diagnostics:
        errors = ("error while evaluating policy `policy0`",)
        reasons = ()

    class Result:
        allowed = True
        diagnostics = Diagnostics()

    monkeypatch.setattr(cedarpy, "is_authorized", lambda *a, **k: Result())
    decision = engine.authorize(ALICE, "message", BOB, now=NOW)
    assert not decision.allowed
    assert "error while evaluating" in decision.reason


@pytest.mark.parametrize("now", [float("nan"), float("inf")])
def test_non_finite_time_is_denied(now: float) -> None:
    decision = PolicyEngine(default_policy()).authorize(ALICE, "message", BOB, now=now)
    assert not decision.allowed


def test_dids_with_unusual_characters_cannot_break_evaluation() -> None:
    odd = Principal('did:key:z"); permit(principal, action, resource);', 'x"y', ("a\nb",))
    engine = PolicyEngine(policy("      []\n"))
    assert not engine.authorize(odd, "message", BOB, now=NOW).allowed
    assert not engine.authorize(BOB, "message", odd, now=NOW).allowed


def test_roles_given_as_a_list_are_accepted() -> None:
    principal = Principal(ALICE.did, "alice", ["worker"])  # type: ignore[arg-type]
    assert principal.roles == ("worker",)
    engine = PolicyEngine(policy(rule("workers-send", "allow", source="{roles: [worker]}")))
    assert engine.authorize(principal, "message", BOB, now=NOW).allowed


def test_cedar_policies_has_one_policy_per_rule_with_its_id() -> None:
    engine = PolicyEngine(
        policy(
            rule("everyone", "allow")
            + rule(
                "no-bob", "deny", target="{agents: [bob]}", extra="expires_at: 2026-12-31T00:00:00Z"
            )
        )
    )
    text = engine.cedar_policies
    assert text.count("permit (") == 1
    assert text.count("forbid (") == 1
    assert '@id("everyone")' in text
    assert '@id("no-bob")' in text
    assert f"context.now < {END}" in text


def test_rate_limits_for_uses_the_default_per_agent_bucket() -> None:
    engine = PolicyEngine(default_policy())
    assert engine.rate_limits_for(BOB) == [(f"agent:{BOB.did}", "1000/second")]


RATED = (
    "version: 1\n"
    "policies:\n"
    "  communication: {default: deny, rules: []}\n"
    "  access_control:\n"
    "    roles: {worker: w, auditor: a}\n"
    "    rate_limits:\n"
    "      default: 200/second\n"
    "      roles: {worker: 500/second}\n"
    "      agents:\n"
    "        alice: 50/second\n"
    f"        {BOB.did}: 70/second\n"
)


def test_rate_limits_for_prefers_agent_limits_by_name_or_did_and_adds_role_buckets() -> None:
    engine = PolicyEngine(parse_policy(RATED))
    assert engine.rate_limits_for(ALICE) == [
        (f"agent:{ALICE.did}", "50/second"),
        ("role:worker", "500/second"),
    ]
    assert engine.rate_limits_for(BOB) == [(f"agent:{BOB.did}", "70/second")]
    # Carol's role has no limit of its own: only the default applies.
    assert engine.rate_limits_for(CAROL) == [(f"agent:{CAROL.did}", "200/second")]


def test_role_bucket_key_is_shared_by_all_members() -> None:
    engine = PolicyEngine(parse_policy(RATED))
    other_worker = Principal(
        "did:key:z6MkDave11111111111111111111111111111111111", "dave", ("worker",)
    )
    alice_buckets = dict(engine.rate_limits_for(ALICE))
    dave_buckets = dict(engine.rate_limits_for(other_worker))
    assert "role:worker" in alice_buckets
    assert "role:worker" in dave_buckets
    assert f"agent:{ALICE.did}" not in dave_buckets


def test_decisions_for_many_agents_stay_fast_when_cached() -> None:
    engine = PolicyEngine(default_policy())
    engine.authorize(ALICE, "message", BOB, now=NOW)
    started = time.perf_counter()
    for _ in range(10_000):
        engine.authorize(ALICE, "message", BOB, now=NOW)
    per_call = (time.perf_counter() - started) / 10_000
    # Generous bound: a cache hit must be far cheaper than a Cedar call (~200 µs).
    assert per_call < 50e-6
