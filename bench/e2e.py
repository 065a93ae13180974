"""End-to-end benchmark: trustwire against a plain TLS 1.3 relay, measured in the same run.

    .venv/bin/python bench/e2e.py                 # defaults, about 1-2 minutes
    .venv/bin/python bench/e2e.py --senders 2 --receivers 2 --duration 15 --json

A temporary home (domain CA, coordinator certificate, policy, enrolled agents) is created;
the coordinator runs in its own process and every agent in its own process (spawn). Sender
``i`` sends to receiver ``i % receivers``. Two phases per system:

1. **Throughput.** Each sender keeps ``--window`` sends in flight (a send returns once
   the message is delivered and its signed receipt verified) for ``--duration`` seconds
   or ``--messages`` messages. Reported: messages the receivers' applications got per
   second of wall time, after a warm-up second (or over the whole run with
   ``--messages``).
2. **Latency.** Open-loop sends at a fixed total rate (``--rate``, default half the
   measured trustwire maximum); message ``i`` is stamped with its scheduled time
   ``t0 + i/rate``. Reported: one-way latency, stamp to delivery to the receiving
   application (same machine, ``time.time()``), and the sender's round trip, stamp to
   ``send()`` returning with a verified receipt (acknowledgement, for the baseline).

The baseline is described in ``bench/_baseline.py``; it runs the same phases at the same
offered rate. See ``docs/PERFORMANCE.md`` for figures and the profile.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _baseline
import _trustwire
from _common import Child, machine, machine_cpu, percentile, spawn

WARMUP_SECONDS = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--senders", type=int, default=1, help="sender processes (default 1)")
    p.add_argument("--receivers", type=int, default=1, help="receiver processes (default 1)")
    p.add_argument(
        "--messages", type=int, default=0, help="messages per sender per phase (0: time-bound)"
    )
    p.add_argument("--size", type=int, default=1024, help="message size in bytes (default 1024)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="total offered rate for the latency phase (default: half the measured maximum)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    p.add_argument(
        "--window", type=int, default=1024, help="sends in flight per sender (default 1024)"
    )
    p.add_argument(
        "--only", choices=("trustwire", "baseline"), help="run one system (no comparison)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = p.parse_args(argv)
    if args.senders < 1 or args.receivers < 1 or args.window < 1 or args.duration <= 0:
        p.error("--senders, --receivers, --window and --duration must be positive")
    return args


# -- one phase --------------------------------------------------------------------------------


def run_phase(
    system: str,
    home: Path,
    args: argparse.Namespace,
    plan: dict[str, Any],
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Start the server and agents, run ``plan``, stop everything, return raw results."""
    module: Any = _trustwire if system == "trustwire" else _baseline
    server_main = module.coordinator_main if system == "trustwire" else module.relay_main

    def profile(name: str) -> str | None:
        return str(profile_dir / f"{name}.prof") if profile_dir else None

    children: list[Child] = []
    try:
        server = spawn(
            "coordinator", server_main, {"home": str(home), "profile": profile("coordinator")}
        )
        children.append(server)
        address = f"127.0.0.1:{server.expect('ready', 60)['port']}"
        receivers = [
            spawn(
                f"receiver {i}",
                module.receiver_main,
                {
                    "home": str(home),
                    "name": f"r{i}",
                    "id": i,
                    "coordinator": address,
                    "profile": profile(f"receiver{i}"),
                },
            )
            for i in range(args.receivers)
        ]
        children += receivers
        for child in receivers:
            child.expect("ready", 60)
        senders = [
            spawn(
                f"sender {i}",
                module.sender_main,
                {
                    "home": str(home),
                    "name": f"s{i}",
                    "id": 1000 + i,
                    "index": i,
                    "target": f"r{i % args.receivers}",
                    "target_id": i % args.receivers,
                    "size": args.size,
                    "coordinator": address,
                    "profile": profile(f"sender{i}"),
                },
            )
            for i in range(args.senders)
        ]
        children += senders
        for child in senders:
            child.expect("ready", 60)
        t0 = time.time() + 0.5
        for child in children:
            child.send("start", {**plan, "t0": t0})
        time.sleep(0.5)
        cpu_before = machine_cpu()
        sent = [child.expect("done", plan["duration"] + 120) for child in senders]
        cpu_after = machine_cpu()
        expected = Counter[int]()
        for i, result in enumerate(sent):
            expected[i % args.receivers] += result["sent"]
        for i, child in enumerate(receivers):
            child.send("stop", {"expected": expected[i]})
        received = [child.expect("done", 30) for child in receivers]
        server.send("stop")
        server_result = server.expect("done", 30)
    finally:
        for child in children:
            child.join()
    busy, steal, total = (
        after - before for after, before in zip(cpu_after, cpu_before, strict=True)
    )
    wall = total / (os.cpu_count() or 1)
    # Our processes' CPU over (about) the same interval: what is left is other load.
    ours = sum(r["cpu"] for r in [*sent, *received, server_result])
    return {
        "t0": t0,
        "machine_load": {
            "busy_cores": busy / wall if wall else 0.0,
            "other_cores": max(0.0, busy - ours) / wall if wall else 0.0,
            "steal": steal / total if total else 0.0,
        },
        "senders": sent,
        "receivers": received,
        "server": server_result,
    }


def summarize(raw: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    t0 = raw["t0"]
    arrivals = array("d")
    latencies = array("d")
    rtts = array("d")
    for r in raw["receivers"]:
        a, lat = array("d"), array("d")
        a.frombytes(r["arrivals"])
        lat.frombytes(r["latencies"])
        arrivals.extend(a)
        latencies.extend(lat)
    errors: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    for s in raw["senders"]:
        chunk = array("d")
        chunk.frombytes(s["rtts"])
        rtts.extend(chunk)
        errors.update(s["errors"])
    for r in raw["receivers"]:
        rejected.update(r["rejected"])
    sent = sum(s["sent"] for s in raw["senders"])
    delivered = len(arrivals)
    if plan["messages"]:
        span = (max(arrivals) - t0) if arrivals else math.nan
        throughput = delivered / span if arrivals else 0.0
    else:
        start = t0 + min(WARMUP_SECONDS, plan["duration"] / 5)
        end = t0 + plan["duration"]
        in_window = sum(1 for t in arrivals if start <= t < end)
        throughput = in_window / (end - start)
    transits = array("d")
    for r in raw["receivers"]:
        if "transits" in r:
            chunk = array("d")
            chunk.frombytes(r["transits"])
            transits.extend(chunk)
    measured = [lat for lat, t in zip(latencies, arrivals, strict=True) if t >= t0 + 0.5]
    cpu = {"coordinator": raw["server"]}
    for i, s in enumerate(raw["senders"]):
        cpu[f"sender {i}"] = {k: s[k] for k in ("wall", "cpu", "threads")}
    for i, r in enumerate(raw["receivers"]):
        cpu[f"receiver {i}"] = {k: r[k] for k in ("wall", "cpu", "threads")}
    return {
        "machine_load": raw["machine_load"],
        "throughput": throughput,
        "sent": sent,
        "delivered": delivered,
        "errors": dict(errors),
        "rejected": dict(rejected),
        "latency_p50_ms": percentile(measured, 50) * 1000,
        "latency_p99_ms": percentile(measured, 99) * 1000,
        "latency_max_ms": max(measured, default=math.nan) * 1000,
        "transit_p50_ms": percentile(transits, 50) * 1000,
        "transit_p99_ms": percentile(transits, 99) * 1000,
        "rtt_p50_ms": percentile(rtts, 50) * 1000,
        "rtt_p99_ms": percentile(rtts, 99) * 1000,
        "cpu": {
            name: {
                "utilization": v["cpu"] / v["wall"] if v["wall"] else math.nan,
                "threads": {k: t / v["wall"] for k, t in v["threads"].items() if t > 0.005},
            }
            for name, v in cpu.items()
        },
    }


# -- the run ----------------------------------------------------------------------------------


def log(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    systems = [args.only] if args.only else ["trustwire", "baseline"]
    results: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "senders": args.senders,
            "receivers": args.receivers,
            "size": args.size,
            "window": args.window,
            "duration": args.duration,
            "messages": args.messages,
        },
    }
    with tempfile.TemporaryDirectory(prefix="trustwire-bench-") as tmp:
        home = Path(tmp) / "home"
        _trustwire.make_home(home, args.senders, args.receivers)
        base = {"duration": args.duration, "messages": args.messages, "window": args.window}
        for system in systems:
            log(args, f"[{system}] throughput, {args.duration:g} s ...")
            plan = {**base, "kind": "throughput"}
            results[system] = {"throughput": summarize(run_phase(system, home, args, plan), plan)}
            log(args, f"  {results[system]['throughput']['throughput']:,.0f} msg/s")
        rate = args.rate or results[systems[0]]["throughput"]["throughput"] / 2
        results["config"]["rate"] = rate
        for system in systems:
            log(args, f"[{system}] latency at {rate:,.0f} msg/s, {args.duration:g} s ...")
            plan = {**base, "kind": "latency", "rate": rate / args.senders}
            results[system]["latency"] = summarize(run_phase(system, home, args, plan), plan)
            lat = results[system]["latency"]
            log(args, f"  p50 {lat['latency_p50_ms']:.1f} ms, p99 {lat['latency_p99_ms']:.1f} ms")
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(report(results))
    return 0


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    c = results["config"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['implementation']} {m['python']}, {m['openssl']}, cryptography {m['cryptography']}",
        f"layout: 1 coordinator + {c['senders']} sender(s) + {c['receivers']} receiver(s), "
        f"one process each; {c['size']}-byte messages; {c['window']} sends in flight per "
        f"sender; {c['duration']:g} s per phase",
        "",
    ]
    tw, bl = results.get("trustwire"), results.get("baseline")
    rows: list[tuple[str, str, str, str]] = []

    def cell(system: dict[str, Any] | None, phase: str, key: str, fmt: str) -> str:
        if system is None:
            return "-"
        return format(system[phase][key], fmt)

    def ratio(phase: str, key: str) -> str:
        if tw is None or bl is None or not bl[phase][key]:
            return "-"
        return f"{tw[phase][key] / bl[phase][key]:.2f}x"

    rows.append(
        (
            "max throughput (msg/s)",
            cell(tw, "throughput", "throughput", ",.0f"),
            cell(bl, "throughput", "throughput", ",.0f"),
            ratio("throughput", "throughput"),
        )
    )
    rows.append(
        ("latency phase: offered rate (msg/s)", f"{c['rate']:,.0f}", f"{c['rate']:,.0f}", "")
    )
    for key, label in (
        ("throughput", "  achieved (msg/s)"),
        ("latency_p50_ms", "  one-way p50 (ms)"),
        ("latency_p99_ms", "  one-way p99 (ms)"),
        ("rtt_p50_ms", "  send->receipt p50 (ms)"),
        ("rtt_p99_ms", "  send->receipt p99 (ms)"),
    ):
        fmt = ",.0f" if key == "throughput" else ".2f"
        rows.append(
            (
                label,
                cell(tw, "latency", key, fmt),
                cell(bl, "latency", key, fmt),
                ratio("latency", key),
            )
        )
    header = ("", "trustwire", "TLS relay", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        lines.append(
            "  ".join(
                [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 4)]
            ).rstrip()
        )
    for name, system in (("trustwire", tw), ("baseline", bl)):
        if system is None:
            continue
        for phase in ("throughput", "latency"):
            s = system[phase]
            problems = []
            if s["delivered"] != s["sent"]:
                problems.append(f"sent {s['sent']}, delivered {s['delivered']}")
            if s["errors"]:
                problems.append(f"send errors {s['errors']}")
            if s["rejected"]:
                problems.append(f"rejected {s['rejected']}")
            if problems:
                lines.append(f"WARNING {name} {phase}: " + "; ".join(problems))
    lines.append("")
    lines.append("CPU per process (1.00 = one core busy) and other load on the machine:")
    busiest = 0.0
    for name, system in (("trustwire", tw), ("baseline", bl)):
        if system is None:
            continue
        for phase in ("throughput", "latency"):
            s = system[phase]
            procs = ", ".join(f"{p} {v['utilization']:.2f}" for p, v in s["cpu"].items())
            load = s["machine_load"]
            lines.append(
                f"  {name} {phase}: {procs}; other processes {load['other_cores']:.2f}, "
                f"steal {load['steal']:.0%}"
            )
            busiest = max(busiest, load["other_cores"])
    if busiest > 0.25:
        lines.append(
            f"WARNING: other processes used up to {busiest:.2f} cores during a phase; "
            "the figures above are not representative of this machine. Run again when it is idle."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
