"""Shared fixtures: a real deployment on loopback (see ``_deployment.py``).

``deployment`` is a :class:`~_deployment.Deployment` with the agents ``alice``, ``bob``
and ``carol`` enrolled and a coordinator running; ``make_deployment(...)`` builds one
with another policy, coordinator config, agent set, a :class:`~_deployment.FakeClock`
for the coordinator (the injected clock: ``clock.advance(600)`` makes every agent's
timestamps ten minutes stale) or a JSONL event file. Everything opened is closed at
teardown.

Test modules import the helpers from ``_deployment`` (``from conftest import`` is
ambiguous across the suite: every conftest is a module named ``conftest``).

``loop_errors`` (used by ``make_deployment``) fails the test if the event loop saw an
exception nobody handled — a crashed connection handler, task or callback: an attack
must be refused, never crash anything.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from _deployment import (  # re-exported for modules that still import them from here
    DEFAULT_AGENTS,
    Deployment,
    FakeClock,
    MakeDeployment,
    RawConnection,
    frame,
    split_frames,
    transport_of,
    wait_until,
)
from trustwire.coordinator.server import CoordinatorConfig
from trustwire.home import Home
from trustwire.policy.model import PolicyConfig

__all__ = [
    "Deployment",
    "FakeClock",
    "MakeDeployment",
    "RawConnection",
    "frame",
    "split_frames",
    "transport_of",
    "wait_until",
]


def _describe(context: dict[str, Any]) -> str:
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        trace = "".join(traceback.format_exception(exc))
        return f"{context.get('message')}\n{trace}"
    return str(context.get("message"))


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Collects what the event loop reports as unhandled; the test fails if anything is."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    try:
        yield contexts
    finally:
        loop.set_exception_handler(previous)
    unhandled = [_describe(context) for context in contexts]
    assert not unhandled, f"the event loop saw unhandled exceptions: {unhandled}"


@pytest.fixture
async def make_deployment(
    tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> AsyncIterator[MakeDeployment]:
    made: list[Deployment] = []

    async def make(
        *,
        agents: Iterable[str | tuple[str, tuple[str, ...]]] = DEFAULT_AGENTS,
        policy: PolicyConfig | None = None,
        config: CoordinatorConfig | None = None,
        clock: Callable[[], float] | None = None,
        jsonl: bool = False,
    ) -> Deployment:
        home = Home.init(tmp_path / f"home{len(made)}", policy=policy)
        deployment = Deployment(
            home,
            policy=home.policy(),
            config=config or CoordinatorConfig(shutdown_grace=2.0),
            clock=clock or time.time,
            jsonl=jsonl,
        )
        made.append(deployment)
        await deployment.start()
        for entry in agents:
            name, roles = (entry, ()) if isinstance(entry, str) else entry
            await deployment.enrol(name, roles)
        return deployment

    yield make
    for deployment in made:
        await deployment.close()
    # Let callbacks scheduled by the closes run before the loop is judged.
    await asyncio.sleep(0)


@pytest.fixture
async def deployment(make_deployment: MakeDeployment) -> Deployment:
    return await make_deployment()
