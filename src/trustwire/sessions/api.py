"""The sessions routes of the coordinator API: the elizaOS Sessions API, adapted to agents.

Registered on a :class:`~trustwire.coordinator.api.Api` by
:func:`register_session_routes`, so they answer both over HTTPS and over the agents' own
coordinator connections. Base path ``/api/messaging/sessions``:

========  ==============================  ===================================================
GET       ``/health``                     counts and uptime
POST      ``/``                           open a session with a peer (the caller initiates)
GET       ``/``                           every session (``operator`` role only)
GET       ``/{id}``                       one session
POST      ``/{id}/renew``                 explicit renewal (422 past the max duration)
PATCH     ``/{id}/timeout``               change the inactivity timeout (400 out of range)
POST      ``/{id}/heartbeat``             record activity (renews with autoRenew)
DELETE    ``/{id}``                       end the session
GET       ``/{id}/messages``              envelope metadata, newest first, with cursors
========  ==============================  ===================================================

Invariants:

- The caller is the authenticated agent; a session is visible to its two participants
  only. Anyone else gets ``404 SESSION_NOT_FOUND``, exactly as for an id that never
  existed (a malformed id included), so a session's existence does not leak. A caller
  with the ``operator`` role acts as the operator on sessions it is not part of.
- An expired session answers ``410 SESSION_EXPIRED`` (``details.expiresAt``) and an
  ended one ``410 SESSION_ENDED`` (``details.endedAt``/``endReason``) on every later
  call, never 404, until it is purged after the retention period.
- Times are epoch milliseconds; message *content* never appears (it is end-to-end
  encrypted), only envelope metadata.
- Request bodies are checked strictly: an unknown field is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from trustwire.coordinator.api import (
    Api,
    ApiError,
    ApiRequest,
    ApiResponse,
    check_keys,
    optional,
    query_int,
    request_object,
)
from trustwire.errors import (
    InvalidSessionConfig,
    SessionEnded,
    SessionExpired,
    UnknownAgent,
)
from trustwire.sessions.manager import SessionManager
from trustwire.sessions.model import (
    CONFIG_KEYS,
    MAX_END_REASON_CHARS,
    MAX_MAX_DURATION_MINUTES,
    MAX_METADATA_BYTES,
    MAX_TIMEOUT_MINUTES,
    MIN_TIMEOUT_MINUTES,
    MIN_WARNING_MINUTES,
    Session,
)

__all__ = ["BASE", "MAX_MESSAGES_PAGE", "register_session_routes"]

BASE: Final = "/api/messaging/sessions"
"""Where the sessions routes live (as in elizaOS)."""

MAX_MESSAGES_PAGE: Final = 100
DEFAULT_MESSAGES_PAGE: Final = 50
_MAX_PEER_CHARS: Final = 256
_MAX_CURSOR: Final = 2**63 - 1
_TAGS: Final = ["sessions"]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class _Routes:
    """The handlers, closed over the manager, the clock and the name lookup."""

    def __init__(
        self,
        manager: SessionManager,
        clock: Callable[[], float],
        resolve_agent: Callable[[str], str | None],
    ) -> None:
        self.manager = manager
        self.clock = clock
        self.resolve_agent = resolve_agent

    # -- helpers --------------------------------------------------------------------------

    def _show(self, session: Session, status: int = 200) -> ApiResponse:
        return ApiResponse(status, session.to_api(self.clock()))

    async def _acting_as(self, request: ApiRequest, session_id: str) -> str | None:
        """The ``caller`` to hand the manager: the caller's DID, or ``None`` (operator
        powers) for an operator that is not a participant of this session."""
        caller = request.caller
        if not caller.operator:
            return caller.did
        session = await self.manager.get(session_id, caller=None)
        return caller.did if session.involves(caller.did) else None

    async def _inactive(self, exc: Exception, session_id: str) -> ApiError:
        """A 410 for an expired or ended session, with the facts elizaOS gives.

        Only called after the manager accepted the caller as a participant (it checks
        participation before activity), so the details reveal nothing new.
        """
        session = await self.manager.get(session_id, caller=None)
        if isinstance(exc, SessionEnded) or session.ended_at is not None:
            return ApiError(
                410,
                "SESSION_ENDED",
                f"session {session_id} has ended",
                {
                    "endedAt": None if session.ended_at is None else _ms(session.ended_at),
                    "endReason": session.end_reason,
                },
            )
        return ApiError(
            410,
            "SESSION_EXPIRED",
            f"session {session_id} has expired",
            {"expiresAt": _ms(session.expires_at)},
        )

    async def _guarded(
        self, session_id: str, operation: Callable[[], Awaitable[Session]]
    ) -> Session:
        """Run ``operation()``; turn an inactive-session error into its detailed 410."""
        try:
            session = await operation()
        except (SessionExpired, SessionEnded) as exc:
            raise await self._inactive(exc, session_id) from None
        return session

    def _peer(self, body: Mapping[str, Any]) -> str:
        given = [key for key in ("peer", "peerId", "agentId") if body.get(key) is not None]
        if len(given) != 1:
            raise ValueError(
                "give the peer as exactly one of 'peer' (name or DID), 'peerId' or 'agentId' (DID)"
            )
        key = given[0]
        value = body[key]
        if not isinstance(value, str) or not value or len(value) > _MAX_PEER_CHARS:
            raise ValueError(f"{key!r} must be a string of 1-{_MAX_PEER_CHARS} characters")
        if value.startswith("did:"):
            return value
        if key != "peer":
            raise ValueError(f"{key!r} must be a DID (use 'peer' for a name)")
        did = self.resolve_agent(value)
        if did is None:
            raise UnknownAgent(f"no enrolled agent named {value!r}")
        return did

    # -- handlers ---------------------------------------------------------------------------

    async def health(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        return ApiResponse(200, await self.manager.health())

    async def create(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        body = request_object(request, allow_empty=False)
        check_keys(body, ("peer", "peerId", "agentId", "metadata", "timeoutConfig"))
        peer = self._peer(body)
        metadata = optional(body, "metadata", dict)
        config = body.get("timeoutConfig")
        if config is not None and not isinstance(config, dict):
            raise InvalidSessionConfig("'timeoutConfig' must be a JSON object")
        session = await self.manager.create(
            request.caller.did, peer, config=config, metadata=metadata
        )
        return self._show(session, 201)

    async def list(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        if not request.caller.operator:
            raise ApiError(403, "FORBIDDEN", "listing every session needs the operator role")
        check_keys(request.query, ("agent", "includeInactive"), where="query")
        include = request.query.get("includeInactive", "false")
        if include not in ("true", "false"):
            raise ValueError("query parameter 'includeInactive' must be true or false")
        did: str | None = None
        agent = request.query.get("agent")
        if agent:
            did = agent if agent.startswith("did:") else self.resolve_agent(agent)
            if did is None:
                raise UnknownAgent(f"no enrolled agent named {agent[:_MAX_PEER_CHARS]!r}")
        every = await self.manager.list(did=did, include_inactive=True)
        now = self.clock()
        stats = {"active": 0, "expired": 0, "ended": 0}
        for session in every:
            stats[session.status(now)] += 1
        shown = [
            session.to_api(now)
            for session in every
            if include == "true" or session.status(now) == "active"
        ]
        return ApiResponse(200, {"sessions": shown, "total": len(shown), "stats": stats})

    async def get(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        session_id = params["id"]
        acting = await self._acting_as(request, session_id)
        session = await self._guarded(
            session_id, lambda: self.manager.get(session_id, caller=acting)
        )
        if session.status(self.clock()) != "active":  # the operator gets it in any state
            raise await self._inactive(
                SessionEnded() if session.ended_at else SessionExpired(), session_id
            )
        return self._show(session)

    async def renew(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        check_keys(request_object(request), ())
        session_id = params["id"]
        acting = await self._acting_as(request, session_id)
        return self._show(
            await self._guarded(session_id, lambda: self.manager.renew(session_id, caller=acting))
        )

    async def timeout(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        body = request_object(request, allow_empty=False)
        check_keys(body, CONFIG_KEYS)
        if "timeoutMinutes" not in body:
            raise InvalidSessionConfig("'timeoutMinutes' is required")
        session_id = params["id"]
        acting = await self._acting_as(request, session_id)
        others = {key: value for key, value in body.items() if key != "timeoutMinutes"}
        if others:
            # Only the timeout changes on a live session; the other keys may be sent back
            # as they are (the whole timeoutConfig of GET), never changed.
            current = await self._guarded(
                session_id, lambda: self.manager.get(session_id, caller=acting)
            )
            shown = current.config.to_json()
            changed = sorted(key for key, value in others.items() if shown[key] != value)
            if changed:
                raise InvalidSessionConfig(
                    f"only timeoutMinutes can be changed on a session; {', '.join(changed)} "
                    "are fixed when it is created"
                )
        return self._show(
            await self._guarded(
                session_id,
                lambda: self.manager.set_timeout(session_id, body["timeoutMinutes"], caller=acting),
            )
        )

    async def heartbeat(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        check_keys(request_object(request), ())
        session_id = params["id"]
        acting = await self._acting_as(request, session_id)
        return self._show(
            await self._guarded(
                session_id, lambda: self.manager.heartbeat(session_id, caller=acting)
            )
        )

    async def end(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        body = request_object(request)
        check_keys(body, ("reason",))
        reason = optional(body, "reason", str, "ended")
        session_id = params["id"]
        acting = await self._acting_as(request, session_id)
        return self._show(
            await self._guarded(
                session_id, lambda: self.manager.end(session_id, caller=acting, reason=reason)
            )
        )

    async def messages(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        check_keys(request.query, ("limit", "before", "after"), where="query")
        limit = query_int(
            request.query,
            "limit",
            default=DEFAULT_MESSAGES_PAGE,
            minimum=1,
            maximum=MAX_MESSAGES_PAGE,
        )
        # Epoch milliseconds, bounded so that the store can hold them (64-bit integers).
        before = query_int(request.query, "before", minimum=0, maximum=_MAX_CURSOR)
        after = query_int(request.query, "after", minimum=0, maximum=_MAX_CURSOR)
        session_id = params["id"]
        acting = await self._acting_as(request, session_id)
        try:
            page = await self.manager.messages(
                session_id,
                caller=acting,
                limit=limit if limit is not None else DEFAULT_MESSAGES_PAGE,
                before=before,
                after=after,
            )
        except (SessionExpired, SessionEnded) as exc:
            raise await self._inactive(exc, session_id) from None
        return ApiResponse(200, page)


# -- the OpenAPI description ----------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(schema)}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_NOT_FOUND: Final = _error("no such session, or the caller is not a participant")
_GONE: Final = _error(
    "the session has expired (SESSION_EXPIRED, details.expiresAt) or ended "
    "(SESSION_ENDED, details.endedAt, details.endReason)"
)
_ID: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "the session id (a UUID)",
    "schema": {"type": "string", "format": "uuid"},
}

SCHEMAS: Final[dict[str, Any]] = {
    "SessionTimeoutConfig": {
        "type": "object",
        "description": (
            "Timeout settings (elizaOS shape). On creation out-of-range values are clamped; "
            "per-session settings override the initiator's defaults in the policy file."
        ),
        "additionalProperties": False,
        "properties": {
            "timeoutMinutes": {
                "type": "integer",
                "minimum": MIN_TIMEOUT_MINUTES,
                "maximum": MAX_TIMEOUT_MINUTES,
                "default": 30,
                "description": "inactivity timeout",
            },
            "autoRenew": {
                "type": "boolean",
                "default": True,
                "description": "activity (messages, heartbeats) renews the session",
            },
            "maxDurationMinutes": {
                "type": "integer",
                "maximum": MAX_MAX_DURATION_MINUTES,
                "default": 720,
                "description": "hard cap, clamped to [timeoutMinutes, 2880]",
            },
            "warningThresholdMinutes": {
                "type": "integer",
                "minimum": MIN_WARNING_MINUTES,
                "default": 5,
                "description": "session.expiring is sent once this close to expiry",
            },
        },
    },
    "Session": {
        "type": "object",
        "required": [
            "id",
            "initiator",
            "peer",
            "createdAt",
            "lastActivity",
            "expiresAt",
            "timeoutConfig",
            "renewalCount",
            "timeRemaining",
            "isNearExpiration",
            "status",
        ],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "initiator": {"type": "string", "description": "DID of the agent that opened it"},
            "peer": {"type": "string", "description": "DID of the other agent"},
            "createdAt": {"type": "integer", "description": "epoch ms"},
            "lastActivity": {"type": "integer", "description": "epoch ms"},
            "expiresAt": {"type": "integer", "description": "epoch ms"},
            "timeoutConfig": _ref("SessionTimeoutConfig"),
            "renewalCount": {"type": "integer", "minimum": 0},
            "timeRemaining": {"type": "integer", "minimum": 0, "description": "ms"},
            "isNearExpiration": {"type": "boolean"},
            "status": {"type": "string", "enum": ["active", "expired", "ended"]},
            "endedAt": {"type": ["integer", "null"], "description": "epoch ms"},
            "endReason": {"type": ["string", "null"]},
            "metadata": {"type": "object"},
        },
    },
    "CreateSessionRequest": {
        "type": "object",
        "description": "Exactly one of peer, peerId, agentId. The caller is the initiator.",
        "additionalProperties": False,
        "properties": {
            "peer": {"type": "string", "description": "the peer's name or DID"},
            "peerId": {"type": "string", "description": "the peer's DID"},
            "agentId": {"type": "string", "description": "alias of peerId (elizaOS)"},
            "metadata": {
                "type": "object",
                "description": f"at most {MAX_METADATA_BYTES} bytes as JSON",
            },
            "timeoutConfig": _ref("SessionTimeoutConfig"),
        },
    },
    "UpdateTimeoutRequest": {
        "type": "object",
        "description": (
            "timeoutMinutes is required and must be within [5, 1440] (not clamped). The "
            "other keys may be sent with their current values, never changed."
        ),
        "required": ["timeoutMinutes"],
        "additionalProperties": False,
        "properties": {
            "timeoutMinutes": {
                "type": "integer",
                "minimum": MIN_TIMEOUT_MINUTES,
                "maximum": MAX_TIMEOUT_MINUTES,
            },
            "autoRenew": {"type": "boolean"},
            "maxDurationMinutes": {"type": "integer"},
            "warningThresholdMinutes": {"type": "integer"},
        },
    },
    "EndSessionRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "reason": {"type": "string", "minLength": 1, "maxLength": MAX_END_REASON_CHARS}
        },
    },
    "SessionList": {
        "type": "object",
        "required": ["sessions", "total", "stats"],
        "properties": {
            "sessions": {"type": "array", "items": _ref("Session")},
            "total": {"type": "integer", "description": "number of sessions listed"},
            "stats": {
                "type": "object",
                "description": "counts over every retained session (of the agent, if filtered)",
                "properties": {
                    "active": {"type": "integer"},
                    "expired": {"type": "integer"},
                    "ended": {"type": "integer"},
                },
            },
        },
    },
    "SessionMessage": {
        "type": "object",
        "description": "Envelope metadata of one message; the content is end-to-end encrypted.",
        "properties": {
            "id": {"type": "string", "description": "message id (hex)"},
            "sessionId": {"type": "string", "format": "uuid"},
            "sender": {"type": "string"},
            "recipient": {"type": "string"},
            "type": {"type": "string"},
            "size": {"type": "integer", "description": "bytes on the wire"},
            "createdAt": {"type": "integer", "description": "epoch ms"},
        },
    },
    "SessionMessagePage": {
        "type": "object",
        "required": ["messages", "hasMore", "cursors"],
        "properties": {
            "sessionId": {"type": "string", "format": "uuid"},
            "messages": {"type": "array", "items": _ref("SessionMessage")},
            "hasMore": {"type": "boolean"},
            "cursors": {
                "type": "object",
                "description": "pass as before= (older) or after= (newer) for the next page",
                "properties": {
                    "before": {"type": ["integer", "null"]},
                    "after": {"type": ["integer", "null"]},
                },
            },
        },
    },
    "SessionHealth": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "examples": ["healthy"]},
            "activeSessions": {"type": "integer"},
            "expiringSoon": {"type": "integer"},
            "uptime": {"type": "number", "description": "seconds"},
            "timestamp": {"type": "integer", "description": "epoch ms"},
        },
    },
}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _optional_body(schema: str) -> dict[str, Any]:
    return {"required": False, "content": {"application/json": {"schema": _ref(schema)}}}


def _query(name: str, description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": dict(schema),
    }


_SESSION: Final = _json(_ref("Session"), "the session")

OPERATIONS: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("GET", f"{BASE}/health"): {
        "operationId": "getSessionsHealth",
        "summary": "Session service health",
        "responses": {"200": _json(_ref("SessionHealth"), "counts and uptime")},
    },
    ("POST", BASE): {
        "operationId": "createSession",
        "summary": "Open a session with a peer; the caller is the initiator",
        "requestBody": _body("CreateSessionRequest"),
        "responses": {
            "201": _json(_ref("Session"), "the new session"),
            "400": _error("invalid body, metadata or timeoutConfig (INVALID_TIMEOUT_CONFIG)"),
            "403": _error("the peer is unknown or revoked, or policy forbids the two to talk"),
            "404": _error("no enrolled agent has that name (AGENT_NOT_FOUND)"),
        },
    },
    ("GET", BASE): {
        "operationId": "listSessions",
        "summary": "Every session (operator role only)",
        "parameters": [
            _query("agent", "only sessions of this agent (name or DID)", {"type": "string"}),
            _query(
                "includeInactive",
                "also list expired and ended sessions",
                {"type": "boolean", "default": False},
            ),
        ],
        "responses": {
            "200": _json(_ref("SessionList"), "the sessions"),
            "400": _error("invalid query"),
            "403": _error("the caller lacks the operator role"),
            "404": _error("no enrolled agent has that name (AGENT_NOT_FOUND)"),
        },
    },
    ("GET", f"{BASE}/{{id}}"): {
        "operationId": "getSession",
        "summary": "One session",
        "parameters": [_ID],
        "responses": {"200": _SESSION, "404": _NOT_FOUND, "410": _GONE},
    },
    ("POST", f"{BASE}/{{id}}/renew"): {
        "operationId": "renewSession",
        "summary": "Renew explicitly (works with autoRenew off)",
        "parameters": [_ID],
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {"type": "object", "additionalProperties": False}}
            },
        },
        "responses": {
            "200": _SESSION,
            "400": _error("a body with fields"),
            "404": _NOT_FOUND,
            "410": _GONE,
            "422": _error("the session reached its maximum duration (SESSION_RENEWAL_FAILED)"),
        },
    },
    ("PATCH", f"{BASE}/{{id}}/timeout"): {
        "operationId": "updateSessionTimeout",
        "summary": "Change the inactivity timeout; the expiry is recomputed",
        "parameters": [_ID],
        "requestBody": _body("UpdateTimeoutRequest"),
        "responses": {
            "200": _SESSION,
            "400": _error("timeoutMinutes missing or outside [5, 1440] (INVALID_TIMEOUT_CONFIG)"),
            "404": _NOT_FOUND,
            "410": _GONE,
        },
    },
    ("POST", f"{BASE}/{{id}}/heartbeat"): {
        "operationId": "sessionHeartbeat",
        "summary": "Record activity; renews when autoRenew is on",
        "parameters": [_ID],
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {"type": "object", "additionalProperties": False}}
            },
        },
        "responses": {
            "200": _SESSION,
            "400": _error("a body with fields"),
            "404": _NOT_FOUND,
            "410": _GONE,
        },
    },
    ("DELETE", f"{BASE}/{{id}}"): {
        "operationId": "endSession",
        "summary": "End the session (both participants are told)",
        "parameters": [_ID],
        "requestBody": _optional_body("EndSessionRequest"),
        "responses": {
            "200": _json(_ref("Session"), "the ended session"),
            "400": _error("invalid reason"),
            "404": _NOT_FOUND,
            "410": _GONE,
        },
    },
    ("GET", f"{BASE}/{{id}}/messages"): {
        "operationId": "listSessionMessages",
        "summary": "Envelope metadata of the session's messages, newest first",
        "parameters": [
            _ID,
            _query(
                "limit",
                "page size",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_MESSAGES_PAGE,
                    "default": DEFAULT_MESSAGES_PAGE,
                },
            ),
            _query(
                "before",
                "only messages older than this (epoch ms)",
                {"type": "integer", "minimum": 0, "maximum": _MAX_CURSOR},
            ),
            _query(
                "after",
                "only messages newer than this (epoch ms)",
                {"type": "integer", "minimum": 0, "maximum": _MAX_CURSOR},
            ),
        ],
        "responses": {
            "200": _json(_ref("SessionMessagePage"), "a page of message metadata"),
            "400": _error("limit outside [1, 100], or a cursor that is not epoch ms"),
            "404": _NOT_FOUND,
            "410": _GONE,
        },
    },
}


def register_session_routes(
    api: Api,
    manager: SessionManager,
    *,
    clock: Callable[[], float],
    resolve_agent: Callable[[str], str | None],
) -> None:
    """Register the sessions routes (see the module docstring) and their schemas on ``api``.

    ``clock`` must be the manager's clock (epoch seconds; it dates what the routes
    show); ``resolve_agent`` maps an agent name to its DID (``None`` for no such
    enrolled agent).
    """
    routes = _Routes(manager, clock, resolve_agent)
    api.add_schemas(SCHEMAS)
    handlers = {
        ("GET", f"{BASE}/health"): routes.health,
        ("POST", BASE): routes.create,
        ("GET", BASE): routes.list,
        ("GET", f"{BASE}/{{id}}"): routes.get,
        ("POST", f"{BASE}/{{id}}/renew"): routes.renew,
        ("PATCH", f"{BASE}/{{id}}/timeout"): routes.timeout,
        ("POST", f"{BASE}/{{id}}/heartbeat"): routes.heartbeat,
        ("DELETE", f"{BASE}/{{id}}"): routes.end,
        ("GET", f"{BASE}/{{id}}/messages"): routes.messages,
    }
    for (method, pattern), handler in handlers.items():
        operation = {**OPERATIONS[(method, pattern)], "tags": _TAGS}
        api.route(method, pattern, handler, operation=operation)
