"""``trustwire send`` and ``trustwire listen``: one agent, one connection, one job."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import click

from trustwire.cli.failure import CommandFailed, ExitCode
from trustwire.cli.output import Output, format_time, safe
from trustwire.cli.settings import (
    Settings,
    check_agent_name,
    check_recipient,
    coordinator_option,
    pass_settings,
    run,
)
from trustwire.client.agent import Agent, Credentials, Message, SendResult
from trustwire.crypto.x509 import needs_renewal
from trustwire.errors import ConnectionClosed, TrustwireError
from trustwire.home import Home
from trustwire.identity.keys import AgentIdentity
from trustwire.protocol.channel import CHANNEL_PROTOCOL, SEALED_PROTOCOL

__all__ = ["JOINED_RENEWAL_MARGIN", "listen", "receive_within", "renew_in_band", "send"]

# After the last wanted message, how long the listener stays connected so that the
# SDK's acknowledgements and receipts for it reach the coordinator before we hang up.
_ACK_GRACE = 0.2
# How long to wait for each further message already on its way when draining.
_DRAIN_WAIT = 0.05


_SECONDS = click.FloatRange(min=0, min_open=True)

JOINED_RENEWAL_MARGIN = timedelta(hours=20)
"""A joined home renews its agent's 24 h certificate on any use once it is 4 h old."""

log = logging.getLogger("trustwire.cli")


@click.command(short_help="Send a message; print its signed receipt, or queued.")
@click.option(
    "--as", "sender", required=True, callback=check_agent_name, metavar="NAME", help="Sender."
)
@click.option(
    "--to",
    "recipient",
    required=True,
    callback=check_recipient,
    metavar="NAME|DID",
    help="Recipient.",
)
@click.option(
    "--timeout",
    type=_SECONDS,
    default=10.0,
    show_default=True,
    help="Seconds to wait for the connection and for the receipt.",
)
@coordinator_option
@click.option("--json", "json_mode", is_flag=True, help="Print the result as one JSON object.")
@click.argument("text")
@pass_settings
def send(
    settings: Settings,
    sender: str,
    recipient: str,
    timeout: float,
    coordinator: str | None,
    json_mode: bool,
    text: str,
) -> None:
    """Send TEXT end-to-end encrypted and print the signed receipt, or "queued".

    Exits 0 both when the message was delivered (with a verified receipt) and when the
    coordinator queued it for an offline recipient.
    """
    out = Output(json_mode=json_mode)
    home = settings.home()
    identity, credentials = home.load_agent(sender)
    address = settings.coordinator(coordinator, home)
    result = run(
        _send(identity, credentials, address, recipient, text, timeout, _saver(home, sender))
    )
    _report_send(out, recipient, result)


def _saver(home: Home, name: str) -> Callable[[Credentials], None] | None:
    """How to keep certificates renewed in band: only a home without the CA key (a
    joined home) needs to, since any other renews locally when it loads the agent."""
    if home.has_ca_key:
        return None
    return functools.partial(home.save_credentials, name)


async def renew_in_band(
    agent: Agent,
    save: Callable[[Credentials], None] | None,
    *,
    margin: timedelta = JOINED_RENEWAL_MARGIN,
) -> None:
    """With ``save`` (a joined home): renew the certificate over the connection when it
    has less than ``margin`` left, and save every renewal. An agent used at least once
    between renewals never has to be invited again."""
    if save is None:
        return
    agent.on_credentials_renewed = save
    now = datetime.fromtimestamp(agent.clock(), UTC)
    if needs_renewal(agent.credentials.cert_pem, now=now, margin=margin):
        try:
            await agent.renew_certificate()
        except TrustwireError as exc:
            log.warning("certificate renewal failed (the current one stays in use): %s", exc)


async def _send(
    identity: AgentIdentity,
    credentials: Credentials,
    address: str,
    recipient: str,
    text: str,
    timeout: float,
    save: Callable[[Credentials], None] | None = None,
) -> SendResult:
    phase = f"connecting to {address}"
    agent: Agent | None = None
    try:
        async with asyncio.timeout(timeout):
            agent = await Agent.connect(identity, credentials, coordinator=address, timeout=timeout)
            await renew_in_band(agent, save)
            phase = f"waiting for {recipient}'s receipt"
            return await agent.send(recipient, text, timeout=timeout)
    except TimeoutError:
        raise CommandFailed(f"timed out after {timeout:g} s {phase}", ExitCode.TIMED_OUT) from None
    finally:
        if agent is not None:
            await agent.close()


def _report_send(out: Output, recipient: str, result: SendResult) -> None:
    receipt = result.receipt
    if out.json_mode:
        out.json(
            {
                "status": result.status,
                "id": result.message_id,
                "to": recipient,
                "recipient": result.recipient,
                "via": result.via,
                "receipt": None
                if receipt is None
                else {
                    "message_id": receipt.message_id,
                    "signer": receipt.signer,
                    "signed_at": format_time(receipt.signed_at),
                    "signature": receipt.signature.hex(),
                },
            }
        )
        return
    name = safe(recipient)
    if result.status == "queued" or receipt is None:
        out.line(
            f"[yellow]⧗ queued[/yellow] for {name}: offline, so the message was sealed "
            f"({SEALED_PROTOCOL}) and the coordinator stores it until {name} connects"
        )
        out.table(["field", "value"], [["message id", result.message_id], ["to", result.recipient]])
        return
    protocol = CHANNEL_PROTOCOL if result.via == "channel" else SEALED_PROTOCOL
    signer = (
        "the recipient" if receipt.signer == result.recipient else "[red]NOT the recipient[/red]"
    )
    out.line(f"[green]✔ delivered[/green] to {name} via {result.via} ({protocol})")
    out.table(
        ["field", "value"],
        [
            ["message id", result.message_id],
            ["to", result.recipient],
            ["receipt signer", f"{receipt.signer} ({signer})"],
            ["receipt time", format_time(receipt.signed_at)],
            ["signature", f"{receipt.signature.hex()[:32]}… (Ed25519, verified)"],
        ],
    )


@click.command()
@click.option(
    "--as", "name", required=True, callback=check_agent_name, metavar="NAME", help="Listener."
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Exit after this many messages (messages that arrived with the last one, and "
    "were already acknowledged, are printed too).",
)
@click.option(
    "--timeout",
    type=_SECONDS,
    default=None,
    help="Give up after this many seconds (an error if --count messages have not arrived).",
)
@coordinator_option
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per message and line.")
@pass_settings
def listen(
    settings: Settings,
    name: str,
    count: int | None,
    timeout: float | None,
    coordinator: str | None,
    json_mode: bool,
) -> None:
    """Receive messages as NAME and print them (sender, id, time, text).

    Without --count, listens until interrupted or until --timeout passes.
    """
    out = Output(json_mode=json_mode)
    home = settings.home()
    identity, credentials = home.load_agent(name)
    address = settings.coordinator(coordinator, home)
    run(_listen(out, identity, credentials, address, count, timeout, _saver(home, name)))


async def _listen(
    out: Output,
    identity: AgentIdentity,
    credentials: Credentials,
    address: str,
    count: int | None,
    timeout: float | None,
    save: Callable[[Credentials], None] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    connect_timeout = 10.0 if timeout is None else min(timeout, 10.0)
    agent = await Agent.connect(identity, credentials, coordinator=address, timeout=connect_timeout)
    received = 0
    try:
        await renew_in_band(agent, save)
        out.note(f"listening as {safe(identity.name)} ({identity.did}) on {safe(address)}")
        while count is None or received < count:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            message = await receive_within(agent, remaining)
            if message is None:
                if count is None:
                    return
                raise CommandFailed(
                    f"timed out after {timeout:g} s: received {received} of {count} messages",
                    ExitCode.TIMED_OUT,
                )
            _print_message(out, message)
            received += 1
        # The SDK acknowledges a whole batch on arrival; print what came with the last
        # wanted message rather than drop messages the coordinator now considers delivered.
        await asyncio.sleep(_ACK_GRACE)
        while agent.connected:
            message = await receive_within(agent, _DRAIN_WAIT)
            if message is None:
                break
            _print_message(out, message)
    finally:
        await agent.close()


async def receive_within(agent: Agent, timeout: float | None) -> Message | None:
    """The agent's next message, or ``None`` if ``timeout`` seconds pass first.

    After a timeout the agent is closed. Why: cancelling ``Agent.receive`` while it waits
    leaves the SDK's inbox reader behind, and that reader would take (and lose) the next
    message; closing the agent ends the wait cleanly, and every caller stops after a
    timeout anyway. A message that arrives while the agent closes is still returned.
    """
    pending = asyncio.ensure_future(agent.receive())
    done, _ = await asyncio.wait({pending}, timeout=timeout)
    if pending not in done:
        await agent.close()
        try:
            return await pending
        except ConnectionClosed:
            return None
    return pending.result()


def _print_message(out: Output, message: Message) -> None:
    via = "sealed" if message.sealed else "channel"
    if out.json_mode:
        out.json(
            {
                "id": message.id,
                "sender": message.sender,
                "sender_name": message.sender_name,
                "recipient": message.recipient,
                "sent_at": format_time(message.sent_at),
                "via": via,
                "text": message.text,
                "data_base64": base64.b64encode(message.data).decode("ascii"),
            }
        )
        return
    sender = safe(message.sender_name) or "?"
    out.line(
        f"[bold]{sender}[/bold] {safe(message.sender)}  [dim]{format_time(message.sent_at)}  "
        f"id {message.id}  via {via}[/dim]"
    )
    for line in safe(message.text).split("\n"):
        out.line(f"  {line}")
