"""Alert: metadata only, one line of strict JSON, and a parser for what it writes."""

from __future__ import annotations

import json

import pytest

from trustwire.crypto.random import set_random_source
from trustwire.detect import Alert, AlertId, AlertKind, Severity, new_alert_id


def _alert(**overrides: object) -> Alert:
    fields: dict[str, object] = {
        "id": AlertId("a1"),
        "kind": AlertKind.DENIAL_SPIKE,
        "severity": Severity.WARNING,
        "time": 1_700_000_000.5,
        "agent": "did:key:z6MkX",
        "summary": "20 denied messages\nfrom did:key:z6MkX",
        "details": {"count": 20, "window": 10.0, "scope": "agent", "flag": True},
    }
    fields.update(overrides)
    return Alert(**fields)  # type: ignore[arg-type]


def test_to_json_is_one_line_of_strict_json_and_round_trips() -> None:
    alert = _alert()
    text = alert.to_json()
    assert "\n" not in text
    assert json.loads(text)["kind"] == "denial_spike"
    assert Alert.from_json(text) == alert
    assert Alert.from_json(text.encode()) == alert


def test_plain_strings_for_kind_and_severity_are_normalised() -> None:
    alert = _alert(kind="fanout", severity="critical")
    assert alert.kind is AlertKind.FANOUT
    assert alert.severity is Severity.CRITICAL


def test_details_refuse_bytes_and_other_non_scalars() -> None:
    with pytest.raises(TypeError, match="metadata only"):
        _alert(details={"payload": b"secret"})
    with pytest.raises(TypeError):
        _alert(details={"peers": ["a", "b"]})
    with pytest.raises(ValueError, match="finite"):
        _alert(details={"rate": float("nan")})


def test_details_are_frozen_copies() -> None:
    details: dict[str, object] = {"count": 1}
    alert = _alert(details=details)
    details["count"] = 2
    assert alert.details["count"] == 1
    with pytest.raises(TypeError):
        alert.details["count"] = 3  # type: ignore[index]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{}",
        '{"id":"a","kind":"nope","severity":"info","time":1,"summary":"s"}',
        '{"id":"a","kind":"fanout","severity":"info","time":"1","summary":"s"}',
        '{"id":"a","kind":"fanout","severity":"info","time":1,"summary":"s","extra":1}',
        '{"id":"a","kind":"fanout","severity":"info","time":1,"summary":"s","details":{"k":[1]}}',
    ],
)
def test_from_json_refuses_anything_else_with_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        Alert.from_json(text)


def test_alert_ids_come_from_the_one_random_source() -> None:
    set_random_source(lambda n: b"\x01" * n)
    try:
        assert new_alert_id() == "01" * 12
    finally:
        set_random_source(None)
    assert new_alert_id() != new_alert_id()
