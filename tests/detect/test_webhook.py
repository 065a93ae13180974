"""The signed webhook sink against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from trustwire.detect import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Alert,
    AlertId,
    AlertKind,
    Severity,
    WebhookAlertSink,
    backoff_delay,
    sign_body,
    verify_signature,
)

SECRET = "whsec-0123456789abcdef-do-not-log"
TOKEN = "T0KEN-in-the-path"
WAIT = 5.0


def _alert(n: int = 0) -> Alert:
    return Alert(
        id=AlertId(f"alert-{n}"),
        kind=AlertKind.AUTH_FAILURE_BURST,
        severity=Severity.CRITICAL,
        time=1_700_000_000.0 + n,
        summary="50 authentication failures within 10 s across all sources",
        details={"count": 50, "scope": "overall"},
    )


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A tiny HTTP/1.1 server answering with scripted status codes (the last repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str = f"/hook/{TOKEN}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for item in rest:
                if item:
                    name, _, value = item.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Request(line, headers, body))
            index = min(len(self.requests), len(self.statuses)) - 1
            status = self.statuses[index]
            writer.write(
                f"HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client gave up mid-request (a test closing the sink early)
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


MakeReceiver = Callable[[list[int]], Awaitable[Receiver]]


@pytest.fixture
async def receiver_factory() -> AsyncIterator[MakeReceiver]:
    made: list[Receiver] = []

    async def make(statuses: list[int]) -> Receiver:
        receiver = Receiver(statuses)
        made.append(receiver)
        await receiver.start()
        return receiver

    yield make
    for receiver in made:
        await receiver.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls counters set by another task
            await asyncio.sleep(0.002)


def _verifies(request: Request, secret: str = SECRET) -> bool:
    return verify_signature(
        secret,
        request.headers[TIMESTAMP_HEADER.lower()],
        request.body,
        request.headers[SIGNATURE_HEADER.lower()],
        now=time.time(),
    )


async def test_webhook_posts_the_alert_json_signed_over_timestamp_and_body(
    receiver_factory: MakeReceiver,
) -> None:
    receiver = await receiver_factory([200])
    async with WebhookAlertSink(receiver.url(), SECRET) as sink:
        sink.send(_alert(1))
        await wait_until(lambda: sink.delivered == 1)

    [request] = receiver.requests
    assert request.line == f"POST /hook/{TOKEN} HTTP/1.1"
    assert request.headers["content-type"] == "application/json"
    assert Alert.from_json(request.body) == _alert(1)
    assert request.headers[SIGNATURE_HEADER.lower()].startswith("sha256=")
    assert _verifies(request)
    assert not _verifies(request, secret="another-secret-of-enough-length")
    tampered = Request(request.line, request.headers, request.body.replace(b"50", b"51"))
    assert not _verifies(tampered)
    # The timestamp is inside the MAC: moving it breaks the signature.
    shifted = dict(request.headers)
    shifted[TIMESTAMP_HEADER.lower()] = str(int(shifted[TIMESTAMP_HEADER.lower()]) + 1)
    assert not _verifies(Request(request.line, shifted, request.body))


async def test_webhook_retries_after_a_500_and_then_delivers(
    receiver_factory: MakeReceiver,
) -> None:
    receiver = await receiver_factory([500, 200])
    async with WebhookAlertSink(receiver.url(), SECRET, base_delay=0.001) as sink:
        sink.send(_alert())
        await wait_until(lambda: sink.delivered == 1)
        assert sink.attempts == 2
        assert sink.failed == 0

    assert len(receiver.requests) == 2
    assert all(_verifies(r) for r in receiver.requests)
    assert receiver.requests[0].body == receiver.requests[1].body


async def test_webhook_gives_up_after_max_attempts_without_blocking_the_caller(
    receiver_factory: MakeReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = await receiver_factory([500])
    async with WebhookAlertSink(
        receiver.url(), SECRET, max_attempts=3, base_delay=0.002, max_delay=0.004
    ) as sink:
        started = time.perf_counter()
        sink.send(_alert())
        returned = time.perf_counter() - started
        # send() only queued the alert: nothing was posted before it returned.
        assert receiver.requests == []
        assert returned < 0.05

        await wait_until(lambda: sink.failed == 1)
        await asyncio.sleep(0.02)  # longer than any remaining backoff: no 4th attempt
        assert len(receiver.requests) == 3
        assert sink.attempts == 3
        assert sink.delivered == 0

    [warning] = [r for r in caplog.records if "gave up" in r.getMessage()]
    message = warning.getMessage()
    assert "HTTP 500" in message
    assert f"http://127.0.0.1:{receiver.port}" in message
    assert SECRET not in caplog.text
    assert TOKEN not in caplog.text


async def test_webhook_retries_connection_errors(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook/{TOKEN}?key=abc"
    async with WebhookAlertSink(url, SECRET, max_attempts=2, base_delay=0.001) as sink:
        sink.send(_alert())
        await wait_until(lambda: sink.failed == 1)
        assert sink.attempts == 2

    assert "ConnectError" in caplog.text
    assert SECRET not in caplog.text
    assert TOKEN not in caplog.text
    assert "key=abc" not in caplog.text


async def test_webhook_does_not_retry_a_client_error(
    receiver_factory: MakeReceiver,
) -> None:
    receiver = await receiver_factory([400, 200])
    async with WebhookAlertSink(receiver.url(), SECRET, base_delay=0.001) as sink:
        sink.send(_alert())
        await wait_until(lambda: sink.failed == 1)
    assert len(receiver.requests) == 1


async def test_webhook_retries_429(
    receiver_factory: MakeReceiver,
) -> None:
    receiver = await receiver_factory([429, 503, 204])
    async with WebhookAlertSink(receiver.url(), SECRET, base_delay=0.001) as sink:
        sink.send(_alert())
        await wait_until(lambda: sink.delivered == 1)
    assert len(receiver.requests) == 3


async def test_a_full_queue_drops_and_counts_and_close_drains_the_rest(
    receiver_factory: MakeReceiver,
) -> None:
    receiver = await receiver_factory([200])
    sink = WebhookAlertSink(receiver.url(), SECRET, max_queue=2)
    for n in range(5):  # no await in between: the worker has not taken any yet
        sink.send(_alert(n))
    assert sink.dropped == 3
    assert sink.pending == 2

    await sink.aclose()
    assert sink.delivered == 2
    assert [Alert.from_json(r.body).id for r in receiver.requests] == ["alert-0", "alert-1"]
    sink.send(_alert(9))  # after close: counted, not sent
    assert sink.dropped == 4


async def test_close_without_draining_counts_the_queued_alerts_as_dropped(
    receiver_factory: MakeReceiver,
) -> None:
    receiver = await receiver_factory([200])
    sink = WebhookAlertSink(receiver.url(), SECRET, drain_timeout=0.0)
    for n in range(3):
        sink.send(_alert(n))
    await sink.aclose()
    # Nothing waits: every alert is either delivered or counted as dropped (including
    # one cut off in flight), none is silently lost.
    assert sink.delivered + sink.dropped == 3
    assert sink.delivered < 3


def test_send_outside_an_event_loop_is_counted_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = WebhookAlertSink("https://alerts.example/hook", SECRET)
    sink.send(_alert())
    sink.send(_alert())
    assert sink.dropped == 2
    assert len([r for r in caplog.records if "outside an event loop" in r.getMessage()]) == 1
    sink.close()


def test_the_secret_and_url_path_stay_out_of_repr_and_errors() -> None:
    sink = WebhookAlertSink(f"https://alerts.example:8443/hook/{TOKEN}", SECRET)
    assert repr(sink) == "WebhookAlertSink('https://alerts.example:8443')"
    sink.close()
    with pytest.raises(ValueError) as info:
        WebhookAlertSink("https://alerts.example/hook", "short-secret")
    assert "short-secret" not in str(info.value)
    assert "16 bytes" in str(info.value)
    with pytest.raises(ValueError, match="http"):
        WebhookAlertSink("ftp://alerts.example/hook", SECRET)
    with pytest.raises(ValueError, match="http"):
        WebhookAlertSink("/relative", SECRET)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # RFC 4231-style check computed independently with the standard library.
    import hashlib
    import hmac

    body = b'{"id":"x"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign_body(SECRET, "1700000000", body) == f"sha256={expected}"


def test_verify_signature_refuses_stale_or_malformed_timestamps() -> None:
    body = b"{}"
    signature = sign_body(SECRET, "1000", body)
    assert verify_signature(SECRET, "1000", body, signature, now=1200.0)
    assert not verify_signature(SECRET, "1000", body, signature, now=1400.0)
    assert not verify_signature(SECRET, "1000", body, signature, now=600.0)
    assert not verify_signature(SECRET, "soon", body, signature, now=1000.0)
    assert not verify_signature(SECRET, "1000", body, "sha256=00", now=1000.0)


def test_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_all() -> None:
    def low() -> float:
        return 0.0

    def high() -> float:
        return 0.999999

    assert [backoff_delay(a, base=1.0, cap=100.0, random=low) for a in (1, 2, 3, 4)] == [
        0.5,
        1.0,
        2.0,
        4.0,
    ]
    assert backoff_delay(3, base=1.0, cap=100.0, random=high) == pytest.approx(4.0, abs=1e-5)
    assert backoff_delay(20, base=1.0, cap=30.0, random=high) == pytest.approx(30.0, abs=1e-4)
    delays = {backoff_delay(2, base=1.0, cap=30.0) for _ in range(50)}
    assert all(1.0 <= d <= 2.0 for d in delays)
    assert len(delays) > 1  # real jitter
    with pytest.raises(ValueError):
        backoff_delay(0, base=1.0, cap=1.0)


@pytest.fixture(autouse=True)
def _capture_all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


async def test_an_unexpected_error_fails_one_alert_and_the_worker_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError(f"bug while posting to {request.url}")
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    url = f"https://alerts.example/hook/{TOKEN}"
    async with WebhookAlertSink(url, SECRET, client=client) as sink:
        sink.send(_alert(1))
        sink.send(_alert(2))
        await wait_until(lambda: sink.failed + sink.delivered == 2)
    await client.aclose()

    assert (sink.failed, sink.delivered) == (1, 1)
    assert "RuntimeError" in caplog.text
    assert TOKEN not in caplog.text
