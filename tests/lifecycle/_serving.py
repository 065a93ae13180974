"""``trustwire serve`` as a subprocess for the lifecycle tests."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

WAIT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Serving:
    """``trustwire serve`` in a subprocess; stderr collected as it comes."""

    def __init__(self, home: Path, *options: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTWIRE_")}
        env["TRUSTWIRE_HOME"] = str(home)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trustwire.cli", "serve", *(options or ("--no-join",))],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        stream = self.process.stderr
        if stream is not None:
            with stream:
                self.stderr.extend(stream)

    async def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + WAIT
        while not any(text in line for line in self.stderr):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in serve's stderr: {''.join(self.stderr)}")
            await asyncio.sleep(0.02)

    def wait_for_sync(self, text: str) -> None:
        """:meth:`wait_for` outside an event loop."""
        deadline = time.monotonic() + WAIT
        while not any(text in line for line in self.stderr):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in serve's stderr: {''.join(self.stderr)}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()
        self._reader.join(WAIT)
