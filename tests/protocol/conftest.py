"""Tallies of the Noise vector runs, printed at the end of every pytest session.

``test_noise_vectors.py`` records each vector's outcome in a :class:`VectorTally` kept
in the pytest config stash; :func:`pytest_terminal_summary` prints one line per vector
file, so a vector that was not run is visible in the normal output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest


@dataclass
class VectorTally:
    """Outcomes of one vector file's runs in this session."""

    total: int
    ran: int = 0
    passed: int = 0
    not_implemented: int = 0
    missing_patterns: set[str] = field(default_factory=set)

    def line(self, name: str) -> str:
        patterns = ", ".join(sorted(self.missing_patterns)) or "none"
        return (
            f"{name}: {self.ran} of {self.total} vectors ran, {self.passed} passed, "
            f"{self.not_implemented} not implemented (patterns: {patterns})"
        )


_TALLIES = pytest.StashKey[dict[str, VectorTally]]()


@pytest.fixture(scope="session")
def noise_tally(pytestconfig: pytest.Config) -> Callable[[str, int], VectorTally]:
    """``noise_tally(source, total)``: the tally of one vector file, created on first use."""
    tallies = pytestconfig.stash.setdefault(_TALLIES, {})

    def get(source: str, total: int) -> VectorTally:
        return tallies.setdefault(source, VectorTally(total=total))

    return get


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    tallies = config.stash.get(_TALLIES, {})
    if tallies:
        terminalreporter.section("Noise test vectors")
        for name, tally in sorted(tallies.items()):
            terminalreporter.write_line(tally.line(name))
