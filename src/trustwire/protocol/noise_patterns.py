"""Noise handshake patterns and protocol names (Noise Protocol Framework, revision 34).

This module is data plus one parser. :data:`PATTERNS` holds every one-way (§7.4),
fundamental interactive (§7.4) and deferred (§7.5) pattern as the spec writes it;
:func:`parse_protocol_name` turns ``Noise_XXpsk0+psk2_25519_ChaChaPoly_BLAKE2b`` into a
:class:`NoiseProtocol` naming the pattern (with its modifiers applied), the DH function,
the cipher and the hash.

Invariants:

- A :class:`HandshakePattern` is immutable. Messages alternate, the first one written by
  the initiator; one-way patterns have exactly one message.
- ``psk0`` puts a ``psk`` token at the start of the first message and ``pskN`` (N >= 1)
  at the end of message N (§9.3); any other modifier (``fallback`` among them) is refused
  with :class:`~trustwire.errors.NoiseError` rather than half-supported.
- Every name the parser does not know is refused with ``NoiseError``; nothing is guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from trustwire.errors import NoiseError

__all__ = [
    "CIPHER_NAMES",
    "DH_NAMES",
    "HASH_NAMES",
    "MAX_PROTOCOL_NAME_LEN",
    "PATTERNS",
    "TOKENS",
    "HandshakePattern",
    "NoiseProtocol",
    "apply_psk_modifiers",
    "parse_protocol_name",
]

#: Every token a message or pre-message pattern may contain.
TOKENS: Final = frozenset({"e", "s", "ee", "es", "se", "ss", "psk"})
DH_NAMES: Final = ("25519", "448")
CIPHER_NAMES: Final = ("AESGCM", "ChaChaPoly")
HASH_NAMES: Final = ("SHA256", "SHA512", "BLAKE2s", "BLAKE2b")
#: Protocol names are short ASCII strings; anything longer is refused before parsing.
MAX_PROTOCOL_NAME_LEN: Final = 255

Tokens = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HandshakePattern:
    """A handshake pattern: pre-messages and the token lists of each message.

    ``messages[i]`` is written by the initiator when ``i`` is even and by the responder
    when it is odd.
    """

    name: str
    initiator_pre: Tokens
    responder_pre: Tokens
    messages: tuple[Tokens, ...]

    @property
    def one_way(self) -> bool:
        """True for ``N``, ``K``, ``X`` and their modified forms (one message only)."""
        return len(self.messages) == 1

    @property
    def psk_count(self) -> int:
        """How many pre-shared keys the handshake consumes."""
        return sum(message.count("psk") for message in self.messages)

    def needs(self, initiator: bool) -> frozenset[str]:
        """Keys the given side must hold before the handshake starts.

        ``"s"``: it sends its static key or uses it in a DH; ``"e"``: its ephemeral is in
        a pre-message; ``"rs"``/``"re"``: the peer's static/ephemeral is in a pre-message.
        """
        own_pre = self.initiator_pre if initiator else self.responder_pre
        peer_pre = self.responder_pre if initiator else self.initiator_pre
        written = {
            token for message in self.messages[0 if initiator else 1 :: 2] for token in message
        }
        tokens = {token for message in self.messages for token in message}
        # "es" pairs the initiator's ephemeral with the responder's static, "se" the
        # initiator's static with the responder's ephemeral.
        own_static_dh = "se" if initiator else "es"
        needed: set[str] = set()
        if "s" in own_pre or "s" in written or "ss" in tokens or own_static_dh in tokens:
            needed.add("s")
        if "e" in own_pre:
            needed.add("e")
        if "s" in peer_pre:
            needed.add("rs")
        if "e" in peer_pre:
            needed.add("re")
        return frozenset(needed)


def _pattern(name: str, pre: tuple[Tokens, Tokens], *messages: str) -> HandshakePattern:
    parsed = tuple(tuple(t.strip() for t in m.split(",")) for m in messages)
    return HandshakePattern(name, pre[0], pre[1], parsed)


_NONE: Final[tuple[Tokens, Tokens]] = ((), ())
_RS: Final[tuple[Tokens, Tokens]] = ((), ("s",))  # <- s
_IS: Final[tuple[Tokens, Tokens]] = (("s",), ())  # -> s
_BOTH: Final[tuple[Tokens, Tokens]] = (("s",), ("s",))  # -> s, <- s

_TABLE: Final = (
    # One-way patterns (§7.4).
    _pattern("N", _RS, "e, es"),
    _pattern("K", _BOTH, "e, es, ss"),
    _pattern("X", _RS, "e, es, s, ss"),
    # Fundamental interactive patterns (§7.4).
    _pattern("NN", _NONE, "e", "e, ee"),
    _pattern("NK", _RS, "e, es", "e, ee"),
    _pattern("NX", _NONE, "e", "e, ee, s, es"),
    _pattern("KN", _IS, "e", "e, ee, se"),
    _pattern("KK", _BOTH, "e, es, ss", "e, ee, se"),
    _pattern("KX", _IS, "e", "e, ee, se, s, es"),
    _pattern("XN", _NONE, "e", "e, ee", "s, se"),
    _pattern("XK", _RS, "e, es", "e, ee", "s, se"),
    _pattern("XX", _NONE, "e", "e, ee, s, es", "s, se"),
    _pattern("IN", _NONE, "e, s", "e, ee, se"),
    _pattern("IK", _RS, "e, es, s, ss", "e, ee, se"),
    _pattern("IX", _NONE, "e, s", "e, ee, se, s, es"),
    # Deferred patterns (§7.5).
    _pattern("NK1", _RS, "e", "e, ee, es"),
    _pattern("NX1", _NONE, "e", "e, ee, s", "es"),
    _pattern("X1N", _NONE, "e", "e, ee", "s", "se"),
    _pattern("X1K", _RS, "e, es", "e, ee", "s", "se"),
    _pattern("XK1", _RS, "e", "e, ee, es", "s, se"),
    _pattern("X1K1", _RS, "e", "e, ee, es", "s", "se"),
    _pattern("X1X", _NONE, "e", "e, ee, s, es", "s", "se"),
    _pattern("XX1", _NONE, "e", "e, ee, s", "es, s, se"),
    _pattern("X1X1", _NONE, "e", "e, ee, s", "es, s", "se"),
    _pattern("K1N", _IS, "e", "e, ee", "se"),
    _pattern("K1K", _BOTH, "e, es", "e, ee", "se"),
    _pattern("KK1", _BOTH, "e", "e, ee, se, es"),
    _pattern("K1K1", _BOTH, "e", "e, ee, es", "se"),
    _pattern("K1X", _IS, "e", "e, ee, s, es", "se"),
    _pattern("KX1", _IS, "e", "e, ee, se, s", "es"),
    _pattern("K1X1", _IS, "e", "e, ee, s", "se, es"),
    _pattern("I1N", _NONE, "e, s", "e, ee", "se"),
    _pattern("I1K", _RS, "e, es, s", "e, ee", "se"),
    _pattern("IK1", _RS, "e, s", "e, ee, se, es"),
    _pattern("I1K1", _RS, "e, s", "e, ee, es", "se"),
    _pattern("I1X", _NONE, "e, s", "e, ee, s, es", "se"),
    _pattern("IX1", _NONE, "e, s", "e, ee, se, s", "es"),
    _pattern("I1X1", _NONE, "e, s", "e, ee, s", "se, es"),
)

#: Base patterns by name (no modifiers).
PATTERNS: Final[Mapping[str, HandshakePattern]] = MappingProxyType({p.name: p for p in _TABLE})

_PSK_MODIFIER = re.compile(r"psk(0|[1-9][0-9]?)")
_PATTERN_PART = re.compile(r"([A-Z][A-Z0-9]*)([a-z][a-z0-9+]*)?")


def apply_psk_modifiers(pattern: HandshakePattern, modifiers: tuple[str, ...]) -> HandshakePattern:
    """Return ``pattern`` with ``psk`` tokens placed as the ``pskN`` modifiers say (§9.3)."""
    messages = [list(message) for message in pattern.messages]
    seen: set[int] = set()
    for modifier in modifiers:
        match = _PSK_MODIFIER.fullmatch(modifier)
        if match is None:
            raise NoiseError(f"unsupported pattern modifier {modifier!r}")
        index = int(match.group(1))
        if index in seen:
            raise NoiseError(f"pattern modifier {modifier!r} given twice")
        seen.add(index)
        if index == 0:
            messages[0].insert(0, "psk")
        elif index <= len(messages):
            messages[index - 1].append("psk")
        else:
            raise NoiseError(
                f"modifier {modifier!r} names message {index} but {pattern.name} has "
                f"{len(messages)}"
            )
    name = pattern.name + "+".join(modifiers)
    return HandshakePattern(
        name,
        pattern.initiator_pre,
        pattern.responder_pre,
        tuple(tuple(message) for message in messages),
    )


@dataclass(frozen=True, slots=True)
class NoiseProtocol:
    """A parsed protocol name: the pattern with modifiers applied and the three functions."""

    name: str
    pattern: HandshakePattern
    modifiers: tuple[str, ...]
    dh: str
    cipher: str
    hash: str

    @property
    def psk(self) -> bool:
        """True in PSK handshakes, where ``e`` tokens also call ``MixKey`` (§9.2)."""
        return any(modifier.startswith("psk") for modifier in self.modifiers)


def parse_protocol_name(name: str) -> NoiseProtocol:
    """Parse ``Noise_<pattern>_<dh>_<cipher>_<hash>``, or raise :class:`NoiseError`."""
    if not isinstance(name, str):
        raise NoiseError("protocol name must be a str")
    if len(name) > MAX_PROTOCOL_NAME_LEN or not name.isascii():
        raise NoiseError("protocol name is not a short ASCII string")
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise NoiseError(f"not a Noise protocol name: {name!r}")
    _, pattern_part, dh, cipher, hash_name = parts
    match = _PATTERN_PART.fullmatch(pattern_part)
    if match is None or match.group(1) not in PATTERNS:
        raise NoiseError(f"unsupported handshake pattern {pattern_part!r}")
    if dh not in DH_NAMES:
        raise NoiseError(f"unsupported DH function {dh!r}")
    if cipher not in CIPHER_NAMES:
        raise NoiseError(f"unsupported cipher {cipher!r}")
    if hash_name not in HASH_NAMES:
        raise NoiseError(f"unsupported hash function {hash_name!r}")
    modifiers = tuple(match.group(2).split("+")) if match.group(2) else ()
    pattern = PATTERNS[match.group(1)]
    if modifiers:
        pattern = apply_psk_modifiers(pattern, modifiers)
    return NoiseProtocol(name, pattern, modifiers, dh, cipher, hash_name)
