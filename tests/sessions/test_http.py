"""The sessions routes over real HTTPS: mutual TLS, real certificates, the real manager.

Every response any test here receives is also checked against the OpenAPI document:
its status must be one the route documents (see ``documented``), so the document stays
true as the routes change.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from _deployment import FakeClock
from api._pki import ClientFiles, Pki, client, fake_did
from trustwire.coordinator.api import Api, Caller
from trustwire.coordinator.https import HttpsServer, directory_resolver, start_https
from trustwire.events import EventKind, EventStream, MemorySink
from trustwire.sessions.api import BASE, register_session_routes
from trustwire.sessions.manager import SessionManager
from trustwire.sessions.model import SessionMessage
from trustwire.sessions.store import MemorySessionStore

MINUTE = 60.0
NAMES = ("alice", "bob", "carol", "dave", "op")


@dataclass
class World:
    server: HttpsServer
    api: Api
    manager: SessionManager
    clock: FakeClock
    sink: MemorySink
    files: dict[str, ClientFiles]
    callers: dict[str, Caller]
    revoked: set[str]
    tmp: Path
    pki: Pki
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    observed: list[tuple[str, str, int]] = field(default_factory=list)

    def did(self, name: str) -> str:
        return self.files[name].did

    def http(self, name: str) -> httpx.AsyncClient:
        if name not in self.clients:

            async def record(response: httpx.Response) -> None:
                self.observed.append(
                    (
                        response.request.method,
                        response.request.url.raw_path.decode(),
                        response.status_code,
                    )
                )

            http = client(self.server.url, self.files[name])
            http.event_hooks["response"] = [record]
            self.clients[name] = http
        return self.clients[name]

    async def open(
        self, initiator: str = "alice", peer: str = "bob", **body: Any
    ) -> dict[str, Any]:
        response = await self.http(initiator).post(BASE, json={"peer": peer, **body})
        assert response.status_code == 201, response.text
        session: dict[str, Any] = response.json()
        return session


@pytest.fixture(scope="module")
def certificates(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Pki, dict[str, ClientFiles], Path]:
    """One CA and the agents' certificates for the module (issuing is the slow part)."""
    tmp_path = tmp_path_factory.mktemp("pki")
    pki = Pki()
    files = {name: pki.client_files(tmp_path / name, name) for name in NAMES}
    files["stranger"] = pki.client_files(tmp_path / "stranger", "stranger", fake_did())
    return pki, files, tmp_path


@pytest.fixture
async def world(
    certificates: tuple[Pki, dict[str, ClientFiles], Path], loop_errors: list[Any]
) -> AsyncIterator[World]:
    pki, files, tmp_path = certificates
    clock = FakeClock(1_800_000_000.0)
    callers = {
        files[name].did: Caller(
            did=files[name].did, name=name, roles=("operator",) if name == "op" else ()
        )
        for name in NAMES
    }
    by_name = {caller.name: did for did, caller in callers.items()}
    revoked: set[str] = set()
    sink = MemorySink(maxlen=None)

    def known(did: str) -> bool:
        return did in callers and did not in revoked

    def may_talk(initiator: str, peer: str, now: float) -> bool:
        # Policy: dave may talk to nobody.
        return files["dave"].did not in (initiator, peer)

    manager = SessionManager(
        MemorySessionStore(),
        events=EventStream([sink]),
        may_talk=may_talk,
        known_agent=known,
        clock=clock,
    )
    await manager.start()
    api = Api()
    register_session_routes(api, manager, clock=clock, resolve_agent=by_name.get)

    def lookup(did: str) -> Caller | None:
        return callers.get(did) if known(did) else None

    server = await start_https(
        api,
        host="127.0.0.1",
        port=0,
        tls=pki.server_context(),
        resolve_caller=directory_resolver(lookup),
    )
    world = World(server, api, manager, clock, sink, files, callers, revoked, tmp_path, pki)
    try:
        yield world
    finally:
        for http in world.clients.values():
            await http.aclose()
        await server.close()
        await manager.close()
    assert_documented(api, world.observed)


# -- the document stays true ------------------------------------------------------------------


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[A-Za-z_]+\\\}", "[^/]+", re.escape(pattern)) + "/?$")


def documented(
    api: Api, method: str, path: str, document: dict[str, Any] | None = None
) -> set[str] | None:
    """The response codes documented for the route serving ``method path`` (literal
    segments preferred over parameters, as the router does); ``None`` if no route."""
    document = document or api.openapi()
    candidates = [
        route
        for route in api.routes()
        if route.method == method and _regex(route.pattern).match(path)
    ]
    if not candidates:
        return None
    best = min(candidates, key=lambda route: route.pattern.count("{"))
    return set(document["paths"][best.pattern][method.lower()]["responses"])


def assert_documented(api: Api, observed: list[tuple[str, str, int]]) -> None:
    assert observed, "no response was observed"
    document = api.openapi()
    for method, raw, status in observed:
        path = raw.split("?", 1)[0]
        codes = documented(api, method, path, document)
        if codes is None:
            assert status in (404, 405), (method, path, status)
            continue
        assert str(status) in codes, (
            f"{method} {path} answered {status}, documented {sorted(codes)}"
        )


# -- creating ---------------------------------------------------------------------------------


async def test_an_agent_opens_a_session_with_a_peer_by_name(world: World) -> None:
    session = await world.open("alice", "bob", metadata={"topic": "invoices"})
    now_ms = int(world.clock.now * 1000)
    assert uuid.UUID(session["id"]).version == 4
    assert session["initiator"] == world.did("alice")
    assert session["peer"] == world.did("bob")
    assert session["status"] == "active"
    assert session["createdAt"] == now_ms
    assert session["expiresAt"] == now_ms + 30 * 60_000
    assert session["timeoutConfig"] == {
        "timeoutMinutes": 30,
        "autoRenew": True,
        "maxDurationMinutes": 720,
        "warningThresholdMinutes": 5,
    }
    assert session["renewalCount"] == 0
    assert session["timeRemaining"] == 30 * 60_000
    assert session["isNearExpiration"] is False
    assert session["metadata"] == {"topic": "invoices"}
    # Both participants see it.
    for name in ("alice", "bob"):
        response = await world.http(name).get(f"{BASE}/{session['id']}")
        assert response.status_code == 200
        assert response.json() == session
    assert EventKind.SESSION_CREATED in world.sink.kinds()


async def test_the_peer_can_be_given_by_did_or_the_elizaos_agent_id(world: World) -> None:
    by_did = await world.open("alice", world.did("bob"))
    response = await world.http("alice").post(BASE, json={"peerId": world.did("carol")})
    alias = await world.http("bob").post(BASE, json={"agentId": world.did("carol")})
    assert by_did["peer"] == world.did("bob")
    assert response.status_code == 201 and response.json()["peer"] == world.did("carol")
    assert alias.status_code == 201 and alias.json()["initiator"] == world.did("bob")


async def test_timeout_config_in_the_seed_shape_is_clamped_on_creation(world: World) -> None:
    low = await world.open(timeoutConfig={"timeoutMinutes": 1, "maxDurationMinutes": 1})
    high = await world.open(
        timeoutConfig={
            "timeoutMinutes": 5000,
            "autoRenew": False,
            "maxDurationMinutes": 9999,
            "warningThresholdMinutes": 0,
        }
    )
    assert low["timeoutConfig"]["timeoutMinutes"] == 5
    assert low["timeoutConfig"]["maxDurationMinutes"] == 5
    assert high["timeoutConfig"] == {
        "timeoutMinutes": 1440,
        "autoRenew": False,
        "maxDurationMinutes": 2880,
        "warningThresholdMinutes": 1,
    }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"peer": "zed"}, 404, "AGENT_NOT_FOUND"),
        ({"peer": "bob", "peerId": "did:key:z6Mkx"}, 400, "VALIDATION_ERROR"),
        ({}, 400, "VALIDATION_ERROR"),
        ({"peerId": "bob"}, 400, "VALIDATION_ERROR"),
        ({"peer": 7}, 400, "VALIDATION_ERROR"),
        ({"peer": "bob", "userId": "x"}, 400, "VALIDATION_ERROR"),
        ({"peer": "alice"}, 400, "VALIDATION_ERROR"),
        ({"peer": "bob", "metadata": "x"}, 400, "VALIDATION_ERROR"),
        ({"peer": "bob", "metadata": {"pad": "x" * 11_000}}, 400, "VALIDATION_ERROR"),
        ({"peer": "bob", "timeoutConfig": []}, 400, "INVALID_TIMEOUT_CONFIG"),
        ({"peer": "bob", "timeoutConfig": {"timeoutMinutes": "30"}}, 400, "INVALID_TIMEOUT_CONFIG"),
        ({"peer": "bob", "timeoutConfig": {"timeout": 30}}, 400, "INVALID_TIMEOUT_CONFIG"),
        ({"peer": "dave"}, 403, "FORBIDDEN"),
        ({"peerId": fake_did()}, 403, "FORBIDDEN"),
    ],
    ids=[
        "unknown-name",
        "two-peers",
        "no-peer",
        "peer-id-not-a-did",
        "peer-not-a-string",
        "user-id",
        "oneself",
        "metadata-not-object",
        "metadata-too-large",
        "config-not-object",
        "config-wrong-type",
        "config-unknown-key",
        "policy-denies",
        "unknown-did",
    ],
)
async def test_a_bad_creation_is_refused_with_a_precise_code(
    world: World, body: dict[str, Any], status: int, code: str
) -> None:
    response = await world.http("alice").post(BASE, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert await world.manager.list(include_inactive=True) == []


async def test_a_revoked_peer_cannot_be_invited(world: World) -> None:
    world.revoked.add(world.did("bob"))
    response = await world.http("alice").post(BASE, json={"peer": world.did("bob")})
    assert response.status_code == 403


async def test_creation_needs_a_json_object_body(world: World) -> None:
    http = world.http("alice")
    missing = await http.post(BASE)
    array = await http.post(BASE, json=["bob"])
    text = await http.post(BASE, content=b'{"peer": "bob"}', headers={"content-type": "text/plain"})
    broken = await http.post(
        BASE, content=b'{"peer": ', headers={"content-type": "application/json"}
    )
    huge = await http.post(BASE, json={"peer": "bob", "metadata": {"pad": "x" * (1024 * 1024)}})
    assert (missing.status_code, array.status_code) == (400, 400)
    assert text.status_code == 415
    assert broken.status_code == 400 and broken.json()["error"] == "INVALID_JSON"
    assert huge.status_code == 413


# -- who may see a session ------------------------------------------------------------------


async def test_a_non_participant_cannot_tell_a_session_from_a_made_up_id(world: World) -> None:
    session = await world.open()
    carol = world.http("carol")
    real = f"{BASE}/{session['id']}"
    made_up = f"{BASE}/{uuid.uuid4()}"
    malformed = f"{BASE}/not-a-uuid"
    answers = []
    for path in (real, made_up, malformed):
        for method, suffix, body in (
            ("GET", "", None),
            ("POST", "/renew", None),
            ("PATCH", "/timeout", {"timeoutMinutes": 60}),
            ("POST", "/heartbeat", None),
            ("GET", "/messages", None),
            ("DELETE", "", None),
        ):
            response = await carol.request(method, path + suffix, json=body)
            assert response.status_code == 404, (method, path + suffix)
            answers.append(response.json())
    assert all(
        answer == {"error": "SESSION_NOT_FOUND", "message": "unknown session"} for answer in answers
    )
    # Nothing carol did changed the session, and the probes were recorded.
    assert (await world.http("alice").get(real)).json() == session
    assert world.sink.of_kind(EventKind.SESSION_DENIED)


async def test_an_unenrolled_certificate_gets_401_on_every_sessions_route(world: World) -> None:
    session = await world.open()
    stranger = world.http("stranger")
    for method, path in (
        ("GET", f"{BASE}/health"),
        ("GET", BASE),
        ("POST", BASE),
        ("GET", f"{BASE}/{session['id']}"),
        ("DELETE", f"{BASE}/{session['id']}"),
    ):
        response = await stranger.request(method, path)
        assert response.status_code == 401, path
    assert (await world.http("alice").get(f"{BASE}/{session['id']}")).json()["status"] == "active"


async def test_an_agent_revoked_after_opening_loses_access(world: World) -> None:
    session = await world.open()
    world.revoked.add(world.did("alice"))
    response = await world.http("alice").get(f"{BASE}/{session['id']}")
    assert response.status_code == 401


# -- expiry -----------------------------------------------------------------------------------


async def test_an_expired_session_is_410_with_its_expiry_on_every_call_never_404(
    world: World,
) -> None:
    session = await world.open()
    path = f"{BASE}/{session['id']}"
    world.clock.advance(30 * MINUTE)  # exactly at expiresAt: expired
    for advance in (0.0, 3600.0, 86400.0):
        world.clock.advance(advance)
        for method, suffix, body in (
            ("GET", "", None),
            ("POST", "/renew", None),
            ("POST", "/heartbeat", None),
            ("PATCH", "/timeout", {"timeoutMinutes": 60}),
            ("GET", "/messages", None),
        ):
            for name in ("alice", "bob"):
                response = await world.http(name).request(method, path + suffix, json=body)
                assert response.status_code == 410, (method, suffix, response.text)
                assert response.json()["error"] == "SESSION_EXPIRED"
                assert response.json()["details"] == {"expiresAt": session["expiresAt"]}
    # Still unknown to everyone else.
    assert (await world.http("carol").get(path)).status_code == 404


async def test_just_before_expiry_the_session_is_near_expiration(world: World) -> None:
    session = await world.open()
    world.clock.advance(26 * MINUTE)
    shown = (await world.http("bob").get(f"{BASE}/{session['id']}")).json()
    assert shown["status"] == "active"
    assert shown["isNearExpiration"] is True
    assert shown["timeRemaining"] == 4 * 60_000


async def test_a_heartbeat_renews_with_auto_renew(world: World) -> None:
    session = await world.open()
    world.clock.advance(20 * MINUTE)
    response = await world.http("bob").post(f"{BASE}/{session['id']}/heartbeat")
    assert response.status_code == 200
    renewed = response.json()
    assert renewed["renewalCount"] == 1
    assert renewed["expiresAt"] == int(world.clock.now * 1000) + 30 * 60_000
    world.clock.advance(25 * MINUTE)  # 45 minutes after creation: alive thanks to the beat
    assert (await world.http("alice").get(f"{BASE}/{session['id']}")).status_code == 200


async def test_without_auto_renew_a_heartbeat_does_not_extend_but_renew_does(
    world: World,
) -> None:
    session = await world.open(timeoutConfig={"autoRenew": False})
    path = f"{BASE}/{session['id']}"
    world.clock.advance(20 * MINUTE)
    beat = (await world.http("alice").post(f"{path}/heartbeat")).json()
    assert beat["expiresAt"] == session["expiresAt"]
    assert beat["renewalCount"] == 0
    renewed = await world.http("alice").post(f"{path}/renew")
    assert renewed.status_code == 200
    assert renewed.json()["expiresAt"] == int(world.clock.now * 1000) + 30 * 60_000
    assert renewed.json()["renewalCount"] == 1


async def test_renewal_past_the_max_duration_is_422(world: World) -> None:
    session = await world.open(timeoutConfig={"timeoutMinutes": 30, "maxDurationMinutes": 60})
    path = f"{BASE}/{session['id']}/renew"
    world.clock.advance(20 * MINUTE)
    early = await world.http("alice").post(path)
    assert early.json()["expiresAt"] == session["createdAt"] + 50 * 60_000
    world.clock.advance(20 * MINUTE)
    first = await world.http("alice").post(path)
    assert first.status_code == 200
    assert first.json()["expiresAt"] == session["createdAt"] + 60 * 60_000  # capped
    assert first.json()["renewalCount"] == 2
    second = await world.http("bob").post(path)
    assert second.status_code == 422
    assert second.json()["error"] == "SESSION_RENEWAL_FAILED"
    world.clock.advance(20 * MINUTE)  # at the cap: expired, and it stays so
    assert (await world.http("alice").post(path)).status_code == 410


async def test_renew_and_heartbeat_take_no_body_fields(world: World) -> None:
    session = await world.open()
    for suffix in ("/renew", "/heartbeat"):
        response = await world.http("alice").post(
            f"{BASE}/{session['id']}{suffix}", json={"timeoutMinutes": 60}
        )
        assert response.status_code == 400
        ok = await world.http("alice").post(f"{BASE}/{session['id']}{suffix}", json={})
        assert ok.status_code == 200


# -- the timeout ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"timeoutMinutes": 4},
        {"timeoutMinutes": 1441},
        {"timeoutMinutes": "60"},
        {"timeoutMinutes": True},
        {"timeoutMinutes": 10.5},
        {},
        {"autoRenew": True},
        {"timeoutMinutes": 60, "autoRenew": False},
        {"timeoutMinutes": 60, "maxDurationMinutes": 100},
    ],
)
async def test_a_timeout_outside_the_range_or_a_fixed_setting_is_400(
    world: World, body: dict[str, Any]
) -> None:
    session = await world.open()
    response = await world.http("alice").patch(f"{BASE}/{session['id']}/timeout", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "INVALID_TIMEOUT_CONFIG"
    after = (await world.http("alice").get(f"{BASE}/{session['id']}")).json()
    assert after["timeoutConfig"] == session["timeoutConfig"]


async def test_an_unknown_timeout_key_is_400(world: World) -> None:
    session = await world.open()
    response = await world.http("alice").patch(
        f"{BASE}/{session['id']}/timeout", json={"timeoutMinutes": 60, "timeout": 1}
    )
    assert response.status_code == 400
    assert "'timeout'" in response.json()["message"]


@pytest.mark.parametrize("minutes", [5, 60, 1440])
async def test_a_timeout_change_recomputes_the_expiry(world: World, minutes: int) -> None:
    session = await world.open()
    world.clock.advance(10 * MINUTE)
    response = await world.http("bob").patch(
        f"{BASE}/{session['id']}/timeout",
        json={**session["timeoutConfig"], "timeoutMinutes": minutes},
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["timeoutConfig"]["timeoutMinutes"] == minutes
    last = session["lastActivity"]
    expected = min(last + minutes * 60_000, session["createdAt"] + max(720, minutes) * 60_000)
    if minutes == 5:
        # 10 minutes idle with a 5-minute timeout: expired at once.
        assert changed["status"] == "expired"
    else:
        assert changed["expiresAt"] == expected
    assert changed["renewalCount"] == 0


# -- ending ---------------------------------------------------------------------------------


async def test_ending_a_session_tells_both_sides_and_it_stays_ended(world: World) -> None:
    session = await world.open()
    path = f"{BASE}/{session['id']}"
    world.clock.advance(MINUTE)
    response = await world.http("bob").delete(path)
    assert response.status_code == 200
    ended = response.json()
    assert ended["status"] == "ended"
    assert ended["endReason"] == "ended"
    assert ended["endedAt"] == int(world.clock.now * 1000)
    for name in ("alice", "bob"):
        for method, suffix in (
            ("GET", ""),
            ("DELETE", ""),
            ("POST", "/renew"),
            ("POST", "/heartbeat"),
        ):
            again = await world.http(name).request(method, path + suffix)
            assert again.status_code == 410
            assert again.json()["error"] == "SESSION_ENDED"
            assert again.json()["details"] == {"endedAt": ended["endedAt"], "endReason": "ended"}
    assert EventKind.SESSION_ENDED in world.sink.kinds()


async def test_an_end_reason_is_kept_and_checked(world: World) -> None:
    session = await world.open()
    path = f"{BASE}/{session['id']}"
    bad = await world.http("alice").request("DELETE", path, json={"reason": "x" * 201})
    assert bad.status_code == 400
    good = await world.http("alice").request("DELETE", path, json={"reason": "task done"})
    assert good.json()["endReason"] == "task done"


# -- the operator -----------------------------------------------------------------------------


async def test_only_the_operator_lists_every_session(world: World) -> None:
    first = await world.open("alice", "bob")
    second = await world.open("bob", "carol")
    await world.open("carol", "alice")
    await world.http("alice").delete(f"{BASE}/{first['id']}")
    refused = await world.http("alice").get(BASE)
    assert refused.status_code == 403
    assert refused.json()["error"] == "FORBIDDEN"
    listed = await world.http("op").get(BASE)
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 2
    assert body["stats"] == {"active": 2, "expired": 0, "ended": 1}
    everything = (await world.http("op").get(BASE, params={"includeInactive": "true"})).json()
    assert everything["total"] == 3
    of_bob = (await world.http("op").get(BASE, params={"agent": "bob"})).json()
    assert [s["id"] for s in of_bob["sessions"]] == [second["id"]]
    of_bob_did = (await world.http("op").get(BASE, params={"agent": world.did("bob")})).json()
    assert of_bob_did == of_bob
    for params in ({"includeInactive": "yes"}, {"sort": "id"}):
        assert (await world.http("op").get(BASE, params=params)).status_code == 400
    assert (await world.http("op").get(BASE, params={"agent": "zed"})).status_code == 404


async def test_the_operator_can_see_and_end_sessions_it_is_not_part_of(world: World) -> None:
    session = await world.open()
    path = f"{BASE}/{session['id']}"
    assert (await world.http("op").get(path)).json() == session
    ended = await world.http("op").delete(path, params=None)
    assert ended.status_code == 200
    assert (await world.http("alice").get(path)).json()["error"] == "SESSION_ENDED"
    assert (await world.http("op").get(path)).status_code == 410


# -- messages ---------------------------------------------------------------------------------


def _message(world: World, session_id: str, index: int) -> SessionMessage:
    return SessionMessage(
        session_id=session_id,
        message_id=f"{index:032x}",
        sender=world.did("alice") if index % 2 else world.did("bob"),
        recipient=world.did("bob") if index % 2 else world.did("alice"),
        type="channel_data",
        size=100 + index,
        timestamp_ms=1_800_000_000_000 + index * 1000,
    )


async def test_message_metadata_pages_with_cursors(world: World) -> None:
    session = await world.open()
    for index in range(5):
        world.manager.record_message(_message(world, session["id"], index))
    path = f"{BASE}/{session['id']}/messages"
    first = await world.http("bob").get(path, params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [m["id"] for m in page["messages"]] == [f"{4:032x}", f"{3:032x}"]
    assert page["hasMore"] is True
    assert page["messages"][0] == {
        "id": f"{4:032x}",
        "sessionId": session["id"],
        "sender": world.did("bob"),
        "recipient": world.did("alice"),
        "type": "channel_data",
        "size": 104,
        "createdAt": 1_800_000_004_000,
    }
    assert set(page["cursors"]) == {"before", "after"}
    older = (await world.http("bob").get(path, params={"before": page["cursors"]["before"]})).json()
    assert [m["size"] for m in older["messages"]] == [102, 101, 100]
    assert older["hasMore"] is False
    newer = (await world.http("alice").get(path, params={"after": 1_800_000_002_000})).json()
    assert sorted(m["size"] for m in newer["messages"]) == [103, 104]
    everything = (await world.http("alice").get(path)).json()
    assert len(everything["messages"]) == 5
    assert "content" not in everything["messages"][0]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"before": "-1"},
        {"after": "1.5"},
        {"cursor": "1"},
    ],
)
async def test_bad_message_queries_are_400(world: World, params: dict[str, str]) -> None:
    session = await world.open()
    response = await world.http("alice").get(f"{BASE}/{session['id']}/messages", params=params)
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("limit", ["1", "100"])
async def test_message_limits_at_the_bounds_are_accepted(world: World, limit: str) -> None:
    session = await world.open()
    response = await world.http("alice").get(
        f"{BASE}/{session['id']}/messages", params={"limit": limit}
    )
    assert response.status_code == 200


# -- health, methods, the document ----------------------------------------------------------------


async def test_health_counts_active_sessions(world: World) -> None:
    await world.open()
    await world.open("bob", "carol")
    response = await world.http("carol").get(f"{BASE}/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "healthy"
    assert health["activeSessions"] == 2


async def test_a_wrong_method_on_a_session_route_is_405(world: World) -> None:
    session = await world.open()
    response = await world.http("alice").put(f"{BASE}/{session['id']}", json={})
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "DELETE"}
    assert (await world.http("alice").delete(f"{BASE}/health")).status_code == 404


async def test_the_openapi_document_over_https_lists_every_sessions_route(world: World) -> None:
    response = await world.http("alice").get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    expected = {
        ("get", f"{BASE}/health"),
        ("post", BASE),
        ("get", BASE),
        ("get", f"{BASE}/{{id}}"),
        ("post", f"{BASE}/{{id}}/renew"),
        ("patch", f"{BASE}/{{id}}/timeout"),
        ("post", f"{BASE}/{{id}}/heartbeat"),
        ("delete", f"{BASE}/{{id}}"),
        ("get", f"{BASE}/{{id}}/messages"),
        ("get", "/api/openapi.json"),
    }
    listed = {(method, path) for path, methods in document["paths"].items() for method in methods}
    assert listed == expected
    assert document["components"]["securitySchemes"]["mutualTLS"]["type"] == "mutualTLS"
    for route in world.api.routes():
        operation = document["paths"][route.pattern][route.method.lower()]
        assert set(route.operation["responses"]) <= set(operation["responses"])
        # Every schema reference resolves.
        for ref in re.findall(r'"\$ref": "#/components/schemas/([A-Za-z]+)"', _dumps(operation)):
            assert ref in document["components"]["schemas"]
    session_ops = [
        document["paths"][path][method] for method, path in expected if path != "/api/openapi.json"
    ]
    assert all(op["tags"] == ["sessions"] for op in session_ops)
    assert {"200", "404", "410", "422"} <= set(
        document["paths"][f"{BASE}/{{id}}/renew"]["post"]["responses"]
    )
    assert {"201", "400", "403", "404", "413", "415"} <= set(
        document["paths"][BASE]["post"]["responses"]
    )


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value)


async def test_the_documentation_check_catches_an_undocumented_status(world: World) -> None:
    assert (await world.http("alice").get(f"{BASE}/health")).status_code == 200
    session_path = f"{BASE}/{uuid.uuid4()}"
    assert documented(world.api, "GET", f"{BASE}/health") == {"200", "401", "500"}
    assert "422" in (documented(world.api, "POST", f"{session_path}/renew") or set())
    assert documented(world.api, "PUT", session_path) is None
    assert_documented(world.api, [("POST", f"{session_path}/renew", 422)])
    with pytest.raises(AssertionError, match="answered 422"):
        assert_documented(world.api, [("GET", session_path, 422)])
    with pytest.raises(AssertionError):
        assert_documented(world.api, [("PUT", session_path, 200)])
