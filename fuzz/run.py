"""Run one fuzz target under atheris (coverage-guided), on purpose, not in CI.

    pip install atheris
    python fuzz/run.py frames -max_total_time=300      # any libFuzzer flags follow
    python fuzz/run.py --list

Targets are in ``fuzz/targets.py``; ``tests/test_fuzz_targets.py`` runs each of them over
a hypothesis corpus so a regression shows up in the normal suite too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install atheris")
    # Instrument trustwire for coverage feedback: without it the fuzzer is blind.
    with atheris.instrument_imports(include=["trustwire"]):
        from targets import TARGETS
    if len(sys.argv) < 2 or sys.argv[1] in {"-h", "--help", "--list"}:
        print("targets:", ", ".join(sorted(TARGETS)))
        print("usage: python fuzz/run.py TARGET [libFuzzer flags, e.g. -max_total_time=60]")
        return
    name = sys.argv[1]
    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}; choose from {', '.join(sorted(TARGETS))}")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
