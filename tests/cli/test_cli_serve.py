"""``trustwire serve``, ``send`` and ``listen`` as real processes on a loopback port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from click.testing import CliRunner, Result

from trustwire.cli.failure import ExitCode
from trustwire.cli.main import cli

WAIT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTWIRE_")}
    env["TRUSTWIRE_HOME"] = str(home)
    return env


def setup_home(home: Path, port: int, agents: tuple[str, ...]) -> None:
    """Create the home in-process (faster than a process per command)."""
    runner = CliRunner()
    env = {"TRUSTWIRE_PASSPHRASE": "", "TRUSTWIRE_COORDINATOR": ""}
    commands = [["init", "--coordinator", f"127.0.0.1:{port}"]]
    commands += [["agent", "create", name] for name in agents]
    for command in commands:
        result = runner.invoke(cli, ["--home", str(home), *command], env=env)
        assert result.exit_code == 0, result.stderr


def trustwire(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one trustwire command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "trustwire.cli", *args],
        env=environment(home),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def client(home: Path, *args: str) -> Result:
    """Run an agent command in-process (no interpreter start-up) against the server."""
    env = {"TRUSTWIRE_HOME": str(home), "TRUSTWIRE_PASSPHRASE": "", "TRUSTWIRE_COORDINATOR": ""}
    return CliRunner().invoke(cli, list(args), env=env)


def one_error_line(stderr: str) -> str:
    """The failure reason: exactly one ``error:`` line, the last one, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert "Traceback" not in stderr
    return errors[0]


class Running:
    """A trustwire process in the background whose output is read as it comes."""

    def __init__(self, home: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trustwire.cli", *args],
            env=environment(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr)),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, lines: list[str]) -> None:
        if stream is None:
            return
        with stream:
            for line in stream:
                lines.append(line)

    def wait_for_stderr(self, text: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.stderr):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in stderr: {''.join(self.stderr)}")
            time.sleep(0.02)

    def wait(self, timeout: float = WAIT) -> int:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.wait()


def start_server(home: Path) -> Running:
    server = Running(home, "serve")
    server.wait_for_stderr("listening on")
    return server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with alice, bob and carol and its coordinator running as `trustwire serve`."""
    home = tmp_path_factory.mktemp("served") / "home"
    setup_home(home, free_port(), ("alice", "bob", "carol"))
    server = start_server(home)
    yield home
    server.stop()


def test_send_and_listen_processes_round_trip_a_message_with_a_signed_receipt(
    served: Path,
) -> None:
    listener = Running(served, "listen", "--as", "bob", "--count", "1", "--json")
    try:
        listener.wait_for_stderr("listening as bob")
        sent = trustwire(served, "send", "--as", "alice", "--to", "bob", "--json", "hello bob")
        assert sent.returncode == 0, sent.stderr
        result = json.loads(sent.stdout)
        assert listener.wait() == 0, "".join(listener.stderr)
    finally:
        listener.stop()
    assert result["status"] == "delivered"
    assert result["via"] == "channel"
    assert result["receipt"]["signer"] == result["recipient"]
    received = [json.loads(line) for line in listener.stdout]
    assert len(received) == 1
    assert received[0]["text"] == "hello bob"
    assert received[0]["sender_name"] == "alice"
    assert received[0]["id"] == result["id"] == result["receipt"]["message_id"]


def test_a_message_to_an_offline_agent_is_queued_then_listened_to_exactly_once(
    served: Path,
) -> None:
    sent = client(served, "send", "--as", "alice", "--to", "carol", "while you were out")
    assert sent.exit_code == 0, sent.stderr
    assert "queued" in sent.stdout
    first = client(served, "listen", "--as", "carol", "--count", "1", "--timeout", "10")
    assert first.exit_code == 0, first.stderr
    assert "while you were out" in first.stdout
    assert "alice" in first.stdout
    assert "via sealed" in first.stdout
    again = trustwire(served, "listen", "--as", "carol", "--count", "1", "--timeout", "1")
    assert again.returncode == ExitCode.TIMED_OUT
    assert one_error_line(again.stderr) == ("error: timed out after 1 s: received 0 of 1 messages")


def test_listen_shows_control_characters_from_a_sender_escaped(served: Path) -> None:
    hostile = "\x1b[2J\x1b]0;owned\x07fake line\u202eevil"
    assert client(served, "send", "--as", "carol", "--to", "alice", hostile).exit_code == 0
    heard = client(served, "listen", "--as", "alice", "--count", "1", "--timeout", "10")
    assert heard.exit_code == 0, heard.stderr
    assert "\x1b" not in heard.stdout and "\u202e" not in heard.stdout
    assert "\\x1b[2J\\x1b]0;owned\\x07fake line\\u202eevil" in heard.stdout


def test_send_to_an_unknown_agent_exits_with_one_line(served: Path) -> None:
    sent = trustwire(served, "send", "--as", "alice", "--to", "nobody", "hi")
    assert sent.returncode == ExitCode.UNKNOWN_AGENT
    assert "nobody" in one_error_line(sent.stderr)


def test_an_agent_created_while_serving_can_connect_within_seconds(served: Path) -> None:
    assert client(served, "agent", "create", "dave").exit_code == 0
    deadline = time.monotonic() + 8
    while True:
        sent = client(served, "send", "--as", "dave", "--to", "alice", "new here")
        if sent.exit_code == 0 or time.monotonic() > deadline:
            break
        assert sent.exit_code == ExitCode.NOT_AUTHENTICATED, sent.stderr
        time.sleep(0.2)
    assert sent.exit_code == 0, sent.stderr


def test_serve_reloads_the_policy_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    setup_home(home, free_port(), ("alice", "bob"))
    server = start_server(home)
    try:
        assert client(home, "send", "--as", "bob", "--to", "alice", "before").exit_code == 0
        (home / "policy.yaml").write_text(
            "version: 1\n"
            "policies:\n"
            "  communication:\n"
            "    default: deny\n"
            "    rules:\n"
            "      - {id: only-alice, effect: allow, from: {agents: [alice]}, to: '*',"
            " actions: [message]}\n"
        )
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_stderr("policy reloaded")
        denied = client(home, "send", "--as", "bob", "--to", "alice", "after")
        assert denied.exit_code == ExitCode.DENIED
        assert one_error_line(denied.stderr).startswith("error: denied")
        server.process.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.stop()
    assert any("coordinator stopped" in line for line in server.stderr)
    kinds = [json.loads(line)["kind"] for line in (home / "events.jsonl").read_text().splitlines()]
    assert "policy.reloaded" in kinds
    assert "message.denied" in kinds
    unreachable = trustwire(home, "send", "--as", "bob", "--to", "alice", "anyone there?")
    assert unreachable.returncode == ExitCode.UNREACHABLE
    assert "cannot connect" in one_error_line(unreachable.stderr)


def test_serve_audits_every_event_and_serves_metrics_on_a_free_port(tmp_path: Path) -> None:
    home = tmp_path / "home"
    setup_home(home, free_port(), ("alice", "bob"))
    server = Running(home, "serve", "--metrics-port", "0")
    try:
        server.wait_for_stderr("listening on")
        found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", "".join(server.stderr))
        assert found, "".join(server.stderr)
        sent = client(home, "send", "--as", "alice", "--to", "bob", "for the record")
        assert sent.exit_code == 0, sent.stderr
        with urllib.request.urlopen(found.group(1), timeout=WAIT) as response:  # noqa: S310
            metrics = response.read().decode()
        assert 'trustwire_messages_total{outcome="queued"} 1.0' in metrics
        assert 'trustwire_security_events_total{kind="auth.success"} 1.0' in metrics

        # The trail appends in batches (every 50 ms): poll until the event is in the log.
        deadline = time.monotonic() + WAIT
        while True:
            routed = client(home, "audit", "tail", "--kind", "message.queued", "--json")
            assert routed.exit_code == 0, routed.stderr
            if routed.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        [event] = [json.loads(line) for line in routed.stdout.splitlines()]
        live = client(home, "audit", "verify")
        assert live.exit_code == 0, live.stdout + live.stderr
        assert (event["agent_name"], event["peer_name"]) == ("alice", "bob")
        assert "for the record" not in (home / "audit.db").read_bytes().decode("latin-1")

        server.process.send_signal(signal.SIGHUP)
        server.wait_for_stderr("policy reloaded")
        server.process.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.stop()
    final = client(home, "audit", "verify", "--json")
    assert final.exit_code == 0, final.stdout + final.stderr
    report = json.loads(final.stdout)
    assert report["entries"] == report["head"]["size"]
    kinds = [
        json.loads(line)["kind"]
        for line in client(home, "audit", "tail", "-n", "100", "--json").stdout.splitlines()
    ]
    assert kinds[-2:] == ["connection.closed", "policy.reloaded"]
    assert "message.queued" in kinds
    assert any("audit log signed at size" in line for line in server.stderr)
