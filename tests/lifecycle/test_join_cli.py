"""``trustwire agent invite`` / ``agent join`` against a real ``trustwire serve`` process."""

from __future__ import annotations

import re
from pathlib import Path

from _serving import Serving, free_port
from click.testing import CliRunner, Result

from trustwire.cli.failure import ExitCode
from trustwire.cli.main import cli


def trustwire(home: Path, *args: str) -> Result:
    env = {"TRUSTWIRE_PASSPHRASE": "", "TRUSTWIRE_COORDINATOR": "", "TRUSTWIRE_HOME": ""}
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=env)


def field(output: str, name: str) -> str:
    match = re.search(rf"^{name}\s+(\S+)\s*$", output, re.MULTILINE)
    assert match is not None, output
    return match.group(1)


def test_an_invited_agent_joins_from_another_home_and_messages_an_existing_agent(
    tmp_path: Path,
) -> None:
    operator, elsewhere, stranger = tmp_path / "op", tmp_path / "elsewhere", tmp_path / "x"
    port, join_port = free_port(), free_port()
    assert trustwire(operator, "init", "--coordinator", f"127.0.0.1:{port}").exit_code == 0
    assert trustwire(operator, "agent", "create", "alice").exit_code == 0
    invited = trustwire(operator, "agent", "invite", "dave", "--role", "worker", "--ttl", "10m")
    assert invited.exit_code == 0, invited.stderr
    token = field(invited.stdout, "token")
    fingerprint = field(invited.stdout, "CA fingerprint")
    assert len(token) == 43
    assert token not in (operator / "coordinator.db").read_bytes().decode("latin-1")

    server = Serving(operator, "--join-port", str(join_port))
    try:
        server.wait_for_sync(f"join listener on 127.0.0.1:{join_port}")
        join = [
            "agent",
            "join",
            token,
            "--name",
            "dave",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--join-port",
            str(join_port),
        ]

        wrong = trustwire(elsewhere, *join, "--ca-fingerprint", "0" * 64)
        assert wrong.exit_code == ExitCode.NOT_AUTHENTICATED, wrong.stderr
        assert "nothing was sent" in wrong.stderr
        assert not (elsewhere / "agents").exists()

        joined = trustwire(elsewhere, *join, "--ca-fingerprint", fingerprint)
        assert joined.exit_code == 0, joined.stderr
        assert (elsewhere / "agents" / "dave" / "identity.key").exists()
        assert not (elsewhere / "ca").exists(), "a joined home holds no CA key"

        sent = trustwire(elsewhere, "send", "--as", "dave", "--to", "alice", "hi from dave")
        assert sent.exit_code == 0, sent.stderr
        heard = trustwire(operator, "listen", "--as", "alice", "--count", "1", "--timeout", "10")
        assert heard.exit_code == 0, heard.stderr
        assert "hi from dave" in heard.stdout and "dave" in heard.stdout

        again = trustwire(stranger, *join, "--ca-fingerprint", fingerprint)
        assert again.exit_code == ExitCode.NOT_AUTHENTICATED
        assert "refused the join" in again.stderr
    finally:
        server.stop()
    listed = trustwire(operator, "agent", "list")
    assert re.search(r"^dave\s+did:key:\S+\s+worker\s", listed.stdout, re.MULTILINE), listed.stdout
