"""Per-message cost of the sans-I/O protocol core, against raw AES-GCM in the same run.

    .venv/bin/python bench/protocol.py            # 1024-byte messages, batches of 256
    .venv/bin/python bench/protocol.py --size 64 --batch 16 --json

One process, no I/O: what one message costs in each step that the end-to-end path runs
(sender: channel encrypt and frame; coordinator: frame and envelope decode; receiver:
frame and envelope decode, channel decrypt and verify, one receipt per batch). The
baseline is the floor for the same work: one AES-256-GCM seal and open of the same
plaintext with the same associated data, through pyca directly. Each figure is the best of
several repeats, in microseconds of this thread's CPU time per message, so that background
load on the machine inflates it as little as possible.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustwire.identity.keys import AgentIdentity
from trustwire.protocol.channel import Channel, open_sealed, seal
from trustwire.protocol.envelope import Envelope, decode
from trustwire.protocol.frames import FrameDecoder, encode_frame

SEND = "channel send (encrypt, chain; one signature per batch)"
ENCODE = "frame encode"
FRAMES = "frame decode"
DECODE = "envelope decode"
RECEIVE = "channel receive (decrypt, chain; verify + receipt per batch)"
SEAL = "sealed seal (offline path)"
OPEN = "sealed open (offline path)"
BASELINE = "baseline: AES-256-GCM seal + open (pyca)"
TOTAL = "end-to-end path: send + encode + 2x (frames + decode) + receive"


def _pair() -> tuple[AgentIdentity, AgentIdentity, Channel, Channel]:
    alice = AgentIdentity.generate("alice")
    bob = AgentIdentity.generate("bob")
    sender, init = Channel.initiate(
        alice,
        bob.did,
        bob.agreement.public,
        channel_id=os.urandom(16),
        message_id=os.urandom(16),
        now_ms=1,
    )
    receiver, accept = Channel.accept(
        bob, init, peer_agreement_key=alice.agreement.public, message_id=os.urandom(16), now_ms=1
    )
    sender.complete(accept)
    return alice, bob, sender, receiver


class Case:
    """One measured step: ``prepare()`` (untimed) returns the work, ``run(work)`` is timed."""

    def __init__(
        self,
        name: str,
        per: int,
        run: Callable[[Any], object],
        prepare: Callable[[], Any] = lambda: None,
    ) -> None:
        self.name, self.per, self.run, self.prepare = name, per, run, prepare
        self.best = math.inf

    def once(self) -> None:
        work = self.prepare()
        start = time.thread_time()
        self.run(work)
        self.best = min(self.best, time.thread_time() - start)


def measure(size: int, batch: int, rounds: int, repeat: int) -> dict[str, float]:
    content = os.urandom(size)
    ids = [os.urandom(16) for _ in range(batch)]
    n = rounds * batch

    def send_all(tx: Channel) -> list[Envelope]:
        return [
            tx.send(content, app_id=mid, message_id=mid, now_ms=1, sign=i == batch - 1)
            for _ in range(rounds)
            for i, mid in enumerate(ids)
        ]

    def receive_all(work: tuple[Channel, list[Envelope]]) -> None:
        rx, envelopes = work
        for i, env in enumerate(envelopes):
            rx.receive(env)
            if i % batch == batch - 1:
                rx.send_receipt(message_id=ids[0], now_ms=1)

    def fresh_frames() -> tuple[Channel, list[Envelope]]:
        _, _, tx, rx = _pair()
        return rx, [decode(env.to_bytes()) for env in send_all(tx)]

    _, _, tx, _ = _pair()
    envelopes = send_all(tx)
    payloads = [env.to_bytes() for env in envelopes]
    wire = b"".join(encode_frame(raw) for raw in payloads)
    raws = FrameDecoder().receive_data(wire)
    alice, bob, _, _ = _pair()
    sealed_ids = ids[:16]

    def seal_all(_: object) -> list[Envelope]:
        return [
            seal(alice, bob.did, bob.agreement.public, content, app_id=m, message_id=m, now_ms=1)
            for m in sealed_ids
        ]

    sealed = seal_all(None)
    key = AESGCM(os.urandom(32))
    nonce = bytes(12)
    header = envelopes[0].header
    boxes = [key.encrypt(nonce, content, header) for _ in range(n)]

    def raw_aead(_: object) -> None:
        for box in boxes:
            key.encrypt(nonce, content, header)
            key.decrypt(nonce, box, header)

    cases = [
        Case(SEND, n, send_all, lambda: _pair()[2]),
        Case(ENCODE, n, lambda _: [encode_frame(env.to_bytes()) for env in envelopes]),
        Case(FRAMES, n, lambda _: FrameDecoder().receive_data(wire)),
        Case(DECODE, n, lambda _: [decode(raw) for raw in raws]),
        Case(RECEIVE, n, receive_all, fresh_frames),
        Case(SEAL, len(sealed_ids), seal_all),
        Case(
            OPEN,
            len(sealed),
            lambda _: [
                open_sealed(bob, env, sender_agreement_key=alice.agreement.public) for env in sealed
            ],
        ),
        Case(BASELINE, n, raw_aead),
    ]
    # Interleaved repeats: a burst of load on the machine hits every case alike.
    for _ in range(repeat):
        for case in cases:
            case.once()
    return {case.name: case.best / case.per * 1e6 for case in cases}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1024, help="content bytes (default 1024)")
    p.add_argument("--batch", type=int, default=256, help="messages per signed batch")
    p.add_argument("--rounds", type=int, default=8, help="batches per repeat (default 8)")
    p.add_argument("--repeat", type=int, default=7, help="repeats, best kept (default 7)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args(argv)
    results = measure(args.size, args.batch, args.rounds, args.repeat)
    results[TOTAL] = (
        results[SEND] + results[ENCODE] + 2 * (results[FRAMES] + results[DECODE]) + results[RECEIVE]
    )
    base = results[BASELINE]
    if args.json:
        print(json.dumps({"machine": machine(), "results": results}, indent=2))
        return 0
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} {m['python']}")
    print(f"{args.size}-byte messages, signed batches of {args.batch}; us per message\n")
    width = max(len(k) for k in results)
    for name, value in results.items():
        print(f"  {name.ljust(width)}  {value:8.2f} us  {value / base:6.1f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
