"""``trustwire demo``: every check passes, each is shown, and a broken property fails it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from trustwire.cli import demo as demo_module
from trustwire.cli.failure import ExitCode
from trustwire.cli.main import cli

EXPECTED_CHECKS = {
    "identities.did_key",
    "identities.certificates",
    "tls.authenticated",
    "channel.established",
    "channel.first_message",
    "messages.delivered",
    "messages.encrypted_on_wire",
    "receipts.signed",
    "store.no_plaintext",
    "offline.queued",
    "offline.stored_ciphertext",
    "offline.delivered",
    "offline.exactly_once",
    "offline.receipt",
    "replay.detected",
    "replay.no_duplicate",
    "policy.denied",
    "policy.nothing_queued",
    "auth.not_enrolled",
    "auth.foreign_ca",
    "session.message",
    "session.ended_refused",
    "memory.shared",
    "memory.revoked",
    "memory.ciphertext_only",
}


def test_demo_exits_0_and_its_json_summary_lists_every_check_passed() -> None:
    result = CliRunner().invoke(cli, ["demo", "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    checks = {check["id"]: check for check in summary["checks"]}
    assert set(checks) == EXPECTED_CHECKS
    assert all(check["passed"] for check in checks.values()), checks
    assert summary["passed"] is True
    assert [agent["name"] for agent in summary["identities"]] == [
        "alice",
        "bob",
        "carol",
        "mallory",
    ]
    assert all(agent["did"].startswith("did:key:z6Mk") for agent in summary["identities"])
    assert len(summary["ca_fingerprint"]) == 64
    assert summary["duration_seconds"] < 30


def test_demo_shows_every_step_with_a_mark_per_check() -> None:
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.stdout
    marks = [line for line in out.splitlines() if line.startswith(("✔", "✘"))]
    assert len(marks) == len(EXPECTED_CHECKS)
    assert all(line.startswith("✔") for line in marks)
    for shown in (
        "Noise_IK_25519_AESGCM_SHA256 channel established alice -> bob",
        "CHANNEL_INIT",
        "CHANNEL_ACCEPT",
        "ciphertext (what the coordinator sees)",
        "replay.detected",
        "message.denied",
        "DID not enrolled",
        f"all {len(EXPECTED_CHECKS)} checks passed",
    ):
        assert shown in out
    assert "did:key:z6Mk" in out


def test_demo_exits_non_zero_and_names_the_check_when_a_property_is_broken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pretend the coordinator's database leaked every plaintext it was asked about.
    monkeypatch.setattr(demo_module._State, "store_files_contain", lambda self, needle: True)
    result = CliRunner().invoke(cli, ["demo", "--json"])
    assert result.exit_code == ExitCode.FAILED
    summary = json.loads(result.stdout)
    failed = {check["id"] for check in summary["checks"] if not check["passed"]}
    assert failed == {"store.no_plaintext", "offline.stored_ciphertext"}
    assert summary["passed"] is False
    assert result.stderr.strip() == (
        "error: 2 of 25 demo checks failed: store.no_plaintext, offline.stored_ciphertext"
    )
