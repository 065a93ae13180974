"""Default-deny policy: the policy file model and the Cedar-backed engine.

``parse_policy``/``load_policy`` validate a policy file into a :class:`PolicyConfig`;
:class:`PolicyEngine` answers authorization questions about it and names the rate-limit
buckets that apply to an agent. See ``docs/POLICY.md``.
"""

from trustwire.policy.engine import Decision, PolicyEngine, Principal
from trustwire.policy.model import (
    DEFAULT_RATE_LIMIT,
    KNOWN_ACTIONS,
    MAX_POLICY_BYTES,
    Effect,
    Monitoring,
    PolicyConfig,
    RateLimits,
    Rule,
    Selector,
    default_policy,
    load_policy,
    parse_policy,
    parse_rate_limit,
)

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "KNOWN_ACTIONS",
    "MAX_POLICY_BYTES",
    "Decision",
    "Effect",
    "Monitoring",
    "PolicyConfig",
    "PolicyEngine",
    "Principal",
    "RateLimits",
    "Rule",
    "Selector",
    "default_policy",
    "load_policy",
    "parse_policy",
    "parse_rate_limit",
]
