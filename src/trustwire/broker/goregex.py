"""Go RE2 regular expressions, carried over to Python's ``re`` so that they match the same.

``secretless.yml`` patterns (``authenticateURLsMatching``, ``credentialValidations``) are
written for Go's ``regexp`` package. :func:`translate` rewrites one into Python syntax and
:func:`compile_regex` compiles that with ``re.ASCII``; syntax that cannot be carried over
is refused with a :class:`ValueError` saying why.

The differences that would change a match are translated:

- ``$`` means the end of the text, as in Go (Python's ``$`` also matches before a final
  newline, which would let ``^[A-Z]+$`` accept ``"ABC\\n"``), unless the pattern sets
  the ``m`` flag; Go's ``\\z`` becomes Python's ``\\Z`` (and Python's ``\\Z``, not Go
  syntax, is refused rather than silently meaning something else).
- POSIX classes such as ``[[:alpha:]]`` are expanded (ASCII, as in Go); a ``[`` inside a
  class is a literal, as in Go.
- ``\\d``, ``\\w`` and ``\\b`` are ASCII (``re.ASCII``); ``\\s`` is Go's
  ``[\\t\\n\\f\\r ]`` (without ``\\v``) and ``\\S`` outside a character class is its
  complement (inside one, ``\\S`` keeps Python's meaning).
- Go syntax Python lacks (``\\p{...}``, ``\\Q...\\E``, the ``U`` flag, negated POSIX
  classes) is refused.

Invariants: a pattern longer than :data:`MAX_PATTERN_CHARS` is refused before any work;
for any input text only :class:`ValueError` escapes (never ``re.error``, a warning, or a
recursion error). Python's ``re`` backtracks where RE2 does not, so patterns must come
from trusted configuration and callers bound the length of the text they match.
"""

from __future__ import annotations

import re
import warnings
from typing import Final

__all__ = ["MAX_PATTERN_CHARS", "compile_regex", "translate"]

MAX_PATTERN_CHARS: Final = 1024
"""Patterns longer than this are refused."""

_POSIX_CLASSES: Final = {
    "alnum": r"0-9A-Za-z",
    "alpha": r"A-Za-z",
    "ascii": r"\x00-\x7f",
    "blank": r"\t ",
    "cntrl": r"\x00-\x1f\x7f",
    "digit": r"0-9",
    "graph": r"\x21-\x7e",
    "lower": r"a-z",
    "print": r"\x20-\x7e",
    "punct": r"\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e",
    "space": r"\t\n\v\f\r ",
    "upper": r"A-Z",
    "word": r"0-9A-Za-z_",
    "xdigit": r"0-9A-Fa-f",
}
_GO_SPACE: Final = r"\t\n\f\r "
_FLAGS_RE: Final = re.compile(r"\(\?([A-Za-z-]*)[:)]")


def translate(pattern: str) -> str:
    """The Python ``re`` syntax (for use with ``re.ASCII``) of the Go RE2 ``pattern``.

    Raises :class:`ValueError` with the reason for syntax that cannot be carried over.
    The result is not compiled: :func:`compile_regex` also checks that it is valid.
    """
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"the pattern is longer than {MAX_PATTERN_CHARS} characters")
    multiline = False
    for match in _FLAGS_RE.finditer(pattern):
        flags = match.group(1)
        if "U" in flags:
            raise ValueError("the U (ungreedy) flag is not supported")
        multiline = multiline or "m" in flags.split("-")[0]
    out: list[str] = []
    index = 0
    in_class = False
    class_start = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escape = pattern[index + 1 : index + 2]
            if escape in ("p", "P"):
                raise ValueError("Unicode classes (\\p{...}) are not supported by Python's re")
            if escape in ("Q", "E"):
                raise ValueError("\\Q...\\E quoting is not supported; escape each character")
            if escape == "Z":
                raise ValueError("\\Z is not Go syntax; use \\z for the end of the text")
            if escape == "z" and not in_class:
                out.append("\\Z")
            elif escape == "s":  # Go's \s is [\t\n\f\r ]; Python's ASCII \s adds \v
                out.append(_GO_SPACE if in_class else f"[{_GO_SPACE}]")
            elif escape == "S" and not in_class:
                out.append(f"[^{_GO_SPACE}]")
            else:
                out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            if pattern.startswith("[:", index):
                end = pattern.find(":]", index + 2)
                name = pattern[index + 2 : end] if end >= 0 else ""
                if name.startswith("^"):
                    raise ValueError(f"negated POSIX class [:{name}:] is not supported")
                if name not in _POSIX_CLASSES:
                    raise ValueError(f"unknown POSIX class [:{name}:]")
                out.append(_POSIX_CLASSES[name])
                index = end + 2
                continue
            if char == "[":
                out.append("\\[")  # literal in Go; Python would warn of a nested set
                index += 1
                continue
            if char == "]" and index > class_start:
                in_class = False
            out.append(char)
            index += 1
            continue
        if char == "[":
            in_class = True
            out.append(char)
            index += 1
            if pattern.startswith("^", index):
                out.append("^")
                index += 1
            class_start = index  # a "]" right here is a literal
            continue
        if char == "$" and not multiline:
            out.append("\\Z")
            index += 1
            continue
        out.append(char)
        index += 1
    return "".join(out)


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile the Go RE2 ``pattern`` with Python's ``re`` so that it matches the same.

    Raises :class:`ValueError` (and nothing else) for syntax that cannot be carried over
    or an invalid or ambiguous pattern, saying why.
    """
    translated = translate(pattern)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(translated, re.ASCII)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc.msg}") from None
    except Warning as exc:
        raise ValueError(f"ambiguous regular expression: {exc}") from None
    except (RecursionError, OverflowError, ValueError):
        raise ValueError("invalid regular expression") from None
