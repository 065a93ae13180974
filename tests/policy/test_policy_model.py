"""Policy file parsing and validation: every bad file is a precise ConfigurationError."""

from __future__ import annotations

import datetime
import os
import stat
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustwire.errors import ConfigurationError
from trustwire.policy import (
    DEFAULT_RATE_LIMIT,
    MAX_POLICY_BYTES,
    Effect,
    Monitoring,
    PolicyConfig,
    RateLimits,
    Rule,
    Selector,
    default_policy,
    load_policy,
    parse_policy,
    parse_rate_limit,
)

BOB_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiKC2RSkwWjTLW1Mm4qVbcG"

SEED = textwrap.dedent(
    f"""\
    version: 1
    policies:
      communication:
        default: deny
        max_message_bytes: 65536
        rules:
          - id: agents-may-talk
            effect: allow
            from: "*"
            to: "*"
            actions: [message]
          - id: workers-read
            effect: allow
            from: {{roles: [worker]}}
            to: {{agents: [bob, "{BOB_DID}"]}}
            actions: [memory.read, memory.write]
            not_before: 2026-01-01T00:00:00Z
            expires_at: "2026-12-31T01:00:00+01:00"
          - id: no-broker
            effect: deny
            from: {{agents: [mallory]}}
            to: "*"
            actions: [broker.use]
      access_control:
        roles:
          worker: "does work"
          auditor:
        rate_limits:
          default: "200/second"
          roles: {{worker: "500/second"}}
          agents: {{alice: "50/second;1000/minute"}}
      monitoring:
        security_events: true
        anomaly_detection: false
        automatic_alerts: true
    """
)


def test_seed_shaped_policy_parses_to_the_expected_model() -> None:
    config = parse_policy(SEED, source="seed.yaml")
    assert config.source == "seed.yaml"
    assert config.version == 1
    assert config.max_message_bytes == 65536
    assert [rule.id for rule in config.rules] == ["agents-may-talk", "workers-read", "no-broker"]
    talk, read, no_broker = config.rules
    assert talk.source == Selector.everyone()
    assert talk.effect is Effect.ALLOW
    assert talk.actions == ("message",)
    assert read.source == Selector(roles=frozenset({"worker"}))
    assert read.target == Selector(names=frozenset({"bob"}), dids=frozenset({BOB_DID}))
    assert read.actions == ("memory.read", "memory.write")
    assert read.not_before == int(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp())
    assert read.expires_at == int(datetime.datetime(2026, 12, 31, tzinfo=datetime.UTC).timestamp())
    assert no_broker.effect is Effect.DENY
    assert dict(config.roles) == {"worker": "does work", "auditor": ""}
    assert config.rate_limits.default == "200/second"
    assert dict(config.rate_limits.roles) == {"worker": "500/second"}
    assert dict(config.rate_limits.agents) == {"alice": "50/second;1000/minute"}
    assert config.monitoring == Monitoring(
        security_events=True, anomaly_detection=False, automatic_alerts=True
    )


def test_minimal_policy_gets_default_rate_limit_and_monitoring() -> None:
    config = parse_policy("version: 1\npolicies:\n  communication: {default: deny, rules: []}\n")
    assert config.rules == ()
    assert config.rate_limits == RateLimits(default=DEFAULT_RATE_LIMIT)
    assert config.monitoring == Monitoring()
    assert config.max_message_bytes is None


def test_default_policy_allows_everyone_to_message_at_the_default_rate() -> None:
    config = default_policy()
    messaging, memory = config.rules
    for rule in config.rules:
        assert rule.effect is Effect.ALLOW
        assert rule.source.any and rule.target.any
    assert messaging.actions == ("message",)
    # Shared memories are usable by default (each memory's grants still decide); the
    # broker is not.
    assert memory.actions == ("memory.read", "memory.write")
    assert config.rate_limits.default == "1000/second"


def test_default_policy_round_trips_through_yaml() -> None:
    text = default_policy().to_yaml()
    assert text.startswith("#")
    assert parse_policy(text) == default_policy()


def test_full_policy_round_trips_through_yaml() -> None:
    config = parse_policy(SEED)
    assert parse_policy(config.to_yaml()) == config


def test_programmatic_config_round_trips_through_yaml() -> None:
    config = PolicyConfig(
        rules=(
            Rule(
                id="r1",
                effect=Effect.DENY,
                source=Selector(names=frozenset({"a", "b"}), roles=frozenset({"ops"})),
                target=Selector(dids=frozenset({BOB_DID})),
                actions=("message", "broker.use"),
                not_before=1_700_000_000,
                expires_at=1_800_000_000,
            ),
        ),
        roles={"ops": "operators"},
        rate_limits=RateLimits(
            default="5/second", roles={"ops": "9/minute"}, agents={"a": "1/minute"}
        ),
        monitoring=Monitoring(automatic_alerts=False),
        max_message_bytes=1024,
    )
    assert parse_policy(config.to_yaml()) == config


def test_time_boundaries_lists_every_rule_start_and_end_once() -> None:
    config = parse_policy(SEED)
    (read,) = [rule for rule in config.rules if rule.id == "workers-read"]
    assert config.time_boundaries() == (read.not_before, read.expires_at)
    assert default_policy().time_boundaries() == ()


def test_rule_active_at_uses_a_half_open_window() -> None:
    rule = Rule("r", Effect.ALLOW, Selector.everyone(), Selector.everyone(), ("message",), 10, 20)
    assert [rule.active_at(t) for t in (9.99, 10, 19.99, 20)] == [False, True, True, False]


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(SEED, encoding="utf-8")
    config = load_policy(path)
    assert config.source == str(path)
    assert config == parse_policy(SEED)


def test_load_policy_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read policy file") as info:
        load_policy(tmp_path / "absent.yaml")
    assert info.value.path == str(tmp_path / "absent.yaml")


def test_load_policy_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        load_policy(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_load_policy_refuses_a_fifo_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        load_policy(fifo)


def test_load_policy_refuses_an_oversized_file_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_POLICY_BYTES + 1))
    with pytest.raises(ConfigurationError, match="limit") as info:
        load_policy(path)
    assert info.value.path == str(path)


def test_load_policy_refuses_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(ConfigurationError, match="UTF-8"):
        load_policy(path)


def test_parse_policy_refuses_oversized_text() -> None:
    with pytest.raises(ConfigurationError, match="limit"):
        parse_policy("#" * (MAX_POLICY_BYTES + 1))
    # Multi-byte characters count as bytes, not characters.
    with pytest.raises(ConfigurationError, match="limit"):
        parse_policy("#" + "é" * (MAX_POLICY_BYTES // 2 + 1))


def test_policy_file_written_by_to_yaml_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(default_policy().to_yaml(), encoding="utf-8")
    assert stat.S_ISREG(path.stat().st_mode)
    assert load_policy(path) == default_policy()


# -- malformed files: (name, text, expected line, message fragment) ---------------------

GOOD_RULE = """\
version: 1
policies:
  communication:
    default: deny
    rules:
      - id: r1
        effect: allow
        from: "*"
        to: "*"
        actions: [message]
  access_control:
    roles: {worker: w}
"""


def edit(old: str, new: str) -> str:
    assert old in GOOD_RULE
    return GOOD_RULE.replace(old, new, 1)


MALFORMED = [
    ("unknown top-level key", GOOD_RULE + "extra: 1\n", 13, "unknown key 'extra'"),
    ("unknown rule key (typo)", edit("        to:", "        too:"), 9, "unknown key 'too'"),
    ("unknown section", edit("  access_control:", "  acess_control:"), 11, "unknown key"),
    ("bad effect", edit("effect: allow", "effect: permit"), 7, "effect must be 'allow' or 'deny'"),
    ("default allow", edit("default: deny", "default: allow"), 4, "default deny is not optional"),
    ("missing default", edit("    default: deny\n", ""), 4, "missing required key 'default'"),
    (
        "undefined role in a rule",
        edit('from: "*"', "from: {roles: [admin]}"),
        8,
        "role 'admin' is not defined",
    ),
    (
        "duplicate rule id",
        GOOD_RULE.replace(
            "  access_control:",
            '      - id: r1\n        effect: deny\n        from: "*"\n        to: "*"\n'
            "        actions: [message]\n  access_control:",
        ),
        11,
        "duplicate rule id 'r1'",
    ),
    (
        "bad timestamp",
        edit("actions: [message]", "actions: [message]\n        not_before: 2026-13-45T00:00:00Z"),
        11,
        "not a valid timestamp",
    ),
    (
        "timestamp without timezone",
        edit("actions: [message]", "actions: [message]\n        not_before: 2026-01-01T00:00:00"),
        11,
        "needs a timezone",
    ),
    (
        "date without time",
        edit("actions: [message]", "actions: [message]\n        expires_at: 2026-01-01"),
        11,
        "needs a time of day",
    ),
    (
        "expires before not_before",
        edit(
            "actions: [message]",
            "actions: [message]\n        not_before: 2026-06-01T00:00:00Z\n"
            "        expires_at: 2026-01-01T00:00:00Z",
        ),
        12,
        "expires_at must be after not_before",
    ),
    (
        "bad limit string",
        GOOD_RULE + "    rate_limits: {default: lots/second}\n",
        13,
        "invalid rate limit",
    ),
    (
        "zero limit",
        GOOD_RULE + "    rate_limits: {default: 0/second}\n",
        13,
        "at least 1",
    ),
    (
        "rate limit for undefined role",
        GOOD_RULE + "    rate_limits: {roles: {admin: 5/second}}\n",
        13,
        "role 'admin' is not defined",
    ),
    ("wrong type: actions", edit("actions: [message]", "actions: message"), 10, "must be a list"),
    ("wrong type: id", edit("id: r1", "id: [r1]"), 6, "rule id must be a string"),
    ("wrong type: version", edit("version: 1", "version: one"), 1, "must be an integer"),
    ("unsupported version", edit("version: 1", "version: 2"), 1, "unsupported policy version"),
    (
        "wrong type: max_message_bytes",
        edit("default: deny", "default: deny\n    max_message_bytes: true"),
        5,
        "must be an integer",
    ),
    (
        "max_message_bytes out of range",
        edit("default: deny", "default: deny\n    max_message_bytes: 0"),
        5,
        "between 1 and",
    ),
    (
        "monitoring switch not a boolean",
        GOOD_RULE.replace(
            "  access_control:", "  monitoring: {security_events: maybe}\n  access_control:"
        ),
        11,
        "must be true or false",
    ),
    ("non-mapping top level", "- version: 1\n", 1, "must be a mapping, not a list"),
    ("scalar top level", "just text\n", 1, "must be a mapping, not a string"),
    ("invalid YAML", edit('to: "*"', 'to: "*'), None, "invalid YAML"),
    ("unquoted star", edit('from: "*"', "from: *"), 8, "invalid YAML"),
    ("unknown action", edit("[message]", "[mesage]"), 10, "unknown action 'mesage'"),
    ("duplicate action", edit("[message]", "[message, message]"), 10, "listed twice"),
    ("no actions", edit("[message]", "[]"), 10, "at least one action"),
    ("empty selector", edit('from: "*"', "from: {}"), 8, "selects no agent"),
    ("selector string", edit('from: "*"', "from: everyone"), 8, 'must be "*"'),
    ("bad DID", edit('to: "*"', 'to: {agents: ["did:web:example.com"]}'), 9, "not a did:key"),
    ("bad agent name", edit('to: "*"', 'to: {agents: ["bob smith"]}'), 9, "not a valid agent"),
    ("bad rule id", edit("id: r1", 'id: "r 1"'), 6, "rule id"),
    ("missing rule key", edit('        to: "*"\n', ""), 6, "missing required key 'to'"),
    ("duplicate key", edit("effect: allow", "effect: allow\n        effect: deny"), 8, "duplicate"),
    ("non-string key", edit("effect: allow", "effect: allow\n        1: x"), 8, "keys must be str"),
    ("anchor", edit("roles: {worker: w}", "roles: &r {worker: w}"), 12, "anchors"),
    ("alias", GOOD_RULE + "extra: *r\n", 13, "alias"),
    ("two documents", GOOD_RULE + "---\nversion: 1\n", 13, "invalid YAML"),
    ("empty file", "", None, "empty"),
    ("comment only", "# nothing\n", None, "empty"),
    ("deep nesting", "a: " + "[" * 200, 1, "nesting deeper"),
    ("control character", "version: 1\n\x07\n", 2, "U+0007"),
    ("bad role name", edit("roles: {worker: w}", 'roles: {"bad role": w}'), 12, "role name"),
    ("role description type", edit("roles: {worker: w}", "roles: {worker: [w]}"), 12, "string"),
    ("custom tag", edit("effect: allow", "effect: !!python/name:os.system allow"), 7, "string"),
]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [pytest.param(text, line, fragment, id=name) for name, text, line, fragment in MALFORMED],
)
def test_malformed_policy_is_rejected_with_the_line(
    text: str, line: int | None, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_policy(text, source="bad.yaml")
    assert fragment in str(info.value)
    assert info.value.path == "bad.yaml"
    if line is not None:
        assert info.value.line == line
        assert str(info.value).startswith(f"bad.yaml:{line}: ")


def test_malformed_table_covers_every_case_with_a_valid_baseline() -> None:
    # The edits above must be what makes each file invalid.
    assert parse_policy(GOOD_RULE).rules[0].id == "r1"


def test_invalid_yaml_error_has_a_line() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_policy(edit('to: "*"', 'to: "*'))
    assert info.value.line is not None


@pytest.mark.parametrize(
    "text", ["200/second", "1/minute", "10 per minute", "10/second;500/hour", "5/2 minutes"]
)
def test_parse_rate_limit_accepts_limits_notation(text: str) -> None:
    assert parse_rate_limit(text)


@pytest.mark.parametrize("text", ["", " ", "lots", "10/fortnight", "-1/second", "0/second", "/s"])
def test_parse_rate_limit_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_rate_limit(text)


def test_parse_policy_rejects_bytes_as_misuse() -> None:
    with pytest.raises(TypeError):
        parse_policy(b"version: 1")  # type: ignore[arg-type]


# -- property tests ----------------------------------------------------------------------


def _parse_or_configuration_error(text: str) -> None:
    try:
        parse_policy(text)
    except ConfigurationError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_random_text_only_ever_raises_configuration_error(text: str) -> None:
    _parse_or_configuration_error(text)


YAML_ALPHABET = st.sampled_from(list(" \n\t-:{}[],\"'*&!#|>%@`?") + list("abcdefxyz0123456789"))


@settings(max_examples=300, deadline=None)
@given(st.text(YAML_ALPHABET, max_size=300))
def test_random_yaml_like_text_only_ever_raises_configuration_error(text: str) -> None:
    _parse_or_configuration_error(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=0, max_value=len(SEED) - 1),
    st.integers(min_value=0, max_value=40),
    st.text(YAML_ALPHABET, max_size=12),
)
def test_mutated_valid_policy_only_ever_raises_configuration_error(
    start: int, length: int, replacement: str
) -> None:
    _parse_or_configuration_error(SEED[:start] + replacement + SEED[start + length :])


def test_broker_service_names_with_underscores_can_be_named_in_rules() -> None:
    text = """\
version: 1
policies:
  communication:
    default: deny
    rules:
      - id: workers-may-use-the-api
        effect: allow
        from: "*"
        to: {agents: [my_example_service]}
        actions: [broker.use]
"""
    (rule,) = parse_policy(text).rules
    assert rule.target.names == frozenset({"my_example_service"})
