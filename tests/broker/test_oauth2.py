"""OAuth2 client-credentials through the broker: one token fetch shared by concurrent
requests, reuse until shortly before expiry (injected clock), exactly one
refresh-and-retry on a 401, and token-endpoint failures as 502 naming the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _servers import (
    CLIENT_ID,
    CLIENT_SECRET,
    Harness,
    TokenServer,
    running_harness,
)

from trustwire.broker.config import CredentialSource, OAuth2Config
from trustwire.broker.oauth2 import MAX_SKEW, TokenSource, TokenUnavailable
from trustwire.broker.proxy import upstream_ssl_context


@pytest.fixture
async def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    async with running_harness(tmp_path, monkeypatch) as harness:
        yield harness


def bearer(harness: Harness, index: int) -> str:
    return harness.upstream.received[index].headers["Authorization"]


async def test_the_token_is_fetched_once_and_shared_by_concurrent_requests(
    broker: Harness,
) -> None:
    async with broker.client("alice") as http:
        responses = await asyncio.gather(
            *(http.get(broker.url(f"/v1/items/{i}")) for i in range(12))
        )
        assert [r.status_code for r in responses] == [200] * 12
        assert broker.tokens.count == 1
        broker.clock.advance(600)
        assert (await http.get(broker.url("/v1/later"))).status_code == 200
    assert broker.tokens.count == 1
    token = broker.tokens.issued[0]
    assert {r.headers["Authorization"] for r in broker.upstream.received} == {f"Bearer {token}"}
    # The client authenticated to the token endpoint with HTTP Basic (authlib's default).
    [request] = broker.tokens.requests
    assert request["authorization"].startswith("Basic ")


async def test_the_token_is_refreshed_shortly_before_it_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_harness(tmp_path, monkeypatch, expires_in=100) as broker:
        # expires_in 100 s: refreshed 10 s (10 %) before expiry.
        async with broker.client("alice") as http:
            await http.get(broker.url("/a"))
            broker.clock.advance(89.5)
            await http.get(broker.url("/b"))
            assert broker.tokens.count == 1
            broker.clock.advance(1.0)  # 90.5 s: inside the last 10 %
            await http.get(broker.url("/c"))
            assert broker.tokens.count == 2
            await http.get(broker.url("/d"))
        first, second = broker.tokens.issued
        assert [bearer(broker, i) for i in range(4)] == [f"Bearer {first}"] * 2 + [
            f"Bearer {second}"
        ] * 2


async def test_a_long_lived_token_is_refreshed_at_most_the_skew_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_harness(tmp_path, monkeypatch, expires_in=3600) as broker:
        async with broker.client("alice") as http:
            await http.get(broker.url("/a"))
            broker.clock.advance(3600 - MAX_SKEW - 1)
            await http.get(broker.url("/b"))
            assert broker.tokens.count == 1
            broker.clock.advance(2)
            await http.get(broker.url("/c"))
            assert broker.tokens.count == 2


async def test_a_401_triggers_exactly_one_refresh_and_retry(broker: Harness) -> None:
    async with broker.client("alice") as http:
        assert (await http.get(broker.url("/v1/items"))).status_code == 200
        broker.upstream.rejected.add(broker.tokens.issued[0])  # revoked upstream
        response = await http.post(broker.url("/v1/items"), content=b'{"n": 1}')
        assert response.status_code == 200
        assert broker.tokens.count == 2
        # The new token is kept for later requests.
        assert (await http.get(broker.url("/v1/items"))).status_code == 200
    assert broker.tokens.count == 2
    first, second = broker.tokens.issued
    assert [bearer(broker, i) for i in range(4)] == [
        f"Bearer {first}",
        f"Bearer {first}",
        f"Bearer {second}",
        f"Bearer {second}",
    ]
    # The retried request carried the same body.
    assert broker.upstream.received[1].body == broker.upstream.received[2].body == b'{"n": 1}'
    retried = [e for e in broker.events_of("broker.request") if e.details["retried"]]
    assert len(retried) == 1


async def test_a_second_401_is_returned_as_is(broker: Harness) -> None:
    broker.upstream.reject_all = True
    async with broker.client("alice") as http:
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 401
    assert response.text == "token refused"
    assert broker.tokens.count == 2  # one refresh, not a loop
    assert len(broker.upstream.received) == 2  # one retry, not a loop


async def test_a_failing_token_endpoint_is_502_naming_the_service(broker: Harness) -> None:
    broker.tokens.fail = 500
    async with broker.client("alice") as http:
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 502
    assert "'api'" in response.text and "token endpoint" in response.text
    assert CLIENT_SECRET not in response.text
    assert broker.upstream.received == []
    [error] = broker.events_of("broker.error")
    assert error.details["status"] == 502


async def test_a_refused_client_is_502_without_the_secret(
    broker: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TW_BROKER_TEST_CLIENT_SECRET", "CANARY-wrong-secret-0a9b8c")
    async with broker.client("alice") as http:
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 502
    assert "invalid_client" in response.text
    assert "CANARY" not in response.text
    assert broker.upstream.received == []


async def test_a_missing_client_secret_is_503(
    broker: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TW_BROKER_TEST_CLIENT_SECRET")
    async with broker.client("alice") as http:
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 503
    assert "api" in response.text
    assert broker.tokens.count == 0


def literal(name: str, value: str) -> CredentialSource:
    return CredentialSource(name=name, provider="literal", get=value)


async def test_a_token_endpoint_with_an_untrusted_certificate_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_harness(tmp_path, monkeypatch) as broker:
        rogue = await TokenServer(client_secret=CLIENT_SECRET).start(
            broker.pki.server_context(trusted=False)
        )
        try:
            source = TokenSource(
                "api",
                OAuth2Config(
                    token_url=literal("token_url", rogue.url("/token")),
                    client_id=literal("client_id", CLIENT_ID),
                    client_secret=literal("client_secret", CLIENT_SECRET),
                ),
                verify=upstream_ssl_context(broker.pki.upstream_ca_file),
                clock=broker.clock,
            )
            with pytest.raises(TokenUnavailable) as raised:
                await source.token()
            assert raised.value.status == 502
            assert "TLS" in str(raised.value)
            assert rogue.count == 0  # the secret was never sent
        finally:
            await rogue.close()


async def test_an_oversized_token_response_is_refused(broker: Harness) -> None:
    broker.tokens.oversized = True
    async with broker.client("alice") as http:
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 502
    assert "unusable answer" in response.text
    assert broker.upstream.received == []
