"""``trustwire registry verify``: the registry log checked read-only, and against the store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from _cli_home import invoke, make_home, one_error_line

from trustwire.audit.log import MerkleLog
from trustwire.cli.failure import CommandFailed, ExitCode
from trustwire.cli.serve import _open_registry as open_serving_registry
from trustwire.home import Home


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path / "home")


def run_sql(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(statement)
    connection.close()


def test_a_fresh_home_registry_verifies_and_agrees_with_the_directory(home: Path) -> None:
    result = invoke(home, "registry", "verify", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert (report["agents"], report["revoked"]) == (2, 0)
    # Each agent: its enrolment and its first certificate.
    assert report["entries"] == report["head"]["size"] == 4
    assert report["head"]["origin"] == "trustwire/registry"


def test_the_human_output_names_the_registry(home: Path) -> None:
    result = invoke(home, "registry", "verify")
    assert result.exit_code == 0, result.stderr
    assert "registry verified" in result.stdout


def test_an_edited_entry_fails_verification(home: Path) -> None:
    run_sql(
        home / "registry.db",
        "UPDATE entries SET data = CAST(replace(CAST(data AS TEXT), '\"roles\":[]', "
        '\'"roles":["admin"]\') AS BLOB) WHERE idx = 0',
    )
    result = invoke(home, "registry", "verify")
    assert result.exit_code == ExitCode.FAILED
    assert "registry verification failed" in one_error_line(result)


def test_a_directory_changed_behind_the_registrys_back_is_reported(home: Path) -> None:
    run_sql(home / "coordinator.db", "UPDATE agents SET roles = '[\"admin\"]' WHERE name = 'bob'")
    result = invoke(home, "registry", "verify", "--json")
    assert result.exit_code == ExitCode.FAILED
    problems = json.loads(result.stdout)["problems"]
    assert any("bob" in p and "roles" in p for p in problems), problems
    skipped = invoke(home, "registry", "verify", "--no-directory")
    assert skipped.exit_code == 0, skipped.stderr


def test_another_log_file_is_not_taken_for_the_registry(home: Path) -> None:
    audit = home / "audit.db"
    with MerkleLog.open_sqlite(audit, origin="trustwire/audit"):
        pass
    result = invoke(home, "registry", "verify", "--log", str(audit), "--no-directory")
    assert result.exit_code == ExitCode.FAILED
    assert "not the registry" in result.stdout + result.stderr


def test_a_saved_head_is_still_extended_after_more_enrolments(home: Path) -> None:
    saved = home.parent / "registry-head.json"
    exported = invoke(home, "registry", "head", "--out", str(saved))
    assert exported.exit_code == 0, exported.stderr
    assert json.loads(saved.read_text())["origin"] == "trustwire/registry"
    assert invoke(home, "agent", "create", "carol").exit_code == 0
    result = invoke(home, "registry", "verify", "--since-head", str(saved), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["entries"] == 6


def test_a_registry_rebuilt_from_scratch_does_not_extend_a_saved_head(
    home: Path, tmp_path: Path
) -> None:
    saved = tmp_path / "registry-head.json"
    assert invoke(home, "registry", "head", "--out", str(saved)).exit_code == 0
    # History rewritten: the log removed and the directory imported again from the store.
    (home / "registry.db").unlink()
    for suffix in ("-wal", "-shm"):
        (home / f"registry.db{suffix}").unlink(missing_ok=True)
    assert invoke(home, "agent", "create", "carol").exit_code == 0
    result = invoke(home, "registry", "verify", "--since-head", str(saved), "--no-directory")
    assert result.exit_code == ExitCode.FAILED


async def test_serve_logs_agents_of_a_home_older_than_the_registry(home: Path) -> None:
    for name in ("registry.db", "registry.db-wal", "registry.db-shm"):
        (home / name).unlink(missing_ok=True)
    served = Home(home)
    store = await served.open_store()
    try:
        registry = await open_serving_registry(served, store)
        try:
            assert registry.head().size == 2  # one enrol entry per agent
            await registry.verify_against_directory()
        finally:
            await registry.close()
    finally:
        await store.close()


async def test_serve_refuses_a_registry_that_disagrees_with_the_directory(home: Path) -> None:
    run_sql(home / "coordinator.db", "UPDATE agents SET roles = '[\"admin\"]' WHERE name = 'bob'")
    served = Home(home)
    store = await served.open_store()
    try:
        with pytest.raises(CommandFailed, match="disagree"):
            await open_serving_registry(served, store)
    finally:
        await store.close()
