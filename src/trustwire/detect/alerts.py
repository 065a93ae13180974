"""Alert sinks: where :class:`~trustwire.detect.detectors.Alert` objects go.

- :class:`LogAlertSink` writes each alert as one JSON log line (``logging``);
- :class:`JsonlAlertSink` appends it to ``alerts.jsonl`` (mode 0600), the file
  ``trustwire alerts tail`` reads;
- :class:`WebhookAlertSink` POSTs it to an HTTP endpoint, signed with HMAC-SHA256;
- :class:`MemoryAlertSink` keeps it in memory (tests, demos).

Invariants:

- ``send`` never blocks and never waits on I/O: the file sink hands lines to a writer
  thread, the webhook sink to a bounded queue drained by a background task. When a queue
  is full the alert is dropped and counted (``dropped``), never buffered without bound.
- The webhook secret appears in no log line, exception message or ``repr``; neither does
  the webhook URL's path or query (which often carry a token): our logs name only the
  scheme, host and port, and a filter on the ``httpx`` logger redacts the URL from its
  per-request INFO lines while the sink is open.

Webhook signature: the request carries ``X-Trustwire-Timestamp: <unix seconds>`` and
``X-Trustwire-Signature: sha256=<hex>``, where ``<hex>`` is
``HMAC-SHA256(secret, timestamp + "." + body)``. A receiver recomputes it with
:func:`verify_signature`, which also refuses timestamps outside a tolerance, so a
captured request cannot be replayed later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time as _time
from collections.abc import Callable
from typing import Any

import httpx

from trustwire.crypto.hashes import constant_time_equal, hmac_digest
from trustwire.crypto.random import random_bytes
from trustwire.detect.model import Alert, AlertKind, Severity
from trustwire.jsonl import JsonlWriter

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "JsonlAlertSink",
    "LogAlertSink",
    "MemoryAlertSink",
    "WebhookAlertSink",
    "backoff_delay",
    "sign_body",
    "verify_signature",
]

_log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Trustwire-Signature"
TIMESTAMP_HEADER = "X-Trustwire-Timestamp"
_MIN_SECRET = 16


class MemoryAlertSink:
    """Keeps the last ``maxlen`` alerts in memory."""

    def __init__(self, maxlen: int | None = 10_000) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError("maxlen must be at least 1 or None")
        self._alerts: list[Alert] = []
        self._maxlen = maxlen

    def send(self, alert: Alert) -> None:
        """Remember ``alert`` (dropping the oldest when full)."""
        self._alerts.append(alert)
        if self._maxlen is not None and len(self._alerts) > self._maxlen:
            del self._alerts[0]

    @property
    def alerts(self) -> list[Alert]:
        """A snapshot of the retained alerts, oldest first."""
        return list(self._alerts)

    def of_kind(self, kind: AlertKind) -> list[Alert]:
        """The retained alerts of one kind, oldest first."""
        return [alert for alert in self._alerts if alert.kind == kind]

    def clear(self) -> None:
        """Forget every retained alert."""
        self._alerts.clear()

    def __len__(self) -> int:
        return len(self._alerts)


_LEVELS = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.CRITICAL: logging.CRITICAL,
}


class LogAlertSink:
    """Logs each alert as one line of JSON on ``logger`` (default ``trustwire.alerts``).

    The level follows the severity (info, warning, critical); the record also carries
    the alert as a dict in its ``alert`` attribute for structured handlers.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger if logger is not None else logging.getLogger("trustwire.alerts")

    def send(self, alert: Alert) -> None:
        """Log ``alert``."""
        self._logger.log(
            _LEVELS[alert.severity], "%s", alert.to_json(), extra={"alert": alert.to_dict()}
        )


class JsonlAlertSink:
    """Appends one alert per line to ``path`` (created, or tightened, to mode 0600).

    ``send`` only queues the line; a daemon thread writes it at once (alerts are rare, and
    a tail wants them promptly) and ``close()`` writes what is left. More than
    ``max_pending`` unwritten lines are dropped and counted in :attr:`dropped`.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_pending: int = 10_000) -> None:
        # Written at once (no interval): alerts are rare, and a tail wants them promptly.
        self._writer = JsonlWriter(
            path, flush_interval=None, max_pending=max_pending, what="alerts"
        )

    @property
    def path(self) -> str:
        """The file being appended to."""
        return self._writer.path

    @property
    def dropped(self) -> int:
        """Alerts discarded because ``max_pending`` lines were waiting."""
        return self._writer.dropped

    @property
    def write_errors(self) -> int:
        """Failed writes (the lines of a failed write are lost)."""
        return self._writer.write_errors

    def send(self, alert: Alert) -> None:
        """Queue ``alert`` for writing; raises :class:`ValueError` after :meth:`close`."""
        self._writer.write(alert.to_json() + "\n")

    def flush(self) -> None:
        """Write every queued line now (blocking; not for the event loop)."""
        self._writer.flush()

    def close(self) -> None:
        """Write what is queued, stop the writer thread and close the file."""
        self._writer.close()

    def __enter__(self) -> JsonlAlertSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- webhook -----------------------------------------------------------------------------


def _secret_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise TypeError("the webhook secret must be str or bytes")
    if len(secret) < _MIN_SECRET:
        # Say how long it must be, never what it is.
        raise ValueError(f"the webhook secret must be at least {_MIN_SECRET} bytes")
    return secret


def sign_body(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Trustwire-Signature`` value for ``body`` sent at ``timestamp``:
    ``"sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body))``."""
    mac = hmac_digest("SHA256", _secret_bytes(secret), timestamp.encode("ascii") + b"." + body)
    return "sha256=" + mac.hex()


def verify_signature(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """Check a webhook request as a receiver would.

    True only if ``signature`` is the MAC of ``timestamp`` and ``body`` under ``secret``
    (compared in constant time) and ``timestamp`` is within ``tolerance`` seconds of
    ``now``.
    """
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance:
        return False
    expected = sign_body(secret, timestamp, body)
    return constant_time_equal(expected.encode("ascii"), signature.encode("utf-8"))


def _unit_random() -> float:
    """A float in [0, 1) from trustwire's random source (jitter needs no more)."""
    return int.from_bytes(random_bytes(4), "big") / 2**32


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    random: Callable[[], float] = _unit_random,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential (``base * 2**(attempt-1)``, at most ``cap``) with "equal jitter": a
    uniformly random value between half and all of it, so many coordinators retrying the
    same endpoint spread out.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    delay = min(cap, base * 2.0 ** (attempt - 1))
    return delay / 2 + random() * delay / 2


def _describe_target(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}"


_RETRY_STATUS = frozenset({408, 425, 429})


class _RedactUrl(logging.Filter):
    """Replaces one URL in ``httpx``'s request log lines with its scheme, host and port.

    httpx logs every request URL at INFO; webhook URLs often carry a token in the path
    or query, which must not reach the logs.
    """

    def __init__(self, url: httpx.URL, target: str) -> None:
        super().__init__()
        self._url = url
        self._replacement = f"{target}/<redacted>"

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(self._matches(arg) for arg in args):
            record.args = tuple(self._replacement if self._matches(arg) else arg for arg in args)
        return True

    def _matches(self, arg: object) -> bool:
        return isinstance(arg, httpx.URL) and arg == self._url


class WebhookAlertSink:
    """POSTs every alert as JSON to ``url``, signed with ``secret``.

    ``send`` puts the alert on a bounded queue (``max_queue``; when full the alert is
    dropped and counted) and returns. A background task, started on the first ``send``
    from a running event loop, posts queued alerts one at a time. A connection error, a
    timeout, a 5xx, 408, 425 or 429 answer is retried up to ``max_attempts`` attempts in
    all, waiting :func:`backoff_delay` between them; any other non-2xx answer is final.
    Every attempt is signed afresh with the current time. Close with ``await aclose()``
    (drains the queue for up to ``drain_timeout`` seconds) or ``close()`` (drops it).

    Counters: :attr:`delivered`, :attr:`failed` (gave up), :attr:`dropped` (queue full,
    or cut off by close), :attr:`attempts` (HTTP requests tried, retries included).
    """

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        max_queue: int = 1000,
        max_attempts: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 5.0,
        drain_timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = _time.time,
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("the webhook URL must be an absolute http:// or https:// URL")
        self._secret = _secret_bytes(secret)
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if base_delay < 0 or max_delay < 0 or timeout <= 0 or drain_timeout < 0:
            raise ValueError("delays and timeouts must be non-negative (timeout positive)")
        self._url = parsed
        self._target = _describe_target(parsed)
        self._redactor = _RedactUrl(parsed, self._target)
        logging.getLogger("httpx").addFilter(self._redactor)
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=max_queue)
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._drain_timeout = drain_timeout
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._warned_no_loop = False
        self.delivered = 0
        """Alerts the endpoint accepted (2xx)."""
        self.failed = 0
        """Alerts given up on after a final answer or ``max_attempts`` attempts."""
        self.dropped = 0
        """Alerts not delivered and not given up on: the queue was full, no event loop
        ran, or the sink closed while they were queued or between retries."""
        self.attempts = 0
        """HTTP requests tried, retries included."""

    def __repr__(self) -> str:
        return f"WebhookAlertSink({self._target!r})"

    @property
    def pending(self) -> int:
        """Alerts queued and not yet attempted."""
        return self._queue.qsize()

    def send(self, alert: Alert) -> None:
        """Queue ``alert`` for posting; never blocks. Call it from the event loop."""
        if self._closed:
            self.dropped += 1
            return
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.dropped += 1
                if not self._warned_no_loop:
                    self._warned_no_loop = True
                    _log.warning("alert webhook %s: send() outside an event loop", self._target)
                return
            self._task = loop.create_task(self._run(), name=f"trustwire-webhook:{self._target}")
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._deliver(alert)
            except asyncio.CancelledError:
                self.dropped += 1  # cut off mid-delivery by close
                raise
            except Exception as exc:
                # Never let one alert kill the worker. Only the exception's type is
                # logged: its message or traceback could quote the full URL.
                self.failed += 1
                _log.error(
                    "alert webhook %s: delivering %s failed: %s",
                    self._target,
                    alert.id,
                    type(exc).__name__,
                )
            finally:
                self._queue.task_done()

    async def _deliver(self, alert: Alert) -> None:
        body = alert.to_json().encode("utf-8")
        cause = ""
        for attempt in range(1, self._max_attempts + 1):
            timestamp = str(int(self._clock()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign_body(self._secret, timestamp, body),
                "X-Trustwire-Alert-Id": alert.id,
            }
            self.attempts += 1
            try:
                response = await self._client.post(
                    self._url, content=body, headers=headers, timeout=self._timeout
                )
            except httpx.TransportError as exc:
                cause = type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self.delivered += 1
                    return
                cause = f"HTTP {status}"
                if status < 500 and status not in _RETRY_STATUS:
                    break
            if attempt < self._max_attempts:
                await asyncio.sleep(
                    backoff_delay(attempt, base=self._base_delay, cap=self._max_delay)
                )
        self.failed += 1
        _log.warning(
            "alert webhook %s: gave up on alert %s (%s) after %d attempt(s): %s",
            self._target,
            alert.id,
            alert.kind.value,
            attempt,
            cause,
        )

    async def aclose(self) -> None:
        """Post what is queued (for up to ``drain_timeout`` seconds), then stop."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._drain_timeout):
                    await self._queue.join()
        await self._stop()
        if self._own_client:
            await self._client.aclose()
        logging.getLogger("httpx").removeFilter(self._redactor)

    def close(self) -> None:
        """Stop at once: queued alerts are dropped (use :meth:`aclose` to drain)."""
        if self._closed:
            return
        self._closed = True
        self.dropped += self._queue.qsize()
        if self._task is not None:
            self._task.cancel()
        logging.getLogger("httpx").removeFilter(self._redactor)
        # An owned client's connections are closed when the loop shuts them down; closing
        # it needs ``await``, which a synchronous close cannot do.

    async def _stop(self) -> None:
        self.dropped += self._queue.qsize()
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> WebhookAlertSink:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
