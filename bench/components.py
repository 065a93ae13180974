"""What the per-message steps outside the protocol core cost, each in isolation.

    .venv/bin/python bench/components.py

The end-to-end profile (``bench/profile_e2e.py``) says where the time goes; this script
measures the biggest items one at a time, through their public APIs, so that each figure in
``docs/PERFORMANCE.md`` can be reproduced and re-measured after a change. Figures are the
best of several repeats of this thread's CPU time (microseconds per call), except where a
step *blocks* the event loop (thread starts), which is wall time. Each group has its own
baseline measured in the same run: the same job done the simplest way.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine

from trustwire.client.agent import Agent, Credentials, Message
from trustwire.coordinator.ratelimit import RateLimiter
from trustwire.events import EventKind, EventStream, JsonlSink, SecurityEvent
from trustwire.identity.keys import AgentIdentity
from trustwire.policy.engine import PolicyEngine, Principal
from trustwire.policy.model import default_policy
from trustwire.store.base import NewMessage
from trustwire.store.factory import open_store

Row = tuple[str, float, str]


def cpu_best(run: Callable[[], object], per: int, repeat: int = 7) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.thread_time()
        run()
        best = min(best, time.thread_time() - start)
    return best / per * 1e6


def rate_limiter(n: int) -> list[Row]:
    """The coordinator's limiter (``limits``, memory storage, moving window) at ~n/s."""
    rows: list[Row] = []
    buckets = [("agent:did:key:zbench", "1000000/second")]
    for strategy in ("moving-window", "fixed-window"):
        limiter = RateLimiter(strategy=strategy)
        for _ in range(n):  # a full window: n entries in the last second
            limiter.hit(buckets)
        # ``limits``' memory storage starts a threading.Timer to expire entries whenever
        # none is pending; Thread.start() waits until the new thread runs. Time those waits.
        starts: dict[str, float] = {"count": 0, "wall": 0.0}
        original = threading.Thread.start

        def timed_start(
            thread: threading.Thread,
            original: Callable[[threading.Thread], None] = original,
            starts: dict[str, float] = starts,
        ) -> None:
            t0 = time.perf_counter()
            original(thread)
            starts["count"] += 1
            starts["wall"] += time.perf_counter() - t0

        threading.Thread.start = timed_start  # type: ignore[method-assign]
        try:
            wall = time.perf_counter()
            cpu = time.thread_time()
            for _ in range(n):
                limiter.hit(buckets)
            cpu = time.thread_time() - cpu
            wall = time.perf_counter() - wall
        finally:
            threading.Thread.start = original  # type: ignore[method-assign]
        rows.append((f"RateLimiter.hit, {strategy}, {n} entries in window", cpu / n * 1e6, "cpu"))
        per_start = starts["wall"] / starts["count"] * 1e6 if starts["count"] else 0.0
        rows.append(
            (
                f"  expiry threads: {starts['count']:.0f} started in {wall * 1e3:.0f} ms "
                f"(the loop waits {per_start:.0f} us per start), per hit",
                starts["wall"] / n * 1e6,
                "wall",
            )
        )
    # Baseline: a token bucket in plain Python (what an in-process limiter needs).
    state = {"tokens": 1e6, "at": time.monotonic()}

    def bucket() -> bool:
        now = time.monotonic()
        tokens = min(1e6, state["tokens"] + (now - state["at"]) * 1e6)
        state["at"] = now
        if tokens < 1:
            return False
        state["tokens"] = tokens - 1
        return True

    rows.append(
        (
            "baseline: token bucket in plain Python",
            cpu_best(lambda: [bucket() for _ in range(n)], n),
            "cpu",
        )
    )
    return rows


def events(tmp: Path, n: int) -> list[Row]:
    sink = JsonlSink(tmp / "events.jsonl")
    stream = EventStream([sink])
    did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"

    def emit_all() -> None:
        for _ in range(n):
            stream.emit(
                SecurityEvent(
                    kind=EventKind.MESSAGE_ACCEPTED,
                    time=time.time(),
                    agent=did,
                    peer=did,
                    details={"type": "CHANNEL_DATA", "size": 1200},
                )
            )

    rows = [
        (
            "SecurityEvent + EventStream.emit to JsonlSink (per message)",
            cpu_best(emit_all, n),
            "cpu",
        )
    ]
    sink.close()
    counter = {"n": 0}

    def count_all() -> None:
        for _ in range(n):
            counter["n"] += 1

    rows.append(("baseline: count the message instead", cpu_best(count_all, n), "cpu"))
    return rows


def policy(n: int) -> list[Row]:
    engine = PolicyEngine(default_policy())
    a = Principal("did:key:zA", "alice", ())
    b = Principal("did:key:zB", "bob", ())
    engine.authorize(a, "message", b, now=time.time())
    now = time.time()

    def per_message() -> None:
        for _ in range(n):
            p = Principal("did:key:zA", "alice", ())
            r = Principal("did:key:zB", "bob", ())
            engine.authorize(p, "message", r, now=now)
            engine.rate_limits_for(Principal("did:key:zA", "alice", ()))

    cache = {("did:key:zA", "did:key:zB"): True}
    return [
        (
            "3x Principal + authorize (cached) + rate_limits_for (per message)",
            cpu_best(per_message, n),
            "cpu",
        ),
        (
            "baseline: one dict lookup per (sender, recipient)",
            cpu_best(lambda: [cache[("did:key:zA", "did:key:zB")] for _ in range(n)], n),
            "cpu",
        ),
    ]


async def store(tmp: Path, batch: int, rounds: int) -> list[Row]:
    """The durable queue, one batch per call as the coordinator uses it (wall time,
    including the hop to the SQLite worker thread and back; the event loop is idle)."""
    queue_store = await open_store(f"sqlite:///{tmp / 'queue.db'}")
    rows: list[Row] = []
    try:
        for size in (batch, 1):
            enq = pend = ack = math.inf
            seq = 0
            for _ in range(rounds):
                items = [
                    NewMessage(
                        recipient="r",
                        sender="s",
                        message_id=os.urandom(16),
                        frame=os.urandom(1200),
                        enqueued_at=time.time(),
                    )
                    for _ in range(size)
                ]
                t0 = time.perf_counter()
                await queue_store.queue.enqueue_many(items)
                t1 = time.perf_counter()
                got = await queue_store.queue.pending("r", after_seq=seq, limit=size)
                t2 = time.perf_counter()
                await queue_store.queue.ack("r", [m.message_id for m in got])
                t3 = time.perf_counter()
                seq = got[-1].seq
                enq, pend, ack = min(enq, t1 - t0), min(pend, t2 - t1), min(ack, t3 - t2)
            total = (enq + pend + ack) / size * 1e6
            rows.append(
                (f"SQLite enqueue+pending+ack, batches of {size} (per message)", total, "wall")
            )
            rows.append(
                (
                    f"  enqueue_many / pending / ack: {enq * 1e6:.0f} / {pend * 1e6:.0f} / "
                    f"{ack * 1e6:.0f} us per batch",
                    math.nan,
                    "",
                )
            )
    finally:
        await queue_store.close()
    loop = asyncio.get_running_loop()
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        await loop.run_in_executor(None, int)
        best = min(best, time.perf_counter() - t0)
    rows.append(("baseline: an empty hop to a worker thread and back", best * 1e6, "wall"))
    return rows


async def sdk(n: int) -> list[Row]:
    identity = AgentIdentity.generate("bench")
    agent = Agent(identity, Credentials(b"", b"", b""), host="127.0.0.1", port=1)
    message = Message("00", "did:key:zA", "alice", identity.did, b"x" * 1024, 0.0, False)

    async def drain_iterator() -> None:
        for _ in range(n):
            agent._inbox.put_nowait(message)
        taken = 0
        async for _ in agent.messages():
            taken += 1
            if taken == n:
                break

    best = math.inf
    for _ in range(5):
        start = time.thread_time()
        await drain_iterator()
        best = min(best, time.thread_time() - start)
    queue: asyncio.Queue[Message] = asyncio.Queue()

    async def drain_queue() -> None:
        for _ in range(n):
            queue.put_nowait(message)
        for _ in range(n):
            await queue.get()

    base = math.inf
    for _ in range(5):
        start = time.thread_time()
        await drain_queue()
        base = min(base, time.thread_time() - start)
    return [
        ("Agent.messages(), per message already queued", best / n * 1e6, "cpu"),
        ("baseline: await asyncio.Queue.get() on the same queue contents", base / n * 1e6, "cpu"),
        (
            "AgentIdentity.did (per call; the SDK calls it per control frame)",
            cpu_best(lambda: [identity.did for _ in range(200)], 200),
            "cpu",
        ),
    ]


def crypto() -> list[Row]:
    identity = AgentIdentity.generate("bench")
    key = identity.signing_key
    data = b"x" * 120
    signature = key.sign(data)
    public = key.public_key
    return [
        (
            "Ed25519 sign (checkpoint or receipt, per batch)",
            cpu_best(lambda: [key.sign(data) for _ in range(200)], 200),
            "cpu",
        ),
        (
            "Ed25519 verify (checkpoint or receipt, per batch)",
            cpu_best(lambda: [public.verify(signature, data) for _ in range(200)], 200),
            "cpu",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=5000, help="calls per measurement (default 5000)")
    args = p.parse_args(argv)
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} {m['python']}\n")
    with tempfile.TemporaryDirectory(prefix="trustwire-components-") as tmp:
        groups = {
            "coordinator: rate limiter": rate_limiter(args.n),
            "coordinator: security events": events(Path(tmp), args.n),
            "coordinator: policy and principals": policy(args.n),
            "coordinator: durable queue": asyncio.run(store(Path(tmp), 256, 20)),
            "SDK": asyncio.run(sdk(args.n)),
            "crypto (per batch, not per message)": crypto(),
        }
    for group, rows in groups.items():
        print(group)
        for name, value, unit in rows:
            figure = "" if math.isnan(value) else f"{value:9.2f} us {unit}"
            print(f"  {figure:>17}  {name}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
