"""The trustwire command in-process (click's CliRunner): init, agents, and failures."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import trustwire
from trustwire.cli import agents as agents_module
from trustwire.cli.failure import CommandFailed, ExitCode, describe
from trustwire.cli.main import cli
from trustwire.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionClosed,
    ConnectionFailed,
    DuplicateAgent,
    KeyFileError,
    PolicyDenied,
    RateLimited,
    ReceiptTimeout,
    ReplayDetected,
    UnknownAgent,
)
from trustwire.home import Home

DID_RE = re.compile(r"did:key:z6Mk[1-9A-HJ-NP-Za-km-z]+")


def invoke(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    environment = {"TRUSTWIRE_PASSPHRASE": "", "TRUSTWIRE_COORDINATOR": "", **(env or {})}
    return runner.invoke(cli, ["--home", str(home), *args], env=environment)


def one_error_line(result: Result) -> str:
    """The failure reason; asserts it is exactly one line and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    result = invoke(path, "init", "--domain", "acme", "--coordinator", "127.0.0.1:7999")
    assert result.exit_code == 0, result.stdout + result.stderr
    return path


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = invoke(tmp_path, "--version")
    assert result.exit_code == 0
    assert trustwire.__version__ in result.stdout


def test_init_creates_the_domain_and_prints_the_ca_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "home"
    result = invoke(path, "init", "--domain", "acme", "--coordinator", "127.0.0.1:7999")
    assert result.exit_code == 0, result.stderr
    loaded = Home(path)
    assert loaded.config.domain == "acme"
    assert loaded.config.coordinator == "127.0.0.1:7999"
    assert loaded.config.ca_fingerprint in result.stdout
    for item in ("ca/ca.pem", "coordinator/tls.crt", "policy.yaml", "config.json"):
        assert item in result.stdout
        assert (path / item).exists()
    assert loaded.policy().rules, "the default policy lets enrolled agents talk"
    assert "unencrypted" in result.stderr


def test_init_refuses_to_overwrite_an_existing_home(home: Path) -> None:
    before = (home / "ca" / "ca.pem").read_bytes()
    result = invoke(home, "init")
    assert result.exit_code == ExitCode.CONFIGURATION
    assert "already holds a trustwire home" in one_error_line(result)
    assert (home / "ca" / "ca.pem").read_bytes() == before


def test_init_rejects_a_malformed_coordinator_address(tmp_path: Path) -> None:
    result = invoke(tmp_path / "home", "init", "--coordinator", "no-port")
    assert result.exit_code == ExitCode.USAGE
    assert not (tmp_path / "home").exists()


def test_agent_create_enrols_the_agent_and_agent_list_shows_it(home: Path) -> None:
    created = invoke(home, "agent", "create", "alice", "--role", "ops", "--role", "ops")
    assert created.exit_code == 0, created.stderr
    did = DID_RE.search(created.stdout)
    assert did is not None
    assert "role 'ops' is not defined in policy.yaml" in created.stderr
    listed = invoke(home, "agent", "list")
    assert listed.exit_code == 0
    line = next(row for row in listed.stdout.splitlines() if row.startswith("alice"))
    assert did.group() in line
    assert "ops" in line
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line), "certificate expiry"
    assert "active" in line
    events = (home / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["kind"] == "agent.enrolled"


def test_agent_list_json_prints_one_object_per_agent_and_line(home: Path) -> None:
    for name in ("bob", "alice"):
        assert invoke(home, "agent", "create", name, "--role", "team").exit_code == 0
    result = invoke(home, "agent", "list", "--json")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["name"] for row in rows] == ["alice", "bob"]
    assert all(DID_RE.fullmatch(row["did"]) for row in rows)
    assert all(row["roles"] == ["team"] and row["status"] == "active" for row in rows)
    assert all(row["certificate_expires"].endswith("Z") for row in rows)


def test_agent_list_says_so_when_there_are_no_agents(home: Path) -> None:
    result = invoke(home, "agent", "list")
    assert result.exit_code == 0
    assert "no agents yet" in result.stdout


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x" * 65])
def test_agent_create_rejects_names_that_are_not_plain_names(home: Path, name: str) -> None:
    result = invoke(home, "agent", "create", name)
    assert result.exit_code == ExitCode.USAGE
    assert not (home.parent / "escape").exists()
    assert invoke(home, "agent", "list", "--json").stdout == ""


def test_agent_create_refuses_a_duplicate_name(home: Path) -> None:
    assert invoke(home, "agent", "create", "alice").exit_code == 0
    result = invoke(home, "agent", "create", "alice")
    assert result.exit_code == ExitCode.CONFIGURATION
    assert "already exists" in one_error_line(result)


def test_encrypted_keys_need_the_passphrase_and_nothing_is_created_without_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "home"
    secret = {"TRUSTWIRE_PASSPHRASE": "correct horse"}
    assert invoke(path, "init", env=secret).exit_code == 0
    assert b"ENCRYPTED" in (path / "ca" / "ca.key").read_bytes()
    for env in ({}, {"TRUSTWIRE_PASSPHRASE": "wrong"}):
        result = invoke(path, "agent", "create", "alice", env=env)
        assert result.exit_code == ExitCode.KEYS
        assert "passphrase" in one_error_line(result)
    assert invoke(path, "agent", "list", "--json").stdout == "", "no half-created agent"
    assert invoke(path, "agent", "create", "alice", env=secret).exit_code == 0


def test_ask_passphrase_prompts_instead_of_reading_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "home"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["--home", str(path), "--ask-passphrase", "init"],
        input="pw1\npw1\n",
        env={"TRUSTWIRE_PASSPHRASE": "ignored"},
    )
    assert result.exit_code == 0, result.stderr
    assert "pw1" not in result.stdout
    opened = Home(path, "pw1").ca()
    assert opened.fingerprint == Home(path).config.ca_fingerprint


def test_home_comes_from_trustwire_home_when_no_option_is_given(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"TRUSTWIRE_HOME": str(tmp_path / "from-env"), "TRUSTWIRE_PASSPHRASE": ""}
    assert runner.invoke(cli, ["init"], env=env).exit_code == 0
    assert (tmp_path / "from-env" / "config.json").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("agent", "list"),
        ("agent", "create", "alice"),
        ("send", "--as", "alice", "--to", "bob", "hi"),
        ("listen", "--as", "bob", "--timeout", "1"),
        ("serve",),
    ],
)
def test_every_command_without_a_home_fails_with_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = invoke(tmp_path / "missing", *args)
    assert result.exit_code == ExitCode.CONFIGURATION
    assert "no trustwire home" in one_error_line(result)
    assert "trustwire init" in one_error_line(result)


def test_send_as_an_agent_that_does_not_exist_exits_with_unknown_agent(home: Path) -> None:
    result = invoke(home, "send", "--as", "ghost", "--to", "bob", "hi")
    assert result.exit_code == ExitCode.UNKNOWN_AGENT
    assert "ghost" in one_error_line(result)


def test_send_with_no_coordinator_listening_exits_unreachable(home: Path) -> None:
    assert invoke(home, "agent", "create", "alice").exit_code == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke(
        home, "send", "--as", "alice", "--to", "bob", "hi", "--coordinator", f"127.0.0.1:{port}"
    )
    assert result.exit_code == ExitCode.UNREACHABLE
    assert f"127.0.0.1:{port}" in one_error_line(result)


def test_the_coordinator_address_comes_from_the_environment_before_the_config(
    home: Path,
) -> None:
    assert invoke(home, "agent", "create", "alice").exit_code == 0
    result = invoke(
        home,
        "send",
        "--as",
        "alice",
        "--to",
        "bob",
        "hi",
        env={"TRUSTWIRE_COORDINATOR": "127.0.0.1:1"},
    )
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "127.0.0.1:1" in one_error_line(result)


def test_an_unexpected_exception_is_one_line_not_a_traceback(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(_home: Home) -> list[object]:
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(agents_module, "_list_records", broken)
    result = invoke(home, "agent", "list")
    assert result.exit_code == ExitCode.FAILED
    assert one_error_line(result) == "error: internal error: RuntimeError: something unexpected"


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (ConfigurationError("no trustwire home at /x"), ExitCode.CONFIGURATION, "no trustwire"),
        (DuplicateAgent("name", "alice"), ExitCode.CONFIGURATION, "already enrolled"),
        (KeyFileError("k: wrong passphrase"), ExitCode.KEYS, "TRUSTWIRE_PASSPHRASE"),
        (UnknownAgent("no agent 'x'"), ExitCode.UNKNOWN_AGENT, "unknown agent"),
        (ConnectionFailed("cannot connect to h:1"), ExitCode.UNREACHABLE, "cannot connect"),
        (ConnectionClosed(3, "coordinator stopping"), ExitCode.UNREACHABLE, "disconnected"),
        (AuthenticationFailed("not enrolled"), ExitCode.NOT_AUTHENTICATED, "not authenticated"),
        (PolicyDenied("refused"), ExitCode.DENIED, "denied"),
        (RateLimited("slow down"), ExitCode.DENIED, "rate limited"),
        (ReplayDetected("seen"), ExitCode.DENIED, "rejected"),
        (ReceiptTimeout("no receipt"), ExitCode.TIMED_OUT, "timed out"),
        (TimeoutError(), ExitCode.TIMED_OUT, "timed out"),
        (CommandFailed("listen gave up", ExitCode.TIMED_OUT), ExitCode.TIMED_OUT, "gave up"),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED, "interrupted"),
    ],
)
def test_describe_maps_each_failure_to_its_exit_code_and_a_one_line_reason(
    error: BaseException, code: ExitCode, words: str
) -> None:
    described = describe(error)
    assert described is not None
    assert described[0] == code
    assert words in described[1]
    assert "\n" not in described[1]


def test_describe_leaves_programming_errors_unmapped() -> None:
    assert describe(RuntimeError("bug")) is None
    assert describe(AttributeError("bug")) is None
