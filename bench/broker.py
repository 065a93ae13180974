"""Credential-broker benchmark: brokered requests against direct ones, in the same run.

    .venv/bin/python bench/broker.py                     # defaults, about 40 s
    .venv/bin/python bench/broker.py --duration 10 --concurrency 32 --json

Three processes (``multiprocessing``, spawn): a local HTTPS upstream API with an OAuth2
token endpoint (aiohttp, certificate from a throwaway CA), the broker (``start_broker``
as ``trustwire broker serve`` runs it: mutual TLS 1.3 from the agent, policy check,
credential injection, verified TLS upstream, one security event per request into an
in-memory stream), and the load generator (this process, httpx). Three ways of sending
the same ``GET`` to the same upstream:

- **direct**: httpx straight to the upstream over HTTPS (the agent would hold the key);
- **static**: through the broker, service with an API key from the environment injected
  as a header (``forceSSL``, ``authenticateURLsMatching``);
- **oauth2**: through the broker, service with an OAuth2 client-credentials token
  (fetched once, then served from the cache) injected as ``Authorization: Bearer``.

Per way: **throughput** with ``--concurrency`` requests in flight for ``--duration``
seconds (requests/s, after a warm-up), then **latency** of ``--requests`` sequential
requests (one in flight: p50/p99 round trip, and what the broker adds over direct), and
the latency seen during the throughput phase (p50/p99 under load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Child, Conn, child_main, machine, percentile, receive, spawn

WARMUP_REQUESTS = 200
API_KEY = "bench-api-key-0123456789abcdef"
CLIENT_SECRET = "bench-client-secret-0123456789"  # noqa: S105 - a benchmark fixture
KEY_ENV = "TW_BENCH_API_KEY"
SECRET_ENV = "TW_BENCH_CLIENT_SECRET"  # noqa: S105 - a variable name
BODY = b'{"items": [' + b",".join(b'{"id": %d}' % i for i in range(16)) + b"]}"

POLICY = """\
version: 1
policies:
  communication:
    default: deny
    rules:
      - id: bench-uses-the-apis
        effect: allow
        from: {agents: [bench]}
        to: {agents: [static, oauth2]}
        actions: [broker.use]
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds of the throughput phase")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument(
        "--requests", type=int, default=1500, help="sequential requests of the latency phase"
    )
    p.add_argument(
        "--client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="the load generator's HTTP client (httpx: the SDK's broker_client; default aiohttp)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.concurrency < 1 or args.requests < 1:
        p.error("--duration, --concurrency and --requests must be positive")
    return args


# -- the upstream process -----------------------------------------------------------------------


def upstream_main(conn: Conn, spec: dict[str, Any]) -> None:
    child_main(conn, spec, _upstream)


async def _upstream(conn: Conn, spec: dict[str, Any], _phase: Any) -> None:
    from aiohttp import web

    from trustwire.transport.tls import join_server_ssl_context

    async def api(_request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": "bench-token-abc", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/{tail:.*}", api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        0,
        ssl_context=join_server_ssl_context(spec["cert_pem"], spec["key_pem"]),
    )
    await site.start()
    conn.send(("ready", {"port": runner.addresses[0][1]}))
    await receive(conn)
    await runner.cleanup()
    conn.send(("done", {}))


# -- the broker process -------------------------------------------------------------------------


def broker_main(conn: Conn, spec: dict[str, Any]) -> None:
    child_main(conn, spec, _broker)


async def _broker(conn: Conn, spec: dict[str, Any], _phase: Any) -> None:
    from trustwire.broker.config import parse_config
    from trustwire.broker.proxy import start_broker
    from trustwire.events import EventStream, MemorySink
    from trustwire.policy.engine import PolicyEngine
    from trustwire.policy.model import parse_policy
    from trustwire.store.base import AgentRecord
    from trustwire.transport.tls import server_ssl_context

    os.environ[KEY_ENV] = API_KEY
    os.environ[SECRET_ENV] = CLIENT_SECRET
    record = AgentRecord(**spec["agent"])
    sink = MemorySink(maxlen=1000)
    running = await start_broker(
        parse_config(spec["config"]),
        policy=PolicyEngine(parse_policy(POLICY)),
        agents=lambda did: record if did in (record.did, record.name) else None,
        tls=server_ssl_context(spec["cert_pem"], spec["key_pem"], spec["ca_pem"]),
        events=EventStream([sink]),
        upstream_ca=spec["upstream_ca"],
    )
    conn.send(("ready", {}))
    await receive(conn)
    await running.close()
    conn.send(("done", {"events": len(sink.events)}))


# -- the load -------------------------------------------------------------------------------------


Getter = Any
"""``async (url) -> (status, body)``: one GET by the load generator's client."""


async def _throughput(get: Getter, url: str, concurrency: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status, body = await get(url)
            latencies.append(time.perf_counter() - started)
            if status != 200 or body != BODY:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


async def _latency(get: Getter, url: str, requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        status, body = await get(url)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"unexpected status {status}: {body[:200]!r}")
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": sum(latencies) / len(latencies) * 1000,
    }


async def _measure(get: Getter, url: str, args: argparse.Namespace) -> dict[str, Any]:
    for _ in range(WARMUP_REQUESTS):
        status, body = await get(url)
        if status != 200:
            raise RuntimeError(f"warm-up got {status}: {body[:200]!r}")
    return {
        "throughput": await _throughput(get, url, args.concurrency, args.duration),
        "latency": await _latency(get, url, args.requests),
    }


async def _load(
    args: argparse.Namespace, material: dict[str, Any], upstream: int, ports: dict[str, int]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    direct = f"https://127.0.0.1:{upstream}/v1/items"
    brokered = f"http://127.0.0.1:{upstream}/v1/items"
    if args.client == "httpx":
        return await _load_httpx(args, material, direct, brokered, ports)
    import aiohttp

    from trustwire.broker.proxy import upstream_ssl_context
    from trustwire.transport.tls import client_ssl_context

    def getter(session: aiohttp.ClientSession, proxy: str | None) -> Getter:
        async def get(url: str) -> tuple[int, bytes]:
            async with session.get(url, proxy=proxy) as response:
                return response.status, await response.read()

        return get

    verify = upstream_ssl_context(material["upstream_ca"])
    connector = aiohttp.TCPConnector(ssl=verify, limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        results["direct"] = await _measure(getter(session, None), direct, args)
    # The agent's side: its client certificate for the broker, the domain CA as trust.
    agent = client_ssl_context(material["agent_cert"], material["agent_key"], material["ca_pem"])
    for service in ("static", "oauth2"):
        connector = aiohttp.TCPConnector(ssl=agent, limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            proxy = f"https://127.0.0.1:{ports[service]}"
            results[service] = await _measure(getter(session, proxy), brokered, args)
    return results


async def _load_httpx(
    args: argparse.Namespace,
    material: dict[str, Any],
    direct: str,
    brokered: str,
    ports: dict[str, int],
) -> dict[str, Any]:
    """The same with httpx: the SDK's ``broker_client()`` for the brokered ways."""
    import httpx

    from trustwire.broker.client import broker_client
    from trustwire.broker.proxy import upstream_ssl_context

    def getter(client: httpx.AsyncClient) -> Getter:
        async def get(url: str) -> tuple[int, bytes]:
            response = await client.get(url)
            return response.status_code, response.content

        return get

    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    results: dict[str, Any] = {}
    verify = upstream_ssl_context(material["upstream_ca"])
    async with httpx.AsyncClient(verify=verify, limits=limits, trust_env=False) as client:
        results["direct"] = await _measure(getter(client), direct, args)
    for service in ("static", "oauth2"):
        async with broker_client(
            broker_url=f"https://127.0.0.1:{ports[service]}",
            cert_pem=material["agent_cert"],
            key_pem=material["agent_key"],
            ca_pem=material["ca_pem"],
            limits=limits,
        ) as client:
            results[service] = await _measure(getter(client), brokered, args)
    return results


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _material(directory: Path) -> dict[str, Any]:
    from datetime import UTC, datetime

    from trustwire.identity.ca import DomainCA
    from trustwire.identity.keys import AgentIdentity

    now = datetime.now(UTC)
    domain = DomainCA.create("bench domain", now=now)
    upstream_ca = DomainCA.create("bench upstream CA", now=now)
    ca_file = directory / "upstream-ca.pem"
    ca_file.write_bytes(upstream_ca.cert_pem)
    identity = AgentIdentity.generate("bench")
    did = str(identity.did)
    agent_cert = domain.issue_agent_certificate(did, "bench", now=now)
    broker_cert = domain.issue_server_certificate(("127.0.0.1", "localhost"), now=now)
    upstream_cert = upstream_ca.issue_server_certificate(("127.0.0.1", "localhost"), now=now)
    return {
        "ca_pem": domain.cert_pem,
        "upstream_ca": str(ca_file),
        "agent_cert": agent_cert.cert_pem,
        "agent_key": agent_cert.key_pem,
        "broker_cert": broker_cert.cert_pem,
        "broker_key": broker_cert.key_pem,
        "upstream_cert": upstream_cert.cert_pem,
        "upstream_key": upstream_cert.key_pem,
        "agent": {
            "name": "bench",
            "did": did,
            "roles": (),
            "agreement_key": identity.agreement.public,
            "agreement_statement": identity.agreement_statement(issued_at=0),
            "agreement_issued_at": 0,
            "created_at": now.timestamp(),
        },
    }


def _config(upstream: int, ports: dict[str, int]) -> str:
    match = rf"^https://127\.0\.0\.1:{upstream}/"
    return f"""\
version: "2"
services:
  static:
    connector: generic_http
    listenOn: tcp://127.0.0.1:{ports["static"]}
    credentials:
      key: {{from: env, get: {KEY_ENV}}}
    config:
      headers:
        X-Api-Key: "{{{{ .key }}}}"
      authenticateURLsMatching: ['{match}']
      forceSSL: true
  oauth2:
    connector: generic_http
    listenOn: tcp://127.0.0.1:{ports["oauth2"]}
    credentials: {{}}
    oauth2:
      token_url: https://127.0.0.1:{upstream}/token
      client_id: bench
      client_secret: {{from: env, get: {SECRET_ENV}}}
    config:
      headers:
        Authorization: Bearer {{{{ .access_token }}}}
      authenticateURLsMatching: ['{match}']
      forceSSL: true
"""


def run(args: argparse.Namespace) -> dict[str, Any]:
    children: list[Child] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tw-bench-broker-") as tmp:
        material = _material(Path(tmp))
        try:
            upstream = spawn(
                "upstream",
                upstream_main,
                {"cert_pem": material["upstream_cert"], "key_pem": material["upstream_key"]},
            )
            children.append(upstream)
            upstream_port = int(upstream.expect("ready", 60)["port"])
            ports = {"static": _free_port(), "oauth2": _free_port()}
            broker = spawn(
                "broker",
                broker_main,
                {
                    "config": _config(upstream_port, ports),
                    "cert_pem": material["broker_cert"],
                    "key_pem": material["broker_key"],
                    "ca_pem": material["ca_pem"],
                    "upstream_ca": material["upstream_ca"],
                    "agent": material["agent"],
                },
            )
            children.append(broker)
            broker.expect("ready", 60)
            results = asyncio.run(_load(args, material, upstream_port, ports))
            for child in (broker, upstream):
                child.send("stop")
            events = broker.expect("done", 30)["events"]
            upstream.expect("done", 30)
        finally:
            for child in children:
                child.join()
    direct = results["direct"]
    for way in ("static", "oauth2"):
        results[way]["added_ms"] = {
            "p50": results[way]["latency"]["p50_ms"] - direct["latency"]["p50_ms"],
            "p99": results[way]["latency"]["p99_ms"] - direct["latency"]["p99_ms"],
        }
        results[way]["throughput_ratio"] = (
            results[way]["throughput"]["rps"] / direct["throughput"]["rps"]
        )
    return {
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "args": vars(args),
        "results": results,
        "broker_events_kept": events,
    }


def report(data: dict[str, Any]) -> None:
    m = data["machine"]
    a = data["args"]
    print(f"machine: {m['cpu']}, {m['usable_cores']} usable cores, Python {m['python']}")
    print(
        f"1-minute load average: {data['load_average_before']:.2f} before, "
        f"{data['load_average_after']:.2f} after (this benchmark adds up to 2)"
    )
    print(
        f"client: {a['client']}; throughput: {a['concurrency']} in flight for "
        f"{a['duration']:.0f} s; "
        f"latency: {a['requests']} sequential requests\n"
    )
    header = f"{'way':<8} {'req/s':>8} {'vs direct':>9} {'load p50':>9} {'load p99':>9} "
    header += f"{'seq p50':>8} {'seq p99':>8} {'added p50':>9} {'added p99':>9}"
    print(header)
    for way in ("direct", "static", "oauth2"):
        r = data["results"][way]
        t, lat = r["throughput"], r["latency"]
        ratio = f"{r['throughput_ratio'] * 100:.0f} %" if way != "direct" else "-"
        added = r.get("added_ms", {})
        print(
            f"{way:<8} {t['rps']:>8.0f} {ratio:>9} {t['p50_ms']:>7.2f}ms {t['p99_ms']:>7.2f}ms "
            f"{lat['p50_ms']:>6.2f}ms {lat['p99_ms']:>6.2f}ms "
            f"{added.get('p50', 0):>7.2f}ms {added.get('p99', 0):>7.2f}ms"
            + (f"  ({t['errors']} errors)" if t["errors"] else "")
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = run(args)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        report(data)


if __name__ == "__main__":
    main()
