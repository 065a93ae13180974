"""Policy decisions, evaluated by Cedar.

Why Cedar (through ``cedarpy``) rather than Casbin: Cedar policies are declarative and
analyzable (no code, no user-defined functions, a formal semantics), ``forbid`` always
overrides ``permit``, the answer is *deny* unless some ``permit`` matches, and entities
are typed (``Agent`` with a ``name`` string and a ``roles`` set), so the policy file's
"any matching deny wins, default deny" semantics are the engine's own rather than a
convention we re-implement in a matcher.

Translation: each rule of a :class:`~trustwire.policy.model.PolicyConfig` becomes one
Cedar ``permit`` (allow) or ``forbid`` (deny) policy, in file order, annotated with
``@id("<rule id>")``. Cedar names them ``policy0``, ``policy1``, ...; we keep that map to
name the deciding rule. Agents are ``Agent::"<did>"``; actions ``Action::"<action>"``;
time limits become ``context.now >= not_before && context.now < expires_at`` with
``now`` in integer epoch seconds (rule boundaries are whole seconds, so flooring ``now``
is exact).

Invariants:

- Fail closed: any error while evaluating (a cedarpy exception or an evaluation error
  reported in the diagnostics) is a *deny* whose reason carries the error.
- Decisions are cached, keyed by everything the policy can see (principal and resource
  DID, name and roles, and the action). An entry is valid only within the interval
  between the two rule time boundaries around the instant it was computed, so a
  cached decision never outlives a ``not_before``/``expires_at`` boundary, even with an
  injected clock that jumps backwards. :meth:`PolicyEngine.replace` swaps the policy and
  clears the cache atomically. The cache is bounded.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import cedarpy

from trustwire.errors import ConfigurationError
from trustwire.policy.model import KNOWN_ACTIONS, Effect, PolicyConfig, Rule, Selector

__all__ = ["Decision", "PolicyEngine", "Principal"]

_DEFAULT_DENY = "no rule allows this (default deny)"

# Types the generated policies are checked against once, when a config is loaded: a
# translation mistake must fail loudly at load time, not silently deny at run time.
_SCHEMA = """
entity Agent { name: String, roles: Set<String> };
action "message", "memory.read", "memory.write", "broker.use" appliesTo {
  principal: Agent,
  resource: Agent,
  context: { now: Long }
};
"""


@dataclass(frozen=True, slots=True)
class Principal:
    """An agent as policy sees it: its DID, registry name and roles."""

    did: str
    name: str
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Roles are part of the cache key, so they must be hashable whatever was passed.
        if not isinstance(self.roles, tuple):
            object.__setattr__(self, "roles", tuple(self.roles))


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`PolicyEngine.authorize`.

    ``rule`` is the id of the deciding rule (``None`` for default deny and failures);
    ``reason`` is a short human-readable explanation for the security-event stream.
    """

    allowed: bool
    rule: str | None
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def _cedar_string(value: str) -> str:
    """A Cedar string literal for ``value`` (validation already restricts the charset;
    escaping anyway means an unexpected character can never change a policy's shape)."""
    parts = ['"']
    for char in value:
        if char in '"\\':
            parts.append("\\" + char)
        elif " " <= char <= "~":
            parts.append(char)
        else:
            parts.append(f"\\u{{{ord(char):x}}}")
    parts.append('"')
    return "".join(parts)


def _selector_condition(variable: str, selector: Selector) -> str | None:
    if selector.any:
        return None
    terms: list[str] = []
    if selector.names:
        names = ", ".join(_cedar_string(name) for name in sorted(selector.names))
        terms.append(f"[{names}].contains({variable}.name)")
    if selector.dids:
        dids = ", ".join(f"Agent::{_cedar_string(did)}" for did in sorted(selector.dids))
        terms.append(f"{variable} in [{dids}]")
    if selector.roles:
        roles = ", ".join(_cedar_string(role) for role in sorted(selector.roles))
        terms.append(f"{variable}.roles.containsAny([{roles}])")
    return "(" + " || ".join(terms) + ")"


def _cedar_policy(rule: Rule) -> str:
    verb = "permit" if rule.effect is Effect.ALLOW else "forbid"
    actions = ", ".join(f"Action::{_cedar_string(action)}" for action in rule.actions)
    conditions = [
        condition
        for condition in (
            _selector_condition("principal", rule.source),
            _selector_condition("resource", rule.target),
        )
        if condition is not None
    ]
    if rule.not_before is not None:
        conditions.append(f"context.now >= {rule.not_before}")
    if rule.expires_at is not None:
        conditions.append(f"context.now < {rule.expires_at}")
    text = (
        f"@id({_cedar_string(rule.id)})\n"
        f"{verb} (\n"
        f"  principal is Agent,\n"
        f"  action in [{actions}],\n"
        f"  resource is Agent\n"
        f")"
    )
    if conditions:
        text += "\nwhen {\n  " + "\n  && ".join(conditions) + "\n}"
    return text + ";\n"


def _translate(config: PolicyConfig) -> tuple[str, cedarpy.PolicySet, dict[str, str]]:
    text = "\n".join(_cedar_policy(rule) for rule in config.rules)
    ids = {f"policy{index}": rule.id for index, rule in enumerate(config.rules)}
    try:
        policy_set = cedarpy.PolicySet.from_str(text)
        if text:
            result = cedarpy.validate_policies(text, _SCHEMA)
            if not result.validation_passed:
                problems = "; ".join(str(error) for error in result.errors)
                raise ConfigurationError(
                    f"policy does not translate to valid Cedar: {problems}", path=config.source
                )
    except ValueError as exc:
        raise ConfigurationError(
            f"policy does not translate to valid Cedar: {exc}", path=config.source
        ) from None
    return text, policy_set, ids


def _entity(agent: Principal) -> dict[str, object]:
    return {
        "uid": {"type": "Agent", "id": agent.did},
        "attrs": {"name": agent.name, "roles": list(agent.roles)},
        "parents": [],
    }


_CacheKey = tuple[str, str, tuple[str, ...], str, str, str, tuple[str, ...]]


class PolicyEngine:
    """Answers "may this agent do this to that agent now?" for one policy.

    ``cache_size`` bounds the decision cache (oldest entries are evicted first).
    """

    def __init__(self, config: PolicyConfig, *, cache_size: int = 65_536) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._cache_size = cache_size
        self._cache: dict[_CacheKey, tuple[Decision, float, float]] = {}
        self._install(config)

    def _install(self, config: PolicyConfig) -> None:
        # Build everything first, then swap: a failing translation leaves the engine
        # serving the previous policy.
        text, policy_set, ids = _translate(config)
        self._config = config
        self._cedar_text = text
        self._policy_set = policy_set
        self._policy_ids = ids
        self._rule_order = {rule.id: index for index, rule in enumerate(config.rules)}
        self._boundaries = config.time_boundaries()
        self._cache = {}

    @property
    def config(self) -> PolicyConfig:
        """The policy in force."""
        return self._config

    @property
    def cedar_policies(self) -> str:
        """The Cedar policy set the configuration was translated to."""
        return self._cedar_text

    def replace(self, config: PolicyConfig) -> None:
        """Put ``config`` in force for every later call (hot reload); clears the cache.

        Raises :class:`ConfigurationError` (keeping the old policy) if it cannot be
        translated.
        """
        self._install(config)

    def authorize(
        self, principal: Principal, action: str, resource: Principal, *, now: float
    ) -> Decision:
        """Decide whether ``principal`` may perform ``action`` on ``resource`` at ``now``
        (epoch seconds). Never raises for bad input: anything unexpected is a deny."""
        key: _CacheKey = (
            principal.did,
            principal.name,
            principal.roles,
            action,
            resource.did,
            resource.name,
            resource.roles,
        )
        cached = self._cache.get(key)
        if cached is not None:
            decision, valid_from, valid_until = cached
            if valid_from <= now < valid_until:
                return decision
        if action not in KNOWN_ACTIONS:
            return Decision(False, None, f"unknown action {action!r} (default deny)")
        if not (isinstance(now, int | float) and math.isfinite(now)):
            return Decision(False, None, "policy evaluation failed: invalid time")
        decision, cacheable = self._evaluate(principal, action, resource, math.floor(now))
        if cacheable:
            index = bisect.bisect_right(self._boundaries, now)
            valid_from = float(self._boundaries[index - 1]) if index > 0 else -math.inf
            valid_until = (
                float(self._boundaries[index]) if index < len(self._boundaries) else math.inf
            )
            if len(self._cache) >= self._cache_size:
                # Evict the oldest insertion: O(1), and hot keys are simply re-inserted.
                del self._cache[next(iter(self._cache))]
            self._cache[key] = (decision, valid_from, valid_until)
        return decision

    def _evaluate(
        self, principal: Principal, action: str, resource: Principal, now: int
    ) -> tuple[Decision, bool]:
        entities = [_entity(principal)]
        if resource.did != principal.did:
            entities.append(_entity(resource))
        request = {
            "principal": {"type": "Agent", "id": principal.did},
            "action": {"type": "Action", "id": action},
            "resource": {"type": "Agent", "id": resource.did},
            "context": {"now": now},
        }
        try:
            result = cedarpy.is_authorized(request, self._policy_set, json.dumps(entities))
            errors = list(result.diagnostics.errors)
            reasons = list(result.diagnostics.reasons)
            allowed = result.allowed
        except Exception as exc:
            return Decision(False, None, f"policy evaluation failed: {exc}"), False
        if errors:
            # Cedar skips a policy whose evaluation errors; a skipped forbid could turn a
            # deny into an allow, so any error denies.
            return Decision(False, None, "policy evaluation failed: " + "; ".join(errors)), False
        rule = self._deciding_rule(reasons)
        if allowed:
            if rule is None:
                return Decision(False, None, "policy evaluation failed: no deciding rule"), False
            return Decision(True, rule, f"allowed by rule {rule}"), True
        if rule is None:
            return Decision(False, None, _DEFAULT_DENY), True
        return Decision(False, rule, f"denied by rule {rule}"), True

    def _deciding_rule(self, reasons: Iterable[str]) -> str | None:
        """The first rule, in file order, among the Cedar policies that decided."""
        rules = [self._policy_ids[reason] for reason in reasons if reason in self._policy_ids]
        if not rules:
            return None
        return min(rules, key=self._rule_order.__getitem__)

    def session_defaults_for(self, principal: Principal) -> dict[str, int | bool] | None:
        """The per-agent session defaults of ``principal`` from the policy's ``sessions``
        section, in the session API's JSON keys, or ``None`` when the section sets
        nothing for it (the built-in defaults apply).

        Merged key by key: ``defaults`` < each of the agent's roles with an entry (in the
        order of ``sessions.roles`` in the file) < the agent's entry by name < by DID.
        """
        merged = self._config.sessions.for_agent(principal.did, principal.name, principal.roles)
        return merged or None

    def rate_limits_for(self, principal: Principal) -> list[tuple[str, str]]:
        """The rate-limit buckets a request by ``principal`` must fit in.

        ``(bucket key, limit string)`` pairs: the agent's own bucket (``agent:<did>``)
        with its specific limit (matched on DID, then name) or else the default limit,
        then one bucket shared by all members of each of its roles that has a limit
        (``role:<name>``).
        """
        limits = self._config.rate_limits
        own = limits.agents.get(principal.did) or limits.agents.get(principal.name)
        buckets = [(f"agent:{principal.did}", own or limits.default)]
        for role in dict.fromkeys(principal.roles):
            role_limit = limits.roles.get(role)
            if role_limit is not None:
                buckets.append((f"role:{role}", role_limit))
        return buckets
