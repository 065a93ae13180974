"""Terminal output: what other parties wrote cannot steer the terminal; plain output stays
greppable."""

from __future__ import annotations

import json

import pytest

from trustwire.cli.output import Output, format_time, safe


def test_safe_escapes_ansi_sequences_bidi_overrides_and_nul() -> None:
    shown = safe("a\x1b[31mred\x00\u202egnp.exe\x9b")
    assert shown == "a\\x1b[31mred\\x00\\u202egnp.exe\\x9b"


def test_safe_keeps_newlines_tabs_and_ordinary_unicode() -> None:
    assert safe("line one\n\tdéjà vu ✔") == "line one\n\tdéjà vu ✔"


def test_safe_makes_rich_markup_inert(capsys: pytest.CaptureFixture[str]) -> None:
    Output().line(f"text: {safe('[bold red]not a style[/bold red]')}")
    assert capsys.readouterr().out == "text: [bold red]not a style[/bold red]\n"


def test_plain_output_keeps_dids_whole_and_does_not_expand_emoji_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    did = "did:key:z6Mk" + "a" * 100
    Output().line(f"agent {did}")
    Output().table(["name", "DID"], [["alice", did]])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"agent {did}"
    assert lines[1].split() == ["name", "DID"]
    assert lines[2].split() == ["alice", did]


def test_json_output_is_one_ascii_line_with_control_characters_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Output(json_mode=True).json({"text": "\x1b[2J\u202e\x9bé"})
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.isascii()
    assert json.loads(out) == {"text": "\x1b[2J\u202e\x9bé"}


def test_json_mode_prints_no_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(json_mode=True)
    out.line("hello")
    out.table(["a"], [["b"]])
    assert capsys.readouterr().out == ""


def test_format_time_is_iso_8601_utc_to_the_second() -> None:
    assert format_time(0.9) == "1970-01-01T00:00:00Z"
    assert format_time(1_700_000_000) == "2023-11-14T22:13:20Z"
