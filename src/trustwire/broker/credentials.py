"""Credential providers: fetch the secrets a service injects, when a request needs them.

Providers (``CredentialSource.provider``):

- ``env``: the environment variable named by ``get``; it must exist and be non-empty.
- ``file``: the file at ``get`` (an absolute path; symbolic links are followed, as
  mounted secrets use them); it must be a regular file of at most
  :data:`MAX_FILE_BYTES` bytes of UTF-8, and one trailing newline (``\\n`` or ``\\r\\n``)
  is removed, since editors and ``echo`` add one.
- ``literal``: ``get`` itself.
- ``keyring``: the OS keystore through the optional ``keyring`` package, ``get`` being
  ``"service#account"`` as Secretless's ``keychain`` provider writes it
  (``keyring.get_password(service, account)``).

Invariants:

- Errors are :class:`~trustwire.errors.CredentialUnavailable` naming the service, the
  credential and what was looked up (a variable name, a path, a keyring entry), never a
  value: messages of lower layers that might quote one (a keyring backend's) are not
  passed on.
- Nothing is cached or logged here. Secretless fetches credentials on every request and
  zeroizes its byte slices afterwards; Python cannot zeroize a ``str`` (strings are
  immutable and may be copied or interned by the interpreter), so instead the broker
  fetches per request, keeps the values only in the request's local variables, and drops
  every reference when the request ends. Only the OAuth2 access token is cached (by the
  token source, until shortly before it expires), because fetching a token per request
  is what the token's lifetime exists to avoid.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
from collections.abc import Mapping
from typing import Final

from trustwire.broker.config import CredentialSource, ServiceConfig
from trustwire.errors import CredentialUnavailable

__all__ = ["MAX_FILE_BYTES", "fetch", "resolve"]

MAX_FILE_BYTES: Final = 64 * 1024
"""A ``file`` credential larger than this is refused."""


def fetch(source: CredentialSource, *, service: str) -> str:
    """The current value of one credential of ``service``.

    Raises :class:`CredentialUnavailable` (naming ``service`` and the credential, never
    the value) when the provider cannot supply a non-empty value.
    """
    what = f"service {service!r}: credential {source.name!r}"
    if source.provider == "literal":
        value = source.get
    elif source.provider == "env":
        value = _from_env(source.get, what)
    elif source.provider == "file":
        value = _from_file(source.get, what)
    elif source.provider == "keyring":
        value = _from_keyring(source.get, what)
    else:
        raise CredentialUnavailable(f"{what}: unknown provider {source.provider!r}")
    if not value:
        raise CredentialUnavailable(f"{what}: the {source.provider} provider gave an empty value")
    return value


def resolve(service: ServiceConfig) -> dict[str, str]:
    """Every credential of ``service``, each checked against its ``credentialValidations``.

    Raises :class:`CredentialUnavailable` when a provider fails or a value does not match
    its pattern (the message names the credential, never the value).
    """
    values = {
        name: fetch(source, service=service.name) for name, source in service.credentials.items()
    }
    _validate(service.name, values, service.http.credential_validations)
    return values


def _validate(
    service: str, values: Mapping[str, str], patterns: Mapping[str, re.Pattern[str]]
) -> None:
    for name, pattern in patterns.items():
        value = values.get(name)
        if value is None:
            raise CredentialUnavailable(f"service {service!r}: credential {name!r} is missing")
        # Go's Regexp.Match: the pattern may match anywhere (anchor it with ^ and $).
        if pattern.search(value) is None:
            raise CredentialUnavailable(
                f"credential {name!r} of service {service!r} does not match its validation pattern"
            )


def _from_env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise CredentialUnavailable(f"{what}: the environment variable {name!r} is not set")
    if not value:
        raise CredentialUnavailable(f"{what}: the environment variable {name!r} is empty")
    return value


def _from_file(path: str, what: str) -> str:
    try:
        # O_NONBLOCK so that a FIFO cannot make a request hang; then insist on a regular file.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CredentialUnavailable(f"{what}: cannot read {path!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CredentialUnavailable(f"{what}: {path!r} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise CredentialUnavailable(f"{what}: {path!r} is larger than {MAX_FILE_BYTES} bytes")
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CredentialUnavailable(f"{what}: cannot read {path!r}: {exc.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise CredentialUnavailable(f"{what}: {path!r} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialUnavailable(f"{what}: {path!r} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def _from_keyring(entry: str, what: str) -> str:
    service, separator, account = entry.partition("#")
    if not separator or not service or not account:
        raise CredentialUnavailable(f"{what}: a keyring entry is written 'service#account'")
    try:
        keyring = importlib.import_module("keyring")
    except ImportError:
        raise CredentialUnavailable(
            f"{what}: the keyring provider needs the 'keyring' package (pip install keyring)"
        ) from None
    try:
        value = keyring.get_password(service, account)
    except Exception as exc:  # any backend failure; its message might quote a secret
        raise CredentialUnavailable(
            f"{what}: the keyring backend failed ({type(exc).__name__}) reading {entry!r}"
        ) from None
    if value is None:
        raise CredentialUnavailable(f"{what}: no keyring entry {entry!r}")
    if not isinstance(value, str):
        raise CredentialUnavailable(f"{what}: the keyring entry {entry!r} is not text")
    return value
