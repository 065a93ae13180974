"""Attacks on the coordinator API as a hostile, authenticated agent would make them.

Each test makes the real attack (raw ``API_REQUEST`` frames, HTTPS requests with a real
client certificate) against a real coordinator and asserts that it fails.
"""

from __future__ import annotations

from _deployment import Deployment, MakeDeployment
from trustwire.protocol import control
from trustwire.protocol.envelope import Envelope, FrameType
from trustwire.protocol.frames import encode_frame


def _api_frame(sender: str, body: bytes, message_id: bytes) -> bytes:
    env = Envelope.create(FrameType.API_REQUEST, message_id, sender, "", body=body)
    return encode_frame(env.to_bytes())


async def test_an_api_request_with_a_huge_integer_is_a_400_and_the_connection_lives(
    make_deployment: MakeDeployment,
) -> None:
    # Python's JSON parser refuses integers over 4300 digits with a plain ValueError, not
    # a JSONDecodeError: it must still be a 400 answer, not a crashed connection handler.
    deployment: Deployment = await make_deployment()
    raw = await deployment.raw("alice")
    alice = deployment.did("alice")
    body = (
        b'{"method":"POST","path":"/api/messaging/sessions","query":{},'
        b'"body":{"peer":"bob","timeoutConfig":{"timeoutMinutes":' + b"9" * 5000 + b"}}}"
    )
    raw.send(_api_frame(alice, body, b"\x01" * 16))

    answer = await raw.expect(FrameType.API_RESPONSE)
    assert answer.message_id == b"\x01" * 16
    response = control.decode_api_frame(answer.body)
    assert response["status"] == 400
    assert response["body"]["error"] == "VALIDATION_ERROR"
    # The connection is still served.
    raw.send(encode_frame(Envelope.create(FrameType.PING, b"\x02" * 16, alice, "").to_bytes()))
    pong = await raw.expect(FrameType.PONG)
    assert pong.message_id == b"\x02" * 16
