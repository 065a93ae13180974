"""Where the time goes: the coordinator, one sender and one receiver under cProfile.

    .venv/bin/python bench/profile_e2e.py                       # throughput phase, 8 s
    .venv/bin/python bench/profile_e2e.py --rate 1500 --top 30  # fixed-rate phase instead
    .venv/bin/python bench/profile_e2e.py --out /tmp/prof       # keep the .prof files

The same processes as ``bench/e2e.py`` (spawned, every check on) run one phase with
cProfile enabled in each from the start signal to the end of the phase, so setup, imports
and handshakes are left out. For each process this prints the CPU it used per thread
(cProfile sees only the event-loop thread; the SQLite worker, the event-log writer and the
rate limiter's expiry timers run in other threads) and the top functions by own time and
by cumulative time. Profiling slows Python code down (roughly 1.5-2x), so read the
figures as shares, not absolute costs. The ``.prof`` files open in snakeviz or
``python -m pstats``.
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _trustwire
import e2e

# (category, test on the pstats key "path:function") in order; the first match wins.
_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle (waiting in epoll)", ("select.epoll",)),
    ("blocked on a lock (thread start/join)", ("_thread.lock", "_thread.start_new_thread")),
    ("crypto: Ed25519", ("ed25519",)),
    ("crypto: AES-GCM", ("aead.AESGCM", "/crypto/aead.py")),
    ("crypto: hashes, randomness, X25519", ("x25519", "_hashlib", "/crypto/", "urandom")),
    ("TLS records + socket syscalls", ("_ssl.", "_socket.", "sslproto.py", "selector_events.py")),
    ("trustwire protocol (envelope, frames, channel, content, replay)", ("/protocol/",)),
    ("trustwire SDK (client/agent.py)", ("/client/",)),
    ("trustwire coordinator (server.py)", ("/coordinator/server.py",)),
    ("rate limiter (ratelimit.py + limits)", ("/coordinator/ratelimit.py", "/limits/")),
    ("policy engine", ("/policy/",)),
    (
        "security events (events, audit trail, detectors, metrics, json)",
        (
            "/trustwire/events.py",
            "/json/",
            "/trustwire/audit/",
            "/trustwire/detect/",
            "/coordinator/metrics.py",
            "prometheus_client",
        ),
    ),
    ("store (client side of the SQLite thread)", ("/store/", "concurrent/futures", "SimpleQueue")),
    ("benchmark harness", ("/bench/",)),
    (
        "asyncio machinery (loop, futures, tasks, queues, streams)",
        ("/asyncio/", "_asyncio.", "_contextvars", "heapq", "_weakrefset.py", "threading.py"),
    ),
)


def categorize(path: str) -> dict[str, float]:
    """Own time (seconds) per category for one .prof file.

    A function that matches no category (a builtin such as ``isinstance``, or a standard
    library helper such as ``enum``) counts for the category of its heaviest caller.
    """
    stats = pstats.Stats(path)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]

    def direct(func: tuple[str, int, str]) -> str | None:
        key = f"{func[0]}:{func[2]}"
        return next((c for c, marks in _CATEGORIES if any(m in key for m in marks)), None)

    def category(func: tuple[str, int, str], depth: int = 0) -> str:
        found = direct(func)
        if found is not None:
            return found
        callers: dict[tuple[str, int, str], tuple[Any, ...]] = raw[func][4]
        if depth >= 6 or not callers:
            return "other"
        heaviest = max(callers, key=lambda c: callers[c][2])
        return category(heaviest, depth + 1) if heaviest in raw else "other"

    totals: dict[str, float] = {}
    for func, (_cc, _nc, tottime, _ct, _callers) in raw.items():
        name = category(func)
        totals[name] = totals.get(name, 0.0) + tottime
    return totals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds (default 8)")
    p.add_argument("--rate", type=float, default=0.0, help="fixed total rate (default: max)")
    p.add_argument("--window", type=int, default=1024, help="sends in flight (default 1024)")
    p.add_argument("--size", type=int, default=1024, help="message size (default 1024)")
    p.add_argument("--top", type=int, default=25, help="functions per table (default 25)")
    p.add_argument("--out", type=Path, help="directory to keep the .prof files in")
    args = p.parse_args(argv)
    e2e_args = e2e.parse_args(
        ["--duration", str(args.duration), "--window", str(args.window), "--size", str(args.size)]
    )
    plan: dict[str, Any] = {
        "duration": args.duration,
        "messages": 0,
        "window": args.window,
        "kind": "latency" if args.rate else "throughput",
        "rate": args.rate,
    }
    with tempfile.TemporaryDirectory(prefix="trustwire-profile-") as tmp:
        out = args.out or Path(tmp) / "profiles"
        out.mkdir(parents=True, exist_ok=True)
        home = Path(tmp) / "home"
        _trustwire.make_home(home, 1, 1)
        print(f"profiling {plan['kind']} phase for {args.duration:g} s ...", file=sys.stderr)
        raw = e2e.run_phase("trustwire", home, e2e_args, plan, profile_dir=out)
        summary = e2e.summarize(raw, plan)
        print(
            f"under the profiler: {summary['throughput']:,.0f} msg/s delivered, "
            f"{summary['delivered']:,} messages"
        )
        for name, file in (
            ("coordinator", "coordinator"),
            ("sender 0", "sender0"),
            ("receiver 0", "receiver0"),
        ):
            cpu = summary["cpu"][name]
            threads = ", ".join(f"{k} {v:.2f}" for k, v in cpu["threads"].items())
            print(f"\n{'=' * 100}\n{name}: CPU {cpu['utilization']:.2f} cores ({threads})")
            totals = categorize(str(out / f"{file}.prof"))
            busy = sum(v for k, v in totals.items() if not k.startswith(("idle", "blocked")))
            messages = max(1, summary["delivered"])
            print(
                f"\n-- {name}, event-loop thread by category (profiled time; "
                f"us per delivered message, share of busy time)"
            )
            for category, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
                share = "" if category.startswith(("idle", "blocked")) else f"{seconds / busy:6.1%}"
                print(f"  {seconds / messages * 1e6:9.1f} us  {share:>6}  {category}")
            for order, label in (("tottime", "own time"), ("cumulative", "cumulative time")):
                stream = io.StringIO()
                stats = pstats.Stats(str(out / f"{file}.prof"), stream=stream)
                stats.strip_dirs().sort_stats(order).print_stats(args.top)
                body = stream.getvalue()
                start = body.find("   ncalls")
                print(f"\n-- {name}, top {args.top} by {label}\n{body[start:].rstrip()}")
        if args.out:
            print(f"\nprofiles kept in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
