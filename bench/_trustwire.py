"""The trustwire side of the benchmark: a real coordinator and SDK agents, each a process.

Nothing is switched off: mutual TLS 1.3 to the coordinator, a Noise IK channel per
sender/receiver pair, replay checks (timestamp window, envelope-id cache, channel
counters), Cedar policy (decisions cached), the ``limits`` rate limiter (moving window,
set far above the offered load so it never throttles), the durable SQLite (WAL) queue
that every routed frame passes through, signed checkpoints and signed receipts, and the
security events as ``trustwire serve`` handles them (``events.jsonl``, the signed audit
trail, metrics, anomaly detectors).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from _common import WARMUP, Conn, Phase, child_main, filler_for, payload, receive, sleep_until

#: The per-agent rate limit in the benchmark policy: far above anything one agent reaches.
RATE_LIMIT = "1000000/second"


def make_home(path: Path, senders: int, receivers: int) -> None:
    """A fresh home with the default policy (everyone may message everyone), the rate
    limit raised to :data:`RATE_LIMIT`, and agents ``s0..`` and ``r0..`` enrolled."""
    from trustwire.home import Home
    from trustwire.policy.model import RateLimits, default_policy

    policy = dataclasses.replace(default_policy(), rate_limits=RateLimits(default=RATE_LIMIT))
    home = Home.init(path, policy=policy)

    async def enrol() -> None:
        store = await home.open_store()
        try:
            for name in [f"r{i}" for i in range(receivers)] + [f"s{i}" for i in range(senders)]:
                await home.create_agent(name, store=store)
        finally:
            await store.close()

    asyncio.run(enrol())


# -- coordinator ------------------------------------------------------------------------------


def coordinator_main(conn: Conn, spec: dict[str, Any]) -> None:
    child_main(conn, spec, _coordinator)


async def _coordinator(conn: Conn, spec: dict[str, Any], phase: Phase) -> None:
    # Built as ``trustwire serve`` builds it (cli/serve.py): the same instruments (events
    # file, signed audit trail, metrics, anomaly detectors), the registry whose proofs
    # agents verify on every lookup, default limits and config.
    from trustwire.cli.instruments import Instruments
    from trustwire.coordinator.server import Coordinator
    from trustwire.home import Home
    from trustwire.policy.engine import PolicyEngine
    from trustwire.transport.tls import server_ssl_context

    home = Home(spec["home"])
    config = home.policy()
    instruments = Instruments.open(home, config.monitoring)
    if os.environ.get("TRUSTWIRE_BENCH_NO_AUDIT"):
        # For the audit-overhead comparison: everything as serve builds it, minus the
        # signed audit trail.
        instruments.events.remove_sink(instruments.trail)
    store = await home.open_store()
    registry = await home.open_registry(store)
    if registry.head().size == 0:
        await registry.import_directory()
    await registry.verify_against_directory()
    coordinator = Coordinator(
        store=store,
        policy=PolicyEngine(config),
        tls=server_ssl_context(*home.coordinator_tls()),
        events=instruments.events,
        registry=registry,
    )
    await coordinator.start()

    async def housekeeping() -> None:  # what serve does every couple of seconds
        while True:
            await asyncio.sleep(2.0)
            await coordinator.refresh_agents()
            await instruments.tick(store)

    chores = asyncio.create_task(housekeeping())
    conn.send(("ready", {"port": coordinator.port}))
    await receive(conn)  # start
    phase.begin()
    await receive(conn)  # stop
    result = phase.end()
    chores.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await chores
    await coordinator.close()
    await instruments.aclose()
    await registry.close()
    await store.close()
    conn.send(("done", result))


# -- agents -----------------------------------------------------------------------------------


async def _connect(spec: dict[str, Any]) -> Any:
    from trustwire.client.agent import Agent
    from trustwire.home import Home

    identity, credentials = Home(spec["home"]).load_agent(spec["name"])
    return await Agent.connect(
        identity, credentials, coordinator=spec["coordinator"], receipt_timeout=60.0
    )


def receiver_main(conn: Conn, spec: dict[str, Any]) -> None:
    child_main(conn, spec, _receiver)


async def _receiver(conn: Conn, spec: dict[str, Any], phase: Phase) -> None:
    from _common import STAMP

    agent = await _connect(spec)
    arrivals = array("d")
    latencies = array("d")
    # Delivery time minus the SDK's own send stamp (taken when it encrypts the batch):
    # the part of the latency spent after the sender's SDK wrote the message.
    transits = array("d")
    unpack = STAMP.unpack_from
    expected = 2**63
    complete = asyncio.Event()

    async def consume() -> None:
        async for message in agent.messages():
            now = time.time()
            stamp, _sender, seq = unpack(message.data)
            if seq != WARMUP:
                arrivals.append(now)
                latencies.append(now - stamp)
                transits.append(now - message.sent_at)
                if len(arrivals) >= expected:
                    complete.set()

    consumer = asyncio.create_task(consume())
    conn.send(("ready", {}))
    await receive(conn)  # start
    phase.begin()
    _, stop = await receive(conn)
    # Senders are done (every send returned its receipt); let the application side of
    # the SDK hand over what it still holds.
    expected = stop["expected"]
    if len(arrivals) >= expected:
        complete.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), 10)
    result = phase.end()
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    await agent.close()
    result.update(
        arrivals=arrivals.tobytes(),
        latencies=latencies.tobytes(),
        transits=transits.tobytes(),
        rejected=dict(agent.rejected),
    )
    conn.send(("done", result))


def sender_main(conn: Conn, spec: dict[str, Any]) -> None:
    child_main(conn, spec, _sender)


async def _sender(conn: Conn, spec: dict[str, Any], phase: Phase) -> None:
    from trustwire.errors import TrustwireError

    agent = await _connect(spec)
    index: int = spec["index"]
    target: str = spec["target"]
    filler = filler_for(spec["size"])
    # The first message opens the Noise channel; it is not measured.
    warm = await agent.send(target, payload(0.0, index, WARMUP, filler))
    if warm.via != "channel":
        raise RuntimeError(f"warm-up went {warm.via}, expected a channel")
    conn.send(("ready", {}))
    _, plan = await receive(conn)
    await sleep_until(plan["t0"])
    phase.begin()
    rtts = array("d")
    errors: Counter[str] = Counter()
    send = agent.send

    async def one(seq: int, stamp: float) -> None:
        try:
            await send(target, payload(stamp, index, seq, filler))
        except TrustwireError as exc:
            errors[type(exc).__name__] += 1
        else:
            rtts.append(time.time() - stamp)

    sent = 0
    deadline = plan["t0"] + plan["duration"]
    limit = plan["messages"] or 2**31
    if plan["kind"] == "throughput":
        # ``window`` sends in flight: each worker starts its next send as soon as the
        # previous one returns (delivered, receipt verified).
        async def worker() -> None:
            nonlocal sent
            while sent < limit:
                now = time.time()
                if now >= deadline:
                    return
                seq = sent
                sent += 1
                await one(seq, now)

        await asyncio.gather(*(worker() for _ in range(plan["window"])))
    else:
        # Open loop at a fixed rate: message i is due at t0 + i / rate and stamped with
        # that time, so a sender that falls behind shows up as latency.
        rate = plan["rate"]
        tasks: set[asyncio.Task[None]] = set()
        t0 = plan["t0"]
        while sent < limit:
            now = time.time()
            if now >= deadline:
                break
            due = min(limit, int((now - t0) * rate) + 1)
            while sent < due:
                task = asyncio.create_task(one(sent, t0 + sent / rate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await sleep_until(t0 + sent / rate)
        if tasks:
            await asyncio.wait(tasks, timeout=60)
    result = phase.end()
    result.update(sent=sent, rtts=rtts.tobytes(), errors=dict(errors))
    await agent.close()
    conn.send(("done", result))
