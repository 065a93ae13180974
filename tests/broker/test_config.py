"""secretless.yml v2 parsing: every documented field, and precise errors for bad files."""

# ruff: noqa: E501 - the table of malformed files keeps each expected message on one line

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustwire.broker.config import (
    MAX_CONFIG_BYTES,
    MAX_URL_CHARS,
    CredentialSource,
    ListenAddress,
    check_token_url,
    load_config,
    parse_config,
)
from trustwire.errors import BrokerError, ConfigurationError

FULL = textwrap.dedent(
    """\
    version: "2"
    services:
      billing-api:
        connector: generic_http
        listenOn: tcp://127.0.0.1:8071
        credentials:
          token:
            from: env
            get: BILLING_TOKEN
          user:
            from: file
            get: /run/secrets/billing_user
          password:
            from: keyring
            get: billing#robot
          region: eu-west-1
          pin: 1234
        config:
          credentialValidations:
            token: '^[A-Za-z0-9-]+$'
            user: '[^:]+'
          headers:
            Authorization: 'Basic {{ printf "%s:%s" .user .password | base64 }}'
            X-Api-Token: "{{ .token }}"
            X-Region: "{{ .region }}-{{ .pin }}"
            Accept: application/json
          queryParams:
            key: "{{ .token }}"
            region: "{{ .region | urlquery }}"
          authenticateURLsMatching:
            - ^https?://billing\\.example\\.com/
            - ^https?://billing-eu\\.example\\.com/v[0-9]+/
          forceSSL: true
      oauth-api:
        protocol: generic_http
        listenOn: unix:///run/trustwire/oauth-api.sock
        config:
          headers:
            Authorization: Bearer {{ .access_token }}
          authenticateURLsMatching: ^https://api\\.example\\.com/
        oauth2:
          token_url: https://auth.example.com/oauth/token
          client_id: {from: env, get: OAUTH_CLIENT_ID}
          client_secret: {from: file, get: /run/secrets/oauth_secret}
          scope: read write
          audience: {from: literal, get: "https://api.example.com"}
      keychain-api:
        connector: generic_http
        listenOn: tcp://[::1]:8072
        credentials:
          key:
            from: keychain
            get: service#keychain-api/key
          plain:
            from: literal
            get: literal-value
        config:
          headers:
            X-Key: "{{ .key }}{{ .plain }}"
          forceSSL: false
          authenticateURLsMatching: [^http]
    """
)


def test_every_documented_field_is_parsed() -> None:
    config = parse_config(FULL, source="full.yml")
    assert config.source == "full.yml"
    assert list(config.services) == ["billing-api", "oauth-api", "keychain-api"]

    billing = config.services["billing-api"]
    assert billing.name == "billing-api"
    assert billing.connector == "generic_http"
    assert billing.listen_on == ListenAddress(scheme="tcp", host="127.0.0.1", port=8071, path=None)
    assert str(billing.listen_on) == "tcp://127.0.0.1:8071"
    assert billing.credentials["token"] == CredentialSource("token", "env", "BILLING_TOKEN")
    assert billing.credentials["user"] == CredentialSource(
        "user", "file", "/run/secrets/billing_user"
    )
    assert billing.credentials["password"] == CredentialSource(
        "password", "keyring", "billing#robot"
    )
    assert billing.credentials["region"] == CredentialSource("region", "literal", "eu-west-1")
    assert billing.credentials["pin"] == CredentialSource("pin", "literal", "1234")
    http = billing.http
    assert http.force_ssl is True
    assert list(http.headers) == ["Authorization", "X-Api-Token", "X-Region", "Accept"]
    assert list(http.query_params) == ["key", "region"]
    values = {
        "token": "t-1",
        "user": "Jonah",
        "password": "secret",
        "region": "eu west",
        "pin": "1234",
    }
    assert http.render_headers(values) == {
        "Authorization": "Basic Sm9uYWg6c2VjcmV0",
        "X-Api-Token": "t-1",
        "X-Region": "eu west-1234",
        "Accept": "application/json",
    }
    assert http.render_query_params(values) == {"key": "t-1", "region": "eu+west"}
    assert http.variables() == {"token", "user", "password", "region", "pin"}
    assert set(http.credential_validations) == {"token", "user"}
    assert http.credential_validations["token"].search("abc-123")
    assert not http.credential_validations["token"].search("abc 123")
    assert [p.pattern for p in http.authenticate_urls] == [
        r"^https?://billing\.example\.com/",
        r"^https?://billing-eu\.example\.com/v[0-9]+/",
    ]
    assert billing.authenticates("https://billing.example.com/invoices")
    assert billing.authenticates("http://billing-eu.example.com/v2/x")
    assert not billing.authenticates("https://billing.example.com.evil.net/")
    assert not billing.authenticates("https://evil.net/?u=https://billing.example.com/")
    assert billing.oauth2 is None

    oauth = config.services["oauth-api"]
    assert oauth.connector == "generic_http"  # from the deprecated `protocol:` spelling
    assert oauth.listen_on == ListenAddress(
        scheme="unix", host=None, port=None, path="/run/trustwire/oauth-api.sock"
    )
    assert str(oauth.listen_on) == "unix:///run/trustwire/oauth-api.sock"
    assert dict(oauth.credentials) == {}
    assert oauth.http.force_ssl is False
    assert oauth.http.variables() == {"access_token"}
    assert len(oauth.http.authenticate_urls) == 1  # a single string is a one-item list
    assert oauth.oauth2 is not None
    assert oauth.oauth2.token_url == CredentialSource(
        "oauth2.token_url", "literal", "https://auth.example.com/oauth/token"
    )
    assert oauth.oauth2.client_id == CredentialSource("oauth2.client_id", "env", "OAUTH_CLIENT_ID")
    assert oauth.oauth2.client_secret == CredentialSource(
        "oauth2.client_secret", "file", "/run/secrets/oauth_secret"
    )
    assert oauth.oauth2.scope == CredentialSource("oauth2.scope", "literal", "read write")
    assert oauth.oauth2.audience == CredentialSource(
        "oauth2.audience", "literal", "https://api.example.com"
    )

    keychain = config.services["keychain-api"]
    assert keychain.listen_on == ListenAddress(scheme="tcp", host="::1", port=8072, path=None)
    assert str(keychain.listen_on) == "tcp://[::1]:8072"
    # Secretless's `keychain` provider is read as trustwire's `keyring`
    assert keychain.credentials["key"] == CredentialSource(
        "key", "keyring", "service#keychain-api/key"
    )
    assert keychain.credentials["plain"].provider == "literal"
    assert keychain.http.force_ssl is False
    assert keychain.http.credential_validations == {}


def test_optional_fields_default_as_secretless() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            version: 2
            services:
              s:
                connector: generic_http
                listenOn: tcp://localhost:9000
                credentials: {token: abc}
                config:
                  queryParams: {key: "{{ .token }}"}
                  authenticateURLsMatching: [.*]
            """
        )
    )
    service = config.services["s"]
    assert service.http.force_ssl is False
    assert dict(service.http.headers) == {}
    assert service.authenticates("http://anything/")


def test_literal_credential_repr_never_shows_the_value() -> None:
    config = parse_config(FULL)
    text = repr(config)
    for secret in ("eu-west-1", "1234", "literal-value"):
        assert secret not in text
    assert "<redacted>" in text
    assert repr(CredentialSource("k", "literal", "hunter2")) == (
        "CredentialSource(name='k', provider='literal', get='<redacted>')"
    )
    assert "hunter2" not in str(CredentialSource("k", "literal", "hunter2"))
    assert "MY_VAR" in repr(CredentialSource("k", "env", "MY_VAR"))


# -- malformed configurations -----------------------------------------------------------


def service(body: str, *, name: str = "my-api") -> str:
    """A file with one service whose mapping is ``body`` (YAML at service indentation)."""
    return (
        'version: "2"\nservices:\n  '
        + name
        + ":\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
    )


BASE = """\
connector: generic_http
listenOn: tcp://127.0.0.1:8071
credentials:
  token: {from: env, get: TOKEN}
config:
  headers:
    Authorization: Bearer {{ .token }}
  authenticateURLsMatching: [^https://api\\.example\\.com/]
"""


def swap(old: str, new: str) -> str:
    assert old in BASE, old
    return service(BASE.replace(old, new))


MALFORMED: list[tuple[str, str, str]] = [
    # (id, file text, the error message expected, file:line: path: problem)
    (
        "no-version",
        "services: {}\n",
        "secretless.yml:1: version: missing: without it Secretless reads the file as a version 1",
    ),
    (
        "version-1",
        'version: "1"\nservices: {}\n',
        "secretless.yml:1: version: Secretless v1 configuration is not supported",
    ),
    (
        "version-3",
        "version: 3\nservices: {}\n",
        "secretless.yml:1: version: unknown configuration version '3'",
    ),
    (
        "version-list",
        "version: [2]\nservices: {}\n",
        'secretless.yml:1: version: must be "2", not a list',
    ),
    (
        "top-level-list",
        "- version: 2\n",
        "secretless.yml:1: the top level must be a mapping, not a list",
    ),
    (
        "top-level-scalar",
        "hello\n",
        "secretless.yml:1: the top level must be a mapping, not a string",
    ),
    ("empty-file", "", "secretless.yml: broker configuration is empty"),
    (
        "unknown-top-key",
        'version: "2"\ndebug: true\nservices: {}\n',
        "secretless.yml:2: the top level: unknown key 'debug'",
    ),
    (
        "no-services",
        'version: "2"\n',
        "secretless.yml:1: services: missing: the file defines no service",
    ),
    (
        "empty-services",
        'version: "2"\nservices: {}\n',
        "secretless.yml:2: services: the file defines no service",
    ),
    ("bad-service-name", service(BASE, name="'-x'"), "services.-x: a service name is"),
    (
        "unknown-service-key",
        swap("connector: generic_http", "connector: generic_http\nlistenon: tcp://1.2.3.4:1"),
        "secretless.yml:5: services.my-api: unknown key 'listenon'",
    ),
    (
        "no-connector",
        swap("connector: generic_http\n", ""),
        "secretless.yml:3: services.my-api.connector: missing: give connector: generic_http",
    ),
    (
        "connector-pg",
        swap("generic_http", "pg"),
        "secretless.yml:4: services.my-api.connector: connector 'pg' is not supported: only generic_http is supported",
    ),
    (
        "protocol-http",
        swap("connector: generic_http", "protocol: http"),
        "services.my-api.protocol: connector 'http' is not supported: only generic_http is supported",
    ),
    (
        "connector-and-protocol-disagree",
        swap("connector: generic_http", "connector: generic_http\nprotocol: basic_auth"),
        "secretless.yml:5: services.my-api.protocol: 'protocol' is the deprecated spelling of 'connector' and disagrees",
    ),
    (
        "no-listen",
        swap("listenOn: tcp://127.0.0.1:8071\n", ""),
        "secretless.yml:3: services.my-api.listenOn: missing",
    ),
    (
        "listen-http",
        swap("tcp://127.0.0.1:8071", "http://127.0.0.1:8071"),
        "secretless.yml:5: services.my-api.listenOn: 'http://127.0.0.1:8071' is not tcp://host:port or unix:///absolute/path",
    ),
    (
        "listen-port-0",
        swap("8071", "0"),
        "services.my-api.listenOn: 'tcp://127.0.0.1:0': the port must be a number from 1 to 65535",
    ),
    ("listen-port-65536", swap("8071", "65536"), "the port must be a number from 1 to 65535"),
    (
        "listen-no-port",
        swap(":8071", ""),
        "services.my-api.listenOn: 'tcp://127.0.0.1': expected tcp://host:port",
    ),
    (
        "listen-no-host",
        swap("127.0.0.1", ""),
        "services.my-api.listenOn: 'tcp://:8071': expected tcp://host:port with a host name or IP address",
    ),
    (
        "listen-bad-host",
        swap("127.0.0.1", "bad_host!"),
        "expected tcp://host:port with a host name or IP address",
    ),
    (
        "listen-bad-ipv4",
        swap("127.0.0.1", "300.1.1.1"),
        "expected tcp://host:port with a host name or IP address",
    ),
    (
        "listen-unbracketed-ipv6",
        swap("127.0.0.1", "::1"),
        "expected tcp://host:port with a host name or IP address",
    ),
    (
        "listen-unix-relative",
        swap("tcp://127.0.0.1:8071", "unix://run/x.sock"),
        "services.my-api.listenOn: 'unix://run/x.sock': a unix socket path must be absolute",
    ),
    (
        "listen-unix-too-long",
        swap("tcp://127.0.0.1:8071", "unix:///" + "a" * 120),
        "the unix socket path must be at most 107 bytes",
    ),
    (
        "listen-not-string",
        swap("tcp://127.0.0.1:8071", "8071"),
        "services.my-api.listenOn: must be a string, not an integer",
    ),
    (
        "no-credentials",
        swap("credentials:\n  token: {from: env, get: TOKEN}\n", ""),
        "secretless.yml:3: services.my-api.credentials: missing: the service has no credential",
    ),
    (
        "empty-credentials",
        swap("  token: {from: env, get: TOKEN}\n", ""),
        "services.my-api.credentials: missing: the service has no credential",
    ),
    (
        "credential-vault",
        swap("from: env", "from: vault"),
        "secretless.yml:7: services.my-api.credentials.token.from: the 'vault' provider is not supported by trustwire",
    ),
    (
        "credential-conjur",
        swap("from: env", "from: conjur"),
        "services.my-api.credentials.token.from: the 'conjur' provider is not supported by trustwire",
    ),
    (
        "credential-aws",
        swap("from: env", "from: aws"),
        "the 'aws' provider is not supported by trustwire",
    ),
    (
        "credential-kubernetes",
        swap("from: env", "from: kubernetes"),
        "the 'kubernetes' provider is not supported by trustwire",
    ),
    (
        "credential-unknown-provider",
        swap("from: env", "from: envv"),
        "services.my-api.credentials.token.from: unknown provider 'envv' (expected env, file, literal or keyring)",
    ),
    (
        "credential-no-get",
        swap("{from: env, get: TOKEN}", "{from: env}"),
        "services.my-api.credentials.token.get: missing",
    ),
    (
        "credential-extra-key",
        swap("{from: env, get: TOKEN}", "{from: env, get: TOKEN, version: 2}"),
        "services.my-api.credentials.token: unknown key 'version' (expected one of: from, get)",
    ),
    (
        "credential-list",
        swap("{from: env, get: TOKEN}", "[a, b]"),
        "services.my-api.credentials.token: must be a mapping, not a list",
    ),
    (
        "credential-null",
        swap("{from: env, get: TOKEN}", ""),
        "services.my-api.credentials.token: is empty",
    ),
    (
        "credential-bad-name",
        swap("  token: {from: env, get: TOKEN}", "  my-token: {from: env, get: TOKEN}"),
        "services.my-api.credentials.my-token: a credential name is",
    ),
    (
        "credential-env-with-equals",
        swap("get: TOKEN", "get: A=B"),
        "services.my-api.credentials.token.get: must be an environment variable name",
    ),
    (
        "credential-file-relative",
        swap("{from: env, get: TOKEN}", "{from: file, get: secrets/token}"),
        "services.my-api.credentials.token.get: must be an absolute file path",
    ),
    (
        "credential-keyring-format",
        swap("{from: env, get: TOKEN}", "{from: keyring, get: just-a-name}"),
        "services.my-api.credentials.token.get: a keyring entry is written 'service#account'",
    ),
    ("no-config", swap(BASE[BASE.index("config:") :], ""), "services.my-api.config: missing"),
    (
        "config-unknown-key",
        swap("  headers:", "  credentialPatterns: {token: x}\n  headers:"),
        "secretless.yml:9: services.my-api.config: unknown key 'credentialPatterns' (did you mean credentialValidations?)",
    ),
    (
        "config-oauth2-misplaced",
        swap("  headers:", "  oauth2: {}\n  headers:"),
        "services.my-api.config: unknown key 'oauth2' (oauth2 belongs at the service level",
    ),
    (
        "oauth1",
        swap("  headers:", "  oauth1: {consumer_key: x}\n  headers:"),
        "secretless.yml:9: services.my-api.config.oauth1: oauth1 is not supported; use oauth2",
    ),
    (
        "header-not-string",
        swap("Bearer {{ .token }}", "42"),
        "secretless.yml:10: services.my-api.config.headers.Authorization: must be a string, not an integer (quote the value)",
    ),
    (
        "header-list",
        swap("Bearer {{ .token }}", "[a]"),
        "services.my-api.config.headers.Authorization: must be a string, not a list",
    ),
    (
        "headers-list",
        swap("headers:\n    Authorization: Bearer {{ .token }}", "headers: [Authorization]"),
        "services.my-api.config.headers: must be a mapping, not a list",
    ),
    (
        "header-bad-template",
        swap("{{ .token }}", "{{ .token | b64 }}"),
        "secretless.yml:10: services.my-api.config.headers.Authorization: unknown function 'b64'",
    ),
    (
        "header-undefined-variable",
        swap("{{ .token }}", "{{ .tokn }}"),
        "secretless.yml:10: services.my-api.config.headers.Authorization: the template refers to 'tokn', which is not a credential of service 'my-api' (defined: token)",
    ),
    (
        "header-access-token-without-oauth2",
        swap("{{ .token }}", "{{ .access_token }}"),
        "the template refers to 'access_token', which is not a credential of service 'my-api' (defined: token); access_token is provided when the service sets oauth2",
    ),
    (
        "header-bad-name",
        swap("Authorization:", "'Bad Header':"),
        "services.my-api.config.headers.Bad Header: is not a valid HTTP header name",
    ),
    (
        "header-managed",
        swap("Authorization:", "Host:"),
        "services.my-api.config.headers.Host: this header is managed by the proxy",
    ),
    (
        "header-twice",
        swap(
            "    Authorization: Bearer {{ .token }}",
            "    Authorization: Bearer {{ .token }}\n    authorization: x",
        ),
        "services.my-api.config.headers.authorization: set twice",
    ),
    (
        "header-duplicate-key",
        swap(
            "    Authorization: Bearer {{ .token }}",
            "    Authorization: Bearer {{ .token }}\n    Authorization: x",
        ),
        "secretless.yml:11: services.my-api.config.headers: duplicate key 'Authorization'",
    ),
    (
        "query-param-undefined",
        swap("  headers:", "  queryParams: {key: '{{ .nope }}'}\n  headers:"),
        "services.my-api.config.queryParams.key: the template refers to 'nope'",
    ),
    (
        "query-param-not-string",
        swap("  headers:", "  queryParams: {key: true}\n  headers:"),
        "services.my-api.config.queryParams.key: must be a string, not a boolean",
    ),
    (
        "injects-nothing",
        swap("  headers:\n    Authorization: Bearer {{ .token }}\n", ""),
        "services.my-api.config: the service injects nothing: give headers or queryParams",
    ),
    (
        "no-url-patterns",
        swap("  authenticateURLsMatching: [^https://api\\.example\\.com/]\n", ""),
        "services.my-api.config.authenticateURLsMatching: missing",
    ),
    (
        "empty-url-patterns",
        swap("[^https://api\\.example\\.com/]", "[]"),
        "secretless.yml:11: services.my-api.config.authenticateURLsMatching: is empty: no request would get credentials",
    ),
    (
        "url-pattern-invalid",
        swap("^https://api\\.example\\.com/", "'^https://(api'"),
        "services.my-api.config.authenticateURLsMatching[0]: '^https://(api': invalid regular expression: missing ), unterminated subpattern",
    ),
    (
        "url-pattern-not-string",
        swap("[^https://api\\.example\\.com/]", "[true]"),
        "services.my-api.config.authenticateURLsMatching[0]: must be a string, not a boolean (a regular expression)",
    ),
    (
        "url-patterns-mapping",
        swap("[^https://api\\.example\\.com/]", "{a: b}"),
        "services.my-api.config.authenticateURLsMatching: must be a list of regular expressions, not a mapping",
    ),
    (
        "url-pattern-unicode-class",
        swap("^https://api\\.example\\.com/", "'\\pL'"),
        "Unicode classes (\\p{...}) are not supported by Python's re",
    ),
    (
        "url-pattern-empty",
        swap("[^https://api\\.example\\.com/]", "['']"),
        "an empty pattern matches everything",
    ),
    (
        "force-ssl-string",
        swap("  headers:", "  forceSSL: 'true'\n  headers:"),
        "secretless.yml:9: services.my-api.config.forceSSL: must be true or false, not a string",
    ),
    (
        "force-ssl-int",
        swap("  headers:", "  forceSSL: 1\n  headers:"),
        "services.my-api.config.forceSSL: must be true or false, not an integer",
    ),
    (
        "validation-undefined-credential",
        swap("  headers:", "  credentialValidations: {tokn: '.+'}\n  headers:"),
        "secretless.yml:9: services.my-api.config.credentialValidations.tokn: 'tokn' is not a credential of service 'my-api' (defined: token)",
    ),
    (
        "validation-invalid-regex",
        swap("  headers:", "  credentialValidations: {token: '[a-'}\n  headers:"),
        "services.my-api.config.credentialValidations.token: '[a-': invalid regular expression",
    ),
    (
        "validation-ungreedy-flag",
        swap("  headers:", "  credentialValidations: {token: '(?U)a+'}\n  headers:"),
        "the U (ungreedy) flag is not supported",
    ),
    (
        "oauth2-unknown-key",
        service(
            BASE + "oauth2: {token_url: 'https://a/t', client_id: a, client_secret: b, grant: x}\n"
        ),
        "services.my-api.oauth2: unknown key 'grant'",
    ),
    (
        "oauth2-missing-secret",
        service(BASE + "oauth2: {token_url: 'https://a/t', client_id: a}\n"),
        "services.my-api.oauth2.client_secret: missing",
    ),
    (
        "oauth2-http-token-url",
        service(
            BASE.replace("{{ .token }}", "{{ .access_token }}")
            + "oauth2: {token_url: 'http://auth.example.com/t', client_id: a, client_secret: b}\n"
        ),
        "secretless.yml:12: services.my-api.oauth2.token_url: token_url must be https:// unless it is a loopback address",
    ),
    (
        "oauth2-token-url-userinfo",
        service(
            BASE.replace("{{ .token }}", "{{ .access_token }}")
            + "oauth2: {token_url: 'https://u:p@auth.example.com/t', client_id: a, client_secret: b}\n"
        ),
        "services.my-api.oauth2.token_url: token_url must not carry user information",
    ),
    (
        "oauth2-value-int",
        service(BASE + "oauth2: {token_url: 'https://a/t', client_id: 5, client_secret: b}\n"),
        "services.my-api.oauth2.client_id: must be a string or {from, get}, not an integer",
    ),
    (
        "oauth2-from-vault",
        service(
            BASE
            + "oauth2: {token_url: 'https://a/t', client_id: a, client_secret: {from: vault, get: x}}\n"
        ),
        "services.my-api.oauth2.client_secret.from: the 'vault' provider is not supported by trustwire",
    ),
    (
        "oauth2-token-unused",
        service(BASE + "oauth2: {token_url: 'https://a/t', client_id: a, client_secret: b}\n"),
        "secretless.yml:12: services.my-api.oauth2: the token is never used: refer to {{ .access_token }}",
    ),
    (
        "oauth2-shadowed-access-token",
        service(
            BASE.replace("token: {from", "access_token: {from").replace(
                "{{ .token }}", "{{ .access_token }}"
            )
            + "oauth2: {token_url: 'https://a/t', client_id: a, client_secret: b}\n"
        ),
        "services.my-api.credentials.access_token: 'access_token' is provided by oauth2",
    ),
    ("yaml-syntax", 'version: "2"\nservices:\n  a: [unclosed\n', "secretless.yml:4: invalid YAML"),
    ("yaml-tab-indent", 'version: "2"\nservices:\n\ta: 1\n', "secretless.yml:3: invalid YAML"),
    (
        "yaml-anchor",
        'version: "2"\nservices:\n  a: &x {connector: generic_http}\n  b: *x\n',
        "secretless.yml:3: YAML anchors are not allowed",
    ),
    (
        "yaml-duplicate-service",
        'version: "2"\nservices:\n  a: {}\n  a: {}\n',
        "secretless.yml:4: services: duplicate key 'a'",
    ),
    (
        "yaml-control-char",
        'version: "2"\nservices:\n  a: "\x07"\n',
        "secretless.yml:3: invalid YAML: character U+0007 is not allowed",
    ),
    (
        "yaml-python-tag",
        'version: "2"\nservices: !!python/object:os.system {}\n',
        "secretless.yml:2: services: must be a mapping, not a value tagged tag:yaml.org,2002:python/object:os.system",
    ),
    (
        "yaml-deep",
        'version: "2"\nservices: ' + "[" * 100 + "]" * 100 + "\n",
        "nesting deeper than 64 levels",
    ),
]


def test_the_malformed_table_is_large_and_distinct() -> None:
    assert len(MALFORMED) >= 20
    assert len({name for name, _, _ in MALFORMED}) == len(MALFORMED)
    assert len({text for _, text, _ in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_config_is_refused_precisely(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config(text)
    assert message in str(caught.value)
    assert str(caught.value).startswith("secretless.yml")


def test_two_services_on_one_listener_are_refused() -> None:
    one = BASE
    two = BASE.replace("127.0.0.1:8071", "0.0.0.0:8071")
    text = 'version: "2"\nservices:\n  first:\n' + textwrap.indent(one, "    ")
    text += "  second:\n" + textwrap.indent(two, "    ")
    with pytest.raises(ConfigurationError) as caught:
        parse_config(text)
    assert str(caught.value) == (
        "secretless.yml:14: services.second.listenOn: tcp://0.0.0.0:8071 is already used by "
        "service 'first' (each service needs its own listener)"
    )
    # the same port on two distinct addresses is fine, and so are distinct unix sockets
    parse_config(text.replace("0.0.0.0:8071", "127.0.0.2:8071"))
    unix = text.replace("tcp://127.0.0.1:8071", "unix:///run/a.sock").replace(
        "tcp://0.0.0.0:8071", "unix:///run/a.sock"
    )
    with pytest.raises(
        ConfigurationError, match=re.escape("unix:///run/a.sock is already used by service 'first'")
    ):
        parse_config(unix)
    head, _, tail = unix.rpartition("unix:///run/a.sock")
    parse_config(head + "unix:///run/b.sock" + tail)


def test_a_literal_value_never_appears_in_an_error() -> None:
    text = swap("{from: env, get: TOKEN}", "s3cr3t-literal").replace(
        "{{ .token }}", "{{ .token | nope }}"
    )
    with pytest.raises(ConfigurationError) as caught:
        parse_config(text)
    assert "s3cr3t-literal" not in str(caught.value)


def test_error_names_the_source_given() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config("services: {}\n", source="/etc/trustwire/broker.yml")
    assert str(caught.value).startswith("/etc/trustwire/broker.yml:1: version: missing")
    assert caught.value.path == "/etc/trustwire/broker.yml"
    assert caught.value.line == 1


# -- Go regular expressions in Python ---------------------------------------------------


def one_pattern(pattern: str) -> str:
    return swap("[^https://api\\.example\\.com/]", "['" + pattern.replace("'", "''") + "']")


@pytest.mark.parametrize(
    ("pattern", "url", "matches"),
    [
        ("^http", "https://x/", True),
        ("^http", "ftp://http/", False),
        ("example", "https://api.example.com/", True),  # Go's MatchString searches
        ("^https://api\\.example\\.com$", "https://api.example.com", True),
        # Go's $ is the end of the text: Python's alone would accept a trailing newline
        ("^https://api\\.example\\.com$", "https://api.example.com\n", False),
        ("(?m)^b$", "a\nb\nc", True),
        ("^http[s]*\\:\\/\\/", "https://x", True),  # Secretless examples escape ':' and '/'
        ("x\\z", "abx", True),
        ("x\\z", "abx\n", False),
        ("^[[:alpha:]]+://", "https://x", True),
        ("^[[:digit:]]+$", "123", True),
        ("^[^[:space:]]+$", "a b", False),
        ("^\\d+$", "١٢٣", False),  # \d is ASCII in Go
        ("^x\\sy$", "x\vy", False),  # Go's \s has no \v
        ("^x\\sy$", "x\ty", True),
        ("^[^\\s]+$", "a\vb", True),
        ("^\\S+$", "a\vb", True),
        ("[$]", "a$b", True),  # a $ inside a class stays literal
        ("a\\$", "a$", True),
    ],
)
def test_url_patterns_match_as_go_would(pattern: str, url: str, matches: bool) -> None:
    service_config = parse_config(one_pattern(pattern)).services["my-api"]
    assert service_config.authenticates(url) is matches


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("\\Z", "\\Z is not Go syntax; use \\z"),
        ("\\Qa.b\\E", "\\Q...\\E quoting is not supported"),
        ("[[:^alpha:]]", "negated POSIX class"),
        ("[[:letters:]]", "unknown POSIX class [:letters:]"),
        ("x" * 1025, "longer than 1024 characters"),
        ("a{2,1}", "invalid regular expression"),
    ],
)
def test_regex_syntax_python_cannot_carry_over_is_refused(pattern: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config(one_pattern(pattern))
    assert "services.my-api.config.authenticateURLsMatching[0]" in str(caught.value)
    assert message in str(caught.value)


def test_a_very_long_url_is_never_authenticated() -> None:
    service_config = parse_config(one_pattern("^http")).services["my-api"]
    assert service_config.authenticates("http://x/" + "a" * (MAX_URL_CHARS - 9))
    assert not service_config.authenticates("http://x/" + "a" * MAX_URL_CHARS)


def test_rendered_header_with_a_control_character_is_refused() -> None:
    http = parse_config(service(BASE)).services["my-api"].http
    with pytest.raises(BrokerError) as caught:
        http.render_headers({"token": "abc\r\nX-Injected: 1"})
    assert "services.my-api.config.headers.Authorization" in str(caught.value)
    assert "X-Injected" not in str(caught.value)
    assert http.render_headers({"token": "a\tb"}) == {"Authorization": "Bearer a\tb"}
    assert http.render_headers({"token": "café"}) == {"Authorization": "Bearer café"}
    with pytest.raises(BrokerError, match="a character a header cannot carry"):
        http.render_headers({"token": "10€"})
    with pytest.raises(BrokerError, match="control character"):
        http.render_headers({"token": "a\x00b"})


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://auth.example.com/token", True),
        ("https://auth.example.com:8443/o/token?x=1", True),
        ("http://127.0.0.1:9000/token", True),
        ("http://localhost/token", True),
        ("http://[::1]:9000/token", True),
        ("http://127.9.9.9/token", True),
        ("http://auth.example.com/token", False),
        ("http://10.0.0.1/token", False),
        ("ftp://auth.example.com/token", False),
        ("https:///token", False),
        ("https://user:pw@auth.example.com/token", False),
        ("https://auth.example.com/token#frag", False),
        ("https://auth.example.com:99999/token", False),
        ("https://auth.example.com/to ken", False),
        ("auth.example.com/token", False),
    ],
)
def test_check_token_url(url: str, ok: bool) -> None:
    if ok:
        assert check_token_url(url) == url
    else:
        with pytest.raises(ValueError, match="token_url"):
            check_token_url(url)


# -- files ------------------------------------------------------------------------------


def test_load_config_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "secretless.yml"
    path.write_text(FULL, encoding="utf-8")
    config = load_config(path)
    assert config.source == str(path)
    assert set(config.services) == {"billing-api", "oauth-api", "keychain-api"}
    path.write_text(FULL.replace("{{ .token }}", "{{ .tokn }}", 1), encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load_config(path)
    assert str(caught.value).startswith(
        f"{path}:24: services.billing-api.config.headers.X-Api-Token:"
    )


def test_load_config_refuses_oversized_missing_odd_and_non_utf8_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigurationError, match="the limit is 1048576 bytes"):
        load_config(big)
    with pytest.raises(ConfigurationError, match="cannot read broker configuration"):
        load_config(tmp_path / "missing.yml")
    with pytest.raises(ConfigurationError, match="not a regular file"):
        load_config(tmp_path)
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        load_config(fifo)
    latin = tmp_path / "latin.yml"
    latin.write_bytes(b"version: '2'\n# caf\xe9\n")
    with pytest.raises(ConfigurationError, match=r"not UTF-8 \(byte offset 18\)"):
        load_config(latin)


def test_parse_config_refuses_oversized_text() -> None:
    with pytest.raises(ConfigurationError, match="the limit is"):
        parse_config("#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigurationError, match="the limit is"):
        parse_config("é" * (MAX_CONFIG_BYTES // 2 + 1))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=400),
        st.text(
            alphabet=st.sampled_from(list('version: "2"\nservices{}[]-&*!|>\'#%@`:,.?{}')),
            max_size=200,
        ),
        st.sampled_from([FULL, BASE]).flatmap(
            lambda text: st.tuples(
                st.integers(0, len(text)), st.integers(0, 20), st.text(max_size=8)
            ).map(lambda cut: text[: cut[0]] + cut[2] + text[cut[0] + cut[1] :])
        ),
    )
)
def test_parse_config_raises_only_configuration_error(text: str) -> None:
    try:
        parse_config(text)
    except ConfigurationError:
        pass
