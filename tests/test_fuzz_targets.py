"""The atheris fuzz targets (``fuzz/targets.py``) run over hypothesis inputs in the normal
suite: any exception other than the documented ones fails here too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

from targets import TARGETS


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_survives_arbitrary_bytes(name: str) -> None:
    target = TARGETS[name]

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=3000))
    def run(data: bytes) -> None:
        target(data)

    run()


def test_every_decoder_family_has_a_target() -> None:
    assert set(TARGETS) == {
        "frames",
        "control",
        "content",
        "did",
        "policy",
        "treehead",
        "api",
        "memory",
        "broker",
    }
