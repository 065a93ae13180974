"""The baseline: a plain TLS 1.3 relay on the same stack, with the same process layout.

What it keeps from trustwire: asyncio streams, the *same* ``ssl`` contexts and
certificates (TLS 1.3 only, mutual authentication under the domain CA), one relay process
between senders and receivers, 4-byte length-prefixed frames, the same message size and
the same acknowledgement pattern (the receiver acknowledges what it has taken, once per
read, back through the relay to the sender, which keeps at most ``window`` messages
unacknowledged). What it leaves out is everything trustwire adds on top: envelopes,
end-to-end encryption, signatures and receipts, replay, policy and rate-limit checks,
durable queueing, security events, per-message futures in an SDK.

Frame: ``u32 n | u16 peer | u8 kind | body`` (``n`` counts from ``peer``). Agents write
``peer`` = destination, the relay rewrites it to the source. Kind 0 = hello (sent once,
``peer`` = own id), 1 = data (body = the payload), 2 = ack (body = ``u32`` highest sequence
number taken).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from array import array
from collections import deque
from typing import Any

from _common import (
    STAMP,
    WARMUP,
    Conn,
    Phase,
    child_main,
    filler_for,
    payload,
    receive,
    sleep_until,
)

_HEAD = struct.Struct(">IHB")
_U32 = struct.Struct(">I")
_HELLO, _DATA, _ACK = 0, 1, 2
_READ = 256 * 1024


def _frame(peer: int, kind: int, body: bytes) -> bytes:
    return _HEAD.pack(3 + len(body), peer, kind) + body


class _Frames:
    """Incremental decoder: ``feed(data)`` -> ``[(peer, kind, body), ...]``."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._buffer
        buf += data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (n,) = _U32.unpack_from(buf, pos)
            if end - pos - 4 < n:
                break
            _, peer, kind = _HEAD.unpack_from(buf, pos)
            out.append((peer, kind, bytes(buf[pos + 7 : pos + 4 + n])))
            pos += 4 + n
        del buf[:pos]
        return out


# -- relay ------------------------------------------------------------------------------------


def relay_main(conn: Conn, spec: dict[str, Any]) -> None:
    child_main(conn, spec, _relay)


async def _relay(conn: Conn, spec: dict[str, Any], phase: Phase) -> None:
    from trustwire.home import Home
    from trustwire.transport.tls import server_ssl_context

    home = Home(spec["home"])
    context = server_ssl_context(*home.coordinator_tls())
    clients: dict[int, asyncio.StreamWriter] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = _Frames()
        me = -1
        try:
            while True:
                data = await reader.read(_READ)
                if not data:
                    return
                out: dict[int, list[bytes]] = {}
                for peer, kind, body in frames.feed(data):
                    if kind == _HELLO:
                        me = peer
                        clients[me] = writer
                        continue
                    out.setdefault(peer, []).append(_frame(me, kind, body))
                for peer, chunks in out.items():
                    target = clients.get(peer)
                    if target is not None and not target.is_closing():
                        target.write(b"".join(chunks))
                if writer.transport.get_write_buffer_size() > 4 * 1024 * 1024:
                    await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            if clients.get(me) is writer:
                del clients[me]
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context, limit=_READ)
    port = server.sockets[0].getsockname()[1]
    conn.send(("ready", {"port": port}))
    await receive(conn)  # start
    phase.begin()
    await receive(conn)  # stop
    result = phase.end()
    server.close()
    for writer in list(clients.values()):
        writer.close()
    conn.send(("done", result))


# -- agents -----------------------------------------------------------------------------------


async def _connect(spec: dict[str, Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    from trustwire.home import Home
    from trustwire.transport.tls import client_ssl_context

    _identity, credentials = Home(spec["home"]).load_agent(spec["name"])
    context = client_ssl_context(credentials.cert_pem, credentials.key_pem, credentials.ca_pem)
    host, _, port = spec["coordinator"].rpartition(":")
    reader, writer = await asyncio.open_connection(
        host, int(port), ssl=context, server_hostname="localhost", limit=_READ
    )
    writer.write(_frame(spec["id"], _HELLO, b""))
    return reader, writer


def receiver_main(conn: Conn, spec: dict[str, Any]) -> None:
    child_main(conn, spec, _receiver)


async def _receiver(conn: Conn, spec: dict[str, Any], phase: Phase) -> None:
    reader, writer = await _connect(spec)
    arrivals = array("d")
    latencies = array("d")
    unpack = STAMP.unpack_from
    expected = 2**63
    complete = asyncio.Event()

    async def consume() -> None:
        frames = _Frames()
        while True:
            data = await reader.read(_READ)
            if not data:
                return
            highest: dict[int, int] = {}
            for peer, kind, body in frames.feed(data):
                if kind != _DATA:
                    continue
                now = time.time()
                stamp, _sender, seq = unpack(body)
                highest[peer] = seq
                if seq != WARMUP:
                    arrivals.append(now)
                    latencies.append(now - stamp)
            if len(arrivals) >= expected:
                complete.set()
            if highest:
                writer.write(b"".join(_frame(p, _ACK, _U32.pack(s)) for p, s in highest.items()))

    consumer = asyncio.create_task(consume())
    conn.send(("ready", {}))
    await receive(conn)  # start
    phase.begin()
    _, stop = await receive(conn)
    expected = stop["expected"]
    if len(arrivals) >= expected:
        complete.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), 10)
    result = phase.end()
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    writer.close()
    result.update(arrivals=arrivals.tobytes(), latencies=latencies.tobytes(), rejected={})
    conn.send(("done", result))


def sender_main(conn: Conn, spec: dict[str, Any]) -> None:
    child_main(conn, spec, _sender)


async def _sender(conn: Conn, spec: dict[str, Any], phase: Phase) -> None:
    reader, writer = await _connect(spec)
    index: int = spec["index"]
    target: int = spec["target_id"]
    filler = filler_for(spec["size"])
    unacked: deque[tuple[int, float]] = deque()  # (seq, stamp), in order
    rtts = array("d")
    acked = asyncio.Event()
    warm = asyncio.Event()

    async def read_acks() -> None:
        frames = _Frames()
        while True:
            data = await reader.read(_READ)
            if not data:
                return
            now = time.time()
            for _peer, kind, body in frames.feed(data):
                if kind != _ACK:
                    continue
                (upto,) = _U32.unpack(body)
                if upto == WARMUP:
                    warm.set()
                    continue
                while unacked and unacked[0][0] <= upto:
                    rtts.append(now - unacked.popleft()[1])
            acked.set()

    acks = asyncio.create_task(read_acks())
    # Warm-up: the receiver may not have said hello to the relay yet; retry until acked.
    while not warm.is_set():
        writer.write(_frame(target, _DATA, payload(0.0, index, WARMUP, filler)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(warm.wait(), 0.2)
    conn.send(("ready", {}))
    _, plan = await receive(conn)
    await sleep_until(plan["t0"])
    phase.begin()
    sent = 0
    deadline = plan["t0"] + plan["duration"]
    limit = plan["messages"] or 2**31
    if plan["kind"] == "throughput":
        window = plan["window"]
        while sent < limit:
            now = time.time()
            if now >= deadline:
                break
            room = min(window - len(unacked), limit - sent)
            if room <= 0:
                acked.clear()
                await acked.wait()
                continue
            chunks = []
            for seq in range(sent, sent + room):
                unacked.append((seq, now))
                chunks.append(_frame(target, _DATA, payload(now, index, seq, filler)))
            sent += room
            writer.write(b"".join(chunks))
            await asyncio.sleep(0)
    else:
        rate = plan["rate"]
        t0 = plan["t0"]
        while sent < limit:
            now = time.time()
            if now >= deadline:
                break
            due = min(limit, int((now - t0) * rate) + 1)
            chunks = []
            for seq in range(sent, due):
                stamp = t0 + seq / rate
                unacked.append((seq, stamp))
                chunks.append(_frame(target, _DATA, payload(stamp, index, seq, filler)))
            sent = max(sent, due)
            if chunks:
                writer.write(b"".join(chunks))
            await sleep_until(t0 + sent / rate)
    drain_until = time.time() + 30
    while unacked and time.time() < drain_until:
        acked.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acked.wait(), 1)
    result = phase.end()
    lost = len(unacked)
    acks.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await acks
    writer.close()
    result.update(sent=sent, rtts=rtts.tobytes(), errors={"unacknowledged": lost} if lost else {})
    conn.send(("done", result))
