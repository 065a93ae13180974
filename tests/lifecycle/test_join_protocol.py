"""The join exchange's bodies (sans-I/O), tokens, and the join listener's limits."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time

import pytest

from _deployment import MakeDeployment
from trustwire.client.join import normalize_fingerprint
from trustwire.coordinator.join import JoinConfig, JoinListener, token_hash
from trustwire.crypto.hashes import sha256
from trustwire.crypto.x509 import TlsKey
from trustwire.errors import InvalidEnvelope
from trustwire.events import EventKind
from trustwire.identity.keys import AgentIdentity
from trustwire.protocol import control
from trustwire.protocol import join as wire
from trustwire.protocol.envelope import ZERO_CHANNEL, Envelope, FrameType, decode
from trustwire.protocol.frames import FrameDecoder, encode_frame
from trustwire.transport.tls import join_client_ssl_context, join_server_ssl_context

TOKEN = "A" * 43


def request(identity: AgentIdentity, **overrides: object) -> wire.JoinRequest:
    fields: dict[str, object] = {
        "token": TOKEN,
        "name": identity.name,
        "did": identity.did,
        "agreement_key": identity.agreement.public,
        "agreement_statement": identity.agreement_statement(issued_at=identity.issued_at),
        "agreement_issued_at": identity.issued_at,
        "tls_public_key": TlsKey.generate().public_bytes(),
        "signature": bytes(64),
    }
    fields.update(overrides)
    return wire.JoinRequest(**fields)  # type: ignore[arg-type]


def test_a_join_request_round_trips_and_its_repr_hides_the_token() -> None:
    original = request(AgentIdentity.generate("dave", issued_at=5))
    assert wire.decode_request(original.to_bytes()) == original
    assert TOKEN not in repr(original)
    assert wire.decode_request(wire.ca_request()) is None


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "other"},
        {"token": "A" * 42},
        {"token": "A" * 42 + "="},
        {"agreement_key": "00" * 31},
        {"agreement_key": "ZZ" * 32},
        {"signature": "00" * 65},
        {"agreement_issued_at": -1},
        {"agreement_issued_at": True},
        {"agreement_issued_at": 2**64},
        {"name": ""},
        {"name": "x" * 65},
        {"did": "did:key:\u202e"},
        {"tls_public_key": None},
    ],
)
def test_malformed_join_requests_are_invalid_envelopes(change: dict[str, object]) -> None:
    body = control.decode_json(request(AgentIdentity.generate("dave")).to_bytes())
    body.update(change)
    with pytest.raises(InvalidEnvelope):
        wire.decode_request(control.encode_json(body))


def test_the_join_statement_binds_every_field_and_the_pinned_ca() -> None:
    base = request(AgentIdentity.generate("dave", issued_at=7))
    fingerprint = "ab" * 32
    statement = base.statement(fingerprint)
    assert statement.startswith(wire.JOIN_LABEL)
    assert base.statement("cd" * 32) != statement
    for name, value in [
        ("token", "B" * 43),
        ("name", "erin"),
        ("agreement_key", bytes(32)),
        ("agreement_statement", bytes(64)),
        ("agreement_issued_at", 8),
        ("tls_public_key", bytes(32)),
    ]:
        changed = request(AgentIdentity.generate("dave", issued_at=7), **{name: value})
        assert changed.statement(fingerprint) != statement, name


def test_a_refusal_decodes_to_none_and_a_result_round_trips() -> None:
    assert wire.decode_result(wire.encode_refusal()) is None
    assert wire.decode_ca_result(wire.encode_refusal()) is None
    result = wire.JoinResult(b"CERT", b"CA", "ab" * 32, "cd" * 32, "host:1")
    assert wire.decode_result(result.to_bytes()) == result
    with pytest.raises(InvalidEnvelope):
        wire.decode_result(result.to_bytes().replace(b"abab", b"ABAB"))


def test_token_hash_is_the_sha256_of_the_raw_token_and_refuses_other_shapes() -> None:
    raw = bytes(range(32))
    token = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
    assert token_hash(token) == sha256(raw)
    for bad in ("", "AAEC", token + "AA", "!" * 43):
        with pytest.raises(ValueError, match="malformed join token"):
            token_hash(bad)


def test_fingerprints_are_normalized_and_checked() -> None:
    spaced = ":".join(["AB"] * 32)
    assert normalize_fingerprint(spaced) == "ab" * 32
    for bad in ("ab" * 31, "zz" * 32, ""):
        with pytest.raises(ValueError, match="64 hex digits"):
            normalize_fingerprint(bad)


def test_the_join_protocol_module_imports_no_io_modules() -> None:
    code = (
        "import sys, trustwire.protocol.join\n"
        "bad = {'asyncio', 'socket', 'ssl', 'sqlite3', 'selectors'} & set(sys.modules)\n"
        "print(','.join(sorted(bad)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


async def test_the_join_listener_refuses_an_address_over_its_attempt_limit(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(agents=())
    home = deployment.home
    cert_pem, key_pem, _ca = home.coordinator_tls()
    registry = await home.open_registry(deployment.store)
    listener = JoinListener(
        store=deployment.store,
        enrolment=registry,
        issuer=home.ca(),
        tls=join_server_ssl_context(cert_pem, key_pem),
        coordinator=deployment.address,
        events=deployment.coordinator.events,
        config=JoinConfig(attempts_per_minute=2),
    )
    await listener.start()
    context = join_client_ssl_context(home.ca().cert_pem)

    async def ask_for_the_ca() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", listener.port, ssl=context, server_hostname="localhost"
        )
        try:
            env = Envelope.create(
                FrameType.JOIN_REQUEST, ZERO_CHANNEL, "", "", body=wire.ca_request()
            )
            writer.write(encode_frame(env.to_bytes()))
            decoder = FrameDecoder()
            frames: list[bytes] = []
            while not frames:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                frames = decoder.receive_data(data)
            assert wire.decode_ca_result(decode(frames[0]).body) == home.ca().cert_pem
        finally:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2)

    try:
        started = time.monotonic()
        await ask_for_the_ca()
        await ask_for_the_ca()
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            await ask_for_the_ca()
        assert time.monotonic() - started < 5
        limited = await deployment.wait_event(EventKind.RATE_LIMITED)
        assert limited.reason == "join: too many attempts"
    finally:
        await listener.close()
        await registry.close()


def test_an_invitation_token_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    from trustwire.cli import agents

    draws = iter([b"\xf8" + bytes(31), bytes(32)])  # the first encodes as "-AAA..."
    monkeypatch.setattr(agents, "random_bytes", lambda n: next(draws))
    token = agents._new_token()
    assert token == "A" * 43
    assert token_hash(token) == sha256(bytes(32))
