"""The HTTPS API server, over real mutual TLS 1.3 with real certificates and httpx."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from api._pki import ClientFiles, Pki, client, fake_did
from trustwire.coordinator.api import Api, ApiRequest, ApiResponse, Caller
from trustwire.coordinator.https import HttpsServer, directory_resolver, start_https
from trustwire.crypto.x509 import certificate_der
from trustwire.errors import SessionExpired
from trustwire.transport.tls import join_server_ssl_context

MAX_BODY = 4096


@dataclass
class Served:
    server: HttpsServer
    pki: Pki
    directory: dict[str, Caller]
    alice: ClientFiles
    tmp: Path
    resolved: list[bytes] = field(default_factory=list)
    requests: list[ApiRequest] = field(default_factory=list)

    def client(self, files: ClientFiles | None = None, **options: Any) -> httpx.AsyncClient:
        return client(self.server.url, files or self.alice, ca=self.alice.ca, **options)


def build_api(seen: list[ApiRequest]) -> Api:
    api = Api()

    async def echo(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        seen.append(request)
        return ApiResponse(
            200,
            {
                "caller": [request.caller.did, request.caller.name, list(request.caller.roles)],
                "query": dict(request.query),
                "body": request.body,
                "params": dict(params),
            },
        )

    async def expired(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        error = SessionExpired("session has expired")
        error.expires_at = 1234  # type: ignore[attr-defined]
        raise error

    async def broken(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        raise RuntimeError("secret-value-never-shown at /srv/trustwire/x.py line 3")

    async def unserializable(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        return ApiResponse(200, {"x": float("nan")})

    ok = {"200": {"description": "ok"}}
    api.route("GET", "/api/echo", echo, operation={"operationId": "echoGet", "responses": ok})
    api.route(
        "POST",
        "/api/echo",
        echo,
        operation={"operationId": "echoPost", "responses": ok, "requestBody": {"content": {}}},
    )
    api.route("GET", "/api/echo/{key}", echo, operation={"operationId": "echoKey", "responses": ok})
    api.route(
        "GET",
        "/api/expired",
        expired,
        operation={"operationId": "expired", "responses": {"410": {"description": "gone"}}},
    )
    api.route("GET", "/api/broken", broken, operation={"operationId": "broken", "responses": ok})
    api.route("GET", "/api/nan", unserializable, operation={"operationId": "nan", "responses": ok})
    return api


@pytest.fixture
async def served(tmp_path: Path, loop_errors: list[Any]) -> AsyncIterator[Served]:
    pki = Pki()
    alice = pki.client_files(tmp_path / "alice", "alice")
    directory = {alice.did: Caller(did=alice.did, name="alice", roles=("ops",))}
    seen: list[ApiRequest] = []
    resolved: list[bytes] = []
    lookup = directory_resolver(directory.get)

    async def resolve(der: bytes) -> Caller | None:
        resolved.append(der)
        return await lookup(der)

    server = await start_https(
        build_api(seen),
        host="127.0.0.1",
        port=0,
        tls=pki.server_context(),
        resolve_caller=resolve,
        max_body=MAX_BODY,
    )
    try:
        yield Served(server, pki, directory, alice, tmp_path, resolved, seen)
    finally:
        await server.close()


# -- authentication ----------------------------------------------------------------------


async def test_an_enrolled_agent_is_served_as_itself(served: Served) -> None:
    async with served.client() as http:
        response = await http.get("/api/echo", params={"a": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {
        "caller": [served.alice.did, "alice", ["ops"]],
        "query": {"a": "1"},
        "body": None,
        "params": {},
    }
    # The certificate handed to resolve_caller is the verified client certificate.
    assert served.resolved == [certificate_der(served.alice.cert.read_bytes())]


async def test_a_client_without_a_certificate_cannot_complete_the_handshake(
    served: Served,
) -> None:
    async with httpx.AsyncClient(
        base_url=served.server.url,
        verify=_context_without_certificate(served.alice.ca),
        timeout=5.0,
    ) as http:
        with pytest.raises(httpx.TransportError):
            await http.get("/api/echo")
    assert served.resolved == []
    assert served.requests == []


def _context_without_certificate(ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=ca)
    return context


async def test_a_certificate_from_another_ca_is_refused_even_for_an_enrolled_did(
    served: Served,
) -> None:
    # Another CA issues a certificate naming alice's (enrolled) DID: the impersonation a
    # rogue CA would attempt. The client still trusts the real server.
    rogue = Pki("rogue-domain")
    forged = rogue.client_files(
        served.tmp / "forged", "alice", served.alice.did, ca_pem=served.pki.ca.cert_pem
    )
    async with served.client(forged) as http:
        with pytest.raises(httpx.TransportError):
            await http.get("/api/echo")
    assert served.resolved == []
    assert served.requests == []


async def test_a_tls_1_2_client_is_refused(served: Served) -> None:
    async with served.client(
        minimum=ssl.TLSVersion.TLSv1_2, maximum=ssl.TLSVersion.TLSv1_2
    ) as http:
        with pytest.raises(httpx.TransportError):
            await http.get("/api/echo")
    assert served.requests == []


async def test_a_valid_certificate_for_an_unknown_did_is_401(served: Served) -> None:
    stranger = served.pki.client_files(served.tmp / "stranger", "stranger", fake_did())
    async with served.client(stranger) as http:
        for method, path in (
            ("GET", "/api/echo"),
            ("GET", "/api/openapi.json"),
            ("POST", "/api/echo"),
            ("GET", "/api/nowhere"),
        ):
            response = await http.request(method, path)
            assert response.status_code == 401, path
            assert response.json()["error"] == "UNAUTHORIZED"
    assert served.requests == []


async def test_an_agent_removed_from_the_directory_is_refused_on_its_next_request(
    served: Served,
) -> None:
    async with served.client() as http:
        assert (await http.get("/api/echo")).status_code == 200
        del served.directory[served.alice.did]  # revoked: the lookup no longer answers
        response = await http.get("/api/echo")  # same connection (keep-alive)
    assert response.status_code == 401
    assert len(served.requests) == 1


async def test_directory_resolver_needs_exactly_one_did_in_the_certificate(
    served: Served,
) -> None:
    resolve = directory_resolver(served.directory.get)
    alice_der = certificate_der(served.alice.cert.read_bytes())
    assert await resolve(alice_der) == served.directory[served.alice.did]
    server_der = certificate_der(served.pki._server.cert_pem)  # no DID in its SANs
    assert await resolve(server_der) is None
    assert await resolve(b"\x30\x03garbage") is None


# -- bodies ------------------------------------------------------------------------------


async def test_a_json_body_is_parsed_and_passed_on(served: Served) -> None:
    async with served.client() as http:
        response = await http.post("/api/echo", json={"peer": "bob", "n": [1, 2]})
        empty = await http.post("/api/echo", headers={"content-type": "application/json"})
        no_type = await http.post("/api/echo")
    assert response.status_code == 200
    assert response.json()["body"] == {"peer": "bob", "n": [1, 2]}
    assert empty.json()["body"] is None
    assert no_type.json()["body"] is None


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", None],
)
async def test_a_body_that_is_not_json_is_415(served: Served, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    async with served.client() as http:
        response = await http.post("/api/echo", content=b'{"a": 1}', headers=headers)
    assert response.status_code == 415
    assert response.json()["error"] == "UNSUPPORTED_MEDIA_TYPE"
    assert served.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"\xff\xfe{}",
        b"[" * 2000 + b"]" * 2000,
        b"{'a': 1}",
    ],
    ids=["truncated", "nan", "infinity", "not-utf8", "deep", "single-quotes"],
)
async def test_malformed_json_is_400(served: Served, body: bytes) -> None:
    async with served.client() as http:
        response = await http.post(
            "/api/echo", content=body, headers={"content-type": "application/json"}
        )
    assert len(body) <= MAX_BODY
    assert response.status_code == 400
    assert response.json()["error"] == "INVALID_JSON"
    assert served.requests == []


async def test_a_declared_body_over_the_limit_is_413_without_being_read(served: Served) -> None:
    body = json.dumps({"pad": "x" * MAX_BODY}).encode()
    async with served.client() as http:
        response = await http.post(
            "/api/echo", content=body, headers={"content-type": "application/json"}
        )
        exact = json.dumps({"p": "x" * (MAX_BODY - 9)}).encode()
        assert len(exact) == MAX_BODY
        at_limit = await http.post(
            "/api/echo", content=exact, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["error"] == "PAYLOAD_TOO_LARGE"
    assert at_limit.status_code == 200


async def test_a_streamed_body_over_the_limit_is_413(served: Served) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(4 * MAX_BODY // 1024):
            yield b"x" * 1024
        yield b'"}'

    async with served.client() as http:
        response = await http.post(
            "/api/echo", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert served.requests == []


# -- routing over HTTPS -------------------------------------------------------------------------


async def test_unknown_routes_and_methods_are_404_and_405(served: Served) -> None:
    async with served.client() as http:
        missing = await http.get("/api/nothing")
        wrong = await http.delete("/api/echo")
    assert missing.status_code == 404
    assert missing.json() == {"error": "NOT_FOUND", "message": "no such route"}
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "METHOD_NOT_ALLOWED"
    assert wrong.headers["allow"] == "GET, POST"


async def test_path_parameters_arrive_percent_decoded(served: Served) -> None:
    async with served.client() as http:
        response = await http.get("/api/echo/a%2Fb%20c%3Ad")
    assert response.json()["params"] == {"key": "a/b c:d"}


async def test_a_repeated_query_parameter_is_refused(served: Served) -> None:
    async with served.client() as http:
        response = await http.get("/api/echo?limit=1&limit=100")
    assert response.status_code == 400
    assert "given twice" in response.json()["message"]


async def test_typed_errors_keep_their_details_over_https(served: Served) -> None:
    async with served.client() as http:
        response = await http.get("/api/expired")
    assert response.status_code == 410
    assert response.json() == {
        "error": "SESSION_EXPIRED",
        "message": "session has expired",
        "details": {"expiresAt": 1234},
    }


async def test_failures_never_show_a_traceback(served: Served) -> None:
    async with served.client() as http:
        broken = await http.get("/api/broken")
        nan = await http.get("/api/nan")
    for response in (broken, nan):
        assert response.status_code == 500
        assert response.json() == {"error": "INTERNAL_ERROR", "message": "internal error"}
        assert "Traceback" not in response.text
        assert "secret-value" not in response.text


async def test_the_openapi_document_is_served_over_https(served: Served) -> None:
    async with served.client() as http:
        response = await http.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document == served.server.api.openapi()
    for route in served.server.api.routes():
        assert route.method.lower() in document["paths"][route.pattern]


# -- lifecycle ---------------------------------------------------------------------------


async def test_the_server_refuses_a_context_that_is_not_tls_1_3_with_client_certificates(
    served: Served,
) -> None:
    pki = served.pki
    cert, key = pki._server.cert_pem, pki._server.key_pem
    lax = join_server_ssl_context(cert, key)  # TLS 1.3 but CERT_NONE
    old = pki.server_context()
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    for context in (lax, old):
        with pytest.raises(ValueError, match=r"TLS 1\.3 only with CERT_REQUIRED"):
            await start_https(
                Api(),
                host="127.0.0.1",
                port=0,
                tls=context,
                resolve_caller=directory_resolver(served.directory.get),
            )


async def test_close_stops_listening(tmp_path: Path) -> None:
    pki = Pki()
    files = pki.client_files(tmp_path, "alice")
    server = await start_https(
        Api(),
        host="127.0.0.1",
        port=0,
        tls=pki.server_context(),
        resolve_caller=directory_resolver({files.did: Caller(files.did, "alice", ())}.get),
    )
    assert server.port > 0
    assert server.url == f"https://127.0.0.1:{server.port}"
    async with client(server.url, files) as http:
        assert (await http.get("/api/openapi.json")).status_code == 200
    await server.close()
    async with client(server.url, files) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/api/openapi.json")


async def test_a_client_that_never_completes_the_handshake_is_disconnected(
    tmp_path: Path, loop_errors: list[Any]
) -> None:
    pki = Pki()
    server = await start_https(
        Api(),
        host="127.0.0.1",
        port=0,
        tls=pki.server_context(),
        resolve_caller=directory_resolver(lambda did: None),
        handshake_timeout=0.2,
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # closed by the server, nothing sent
        finally:
            writer.close()
    finally:
        await server.close()


async def test_start_https_checks_its_arguments(tmp_path: Path) -> None:
    pki = Pki()
    resolve = directory_resolver(lambda did: None)
    for options in ({"max_body": 0}, {"handshake_timeout": 0}):
        with pytest.raises(ValueError, match="must be positive"):
            await start_https(
                Api(),
                host="127.0.0.1",
                port=0,
                tls=pki.server_context(),
                resolve_caller=resolve,
                **options,  # type: ignore[arg-type]
            )
