"""``trustwire broker check|serve`` and :func:`start_broker_in` with a real home: the
config is validated with precise errors, the broker runs with the home's CA, policy,
directory and an agent's own credentials, and a revoked agent is refused at once."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
from _servers import Pki, Upstream, free_port

from cli._cli_home import invoke, make_home, one_error_line
from trustwire.broker.client import broker_client
from trustwire.cli.broker import start_broker_in
from trustwire.client.agent import Agent
from trustwire.events import EventStream, MemorySink
from trustwire.home import Home

GOOD = """\
version: "2"
services:
  items-api:
    connector: generic_http
    listenOn: tcp://127.0.0.1:{port}
    credentials:
      token:
        from: literal
        get: CANARY-literal-never-printed-77
    config:
      headers:
        Authorization: Bearer {{{{ .token }}}}
      authenticateURLsMatching:
        - ^https://127\\.0\\.0\\.1:{upstream}/
      forceSSL: true
  billing:
    connector: generic_http
    listenOn: unix:///tmp/trustwire-test-billing.sock
    credentials:
      key: {{from: env, get: BILLING_KEY}}
    config:
      queryParams:
        key: "{{{{ .key }}}}"
      authenticateURLsMatching: ^https://billing\\.example\\.com/
"""

POLICY = """\
version: 1
policies:
  communication:
    default: deny
    rules:
      - id: alice-uses-items
        effect: allow
        from: {agents: [alice]}
        to: {agents: [items-api]}
        actions: [broker.use]
"""


def read_until(stream: IO[str], marker: str, *, timeout: float) -> str:
    """Lines of ``stream`` up to the one holding ``marker`` (or EOF, or ``timeout``)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
            if marker in line:
                return
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if not line or marker in line:
            break
    return "".join(seen)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_check_lists_the_services_of_a_valid_file(tmp_path: Path) -> None:
    config = write(tmp_path / "secretless.yml", GOOD.format(port=8071, upstream=8443))
    result = invoke(tmp_path / "no-home", "broker", "check", "--config", str(config))
    assert result.exit_code == 0, result.stderr
    assert "items-api" in result.stdout and "billing" in result.stdout
    assert "tcp://127.0.0.1:8071" in result.stdout
    assert "unix:///tmp/trustwire-test-billing.sock" in result.stdout
    assert "2 service(s)" in result.stdout and "valid" in result.stdout
    assert "CANARY" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('version: "1"\nservices: {}\n', r"version"),
        (
            GOOD.format(port=8071, upstream=8443).replace("generic_http", "ssh", 1),
            r"services\.items-api\.connector",
        ),
        (
            GOOD.format(port=8071, upstream=8443).replace(".token }}", ".tokn }}"),
            r"services\.items-api\.config\.headers\.Authorization",
        ),
        (
            GOOD.format(port=99999, upstream=8443),
            r"services\.items-api\.listenOn",
        ),
    ],
)
def test_check_names_the_problem_of_a_bad_file(tmp_path: Path, text: str, expected: str) -> None:
    config = write(tmp_path / "secretless.yml", text)
    result = invoke(tmp_path / "no-home", "broker", "check", "--config", str(config))
    assert result.exit_code == 3, result.stdout + result.stderr
    line = one_error_line(result)
    assert str(config) in line
    assert re.search(expected, line), line
    assert "CANARY" not in result.stdout + result.stderr


def test_check_of_a_missing_file_fails(tmp_path: Path) -> None:
    result = invoke(tmp_path, "broker", "check", "--config", str(tmp_path / "absent.yml"))
    assert result.exit_code == 3
    assert "absent.yml" in one_error_line(result)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = make_home(tmp_path / "home", agents=("alice", "bob"))
    (path / "policy.yaml").write_text(POLICY)
    return path


async def test_start_broker_in_a_home_serves_its_agents(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = Pki(tmp_path)
    upstream = await Upstream().start(pki.server_context())
    port = free_port()
    config = write(
        tmp_path / "secretless.yml",
        GOOD.format(port=port, upstream=upstream.port).split("  billing:")[0],
    )
    sink = MemorySink()
    the_home = Home(home)
    service = await start_broker_in(
        the_home,
        config,
        events=EventStream([sink]),
        upstream_ca=str(pki.upstream_ca_file),
    )
    try:
        [listener] = service.listeners
        assert listener.address == f"tcp://127.0.0.1:{port}"
        identity, alice = the_home.load_agent("alice")
        _, bob = the_home.load_agent("bob")
        url = f"http://127.0.0.1:{upstream.port}/v1/items"
        broker_url = f"https://127.0.0.1:{port}"
        # The SDK's way: the agent's own credentials (nothing is sent to a coordinator).
        agent = Agent(identity, alice, host="127.0.0.1", port=1)
        async with agent.broker_client(f"127.0.0.1:{port}") as http:
            assert (await http.get(url)).status_code == 200
        [seen] = upstream.received
        assert seen.headers["Authorization"] == "Bearer CANARY-literal-never-printed-77"
        async with broker_client(
            broker_url=broker_url, cert_pem=bob.cert_pem, key_pem=bob.key_pem, ca_pem=bob.ca_pem
        ) as http:
            assert (await http.get(url)).status_code == 403  # no grant
        # Revoked by another process: refused within the directory poll interval.
        revoked = await asyncio.to_thread(invoke, home, "agent", "revoke", "alice")
        assert revoked.exit_code == 0, revoked.stderr
        deadline = time.monotonic() + 5
        status = 200
        async with broker_client(
            broker_url=broker_url,
            cert_pem=alice.cert_pem,
            key_pem=alice.key_pem,
            ca_pem=alice.ca_pem,
        ) as http:
            while status != 403 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                status = (await http.get(url)).status_code
        assert status == 403
        kinds = [str(event.kind) for event in sink.events]
        assert kinds.count("broker.request") >= 1
        assert "broker.denied" in kinds
    finally:
        await service.close()
        await upstream.close()


def test_serve_prints_the_listeners_and_stops_cleanly_on_ctrl_c(home: Path, tmp_path: Path) -> None:
    port = free_port()
    config = write(
        tmp_path / "secretless.yml",
        GOOD.format(port=port, upstream=8443).split("  billing:")[0],
    )
    env = {**os.environ, "TRUSTWIRE_PASSPHRASE": "", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trustwire.cli",
            "--home",
            str(home),
            "broker",
            "serve",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        output = read_until(process.stdout, "broker running", timeout=60)
        assert f"tcp://127.0.0.1:{port}" in output, output
        assert "client certificate" in output
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "credential broker stopped" in err
    assert "CANARY" not in output + out + err
