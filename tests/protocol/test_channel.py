"""Sans-I/O channel and sealed-message tests: no event loop, no sockets."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from trustwire.errors import (
    AuthenticationFailed,
    DecryptionFailed,
    HandshakeFailed,
    InvalidEnvelope,
    ProtocolError,
    ReplayDetected,
)
from trustwire.identity.keys import AgentIdentity
from trustwire.protocol.channel import (
    MAX_UNSIGNED,
    Channel,
    ReceivedMessage,
    ReceivedReceipt,
    _noise_x,
    open_sealed,
    seal,
    seal_receipt,
    verify_key_of,
)
from trustwire.protocol.content import (
    MessageContent,
    ReceiptContent,
    receipt_statement,
    sealed_statement,
)
from trustwire.protocol.envelope import FLAG_RESPONSE, Envelope, FrameType, decode

NOW = 1_700_000_000_000
_ids = itertools.count(1)


def mid() -> bytes:
    return next(_ids).to_bytes(16, "big")


@pytest.fixture(scope="module")
def alice() -> AgentIdentity:
    return AgentIdentity.generate("alice")


@pytest.fixture(scope="module")
def bob() -> AgentIdentity:
    return AgentIdentity.generate("bob")


@pytest.fixture(scope="module")
def mallory() -> AgentIdentity:
    return AgentIdentity.generate("mallory")


def wire(env: Envelope) -> Envelope:
    """What the peer receives: the bytes through the coordinator, decoded again."""
    return decode(env.to_bytes())


def pair(a: AgentIdentity, b: AgentIdentity) -> tuple[Channel, Channel]:
    ca, init = Channel.initiate(
        a, b.did, b.agreement.public, channel_id=mid(), message_id=mid(), now_ms=NOW
    )
    cb, accept = Channel.accept(
        b, wire(init), peer_agreement_key=a.agreement.public, message_id=mid(), now_ms=NOW
    )
    ca.complete(wire(accept))
    assert ca.established and cb.established
    return ca, cb


def messages(items: list[ReceivedMessage | ReceivedReceipt]) -> list[bytes]:
    return [i.content for i in items if isinstance(i, ReceivedMessage)]


def test_messages_flow_both_ways_and_receipts_cover_them(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    ca, cb = pair(alice, bob)
    app_ids = [mid() for _ in range(3)]
    frames = [
        ca.send(f"m{i}".encode(), app_id=app_ids[i], message_id=mid(), now_ms=NOW, sign=i == 2)
        for i in range(3)
    ]
    got: list[ReceivedMessage | ReceivedReceipt] = []
    for f in frames:
        got.extend(cb.receive(wire(f)))
    assert messages(got) == [b"m0", b"m1", b"m2"]
    receipt_frame = cb.send_receipt(message_id=mid(), now_ms=NOW)
    assert receipt_frame is not None
    (receipt,) = ca.receive(wire(receipt_frame))
    assert isinstance(receipt, ReceivedReceipt)
    assert receipt.app_ids == tuple(app_ids)
    verify_key_of(bob.did).verify(receipt.signature, receipt.statement)
    assert ca.unacknowledged == []
    reply = cb.send(b"pong", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    assert messages(ca.receive(wire(reply))) == [b"pong"]


def test_unsigned_messages_are_held_until_a_checkpoint_verifies(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    ca, cb = pair(alice, bob)
    first = ca.send(b"a", app_id=mid(), message_id=mid(), now_ms=NOW, sign=False)
    assert cb.receive(wire(first)) == []
    second = ca.send(b"b", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    assert messages(cb.receive(wire(second))) == [b"a", b"b"]


def test_sender_signs_at_least_every_max_unsigned_messages(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    ca, cb = pair(alice, bob)
    released = 0
    for _ in range(MAX_UNSIGNED * 2):
        released += len(
            cb.receive(wire(ca.send(b"x", app_id=mid(), message_id=mid(), now_ms=NOW, sign=False)))
        )
    assert released >= MAX_UNSIGNED


def test_tampered_ciphertext_is_rejected_and_state_unchanged(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    ca, cb = pair(alice, bob)
    frame = ca.send(b"secret", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    body = bytearray(frame.body)
    body[5] ^= 1
    with pytest.raises(DecryptionFailed):
        cb.receive(wire(replace(frame, body=bytes(body))))
    assert messages(cb.receive(wire(frame))) == [b"secret"]


@pytest.mark.parametrize("field", ["timestamp", "message_id", "counter"])
def test_tampered_header_fails_authentication(
    alice: AgentIdentity, bob: AgentIdentity, field: str
) -> None:
    ca, cb = pair(alice, bob)
    frame = ca.send(b"secret", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    changes: dict[str, object] = {
        "timestamp": frame.timestamp + 1,
        "message_id": mid(),
        "counter": frame.counter + 1,
    }
    forged = Envelope.create(
        frame.type,
        frame.message_id,
        frame.sender,
        frame.recipient,
        body=frame.body,
        channel_id=frame.channel_id,
        counter=frame.counter,
        timestamp=frame.timestamp,
    )
    forged = Envelope.create(
        forged.type,
        changes["message_id"] if field == "message_id" else forged.message_id,  # type: ignore[arg-type]
        forged.sender,
        forged.recipient,
        body=forged.body,
        channel_id=forged.channel_id,
        counter=changes["counter"] if field == "counter" else forged.counter,  # type: ignore[arg-type]
        timestamp=changes["timestamp"] if field == "timestamp" else forged.timestamp,  # type: ignore[arg-type]
    )
    with pytest.raises(DecryptionFailed):
        cb.receive(wire(forged))


def test_replayed_frame_is_rejected(alice: AgentIdentity, bob: AgentIdentity) -> None:
    ca, cb = pair(alice, bob)
    frame = ca.send(b"once", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    cb.receive(wire(frame))
    with pytest.raises(ReplayDetected):
        cb.receive(wire(frame))


def test_dropped_frame_is_detected_as_out_of_order(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    ca, cb = pair(alice, bob)
    ca.send(b"lost", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    later = ca.send(b"later", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    with pytest.raises(ProtocolError, match="out of order"):
        cb.receive(wire(later))


def test_frame_from_another_channel_is_refused(alice: AgentIdentity, bob: AgentIdentity) -> None:
    ca1, _ = pair(alice, bob)
    _, cb2 = pair(alice, bob)
    frame = ca1.send(b"x", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    with pytest.raises(InvalidEnvelope):
        cb2.receive(wire(frame))


def test_responder_refuses_initiator_whose_static_key_is_not_registered(
    alice: AgentIdentity, bob: AgentIdentity, mallory: AgentIdentity
) -> None:
    # Mallory runs the handshake with her own agreement key but claims to be alice.
    _, init = Channel.initiate(
        mallory, bob.did, bob.agreement.public, channel_id=mid(), message_id=mid(), now_ms=NOW
    )
    forged = Envelope.create(
        FrameType.CHANNEL_INIT,
        init.message_id,
        alice.did,
        bob.did,
        body=init.body,
        channel_id=init.channel_id,
        timestamp=init.timestamp,
    )
    with pytest.raises((AuthenticationFailed, HandshakeFailed)):
        Channel.accept(
            bob,
            wire(forged),
            peer_agreement_key=alice.agreement.public,
            message_id=mid(),
            now_ms=NOW,
        )


def test_initiator_refuses_an_accept_from_someone_without_the_responder_key(
    alice: AgentIdentity, bob: AgentIdentity, mallory: AgentIdentity
) -> None:
    _, init = Channel.initiate(
        alice, bob.did, bob.agreement.public, channel_id=mid(), message_id=mid(), now_ms=NOW
    )
    # Mallory cannot read alice's init (it is for bob's static key).
    with pytest.raises((HandshakeFailed, AuthenticationFailed)):
        Channel.accept(
            mallory,
            replace(wire(init), recipient=mallory.did),
            peer_agreement_key=alice.agreement.public,
            message_id=mid(),
            now_ms=NOW,
        )


def test_receipt_over_a_different_chain_is_refused_even_when_signed(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    ca, cb = pair(alice, bob)
    cb.receive(wire(ca.send(b"m", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)))
    # Bob signs a receipt claiming a chain value alice never produced (e.g. a coordinator
    # that swapped a message): alice must not count her message as delivered.
    body = ReceiptContent(
        signed_at=NOW, signature=b"", first_counter=0, last_counter=0, chain=bytes(32)
    ).body_bytes()
    signature = bob.signing_key.sign(receipt_statement(bob.did, alice.did, cb.channel_id, body))
    frame = cb._seal_frame(body + signature, message_id=mid(), now_ms=NOW)
    with pytest.raises(AuthenticationFailed, match="does not match"):
        ca.receive(wire(frame))
    assert len(ca.unacknowledged) == 1


def test_receipt_with_a_bad_signature_is_refused(alice: AgentIdentity, bob: AgentIdentity) -> None:
    ca, cb = pair(alice, bob)
    cb.receive(wire(ca.send(b"m", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)))
    genuine = cb.send_receipt(message_id=mid(), now_ms=NOW)
    assert genuine is not None
    ca2, cb2 = pair(alice, bob)
    cb2.receive(wire(ca2.send(b"m", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)))
    # Same shape, signed by alice instead of bob.
    body = ReceiptContent(
        signed_at=NOW,
        signature=b"",
        first_counter=0,
        last_counter=0,
        chain=ca2._unacked[0][1],
    ).body_bytes()
    signature = alice.signing_key.sign(receipt_statement(bob.did, alice.did, cb2.channel_id, body))
    with pytest.raises(AuthenticationFailed, match="signature"):
        ca2.receive(wire(cb2._seal_frame(body + signature, message_id=mid(), now_ms=NOW)))
    ca.receive(wire(genuine))
    assert ca.unacknowledged == []


def test_sealed_message_round_trip_and_receipt(alice: AgentIdentity, bob: AgentIdentity) -> None:
    app_id = mid()
    env = seal(
        alice,
        bob.did,
        bob.agreement.public,
        b"offline hello",
        app_id=app_id,
        message_id=mid(),
        now_ms=NOW,
    )
    got = open_sealed(bob, wire(env), sender_agreement_key=alice.agreement.public)
    assert isinstance(got, ReceivedMessage)
    assert got.content == b"offline hello" and got.sealed and got.app_id == app_id
    r = seal_receipt(bob, alice.did, alice.agreement.public, [app_id], message_id=mid(), now_ms=NOW)
    receipt = open_sealed(alice, wire(r), sender_agreement_key=bob.agreement.public)
    assert isinstance(receipt, ReceivedReceipt) and receipt.app_ids == (app_id,)


def test_sealed_header_is_bound(alice: AgentIdentity, bob: AgentIdentity) -> None:
    env = seal(
        alice, bob.did, bob.agreement.public, b"x", app_id=mid(), message_id=mid(), now_ms=NOW
    )
    forged = Envelope.create(
        FrameType.SEALED, mid(), env.sender, env.recipient, body=env.body, timestamp=env.timestamp
    )
    with pytest.raises(DecryptionFailed):
        open_sealed(bob, wire(forged), sender_agreement_key=alice.agreement.public)


def test_sealed_message_claiming_another_sender_is_refused(
    alice: AgentIdentity, bob: AgentIdentity, mallory: AgentIdentity
) -> None:
    env = seal(
        mallory, bob.did, bob.agreement.public, b"x", app_id=mid(), message_id=mid(), now_ms=NOW
    )
    # Claims alice in the header: the prologue no longer matches, and even a re-sealed
    # message under mallory's key fails the registered-key check.
    with pytest.raises((DecryptionFailed, AuthenticationFailed)):
        open_sealed(
            bob, replace(wire(env), sender=alice.did), sender_agreement_key=alice.agreement.public
        )
    with pytest.raises(AuthenticationFailed):
        open_sealed(bob, wire(env), sender_agreement_key=alice.agreement.public)


def test_truncated_sealed_message_gives_a_clean_error(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    env = seal(
        alice, bob.did, bob.agreement.public, b"x", app_id=mid(), message_id=mid(), now_ms=NOW
    )
    short = Envelope.create(
        FrameType.SEALED, mid(), env.sender, env.recipient, body=env.body[:20], timestamp=NOW
    )
    with pytest.raises(DecryptionFailed):
        open_sealed(bob, wire(short), sender_agreement_key=alice.agreement.public)


def test_receipt_never_covers_messages_still_waiting_for_their_checkpoint(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    ca, cb = pair(alice, bob)
    for _ in range(3):
        assert (
            cb.receive(wire(ca.send(b"u", app_id=mid(), message_id=mid(), now_ms=NOW, sign=False)))
            == []
        )
    # Nothing released to bob's application, so nothing may be acknowledged to alice.
    assert cb.send_receipt(message_id=mid(), now_ms=NOW) is None
    released = cb.receive(
        wire(ca.send(b"s", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True))
    )
    assert len(messages(released)) == 4
    receipt = cb.send_receipt(message_id=mid(), now_ms=NOW)
    assert receipt is not None
    (got,) = ca.receive(wire(receipt))
    assert isinstance(got, ReceivedReceipt) and len(got.app_ids) == 4


def test_a_receipt_does_not_end_the_senders_unsigned_run(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    ca, cb = pair(alice, bob)
    # bob sends unsigned messages, then a receipt, then more unsigned: alice must still
    # receive everything (bob signs within MAX_UNSIGNED counting across the receipt).
    cb.receive(wire(ca.send(b"x", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)))
    released = 0
    for i in range(MAX_UNSIGNED * 2):
        released += len(
            messages(
                ca.receive(
                    wire(cb.send(b"y", app_id=mid(), message_id=mid(), now_ms=NOW, sign=False))
                )
            )
        )
        if i == 10:
            r = cb.send_receipt(message_id=mid(), now_ms=NOW)
            assert r is not None
            ca.receive(wire(r))
    assert released >= MAX_UNSIGNED


def test_a_message_smuggled_in_a_response_frame_is_refused(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    # Under a one-way grant (alice may message bob, not the reverse) the coordinator lets
    # bob's responses through; bob must not be able to use one to say anything.
    ca, cb = pair(alice, bob)
    smuggled = MessageContent(mid(), NOW, b"you were not allowed to hear this")
    plaintext = smuggled.unsigned_bytes(will_sign=False)
    frame = cb._seal_frame(plaintext, message_id=mid(), now_ms=NOW, flags=FLAG_RESPONSE)
    assert frame.flags & FLAG_RESPONSE
    with pytest.raises(InvalidEnvelope, match="response"):
        ca.receive(wire(frame))


def test_a_sealed_message_flagged_as_response_is_refused(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    unsigned = MessageContent(mid(), NOW, b"smuggled").unsigned_bytes(will_sign=True)
    header = Envelope.build_header(
        FrameType.SEALED,
        mid(),
        bob.did,
        alice.did,
        bytes(16),
        0,
        NOW,
        96 + len(unsigned) + 64,
        FLAG_RESPONSE,
    )
    signature = bob.signing_key.sign(sealed_statement(header, unsigned))
    env = _noise_x(bob, alice.agreement.public, header, unsigned + signature)
    with pytest.raises(InvalidEnvelope, match="response"):
        open_sealed(alice, wire(env), sender_agreement_key=bob.agreement.public)


def test_responses_carry_the_response_flag(alice: AgentIdentity, bob: AgentIdentity) -> None:
    ca, init = Channel.initiate(
        alice, bob.did, bob.agreement.public, channel_id=mid(), message_id=mid(), now_ms=NOW
    )
    assert not init.flags
    cb, accept = Channel.accept(
        bob, wire(init), peer_agreement_key=alice.agreement.public, message_id=mid(), now_ms=NOW
    )
    assert wire(accept).flags & FLAG_RESPONSE
    ca.complete(wire(accept))
    data = ca.send(b"m", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    assert not wire(data).flags
    cb.receive(wire(data))
    receipt = cb.send_receipt(message_id=mid(), now_ms=NOW)
    assert receipt is not None and wire(receipt).flags & FLAG_RESPONSE
    sealed_receipt = seal_receipt(
        bob, alice.did, alice.agreement.public, [mid()], message_id=mid(), now_ms=NOW
    )
    assert wire(sealed_receipt).flags & FLAG_RESPONSE


# -- session binding -----------------------------------------------------------------

SESSION = bytes(range(200, 216))
OTHER_SESSION = bytes(range(216, 232))


def _swap_session(env: Envelope, session_id: bytes) -> Envelope:
    """What a coordinator rewriting the session id in transit would forward."""
    raw = bytearray(env.to_bytes())
    start = len(env.header) - len(env.session_id)
    raw[start : start + len(session_id)] = session_id
    return decode(bytes(raw))


def test_channel_message_carries_its_session_and_the_id_is_authenticated(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    ca, cb = pair(alice, bob)
    env = ca.send(b"in session", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True,
                  session_id=SESSION)  # fmt: skip
    assert env.session_id == SESSION
    (got,) = cb.receive(wire(env))
    assert isinstance(got, ReceivedMessage) and got.session_id == SESSION
    plain = ca.send(b"no session", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True)
    (got,) = cb.receive(wire(plain))
    assert isinstance(got, ReceivedMessage) and got.session_id is None
    moved = ca.send(b"moved", app_id=mid(), message_id=mid(), now_ms=NOW, sign=True,
                    session_id=SESSION)  # fmt: skip
    with pytest.raises(DecryptionFailed):
        cb.receive(_swap_session(moved, OTHER_SESSION))


def test_sealed_message_carries_its_session_and_the_id_is_authenticated(
    alice: AgentIdentity, bob: AgentIdentity
) -> None:
    env = seal(alice, bob.did, bob.agreement.public, b"later", app_id=mid(), message_id=mid(),
               now_ms=NOW, session_id=SESSION)  # fmt: skip
    got = open_sealed(bob, wire(env), sender_agreement_key=alice.agreement.public)
    assert isinstance(got, ReceivedMessage) and got.session_id == SESSION
    with pytest.raises(DecryptionFailed):
        open_sealed(bob, _swap_session(env, OTHER_SESSION),
                    sender_agreement_key=alice.agreement.public)  # fmt: skip
