"""Header and query-parameter templates: the subset of Go's ``text/template`` that
Secretless Broker configurations use.

Secretless renders each ``config.headers`` and ``config.queryParams`` value with Go's
``text/template`` over the map of credential values. This module implements the part of
that language those configurations use, with a real tokenizer and parser:

- literal text, and actions ``{{ ... }}`` with Go's whitespace trimming ``{{- `` and
  `` -}}`` (the dash must be separated from the action by a space, as in Go), and
  comments ``{{/* ... */}}``;
- field references ``.name`` (credential names of ASCII letters, digits and ``_``);
- string constants ``"..."`` with Go's escapes and raw strings in backquotes (carriage
  returns dropped, as Go does), decimal integer constants;
- the functions ``printf`` (verbs ``%s %v %q %d`` and ``%%``), ``print``, ``urlquery``
  and ``base64`` (standard base64 of the UTF-8 bytes: the one function Secretless adds);
- pipelines ``.a | base64`` and ``printf "%s:%s" .u .p | base64`` (a stage's value is
  passed as the last argument of the next) and parenthesized pipelines as arguments.

Everything else Go's language has (``if``/``range``/``with``, variables, ``index``,
``len`` ...) is refused with a message naming it.

Invariants:

- :meth:`Template.parse` raises :class:`~trustwire.errors.ConfigurationError` (and
  nothing else) for any text, naming ``where``. Types are checked when parsing (every
  credential is a string; ``base64`` takes one string; ``printf``'s format is a string
  constant whose verbs match its arguments in number and type), so a template that parses
  can fail to render only for a missing variable or an oversized result.
- Input is bounded: template text is at most :data:`MAX_TEMPLATE_BYTES` bytes, nesting of
  parentheses at most :data:`MAX_DEPTH` levels, and every value produced while rendering
  (so the output too) at most :data:`MAX_OUTPUT_BYTES` bytes.
- :meth:`Template.render` raises :class:`~trustwire.errors.BrokerError` naming the missing
  variable, never showing any value.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

from trustwire.errors import BrokerError, ConfigurationError

__all__ = ["MAX_DEPTH", "MAX_OUTPUT_BYTES", "MAX_TEMPLATE_BYTES", "Template"]

MAX_TEMPLATE_BYTES: Final = 8 * 1024
"""Template text longer than this (UTF-8 bytes) is refused."""

MAX_OUTPUT_BYTES: Final = 16 * 1024
"""A rendered value, or any value computed on the way, longer than this is refused."""

MAX_DEPTH: Final = 16
"""How deeply parenthesized pipelines may nest."""

_SPACE: Final = " \t\r\n"
_LETTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_DIGITS: Final = frozenset("0123456789")
_WORD: Final = _LETTERS | _DIGITS
_MAX_INT_DIGITS: Final = 18

# Go's text/template keywords and built-in functions we do not implement: named in errors.
_KEYWORDS: Final = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)
_CONSTANTS: Final = frozenset({"nil", "true", "false"})
_UNSUPPORTED_FUNCTIONS: Final = frozenset(
    {
        "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne",
        "not", "or", "println", "slice",
    }
)  # fmt: skip
_FUNCTIONS: Final = frozenset({"base64", "print", "printf", "urlquery"})
_VERBS: Final = frozenset("svqd")

_Type = Literal["string", "int"]
_Value = str | int


# -- syntax tree ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str


@dataclass(frozen=True, slots=True)
class _Constant:
    value: _Value


@dataclass(frozen=True, slots=True)
class _Call:
    function: str
    args: tuple[_Expression, ...]


_Expression = _Field | _Constant | _Call


def _type_of(expression: _Expression) -> _Type:
    if isinstance(expression, _Constant) and isinstance(expression.value, int):
        return "int"
    return "string"


# -- tokens -----------------------------------------------------------------------------

_TokenKind = Literal["field", "string", "number", "name", "pipe", "open", "close"]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _TokenKind
    text: str
    value: _Value
    offset: int
    spaced: bool  # preceded by white space (Go separates operands with spaces)


class _SyntaxError(Exception):
    """A problem at a character offset of the template text (internal)."""

    def __init__(self, problem: str, offset: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.offset = offset


def _fail(problem: str, offset: int) -> NoReturn:
    raise _SyntaxError(problem, offset)


class _Lexer:
    """Splits the template text into literal text and the tokens of each action."""

    def __init__(self, text: str) -> None:
        self.text = text

    def pieces(self) -> list[str | tuple[list[_Token], int]]:
        """Literal text strings and (tokens, offset) of actions, in order."""
        text = self.text
        pieces: list[str | tuple[list[_Token], int]] = []
        position = 0
        trim_next = False
        while True:
            start = text.find("{{", position)
            literal = text[position:] if start < 0 else text[position:start]
            if trim_next:
                literal = literal.lstrip(_SPACE)
            if start < 0:
                if literal:
                    pieces.append(literal)
                return pieces
            inside = start + 2
            if (
                text.startswith("-", inside)
                and inside + 1 < len(text)
                and text[inside + 1] in _SPACE
            ):
                literal = literal.rstrip(_SPACE)
                inside += 2
            if literal:
                pieces.append(literal)
            if text.startswith("/*", inside):
                position, trim_next = self._comment(inside)
                continue
            tokens, position, trim_next = self._action(inside)
            if not tokens:
                _fail("missing value for command", start)
            pieces.append((tokens, start))

    def _right_delimiter(self, position: int) -> tuple[int, bool] | None:
        """(position after the delimiter, trim) when an action ends at ``position``."""
        text = self.text
        if (
            position + 1 < len(text)
            and text[position] in _SPACE
            and text[position + 1] == "-"
            and text.startswith("}}", position + 2)
        ):
            return position + 4, True
        if text.startswith("}}", position):
            return position + 2, False
        return None

    def _comment(self, position: int) -> tuple[int, bool]:
        end = self.text.find("*/", position + 2)
        if end < 0:
            _fail("unclosed comment", position)
        after = self._right_delimiter(end + 2)
        if after is None:
            _fail("comment ends before closing delimiter", end)
        return after

    def _action(self, position: int) -> tuple[list[_Token], int, bool]:
        text = self.text
        tokens: list[_Token] = []
        spaced = True
        while True:
            end = self._right_delimiter(position)
            if end is not None:
                return tokens, end[0], end[1]
            if position >= len(text):
                _fail("unclosed action", position)
            char = text[position]
            if char in _SPACE:
                position += 1
                spaced = True
                continue
            token, position = self._token(position, spaced)
            tokens.append(token)
            spaced = False

    def _token(self, start: int, spaced: bool) -> tuple[_Token, int]:
        text = self.text
        char = text[start]

        def token(kind: _TokenKind, end: int, value: _Value = "") -> tuple[_Token, int]:
            return _Token(kind, text[start:end], value, start, spaced), end

        if char == "|":
            return token("pipe", start + 1)
        if char == "(":
            return token("open", start + 1)
        if char == ")":
            return token("close", start + 1)
        if char == '"':
            end, value = _scan_quoted(text, start)
            return token("string", end, value)
        if char == "`":
            end = text.find("`", start + 1)
            if end < 0:
                _fail("unterminated raw quoted string", start)
            return token("string", end + 1, text[start + 1 : end].replace("\r", ""))
        if char == ".":
            end = _scan_word(text, start + 1)
            if end == start + 1:
                _fail("'.' (the whole credential map) cannot be used; name a credential", start)
            name = text[start + 1 : end]
            if name[0] in _DIGITS:
                _fail(f"bad field name {name!r}", start)
            if end < len(text) and text[end] == ".":
                chain = text[start : _scan_word(text, end + 1)]
                _fail(f"nested field {chain!r} is not supported: credentials are strings", end)
            return token("field", end, name)
        if char in _DIGITS or (
            char in "+-" and start + 1 < len(text) and text[start + 1] in _DIGITS
        ):
            end = start + 1
            while end < len(text) and (text[end] in _WORD or text[end] in ".+-"):
                end += 1
            number = text[start:end]
            digits = number.lstrip("+-")
            if (
                not digits.isdigit()
                or not digits.isascii()
                or (len(digits) > 1 and digits[0] == "0")
                or len(digits) > _MAX_INT_DIGITS
            ):
                _fail(f"only decimal integer constants are supported, not {number!r}", start)
            return token("number", end, int(number))
        if char in _LETTERS:
            end = _scan_word(text, start)
            return token("name", end, text[start:end])
        if char == "'":
            _fail("character constants are not supported", start)
        if char == "$":
            _fail("variables are not supported", start)
        if char in ":=,":
            _fail("variable declarations are not supported", start)
        _fail(f"unexpected {char!r} in action", start)


def _scan_word(text: str, position: int) -> int:
    while position < len(text) and text[position] in _WORD:
        position += 1
    return position


_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}


def _scan_quoted(text: str, start: int) -> tuple[int, str]:
    """Go's interpreted string literal starting at ``start``: (end, value)."""
    out: list[str] = []
    position = start + 1
    while True:
        if position >= len(text) or text[position] == "\n":
            _fail("unterminated quoted string", start)
        char = text[position]
        if char == '"':
            return position + 1, "".join(out)
        if char != "\\":
            out.append(char)
            position += 1
            continue
        if position + 1 >= len(text):
            _fail("unterminated quoted string", start)
        escape = text[position + 1]
        if escape in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[escape])
            position += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}.get(escape)
        if width is not None:
            digits = text[position + 2 : position + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                _fail(f"invalid escape \\{escape} in quoted string", position)
            code = int(digits, 16)
        elif escape in "01234567":
            digits = text[position + 1 : position + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits):
                _fail("invalid octal escape in quoted string", position)
            code = int(digits, 8)
            width = 2  # three digits replace the letter plus two
            if code > 0xFF:
                _fail("octal escape value > 255 in quoted string", position)
        else:
            _fail(f"unknown escape sequence \\{escape} in quoted string", position)
        if escape in "x01234567" and code > 0x7F:
            # Go puts that single byte in the string; text cannot hold a lone byte.
            _fail("byte escapes above \\x7f are not supported; write the character", position)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            _fail(f"escape \\{escape}{digits} is not a valid character", position)
        out.append(chr(code))
        position += 2 + width


# -- parser -----------------------------------------------------------------------------


class _Parser:
    """Builds and type-checks the expression of one action's tokens."""

    def __init__(self, tokens: list[_Token], offset: int) -> None:
        self.tokens = tokens
        self.index = 0
        self.offset = offset
        self.fields: set[str] = set()

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def action(self) -> _Expression:
        expression = self.pipeline(0)
        token = self.peek()
        if token is not None:
            _fail(f"unexpected {token.text!r} in action", token.offset)
        return expression

    def pipeline(self, depth: int) -> _Expression:
        expression = self.command(depth, None)
        while (token := self.peek()) is not None and token.kind == "pipe":
            self.index += 1
            expression = self.command(depth, expression)
        return expression

    def command(self, depth: int, piped: _Expression | None) -> _Expression:
        first = self.peek()
        if first is None or first.kind in ("pipe", "close"):
            offset = first.offset if first is not None else self.offset
            _fail("missing value for command", offset)
        if first.kind != "name":
            if piped is not None:
                _fail(f"cannot pipe into {first.text!r}: it is not a function", first.offset)
            operand = self.operand(depth)
            following = self.peek()
            if following is not None and following.kind not in ("pipe", "close"):
                _fail(f"{first.text!r} is not a function but has arguments", following.offset)
            return operand
        self.index += 1
        args: list[_Expression] = []
        while (token := self.peek()) is not None and token.kind not in ("pipe", "close"):
            if not token.spaced:
                _fail(f"missing space before {token.text!r}", token.offset)
            args.append(self.operand(depth))
        if piped is not None:
            args.append(piped)
        return self.call(first, args)

    def operand(self, depth: int) -> _Expression:
        token = self.peek()
        if token is None:  # pragma: no cover - callers check
            _fail("missing operand", self.offset)
        self.index += 1
        if token.kind == "field":
            self.fields.add(str(token.value))
            return _Field(str(token.value))
        if token.kind in ("string", "number"):
            return _Constant(token.value)
        if token.kind == "name":
            # Go calls a function named as an argument with no arguments.
            return self.call(token, [])
        if token.kind == "open":
            if depth + 1 > MAX_DEPTH:
                _fail(f"parentheses nested deeper than {MAX_DEPTH} levels", token.offset)
            inner = self.pipeline(depth + 1)
            close = self.peek()
            if close is None or close.kind != "close":
                _fail("unclosed left parenthesis", token.offset)
            self.index += 1
            return inner
        _fail(f"unexpected {token.text!r} in operand", token.offset)

    def call(self, name: _Token, args: list[_Expression]) -> _Call:
        function = str(name.value)
        offset = name.offset
        if function in _KEYWORDS:
            _fail(f"'{function}' actions are not supported in broker templates", offset)
        if function in _CONSTANTS:
            _fail(f"the constant '{function}' is not supported in broker templates", offset)
        if function in _UNSUPPORTED_FUNCTIONS:
            _fail(f"function '{function}' is not supported in broker templates", offset)
        if function not in _FUNCTIONS:
            _fail(f"unknown function '{function}'", offset)
        if function == "base64":
            if len(args) != 1:
                _fail(f"base64 takes 1 argument, not {len(args)}", offset)
            if _type_of(args[0]) != "string":
                _fail("base64 takes a string, not an integer", offset)
        elif function == "printf":
            _check_printf(args, offset)
        return _Call(function, tuple(args))


def _check_printf(args: list[_Expression], offset: int) -> None:
    if not args:
        _fail("printf needs a format string", offset)
    fmt = args[0]
    if not (isinstance(fmt, _Constant) and isinstance(fmt.value, str)):
        _fail("printf's format must be a string constant", offset)
    verbs = _printf_verbs(fmt.value, offset)
    operands = args[1:]
    if len(verbs) != len(operands):
        _fail(
            f"printf format has {len(verbs)} verb(s) but {len(operands)} argument(s)",
            offset,
        )
    for number, (verb, operand) in enumerate(zip(verbs, operands, strict=True), start=1):
        kind = _type_of(operand)
        if verb in "sq" and kind != "string":
            _fail(f"printf %{verb} (argument {number}) needs a string, not an integer", offset)
        if verb == "d" and kind != "int":
            _fail(f"printf %d (argument {number}) needs an integer, not a string", offset)


def _printf_verbs(fmt: str, offset: int) -> list[str]:
    verbs: list[str] = []
    position = 0
    while (position := fmt.find("%", position)) >= 0:
        verb = fmt[position + 1 : position + 2]
        if verb == "%":
            position += 2
            continue
        if verb not in _VERBS or not verb:
            shown = f"%{verb}" if verb else "%"
            _fail(
                f"printf verb {shown!r} is not supported (use %s, %v, %q, %d or %%)",
                offset,
            )
        verbs.append(verb)
        position += 2
    return verbs


# -- evaluation -------------------------------------------------------------------------


_QUOTE_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _go_quote(value: str) -> str:
    """Go's ``strconv.Quote`` (what ``%q`` prints for a string)."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:
            # A byte that was not UTF-8 (kept by Python as a surrogate escape): Go shows \xNN.
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _format(value: _Value) -> str:
    return value if isinstance(value, str) else str(value)


def _sprint(values: list[_Value]) -> str:
    """Go's ``fmt.Sprint``: a space between operands when neither is a string."""
    out: list[str] = []
    for index, value in enumerate(values):
        if index and not isinstance(value, str) and not isinstance(values[index - 1], str):
            out.append(" ")
        out.append(_format(value))
    return "".join(out)


def _sprintf(fmt: str, values: list[_Value]) -> str:
    out: list[str] = []
    position = 0
    args = iter(values)
    while (found := fmt.find("%", position)) >= 0:
        out.append(fmt[position:found])
        verb = fmt[found + 1]
        if verb == "%":
            out.append("%")
        else:
            value = next(args)
            out.append(
                _go_quote(value) if verb == "q" and isinstance(value, str) else _format(value)
            )
        position = found + 2
    out.append(fmt[position:])
    return "".join(out)


def _utf8(value: str) -> bytes:
    # surrogateescape gives back the bytes of a value that was not UTF-8 (as Go holds it).
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise BrokerError("a credential value is not valid text") from None


class Template:
    """A parsed header or query-parameter template. Build one with :meth:`parse`.

    Two templates are equal when their texts are. ``text`` is configuration, not a
    secret; rendered values are never kept.
    """

    __slots__ = ("_fields", "_pieces", "text", "where")

    def __init__(self, text: str, *, where: str) -> None:
        if not isinstance(text, str):
            raise TypeError("Template expects str")
        if len(text) > MAX_TEMPLATE_BYTES or _utf8_size(text) > MAX_TEMPLATE_BYTES:
            raise ConfigurationError(f"{where}: template is longer than {MAX_TEMPLATE_BYTES} bytes")
        pieces: list[str | _Expression] = []
        fields: set[str] = set()
        try:
            for piece in _Lexer(text).pieces():
                if isinstance(piece, str):
                    pieces.append(piece)
                    continue
                tokens, offset = piece
                parser = _Parser(tokens, offset)
                pieces.append(parser.action())
                fields |= parser.fields
        except _SyntaxError as exc:
            raise ConfigurationError(
                f"{where}: {exc.problem} (at character {exc.offset + 1} of the template)"
            ) from None
        self.text: str = text
        self.where: str = where
        self._pieces: tuple[str | _Expression, ...] = tuple(pieces)
        self._fields: frozenset[str] = frozenset(fields)

    @classmethod
    def parse(cls, text: str, *, where: str) -> Template:
        """Parse ``text``; ``where`` names it in errors (``secretless.yml: services.x...``).

        Raises :class:`ConfigurationError` (only) when the text is not a valid template.
        """
        return cls(text, where=where)

    def variables(self) -> frozenset[str]:
        """The names of the credentials the template refers to."""
        return self._fields

    def render(self, values: Mapping[str, str]) -> str:
        """The template filled in with ``values`` (credential name -> value).

        Raises :class:`BrokerError` naming a missing variable (never a value), or when the
        result would exceed :data:`MAX_OUTPUT_BYTES`.
        """
        out: list[str] = []
        size = 0
        for piece in self._pieces:
            text = piece if isinstance(piece, str) else _format(self._evaluate(piece, values))
            size += _utf8_size(text)
            if size > MAX_OUTPUT_BYTES:
                raise BrokerError(
                    f"{self.where}: the rendered value is longer than {MAX_OUTPUT_BYTES} bytes"
                )
            out.append(text)
        return "".join(out)

    def _evaluate(self, expression: _Expression, values: Mapping[str, str]) -> _Value:
        if isinstance(expression, _Constant):
            return expression.value
        if isinstance(expression, _Field):
            try:
                value = values[expression.name]
            except KeyError:
                raise BrokerError(
                    f"{self.where}: no value for template variable '{expression.name}'"
                ) from None
            if not isinstance(value, str):
                raise TypeError(f"the value of '{expression.name}' is not a string")
            return value
        args = [self._evaluate(arg, values) for arg in expression.args]
        if expression.function == "base64":
            result = base64.b64encode(_utf8(str(args[0]))).decode("ascii")
        elif expression.function == "printf":
            result = _sprintf(str(args[0]), args[1:])
        elif expression.function == "urlquery":
            joined = args[0] if len(args) == 1 and isinstance(args[0], str) else _sprint(args)
            result = urllib.parse.quote_plus(_utf8(str(joined)), safe="")
        else:
            result = _sprint(args)
        if len(result) > MAX_OUTPUT_BYTES:
            raise BrokerError(
                f"{self.where}: a value computed while rendering is longer than "
                f"{MAX_OUTPUT_BYTES} bytes"
            )
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Template({self.text!r}, where={self.where!r})"


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))
