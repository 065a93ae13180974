"""Nothing secret at rest outside the key files: a real ``trustwire serve`` run, messages
with a canary text (channel and sealed), then every file the coordinator, the audit trail
and the registry wrote is searched for the canary and for every private key in the home."""

from __future__ import annotations

import base64
import signal
from pathlib import Path

from test_cli_serve import Running, client, free_port, setup_home

from trustwire.crypto.keyfile import read_agreement_key, read_pem_key, read_signing_key

CANARY = "canary-7f3a9c1e-do-not-store"


def forms(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), base64.b64encode(secret), base64.b64encode(secret)[:-2]]


def leaks(data: bytes, secrets: dict[str, bytes]) -> list[str]:
    """The names of the secrets that appear in ``data`` in any form."""
    return [what for what, secret in secrets.items() if any(f in data for f in forms(secret))]


def private_keys(home: Path) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for agent in sorted((home / "agents").iterdir()):
        keys[f"{agent.name} identity"] = read_signing_key(agent / "identity.key", None).to_bytes()
        keys[f"{agent.name} agreement"] = read_agreement_key(agent / "agreement.key", None).private
        keys[f"{agent.name} tls"] = read_pem_key(agent / "tls.key", None)
    keys["ca"] = (home / "ca" / "ca.key").read_bytes()
    keys["coordinator tls"] = read_pem_key(home / "coordinator" / "tls.key", None)
    keys["log"] = read_signing_key(home / "coordinator" / "log.key", None).to_bytes()
    return keys


def test_audit_registry_store_and_event_files_hold_no_canary_and_no_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    setup_home(home, free_port(), ("alice", "bob", "carol"))
    server = Running(home, "serve")
    try:
        server.wait_for_stderr("listening on")
        listener = Running(home, "listen", "--as", "bob", "--count", "1", "--timeout", "20")
        try:
            sent = client(home, "send", "--as", "alice", "--to", "bob", f"{CANARY} online")
            assert sent.exit_code == 0, sent.stderr
            assert listener.wait() == 0
        finally:
            listener.stop()
        queued = client(home, "send", "--as", "alice", "--to", "carol", f"{CANARY} offline")
        assert queued.exit_code == 0 and "queued" in queued.stdout, queued.stdout
        server.process.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.stop()

    written = [
        p
        for p in home.rglob("*")
        if p.is_file() and p.suffix not in {".key"} and p.parent.name != "agents"
    ]
    written = [p for p in written if "agents" not in p.relative_to(home).parts]
    names = {p.name for p in written}
    for expected in ("audit.db", "registry.db", "coordinator.db", "events.jsonl"):
        assert expected in names, names
    secrets = {"canary": CANARY.encode(), **private_keys(home)}
    assert len(secrets) == 1 + 3 * 3 + 3
    for path in written:
        assert leaks(path.read_bytes(), secrets) == [], path.relative_to(home)
    # The scanner finds what it looks for: a key in hex, or the canary, planted in a copy.
    planted = b"x" + secrets["bob agreement"].hex().encode() + CANARY.encode()
    assert leaks(planted, secrets) == ["canary", "bob agreement"]
