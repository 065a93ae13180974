"""The policy file's ``sessions`` section: per-agent session defaults, validated strictly."""

from __future__ import annotations

import textwrap

import pytest

from trustwire.errors import ConfigurationError
from trustwire.policy import PolicyEngine, Principal, default_policy, parse_policy
from trustwire.policy.model import SessionDefaults
from trustwire.sessions.model import SessionConfig

ALICE_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiKC2RSkwWjTLW1Mm4qVbcG"
BOB_DID = "did:key:z6MkfrQREUK7mDSoV9Bn3RhD7GZbYjXXkcVm5Vd3n4hmuW2e"

HEAD = """\
version: 1
policies:
  communication:
    default: deny
    rules: []
  access_control:
    roles: {worker: "", auditor: ""}
"""

FULL = HEAD + textwrap.indent(
    textwrap.dedent(
        f"""\
        sessions:
          defaults:
            timeoutMinutes: 60
            autoRenew: true
            maxDurationMinutes: 720
            warningThresholdMinutes: 5
          roles:
            worker: {{autoRenew: false, timeoutMinutes: 20}}
            auditor: {{timeoutMinutes: 90}}
          agents:
            alice: {{timeoutMinutes: 15}}
            "{ALICE_DID}": {{warningThresholdMinutes: 2}}
        """
    ),
    "  ",
)


def test_the_section_parses_into_session_defaults() -> None:
    config = parse_policy(FULL)
    assert config.sessions.defaults == {
        "timeoutMinutes": 60,
        "autoRenew": True,
        "maxDurationMinutes": 720,
        "warningThresholdMinutes": 5,
    }
    assert config.sessions.roles == {
        "worker": {"autoRenew": False, "timeoutMinutes": 20},
        "auditor": {"timeoutMinutes": 90},
    }
    assert config.sessions.agents["alice"] == {"timeoutMinutes": 15}


def test_the_section_round_trips_through_yaml() -> None:
    config = parse_policy(FULL)
    assert parse_policy(config.to_yaml()) == config


def test_a_policy_without_the_section_renders_as_before() -> None:
    assert "sessions" not in default_policy().to_yaml()
    assert not default_policy().sessions
    assert parse_policy(HEAD).sessions == SessionDefaults()


def test_session_defaults_merge_defaults_roles_then_name_then_did() -> None:
    engine = PolicyEngine(parse_policy(FULL))
    alice = Principal(ALICE_DID, "alice", ("auditor", "worker"))
    assert engine.session_defaults_for(alice) == {
        "timeoutMinutes": 15,  # name entry over the roles
        "autoRenew": False,  # worker role
        "maxDurationMinutes": 720,
        "warningThresholdMinutes": 2,  # DID entry
    }
    # Roles apply in the file's order whatever order the agent holds them in: auditor
    # comes after worker in the file, so its timeout wins.
    bob = Principal(BOB_DID, "bob", ("auditor", "worker"))
    assert engine.session_defaults_for(bob) == {
        "timeoutMinutes": 90,
        "autoRenew": False,
        "maxDurationMinutes": 720,
        "warningThresholdMinutes": 5,
    }
    assert engine.session_defaults_for(Principal(BOB_DID, "bob")) == {
        "timeoutMinutes": 60,
        "autoRenew": True,
        "maxDurationMinutes": 720,
        "warningThresholdMinutes": 5,
    }


def test_no_section_means_no_defaults() -> None:
    engine = PolicyEngine(default_policy())
    assert engine.session_defaults_for(Principal(ALICE_DID, "alice", ("worker",))) is None


def test_precedence_session_over_agent_over_role_over_defaults_over_builtins() -> None:
    policy = HEAD + textwrap.indent(
        textwrap.dedent(
            """\
            sessions:
              defaults: {timeoutMinutes: 60, warningThresholdMinutes: 10}
              roles: {worker: {timeoutMinutes: 40, autoRenew: false}}
              agents: {alice: {timeoutMinutes: 20}}
            """
        ),
        "  ",
    )
    engine = PolicyEngine(parse_policy(policy))
    alice = Principal(ALICE_DID, "alice", ("worker",))
    agent = engine.session_defaults_for(alice)
    assert SessionConfig.resolve({"timeoutMinutes": 10}, agent) == SessionConfig(10, False, 720, 10)
    assert SessionConfig.resolve(None, agent) == SessionConfig(20, False, 720, 10)
    carol = engine.session_defaults_for(Principal(BOB_DID, "carol", ("worker",)))
    assert SessionConfig.resolve(None, carol) == SessionConfig(40, False, 720, 10)
    dave = engine.session_defaults_for(Principal(BOB_DID, "dave"))
    assert SessionConfig.resolve(None, dave) == SessionConfig(60, True, 720, 10)


def test_replacing_the_policy_changes_the_defaults() -> None:
    engine = PolicyEngine(parse_policy(FULL))
    engine.replace(default_policy())
    assert engine.session_defaults_for(Principal(ALICE_DID, "alice")) is None


def _sessions(body: str) -> str:
    return HEAD + "  sessions:\n" + textwrap.indent(textwrap.dedent(body), "    ")


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("defaults: {timeout: 30}\n", 9, "sessions.defaults: unknown key 'timeout'"),
        ("defaults: {timeoutMinutes: '30'}\n", 9, "timeoutMinutes must be an integer"),
        ("defaults: {timeoutMinutes: 30.5}\n", 9, "timeoutMinutes must be an integer"),
        ("defaults: {autoRenew: 1}\n", 9, "autoRenew must be true or false"),
        ("defaults: {timeoutMinutes: 4}\n", 9, "between 5 and 1440, not 4"),
        ("defaults: {timeoutMinutes: 1441}\n", 9, "between 5 and 1440, not 1441"),
        ("defaults: {maxDurationMinutes: 3000}\n", 9, "between 5 and 2880, not 3000"),
        ("defaults: {warningThresholdMinutes: 0}\n", 9, "between 1 and 2880, not 0"),
        (
            "defaults:\n  timeoutMinutes: 60\n  maxDurationMinutes: 30\n",
            11,
            "maxDurationMinutes (30) must not be below timeoutMinutes (60)",
        ),
        ("roles: {boss: {autoRenew: false}}\n", 9, "role 'boss' is not defined"),
        ("agents: {'bad name': {timeoutMinutes: 30}}\n", 9, "not an agent name or DID"),
        ("agents: {'did:key:nope': {timeoutMinutes: 30}}\n", 9, "not an agent name or DID"),
        ("agents: {alice: 30}\n", 9, "sessions.agents.alice must be a mapping"),
        ("agents: {alice: {}, alice: {}}\n", 9, "duplicate key 'alice'"),
        ("timeoutMinutes: 30\n", 9, "sessions: unknown key 'timeoutMinutes'"),
        ("- defaults\n", 9, "sessions must be a mapping"),
    ],
)
def test_bad_session_defaults_are_refused_with_the_line(body: str, line: int, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_policy(_sessions(body), source="policy.yaml")
    assert raised.value.line == line, str(raised.value)
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"policy.yaml:{line}: ")
