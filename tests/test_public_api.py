from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import trustwire

SRC = Path(trustwire.__file__).parent


def test_all_is_sorted_and_complete() -> None:
    names = [n for n in trustwire.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in trustwire.__all__:
        assert hasattr(trustwire, name), name
    assert set(trustwire._LOCATIONS) | {"__version__"} == set(trustwire.__all__)


def test_error_tree_all_is_sorted_and_every_error_derives_from_the_root() -> None:
    from trustwire import errors

    assert errors.__all__ == sorted(errors.__all__)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.TrustwireError)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_protocol_core_is_sans_io() -> None:
    forbidden = {"asyncio", "socket", "ssl", "sqlite3", "selectors", "threading", "time"}
    for path in sorted((SRC / "protocol").glob("*.py")):
        assert not (_imports(path) & forbidden), f"{path.name} imports {_imports(path) & forbidden}"


def test_only_crypto_imports_cryptography() -> None:
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "crypto":
            continue
        assert "cryptography" not in _imports(path), f"{path.relative_to(SRC)} imports cryptography"


def test_package_imports_in_a_fresh_interpreter() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import trustwire; print(trustwire.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == trustwire.__version__
