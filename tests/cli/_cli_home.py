"""Helpers for the operator-command tests: a home, its agents, an audit log, tampering."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from click.testing import CliRunner, Result

from trustwire.audit.log import MerkleLog, TreeHead
from trustwire.audit.trail import AUDIT_ORIGIN, AuditTrail
from trustwire.cli.main import cli
from trustwire.events import EventKind, SecurityEvent
from trustwire.home import Home

T0 = 1_750_000_000.0


def invoke(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``trustwire --home HOME ARGS...`` in-process with no passphrase."""
    environment = {"TRUSTWIRE_PASSPHRASE": "", "TRUSTWIRE_COORDINATOR": "", **(env or {})}
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=environment)


def one_error_line(result: Result) -> str:
    """The failure reason: exactly one ``error:`` line, the last on stderr, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return errors[0]


def make_home(path: Path, agents: Iterable[str] = ("alice", "bob")) -> Path:
    """``trustwire init`` and ``agent create`` for each agent, unencrypted."""
    result = invoke(path, "init", "--coordinator", "127.0.0.1:7999")
    assert result.exit_code == 0, result.stderr
    for name in agents:
        created = invoke(path, "agent", "create", name)
        assert created.exit_code == 0, created.stderr
    return path


def did_of(home: Path, name: str) -> str:
    """The DID of an agent created in ``home``."""
    data = json.loads((home / "agents" / name / "identity.json").read_text())
    return str(data["did"])


def message_event(sender: str, recipient: str, at: float) -> SecurityEvent:
    """A ``message.accepted`` event from ``sender`` to ``recipient`` (DIDs)."""
    return SecurityEvent(
        EventKind.MESSAGE_ACCEPTED, at, sender, recipient, None, {"type": "CHANNEL_DATA"}
    )


def append_events(home: Path, events: Iterable[SecurityEvent], *, now: float = T0) -> TreeHead:
    """Append ``events`` to the home's audit log as ``trustwire serve`` does (an
    :class:`AuditTrail` signing with the home's log key) and return the final head."""
    key = Home(home).log_signing_key()
    with MerkleLog.open_sqlite(Home(home).audit_path, origin=AUDIT_ORIGIN) as log:
        trail = AuditTrail(log, key, clock=lambda: now)
        for event in events:
            trail.emit(event)
        trail.close()
        return log.signed_tree_head(key, now=now)


def stored_head(home: Path) -> str:
    """The head row of the audit log, as stored (JSON text)."""
    with sqlite3.connect(home / "audit.db") as connection:
        (text,) = connection.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()
    return str(text)


def tamper(home: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run raw SQL on the audit log file, as an attacker with write access would."""
    connection = sqlite3.connect(home / "audit.db", isolation_level=None)
    try:
        connection.execute("BEGIN")
        for sql, parameters in statements:
            connection.execute(sql, parameters)
        connection.execute("COMMIT")
    finally:
        connection.close()
