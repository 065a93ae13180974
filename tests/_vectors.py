"""Locate the public test vectors (``../shared/vectors`` or ``$TRUSTWIRE_VECTORS``).

Vector files are read in place and never copied into the repository. When the folder is
absent (a user's own clone), tests that need it skip with that reason; ``.ci/run`` sets
``TRUSTWIRE_REQUIRE_VECTORS=1`` which turns the absence into a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

_REPO = Path(__file__).resolve().parents[1]


def vectors_dir() -> Path | None:
    env = os.environ.get("TRUSTWIRE_VECTORS")
    path = Path(env) if env else _REPO.parent / "shared" / "vectors"
    return path if path.is_dir() else None


def vector_path(*parts: str) -> Path:
    """Path of a vector file, or skip (fail under CI) when the vectors are absent."""
    base = vectors_dir()
    where = base or _REPO.parent / "shared" / "vectors"
    reason = f"test vectors not found (looked in {where}; set TRUSTWIRE_VECTORS)"
    if base is None or not (base.joinpath(*parts)).is_file():
        if os.environ.get("TRUSTWIRE_REQUIRE_VECTORS"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    return base.joinpath(*parts)


def load_json(*parts: str) -> Any:
    """Load a JSON vector file (see :func:`vector_path`)."""
    return json.loads(vector_path(*parts).read_text(encoding="utf-8"))
