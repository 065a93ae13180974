"""The ``trustwire`` command: the root group, its shared options and failure handling.

Every subcommand runs inside :meth:`_RootGroup.invoke`, which turns any exception the
command did not handle into one ``error: ...`` line on stderr and the exit code chosen
by :func:`trustwire.cli.failure.describe`. An exception nobody expected is reported the
same way as an internal error; ``TRUSTWIRE_DEBUG=1`` shows its traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from trustwire import __version__
from trustwire.cli.agents import agent
from trustwire.cli.alerts import alerts
from trustwire.cli.audit import audit
from trustwire.cli.broker import broker
from trustwire.cli.demo import demo
from trustwire.cli.domain import init
from trustwire.cli.failure import ExitCode, describe
from trustwire.cli.memory import memory
from trustwire.cli.messaging import listen, send
from trustwire.cli.policy import policy
from trustwire.cli.registry import registry
from trustwire.cli.serve import serve
from trustwire.cli.sessions import session
from trustwire.cli.settings import DEFAULT_HOME, HOME_ENV, Settings

__all__ = ["cli", "main"]

_DEBUG_ENV = "TRUSTWIRE_DEBUG"


class _RootGroup(click.Group):
    """A group that maps failures of any subcommand to a reason and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`trustwire ... | head`): nothing to report. Point stdout
            # at /dev/null so the interpreter's final flush does not complain again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)
        except (Exception, KeyboardInterrupt) as exc:
            described = describe(exc)
            if described is None:
                if os.environ.get(_DEBUG_ENV):
                    raise
                described = (
                    ExitCode.FAILED,
                    f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}",
                )
            code, reason = described
            click.echo(f"error: {reason}", err=True)
            ctx.exit(int(code))


@click.group(cls=_RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="trustwire")
@click.option(
    "--home",
    "home_path",
    envvar=HOME_ENV,
    default=DEFAULT_HOME,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Deployment directory [env {HOME_ENV}].",
)
@click.option(
    "--ask-passphrase",
    is_flag=True,
    help="Prompt for the key passphrase instead of reading TRUSTWIRE_PASSPHRASE.",
)
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug) to stderr.")
@click.pass_context
def cli(ctx: click.Context, home_path: Path, ask_passphrase: bool, verbose: int) -> None:
    """Secure agent-to-agent messaging: identities, a coordinator, encrypted channels.

    Private keys are encrypted at rest with TRUSTWIRE_PASSPHRASE when it is set.
    """
    ctx.obj = Settings(home_path=home_path, ask_passphrase=ask_passphrase, verbose=verbose)
    _configure_logging(verbose)


def _configure_logging(verbose: int) -> None:
    """Send trustwire's log records to stderr: warnings by default, more with ``-v``."""
    logger = logging.getLogger("trustwire")
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logger.setLevel(level)
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        logger.addHandler(handler)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (click's runner
    swaps it per invocation, so a stream captured once could be stale)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:
            self.handleError(record)


cli.add_command(init)
cli.add_command(serve)
cli.add_command(agent)
cli.add_command(send)
cli.add_command(listen)
cli.add_command(demo)
cli.add_command(policy)
cli.add_command(audit)
cli.add_command(alerts)
cli.add_command(registry)
cli.add_command(session)
cli.add_command(broker)
cli.add_command(memory)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="trustwire")
