"""Audit log benchmark: trail throughput, a million-entry log, proofs and ``verify_log``.

    .venv/bin/python bench/audit.py                      # defaults, a minute or two
    .venv/bin/python bench/audit.py --entries 100000 --events 50000 --json

Everything runs in one process on a SQLite log in a temporary directory
(``synchronous=NORMAL``, as deployed). Phases:

1. **Trail.** ``--events`` security events (``message.accepted`` with a few details, as
   the coordinator emits per message) are emitted in one burst into :class:`AuditTrail`
   with the default batching (50 ms, 1,000 events per batch; the buffer is sized to hold
   the burst). Reported: the caller's cost per ``emit``, and events per second end to end
   (first emit to the last entry appended and its head signed, i.e. through ``close()``),
   which is the writer thread's sustained throughput.
2. **Bulk append.** ``--entries`` entries of ``--entry-size`` bytes through
   ``MerkleLog.append_many`` in batches of ``--batch``, then one signed head.
3. **Proofs** over the full log: ``--proofs`` random inclusion proofs (generated and
   verified) and as many consistency proofs from random older sizes.
   The file is reopened first (rebuilding the right edge from the node cache and checking
   the stored head), and that time is reported too.
4. **Verify**: ``verify_log(read_entries(path), head, key, since_head)`` rehashes every
   entry and checks the final head and one signed halfway through.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trustwire.audit import AUDIT_ORIGIN, AuditTrail, MerkleLog, read_entries, verify_log
from trustwire.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from trustwire.crypto.signing import SigningKey
from trustwire.events import EventKind, SecurityEvent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events through the trail")
    p.add_argument("--entries", type=int, default=1_000_000, help="entries in the big log")
    p.add_argument("--entry-size", type=int, default=200, help="bytes per bulk entry")
    p.add_argument("--batch", type=int, default=10_000, help="append_many batch size")
    p.add_argument("--proofs", type=int, default=1000, help="proofs of each kind")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p.parse_args(argv)


def _event(i: int) -> SecurityEvent:
    return SecurityEvent(
        kind=EventKind.MESSAGE_ACCEPTED,
        time=1_700_000_000.0 + i / 1000,
        agent="did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        peer="did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
        details={"message_id": f"{i:032x}", "size": 1024, "channel": "c0ffee"},
    )


def trail_phase(directory: Path, key: SigningKey, events: int) -> dict[str, Any]:
    path = directory / "trail.db"
    batch = [_event(i) for i in range(events)]
    with MerkleLog.open_sqlite(path, origin=AUDIT_ORIGIN) as log:
        # The events are emitted in one burst, far faster than any disk takes them; the
        # buffer must hold the whole burst for the figure to be the writer's throughput.
        trail = AuditTrail(log, key, max_pending=max(events, 1000))
        started = time.perf_counter()
        for event in batch:
            trail.emit(event)
        emitted = time.perf_counter()
        trail.close()
        finished = time.perf_counter()
        head = trail.head()
        if head is None or head.size != events or trail.dropped:
            raise SystemExit(f"trail lost events: head {head}, dropped {trail.dropped}")
    return {
        "events": events,
        "emit_us_per_event": (emitted - started) / events * 1e6,
        "events_per_second": events / (finished - started),
        "seconds": finished - started,
    }


def bulk_phase(path: Path, key: SigningKey, entries: int, size: int, batch: int) -> dict[str, Any]:
    filler = b"x" * max(0, size - 16)
    with MerkleLog.open_sqlite(path, origin="bench/bulk") as log:
        since = None
        started = time.perf_counter()
        for start in range(0, entries, batch):
            stop = min(start + batch, entries)
            log.append_many([b"%016x" % i + filler for i in range(start, stop)])
            if since is None and stop >= entries // 2:
                since = log.signed_tree_head(key, now=time.time())
        appended = time.perf_counter()
        head = log.signed_tree_head(key, now=time.time())
    return {
        "entries": entries,
        "entry_bytes": size,
        "batch": batch,
        "append_seconds": appended - started,
        "entries_per_second": entries / (appended - started),
        "head": head,
        "since": since,
        "file_mb": path.stat().st_size / 1e6,
    }


def proof_phase(path: Path, proofs: int) -> dict[str, Any]:
    rng = random.Random(7)
    started = time.perf_counter()
    log = MerkleLog.open_sqlite(path, origin="bench/bulk")
    reopen = time.perf_counter() - started
    size = log.size
    root = log.root()
    inclusion: list[float] = []
    consistency: list[float] = []
    for _ in range(proofs):
        index = rng.randrange(size)
        t0 = time.perf_counter()
        proof = log.inclusion_proof(index, size)
        inclusion.append(time.perf_counter() - t0)
        verify_inclusion(index, size, leaf_hash(log.entry(index)), proof, root)
        old = rng.randrange(1, size + 1)
        t0 = time.perf_counter()
        path_nodes = log.consistency_proof(old, size)
        consistency.append(time.perf_counter() - t0)
        verify_consistency(old, size, log.root(old), root, path_nodes)
    log.close()
    return {
        "reopen_ms": reopen * 1e3,
        "inclusion_ms_mean": statistics.fmean(inclusion) * 1e3,
        "inclusion_ms_max": max(inclusion) * 1e3,
        "consistency_ms_mean": statistics.fmean(consistency) * 1e3,
        "consistency_ms_max": max(consistency) * 1e3,
    }


def verify_phase(path: Path, key: SigningKey, head: Any, since: Any) -> dict[str, Any]:
    started = time.perf_counter()
    report = verify_log(read_entries(path), head, key.public_key, since_head=since)
    elapsed = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"verify_log failed on an untouched log: {report.problems}")
    return {"verify_seconds": elapsed, "entries_per_second": report.entries / elapsed}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    key = SigningKey.generate()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"
    }
    with tempfile.TemporaryDirectory(prefix="trustwire-bench-audit-") as tmp:
        directory = Path(tmp)
        print(f"trail: {args.events} events ...", file=sys.stderr, flush=True)
        results["trail"] = trail_phase(directory, key, args.events)
        big = directory / "big.db"
        print(f"bulk: {args.entries} entries ...", file=sys.stderr, flush=True)
        bulk = bulk_phase(big, key, args.entries, args.entry_size, args.batch)
        head, since = bulk.pop("head"), bulk.pop("since")
        results["bulk"] = bulk
        print("proofs ...", file=sys.stderr, flush=True)
        results["proofs"] = proof_phase(big, args.proofs)
        print("verify_log ...", file=sys.stderr, flush=True)
        results["verify"] = verify_phase(big, key, head, since)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    t, b, p, v = results["trail"], results["bulk"], results["proofs"], results["verify"]
    print(f"machine: {results['machine']}")
    print(
        f"trail:   {t['events']:,} events in {t['seconds']:.2f} s = {t['events_per_second']:,.0f}"
        f" events/s end to end; emit() {t['emit_us_per_event']:.2f} us on the caller"
    )
    print(
        f"append:  {b['entries']:,} x {b['entry_bytes']} B in batches of {b['batch']:,}:"
        f" {b['append_seconds']:.1f} s = {b['entries_per_second']:,.0f} entries/s"
        f" ({b['file_mb']:.0f} MB file)"
    )
    print(
        f"proofs:  reopen {p['reopen_ms']:.1f} ms; inclusion {p['inclusion_ms_mean']:.2f} ms"
        f" mean / {p['inclusion_ms_max']:.2f} ms max; consistency"
        f" {p['consistency_ms_mean']:.2f} ms mean / {p['consistency_ms_max']:.2f} ms max"
    )
    print(
        f"verify:  verify_log over {b['entries']:,} entries: {v['verify_seconds']:.1f} s"
        f" = {v['entries_per_second']:,.0f} entries/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
