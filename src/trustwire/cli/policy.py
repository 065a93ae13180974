"""``trustwire policy validate|check``: check a policy file, ask what the policy decides.

``validate`` loads a file exactly as ``trustwire serve`` does (YAML checks, then the
Cedar translation) and prints either a summary or the precise ``path:line: message``.
``check`` resolves two agents in the home's registry and asks the same
:class:`~trustwire.policy.engine.PolicyEngine` the coordinator uses, at ``--at`` or now,
then explains the answer: the deciding rule, its time window, and for a default deny
the rules that would match at another time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from trustwire.cli.directory import resolve_agent
from trustwire.cli.failure import CommandFailed, ExitCode
from trustwire.cli.output import Output, format_time, safe
from trustwire.cli.settings import Settings, check_recipient, pass_settings, run
from trustwire.home import Home
from trustwire.policy import KNOWN_ACTIONS, Effect, PolicyConfig, PolicyEngine, load_policy
from trustwire.policy.engine import Principal
from trustwire.policy.model import Rule, Selector
from trustwire.store.base import AgentRecord

__all__ = ["policy"]


@click.group()
def policy() -> None:
    """Validate policy files and ask what the policy decides."""


# -- validate -----------------------------------------------------------------------------


@policy.command("validate", short_help="Check a policy file; print a summary.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check policy FILE as `trustwire serve` would load it.

    Prints "valid" and a summary, or exits 3 with the file, line and problem.
    """
    out = Output()
    config = load_policy(file)
    PolicyEngine(config)  # the Cedar translation can fail too; serve would refuse it
    now = time.time()
    allows = sum(rule.effect is Effect.ALLOW for rule in config.rules)
    out.line(f"[green]✔[/green] valid: {safe(str(file))}")
    out.line(
        f"rules: {len(config.rules)} ({allows} allow, {len(config.rules) - allows} deny; "
        "default deny)"
    )
    if config.rules:
        out.table(
            ["rule", "effect", "from", "to", "actions", "in force"],
            [
                [
                    safe(rule.id),
                    rule.effect.value,
                    safe(_selector_text(rule.source)),
                    safe(_selector_text(rule.target)),
                    ", ".join(rule.actions),
                    _window_text(rule, now),
                ]
                for rule in config.rules
            ],
        )
    roles = ", ".join(sorted(config.roles)) or "none"
    out.line(f"roles: {len(config.roles)} ({safe(roles)})")
    limited = [rule for rule in config.rules if _limited(rule)]
    out.line(f"time-limited rules: {len(limited)}")
    for rule in limited:
        out.line(f"  {safe(rule.id)}: {_window_text(rule, now)}")
    out.line(f"rate limits: {safe(_rate_limit_text(config))}")
    size = config.max_message_bytes
    out.line(f"max message size: {f'{size} bytes' if size is not None else 'no policy limit'}")
    monitoring = config.monitoring
    out.line(
        "monitoring: "
        f"security events {_on(monitoring.security_events)}, "
        f"anomaly detection {_on(monitoring.anomaly_detection)}, "
        f"automatic alerts {_on(monitoring.automatic_alerts)}"
    )


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _limited(rule: Rule) -> bool:
    return rule.not_before is not None or rule.expires_at is not None


def _selector_text(selector: Selector) -> str:
    if selector.any:
        return "*"
    parts = [*sorted(selector.names), *sorted(selector.dids)]
    parts += [f"role:{role}" for role in sorted(selector.roles)]
    return ", ".join(parts)


def _window_text(rule: Rule, now: float) -> str:
    """When ``rule`` applies, and whether it does at ``now``."""
    if not _limited(rule):
        return "always"
    bounds = []
    if rule.not_before is not None:
        bounds.append(f"from {format_time(rule.not_before)}")
    if rule.expires_at is not None:
        bounds.append(f"until {format_time(rule.expires_at)}")
    if rule.not_before is not None and now < rule.not_before:
        state = "not yet in force"
    elif rule.expires_at is not None and now >= rule.expires_at:
        state = "expired"
    else:
        state = "in force"
    return f"{' '.join(bounds)} ({state})"


def _rate_limit_text(config: PolicyConfig) -> str:
    limits = config.rate_limits
    parts = [f"default {limits.default} per agent"]
    parts += [f"role {role} {limit} shared" for role, limit in sorted(limits.roles.items())]
    parts += [f"agent {agent} {limit}" for agent, limit in sorted(limits.agents.items())]
    return "; ".join(parts)


# -- check --------------------------------------------------------------------------------


def _parse_at(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """Click callback: an ISO 8601 instant with a timezone, as epoch seconds."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-01-02T03:04:05Z)"
        ) from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no timezone (add Z or +HH:MM)")
    return moment.astimezone(UTC).timestamp()


@policy.command("check", short_help="Decide whether one agent may act on another.")
@click.option(
    "--from",
    "source",
    required=True,
    callback=check_recipient,
    metavar="NAME|DID",
    help="The acting agent.",
)
@click.option(
    "--to",
    "target",
    required=True,
    callback=check_recipient,
    metavar="NAME|DID",
    help="The agent acted upon.",
)
@click.option(
    "--action",
    type=click.Choice(sorted(KNOWN_ACTIONS)),
    default="message",
    show_default=True,
    help="The action to decide.",
)
@click.option(
    "--at",
    "at",
    callback=_parse_at,
    metavar="ISO8601",
    help="Decide at this instant (e.g. 2026-01-02T03:04:05Z) [default: now].",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Decide with this policy file [default: HOME/policy.yaml], e.g. a draft.",
)
@click.option("--json", "json_mode", is_flag=True, help="Print the decision as one JSON object.")
@pass_settings
def check(
    settings: Settings,
    source: str,
    target: str,
    action: str,
    at: float | None,
    policy_path: Path | None,
    json_mode: bool,
) -> None:
    """Decide whether one agent may act on another, and say which rule decided.

    Exits 0 when allowed and 7 when denied (by a rule, by default deny, or because an
    agent is revoked, which the coordinator refuses whatever the policy says).
    """
    out = Output(json_mode=json_mode)
    home = settings.home(keys=False)
    config = load_policy(policy_path or home.policy_path)
    engine = PolicyEngine(config)
    principal_record, resource_record = run(_resolve(home, source, target))
    now = time.time() if at is None else at
    principal, resource = _principal(principal_record), _principal(resource_record)
    decision = engine.authorize(principal, action, resource, now=now)
    rule = next((r for r in config.rules if r.id == decision.rule), None)
    revoked = [record.name for record in (principal_record, resource_record) if record.revoked]
    allowed = decision.allowed and not revoked
    inactive = _inactive_matches(config, principal, action, resource, now)
    if rule is not None:
        why = f"{decision.reason} ({rule.effect.value}, {_window_text(rule, now)})"
    else:
        why = decision.reason
    notes = [
        f"rule {r.id} would {r.effect.value} this but is not in force then: {_window_text(r, now)}"
        for r in inactive
    ]
    notes += [
        f"{name} is revoked: the coordinator refuses it whatever the policy says"
        for name in revoked
    ]
    if json_mode:
        out.json(
            {
                "allowed": allowed,
                "from": {"name": principal.name, "did": principal.did},
                "to": {"name": resource.name, "did": resource.did},
                "action": action,
                "at": format_time(now),
                "policy_allowed": decision.allowed,
                "rule": decision.rule,
                "reason": decision.reason,
                "not_before": format_time(rule.not_before) if rule and rule.not_before else None,
                "expires_at": format_time(rule.expires_at) if rule and rule.expires_at else None,
                "revoked": revoked,
                "notes": notes,
            }
        )
    else:
        verdict = "[green]allowed[/green]" if allowed else "[red]denied[/red]"
        out.line(
            f"{verdict}: {safe(principal.name)} → {safe(resource.name)} ({action}) "
            f"at {format_time(now)}"
        )
        out.line(f"  rule: {safe(decision.rule or '-')}")
        out.line(f"  why:  {safe(why)}")
        for note in notes:
            out.line(f"  note: {safe(note)}")
    if not allowed:
        cause = f"{revoked[0]} is revoked" if revoked else decision.reason
        raise CommandFailed(
            f"denied: {principal.name} may not {action} {resource.name}: {cause}", ExitCode.DENIED
        )


async def _resolve(home: Home, source: str, target: str) -> tuple[AgentRecord, AgentRecord]:
    store = await home.open_store()
    try:
        return await resolve_agent(store, source), await resolve_agent(store, target)
    finally:
        await store.close()


def _principal(record: AgentRecord) -> Principal:
    return Principal(did=record.did, name=record.name, roles=tuple(record.roles))


def _matches(selector: Selector, agent: Principal) -> bool:
    """Whether ``selector`` selects ``agent`` (the rule the Cedar translation encodes)."""
    return (
        selector.any
        or agent.name in selector.names
        or agent.did in selector.dids
        or not selector.roles.isdisjoint(agent.roles)
    )


def _inactive_matches(
    config: PolicyConfig, principal: Principal, action: str, resource: Principal, now: float
) -> list[Rule]:
    """Time-limited rules that match the request but are outside their window at ``now``:
    why a default deny happened, or what will change the answer at another time."""
    return [
        rule
        for rule in config.rules
        if _limited(rule)
        and not rule.active_at(now)
        and action in rule.actions
        and _matches(rule.source, principal)
        and _matches(rule.target, resource)
    ]
