"""The log, JSONL-file and memory alert sinks."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from trustwire.detect import (
    Alert,
    AlertId,
    AlertKind,
    JsonlAlertSink,
    LogAlertSink,
    MemoryAlertSink,
    Severity,
)


def _alert(n: int = 0, severity: Severity = Severity.WARNING) -> Alert:
    return Alert(
        id=AlertId(f"id{n}"),
        kind=AlertKind.REPLAY_ATTEMPTS,
        severity=severity,
        time=1_700_000_000.0 + n,
        agent="did:key:z6MkX",
        summary=f"alert {n}",
        details={"count": n},
    )


def test_memory_sink_keeps_the_newest_alerts_up_to_its_limit() -> None:
    sink = MemoryAlertSink(maxlen=2)
    for n in range(3):
        sink.send(_alert(n))
    assert [a.id for a in sink.alerts] == ["id1", "id2"]
    assert len(sink.of_kind(AlertKind.REPLAY_ATTEMPTS)) == 2
    assert sink.of_kind(AlertKind.FANOUT) == []
    sink.clear()
    assert len(sink) == 0


@pytest.mark.parametrize(
    ("severity", "level"),
    [
        (Severity.INFO, logging.INFO),
        (Severity.WARNING, logging.WARNING),
        (Severity.CRITICAL, logging.CRITICAL),
    ],
)
def test_log_sink_writes_one_json_line_at_the_severity_level(
    caplog: pytest.LogCaptureFixture, severity: Severity, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="trustwire.alerts")
    alert = _alert(1, severity)
    LogAlertSink().send(alert)

    [record] = caplog.records
    assert record.name == "trustwire.alerts"
    assert record.levelno == level
    assert Alert.from_json(record.getMessage()) == alert
    assert record.alert == alert.to_dict()  # type: ignore[attr-defined]


def test_jsonl_sink_appends_one_alert_per_line_to_a_0600_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    with JsonlAlertSink(path) as sink:
        for n in range(3):
            sink.send(_alert(n))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [Alert.from_json(line) for line in lines] == [_alert(n) for n in range(3)]

    with JsonlAlertSink(path) as sink:  # reopening appends
        sink.send(_alert(3))
    assert len(path.read_text(encoding="utf-8").splitlines()) == 4


def test_jsonl_sink_writes_without_waiting_for_close(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonlAlertSink(path)
    try:
        sink.send(_alert(7))
        sink.flush()  # what the writer thread does on its own; deterministic here
        assert json.loads(path.read_text(encoding="utf-8"))["id"] == "id7"
    finally:
        sink.close()


def test_jsonl_sink_tightens_an_existing_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text("")
    path.chmod(0o644)
    JsonlAlertSink(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_jsonl_sink_drops_and_counts_beyond_its_pending_limit(tmp_path: Path) -> None:
    sink = JsonlAlertSink(tmp_path / "alerts.jsonl", max_pending=1)
    try:
        # The writer thread may take the first line at any moment; whatever it does,
        # no more than one line is ever pending, so of 1,000 sends most are dropped.
        for n in range(1000):
            sink.send(_alert(n))
        assert sink.dropped > 0
    finally:
        sink.close()
    written = (tmp_path / "alerts.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(written) + sink.dropped == 1000


def test_jsonl_sink_refuses_alerts_after_close(tmp_path: Path) -> None:
    sink = JsonlAlertSink(tmp_path / "alerts.jsonl")
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        sink.send(_alert())
