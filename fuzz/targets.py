"""Fuzz targets for every decoder of untrusted bytes, shared by the atheris runner and
the tests.

Each target takes arbitrary bytes and must either succeed or raise a
:class:`~trustwire.errors.TrustwireError` (or, for the registry and tree-head parsers,
``ValueError`` where their contract says so). Anything else — another exception, a hang,
unbounded memory — is a bug the fuzzer reports.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from trustwire.audit.log import TreeHead
from trustwire.broker.config import parse_config
from trustwire.broker.template import Template
from trustwire.crypto.dh import X25519
from trustwire.errors import TrustwireError
from trustwire.identity.did import ed25519_from_did
from trustwire.identity.keys import AgentIdentity
from trustwire.memory import model as memory_model
from trustwire.memory.crypto import open_segment
from trustwire.policy.model import parse_policy
from trustwire.protocol import control, join
from trustwire.protocol.channel import open_sealed
from trustwire.protocol.content import decode_content
from trustwire.protocol.envelope import FrameType, decode
from trustwire.protocol.frames import FrameDecoder

_RECIPIENT = AgentIdentity.generate("fuzz-recipient")
_SENDER_KEY = X25519.generate().public


def frames_and_envelopes(data: bytes) -> None:
    """The coordinator's and the SDK's first contact with network bytes."""
    decoder = FrameDecoder(max_frame=4096)
    with contextlib.suppress(TrustwireError):
        for raw in decoder.receive_data(data):
            with contextlib.suppress(TrustwireError):
                env = decode(raw)
                control_bodies(env.body)
                if env.type is FrameType.SEALED:
                    with contextlib.suppress(TrustwireError):
                        open_sealed(_RECIPIENT, env, sender_agreement_key=_SENDER_KEY)


def control_bodies(data: bytes) -> None:
    """Every control-frame body decoder."""
    for decoder in (
        control.decode_status,
        control.decode_ack,
        control.decode_error,
        control.decode_json,
    ):
        with contextlib.suppress(TrustwireError):
            decoder(data)
    for join_decoder in (join.decode_request, join.decode_ca_result, join.decode_result):
        with contextlib.suppress(TrustwireError):
            join_decoder(data)


def inner_content(data: bytes) -> None:
    """What a recipient parses after decryption (a malicious peer controls it)."""
    with contextlib.suppress(TrustwireError):
        decode_content(data)


def did_strings(data: bytes) -> None:
    with contextlib.suppress(TrustwireError):
        ed25519_from_did(data.decode("utf-8", errors="replace"))


def policy_files(data: bytes) -> None:
    with contextlib.suppress(TrustwireError):
        parse_policy(data.decode("utf-8", errors="replace"), source="<fuzz>")


def tree_heads(data: bytes) -> None:
    with contextlib.suppress(TrustwireError, ValueError, json.JSONDecodeError):
        TreeHead.from_json(data.decode("utf-8", errors="replace"))


def _json(data: bytes) -> object:
    try:
        return json.loads(data.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return data.decode("utf-8", errors="replace")


def api_frames(data: bytes) -> None:
    """API_REQUEST / API_RESPONSE / SESSION_EVENT bodies."""
    with contextlib.suppress(TrustwireError):
        control.decode_api_frame(data)


def memory_segments(data: bytes) -> None:
    """A reader opening a segment a malicious writer or coordinator controls, and the
    coordinator parsing shared-memory request bodies (which raise ``ValueError`` on bad
    input: the API answers 400)."""
    value = _json(data)
    if isinstance(value, dict):
        with contextlib.suppress(TrustwireError):
            open_segment(value, memory_id="fuzz", data_key_for=lambda epoch: bytes(32))
    with contextlib.suppress(TrustwireError, ValueError):
        memory_model.parse_create_request(value, caller=_RECIPIENT.did)
    for parse in (
        memory_model.parse_put_request,
        memory_model.parse_grant_request,
        memory_model.parse_revoke_request,
    ):
        with contextlib.suppress(TrustwireError, ValueError):
            parse(value)


def broker_configs(data: bytes) -> None:
    """secretless.yml files and their header templates."""
    text = data.decode("utf-8", errors="replace")
    with contextlib.suppress(TrustwireError):
        parse_config(text, source="<fuzz>")
    with contextlib.suppress(TrustwireError):
        Template.parse(text, where="<fuzz>").render({"token": "t", "user": "u"})


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": frames_and_envelopes,
    "control": control_bodies,
    "content": inner_content,
    "did": did_strings,
    "policy": policy_files,
    "treehead": tree_heads,
    "api": api_frames,
    "memory": memory_segments,
    "broker": broker_configs,
}
