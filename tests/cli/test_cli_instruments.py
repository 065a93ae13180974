"""What ``trustwire serve`` wires to the event stream: audit trail, detectors, alert sinks,
metrics, webhook; and the domain log key in the home."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _cli_home import invoke, make_home, one_error_line

from trustwire.audit.storage import read_entries
from trustwire.audit.trail import decode_event
from trustwire.cli.audit import verify_audit_log
from trustwire.cli.failure import ExitCode
from trustwire.cli.instruments import Instruments, Webhook
from trustwire.detect import verify_signature
from trustwire.errors import ConfigurationError, KeyFileError
from trustwire.events import EventKind, SecurityEvent
from trustwire.home import Home
from trustwire.policy import Monitoring

SECRET = "a-webhook-secret-of-32-characters"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(make_home(tmp_path / "home", agents=()))


def burst(instruments: Instruments, address: str, count: int = 10) -> None:
    """``count`` TLS authentication failures from one address: 10 raise an alert."""
    for _ in range(count):
        instruments.events.record(
            EventKind.AUTH_FAILURE, reason="tls: SSLError", address=f"{address}:40000"
        )


def audit_events(home: Home) -> list[SecurityEvent]:
    return [decode_event(entry) for entry in read_entries(home.audit_path)]


def alert_lines(home: Home) -> list[dict[str, object]]:
    if not home.alerts_path.exists():
        return []
    return [json.loads(line) for line in home.alerts_path.read_text().splitlines()]


class Receiver:
    """A local HTTP endpoint that records what is posted to it."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/secret-token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


# -- the wiring -----------------------------------------------------------------------------


async def test_an_alert_reaches_the_alerts_file_the_metrics_and_the_audit_trail_after_its_cause(
    home: Home,
) -> None:
    instruments = Instruments.open(home, Monitoring())
    burst(instruments, "203.0.113.7")
    alerts_total = instruments.metrics.registry.get_sample_value(
        "trustwire_alerts_total", {"kind": "auth_failure_burst", "severity": "warning"}
    )
    await instruments.aclose()

    assert alerts_total == 1
    [alert] = alert_lines(home)
    assert alert["kind"] == "auth_failure_burst"
    events = audit_events(home)
    kinds = [event.kind for event in events]
    assert kinds == [EventKind.AUTH_FAILURE] * 10 + [EventKind.ALERT_RAISED]
    raised = events[-1]
    assert raised.reason == "auth_failure_burst"
    assert raised.details["alert_id"] == alert["id"]
    assert raised.details["severity"] == "warning"
    assert "203.0.113.7" in str(raised.details["summary"])
    jsonl_kinds = [json.loads(line)["kind"] for line in home.events_path.read_text().splitlines()]
    assert jsonl_kinds[-1] == "alert.raised"


async def test_closing_flushes_the_trail_and_signs_a_final_head_over_every_entry(
    home: Home,
) -> None:
    instruments = Instruments.open(home, Monitoring())
    for number in range(25):
        instruments.events.record(EventKind.POLICY_RELOADED, rules=number)
    await instruments.aclose()
    await instruments.aclose()  # idempotent
    result = verify_audit_log(home.audit_path, home.log_verify_key())
    assert result.ok, result.problems
    assert result.head is not None and result.head.size == result.entries == 25


async def test_a_coordinator_that_saw_no_event_still_leaves_a_verifiable_log(home: Home) -> None:
    await Instruments.open(home, Monitoring()).aclose()
    result = verify_audit_log(home.audit_path, home.log_verify_key())
    assert result.ok, result.problems
    assert result.entries == 0


async def test_reloaded_monitoring_switches_attach_and_detach_the_detectors(home: Home) -> None:
    instruments = Instruments.open(home, Monitoring(anomaly_detection=False))
    assert instruments.detectors is None
    burst(instruments, "198.51.100.1")
    instruments.apply(Monitoring())
    burst(instruments, "198.51.100.2")
    instruments.apply(Monitoring(anomaly_detection=False))
    burst(instruments, "198.51.100.3")
    await instruments.aclose()
    sources = [alert["details"]["source"] for alert in alert_lines(home)]  # type: ignore[index]
    assert sources == ["198.51.100.2"]


async def test_alerts_are_posted_signed_to_the_webhook_only_while_automatic_alerts_is_on(
    home: Home, receiver: Receiver
) -> None:
    instruments = Instruments.open(home, Monitoring(), webhook=Webhook(receiver.url, SECRET))
    assert SECRET not in repr(instruments.webhook) and "secret-token" not in repr(
        instruments.webhook
    )
    burst(instruments, "192.0.2.1")
    instruments.apply(Monitoring(automatic_alerts=False))
    burst(instruments, "192.0.2.2")
    await instruments.aclose()

    assert len(alert_lines(home)) == 2
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    assert json.loads(body)["details"]["source"] == "192.0.2.1"
    assert verify_signature(
        SECRET,
        headers["X-Trustwire-Timestamp"],
        body,
        headers["X-Trustwire-Signature"],
        now=float(headers["X-Trustwire-Timestamp"]),
    )


def test_an_unusable_webhook_secret_is_refused_before_anything_opens(home: Home) -> None:
    with pytest.raises(ConfigurationError, match="at least 16 bytes") as caught:
        Instruments.open(home, Monitoring(), webhook=Webhook("http://127.0.0.1:9/x", "short"))
    assert "short" not in str(caught.value)
    assert not home.audit_path.exists()


def test_serve_refuses_to_append_to_a_truncated_audit_log(home: Home) -> None:
    instruments = Instruments.open(home, Monitoring())
    burst(instruments, "192.0.2.9", count=3)
    instruments.close_now()
    with sqlite3.connect(home.audit_path) as connection:
        connection.execute("DELETE FROM entries WHERE idx = 2")
    result = invoke(home.path, "serve")
    assert result.exit_code == ExitCode.FAILED
    line = one_error_line(result)
    assert line.startswith(f"error: {home.audit_path}: the stored tree head does not belong")
    assert "refusing to append to a damaged audit log" in line


# -- serve's webhook options ----------------------------------------------------------------


def test_serve_refuses_a_webhook_url_without_a_secret(home: Home) -> None:
    result = invoke(
        home.path,
        "serve",
        "--webhook-url",
        "http://127.0.0.1:9/hook",
        env={"TRUSTWIRE_WEBHOOK_SECRET": ""},
    )
    assert result.exit_code == ExitCode.CONFIGURATION
    assert "a webhook URL is set but TRUSTWIRE_WEBHOOK_SECRET is not" in one_error_line(result)


@pytest.mark.parametrize(
    ("url", "secret", "expected"),
    [
        ("http://127.0.0.1:9/hook?token=t0ps3cret", "too-short", "at least 16 bytes"),
        ("ftp://127.0.0.1/hook?token=t0ps3cret", SECRET, "absolute http:// or https:// URL"),
    ],
)
def test_serve_refuses_an_unusable_webhook_without_echoing_secrets(
    home: Home, url: str, secret: str, expected: str
) -> None:
    env = {"TRUSTWIRE_WEBHOOK_URL": url, "TRUSTWIRE_WEBHOOK_SECRET": secret}
    result = invoke(home.path, "serve", env=env)
    assert result.exit_code == ExitCode.CONFIGURATION
    line = one_error_line(result)
    assert expected in line
    assert secret not in result.stderr + result.stdout
    assert "t0ps3cret" not in result.stderr + result.stdout


# -- the domain log key ---------------------------------------------------------------------


def test_init_creates_the_log_key_private_and_encrypted_and_its_public_half_readable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "home"
    result = invoke(
        path, "init", "--coordinator", "127.0.0.1:7999", env={"TRUSTWIRE_PASSPHRASE": "pass phrase"}
    )
    assert result.exit_code == 0, result.stderr
    assert "coordinator/log.pub" in result.stdout
    home = Home(path, passphrase="pass phrase")
    assert stat.S_IMODE(os.stat(home.log_key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home.log_public_key_path).st_mode) == 0o644
    assert b"ENCRYPTED" in home.log_key_path.read_bytes()
    assert home.log_signing_key().public_key == Home(path).log_verify_key()
    with pytest.raises(KeyFileError):
        Home(path, passphrase="wrong").log_signing_key()


def test_an_older_home_without_a_log_key_gets_one_on_first_use(home: Home) -> None:
    home.log_key_path.unlink()
    home.log_public_key_path.unlink()
    key = home.log_signing_key()
    assert home.log_verify_key() == key.public_key
    assert Home(home.path).log_signing_key().public_key == key.public_key


def test_a_missing_public_key_file_is_rewritten_from_the_private_key(home: Home) -> None:
    expected = home.log_verify_key()
    home.log_public_key_path.unlink()
    assert home.log_signing_key().public_key == expected
    assert home.log_verify_key() == expected


def test_a_swapped_public_key_file_is_refused(home: Home) -> None:
    home.log_public_key_path.write_text("ab" * 32 + "\n")
    with pytest.raises(ConfigurationError, match="does not match"):
        home.log_signing_key()
    home.log_public_key_path.write_text("not a key\n")
    with pytest.raises(ConfigurationError, match="not a log public key"):
        home.log_verify_key()
