"""The shared-memory routes of the coordinator API (``/api/memory/...``).

:func:`register_memory_routes` puts every route, with its OpenAPI operation and the
JSON schemas it refers to, on an :class:`~trustwire.coordinator.api.Api`. Handlers are
thin: parse the untrusted body with :mod:`trustwire.memory.model`'s strict parsers,
call :class:`~trustwire.memory.service.MemoryService` as ``request.caller.did``, and shape
the answer. Errors are typed exceptions that the Api maps to status codes (400
validation, 403 access, 404 unknown memory or segment, 409 version or epoch conflict,
410 expired memory, 413 quota).

Segment keys travel as one path segment, percent-encoded (a ``/`` in a key is ``%2F``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from trustwire.coordinator.api import Api, ApiRequest, ApiResponse, query_int
from trustwire.identity.did import MAX_DID_LENGTH
from trustwire.memory.model import (
    ENC_SIZE,
    HASH_SIZE,
    MAX_CIPHERTEXT_SIZE,
    MAX_KEY_LENGTH,
    MAX_TYPE_LENGTH,
    MAX_WRAPPED_KEYS,
    NONCE_SIZE,
    SIGNATURE_SIZE,
    WRAPPED_KEY_CT_SIZE,
    check_segment_key,
    parse_create_request,
    parse_grant_request,
    parse_put_request,
    parse_revoke_request,
)
from trustwire.memory.service import MemoryService

__all__ = ["MEMORY_SCHEMAS", "register_memory_routes"]

_TAG: Final = "memory"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _b64(size: int, *, exact: bool = True) -> dict[str, Any]:
    length = 4 * ((size + 2) // 3)
    schema: dict[str, Any] = {
        "type": "string",
        "contentEncoding": "base64",
        "maxLength": length,
        "description": f"standard base64 of {'exactly' if exact else 'at most'} {size} bytes",
    }
    if exact:
        schema["minLength"] = length
    return schema


_DID: Final = {"type": "string", "maxLength": MAX_DID_LENGTH, "description": "did:key (Ed25519)"}
_MS: Final = {"type": "integer", "minimum": 1, "description": "epoch milliseconds"}
_OPTIONAL_MS: Final = {"type": ["integer", "null"], "minimum": 1, "description": "epoch ms"}
_LEVEL: Final = {"type": "string", "enum": ["read", "write", "admin"]}

#: Segments per listing page: a page must fit one in-band API frame (255 KiB) whatever
#: the keys (at most 256 characters each).
_PAGE: Final = 200
_MAX_PAGE: Final = 500

_ID_FORMAT: Final = (
    "`m1-` and 64 lower-case hex digits (a nonce and a tag that binds the owner's DID, "
    "docs/MEMORY.md), or a canonical lower-case UUID"
)

MEMORY_SCHEMAS: Final[Mapping[str, Any]] = {
    "MemoryGrant": {
        "type": "object",
        "required": ["agent", "level", "expiresAt", "grantedBy"],
        "properties": {
            "agent": _DID,
            "level": _LEVEL,
            "expiresAt": _OPTIONAL_MS,
            "grantedBy": _DID,
        },
    },
    "Memory": {
        "type": "object",
        "description": "A shared memory's metadata (the owner holds implicit admin).",
        "required": [
            "id",
            "owner",
            "type",
            "createdAt",
            "expiresAt",
            "epoch",
            "quotas",
            "grants",
            "usage",
        ],
        "properties": {
            "id": {"type": "string", "maxLength": 67, "description": _ID_FORMAT},
            "owner": _DID,
            "type": {"type": "string", "minLength": 1, "maxLength": MAX_TYPE_LENGTH},
            "createdAt": _MS,
            "expiresAt": _OPTIONAL_MS,
            "epoch": {"type": "integer", "minimum": 0, "description": "current data-key epoch"},
            "quotas": {
                "type": "object",
                "required": ["maxBytes", "maxSegments"],
                "properties": {
                    "maxBytes": {"type": "integer", "minimum": 1},
                    "maxSegments": {"type": "integer", "minimum": 1},
                },
            },
            "grants": {"type": "array", "items": _ref("MemoryGrant")},
            "usage": {
                "type": "object",
                "required": ["bytes", "segments"],
                "properties": {
                    "bytes": {"type": "integer", "minimum": 0},
                    "segments": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
    "WrappedKey": {
        "type": "object",
        "description": (
            "The data key of one epoch, HPKE-sealed (DHKEM(X25519, HKDF-SHA256), "
            "HKDF-SHA256, AES-256-GCM) to the agent's X25519 agreement key."
        ),
        "required": ["agent", "epoch", "enc", "ct"],
        "additionalProperties": False,
        "properties": {
            "agent": _DID,
            "epoch": {"type": "integer", "minimum": 0},
            "enc": _b64(ENC_SIZE),
            "ct": _b64(WRAPPED_KEY_CT_SIZE),
        },
    },
    "Segment": {
        "type": "object",
        "description": (
            "One AES-256-GCM encrypted value with its writer's Ed25519 signature over the "
            "SHA-256 hash of its fields. writtenAt and size are set by the coordinator."
        ),
        "required": [
            "key",
            "version",
            "epoch",
            "writer",
            "nonce",
            "ciphertext",
            "hash",
            "signature",
        ],
        "additionalProperties": False,
        "properties": {
            "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            "version": {"type": "integer", "minimum": 1},
            "epoch": {"type": "integer", "minimum": 0},
            "writer": _DID,
            "nonce": _b64(NONCE_SIZE),
            "ciphertext": _b64(MAX_CIPHERTEXT_SIZE, exact=False),
            "hash": _b64(HASH_SIZE),
            "signature": _b64(SIGNATURE_SIZE),
            "writtenAt": {**_MS, "readOnly": True},
            "size": {"type": "integer", "minimum": 0, "readOnly": True},
        },
    },
    "SegmentInfo": {
        "type": "object",
        "required": ["key", "version", "epoch", "writer", "size", "writtenAt"],
        "properties": {
            "key": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "epoch": {"type": "integer", "minimum": 0},
            "writer": _DID,
            "size": {"type": "integer", "minimum": 0},
            "writtenAt": _MS,
        },
    },
    "CreateMemoryRequest": {
        "type": "object",
        "required": ["wrappedKey"],
        "additionalProperties": False,
        "properties": {
            "id": {
                "type": "string",
                "maxLength": 67,
                "description": (
                    "the memory id, chosen by the client: " + _ID_FORMAT + "; the "
                    "coordinator picks a UUID when absent"
                ),
            },
            "type": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TYPE_LENGTH,
                "default": "kv",
            },
            "expiresAt": _OPTIONAL_MS,
            "quotas": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {
                    "maxBytes": {"type": ["integer", "null"], "minimum": 1},
                    "maxSegments": {"type": ["integer", "null"], "minimum": 1},
                },
            },
            "wrappedKey": {
                "type": "object",
                "description": "the creator's own key at epoch 0 (agent may be omitted)",
                "required": ["epoch", "enc", "ct"],
                "properties": {
                    "agent": _DID,
                    "epoch": {"const": 0},
                    "enc": _b64(ENC_SIZE),
                    "ct": _b64(WRAPPED_KEY_CT_SIZE),
                },
            },
        },
    },
    "PutSegmentRequest": {
        "type": "object",
        "required": ["expectedVersion", "segment"],
        "additionalProperties": False,
        "properties": {
            "expectedVersion": {
                "type": "integer",
                "minimum": 0,
                "description": "the version being replaced; 0 = the key must not exist",
            },
            "segment": _ref("Segment"),
        },
    },
    "GrantRequest": {
        "type": "object",
        "required": ["agent", "level", "wrappedKeys"],
        "additionalProperties": False,
        "properties": {
            "agent": _DID,
            "level": _LEVEL,
            "expiresAt": _OPTIONAL_MS,
            "wrappedKeys": {
                "type": "array",
                "maxItems": MAX_WRAPPED_KEYS,
                "description": "the agent's wrapped key for every epoch 0..current",
                "items": _ref("WrappedKey"),
            },
        },
    },
    "RevokeRequest": {
        "type": "object",
        "required": ["epoch", "wrappedKeys"],
        "additionalProperties": False,
        "properties": {
            "epoch": {"type": "integer", "minimum": 1, "description": "the current epoch + 1"},
            "wrappedKeys": {
                "type": "array",
                "maxItems": MAX_WRAPPED_KEYS,
                "description": "the new data key for the owner and every remaining grantee",
                "items": _ref("WrappedKey"),
            },
        },
    },
}

_ERROR_REF: Final = _ref("Error")

_DESCRIPTIONS: Final = {
    "400": "invalid request (malformed field, bad segment hash or signature, wrong key set)",
    "403": "no grant, insufficient level, expired grant, revoked agent or policy deny",
    "404": "no such memory (or segment)",
    "409": "version conflict (details.currentVersion) or stale epoch (details.currentEpoch)",
    "410": "the memory has expired",
    "413": "a quota would be exceeded (details name the quota and the numbers)",
}


def _json(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    operation_id: str,
    summary: str,
    *,
    success: tuple[str, Mapping[str, Any], str],
    errors: tuple[str, ...],
    request: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    code, schema, description = success
    responses: dict[str, Any] = {code: _json(schema, description)}
    for error in errors:
        responses[error] = _json(_ERROR_REF, _DESCRIPTIONS[error])
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [_TAG],
        "responses": responses,
    }
    if request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


def _path(name: str, description: str, max_length: int) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "maxLength": max_length},
    }


_ID_PARAM: Final = _path("id", "memory id: " + _ID_FORMAT, 67)
_KEY_PARAM: Final = _path("key", "segment key (percent-encoded)", MAX_KEY_LENGTH)
_AGENT_PARAM: Final = _path("agent", "the grantee's DID", MAX_DID_LENGTH)


def _object(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [name], "properties": {name: schema}}


def register_memory_routes(api: Api, service: MemoryService) -> None:
    """Register the ``/api/memory`` routes, answered by ``service``, on ``api``."""
    api.add_schemas(MEMORY_SCHEMAS)

    async def create(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        caller = request.caller.did
        parsed = parse_create_request(request.body, caller=caller)
        memory = await service.create(
            caller,
            wrapped_key=parsed.wrapped_key,
            memory_id=parsed.id,
            type=parsed.type,
            expires_at=parsed.expires_at,
            max_bytes=parsed.max_bytes,
            max_segments=parsed.max_segments,
        )
        return ApiResponse(201, memory.to_json())

    async def list_memories(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        memories = await service.list_for(request.caller.did)
        return ApiResponse(200, {"memories": [memory.to_json() for memory in memories]})

    async def get(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        memory = await service.get(request.caller.did, params["id"])
        return ApiResponse(200, memory.to_json())

    async def destroy(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        await service.destroy(request.caller.did, params["id"])
        return ApiResponse(200, {"destroyed": True})

    async def keys(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        found = await service.keys_for(request.caller.did, params["id"])
        return ApiResponse(200, {"keys": [key.to_json() for key in found]})

    async def put_segment(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        parsed = parse_put_request(request.body)
        stored = await service.put_segment(
            request.caller.did,
            params["id"],
            params["key"],
            parsed.segment,
            expected_version=parsed.expected_version,
        )
        return ApiResponse(200, {"key": stored.key, "version": stored.version})

    async def get_segment(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        segment = await service.get_segment(request.caller.did, params["id"], params["key"])
        return ApiResponse(200, segment.to_json())

    async def list_segments(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        limit = query_int(request.query, "limit", default=_PAGE, minimum=1, maximum=_MAX_PAGE)
        after = request.query.get("after")
        if after is not None:
            check_segment_key(after)
        found = await service.list_segments(request.caller.did, params["id"])
        rest = found if after is None else [info for info in found if info.key > after]
        page = rest[: limit or _PAGE]
        more = len(rest) > len(page)
        return ApiResponse(
            200,
            {
                "segments": [info.to_json() for info in page],
                "next": page[-1].key if more and page else None,
            },
        )

    async def delete_segment(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        expected = query_int(request.query, "expectedVersion", minimum=1, maximum=2**63 - 1)
        if expected is None:
            raise ValueError("query parameter 'expectedVersion' is required")
        await service.delete_segment(
            request.caller.did, params["id"], params["key"], expected_version=expected
        )
        return ApiResponse(200, {"deleted": True})

    async def grant(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        parsed = parse_grant_request(request.body)
        memory = await service.grant(
            request.caller.did,
            params["id"],
            parsed.agent,
            parsed.level,
            wrapped_keys=parsed.wrapped_keys,
            expires_at=parsed.expires_at,
        )
        return ApiResponse(201, memory.to_json())

    async def revoke(request: ApiRequest, params: Mapping[str, str]) -> ApiResponse:
        parsed = parse_revoke_request(request.body)
        memory = await service.revoke(
            request.caller.did,
            params["id"],
            params["agent"],
            epoch=parsed.epoch,
            wrapped_keys=parsed.wrapped_keys,
        )
        return ApiResponse(200, memory.to_json())

    memory = _ref("Memory")
    access = ("400", "403", "404", "410")
    api.route(
        "POST",
        "/api/memory",
        create,
        operation=_operation(
            "createMemory",
            "Create a shared memory owned by the caller",
            request="CreateMemoryRequest",
            success=("201", memory, "the new memory"),
            errors=("400", "403", "413"),
        ),
    )
    api.route(
        "GET",
        "/api/memory",
        list_memories,
        operation=_operation(
            "listMemories",
            "The unexpired memories the caller owns or holds an active grant on",
            success=("200", _object("memories", {"type": "array", "items": memory}), "memories"),
            errors=("403",),
        ),
    )
    api.route(
        "GET",
        "/api/memory/{id}",
        get,
        operation=_operation(
            "getMemory",
            "A memory's metadata (read access)",
            parameters=[_ID_PARAM],
            success=("200", memory, "the memory"),
            errors=access,
        ),
    )
    api.route(
        "DELETE",
        "/api/memory/{id}",
        destroy,
        operation=_operation(
            "destroyMemory",
            "Destroy a memory and everything in it (owner or admin)",
            parameters=[_ID_PARAM],
            success=("200", _object("destroyed", {"const": True}), "destroyed"),
            errors=access,
        ),
    )
    api.route(
        "GET",
        "/api/memory/{id}/keys",
        keys,
        operation=_operation(
            "getMemoryKeys",
            "The caller's own wrapped data keys, every epoch it holds (read access)",
            parameters=[_ID_PARAM],
            success=(
                "200",
                _object("keys", {"type": "array", "items": _ref("WrappedKey")}),
                "the caller's wrapped keys, by epoch",
            ),
            errors=access,
        ),
    )
    api.route(
        "PUT",
        "/api/memory/{id}/segments/{key}",
        put_segment,
        operation=_operation(
            "putMemorySegment",
            "Write a segment with compare-and-set on its version (write access)",
            parameters=[_ID_PARAM, _KEY_PARAM],
            request="PutSegmentRequest",
            success=(
                "200",
                {
                    "type": "object",
                    "required": ["key", "version"],
                    "properties": {"key": {"type": "string"}, "version": {"type": "integer"}},
                },
                "stored",
            ),
            errors=(*access, "409", "413"),
        ),
    )
    api.route(
        "GET",
        "/api/memory/{id}/segments/{key}",
        get_segment,
        operation=_operation(
            "getMemorySegment",
            "Read one segment (read access)",
            parameters=[_ID_PARAM, _KEY_PARAM],
            success=("200", _ref("Segment"), "the segment"),
            errors=access,
        ),
    )
    api.route(
        "GET",
        "/api/memory/{id}/segments",
        list_segments,
        operation=_operation(
            "listMemorySegments",
            "Segment metadata, by key, a page at a time (read access)",
            parameters=[
                _ID_PARAM,
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "description": f"segments per page (1..{_MAX_PAGE}, default {_PAGE})",
                    "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_PAGE},
                },
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "description": "only keys after this one (the previous page's `next`)",
                    "schema": {"type": "string", "maxLength": 256},
                },
            ],
            success=(
                "200",
                {
                    "type": "object",
                    "required": ["segments", "next"],
                    "properties": {
                        "segments": {"type": "array", "items": _ref("SegmentInfo")},
                        "next": {
                            "type": ["string", "null"],
                            "description": "pass as `after` for the next page; null at the end",
                        },
                    },
                },
                "segment metadata, by key",
            ),
            errors=access,
        ),
    )
    api.route(
        "DELETE",
        "/api/memory/{id}/segments/{key}",
        delete_segment,
        operation=_operation(
            "deleteMemorySegment",
            "Delete a segment with compare-and-set on its version (write access)",
            parameters=[
                _ID_PARAM,
                _KEY_PARAM,
                {
                    "name": "expectedVersion",
                    "in": "query",
                    "required": True,
                    "description": "the segment's current version",
                    "schema": {"type": "integer", "minimum": 1},
                },
            ],
            success=("200", _object("deleted", {"const": True}), "deleted"),
            errors=(*access, "409"),
        ),
    )
    api.route(
        "POST",
        "/api/memory/{id}/grants",
        grant,
        operation=_operation(
            "grantMemoryAccess",
            "Grant (or replace) an agent's access (owner or admin)",
            parameters=[_ID_PARAM],
            request="GrantRequest",
            success=("201", memory, "the memory with the new grant"),
            errors=(*access, "413"),
        ),
    )
    api.route(
        "DELETE",
        "/api/memory/{id}/grants/{agent}",
        revoke,
        operation=_operation(
            "revokeMemoryAccess",
            "Revoke an agent's grant and rotate the data key to a new epoch (owner or admin)",
            parameters=[_ID_PARAM, _AGENT_PARAM],
            request="RevokeRequest",
            success=("200", memory, "the memory at its new epoch"),
            errors=(*access, "409"),
        ),
    )
