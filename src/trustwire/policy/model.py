"""The policy file: its shape, its validation, and the value objects it becomes.

A policy file is YAML (safe loading only) of this shape::

    version: 1
    policies:
      communication:
        default: deny                 # required; the only accepted value
        max_message_bytes: 65536      # optional per-message payload limit
        rules:                        # any matching deny wins over any allow
          - id: agents-may-talk       # required, unique
            effect: allow             # allow | deny
            from: "*"                 # "*" | {agents: [NAME|DID...], roles: [ROLE...]}
            to: "*"                   # same shape
            actions: [message]        # message, memory.read, memory.write, broker.use
            not_before: 2026-01-01T00:00:00Z   # optional (time-limited grant)
            expires_at: 2026-12-31T00:00:00Z   # optional
      access_control:
        roles:                        # role name -> description
          worker: "does work"
        rate_limits:                  # `limits` notation, e.g. "200/second", "10/second;500/hour"
          default: "200/second"       # per agent, unless the agent has its own limit
          roles: {worker: "500/second"}   # one bucket shared by all members of the role
          agents: {alice: "50/second"}    # replaces the default for that agent
      monitoring:
        security_events: true
        anomaly_detection: true
        automatic_alerts: true
      sessions:                       # optional per-agent session defaults
        defaults: {timeoutMinutes: 60, autoRenew: true}
        roles: {worker: {autoRenew: false}}      # defined roles only
        agents: {alice: {timeoutMinutes: 15}}    # name or DID

Invariants (each is checked by :func:`parse_policy`; violations raise
:class:`~trustwire.errors.ConfigurationError` naming the file and YAML line):

- Default deny is not optional: ``communication.default`` must be present and ``deny``.
  Nothing is allowed unless an ``allow`` rule matches, and a matching ``deny`` rule
  always wins.
- Unknown keys are errors everywhere, and so are duplicate mapping keys, YAML anchors
  and aliases: a typo or a surprising merge must never silently weaken policy.
- Every role named in a rule, a rate limit or a session default is defined under
  ``access_control.roles``.
- Session defaults use the session API's keys and ranges (``timeoutMinutes`` 5-1440,
  ``autoRenew``, ``maxDurationMinutes`` 5-2880 and not below a ``timeoutMinutes`` in the
  same entry, ``warningThresholdMinutes`` 1-2880); unlike a session request, the file is
  refused rather than clamped when one is out of range.
- Rule ids are unique; timestamps carry a timezone, are whole seconds, and
  ``expires_at`` is after ``not_before``. A rule applies when
  ``not_before <= now < expires_at``.
- Input is bounded (:class:`trustwire.yamlfile.YamlFile` reads and composes it): files
  over 1 MiB are refused before parsing, nesting deeper than 64 levels is refused while
  composing, and nothing but a :class:`~trustwire.errors.ConfigurationError` escapes for
  any input text.

A selector (``from``/``to``) matches an agent when it is ``"*"``, or when the agent's
name or DID is listed under ``agents``, or when the agent holds any role listed under
``roles``. Entries starting with ``did:`` are DIDs; others are agent names.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, NoReturn

import limits
import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trustwire.errors import ConfigurationError
from trustwire.sessions.model import (
    MAX_MAX_DURATION_MINUTES,
    MAX_TIMEOUT_MINUTES,
    MAX_WARNING_MINUTES,
    MIN_TIMEOUT_MINUTES,
    MIN_WARNING_MINUTES,
)
from trustwire.yamlfile import BOOL, INT, NULL, STR, TIMESTAMP, YamlFile, describe, line_of

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "KNOWN_ACTIONS",
    "MAX_POLICY_BYTES",
    "Effect",
    "Monitoring",
    "PolicyConfig",
    "RateLimits",
    "Rule",
    "Selector",
    "SessionDefaults",
    "default_policy",
    "load_policy",
    "parse_policy",
    "parse_rate_limit",
]

MAX_POLICY_BYTES = 1024 * 1024
"""Policy files larger than this are refused before parsing."""

MAX_MESSAGE_BYTES_LIMIT = 64 * 1024 * 1024
"""The largest ``max_message_bytes`` a policy may set."""

DEFAULT_RATE_LIMIT = "1000/second"
"""The per-agent limit used when a policy names none."""

KNOWN_ACTIONS: frozenset[str] = frozenset({"message", "memory.read", "memory.write", "broker.use"})
"""Actions a rule may name."""

_MAX_DEPTH = 64
_MAX_ITEMS = 10_000
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_ROLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Agent names, and the broker service names `broker.use` rules name (Secretless service
#: names often contain underscores).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@_-]{0,127}")
_DID_RE = re.compile(r"did:key:z[1-9A-HJ-NP-Za-km-z]{1,128}")

_POLICY_FILE: Final = YamlFile(
    kind="policy file",
    max_bytes=MAX_POLICY_BYTES,
    max_depth=_MAX_DEPTH,
    refusal_suffix=" in policy files",
    # The usual cause of an alias error: an unquoted `*` selector.
    alias_hint=' (write "*" in quotes)',
)


class Effect(StrEnum):
    """What a matching rule does."""

    ALLOW = "allow"
    DENY = "deny"


def parse_rate_limit(text: str) -> tuple[limits.RateLimitItem, ...]:
    """Parse a rate limit in ``limits`` notation (``"200/second"``, ``"10/second;500/hour"``).

    Raises :class:`ConfigurationError` when the string is not valid or allows nothing.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"invalid rate limit {text!r}: expected e.g. '200/second'")
    try:
        items = tuple(limits.parse_many(text))
    except ValueError:
        raise ConfigurationError(
            f"invalid rate limit {text!r}: expected e.g. '200/second' or '10/second;500/hour'"
        ) from None
    if not items:
        raise ConfigurationError(f"invalid rate limit {text!r}: no limit given")
    for item in items:
        if item.amount < 1:
            raise ConfigurationError(f"invalid rate limit {text!r}: the amount must be at least 1")
    return items


@dataclass(frozen=True, slots=True)
class Selector:
    """Which agents a rule's ``from`` or ``to`` matches.

    ``any`` matches every agent; otherwise an agent matches when its name is in
    ``names``, its DID is in ``dids``, or it holds one of ``roles``.
    """

    any: bool = False
    names: frozenset[str] = frozenset()
    dids: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    @classmethod
    def everyone(cls) -> Selector:
        """The ``"*"`` selector."""
        return cls(any=True)

    def to_data(self) -> str | dict[str, list[str]]:
        """The YAML-ready form (``"*"`` or ``{agents: [...], roles: [...]}``)."""
        if self.any:
            return "*"
        data: dict[str, list[str]] = {}
        agents = sorted(self.names) + sorted(self.dids)
        if agents:
            data["agents"] = agents
        if self.roles:
            data["roles"] = sorted(self.roles)
        return data


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``communication.rules`` entry. Times are UTC epoch seconds."""

    id: str
    effect: Effect
    source: Selector
    target: Selector
    actions: tuple[str, ...]
    not_before: int | None = None
    expires_at: int | None = None

    def active_at(self, now: float) -> bool:
        """Whether the rule's time window contains ``now``."""
        if self.not_before is not None and now < self.not_before:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class RateLimits:
    """``access_control.rate_limits``; every value is a validated limit string."""

    default: str = DEFAULT_RATE_LIMIT
    roles: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    agents: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Monitoring:
    """``monitoring`` switches."""

    security_events: bool = True
    anomaly_detection: bool = True
    automatic_alerts: bool = True


SESSION_SETTINGS: Final = {
    "timeoutMinutes": (MIN_TIMEOUT_MINUTES, MAX_TIMEOUT_MINUTES),
    "autoRenew": None,
    "maxDurationMinutes": (MIN_TIMEOUT_MINUTES, MAX_MAX_DURATION_MINUTES),
    "warningThresholdMinutes": (MIN_WARNING_MINUTES, MAX_WARNING_MINUTES),
}
"""Keys a session-defaults entry may set, with their ranges (``None``: a boolean)."""


def _frozen(
    entries: Mapping[str, Mapping[str, int | bool]],
) -> Mapping[str, Mapping[str, int | bool]]:
    return MappingProxyType({key: MappingProxyType(dict(value)) for key, value in entries.items()})


@dataclass(frozen=True, slots=True)
class SessionDefaults:
    """``sessions``: per-agent session defaults, in the session API's JSON keys.

    ``defaults`` applies to every agent, ``roles`` to members of a role (later entries
    in the file win over earlier ones), ``agents`` to one agent by name or DID (a DID
    entry wins over a name entry). See
    :meth:`trustwire.policy.engine.PolicyEngine.session_defaults_for`.
    """

    defaults: Mapping[str, int | bool] = field(default_factory=lambda: MappingProxyType({}))
    roles: Mapping[str, Mapping[str, int | bool]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    agents: Mapping[str, Mapping[str, int | bool]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def __post_init__(self) -> None:
        # Read-only copies: a policy in force must not change under the engine.
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "roles", _frozen(self.roles))
        object.__setattr__(self, "agents", _frozen(self.agents))

    def __bool__(self) -> bool:
        return bool(self.defaults or self.roles or self.agents)

    def to_data(self) -> dict[str, Any]:
        """The YAML-ready form (empty parts left out)."""
        data: dict[str, Any] = {}
        if self.defaults:
            data["defaults"] = dict(self.defaults)
        if self.roles:
            data["roles"] = {role: dict(entry) for role, entry in self.roles.items()}
        if self.agents:
            data["agents"] = {agent: dict(entry) for agent, entry in self.agents.items()}
        return data

    def for_agent(self, did: str, name: str, roles: tuple[str, ...]) -> dict[str, int | bool]:
        """The merged defaults for one agent: defaults < roles (file order) < name < DID."""
        merged: dict[str, int | bool] = dict(self.defaults)
        held = set(roles)
        for role, entry in self.roles.items():
            if role in held:
                merged.update(entry)
        for key in (name, did):
            own = self.agents.get(key)
            if own is not None:
                merged.update(own)
        return merged


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """A validated policy. Build one with :func:`parse_policy`, :func:`load_policy` or
    :func:`default_policy`."""

    rules: tuple[Rule, ...]
    roles: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    rate_limits: RateLimits = field(default_factory=RateLimits)
    monitoring: Monitoring = field(default_factory=Monitoring)
    max_message_bytes: int | None = None
    version: int = 1
    source: str = field(default="<default>", compare=False)
    sessions: SessionDefaults = field(default_factory=SessionDefaults)

    def time_boundaries(self) -> tuple[int, ...]:
        """Every instant (epoch seconds) at which some rule starts or stops applying."""
        points: set[int] = set()
        for rule in self.rules:
            if rule.not_before is not None:
                points.add(rule.not_before)
            if rule.expires_at is not None:
                points.add(rule.expires_at)
        return tuple(sorted(points))

    def to_yaml(self) -> str:
        """Render as a policy file that :func:`parse_policy` reads back to an equal config."""
        communication: dict[str, Any] = {"default": "deny"}
        if self.max_message_bytes is not None:
            communication["max_message_bytes"] = self.max_message_bytes
        rules: list[dict[str, Any]] = []
        for rule in self.rules:
            data: dict[str, Any] = {
                "id": rule.id,
                "effect": rule.effect.value,
                "from": rule.source.to_data(),
                "to": rule.target.to_data(),
                "actions": list(rule.actions),
            }
            if rule.not_before is not None:
                data["not_before"] = _format_time(rule.not_before)
            if rule.expires_at is not None:
                data["expires_at"] = _format_time(rule.expires_at)
            rules.append(data)
        communication["rules"] = rules
        rate_limits: dict[str, Any] = {"default": self.rate_limits.default}
        if self.rate_limits.roles:
            rate_limits["roles"] = dict(self.rate_limits.roles)
        if self.rate_limits.agents:
            rate_limits["agents"] = dict(self.rate_limits.agents)
        policies: dict[str, Any] = {
            "communication": communication,
            "access_control": {"roles": dict(self.roles), "rate_limits": rate_limits},
            "monitoring": {
                "security_events": self.monitoring.security_events,
                "anomaly_detection": self.monitoring.anomaly_detection,
                "automatic_alerts": self.monitoring.automatic_alerts,
            },
        }
        if self.sessions:
            policies["sessions"] = self.sessions.to_data()
        document = {"version": self.version, "policies": policies}
        header = (
            "# trustwire policy (see docs/POLICY.md).\n"
            "# Default deny: nothing is allowed unless an allow rule matches,\n"
            "# and any matching deny rule wins over every allow rule.\n"
        )
        body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
        return header + body


def default_policy() -> PolicyConfig:
    """Any enrolled agent may message any other, at up to 1000 messages per second each,
    and use the shared memories of any other (each memory's own grants still decide who
    may read or write it). No agent may use a broker service until a rule allows it."""
    return PolicyConfig(
        rules=(
            Rule(
                id="agents-may-message",
                effect=Effect.ALLOW,
                source=Selector.everyone(),
                target=Selector.everyone(),
                actions=("message",),
            ),
            Rule(
                id="agents-may-share-memory",
                effect=Effect.ALLOW,
                source=Selector.everyone(),
                target=Selector.everyone(),
                actions=("memory.read", "memory.write"),
            ),
        ),
        rate_limits=RateLimits(default=DEFAULT_RATE_LIMIT),
    )


def load_policy(path: str | os.PathLike[str]) -> PolicyConfig:
    """Read and validate the policy file at ``path``.

    Raises :class:`ConfigurationError` for unreadable, oversized or invalid files.
    """
    where = os.fspath(path)
    return parse_policy(_POLICY_FILE.read(where), source=where)


def parse_policy(text: str, *, source: str = "<string>") -> PolicyConfig:
    """Validate policy YAML ``text``; ``source`` names it in error messages.

    Raises :class:`ConfigurationError` (and nothing else) for any invalid text.
    """
    if not isinstance(text, str):
        raise TypeError("parse_policy expects str; decode the file first")
    root = _POLICY_FILE.compose(text, source=source)
    return _Validator(source).policy(root)


def _format_time(epoch: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Validator:
    """Walks the composed node tree, turning it into a PolicyConfig or a precise error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = SafeConstructor()

    # -- primitives ------------------------------------------------------------------

    def fail(self, node: Node, message: str) -> NoReturn:
        raise ConfigurationError(message, path=self.source, line=line_of(node.start_mark))

    def mapping(
        self, node: Node, what: str, *, required: set[str], optional: set[str]
    ) -> dict[str, tuple[Node, Node]]:
        """The entries of a mapping node, by key, with their key and value nodes."""
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what} must be a mapping, not {_kind(node)}")
        entries: dict[str, tuple[Node, Node]] = {}
        allowed = required | optional
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != STR:
                self.fail(key_node, f"{what}: keys must be strings")
            key = key_node.value
            if key in entries:
                self.fail(key_node, f"{what}: duplicate key {key!r}")
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.fail(key_node, f"{what}: unknown key {key!r} (expected one of: {known})")
            entries[key] = (key_node, value_node)
        missing = sorted(required - entries.keys())
        if missing:
            self.fail(node, f"{what}: missing required key {missing[0]!r}")
        return entries

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.fail(node, f"{what} must be a list, not {_kind(node)}")
        if len(node.value) > _MAX_ITEMS:
            self.fail(node, f"{what} has more than {_MAX_ITEMS} entries")
        return list(node.value)

    def string(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != STR:
            self.fail(node, f"{what} must be a string, not {_kind(node)}")
        return str(node.value)

    def boolean(self, node: Node, what: str) -> bool:
        if not isinstance(node, ScalarNode) or node.tag != BOOL:
            self.fail(node, f"{what} must be true or false, not {_kind(node)}")
        return bool(self._constructor.construct_yaml_bool(node))

    def integer(self, node: Node, what: str) -> int:
        if not isinstance(node, ScalarNode) or node.tag != INT:
            self.fail(node, f"{what} must be an integer, not {_kind(node)}")
        try:
            return int(self._constructor.construct_yaml_int(node))
        except ValueError:
            self.fail(node, f"{what} is not a usable integer")

    def timestamp(self, node: Node, what: str) -> int:
        """A timestamp with a timezone, in whole seconds, as UTC epoch seconds."""
        if not isinstance(node, ScalarNode) or node.tag not in (TIMESTAMP, STR):
            self.fail(node, f"{what} must be a timestamp like 2026-01-01T00:00:00Z")
        try:
            if node.tag == TIMESTAMP:
                moment = self._constructor.construct_yaml_timestamp(node)
            else:
                moment = datetime.datetime.fromisoformat(str(node.value))
        except (ValueError, OverflowError):
            self.fail(node, f"{what}: {node.value!r} is not a valid timestamp")
        if not isinstance(moment, datetime.datetime):
            self.fail(node, f"{what} needs a time of day, e.g. 2026-01-01T00:00:00Z")
        if moment.tzinfo is None:
            self.fail(node, f"{what} needs a timezone, e.g. 2026-01-01T00:00:00Z")
        if moment.microsecond:
            self.fail(node, f"{what} must be a whole second")
        try:
            return int(moment.timestamp())
        except (ValueError, OverflowError):
            self.fail(node, f"{what}: {node.value!r} is out of range")

    def rate_limit(self, node: Node, what: str) -> str:
        text = self.string(node, what)
        try:
            parse_rate_limit(text)
        except ConfigurationError as exc:
            self.fail(node, f"{what}: {exc}")
        return text

    def string_map(self, node: Node, what: str) -> list[tuple[Node, str, Node]]:
        """A mapping with free-form string keys: (key node, key, value node) triples."""
        if isinstance(node, ScalarNode) and node.tag == NULL:
            return []
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what} must be a mapping, not {_kind(node)}")
        if len(node.value) > _MAX_ITEMS:
            self.fail(node, f"{what} has more than {_MAX_ITEMS} entries")
        seen: set[str] = set()
        result: list[tuple[Node, str, Node]] = []
        for key_node, value_node in node.value:
            key = self.string(key_node, f"a key of {what}")
            if key in seen:
                self.fail(key_node, f"{what}: duplicate key {key!r}")
            seen.add(key)
            result.append((key_node, key, value_node))
        return result

    def agent_map(self, node: Node, what: str) -> Iterator[tuple[str, Node]]:
        """A :meth:`string_map` keyed by agent names or DIDs: (agent, value node) pairs,
        each key checked just before its pair is produced."""
        for key_node, agent, value_node in self.string_map(node, what):
            pattern = _DID_RE if agent.startswith("did:") else _NAME_RE
            if not pattern.fullmatch(agent):
                self.fail(key_node, f"{what}: {agent!r} is not an agent name or DID")
            yield agent, value_node

    # -- the document ----------------------------------------------------------------

    def policy(self, root: Node) -> PolicyConfig:
        top = self.mapping(
            root, "the policy file", required={"version", "policies"}, optional=set()
        )
        version_node = top["version"][1]
        version = self.integer(version_node, "version")
        if version != 1:
            self.fail(version_node, f"unsupported policy version {version} (only 1 is known)")
        sections = self.mapping(
            top["policies"][1],
            "policies",
            required={"communication"},
            optional={"access_control", "monitoring", "sessions"},
        )
        roles: dict[str, str] = {}
        rate_limits = RateLimits()
        if "access_control" in sections:
            roles, rate_limits = self.access_control(sections["access_control"][1])
        monitoring = Monitoring()
        if "monitoring" in sections:
            monitoring = self.monitoring(sections["monitoring"][1])
        rules, max_message_bytes = self.communication(sections["communication"][1], roles)
        sessions = SessionDefaults()
        if "sessions" in sections:
            sessions = self.sessions(sections["sessions"][1], roles)
        return PolicyConfig(
            rules=rules,
            roles=MappingProxyType(roles),
            rate_limits=rate_limits,
            monitoring=monitoring,
            max_message_bytes=max_message_bytes,
            version=version,
            source=self.source,
            sessions=sessions,
        )

    def communication(
        self, node: Node, roles: Mapping[str, str]
    ) -> tuple[tuple[Rule, ...], int | None]:
        entries = self.mapping(
            node,
            "communication",
            required={"default", "rules"},
            optional={"max_message_bytes"},
        )
        default_node = entries["default"][1]
        default = self.string(default_node, "communication.default")
        if default != "deny":
            self.fail(
                default_node,
                f"communication.default must be 'deny', not {default!r}: default deny is "
                "not optional (grant access with allow rules instead)",
            )
        max_message_bytes: int | None = None
        if "max_message_bytes" in entries:
            size_node = entries["max_message_bytes"][1]
            max_message_bytes = self.integer(size_node, "communication.max_message_bytes")
            if not 1 <= max_message_bytes <= MAX_MESSAGE_BYTES_LIMIT:
                self.fail(
                    size_node,
                    f"communication.max_message_bytes must be between 1 and "
                    f"{MAX_MESSAGE_BYTES_LIMIT}",
                )
        rules_node = entries["rules"][1]
        rules: list[Rule] = []
        if not (isinstance(rules_node, ScalarNode) and rules_node.tag == NULL):
            seen: set[str] = set()
            for number, rule_node in enumerate(
                self.sequence(rules_node, "communication.rules"), start=1
            ):
                rule = self.rule(rule_node, roles, number)
                if rule.id in seen:
                    self.fail(rule_node, f"duplicate rule id {rule.id!r}")
                seen.add(rule.id)
                rules.append(rule)
        return tuple(rules), max_message_bytes

    def rule(self, node: Node, roles: Mapping[str, str], number: int) -> Rule:
        entries = self.mapping(
            node,
            _rule_label(node, number),
            required={"id", "effect", "from", "to", "actions"},
            optional={"not_before", "expires_at"},
        )
        id_node = entries["id"][1]
        rule_id = self.string(id_node, "rule id")
        if not _ID_RE.fullmatch(rule_id):
            self.fail(
                id_node,
                f"rule id {rule_id!r} must be 1-128 letters, digits, '.', '_', ':' or '-' "
                "and start with a letter or digit",
            )
        what = f"rule {rule_id!r}"
        effect_node = entries["effect"][1]
        effect_text = self.string(effect_node, f"{what}: effect")
        if effect_text not in ("allow", "deny"):
            self.fail(effect_node, f"{what}: effect must be 'allow' or 'deny', not {effect_text!r}")
        source = self.selector(entries["from"][1], f"{what}: from", roles)
        target = self.selector(entries["to"][1], f"{what}: to", roles)
        actions: list[str] = []
        for action_node in self.sequence(entries["actions"][1], f"{what}: actions"):
            action = self.string(action_node, f"{what}: action")
            if action not in KNOWN_ACTIONS:
                known = ", ".join(sorted(KNOWN_ACTIONS))
                self.fail(action_node, f"{what}: unknown action {action!r} (known: {known})")
            if action in actions:
                self.fail(action_node, f"{what}: action {action!r} listed twice")
            actions.append(action)
        if not actions:
            self.fail(entries["actions"][1], f"{what}: actions must name at least one action")
        not_before = expires_at = None
        if "not_before" in entries:
            not_before = self.timestamp(entries["not_before"][1], f"{what}: not_before")
        if "expires_at" in entries:
            expires_node = entries["expires_at"][1]
            expires_at = self.timestamp(expires_node, f"{what}: expires_at")
            if not_before is not None and expires_at <= not_before:
                self.fail(expires_node, f"{what}: expires_at must be after not_before")
        return Rule(
            id=rule_id,
            effect=Effect(effect_text),
            source=source,
            target=target,
            actions=tuple(actions),
            not_before=not_before,
            expires_at=expires_at,
        )

    def selector(self, node: Node, what: str, roles: Mapping[str, str]) -> Selector:
        if isinstance(node, ScalarNode):
            if node.tag == STR and node.value == "*":
                return Selector.everyone()
            self.fail(node, f"{what} must be \"*\" or a mapping with 'agents' and/or 'roles'")
        entries = self.mapping(node, what, required=set(), optional={"agents", "roles"})
        names: set[str] = set()
        dids: set[str] = set()
        selected_roles: set[str] = set()
        if "agents" in entries:
            for agent_node in self.sequence(entries["agents"][1], f"{what}: agents"):
                agent = self.string(agent_node, f"{what}: agent")
                if agent.startswith("did:"):
                    if not _DID_RE.fullmatch(agent):
                        self.fail(agent_node, f"{what}: {agent!r} is not a did:key DID")
                    dids.add(agent)
                else:
                    if not _NAME_RE.fullmatch(agent):
                        self.fail(agent_node, f"{what}: {agent!r} is not a valid agent name")
                    names.add(agent)
        if "roles" in entries:
            for role_node in self.sequence(entries["roles"][1], f"{what}: roles"):
                role = self.string(role_node, f"{what}: role")
                if role not in roles:
                    self.fail(
                        role_node,
                        f"{what}: role {role!r} is not defined in access_control.roles",
                    )
                selected_roles.add(role)
        if not (names or dids or selected_roles):
            self.fail(node, f'{what} selects no agent: list agents or roles, or use "*"')
        return Selector(
            names=frozenset(names), dids=frozenset(dids), roles=frozenset(selected_roles)
        )

    def access_control(self, node: Node) -> tuple[dict[str, str], RateLimits]:
        entries = self.mapping(
            node, "access_control", required=set(), optional={"roles", "rate_limits"}
        )
        roles: dict[str, str] = {}
        if "roles" in entries:
            for key_node, role, value_node in self.string_map(
                entries["roles"][1], "access_control.roles"
            ):
                if not _ROLE_RE.fullmatch(role):
                    self.fail(
                        key_node,
                        f"role name {role!r} must be 1-64 letters, digits, '.', '_' or '-'",
                    )
                if isinstance(value_node, ScalarNode) and value_node.tag == NULL:
                    roles[role] = ""
                else:
                    roles[role] = self.string(value_node, f"description of role {role!r}")
        rate_limits = RateLimits()
        if "rate_limits" in entries:
            rate_limits = self.rate_limits(entries["rate_limits"][1], roles)
        return roles, rate_limits

    def rate_limits(self, node: Node, roles: Mapping[str, str]) -> RateLimits:
        what = "access_control.rate_limits"
        entries = self.mapping(node, what, required=set(), optional={"default", "roles", "agents"})
        default = DEFAULT_RATE_LIMIT
        if "default" in entries:
            default = self.rate_limit(entries["default"][1], f"{what}.default")
        role_limits: dict[str, str] = {}
        if "roles" in entries:
            for key_node, role, value_node in self.string_map(entries["roles"][1], f"{what}.roles"):
                if role not in roles:
                    self.fail(key_node, f"{what}.roles: role {role!r} is not defined")
                role_limits[role] = self.rate_limit(value_node, f"{what}.roles.{role}")
        agent_limits: dict[str, str] = {}
        if "agents" in entries:
            for agent, value_node in self.agent_map(entries["agents"][1], f"{what}.agents"):
                agent_limits[agent] = self.rate_limit(value_node, f"{what}.agents.{agent}")
        return RateLimits(
            default=default,
            roles=MappingProxyType(role_limits),
            agents=MappingProxyType(agent_limits),
        )

    def sessions(self, node: Node, roles: Mapping[str, str]) -> SessionDefaults:
        what = "sessions"
        entries = self.mapping(node, what, required=set(), optional={"defaults", "roles", "agents"})
        defaults: dict[str, int | bool] = {}
        if "defaults" in entries:
            defaults = self.session_settings(entries["defaults"][1], f"{what}.defaults")
        role_entries: dict[str, dict[str, int | bool]] = {}
        if "roles" in entries:
            for key_node, role, value_node in self.string_map(entries["roles"][1], f"{what}.roles"):
                if role not in roles:
                    self.fail(
                        key_node,
                        f"{what}.roles: role {role!r} is not defined in access_control.roles",
                    )
                role_entries[role] = self.session_settings(value_node, f"{what}.roles.{role}")
        agent_entries: dict[str, dict[str, int | bool]] = {}
        if "agents" in entries:
            for agent, value_node in self.agent_map(entries["agents"][1], f"{what}.agents"):
                agent_entries[agent] = self.session_settings(value_node, f"{what}.agents.{agent}")
        return SessionDefaults(defaults=defaults, roles=role_entries, agents=agent_entries)

    def session_settings(self, node: Node, what: str) -> dict[str, int | bool]:
        """One entry of session defaults: the session API's keys, each within range."""
        entries = self.mapping(node, what, required=set(), optional=set(SESSION_SETTINGS))
        settings: dict[str, int | bool] = {}
        for key, (_, value_node) in entries.items():
            bounds = SESSION_SETTINGS[key]
            if bounds is None:
                settings[key] = self.boolean(value_node, f"{what}.{key}")
                continue
            value = self.integer(value_node, f"{what}.{key}")
            low, high = bounds
            if not low <= value <= high:
                self.fail(value_node, f"{what}.{key} must be between {low} and {high}, not {value}")
            settings[key] = value
        timeout = settings.get("timeoutMinutes")
        longest = settings.get("maxDurationMinutes")
        if timeout is not None and longest is not None and longest < timeout:
            self.fail(
                entries["maxDurationMinutes"][1],
                f"{what}.maxDurationMinutes ({longest}) must not be below "
                f"timeoutMinutes ({timeout})",
            )
        return settings

    def monitoring(self, node: Node) -> Monitoring:
        names = {"security_events", "anomaly_detection", "automatic_alerts"}
        entries = self.mapping(node, "monitoring", required=set(), optional=names)
        values = {
            name: self.boolean(value_node, f"monitoring.{name}")
            for name, (_, value_node) in entries.items()
        }
        return Monitoring(**values)


def _rule_label(node: Node, number: int) -> str:
    """How to name a rule in errors found before its id is validated."""
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if (
                isinstance(key_node, ScalarNode)
                and key_node.value == "id"
                and isinstance(value_node, ScalarNode)
                and value_node.tag == STR
                and _ID_RE.fullmatch(value_node.value)
            ):
                return f"rule {value_node.value!r}"
    return f"rule #{number}"


def _kind(node: Node) -> str:
    # Unlike the broker configuration, a policy names any mapping or list by its shape.
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return describe(node)
