"""The transport-agnostic API layer: routing, error mapping, raise_for, OpenAPI, helpers."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import pytest

import trustwire
from trustwire.coordinator.api import (
    MAX_SEGMENT_CHARS,
    Api,
    ApiError,
    ApiRequest,
    ApiResponse,
    Caller,
    check_keys,
    error_body,
    optional,
    query_int,
    raise_for,
    request_object,
    required,
    response_for,
)
from trustwire.errors import (
    AuthenticationFailed,
    InvalidDid,
    InvalidSessionConfig,
    MemoryAccessDenied,
    MemoryExpired,
    MemoryNotFound,
    MemoryQuotaExceeded,
    PolicyDenied,
    RateLimited,
    ReplayDetected,
    SegmentRejected,
    SessionEnded,
    SessionExpired,
    SessionRenewalFailed,
    UnknownAgent,
    UnknownSession,
    VersionConflict,
)

ALICE = Caller(did="did:key:z6MkAlice", name="alice", roles=())
OPERATOR = Caller(did="did:key:z6MkOp", name="op", roles=("ops", "operator"))


def request(
    method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
) -> ApiRequest:
    return ApiRequest(caller=ALICE, method=method, path=path, query=query or {}, body=body)


def operation(operation_id: str, *codes: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "responses": {code: {"description": f"answer {code}"} for code in codes or ("200",)},
    }


def echo_api() -> tuple[Api, list[tuple[str, Mapping[str, str]]]]:
    """An Api whose handlers record which route ran with which parameters."""
    api = Api()
    seen: list[tuple[str, Mapping[str, str]]] = []

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def handler(req: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
            seen.append((name, dict(params)))
            return ApiResponse(200, {"route": name, "params": dict(params)})

        return handler

    api.route("GET", "/api/things", recorder("list"), operation=operation("listThings"))
    api.route("POST", "/api/things", recorder("create"), operation=operation("createThing", "201"))
    api.route("GET", "/api/things/health", recorder("health"), operation=operation("health"))
    api.route("GET", "/api/things/{id}", recorder("get"), operation=operation("getThing"))
    api.route("DELETE", "/api/things/{id}", recorder("delete"), operation=operation("deleteThing"))
    api.route(
        "PUT",
        "/api/things/{id}/parts/{key}",
        recorder("put-part"),
        operation=operation("putPart"),
    )
    return api, seen


# -- routing ------------------------------------------------------------------------------


async def test_exact_method_and_pattern_select_the_handler() -> None:
    api, seen = echo_api()
    assert (await api.handle(request("GET", "/api/things"))).body["route"] == "list"
    assert (await api.handle(request("POST", "/api/things"))).body["route"] == "create"
    assert (await api.handle(request("GET", "/api/things/abc"))).body == {
        "route": "get",
        "params": {"id": "abc"},
    }
    assert (await api.handle(request("DELETE", "/api/things/abc"))).body["route"] == "delete"
    assert [name for name, _ in seen] == ["list", "create", "get", "delete"]


async def test_a_literal_segment_beats_a_parameter_whatever_the_registration_order() -> None:
    api = Api()

    async def by_id(req: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        return ApiResponse(200, "by-id")

    async def health(req: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        return ApiResponse(200, "health")

    api.route("GET", "/api/x/{id}", by_id, operation=operation("byId"))
    api.route("GET", "/api/x/health", health, operation=operation("health"))
    assert (await api.handle(request("GET", "/api/x/health"))).body == "health"
    assert (await api.handle(request("GET", "/api/x/other"))).body == "by-id"


async def test_parameters_are_percent_decoded_one_segment_each() -> None:
    api, _ = echo_api()
    response = await api.handle(
        request("PUT", "/api/things/did%3Akey%3Az6Mk/parts/a%2Fb%20c%C3%A9")
    )
    assert response.status == 200
    assert response.body["params"] == {"id": "did:key:z6Mk", "key": "a/b cé"}
    # An unencoded slash is a segment boundary: no route has that many segments.
    assert (await api.handle(request("PUT", "/api/things/x/parts/a/b"))).status == 404


async def test_a_segment_longer_than_the_limit_is_refused() -> None:
    api, seen = echo_api()
    ok = await api.handle(request("GET", "/api/things/" + "a" * MAX_SEGMENT_CHARS))
    assert ok.status == 200
    too_long = await api.handle(request("GET", "/api/things/" + "a" * (MAX_SEGMENT_CHARS + 1)))
    assert too_long.status == 400
    assert too_long.body["error"] == "VALIDATION_ERROR"
    # Counted after decoding: 513 encoded "é" is 513 characters.
    encoded = await api.handle(request("GET", "/api/things/" + "%C3%A9" * (MAX_SEGMENT_CHARS + 1)))
    assert encoded.status == 400
    assert len(seen) == 1


async def test_invalid_percent_encoding_is_a_validation_error() -> None:
    api, seen = echo_api()
    response = await api.handle(request("GET", "/api/things/%FF%FE"))
    assert response.status == 400
    assert response.body["error"] == "VALIDATION_ERROR"
    assert seen == []


async def test_unknown_paths_are_404_not_found() -> None:
    api, seen = echo_api()
    for path in ("/api/nothing", "/api/things/a/b", "/api//things", "api/things", "/", ""):
        response = await api.handle(request("GET", path))
        assert response.status == 404, path
        assert response.body == {"error": "NOT_FOUND", "message": "no such route"}
    # An empty parameter never matches.
    assert (await api.handle(request("GET", "/api/things//"))).status == 404
    assert seen == []


async def test_a_trailing_slash_names_the_same_resource() -> None:
    api, _ = echo_api()
    assert (await api.handle(request("GET", "/api/things/"))).body["route"] == "list"


async def test_a_known_path_with_another_method_is_405_listing_the_allowed_ones() -> None:
    api, seen = echo_api()
    response = await api.handle(request("PATCH", "/api/things/abc"))
    assert response.status == 405
    assert response.body["error"] == "METHOD_NOT_ALLOWED"
    assert response.body["details"] == {"allowed": ["DELETE", "GET"]}
    assert (await api.handle(request("DELETE", "/api/things"))).status == 405
    assert seen == []


async def test_methods_match_case_insensitively() -> None:
    api, _ = echo_api()
    assert (await api.handle(request("get", "/api/things"))).status == 200


# -- the error mapping ----------------------------------------------------------------------


def expired() -> SessionExpired:
    error = SessionExpired("session 1 has expired")
    error.expires_at = 1_700_000_000_000  # type: ignore[attr-defined]
    return error


def conflict() -> VersionConflict:
    error = VersionConflict("segment 'k' is at version 3")
    error.current_version = 3  # type: ignore[attr-defined]
    return error


MAPPING = [
    (UnknownSession("no such session"), 404, "SESSION_NOT_FOUND", None),
    (expired(), 410, "SESSION_EXPIRED", {"expiresAt": 1_700_000_000_000}),
    (SessionEnded("session ended"), 410, "SESSION_ENDED", None),
    (SessionRenewalFailed("max duration"), 422, "SESSION_RENEWAL_FAILED", None),
    (InvalidSessionConfig("timeoutMinutes out of range"), 400, "INVALID_TIMEOUT_CONFIG", None),
    (MemoryNotFound("no such memory"), 404, "MEMORY_NOT_FOUND", None),
    (MemoryExpired("memory expired"), 410, "MEMORY_EXPIRED", None),
    (MemoryAccessDenied("grant of did:x expired at 5"), 403, "FORBIDDEN", {"resource": "memory"}),
    (MemoryQuotaExceeded("16 MiB quota"), 413, "QUOTA_EXCEEDED", None),
    (conflict(), 409, "VERSION_CONFLICT", {"currentVersion": 3}),
    (SegmentRejected("bad hash"), 400, "SEGMENT_REJECTED", None),
    (PolicyDenied("rule 7 denies alice -> bob"), 403, "FORBIDDEN", None),
    (ReplayDetected("replay of id 12"), 403, "FORBIDDEN", None),
    (RateLimited("bucket x"), 429, "RATE_LIMITED", None),
    (UnknownAgent("no agent 'zed'"), 404, "AGENT_NOT_FOUND", None),
    (InvalidDid("not a did"), 400, "VALIDATION_ERROR", None),
    (ValueError("limit must be <= 100"), 400, "VALIDATION_ERROR", None),
    (TypeError("peer must be a string"), 400, "VALIDATION_ERROR", None),
    (ApiError(418, "TEAPOT", "short and stout", {"spout": True}), 418, "TEAPOT", {"spout": True}),
]


def raising(exc: BaseException) -> Api:
    api = Api()

    async def handler(req: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        raise exc

    api.route("POST", "/api/fail", handler, operation=operation("fail"))
    return api


@pytest.mark.parametrize(
    ("exc", "status", "code", "details"), MAPPING, ids=lambda v: type(v).__name__
)
async def test_exceptions_map_to_their_status_code_and_details(
    exc: Exception, status: int, code: str, details: dict[str, Any] | None
) -> None:
    response = await raising(exc).handle(request("POST", "/api/fail"))
    assert response.status == status
    assert response.body["error"] == code
    assert isinstance(response.body["message"], str) and response.body["message"]
    assert response.body.get("details") == details
    assert set(response.body) <= {"error", "message", "details"}


@pytest.mark.parametrize(
    "exc",
    [
        MemoryAccessDenied("grant of did:x expired at 5"),
        PolicyDenied("rule 7 denies alice -> bob"),
        ReplayDetected("replay of id 12"),
        RateLimited("bucket x"),
    ],
)
async def test_refusals_say_nothing_of_why(exc: Exception) -> None:
    response = await raising(exc).handle(request("POST", "/api/fail"))
    assert str(exc) not in json.dumps(response.body)


async def test_an_unexpected_exception_is_a_generic_500_logged_with_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cr3t-token-value"
    with caplog.at_level(logging.ERROR, logger="trustwire.coordinator.api"):
        response = await raising(RuntimeError(secret)).handle(request("POST", "/api/fail"))
    assert response == ApiResponse(500, {"error": "INTERNAL_ERROR", "message": "internal error"})
    assert "RuntimeError" in caplog.text


async def test_a_handler_returning_something_else_is_a_500() -> None:
    api = Api()

    async def handler(req: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        return {"status": 200}  # type: ignore[return-value]

    api.route("GET", "/api/odd", handler, operation=operation("odd"))
    response = await api.handle(request("GET", "/api/odd"))
    assert response.status == 500
    assert response.body["error"] == "INTERNAL_ERROR"


def test_api_error_refuses_a_success_status() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        ApiError(200, "OK", "fine")


# -- raise_for ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "code", "details"), MAPPING, ids=lambda v: type(v).__name__
)
async def test_raise_for_turns_an_error_response_back_into_the_same_exception(
    exc: Exception, status: int, code: str, details: dict[str, Any] | None
) -> None:
    response = await raising(exc).handle(request("POST", "/api/fail"))
    expected: type[Exception] = type(exc)
    if isinstance(exc, ReplayDetected):
        expected = PolicyDenied  # every other refusal collapses into one on the wire
    if isinstance(exc, (InvalidDid, TypeError)):
        expected = ValueError  # validation failures are all VALIDATION_ERROR
    with pytest.raises(expected) as raised:
        raise_for(response)
    error = raised.value
    assert type(error) is expected
    assert error.status == status  # type: ignore[attr-defined]
    assert error.code == code  # type: ignore[attr-defined]
    assert error.details == (details or {})  # type: ignore[attr-defined]


async def test_raise_for_restores_structured_attributes() -> None:
    with pytest.raises(SessionExpired) as expired_error:
        raise_for(await raising(expired()).handle(request("POST", "/api/fail")))
    assert expired_error.value.expires_at == 1_700_000_000_000  # type: ignore[attr-defined]
    with pytest.raises(VersionConflict) as conflict_error:
        raise_for(
            ApiResponse(
                409,
                {"error": "VERSION_CONFLICT", "message": "stale", "details": {"currentEpoch": 2}},
            )
        )
    assert conflict_error.value.current_epoch == 2  # type: ignore[attr-defined]


def test_raise_for_returns_on_success() -> None:
    raise_for(ApiResponse(200, {"ok": True}))
    raise_for(ApiResponse(201, None))


@pytest.mark.parametrize(
    "response",
    [
        ApiResponse(404, {"error": "NOT_FOUND", "message": "no such route"}),
        ApiResponse(
            405, {"error": "METHOD_NOT_ALLOWED", "message": "no", "details": {"allowed": ["GET"]}}
        ),
        ApiResponse(500, {"error": "INTERNAL_ERROR", "message": "internal error"}),
        ApiResponse(502, "not json at all"),
        ApiResponse(503, None),
    ],
)
def test_raise_for_raises_api_error_for_codes_without_a_typed_exception(
    response: ApiResponse,
) -> None:
    with pytest.raises(ApiError) as raised:
        raise_for(response)
    assert raised.value.status == response.status
    if isinstance(response.body, dict):
        assert raised.value.code == response.body["error"]
        assert raised.value.details == response.body.get("details", {})


def test_raise_for_maps_unauthorized_to_authentication_failed() -> None:
    with pytest.raises(AuthenticationFailed):
        raise_for(ApiResponse(401, {"error": "UNAUTHORIZED", "message": "who are you"}))


# -- registration ------------------------------------------------------------------------


async def noop(req: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
    return ApiResponse(200, None)


@pytest.mark.parametrize(
    ("method", "pattern", "op", "match"),
    [
        ("GET", "/api/things", operation("again"), "clashes"),
        ("GET", "/api/things/{other}", operation("again"), "clashes"),
        ("TRACE", "/api/x", operation("x"), "unsupported method"),
        ("GET", "api/x", operation("x"), "must start"),
        ("GET", "/api/x/", operation("x"), "must start"),
        ("GET", "/api/{a}/{a}", operation("x"), "repeats"),
        ("GET", "/api/x y", operation("x"), "invalid segment"),
        ("GET", "/api/{id", operation("x"), "invalid segment"),
        ("GET", "/api/x", {"operationId": "x"}, "responses"),
        ("GET", "/api/x", {"responses": {"200": {"description": "ok"}}}, "operationId"),
        ("GET", "/api/x", operation("listThings"), "already used"),
    ],
)
def test_route_refuses_bad_registrations(
    method: str, pattern: str, op: dict[str, Any], match: str
) -> None:
    api, _ = echo_api()
    with pytest.raises(ValueError, match=match):
        api.route(method, pattern, noop, operation=op)


def test_add_schemas_refuses_a_conflicting_redefinition() -> None:
    api = Api()
    api.add_schemas({"Thing": {"type": "object"}})
    api.add_schemas({"Thing": {"type": "object"}})  # same definition: fine
    with pytest.raises(ValueError, match="Thing"):
        api.add_schemas({"Thing": {"type": "string"}})


# -- the OpenAPI document ------------------------------------------------------------------


def test_the_openapi_document_lists_every_route_with_its_responses() -> None:
    api, _ = echo_api()
    api.add_schemas({"Thing": {"type": "object"}})
    document = api.openapi()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "trustwire"
    assert document["info"]["version"] == trustwire.__version__
    assert document["servers"] == [{"url": "/"}]
    assert document["components"]["securitySchemes"] == {
        "mutualTLS": {
            "type": "mutualTLS",
            "description": document["components"]["securitySchemes"]["mutualTLS"]["description"],
        }
    }
    assert document["security"] == [{"mutualTLS": []}]
    assert {"Thing", "Error"} <= set(document["components"]["schemas"])
    routes = api.routes()
    assert len(routes) == 7  # the six above and the document itself
    for route in routes:
        documented = document["paths"][route.pattern][route.method.lower()]
        assert documented["operationId"] == route.operation["operationId"]
        assert set(route.operation["responses"]) <= set(documented["responses"])
        assert {"401", "500"} <= set(documented["responses"])
    put = document["paths"]["/api/things/{id}/parts/{key}"]["put"]
    assert [(p["name"], p["in"], p["required"]) for p in put["parameters"]] == [
        ("id", "path", True),
        ("key", "path", True),
    ]
    operations = sum(len(methods) for methods in document["paths"].values())
    assert operations == len(routes)
    json.dumps(document)  # serializable as is


def test_operations_with_a_request_body_document_the_body_errors() -> None:
    api = Api(servers=["https://coordinator.example:8443"])
    api.route(
        "POST",
        "/api/with-body",
        noop,
        operation={**operation("withBody", "201"), "requestBody": {"content": {}}},
    )
    document = api.openapi()
    assert document["servers"] == [{"url": "https://coordinator.example:8443"}]
    responses = document["paths"]["/api/with-body"]["post"]["responses"]
    assert {"201", "400", "401", "413", "415", "500"} == set(responses)
    assert "413" not in document["paths"]["/api/openapi.json"]["get"]["responses"]


def test_the_openapi_document_is_a_copy() -> None:
    api, _ = echo_api()
    api.openapi()["paths"].clear()
    assert "/api/things" in api.openapi()["paths"]


async def test_the_document_is_served_as_a_route() -> None:
    api, _ = echo_api()
    response = await api.handle(request("GET", "/api/openapi.json"))
    assert response.status == 200
    assert response.body == api.openapi()


# -- body and query helpers ----------------------------------------------------------------


def test_request_object_accepts_objects_and_absent_bodies_only() -> None:
    assert request_object(request("POST", "/", body={"a": 1})) == {"a": 1}
    assert request_object(request("POST", "/")) == {}
    with pytest.raises(ValueError, match="required"):
        request_object(request("POST", "/"), allow_empty=False)
    for body in ([1], "x", 3, True):
        with pytest.raises(ValueError, match="JSON object"):
            request_object(request("POST", "/", body=body))


def test_required_and_optional_check_types_precisely() -> None:
    body = {"name": "bob", "count": 3, "flag": True, "ratio": 2, "none": None}
    assert required(body, "name", str) == "bob"
    assert required(body, "count", int) == 3
    assert required(body, "ratio", float) == 2
    assert required(body, "flag", bool) is True
    with pytest.raises(ValueError, match="'flag' must be an integer"):
        required(body, "flag", int)  # JSON true is not a number
    with pytest.raises(ValueError, match="'name' must be an integer or an object"):
        required(body, "name", (int, dict))
    with pytest.raises(ValueError, match="'missing' is required"):
        required(body, "missing", str)
    with pytest.raises(ValueError, match="'none' is required"):
        required(body, "none", str)
    assert optional(body, "missing", str) is None
    assert optional(body, "none", int, 7) == 7
    assert optional(body, "count", int, 7) == 3
    with pytest.raises(ValueError, match="'count' must be a string"):
        optional(body, "count", str)


def test_check_keys_names_the_unknown_ones() -> None:
    check_keys({"a": 1}, ["a", "b"])
    with pytest.raises(
        ValueError, match=r"unknown field\(s\) in the request body: 'timeoutMinute'"
    ):
        check_keys({"timeoutMinute": 5}, ["timeoutMinutes"])


def test_query_int_parses_within_bounds() -> None:
    assert query_int({}, "limit", default=50) == 50
    assert query_int({"limit": ""}, "limit", default=50) == 50
    assert query_int({"limit": "100"}, "limit", minimum=1, maximum=100) == 100
    for text, match in (
        ("0", ">= 1 and <= 100"),
        ("101", ">= 1 and <= 100"),
        ("1.5", "integer"),
        ("ten", "integer"),
        ("1" * 30, "integer"),
    ):
        with pytest.raises(ValueError, match=match):
            query_int({"limit": text}, "limit", minimum=1, maximum=100)
    with pytest.raises(ValueError, match="must be >= 0"):
        query_int({"before": "-1"}, "before", minimum=0)


# -- the coordinator's whole API -------------------------------------------------------------


def coordinator_api() -> Api:
    """The routes the coordinator registers: sessions and shared memory."""
    from trustwire.events import EventStream
    from trustwire.memory.api import register_memory_routes
    from trustwire.memory.service import MemoryService
    from trustwire.memory.store import InMemoryMemoryStore
    from trustwire.policy.engine import PolicyEngine
    from trustwire.policy.model import PolicyConfig
    from trustwire.sessions.api import register_session_routes
    from trustwire.sessions.manager import SessionManager
    from trustwire.sessions.store import MemorySessionStore

    events = EventStream()
    api = Api()
    manager = SessionManager(
        MemorySessionStore(),
        events=events,
        may_talk=lambda initiator, peer, now: True,
        known_agent=lambda did: True,
    )
    register_session_routes(api, manager, clock=lambda: 0.0, resolve_agent=lambda name: None)
    service = MemoryService(
        InMemoryMemoryStore(),
        policy=PolicyEngine(PolicyConfig(rules=())),
        agents=lambda did: None,
        events=events,
    )
    register_memory_routes(api, service)
    return api


def test_every_route_of_the_coordinator_api_is_in_the_document() -> None:
    api = coordinator_api()
    document = api.openapi()
    routes = api.routes()
    assert sum(len(methods) for methods in document["paths"].values()) == len(routes)
    assert {"/api/messaging/sessions", "/api/memory"} <= set(document["paths"])
    operation_ids = [
        operation["operationId"]
        for methods in document["paths"].values()
        for operation in methods.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))
    text = json.dumps(document)
    for route in routes:
        operation = document["paths"][route.pattern][route.method.lower()]
        assert operation["operationId"] == route.operation["operationId"]
        documented = set(operation["responses"])
        assert set(route.operation["responses"]) <= documented
        assert {"401", "500"} <= documented
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= documented
        for code in documented:
            assert code.isdigit() and 200 <= int(code) <= 599
            assert operation["responses"][code]["description"]
        names = set(re.findall(r"\{([A-Za-z_]+)\}", route.pattern))
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == names, route.pattern
    # Every schema reference resolves.
    for name in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text):
        assert name in document["components"]["schemas"], name


def test_the_operator_is_a_role() -> None:
    assert OPERATOR.operator is True
    assert ALICE.operator is False
    assert Caller(did="did:key:z6Mk1", name="x", roles=("operators",)).operator is False


def test_response_for_and_error_body_share_the_error_shape() -> None:
    assert response_for(UnknownSession("gone")) == ApiResponse(
        404, {"error": "SESSION_NOT_FOUND", "message": "gone"}
    )
    assert error_body("X", "y", {}) == {"error": "X", "message": "y"}
    assert error_body("X", "y", {"a": 1}) == {"error": "X", "message": "y", "details": {"a": 1}}
