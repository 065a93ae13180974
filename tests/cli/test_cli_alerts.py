"""``trustwire alerts tail`` over the alerts.jsonl file the detectors' sink writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli_home import T0, did_of, invoke, make_home

from trustwire.cli import alerts as alerts_module
from trustwire.detect import Alert, AlertId, AlertKind, JsonlAlertSink, Severity


def alert(number: int, *, agent: str | None = None, summary: str | None = None) -> Alert:
    return Alert(
        id=AlertId(f"{number:024x}"),
        kind=AlertKind.DENIAL_SPIKE if agent else AlertKind.AUTH_FAILURE_BURST,
        severity=Severity.WARNING if number % 2 else Severity.CRITICAL,
        time=T0 + number,
        summary=summary or f"alert number {number}",
        agent=agent,
        details={"count": number},
    )


def write(home: Path, *alerts: Alert) -> None:
    with JsonlAlertSink(home / "alerts.jsonl") as sink:
        for item in alerts:
            sink.send(item)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path / "home", agents=("alice",))


def test_tail_without_an_alerts_file_says_there_are_none(home: Path) -> None:
    result = invoke(home, "alerts", "tail")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("no alerts yet")


def test_tail_prints_the_last_n_alerts_oldest_first_with_agent_names(home: Path) -> None:
    write(home, *(alert(i) for i in range(1, 40)), alert(40, agent=did_of(home, "alice")))
    result = invoke(home, "alerts", "tail", "-n", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["2025-06-15T15:07:18Z", "critical", "auth_failure_burst"]
    assert lines[0].endswith("alert number 38")
    assert lines[2].split()[1:4] == ["critical", "denial_spike", "alice"]
    assert lines[2].endswith("alert number 40")


def test_tail_reads_far_back_in_a_long_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_module, "_BLOCK", 100)
    write(home, *(alert(i) for i in range(1, 30)))
    result = invoke(home, "alerts", "tail", "-n", "25")
    assert result.exit_code == 0, result.stderr
    summaries = [line.rsplit("  ", 1)[1] for line in result.stdout.splitlines()]
    assert summaries == [f"alert number {i}" for i in range(5, 30)]


def test_tail_json_prints_each_alert_with_the_agent_name(home: Path) -> None:
    did = did_of(home, "alice")
    write(home, alert(1), alert(2, agent=did))
    result = invoke(home, "alerts", "tail", "--json")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["id"] for row in rows] == [f"{1:024x}", f"{2:024x}"]
    assert rows[1]["agent"] == did and rows[1]["agent_name"] == "alice"
    assert rows[0]["agent"] is None and rows[0]["agent_name"] is None
    assert rows[1]["details"] == {"count": 2}


def test_tail_skips_lines_that_are_not_alerts_and_a_line_still_being_written(home: Path) -> None:
    write(home, alert(1))
    with (home / "alerts.jsonl").open("a") as handle:
        handle.write('{"not": "an alert"}\n')
        handle.write(alert(2).to_json() + "\n")
        handle.write(alert(3).to_json()[:20])  # no newline yet
    result = invoke(home, "alerts", "tail")
    assert result.exit_code == 0
    assert "skipped a line that is not an alert" in result.stderr
    assert [line.rsplit("  ", 1)[1] for line in result.stdout.splitlines()] == [
        "alert number 1",
        "alert number 2",
    ]


def test_tail_escapes_control_characters_in_a_summary(home: Path) -> None:
    write(home, alert(1, summary="from 203.0.113.7\x1b[2J\u202eevil"))
    result = invoke(home, "alerts", "tail")
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\\x1b[2J\\u202eevil" in result.stdout


def test_tail_follow_prints_new_alerts_finishes_partial_lines_and_survives_rotation(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = home / "alerts.jsonl"
    write(home, alert(1))
    polls: list[float] = []
    tail_of_three = alert(3).to_json() + "\n"

    def poll(_seconds: float) -> None:
        polls.append(_seconds)
        if len(polls) == 1:
            with path.open("a") as handle:
                handle.write(alert(2).to_json() + "\n" + tail_of_three[:15])
        elif len(polls) == 2:
            with path.open("a") as handle:
                handle.write(tail_of_three[15:])
        elif len(polls) == 3:
            rotated = home / "alerts.jsonl.1"
            path.rename(rotated)
            write(home, alert(4))
        elif len(polls) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(alerts_module, "_sleep", poll)
    result = invoke(home, "alerts", "tail", "--follow")
    assert result.exit_code == 0, result.stderr
    assert [line.rsplit("  ", 1)[1] for line in result.stdout.splitlines()] == [
        f"alert number {i}" for i in (1, 2, 3, 4)
    ]
    assert "was replaced; reading it from the start" in result.stderr


def test_tail_follow_waits_for_the_file_to_appear(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls: list[float] = []

    def poll(_seconds: float) -> None:
        polls.append(_seconds)
        if len(polls) == 2:
            write(home, alert(7))
        elif len(polls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(alerts_module, "_sleep", poll)
    result = invoke(home, "alerts", "tail", "--follow", "--json")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [f"{7:024x}"]
