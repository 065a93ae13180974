"""No message plaintext in anything the coordinator writes (DESIGN §1: a coordinator
database dump reveals no message content).

A known canary text goes through a real deployment by every route (channel and sealed,
online and offline, delivered and still queued); then every file under the home except
the agents' own directories (the SQLite database and its ``-wal``/``-shm``, the
``events.jsonl`` security-event stream, the coordinator's directory, ...) is searched for
the canary's bytes, in hex and in base64 at every alignment, both while the coordinator
runs and after it stopped.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

from _deployment import Deployment, MakeDeployment, transport_of, wait_until
from trustwire.events import EventKind

CANARY = "CANARY-7f3a9c41-this-plaintext-must-never-reach-the-coordinator-disk"


def encodings(secret: bytes) -> dict[str, bytes]:
    """The byte patterns a stored copy of ``secret`` would contain."""
    forms = {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "utf-16": secret.decode().encode("utf-16-le"),
    }
    for offset in range(3):  # where the secret starts within a base64 3-byte group
        part = secret[offset:]
        part = part[: len(part) // 3 * 3]
        forms[f"base64+{offset}"] = base64.b64encode(part)
        forms[f"base64url+{offset}"] = base64.urlsafe_b64encode(part)
    return forms


def coordinator_files(home: Path) -> list[Path]:
    """Every file under the home, except the agents' directories (their own keys)."""
    files: list[Path] = []
    for root, dirs, names in os.walk(home):
        if Path(root) == home:
            dirs[:] = [d for d in dirs if d != "agents"]
        files.extend(Path(root) / name for name in names)
    return files


def leaks(files: list[Path], secret: bytes) -> list[str]:
    patterns = encodings(secret)
    found: list[str] = []
    for path in files:
        data = path.read_bytes()
        found.extend(f"{path.name}: {form}" for form, p in patterns.items() if p in data)
    return found


def test_the_scanner_finds_the_canary_in_every_encoding(tmp_path: Path) -> None:
    secret = CANARY.encode()
    for i, (form, pattern) in enumerate(encodings(secret).items()):
        if form.startswith("base64"):
            # A real base64 encoding of the secret embedded at some offset.
            encoder = base64.urlsafe_b64encode if "url" in form else base64.b64encode
            offset = int(form[-1])
            pattern = encoder(os.urandom((3 - offset) % 3) + secret + os.urandom(5))
        (tmp_path / f"f{i}").write_bytes(os.urandom(100) + pattern + os.urandom(100))
        assert leaks([tmp_path / f"f{i}"], secret), f"the scanner missed the {form} form"
    (tmp_path / "clean").write_bytes(os.urandom(10_000))
    assert not leaks([tmp_path / "clean"], secret)


async def exercise_every_route(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")

    # Offline, sealed, delivered later.
    assert (await alice.send("bob", CANARY + " sealed")).status == "queued"
    bob = await deployment.connect("bob")
    assert (await bob.receive(timeout=5)).text == CANARY + " sealed"

    # Online, channel, in both directions, several batched together.
    results = await asyncio.gather(*(alice.send("bob", f"{CANARY} {i}") for i in range(20)))
    assert {r.via for r in results} == {"channel"}
    assert {r.status for r in results} == {"delivered"}
    for _ in range(20):
        await bob.receive(timeout=5)
    assert (await bob.send("alice", CANARY + " reply")).via == "channel"
    await alice.receive(timeout=5)

    # Channel messages the peer never receipted, resent sealed after it dropped.
    transport_of(bob).pause_reading()
    pending = [asyncio.ensure_future(alice.send("bob", f"{CANARY} late {i}")) for i in range(3)]
    await wait_until(
        lambda: sum(e.details["count"] for e in deployment.events(EventKind.MESSAGE_ACCEPTED)) >= 27
    )
    await bob.close()
    assert {r.status for r in await asyncio.gather(*pending)} == {"queued"}

    # Still queued for an agent that never connects: it stays in the database.
    assert (await alice.send("carol", CANARY + " for carol")).status == "queued"
    assert (await alice.send("carol", CANARY.encode() * 50)).status == "queued"
    assert await deployment.store.queue.depth(deployment.did("carol")) == 2


async def test_no_coordinator_file_contains_message_plaintext(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(jsonl=True)
    home = deployment.home.path

    await exercise_every_route(deployment)

    assert deployment.jsonl is not None
    deployment.jsonl.flush()
    running = coordinator_files(home)
    names = {p.name for p in running}
    assert {"coordinator.db", "coordinator.db-wal", "events.jsonl"} <= names
    assert (home / "events.jsonl").stat().st_size > 0
    assert leaks(running, CANARY.encode()) == []

    await deployment.close()
    stopped = coordinator_files(home)
    assert leaks(stopped, CANARY.encode()) == []
