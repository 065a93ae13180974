"""``trustwire policy validate`` and ``policy check`` against a real home and policy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _cli_home import did_of, invoke, make_home, one_error_line

from trustwire.cli.failure import ExitCode
from trustwire.cli.settings import run
from trustwire.home import Home

POLICY = """\
version: 1
policies:
  communication:
    default: deny
    max_message_bytes: 4096
    rules:
      - id: workers-talk
        effect: allow
        from: {roles: [worker]}
        to: "*"
        actions: [message]
      - id: no-messages-to-vault
        effect: deny
        from: "*"
        to: {agents: [vault]}
        actions: [message]
      - id: audit-window
        effect: allow
        from: {agents: [carol]}
        to: {agents: [bob]}
        actions: [message, memory.read]
        not_before: 2030-01-01T00:00:00Z
        expires_at: 2030-02-01T00:00:00Z
  access_control:
    roles:
      worker: "does work"
    rate_limits:
      default: "50/second"
      roles: {worker: "200/second"}
  monitoring:
    automatic_alerts: false
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice (worker), bob, carol and vault under POLICY; nothing here changes it."""
    path = tmp_path_factory.mktemp("policy") / "home"
    make_home(path, agents=())
    (path / "policy.yaml").write_text(POLICY)
    for name, roles in (("alice", ["--role", "worker"]), ("bob", []), ("carol", [])):
        assert invoke(path, "agent", "create", name, *roles).exit_code == 0
    assert invoke(path, "agent", "create", "vault", "--role", "worker").exit_code == 0
    return path


# -- validate -------------------------------------------------------------------------------


def test_validate_prints_valid_and_summarises_rules_roles_and_time_limits(home: Path) -> None:
    result = invoke(home, "policy", "validate", str(home / "policy.yaml"))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("✔ valid: ")
    assert "rules: 3 (2 allow, 1 deny; default deny)" in out
    assert "roles: 1 (worker)" in out
    assert "time-limited rules: 1" in out
    assert "audit-window: from 2030-01-01T00:00:00Z until 2030-02-01T00:00:00Z" in out
    assert "(not yet in force)" in out
    assert "role:worker" in out
    assert "default 50/second per agent; role worker 200/second shared" in out
    assert "max message size: 4096 bytes" in out
    assert "automatic alerts off" in out


def test_validate_reports_the_file_line_and_problem_and_exits_3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("actions: [message, memory.read]", "actions: [mesage]"))
    result = invoke(tmp_path / "no-home", "policy", "validate", str(bad))
    assert result.exit_code == ExitCode.CONFIGURATION
    line = one_error_line(result)
    assert line.startswith(f"error: {bad}:21: rule 'audit-window': unknown action")
    assert "mesage" in line
    assert result.stdout == ""


def test_validate_refuses_a_missing_file(tmp_path: Path) -> None:
    result = invoke(tmp_path, "policy", "validate", str(tmp_path / "absent.yaml"))
    assert result.exit_code == ExitCode.CONFIGURATION
    assert "cannot read policy file" in one_error_line(result)


# -- check ----------------------------------------------------------------------------------


def test_check_allows_by_role_rule_and_names_it(home: Path) -> None:
    result = invoke(home, "policy", "check", "--from", "alice", "--to", "bob")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("allowed: alice → bob (message) at ")
    assert "rule: workers-talk" in result.stdout
    assert "why:  allowed by rule workers-talk (allow, always)" in result.stdout


def test_check_denied_by_a_deny_rule_exits_7(home: Path) -> None:
    result = invoke(home, "policy", "check", "--from", "alice", "--to", "vault")
    assert result.exit_code == ExitCode.DENIED
    assert "rule: no-messages-to-vault" in result.stdout
    assert "denied by rule no-messages-to-vault (deny, always)" in result.stdout
    assert one_error_line(result) == (
        "error: denied: alice may not message vault: denied by rule no-messages-to-vault"
    )


def test_check_default_deny_names_the_grant_that_is_not_in_force_yet(home: Path) -> None:
    result = invoke(home, "policy", "check", "--from", "carol", "--to", "bob")
    assert result.exit_code == ExitCode.DENIED
    assert "rule: -" in result.stdout
    assert "why:  no rule allows this (default deny)" in result.stdout
    assert (
        "note: rule audit-window would allow this but is not in force then: "
        "from 2030-01-01T00:00:00Z until 2030-02-01T00:00:00Z (not yet in force)"
    ) in result.stdout
    assert "default deny" in one_error_line(result)


def test_check_at_decides_at_that_instant_including_the_window(home: Path) -> None:
    inside = invoke(
        home, "policy", "check", "--from", "carol", "--to", "bob", "--at", "2030-01-15T12:00:00Z"
    )
    assert inside.exit_code == 0, inside.stderr
    assert "at 2030-01-15T12:00:00Z" in inside.stdout
    assert "allowed by rule audit-window (allow, from 2030-01-01T00:00:00Z until " in inside.stdout
    at_expiry = invoke(
        home, "policy", "check", "--from", "carol", "--to", "bob", "--at", "2030-02-01T01:00+01:00"
    )
    assert at_expiry.exit_code == ExitCode.DENIED
    assert "(expired)" in at_expiry.stdout


def test_check_action_selects_the_rules_for_that_action(home: Path) -> None:
    args = ["--from", "alice", "--to", "bob", "--action", "memory.read"]
    result = invoke(home, "policy", "check", *args)
    assert result.exit_code == ExitCode.DENIED
    assert "(memory.read)" in result.stdout


def test_check_json_resolves_dids_and_reports_the_decision(home: Path) -> None:
    carol, bob = did_of(home, "carol"), did_of(home, "bob")
    args = ["--from", carol, "--to", bob, "--at", "2030-01-02T00:00:00Z", "--json"]
    result = invoke(home, "policy", "check", *args)
    assert result.exit_code == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["allowed"] is True and decision["policy_allowed"] is True
    assert decision["from"] == {"name": "carol", "did": carol}
    assert decision["to"] == {"name": "bob", "did": bob}
    assert decision["rule"] == "audit-window"
    assert decision["not_before"] == "2030-01-01T00:00:00Z"
    assert decision["expires_at"] == "2030-02-01T00:00:00Z"
    assert decision["at"] == "2030-01-02T00:00:00Z"


def test_check_uses_a_draft_policy_file_when_given(home: Path, tmp_path: Path) -> None:
    draft = tmp_path / "draft.yaml"
    draft.write_text(
        POLICY.replace(
            'roles: [worker]}\n        to: "*"', "roles: [worker]}\n        to: {agents: [carol]}"
        )
    )
    result = invoke(
        home, "policy", "check", "--from", "alice", "--to", "bob", "--policy", str(draft)
    )
    assert result.exit_code == ExitCode.DENIED
    assert "default deny" in result.stdout


def test_check_refuses_an_unknown_agent_with_exit_4(home: Path) -> None:
    result = invoke(home, "policy", "check", "--from", "alice", "--to", "mallory")
    assert result.exit_code == ExitCode.UNKNOWN_AGENT
    assert one_error_line(result) == "error: unknown agent: mallory"


def test_check_refuses_a_time_without_a_timezone(home: Path) -> None:
    result = invoke(home, "policy", "check", "--from", "alice", "--to", "bob", "--at", "2030-01-01")
    assert result.exit_code == ExitCode.USAGE
    assert "has no timezone" in result.stderr


def test_check_denies_a_revoked_agent_whatever_the_policy_says(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", agents=("alice", "bob"))

    async def revoke() -> None:
        store = await Home(home).open_store()
        try:
            await store.agents.revoke(did_of(home, "bob"), at=time.time())
        finally:
            await store.close()

    run(revoke())
    result = invoke(home, "policy", "check", "--from", "alice", "--to", "bob", "--json")
    assert result.exit_code == ExitCode.DENIED
    decision = json.loads(result.stdout)
    assert decision["policy_allowed"] is True
    assert decision["allowed"] is False
    assert decision["revoked"] == ["bob"]
    assert one_error_line(result) == "error: denied: alice may not message bob: bob is revoked"
