"""`trustwire memory ...` and the HTTPS API against a real `trustwire serve` process."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_cli_serve import Running, client, free_port, setup_home

from trustwire.home import Home

CANARY = "memory-canary-5b1f0c3e-it-must-never-be-stored-in-clear"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A home with alice, bob and carol; `trustwire serve --api-port 0` running."""
    home = tmp_path_factory.mktemp("memory") / "home"
    setup_home(home, free_port(), ("alice", "bob", "carol"))
    server = Running(home, "serve", "--api-port", "0")
    try:
        server.wait_for_stderr("HTTPS API on")
        found = re.search(r"HTTPS API on (https://[^\s]+)", "".join(server.stderr))
        assert found, "".join(server.stderr)
        yield home, found.group(1)
    finally:
        server.stop()


def ok(home: Path, *args: str) -> str:
    result = client(home, *args)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout


def test_memory_commands_share_revoke_and_store_only_ciphertext(served: tuple[Path, str]) -> None:
    home, _url = served
    made = json.loads(ok(home, "memory", "create", "--as", "alice", "--expires", "1h", "--json"))
    memory_id = made["id"]
    assert made["owner"].startswith("did:key:")
    ok(home, "memory", "write", "--as", "alice", memory_id, "plan", CANARY)
    ok(home, "memory", "grant", "--as", "alice", memory_id, "bob", "read")
    read = json.loads(ok(home, "memory", "read", "--as", "bob", "--json", memory_id, "plan"))
    assert read["text"] == CANARY and read["version"] == 1
    listing = json.loads(ok(home, "memory", "list", "--as", "bob", "--json"))
    assert [m["id"] for m in listing["memories"]] == [memory_id]

    # carol holds no grant: refused by the coordinator.
    refused = client(home, "memory", "read", "--as", "carol", memory_id, "plan")
    assert refused.exit_code != 0 and CANARY not in refused.stdout + refused.stderr

    # bob may read, not write.
    denied = client(home, "memory", "write", "--as", "bob", memory_id, "plan", "overwrite")
    assert denied.exit_code != 0

    # A stale compare-and-set is refused, not applied.
    stale = client(
        home, "memory", "write", "--as", "alice", "--expected-version", "0", memory_id, "plan", "x"
    )
    assert stale.exit_code != 0

    revoked = json.loads(ok(home, "memory", "revoke", "--as", "alice", "--json", memory_id, "bob"))
    assert revoked["epoch"] == 1
    after = client(home, "memory", "read", "--as", "bob", memory_id, "plan")
    assert after.exit_code != 0

    memory_db = Path(Home(home).memory_url.removeprefix("sqlite:///"))
    stored = b"".join(
        p.read_bytes() for p in memory_db.parent.glob(memory_db.name + "*") if p.is_file()
    )
    assert stored, "the shared-memory database is empty"
    assert CANARY.encode() not in stored
    ok(home, "memory", "destroy", "--as", "alice", memory_id)
    gone = client(home, "memory", "show", "--as", "alice", memory_id)
    assert gone.exit_code != 0


def test_https_api_requires_a_client_certificate_and_serves_its_openapi_document(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    home, url = served
    agent_dir = Home(home).agent_dir("alice")
    ca = Home(home).ca().cert_pem
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca)
    identity, credentials = Home(home).load_agent("alice")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(credentials.cert_pem)
    key.write_bytes(credentials.key_pem)
    key.chmod(0o600)
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(str(cert), str(key))
    with httpx.Client(verify=context, timeout=10) as http:
        document = http.get(f"{url}/api/openapi.json").json()
        assert "/api/messaging/sessions" in document["paths"]
        assert "/api/memory" in document["paths"]
        health = http.get(f"{url}/api/messaging/sessions/health")
        assert health.status_code == 200
        created = http.post(f"{url}/api/messaging/sessions", json={"peerId": _did(home, "bob")})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        assert http.get(f"{url}/api/messaging/sessions/{session_id}").status_code == 200
        bad = http.patch(
            f"{url}/api/messaging/sessions/{session_id}/timeout", json={"timeoutMinutes": 2}
        )
        assert bad.status_code == 400
        assert http.delete(f"{url}/api/messaging/sessions/{session_id}").status_code == 200
        assert http.post(f"{url}/api/messaging/sessions/{session_id}/renew").status_code == 410
    bare = ssl.create_default_context(cafile=str(ca_file))
    with httpx.Client(verify=bare, timeout=10) as http, pytest.raises(httpx.HTTPError):
        http.get(f"{url}/api/openapi.json")
    assert agent_dir.exists() and identity.name == "alice"


def _did(home: Path, name: str) -> str:
    return Home(home).load_agent(name)[0].did


def test_serve_starts_the_broker_alongside_and_refuses_a_bad_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    setup_home(home, free_port(), ("alice",))
    port = free_port()
    config = tmp_path / "secretless.yml"
    config.write_text(
        "version: 2\n"
        "services:\n"
        "  example_api:\n"
        "    connector: generic_http\n"
        f"    listenOn: tcp://127.0.0.1:{port}\n"
        "    credentials:\n"
        "      token: not-a-real-token\n"
        "    config:\n"
        "      headers:\n"
        "        Authorization: Bearer {{ .token }}\n"
        "      authenticateURLsMatching:\n"
        "        - ^http://api\\.example\\.com/\n"
    )
    server = Running(home, "serve", "--broker", str(config))
    try:
        server.wait_for_stderr(f"broker: service example_api on tcp://127.0.0.1:{port}")
    finally:
        server.stop()
    assert not any("not-a-real-token" in line for line in server.stderr)

    # The same from the home's config.json: the broker file (relative to the home) and
    # the HTTPS API port.
    (home / "broker.yml").write_text(config.read_text())
    settings = json.loads((home / "config.json").read_text())
    (home / "config.json").write_text(
        json.dumps({**settings, "broker": "broker.yml", "api_port": 0})
    )
    configured = Running(home, "serve")
    try:
        configured.wait_for_stderr(f"broker: service example_api on tcp://127.0.0.1:{port}")
        configured.wait_for_stderr("HTTPS API on")
    finally:
        configured.stop()
    bad = tmp_path / "bad.yml"
    bad.write_text("version: 1\nservices: {}\n")
    refused = Running(home, "serve", "--broker", str(bad))
    assert refused.wait() != 0
    assert any("version" in line for line in refused.stderr), refused.stderr
