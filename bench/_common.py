"""Shared plumbing for the benchmarks: processes, the payload stamp, CPU accounting, stats.

Every process of a benchmark (coordinator or relay, each sender, each receiver) is a
``multiprocessing`` child started with *spawn*, talking to the parent over one ``Pipe``:

    child  -> ("ready", info)      connected, warmed up
    parent -> ("start", phase)     phase["t0"] is the wall-clock start, the same for all
    child  -> ("done", result)     a sender, once its last send has returned
    parent -> ("stop", info)       receivers, coordinator, relay
    child  -> ("done", result)

Payloads start with :data:`STAMP` (send time, sender index, sequence number) and are padded
to the requested size. Everything runs on one machine, so receivers compute one-way latency
as ``time.time()`` at delivery minus the stamp.
"""

from __future__ import annotations

import asyncio
import cProfile
import multiprocessing
import multiprocessing.connection
import os
import platform
import resource
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAMP = struct.Struct(">dII")
#: Sequence number of the warm-up message that opens the channel (not counted).
WARMUP = 0xFFFFFFFF

Conn = multiprocessing.connection.Connection

_CTX = multiprocessing.get_context("spawn")


def payload(stamp: float, sender: int, seq: int, filler: bytes) -> bytes:
    return STAMP.pack(stamp, sender, seq) + filler


def filler_for(size: int) -> bytes:
    if size < STAMP.size:
        raise ValueError(f"--size must be at least {STAMP.size} bytes")
    return b"x" * (size - STAMP.size)


# -- processes ------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: multiprocessing.process.BaseProcess
    conn: Conn

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"{self.name}: no {kind!r} within {timeout:.0f} s")
        try:
            message = self.conn.recv()
        except EOFError as exc:
            raise RuntimeError(f"{self.name} exited (code {self.process.exitcode})") from exc
        got, info = message
        if got == "error":
            raise RuntimeError(f"{self.name} failed:\n{info}")
        if got != kind:
            raise RuntimeError(f"{self.name}: expected {kind!r}, got {got!r}")
        result: dict[str, Any] = info
        return result

    def send(self, kind: str, info: dict[str, Any] | None = None) -> None:
        self.conn.send((kind, info or {}))

    def join(self) -> None:
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def spawn(name: str, target: Callable[[Conn, dict[str, Any]], None], spec: dict[str, Any]) -> Child:
    parent, child = _CTX.Pipe()
    process = _CTX.Process(target=target, args=(child, spec), name=name, daemon=True)
    process.start()
    child.close()
    return Child(name, process, parent)


def child_main(
    conn: Conn, spec: dict[str, Any], body: Callable[[Conn, dict[str, Any], Phase], Any]
) -> None:
    """Run ``body`` (a coroutine function) in a fresh event loop, reporting any crash."""
    import traceback

    phase = Phase(spec.get("profile"))
    try:
        asyncio.run(body(conn, spec, phase))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise
    finally:
        phase.dump()


async def receive(conn: Conn) -> tuple[str, dict[str, Any]]:
    """The parent's next command, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    kind, info = await loop.run_in_executor(None, conn.recv)
    return str(kind), dict(info)


async def sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# -- CPU accounting and profiling -------------------------------------------------------------


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """native thread id -> (name, user+system CPU seconds), from /proc."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc/self/task"):
        try:
            with open(f"{entry.path}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        tid = int(entry.name)
        name = names.get(tid, f"thread-{tid}")
        if name.startswith("Thread-") and name.endswith("(_timer)"):
            name = "limits expiry timer"
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


class Phase:
    """Measures one process's CPU over the measured phase; optionally profiles it."""

    def __init__(self, profile_path: str | None) -> None:
        self.profile_path = profile_path
        self.profiler = cProfile.Profile() if profile_path else None
        self._wall = 0.0
        self._cpu = 0.0
        self._threads: dict[int, tuple[str, float]] = {}

    def begin(self) -> None:
        self._wall = time.time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu = usage.ru_utime + usage.ru_stime
        self._threads = _thread_cpu()
        if self.profiler is not None:
            self.profiler.enable()

    def end(self) -> dict[str, Any]:
        if self.profiler is not None:
            self.profiler.disable()
        wall = time.time() - self._wall
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - self._cpu
        threads: dict[str, float] = {}
        main_id = threading.main_thread().native_id
        for tid, (name, seconds) in _thread_cpu().items():
            before = self._threads.get(tid, (name, 0.0))[1]
            label = "main (event loop)" if tid == main_id else name
            threads[label] = threads.get(label, 0.0) + seconds - before
        threads["exited threads"] = max(0.0, cpu - sum(threads.values()))
        return {"wall": wall, "cpu": cpu, "threads": threads}

    def dump(self) -> None:
        if self.profiler is not None and self.profile_path:
            self.profiler.dump_stats(self.profile_path)


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return (0.0, 0.0, 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return (busy / tick, steal / tick, (busy + idle + iowait + steal) / tick)


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``nan`` when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    try:
        import cryptography

        crypto_version = cryptography.__version__
    except ImportError:  # pragma: no cover - a dependency
        crypto_version = "?"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "openssl": ssl.OPENSSL_VERSION,
        "cryptography": crypto_version,
        "platform": platform.platform(),
    }
