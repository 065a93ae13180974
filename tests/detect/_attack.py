"""Scripted-attack helpers: an event stream on an injected clock, wired to detectors.

An :class:`Attack` is a :class:`~trustwire.events.EventStream` whose clock
is a settable :class:`ManualClock`, with a :class:`~trustwire.detect.DetectorSet`
attached as a sink and a :class:`~trustwire.detect.MemoryAlertSink` behind it. Tests
script an attack by recording events and advancing the clock; no time passes for real.
"""

from __future__ import annotations

from collections.abc import Callable

from trustwire.detect import Alert, AlertKind, DetectorConfig, DetectorSet, MemoryAlertSink
from trustwire.events import DetailValue, EventKind, EventStream, SecurityEvent

T0 = 1_700_000_000.0


class ManualClock:
    """Simulated seconds since the epoch; moves only when told."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Attack:
    """An event stream on a manual clock feeding a detector set."""

    def __init__(self, config: DetectorConfig) -> None:
        self.clock = ManualClock()
        self.sink = MemoryAlertSink(maxlen=None)
        self.detectors = DetectorSet(config, [self.sink])
        self.stream = EventStream([self.detectors], clock=self.clock)

    def record(
        self,
        kind: EventKind,
        *,
        agent: str | None = None,
        peer: str | None = None,
        reason: str | None = None,
        **details: DetailValue,
    ) -> SecurityEvent:
        return self.stream.record(kind, agent=agent, peer=peer, reason=reason, **details)

    def alerts(self, kind: AlertKind | None = None) -> list[Alert]:
        return self.sink.alerts if kind is None else self.sink.of_kind(kind)


MakeAttack = Callable[..., Attack]
