"""The coordinator's request API, independent of the transport that carries it.

One :class:`Api` holds every route (sessions, shared memory, ...) with its OpenAPI 3.1
operation object. Two transports feed it :class:`ApiRequest`\\ s: the HTTPS server
(:mod:`trustwire.coordinator.https`, mutual TLS) and the agents' own coordinator
connections (``API_REQUEST``/``API_RESPONSE`` control frames). Both authenticate the
caller first; a handler only ever sees an authenticated :class:`Caller`.

Invariants:

- :meth:`Api.handle` never raises (except for task cancellation): every outcome is an
  :class:`ApiResponse`. An error body is always ``{"error": CODE, "message": str}``
  plus ``"details"`` when there are any; exceptions are mapped by class (see
  ``_ERRORS``), anything unexpected becomes a generic ``500 INTERNAL_ERROR`` whose
  cause goes to the log only, never into the response.
- Routing is exact: method and path pattern, ``{name}`` matching exactly one path
  segment. Paths arrive percent-encoded as on the wire; each segment is
  percent-decoded (strict UTF-8) and may hold at most :data:`MAX_SEGMENT_CHARS`
  characters, so an encoded ``/`` (``%2F``) stays inside its parameter. An unknown
  path is ``404 NOT_FOUND``; a known path with another method ``405
  METHOD_NOT_ALLOWED`` (``details.allowed`` lists the methods).
- The OpenAPI document is generated from the registered routes, so it cannot list a
  route that does not exist nor miss one that does; the transport-level answers every
  route can give (``401``, ``500``, and ``400``/``413``/``415`` for request bodies) are
  added to each operation.
- :func:`raise_for` is the inverse of the error mapping: the SDK turns an error
  response back into the same typed exception the coordinator raised.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar, overload
from urllib.parse import unquote

import trustwire
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
    SecurityRejected,
    SegmentRejected,
    SessionEnded,
    SessionExpired,
    SessionRenewalFailed,
    TrustwireError,
    UnknownAgent,
    UnknownSession,
    VersionConflict,
)

__all__ = [
    "MAX_SEGMENT_CHARS",
    "OPENAPI_PATH",
    "Api",
    "ApiError",
    "ApiRequest",
    "ApiResponse",
    "Caller",
    "Handler",
    "Route",
    "check_keys",
    "error_body",
    "optional",
    "query_int",
    "raise_for",
    "request_object",
    "required",
    "response_for",
]

log = logging.getLogger("trustwire.coordinator.api")

#: Longest percent-decoded path segment the router accepts.
MAX_SEGMENT_CHARS: Final = 512
#: Longest exception message copied into a 400 body.
_MAX_MESSAGE_CHARS: Final = 500
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
OPENAPI_PATH: Final = "/api/openapi.json"

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LITERAL = re.compile(r"[A-Za-z0-9._~-]+")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the agent named by the client certificate or the connection."""

    did: str
    name: str
    roles: tuple[str, ...]

    @property
    def operator(self) -> bool:
        """Whether the caller holds the ``operator`` role (deployment-wide views)."""
        return "operator" in self.roles


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One authenticated request.

    ``path`` is the request path as sent (percent-encoded, no query string); ``query``
    the decoded query parameters; ``body`` the parsed JSON body, or ``None``.
    """

    caller: Caller
    method: str
    path: str
    query: Mapping[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A status code and a JSON-serializable body."""

    status: int
    body: Any


class ApiError(TrustwireError):
    """An error answer with an exact status, code and details; raise it from handlers.

    :func:`raise_for` raises it too, for codes no typed exception stands for.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"an error status must be 4xx or 5xx, not {status}")
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


Handler = Callable[[ApiRequest, Mapping[str, str]], Awaitable[ApiResponse]]
"""A route handler: the request and its percent-decoded path parameters."""


@dataclass(frozen=True, slots=True)
class Route:
    """One registered route (see :meth:`Api.routes`)."""

    method: str
    pattern: str
    operation: Mapping[str, Any]
    handler: Handler


@dataclass(frozen=True, slots=True)
class _Compiled:
    route: Route
    parts: tuple[tuple[bool, str], ...]  # (is_parameter, literal-or-name)


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of every error answer."""
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = dict(details)
    return body


def _error(
    status: int, code: str, message: str, details: Mapping[str, Any] | None = None
) -> ApiResponse:
    return ApiResponse(status, error_body(code, message, details))


# -- the exception mapping -------------------------------------------------------------------

#: exception class -> (status, code, fixed message or None to use str(exc)). Looked up
#: along the exception's MRO, so subclasses map like their nearest listed base.
_ERRORS: Final[dict[type[BaseException], tuple[int, str, str | None]]] = {
    UnknownSession: (404, "SESSION_NOT_FOUND", None),
    SessionExpired: (410, "SESSION_EXPIRED", None),
    SessionEnded: (410, "SESSION_ENDED", None),
    SessionRenewalFailed: (422, "SESSION_RENEWAL_FAILED", None),
    InvalidSessionConfig: (400, "INVALID_TIMEOUT_CONFIG", None),
    MemoryNotFound: (404, "MEMORY_NOT_FOUND", None),
    MemoryExpired: (410, "MEMORY_EXPIRED", None),
    # Deliberately generic: which check refused (no grant, level, policy) stays in the
    # audit trail.
    MemoryAccessDenied: (403, "FORBIDDEN", "access denied"),
    MemoryQuotaExceeded: (413, "QUOTA_EXCEEDED", None),
    VersionConflict: (409, "VERSION_CONFLICT", None),
    SegmentRejected: (400, "SEGMENT_REJECTED", None),
    UnknownAgent: (404, "AGENT_NOT_FOUND", None),
    InvalidDid: (400, "VALIDATION_ERROR", None),
    RateLimited: (429, "RATE_LIMITED", "rate limit exceeded"),
    PolicyDenied: (403, "FORBIDDEN", "denied by policy"),
    # Every other security refusal is opaque, as on the agent connection.
    SecurityRejected: (403, "FORBIDDEN", "forbidden"),
    ValueError: (400, "VALIDATION_ERROR", None),
    TypeError: (400, "VALIDATION_ERROR", None),
}


def _epoch_ms(value: Any) -> int | None:
    """An epoch-milliseconds attribute (an int), or ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _details_of(exc: BaseException) -> dict[str, Any]:
    """Structured details an exception carries (attributes, never its arguments)."""
    details: dict[str, Any] = {}
    given = getattr(exc, "details", None)
    if isinstance(given, Mapping):
        details.update({str(key): value for key, value in given.items()})
    if isinstance(exc, SessionExpired) and "expiresAt" not in details:
        expires_at = _epoch_ms(getattr(exc, "expires_at", None))
        if expires_at is not None:
            details["expiresAt"] = expires_at
    if isinstance(exc, VersionConflict):
        for attribute, key in (
            ("current_version", "currentVersion"),
            ("current_epoch", "currentEpoch"),
        ):
            value = getattr(exc, attribute, None)
            if isinstance(value, int) and key not in details:
                details[key] = value
    if isinstance(exc, MemoryAccessDenied):
        details["resource"] = "memory"
    return details


def response_for(exc: Exception) -> ApiResponse:
    """The error answer for ``exc`` (the mapping :meth:`Api.handle` applies)."""
    if isinstance(exc, ApiError):
        return _error(exc.status, exc.code, exc.message, exc.details)
    for klass in type(exc).__mro__:
        entry = _ERRORS.get(klass)
        if entry is None:
            continue
        status, code, fixed = entry
        if fixed is not None:
            message = fixed
            details = {"resource": "memory"} if isinstance(exc, MemoryAccessDenied) else {}
        else:
            message = str(exc)[:_MAX_MESSAGE_CHARS] or code.replace("_", " ").lower()
            details = _details_of(exc)
        return _error(status, code, message, details)
    log.error("API handler failed: %s", type(exc).__name__, exc_info=exc)
    return _error(500, "INTERNAL_ERROR", "internal error")


#: error code -> exception class, for :func:`raise_for`.
_EXCEPTIONS: Final[dict[str, type[Exception]]] = {
    "SESSION_NOT_FOUND": UnknownSession,
    "SESSION_EXPIRED": SessionExpired,
    "SESSION_ENDED": SessionEnded,
    "SESSION_RENEWAL_FAILED": SessionRenewalFailed,
    "INVALID_TIMEOUT_CONFIG": InvalidSessionConfig,
    "MEMORY_NOT_FOUND": MemoryNotFound,
    "MEMORY_EXPIRED": MemoryExpired,
    "QUOTA_EXCEEDED": MemoryQuotaExceeded,
    "VERSION_CONFLICT": VersionConflict,
    "SEGMENT_REJECTED": SegmentRejected,
    "AGENT_NOT_FOUND": UnknownAgent,
    "RATE_LIMITED": RateLimited,
    "UNAUTHORIZED": AuthenticationFailed,
    "VALIDATION_ERROR": ValueError,
    "INVALID_JSON": ValueError,
}


def raise_for(response: ApiResponse) -> None:
    """Raise the typed exception an error ``response`` stands for; return on success.

    The inverse of :meth:`Api.handle`'s mapping: ``404 SESSION_NOT_FOUND`` raises
    :class:`~trustwire.errors.UnknownSession`, ``403 FORBIDDEN`` raises
    :class:`~trustwire.errors.MemoryAccessDenied` when ``details.resource`` is
    ``"memory"`` and :class:`~trustwire.errors.PolicyDenied` otherwise, and so on;
    codes with no typed exception (``NOT_FOUND``, ``METHOD_NOT_ALLOWED``,
    ``INTERNAL_ERROR``, ...) raise :class:`ApiError`. Every raised exception carries
    ``status``, ``code`` and ``details`` attributes; :class:`SessionExpired` also
    ``expires_at`` (epoch milliseconds, as the sessions model sets it) and
    :class:`VersionConflict` ``current_version`` / ``current_epoch`` when the response
    had them.
    """
    if response.status < 400:
        return
    body = response.body if isinstance(response.body, Mapping) else {}
    code = body.get("error")
    code = code if isinstance(code, str) else "HTTP_ERROR"
    message = body.get("message")
    message = message if isinstance(message, str) and message else f"request failed ({code})"
    raw_details = body.get("details")
    details = dict(raw_details) if isinstance(raw_details, Mapping) else {}
    klass: type[Exception] | None
    if code == "FORBIDDEN":
        klass = MemoryAccessDenied if details.get("resource") == "memory" else PolicyDenied
    else:
        klass = _EXCEPTIONS.get(code)
    exc: Exception
    if klass is None:
        exc = ApiError(
            response.status if 400 <= response.status <= 599 else 500, code, message, details
        )
    else:
        exc = klass(message)
        # Structured attributes, as ApiError has them (the classes define no fields).
        setattr(exc, "status", response.status)  # noqa: B010
        setattr(exc, "code", code)  # noqa: B010
        setattr(exc, "details", details)  # noqa: B010
        expires_at = details.get("expiresAt")
        if isinstance(exc, SessionExpired) and _epoch_ms(expires_at) is not None:
            setattr(exc, "expires_at", expires_at)  # noqa: B010
        if isinstance(exc, VersionConflict):
            for key, attribute in (
                ("currentVersion", "current_version"),
                ("currentEpoch", "current_epoch"),
            ):
                if _is_int(details.get(key)):
                    setattr(exc, attribute, details[key])
    raise exc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- reading request bodies and queries ------------------------------------------------------

_T = TypeVar("_T")


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        dict: "an object",
        list: "an array",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _matches(value: object, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds  # a JSON true is no integer
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


def request_object(request: ApiRequest, *, allow_empty: bool = True) -> Mapping[str, Any]:
    """The request body as a JSON object; an absent body is ``{}`` when ``allow_empty``.

    Raises :class:`ValueError` (``400 VALIDATION_ERROR``) for any other JSON value.
    """
    if request.body is None:
        if allow_empty:
            return {}
        raise ValueError("a JSON object request body is required")
    if not isinstance(request.body, dict):
        raise ValueError("the request body must be a JSON object")
    return request.body


def check_keys(
    body: Mapping[str, Any], allowed: Iterable[str], *, where: str = "request body"
) -> None:
    """Refuse keys outside ``allowed`` (a typo must not be silently ignored)."""
    allowed_set = set(allowed)
    unknown = sorted(str(key) for key in body if key not in allowed_set)
    if unknown:
        names = ", ".join(repr(key[:64]) for key in unknown[:5])
        raise ValueError(
            f"unknown field(s) in the {where}: {names}; expected {', '.join(sorted(allowed_set))}"
        )


@overload
def required(body: Mapping[str, Any], name: str, kind: type[_T]) -> _T: ...
@overload
def required(body: Mapping[str, Any], name: str, kind: tuple[type, ...]) -> Any: ...
def required(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``body[name]``, which must be present and of ``kind`` (``ValueError`` otherwise).

    JSON booleans never pass for numbers; an integer passes for ``float``.
    """
    if name not in body or body[name] is None:
        raise ValueError(f"{name!r} is required")
    value = body[name]
    if not _matches(value, kind):
        raise ValueError(f"{name!r} must be {_type_name(kind)}")
    return value


@overload
def optional(body: Mapping[str, Any], name: str, kind: type[_T], default: _T) -> _T: ...
@overload
def optional(
    body: Mapping[str, Any], name: str, kind: type[_T], default: None = None
) -> _T | None: ...
def optional(
    body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None
) -> Any:
    """``body[name]`` if present and not null (checked as by :func:`required`), else ``default``."""
    if name not in body or body[name] is None:
        return default
    return required(body, name, kind)


def query_int(
    query: Mapping[str, str],
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer query parameter within [minimum, maximum], or ``default`` when absent."""
    text = query.get(name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,19}", text):
        raise ValueError(f"query parameter {name!r} must be an integer")
    value = int(text)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "" if minimum is None else f" >= {minimum}"
        high = "" if maximum is None else f" <= {maximum}"
        joined = " and".join(part for part in (low, high) if part)
        raise ValueError(f"query parameter {name!r} must be{joined}")
    return value


# -- the router ---------------------------------------------------------------------------


def _compile(pattern: str) -> tuple[tuple[bool, str], ...]:
    if not pattern.startswith("/") or pattern == "/" or pattern.endswith("/"):
        raise ValueError(f"route pattern {pattern!r} must start with '/' and not end with one")
    parts: list[tuple[bool, str]] = []
    names: set[str] = set()
    for segment in pattern[1:].split("/"):
        parameter = _PARAM.fullmatch(segment)
        if parameter is not None:
            name = parameter.group(1)
            if name in names:
                raise ValueError(f"route pattern {pattern!r} repeats the parameter {name!r}")
            names.add(name)
            parts.append((True, name))
        elif _LITERAL.fullmatch(segment):
            parts.append((False, segment))
        else:
            raise ValueError(f"route pattern {pattern!r} has an invalid segment {segment!r}")
    return tuple(parts)


def _split_path(path: str) -> list[str] | None:
    """Percent-decoded segments of ``path``; ``None`` if it is not a routable path."""
    if not path.startswith("/"):
        return None
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]  # "/api/messaging/sessions/" is the collection, as in elizaOS
    segments: list[str] = []
    for raw in path[1:].split("/"):
        try:
            segment = unquote(raw, errors="strict")
        except UnicodeDecodeError as exc:
            raise ValueError("the request path is not valid percent-encoded UTF-8") from exc
        if len(segment) > MAX_SEGMENT_CHARS:
            raise ValueError(f"a path segment is longer than {MAX_SEGMENT_CHARS} characters")
        segments.append(segment)
    return segments


def _specificity(compiled: _Compiled) -> tuple[bool, ...]:
    return tuple(is_parameter for is_parameter, _ in compiled.parts)


def _match(parts: tuple[tuple[bool, str], ...], segments: list[str]) -> dict[str, str] | None:
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for (is_parameter, text), segment in zip(parts, segments, strict=True):
        if is_parameter:
            if not segment:
                return None
            params[text] = segment
        elif text != segment:
            return None
    return params


_ERROR_REF: Final = {"$ref": "#/components/schemas/Error"}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


_COMMON_RESPONSES: Final = {
    "401": "no client certificate, or not an enrolled, unrevoked agent",
    "500": "internal error (the cause is logged, never returned)",
}
_RATE_LIMITED_RESPONSE: Final = (
    "429",
    "the caller's rate limit is exhausted (the policy's rate_limits, shared with its messages)",
)
_BODY_RESPONSES: Final = {
    "400": "malformed JSON or invalid request",
    "413": "request body over the size limit",
    "415": "request body is not application/json",
}

_BASE_SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "description": "Every error answer.",
        "required": ["error", "message"],
        "properties": {
            "error": {
                "type": "string",
                "description": "machine-readable code",
                "examples": ["SESSION_NOT_FOUND"],
            },
            "message": {"type": "string", "description": "human-readable explanation"},
            "details": {"type": "object", "description": "structured facts (e.g. expiresAt)"},
        },
    },
}


class Api:
    """The route table behind both transports, and its OpenAPI document.

    ``servers`` are the base URLs the document advertises (``"/"`` when none: relative
    to the document's own location). ``rate_limited``: the transports answer ``429
    RATE_LIMITED`` once the caller's rate limit is exhausted, so every operation
    documents it.
    """

    def __init__(self, *, servers: Iterable[str] = (), rate_limited: bool = False) -> None:
        self._rate_limited = rate_limited
        self._routes: list[_Compiled] = []
        self._schemas: dict[str, Any] = copy.deepcopy(_BASE_SCHEMAS)
        self._servers = tuple(servers)
        self._operation_ids: set[str] = set()
        self.route(
            "GET",
            OPENAPI_PATH,
            self._serve_openapi,
            operation={
                "operationId": "getOpenApi",
                "summary": "This OpenAPI document",
                "tags": ["meta"],
                "responses": {
                    "200": {
                        "description": "the OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            },
        )

    # -- registration ----------------------------------------------------------------------

    def route(
        self, method: str, pattern: str, handler: Handler, *, operation: Mapping[str, Any]
    ) -> None:
        """Register ``handler`` for ``method`` on ``pattern`` (``{name}`` = one segment).

        ``operation`` is the OpenAPI 3.1 operation object; it must document its
        ``responses`` and carry a unique ``operationId``. Raises :class:`ValueError` for
        a duplicate route, a malformed pattern or operation.
        """
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unsupported method {method!r}")
        parts = _compile(pattern)
        shape = tuple((is_parameter, "" if is_parameter else text) for is_parameter, text in parts)
        for existing in self._routes:
            other = tuple((p, "" if p else t) for p, t in existing.parts)
            if existing.route.method == method and other == shape:
                raise ValueError(
                    f"{method} {pattern} clashes with {method} {existing.route.pattern}"
                )
        responses = operation.get("responses")
        if not isinstance(responses, Mapping) or not responses:
            raise ValueError(f"{method} {pattern}: the operation must document its responses")
        operation_id = operation.get("operationId")
        if not isinstance(operation_id, str) or not operation_id:
            raise ValueError(f"{method} {pattern}: the operation needs an operationId")
        if operation_id in self._operation_ids:
            raise ValueError(f"{method} {pattern}: operationId {operation_id!r} is already used")
        self._operation_ids.add(operation_id)
        self._routes.append(
            _Compiled(Route(method, pattern, copy.deepcopy(dict(operation)), handler), parts)
        )

    def add_schemas(self, schemas: Mapping[str, Any]) -> None:
        """Add named JSON schemas to ``components/schemas`` (a name may not change)."""
        for name, schema in schemas.items():
            if name in self._schemas and self._schemas[name] != schema:
                raise ValueError(f"schema {name!r} is already defined differently")
            self._schemas[name] = copy.deepcopy(schema)

    def routes(self) -> tuple[Route, ...]:
        """Every registered route, in registration order."""
        return tuple(compiled.route for compiled in self._routes)

    # -- dispatch --------------------------------------------------------------------------

    async def handle(self, request: ApiRequest) -> ApiResponse:
        """Route ``request`` to its handler; every failure becomes an error response."""
        try:
            segments = _split_path(request.path)
        except ValueError as exc:
            return _error(400, "VALIDATION_ERROR", str(exc))
        if segments is None:
            return _error(404, "NOT_FOUND", "no such route")
        allowed: set[str] = set()
        best: tuple[_Compiled, dict[str, str]] | None = None
        method = request.method.upper()
        for compiled in self._routes:
            params = _match(compiled.parts, segments)
            if params is None:
                continue
            if compiled.route.method != method:
                allowed.add(compiled.route.method)
            elif best is None or _specificity(compiled) < _specificity(best[0]):
                # A literal segment beats a parameter: ".../sessions/health" is not a session id.
                best = (compiled, params)
        if best is not None:
            compiled, params = best
            try:
                response = await compiled.route.handler(request, params)
            except Exception as exc:
                return response_for(exc)
            if not isinstance(response, ApiResponse):
                log.error(
                    "API handler for %s %s returned %s",
                    compiled.route.method,
                    compiled.route.pattern,
                    type(response).__name__,
                )
                return _error(500, "INTERNAL_ERROR", "internal error")
            return response
        if allowed:
            methods = sorted(allowed)
            return _error(
                405,
                "METHOD_NOT_ALLOWED",
                f"method {request.method[:16]} not allowed here",
                {"allowed": methods},
            )
        return _error(404, "NOT_FOUND", "no such route")

    async def _serve_openapi(self, request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        return ApiResponse(200, self.openapi())

    # -- the document ----------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document for every registered route (a fresh copy)."""
        paths: dict[str, dict[str, Any]] = {}
        for compiled in self._routes:
            route = compiled.route
            operation = copy.deepcopy(dict(route.operation))
            declared = {
                (parameter.get("in"), parameter.get("name"))
                for parameter in operation.get("parameters", [])
                if isinstance(parameter, Mapping)
            }
            parameters = list(operation.get("parameters", []))
            for is_parameter, name in compiled.parts:
                if is_parameter and ("path", name) not in declared:
                    parameters.append(
                        {
                            "name": name,
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "maxLength": MAX_SEGMENT_CHARS},
                        }
                    )
            if parameters:
                operation["parameters"] = parameters
            responses = dict(operation["responses"])
            extra = dict(_COMMON_RESPONSES)
            if self._rate_limited:
                extra[_RATE_LIMITED_RESPONSE[0]] = _RATE_LIMITED_RESPONSE[1]
            if "requestBody" in operation:
                extra.update(_BODY_RESPONSES)
            for code, description in extra.items():
                responses.setdefault(code, _error_response(description))
            operation["responses"] = dict(sorted(responses.items()))
            paths.setdefault(route.pattern, {})[route.method.lower()] = operation
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "trustwire",
                "version": trustwire.__version__,
                "description": (
                    "The trustwire coordinator API. Every request is authenticated by its TLS "
                    "client certificate (issued by the trust domain's CA, naming an enrolled, "
                    "unrevoked agent); times are epoch milliseconds."
                ),
            },
            "servers": [{"url": url} for url in self._servers] or [{"url": "/"}],
            "security": [{"mutualTLS": []}],
            "paths": paths,
            "components": {
                "schemas": copy.deepcopy(self._schemas),
                "securitySchemes": {
                    "mutualTLS": {
                        "type": "mutualTLS",
                        "description": (
                            "TLS 1.3 client certificate issued by the domain CA; "
                            "its URI SAN is the agent's DID."
                        ),
                    }
                },
            },
        }
