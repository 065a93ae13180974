"""Credential providers: env, file, literal, keyring; validation; no value in any error."""

from __future__ import annotations

import os
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from trustwire.broker.config import CredentialSource, parse_config
from trustwire.broker.credentials import MAX_FILE_BYTES, fetch, resolve
from trustwire.errors import CredentialUnavailable

CANARY = "canary-6f1d-secret-value"


def unavailable(source: CredentialSource, service: str = "my-api") -> str:
    with pytest.raises(CredentialUnavailable) as caught:
        fetch(source, service=service)
    message = str(caught.value)
    assert f"service {service!r}" in message
    assert f"credential {source.name!r}" in message
    assert CANARY not in message
    return message


# -- env --------------------------------------------------------------------------------


def test_env_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_TEST_TOKEN", CANARY)
    assert fetch(CredentialSource("token", "env", "TW_TEST_TOKEN"), service="s") == CANARY


def test_env_variable_must_exist_and_be_non_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TW_TEST_MISSING", raising=False)
    message = unavailable(CredentialSource("token", "env", "TW_TEST_MISSING"))
    assert message == (
        "service 'my-api': credential 'token': "
        "the environment variable 'TW_TEST_MISSING' is not set"
    )
    monkeypatch.setenv("TW_TEST_EMPTY", "")
    assert "is empty" in unavailable(CredentialSource("token", "env", "TW_TEST_EMPTY"))


def test_env_is_read_on_every_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    source = CredentialSource("token", "env", "TW_TEST_ROTATING")
    monkeypatch.setenv("TW_TEST_ROTATING", "first")
    assert fetch(source, service="s") == "first"
    monkeypatch.setenv("TW_TEST_ROTATING", "second")
    assert fetch(source, service="s") == "second"


# -- file -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"token", "token"),
        (b"token\n", "token"),
        (b"token\r\n", "token"),
        (b"token\n\n", "token\n"),  # only one trailing newline is removed
        (b" token \n", " token "),
        ("jéton\n".encode(), "jéton"),
        (b"line1\nline2\n", "line1\nline2"),
    ],
)
def test_file_reads_the_value_without_its_trailing_newline(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    assert fetch(CredentialSource("token", "file", str(path)), service="s") == expected


def test_file_follows_symbolic_links_as_mounted_secrets_use_them(tmp_path: Path) -> None:
    target = tmp_path / "..data" / "token"
    target.parent.mkdir()
    target.write_text(CANARY + "\n")
    link = tmp_path / "token"
    link.symlink_to(target)
    assert fetch(CredentialSource("token", "file", str(link)), service="s") == CANARY


def test_file_failures_name_the_path_and_never_the_content(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert "cannot read" in unavailable(CredentialSource("token", "file", str(missing)))
    assert "No such file or directory" in unavailable(
        CredentialSource("token", "file", str(missing))
    )

    assert "is not a regular file" in unavailable(CredentialSource("token", "file", str(tmp_path)))

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "is not a regular file" in unavailable(CredentialSource("token", "file", str(fifo)))

    big = tmp_path / "big"
    big.write_bytes(CANARY.encode() * (MAX_FILE_BYTES // len(CANARY) + 1))
    assert f"larger than {MAX_FILE_BYTES} bytes" in unavailable(
        CredentialSource("token", "file", str(big))
    )

    binary = tmp_path / "binary"
    binary.write_bytes(CANARY.encode() + b"\xff\xfe")
    assert "is not UTF-8 text" in unavailable(CredentialSource("token", "file", str(binary)))

    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    assert "gave an empty value" in unavailable(CredentialSource("token", "file", str(empty)))


def test_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "limit"
    path.write_bytes(b"a" * MAX_FILE_BYTES)
    assert len(fetch(CredentialSource("token", "file", str(path)), service="s")) == MAX_FILE_BYTES


# -- literal ----------------------------------------------------------------------------


def test_literal_is_its_own_value() -> None:
    assert fetch(CredentialSource("token", "literal", CANARY), service="s") == CANARY


def test_empty_literal_is_unavailable() -> None:
    assert "gave an empty value" in unavailable(CredentialSource("token", "literal", ""))


def test_unknown_provider_is_unavailable() -> None:
    source = CredentialSource("token", "vault", "x")  # type: ignore[arg-type]
    assert "unknown provider 'vault'" in unavailable(source)


# -- keyring ----------------------------------------------------------------------------


def fake_keyring(monkeypatch: pytest.MonkeyPatch, get_password: Any) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []

    def recorded(service: str, username: str) -> Any:
        calls.append((service, username))
        return get_password(service, username)

    module = types.ModuleType("keyring")
    module.get_password = recorded  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", module)
    return calls


def test_keyring_without_the_package_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # makes `import keyring` fail
    message = unavailable(CredentialSource("token", "keyring", "billing#robot"))
    assert "the keyring provider needs the 'keyring' package" in message


def test_keyring_reads_service_and_account(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_keyring(monkeypatch, lambda service, username: CANARY)
    source = CredentialSource("token", "keyring", "service#datadog/client_key")
    assert fetch(source, service="s") == CANARY
    assert calls == [("service", "datadog/client_key")]


def test_keyring_missing_entry_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_keyring(monkeypatch, lambda service, username: None)
    message = unavailable(CredentialSource("token", "keyring", "billing#robot"))
    assert "no keyring entry 'billing#robot'" in message


def test_keyring_backend_error_is_not_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(service: str, username: str) -> str:
        raise RuntimeError(f"backend dumped {CANARY}")

    fake_keyring(monkeypatch, broken)
    message = unavailable(CredentialSource("token", "keyring", "billing#robot"))
    assert "the keyring backend failed (RuntimeError)" in message


def test_keyring_malformed_entry_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_keyring(monkeypatch, lambda service, username: CANARY)
    assert "service#account" in unavailable(CredentialSource("token", "keyring", "no-separator"))


# -- resolve ----------------------------------------------------------------------------


CONFIG = textwrap.dedent(
    """\
    version: "2"
    services:
      my-api:
        connector: generic_http
        listenOn: tcp://127.0.0.1:8071
        credentials:
          token: {from: env, get: TW_TEST_API_TOKEN}
          user: {from: file, get: FILE_PATH}
          region: eu-west-1
        config:
          credentialValidations:
            token: '^[A-Za-z0-9-]+$'
            user: '[^:]+'
          headers:
            Authorization: 'Basic {{ printf "%s:%s" .user .token | base64 }}'
            X-Region: '{{ .region }}'
          authenticateURLsMatching: [^http]
    """
)


def service_with_file(tmp_path: Path, user: str) -> Any:
    path = tmp_path / "user"
    path.write_text(user + "\n")
    return parse_config(CONFIG.replace("FILE_PATH", str(path))).services["my-api"]


def test_resolve_returns_every_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_TEST_API_TOKEN", "tok-123")
    service = service_with_file(tmp_path, "robot")
    values = resolve(service)
    assert values == {"token": "tok-123", "user": "robot", "region": "eu-west-1"}
    assert service.http.render_headers(values) == {
        "Authorization": "Basic cm9ib3Q6dG9rLTEyMw==",
        "X-Region": "eu-west-1",
    }


@pytest.mark.parametrize(
    ("token", "user", "failing"),
    [
        ("tok 123", "robot", "token"),
        # Go's $ is the end of the text: a trailing newline does not pass '^...$'
        ("tok-123\n", "robot", "token"),
        ("tok-123", ":", "user"),
    ],
)
def test_resolve_refuses_a_value_that_fails_its_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str, user: str, failing: str
) -> None:
    monkeypatch.setenv("TW_TEST_API_TOKEN", token)
    service = service_with_file(tmp_path, user)
    with pytest.raises(CredentialUnavailable) as caught:
        resolve(service)
    assert str(caught.value) == (
        f"credential {failing!r} of service 'my-api' does not match its validation pattern"
    )
    assert token.strip() not in str(caught.value)


def test_validation_searches_like_go_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # '[^:]+' is unanchored: Go's Match finds it anywhere, so 'a:b' passes
    monkeypatch.setenv("TW_TEST_API_TOKEN", "tok")
    assert resolve(service_with_file(tmp_path, "a:b"))["user"] == "a:b"


def test_resolve_names_the_failing_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TW_TEST_API_TOKEN", raising=False)
    with pytest.raises(CredentialUnavailable) as caught:
        resolve(service_with_file(tmp_path, "robot"))
    assert str(caught.value) == (
        "service 'my-api': credential 'token': the environment variable "
        "'TW_TEST_API_TOKEN' is not set"
    )
