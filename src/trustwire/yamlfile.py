"""Strict YAML configuration files: read, bounded, composed into nodes, never constructed.

The policy file (:mod:`trustwire.policy.model`) and the broker's ``secretless.yml``
(:mod:`trustwire.broker.config`) are both read through a :class:`YamlFile`, which names
the kind of file in its messages (``"policy file"``, ``"broker configuration"``) and
holds its limits. Each module then validates the composed node tree itself; the
helpers :func:`line_of` and :func:`describe` serve those validators.

Invariants:

- Safe loading only, and not even that far: text is *composed* into
  :class:`yaml.nodes.Node` objects and never constructed, so a tag such as
  ``!!python/object`` is only a string on a node that a validator refuses.
- YAML anchors and aliases are refused (a surprising merge must not silently change a
  security configuration); so are multiple documents and nesting deeper than
  ``max_depth`` levels, the latter while composing, before any deep structure is built.
- Input is bounded: a file larger than ``max_bytes`` is refused before it is read whole
  (by its size, then by reading at most one byte more), text by its length before
  parsing. Only regular files are read, and a FIFO cannot make the reader hang.
- Every failure, for any input, is a :class:`~trustwire.errors.ConfigurationError`
  naming the file and, where known, the 1-based YAML line.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Final

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from trustwire.errors import ConfigurationError

__all__ = [
    "BOOL",
    "FLOAT",
    "INT",
    "MAP",
    "NULL",
    "SEQ",
    "STR",
    "TIMESTAMP",
    "YamlFile",
    "describe",
    "line_of",
]

STR: Final = "tag:yaml.org,2002:str"
INT: Final = "tag:yaml.org,2002:int"
FLOAT: Final = "tag:yaml.org,2002:float"
BOOL: Final = "tag:yaml.org,2002:bool"
NULL: Final = "tag:yaml.org,2002:null"
TIMESTAMP: Final = "tag:yaml.org,2002:timestamp"
MAP: Final = "tag:yaml.org,2002:map"
SEQ: Final = "tag:yaml.org,2002:seq"

_SCALAR_KINDS: Final = {
    STR: "a string",
    INT: "an integer",
    BOOL: "a boolean",
    NULL: "empty",
    FLOAT: "a number",
    TIMESTAMP: "a timestamp",
}


@dataclass(frozen=True, slots=True)
class YamlFile:
    """One kind of strict YAML file: how errors name it, and its limits.

    ``kind`` starts every message about the file as a whole (``"policy file is empty"``);
    ``refusal_suffix`` ends the anchor and alias refusals (e.g. ``" in policy files"``);
    ``alias_hint`` is added to a syntax error raised while reading an alias, the usual
    cause being an unquoted ``*``.
    """

    kind: str
    max_bytes: int
    max_depth: int = 64
    refusal_suffix: str = ""
    alias_hint: str = ""

    def read(self, path: str | os.PathLike[str]) -> str:
        """The text of the regular file at ``path``, within ``max_bytes`` and UTF-8.

        Raises :class:`ConfigurationError` (naming ``path``) for anything else.
        """
        where = os.fspath(path)
        try:
            # O_NONBLOCK so that a FIFO cannot make us hang; we then insist on a regular file.
            fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read {self.kind}: {exc.strerror}", path=where
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigurationError(f"{self.kind} is not a regular file", path=where)
            if info.st_size > self.max_bytes:
                raise ConfigurationError(self._too_large(info.st_size), path=where)
            with os.fdopen(fd, "rb") as handle:
                fd = -1
                data = handle.read(self.max_bytes + 1)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read {self.kind}: {exc.strerror}", path=where
            ) from None
        finally:
            if fd >= 0:
                os.close(fd)
        if len(data) > self.max_bytes:
            raise ConfigurationError(self._too_large(len(data)), path=where)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"{self.kind} is not UTF-8 (byte offset {exc.start})", path=where
            ) from None

    def compose(self, text: str, *, source: str) -> Node:
        """The root node of the single YAML document ``text``; ``source`` names it in errors.

        Raises :class:`ConfigurationError` (and nothing else) for text over ``max_bytes``,
        invalid or empty YAML, several documents, anchors, aliases or deep nesting.
        """
        # A character is at least one byte, so the length check bounds the encode below.
        if len(text) > self.max_bytes:
            raise ConfigurationError(self._too_large(len(text)), path=source)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_bytes:
            raise ConfigurationError(self._too_large(size), path=source)
        loader: _Loader | None = None
        try:
            # The reader validates characters in its constructor, so it belongs in the try.
            loader = _Loader(text)
            loader.max_depth = self.max_depth
            loader.refusal_suffix = self.refusal_suffix
            node = loader.get_single_node()
        except _LoadRefused as exc:
            raise ConfigurationError(exc.message, path=source, line=line_of(exc.mark)) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = ": ".join(part for part in (exc.context, exc.problem) if part)
            problem = problem or "syntax error"
            if exc.context is not None and "alias" in exc.context:
                problem += self.alias_hint
            raise ConfigurationError(
                f"invalid YAML: {problem}", path=source, line=line_of(mark)
            ) from None
        except yaml.reader.ReaderError as exc:
            character = exc.character
            code = character if isinstance(character, int) else ord(str(character)[:1] or "\0")
            raise ConfigurationError(
                f"invalid YAML: character U+{code:04X} is not allowed",
                path=source,
                line=text.count("\n", 0, exc.position) + 1,
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"invalid YAML: {exc}", path=source) from None
        except RecursionError:
            raise ConfigurationError("invalid YAML: nested too deeply", path=source) from None
        finally:
            if loader is not None:
                loader.dispose()
        if node is None:
            raise ConfigurationError(f"{self.kind} is empty", path=source)
        return node

    def _too_large(self, size: int) -> str:
        return f"{self.kind} is {size} bytes; the limit is {self.max_bytes} bytes"


def line_of(mark: object) -> int | None:
    """The 1-based line of a YAML mark (C and pure-Python marks alike), if it has one."""
    line = getattr(mark, "line", None)
    return line + 1 if isinstance(line, int) else None


def describe(node: Node) -> str:
    """How an error names what a node is: ``"a mapping"``, ``"an integer"``, ``"empty"``...

    A mapping or list carrying a tag other than the standard one, like any other
    unexpected tag, is ``"a value tagged TAG"``.
    """
    if isinstance(node, MappingNode) and node.tag == MAP:
        return "a mapping"
    if isinstance(node, SequenceNode) and node.tag == SEQ:
        return "a list"
    return _SCALAR_KINDS.get(node.tag, f"a value tagged {node.tag}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, anchors and deep nesting while composing."""

    depth = 0
    max_depth = 64
    refusal_suffix = ""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _LoadRefused(
                f"YAML aliases are not allowed{self.refusal_suffix}", event.start_mark
            )
        if getattr(event, "anchor", None) is not None:
            raise _LoadRefused(
                f"YAML anchors are not allowed{self.refusal_suffix}", event.start_mark
            )
        if self.depth >= self.max_depth:
            raise _LoadRefused(f"nesting deeper than {self.max_depth} levels", event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _LoadRefused(Exception):
    def __init__(self, message: str, mark: object) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark
