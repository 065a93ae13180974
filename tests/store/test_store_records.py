"""Validation of the value objects the store interfaces exchange."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from _store_helpers import agent, message

import trustwire.store
from trustwire.store import AgentRecord, NewMessage, QueuedMessage


def test_the_package_exports_a_sorted_public_api() -> None:
    names = trustwire.store.__all__
    assert names == sorted(names)
    assert all(hasattr(trustwire.store, name) for name in names)


def test_roles_given_as_a_list_become_a_tuple() -> None:
    record = replace(agent("alice"), roles=["a", "b"])  # type: ignore[arg-type]
    assert record.roles == ("a", "b")


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},
        {"did": 5},
        {"roles": "admin"},
        {"roles": ("admin", "")},
        {"agreement_key": b"\x00" * 31},
        {"agreement_key": "k" * 32},
        {"agreement_statement": None},
        {"agreement_issued_at": 1.5},
        {"agreement_issued_at": True},
        {"created_at": math.nan},
        {"revoked_at": math.inf},
    ],
)
def test_agent_records_reject_malformed_fields(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(agent("alice"), **change)  # type: ignore[arg-type]


def test_an_agent_is_revoked_once_it_has_a_revocation_time() -> None:
    record = agent("alice")
    assert not record.revoked
    assert replace(record, revoked_at=3.0).revoked


@pytest.mark.parametrize(
    "change",
    [
        {"recipient": ""},
        {"sender": None},
        {"message_id": b"\x00" * 15},
        {"message_id": bytearray(16)},
        {"frame": "text"},
        {"enqueued_at": math.nan},
        {"enqueued_at": "now"},
    ],
)
def test_new_messages_reject_malformed_fields(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(message("bob"), **change)  # type: ignore[arg-type]


@pytest.mark.parametrize("seq", [0, -3, True, 1.0])
def test_queued_messages_need_a_positive_integer_seq(seq: object) -> None:
    with pytest.raises(ValueError, match="seq"):
        QueuedMessage(seq, "bob", "alice", b"\x01" * 16, b"frame", 1.0)  # type: ignore[arg-type]


def test_frames_stay_out_of_reprs() -> None:
    frame = b"opaque-frame-bytes"
    new = NewMessage("bob", "alice", b"\x01" * 16, frame, 1.0)
    queued = QueuedMessage(1, "bob", "alice", b"\x01" * 16, frame, 1.0)
    assert "opaque-frame-bytes" not in repr(new)
    assert "opaque-frame-bytes" not in repr(queued)


def test_records_are_immutable() -> None:
    record: AgentRecord = agent("alice")
    with pytest.raises(AttributeError):
        record.name = "mallory"  # type: ignore[misc]
