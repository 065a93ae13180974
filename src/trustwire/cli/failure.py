"""How a failed command ends: one line on stderr and an exit code that names the cause.

This is the one place where exceptions become exit codes (:func:`describe`); the root
command group calls it for anything a command raises, so no command prints a traceback
for a condition it expected. Exit codes:

====  =====================  ==================================================
code  name                   when
====  =====================  ==================================================
0     OK                     success (``send`` also exits 0 for ``queued``)
1     FAILED                 any other failure, including a check the demo failed
2     USAGE                  bad arguments (click's own usage errors)
3     CONFIGURATION          no home, invalid config or policy, duplicate agent
4     UNKNOWN_AGENT          a name or DID that is not enrolled
5     UNREACHABLE            cannot connect, or the connection was lost
6     NOT_AUTHENTICATED      the coordinator refused this agent's identity
7     DENIED                 the policy (or a rate limit) refused the action
8     TIMED_OUT              a timeout passed (receipt, ``listen --timeout``)
9     KEYS                   a key file is unreadable or the passphrase is wrong
130   INTERRUPTED            Ctrl-C
====  =====================  ==================================================

Messages are built from exception messages, which by the rule in
:mod:`trustwire.errors` never hold key material or message content.
"""

from __future__ import annotations

import enum

from trustwire.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionClosed,
    ConnectionFailed,
    DuplicateAgent,
    KeyFileError,
    PolicyDenied,
    RateLimited,
    ReceiptTimeout,
    Revoked,
    SecurityRejected,
    StoreError,
    TransportError,
    TrustwireError,
    UnknownAgent,
)

__all__ = ["CommandFailed", "ExitCode", "describe"]


class ExitCode(enum.IntEnum):
    """The process exit status of a ``trustwire`` command."""

    OK = 0
    FAILED = 1
    USAGE = 2
    CONFIGURATION = 3
    UNKNOWN_AGENT = 4
    UNREACHABLE = 5
    NOT_AUTHENTICATED = 6
    DENIED = 7
    TIMED_OUT = 8
    KEYS = 9
    INTERRUPTED = 130


class CommandFailed(Exception):
    """A failure the CLI itself detects (``listen`` timed out, a port is taken, ...)."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


_PASSPHRASE_HINT = " (set TRUSTWIRE_PASSPHRASE or pass --ask-passphrase)"  # noqa: S105 - a hint


def describe(exc: BaseException) -> tuple[ExitCode, str] | None:
    """The exit code and one-line reason for ``exc``; ``None`` if it is not expected.

    Order matters: specific classes are tested before the classes they derive from.
    """
    message = _one_line(str(exc))
    if isinstance(exc, CommandFailed):
        return exc.code, _one_line(exc.message)
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, "interrupted"
    if isinstance(exc, TrustwireError):
        return _describe_trustwire(exc, message)
    if isinstance(exc, TimeoutError):
        return ExitCode.TIMED_OUT, f"timed out{': ' + message if message else ''}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return ExitCode.FAILED, f"{where}{exc.strerror or message}"
    return None


def _describe_trustwire(exc: TrustwireError, message: str) -> tuple[ExitCode, str]:
    if isinstance(exc, DuplicateAgent):
        return ExitCode.CONFIGURATION, message
    if isinstance(exc, ConfigurationError):
        return ExitCode.CONFIGURATION, message
    if isinstance(exc, KeyFileError):
        hint = _PASSPHRASE_HINT if "passphrase" in message else ""
        return ExitCode.KEYS, f"{message}{hint}"
    if isinstance(exc, UnknownAgent):
        return ExitCode.UNKNOWN_AGENT, f"unknown agent: {message}"
    if isinstance(exc, AuthenticationFailed | Revoked):
        return ExitCode.NOT_AUTHENTICATED, f"not authenticated: {message}"
    if isinstance(exc, PolicyDenied):
        return ExitCode.DENIED, f"denied: {message}"
    if isinstance(exc, RateLimited):
        return ExitCode.DENIED, f"rate limited: {message}"
    if isinstance(exc, SecurityRejected):
        return ExitCode.DENIED, f"rejected: {message}"
    if isinstance(exc, ReceiptTimeout):
        return ExitCode.TIMED_OUT, f"timed out: {message}"
    if isinstance(exc, ConnectionFailed):
        return ExitCode.UNREACHABLE, message
    if isinstance(exc, ConnectionClosed):
        return ExitCode.UNREACHABLE, f"disconnected: {exc.reason or message}"
    if isinstance(exc, TransportError):
        return ExitCode.UNREACHABLE, message
    if isinstance(exc, StoreError):
        return ExitCode.FAILED, f"store: {message}"
    return ExitCode.FAILED, message or type(exc).__name__


def _one_line(text: str) -> str:
    """Collapse whitespace so a reason always fits one line."""
    return " ".join(text.split())
