"""The broker's configuration: CyberArk Secretless Broker ``secretless.yml`` version 2.

The file has this shape (every field below is read)::

    version: "2"                       # 2 or "2"; a file without it is v1: refused
    services:
      my-api:                          # service name (policy names it service:my-api)
        connector: generic_http        # `protocol:` is the deprecated spelling
        listenOn: tcp://127.0.0.1:8071 # or unix:///run/trustwire/my-api.sock
        credentials:                   # name -> literal scalar, or {from, get}
          token: {from: env, get: MY_API_TOKEN}    # env | file | literal | keyring
        config:
          headers:                     # Go-template values (see broker.template)
            Authorization: Bearer {{ .token }}
          queryParams:
            key: "{{ .token }}"
          authenticateURLsMatching:    # regexes (a single string is a one-item list)
            - ^https?://api\\.example\\.com/
          forceSSL: true               # upgrade the upstream hop to https (default false)
          credentialValidations:       # credential name -> regex its value must match
            token: '^[^\\s]+$'
        oauth2:                        # trustwire's extension: client-credentials grant;
          token_url: https://auth.example.com/token   # templates get {{ .access_token }}
          client_id: {from: env, get: CLIENT_ID}
          client_secret: {from: file, get: /run/secrets/client_secret}
          scope: "read write"          # optional
          audience: https://api.example.com   # optional

Decisions, following Secretless where it has a rule:

- ``authenticateURLsMatching`` is required and must not be empty, as in Secretless
  (``pkg/secretless/config/v2/config_http.go`` validates it as required). A request whose
  URL no pattern matches is forwarded *without* credentials, so there is no "match
  everything" default. Patterns match anywhere in the URL (``re.search``, like Go's
  ``MatchString``); anchor them with ``^``.
- Patterns (here and in ``credentialValidations``) are Go RE2 syntax, translated by
  :mod:`trustwire.broker.goregex` so that Python's ``re`` matches what Go would (``$`` is
  the end of the text, ``\\s`` has no ``\\v``, POSIX classes expand); Go syntax Python
  lacks is refused. Python's ``re`` backtracks where RE2 does not: the configuration is
  trusted, and :meth:`ServiceConfig.authenticates` bounds the URL length it matches.
- Credential providers ``env``, ``file``, ``literal`` and ``keyring`` (Secretless spells
  the OS keystore ``keychain``; both are read, as ``keyring``, with ``get:
  "service#account"`` as in Secretless). ``vault``, ``conjur``, ``aws`` and
  ``kubernetes`` are refused as not supported by trustwire.
- A ``file`` credential's path must be absolute (Secretless reads a relative path from
  its working directory; a daemon's working directory is not something to depend on).
- Stricter than Secretless, each with a precise error: credential names are identifiers
  (templates can only refer to those), header names are HTTP tokens and not ones the
  proxy manages (``Host``, ``Content-Length``, ``Connection``, ...), a service must inject
  something (headers or queryParams), and an ``oauth2`` service must use
  ``{{ .access_token }}``.
- Each listener serves one service (policy decides per service), so two services may not
  share a ``listenOn`` (Secretless would run them as one proxy).
- Header and query-parameter values must be strings (quote ``"2"``); a template may only
  refer to credentials of its service, and to ``access_token`` when ``oauth2`` is set.

Invariants: safe YAML only (read and composed by :class:`trustwire.yamlfile.YamlFile`;
nodes are inspected, never constructed into objects), no anchors, aliases or duplicate
keys, unknown keys refused everywhere, files over 1 MiB refused before parsing, nesting
deeper than 64 levels refused while composing, and for any text nothing but
:class:`~trustwire.errors.ConfigurationError` escapes. Every error
names the file (and YAML line) and the field path, e.g. ``secretless.yml:9:
services.my-api.config.headers.Authorization: unknown function 'b64'``. A literal
credential's value never appears in a ``repr`` or an error.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, NoReturn

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trustwire.broker import goregex
from trustwire.broker.template import Template
from trustwire.errors import BrokerError, ConfigurationError
from trustwire.yamlfile import BOOL, FLOAT, INT, MAP, NULL, SEQ, STR, YamlFile, describe, line_of

__all__ = [
    "ACCESS_TOKEN",
    "MAX_CONFIG_BYTES",
    "MAX_URL_CHARS",
    "BrokerConfig",
    "CredentialSource",
    "HttpConfig",
    "ListenAddress",
    "OAuth2Config",
    "ServiceConfig",
    "check_token_url",
    "load_config",
    "parse_config",
]

MAX_CONFIG_BYTES: Final = 1024 * 1024
"""Configuration files larger than this are refused before parsing."""

MAX_URL_CHARS: Final = 16 * 1024
"""URLs longer than this are never authenticated (bounds the regex work per request)."""

ACCESS_TOKEN: Final = "access_token"  # noqa: S105 - a variable name, not a secret
"""The template variable the OAuth2 extension provides."""

Provider = Literal["env", "file", "literal", "keyring"]

_PROVIDERS: Final[Mapping[str, Provider]] = {
    "env": "env",
    "file": "file",
    "literal": "literal",
    "keyring": "keyring",
    "keychain": "keyring",  # Secretless's name for the OS keystore provider
}
_UNSUPPORTED_PROVIDERS: Final = frozenset({"vault", "conjur", "aws", "kubernetes"})
_CONNECTOR: Final = "generic_http"

_MAX_DEPTH: Final = 64
_MAX_ITEMS: Final = 1000
_MAX_UNIX_PATH_BYTES: Final = 107  # sun_path holds 108 bytes with the terminating NUL

_SERVICE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_CREDENTIAL_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_PORT_RE: Final = re.compile(r"[0-9]{1,5}")
_ENV_NAME_RE: Final = re.compile(r"[^=\x00]{1,1024}")

# Headers the proxy itself manages: a template must not set them.
_MANAGED_HEADERS: Final = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_CONFIG_FILE: Final = YamlFile(
    kind="broker configuration", max_bytes=MAX_CONFIG_BYTES, max_depth=_MAX_DEPTH
)


# -- the configuration ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where a service listens: ``tcp://host:port`` or ``unix:///absolute/path``."""

    scheme: Literal["tcp", "unix"]
    host: str | None
    port: int | None
    path: str | None

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if self.host is not None and ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True, slots=True, repr=False)
class CredentialSource:
    """Where one credential comes from: ``provider`` and what to ``get`` from it.

    ``get`` is an environment variable name (``env``), an absolute file path
    (``file``), the value itself (``literal``) or ``"service#account"`` (``keyring``).
    The ``repr`` never shows a literal's value.
    """

    name: str
    provider: Provider
    get: str

    def __repr__(self) -> str:
        shown = "'<redacted>'" if self.provider == "literal" else repr(self.get)
        return f"CredentialSource(name={self.name!r}, provider={self.provider!r}, get={shown})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class OAuth2Config:
    """The OAuth2 client-credentials extension of a service (trustwire's addition).

    Each value comes from a credential provider; a ``token_url`` given as a literal was
    checked with :func:`check_token_url` when parsing, others must be checked once fetched.
    """

    token_url: CredentialSource
    client_id: CredentialSource
    client_secret: CredentialSource
    scope: CredentialSource | None = None
    audience: CredentialSource | None = None


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The ``config`` section of a ``generic_http`` service."""

    headers: Mapping[str, Template]
    query_params: Mapping[str, Template]
    authenticate_urls: tuple[re.Pattern[str], ...]
    force_ssl: bool = False
    credential_validations: Mapping[str, re.Pattern[str]] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )

    def render_headers(self, values: Mapping[str, str]) -> dict[str, str]:
        """Every header rendered with ``values``.

        Raises :class:`BrokerError` (naming the header, never a value) for a missing
        variable or a value that cannot be sent in a header (a control character, or a
        character beyond Latin-1).
        """
        rendered: dict[str, str] = {}
        for name, template in self.headers.items():
            value = template.render(values)
            if any(
                (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F or ord(char) > 0xFF
                for char in value
            ):
                raise BrokerError(
                    f"{template.where}: the rendered header value contains a control "
                    "character or a character a header cannot carry (check the credential's value)"
                )
            rendered[name] = value
        return rendered

    def render_query_params(self, values: Mapping[str, str]) -> dict[str, str]:
        """Every query parameter rendered with ``values`` (not yet percent-encoded).

        Raises :class:`BrokerError` naming a missing variable, never a value.
        """
        return {name: template.render(values) for name, template in self.query_params.items()}

    def variables(self) -> frozenset[str]:
        """Every template variable the headers and query parameters refer to."""
        names: set[str] = set()
        for template in (*self.headers.values(), *self.query_params.values()):
            names |= template.variables()
        return frozenset(names)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """One ``services.<name>`` entry."""

    name: str
    connector: str
    listen_on: ListenAddress
    credentials: Mapping[str, CredentialSource]
    http: HttpConfig
    oauth2: OAuth2Config | None = None

    def authenticates(self, url: str) -> bool:
        """Whether a request to ``url`` gets this service's credentials.

        True when any ``authenticateURLsMatching`` pattern matches anywhere in the URL
        (Go's ``MatchString``, i.e. ``re.search``); a URL longer than
        :data:`MAX_URL_CHARS` never matches, and neither does anything when the list is
        empty (a configuration file cannot have an empty list).
        """
        if len(url) > MAX_URL_CHARS:
            return False
        return any(pattern.search(url) for pattern in self.http.authenticate_urls)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """A validated ``secretless.yml``; ``source`` names the file it came from."""

    services: Mapping[str, ServiceConfig]
    source: str


# -- loading ----------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> BrokerConfig:
    """Read and validate the ``secretless.yml`` at ``path``.

    Raises :class:`ConfigurationError` for unreadable, oversized or invalid files.
    """
    where = os.fspath(path)
    return parse_config(_CONFIG_FILE.read(where), source=where)


def parse_config(text: str, *, source: str = "secretless.yml") -> BrokerConfig:
    """Validate ``secretless.yml`` text; ``source`` names it in error messages.

    Raises :class:`ConfigurationError` (and nothing else) for any invalid text.
    """
    if not isinstance(text, str):
        raise TypeError("parse_config expects str; decode the file first")
    root = _CONFIG_FILE.compose(text, source=source)
    return _Validator(source).config(root)


def check_token_url(url: str) -> str:
    """``url`` if it may be an OAuth2 token endpoint, else :class:`ValueError` saying why.

    It must be ``https://`` with a host, or ``http://`` to a loopback address
    (``localhost``, ``127.0.0.0/8``, ``::1``), and carry no user information or fragment.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("token_url is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("token_url must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("token_url must not carry user information (use client_id/client_secret)")
    if parts.fragment:
        raise ValueError("token_url must not have a fragment")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise ValueError("token_url must not contain spaces or control characters")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError("token_url must be https:// unless it is a loopback address")
    return url


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- validation -------------------------------------------------------------------------


class _Validator:
    """Walks the composed node tree, turning it into a BrokerConfig or a precise error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: Node, what: str, message: str) -> NoReturn:
        text = f"{what}: {message}" if what else message
        raise ConfigurationError(text, path=self.source, line=line_of(node.start_mark))

    def mapping(
        self, node: Node, what: str, *, known: set[str], hints: Mapping[str, str] | None = None
    ) -> dict[str, tuple[Node, Node]]:
        """The entries of a mapping with a fixed set of keys."""
        if not isinstance(node, MappingNode) or node.tag != MAP:
            self.fail(node, what, f"must be a mapping, not {describe(node)}")
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, what, entries)
            if key not in known:
                hint = (hints or {}).get(key) or f"expected one of: {', '.join(sorted(known))}"
                self.fail(key_node, what, f"unknown key {key!r} ({hint})")
            entries[key] = (key_node, value_node)
        return entries

    def key(self, node: Node, what: str, seen: Mapping[str, object]) -> str:
        if not isinstance(node, ScalarNode) or node.tag != STR:
            self.fail(node, what, f"keys must be strings, not {describe(node)}")
        key = str(node.value)
        if key in seen:
            self.fail(node, what, f"duplicate key {key!r}")
        return key

    def free_mapping(self, node: Node, what: str) -> list[tuple[Node, str, Node]]:
        """A mapping with free-form string keys: (key node, key, value node) triples."""
        if isinstance(node, ScalarNode) and node.tag == NULL:
            return []
        if not isinstance(node, MappingNode) or node.tag != MAP:
            self.fail(node, what, f"must be a mapping, not {describe(node)}")
        if len(node.value) > _MAX_ITEMS:
            self.fail(node, what, f"has more than {_MAX_ITEMS} entries")
        seen: dict[str, None] = {}
        result: list[tuple[Node, str, Node]] = []
        for key_node, value_node in node.value:
            key = self.key(key_node, what, seen)
            seen[key] = None
            result.append((key_node, key, value_node))
        return result

    def string(self, node: Node, what: str, *, hint: str = "") -> str:
        if not isinstance(node, ScalarNode) or node.tag != STR:
            self.fail(node, what, f"must be a string, not {describe(node)}{hint}")
        return str(node.value)

    def scalar_text(self, node: Node, what: str) -> str:
        """A plain scalar's text as written (numbers stay as written, like Go's yaml.v2)."""
        if not isinstance(node, ScalarNode) or node.tag not in (STR, INT, FLOAT, BOOL):
            self.fail(node, what, f"must be a string, not {describe(node)}")
        return str(node.value)

    # -- the document --------------------------------------------------------------------

    def config(self, root: Node) -> BrokerConfig:
        if not isinstance(root, MappingNode):
            self.fail(root, "", f"the top level must be a mapping, not {describe(root)}")
        top = self.mapping(root, "the top level", known={"version", "services"})
        if "version" not in top:
            self.fail(
                root,
                "version",
                "missing: without it Secretless reads the file as a version 1 "
                'configuration, which trustwire does not support; add version: "2"',
            )
        version_node = top["version"][1]
        if not isinstance(version_node, ScalarNode) or version_node.tag not in (STR, INT):
            self.fail(version_node, "version", f'must be "2", not {describe(version_node)}')
        if version_node.value == "1":
            self.fail(
                version_node,
                "version",
                "Secretless v1 configuration is not supported; convert the file to version 2",
            )
        if version_node.value != "2":
            self.fail(
                version_node,
                "version",
                f'unknown configuration version {version_node.value!r} (only "2" is supported)',
            )
        if "services" not in top:
            self.fail(root, "services", "missing: the file defines no service")
        services_node = top["services"][1]
        entries = self.free_mapping(services_node, "services")
        if not entries:
            self.fail(services_node, "services", "the file defines no service")
        services: dict[str, ServiceConfig] = {}
        listeners: list[tuple[ListenAddress, str]] = []
        for key_node, name, value_node in entries:
            if not _SERVICE_NAME_RE.fullmatch(name):
                self.fail(
                    key_node,
                    f"services.{name}",
                    "a service name is 1-128 letters, digits, '.', '_' or '-' starting "
                    "with a letter or digit",
                )
            service, listen_node = self.service(name, key_node, value_node)
            for other, other_name in listeners:
                if _same_listener(service.listen_on, other):
                    self.fail(
                        listen_node,
                        f"services.{name}.listenOn",
                        f"{service.listen_on} is already used by service {other_name!r} "
                        "(each service needs its own listener)",
                    )
            listeners.append((service.listen_on, name))
            services[name] = service
        return BrokerConfig(services=MappingProxyType(services), source=self.source)

    def service(self, name: str, key_node: Node, node: Node) -> tuple[ServiceConfig, Node]:
        # Missing keys are reported at the service's name (key_node).
        what = f"services.{name}"
        entries = self.mapping(
            node,
            what,
            known={"connector", "protocol", "listenOn", "credentials", "config", "oauth2"},
        )
        connector = self.connector(key_node, what, entries)
        if "listenOn" not in entries:
            self.fail(key_node, f"{what}.listenOn", "missing: give tcp://host:port or unix:///path")
        listen_node = entries["listenOn"][1]
        listen_on = self.listen_address(listen_node, f"{what}.listenOn")

        oauth2: OAuth2Config | None = None
        if "oauth2" in entries:
            oauth2 = self.oauth2(entries["oauth2"][1], f"{what}.oauth2")

        credentials: dict[str, CredentialSource] = {}
        if "credentials" in entries:
            credentials = self.credentials(entries["credentials"][1], f"{what}.credentials")
        if not credentials and oauth2 is None:
            where_node = entries["credentials"][0] if "credentials" in entries else key_node
            self.fail(where_node, f"{what}.credentials", "missing: the service has no credential")
        if oauth2 is not None and ACCESS_TOKEN in credentials:
            self.fail(
                entries["credentials"][1],
                f"{what}.credentials.{ACCESS_TOKEN}",
                f"{ACCESS_TOKEN!r} is provided by oauth2; give the credential another name",
            )

        if "config" not in entries:
            self.fail(
                key_node,
                f"{what}.config",
                "missing: give at least headers or queryParams, and authenticateURLsMatching",
            )
        variables = set(credentials)
        if oauth2 is not None:
            variables.add(ACCESS_TOKEN)
        http = self.http(entries["config"][1], f"{what}.config", name, credentials, variables)
        if oauth2 is not None and ACCESS_TOKEN not in http.variables():
            self.fail(
                entries["oauth2"][0],
                f"{what}.oauth2",
                "the token is never used: refer to {{ .access_token }} in a header or "
                "query parameter (e.g. Authorization: Bearer {{ .access_token }})",
            )
        return (
            ServiceConfig(
                name=name,
                connector=connector,
                listen_on=listen_on,
                credentials=MappingProxyType(credentials),
                http=http,
                oauth2=oauth2,
            ),
            listen_node,
        )

    def connector(self, node: Node, what: str, entries: Mapping[str, tuple[Node, Node]]) -> str:
        values: dict[str, tuple[Node, str]] = {}
        for key in ("connector", "protocol"):
            if key in entries:
                value_node = entries[key][1]
                values[key] = (value_node, self.string(value_node, f"{what}.{key}"))
        if not values:
            self.fail(node, f"{what}.connector", "missing: give connector: generic_http")
        if len(values) == 2 and values["connector"][1] != values["protocol"][1]:
            self.fail(
                values["protocol"][0],
                f"{what}.protocol",
                "'protocol' is the deprecated spelling of 'connector' and disagrees with "
                "it; remove 'protocol'",
            )
        key = "connector" if "connector" in values else "protocol"
        value_node, value = values[key]
        if value != _CONNECTOR:
            self.fail(
                value_node,
                f"{what}.{key}",
                f"connector {value!r} is not supported: only {_CONNECTOR} is supported",
            )
        return value

    def listen_address(self, node: Node, what: str) -> ListenAddress:
        text = self.string(node, what)
        if text.startswith("unix://"):
            path = text[len("unix://") :]
            if not path.startswith("/"):
                self.fail(
                    node, what, f"{text!r}: a unix socket path must be absolute (unix:///path)"
                )
            if "\x00" in path or len(path.encode("utf-8", "surrogatepass")) > _MAX_UNIX_PATH_BYTES:
                self.fail(
                    node,
                    what,
                    f"the unix socket path must be at most {_MAX_UNIX_PATH_BYTES} bytes "
                    "with no NUL character",
                )
            return ListenAddress(scheme="unix", host=None, port=None, path=path)
        if not text.startswith("tcp://"):
            self.fail(node, what, f"{text!r} is not tcp://host:port or unix:///absolute/path")
        rest = text[len("tcp://") :]
        if rest.startswith("["):
            close = rest.find("]")
            host = rest[1:close] if close > 0 else ""
            port_text = (
                rest[close + 2 :] if close > 0 and rest[close + 1 : close + 2] == ":" else ""
            )
            try:
                valid_host = close > 0 and ipaddress.ip_address(host).version == 6
            except ValueError:
                valid_host = False
        else:
            host, _, port_text = rest.rpartition(":")
            try:
                valid_host = ipaddress.ip_address(host).version == 4
            except ValueError:
                valid_host = (
                    bool(_HOSTNAME_RE.fullmatch(host)) and not host.replace(".", "").isdigit()
                )
        if not valid_host:
            self.fail(
                node, what, f"{text!r}: expected tcp://host:port with a host name or IP address"
            )
        if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            self.fail(node, what, f"{text!r}: the port must be a number from 1 to 65535")
        return ListenAddress(scheme="tcp", host=host, port=int(port_text), path=None)

    def credentials(self, node: Node, what: str) -> dict[str, CredentialSource]:
        credentials: dict[str, CredentialSource] = {}
        for key_node, name, value_node in self.free_mapping(node, what):
            if not _CREDENTIAL_NAME_RE.fullmatch(name):
                self.fail(
                    key_node,
                    f"{what}.{name}",
                    "a credential name is 1-128 letters, digits or '_', not starting with "
                    "a digit (templates refer to it as .name)",
                )
            credentials[name] = self.source_of(value_node, f"{what}.{name}", name)
        return credentials

    def source_of(self, node: Node, what: str, name: str) -> CredentialSource:
        """A credential: a literal scalar, or ``{from, get}``."""
        if isinstance(node, ScalarNode):
            if node.tag == NULL:
                self.fail(node, what, "is empty: give a value or {from: PROVIDER, get: ID}")
            value = self.scalar_text(node, what)
            if not value:
                self.fail(node, what, "is empty: give a value or {from: PROVIDER, get: ID}")
            return CredentialSource(name=name, provider="literal", get=value)
        entries = self.mapping(node, what, known={"from", "get"})
        for key in ("from", "get"):
            if key not in entries:
                self.fail(
                    node, f"{what}.{key}", "missing (a credential is {from: PROVIDER, get: ID})"
                )
        from_node = entries["from"][1]
        provider_name = self.string(from_node, f"{what}.from")
        if provider_name in _UNSUPPORTED_PROVIDERS:
            self.fail(
                from_node,
                f"{what}.from",
                f"the {provider_name!r} provider is not supported by trustwire "
                "(use env, file, literal or keyring)",
            )
        provider = _PROVIDERS.get(provider_name)
        if provider is None:
            self.fail(
                from_node,
                f"{what}.from",
                f"unknown provider {provider_name!r} (expected env, file, literal or keyring)",
            )
        get_node = entries["get"][1]
        if isinstance(get_node, ScalarNode) and get_node.tag == NULL:
            self.fail(get_node, f"{what}.get", "is empty")
        get = self.scalar_text(get_node, f"{what}.get")
        if provider == "env" and not _ENV_NAME_RE.fullmatch(get):
            self.fail(get_node, f"{what}.get", "must be an environment variable name (no '=')")
        elif provider == "file":
            if "\x00" in get or not os.path.isabs(get):
                self.fail(get_node, f"{what}.get", "must be an absolute file path")
        elif provider == "keyring":
            service, separator, account = get.partition("#")
            if not separator or not service or not account or "#" in account:
                self.fail(
                    get_node,
                    f"{what}.get",
                    "a keyring entry is written 'service#account' (as Secretless's keychain)",
                )
        elif provider == "literal" and not get:
            self.fail(get_node, f"{what}.get", "is empty")
        return CredentialSource(name=name, provider=provider, get=get)

    def http(
        self,
        node: Node,
        what: str,
        service: str,
        credentials: Mapping[str, CredentialSource],
        variables: set[str],
    ) -> HttpConfig:
        entries = self.mapping(
            node,
            what,
            known={
                "headers",
                "queryParams",
                "authenticateURLsMatching",
                "forceSSL",
                "credentialValidations",
                "oauth1",
            },
            hints={
                "credentialPatterns": "did you mean credentialValidations?",
                "oauth2": "oauth2 belongs at the service level, beside config",
            },
        )
        if "oauth1" in entries:
            self.fail(entries["oauth1"][0], f"{what}.oauth1", "oauth1 is not supported; use oauth2")
        defined = ", ".join(sorted(variables)) or "none"

        def templates(key: str) -> dict[str, Template]:
            result: dict[str, Template] = {}
            if key not in entries:
                return result
            seen: set[str] = set()
            for key_node, name, value_node in self.free_mapping(entries[key][1], f"{what}.{key}"):
                field = f"{what}.{key}.{name}"
                if key == "headers":
                    if not _HEADER_NAME_RE.fullmatch(name):
                        self.fail(key_node, field, "is not a valid HTTP header name")
                    if name.lower() in _MANAGED_HEADERS:
                        self.fail(key_node, field, "this header is managed by the proxy")
                    if name.lower() in seen:
                        self.fail(key_node, field, "set twice (header names ignore case)")
                    seen.add(name.lower())
                elif not name:
                    self.fail(key_node, field, "a query parameter needs a name")
                text = self.string(value_node, field, hint=" (quote the value)")
                try:
                    template = Template.parse(text, where=f"{self.source}: {field}")
                except ConfigurationError as exc:
                    problem = str(exc).removeprefix(f"{self.source}: {field}: ")
                    self.fail(value_node, field, problem)
                for variable in sorted(template.variables()):
                    if variable not in variables:
                        extra = ""
                        if variable == ACCESS_TOKEN:
                            extra = "; access_token is provided when the service sets oauth2"
                        self.fail(
                            value_node,
                            field,
                            f"the template refers to {variable!r}, which is not a credential "
                            f"of service {service!r} (defined: {defined}){extra}",
                        )
                result[name] = template
            return result

        headers = templates("headers")
        query_params = templates("queryParams")
        if not headers and not query_params:
            self.fail(node, what, "the service injects nothing: give headers or queryParams")

        if "authenticateURLsMatching" not in entries:
            self.fail(
                node,
                f"{what}.authenticateURLsMatching",
                "missing: list the URL patterns that get credentials (e.g. ^https://api\\.example\\.com/)",
            )
        authenticate_urls = self.url_patterns(
            entries["authenticateURLsMatching"][1], f"{what}.authenticateURLsMatching"
        )

        force_ssl = False
        if "forceSSL" in entries:
            force_node = entries["forceSSL"][1]
            if not isinstance(force_node, ScalarNode) or force_node.tag != BOOL:
                self.fail(
                    force_node,
                    f"{what}.forceSSL",
                    f"must be true or false, not {describe(force_node)}",
                )
            force_ssl = str(force_node.value).lower() in ("true", "yes", "on", "y")

        validations: dict[str, re.Pattern[str]] = {}
        if "credentialValidations" in entries:
            field = f"{what}.credentialValidations"
            for key_node, name, value_node in self.free_mapping(
                entries["credentialValidations"][1], field
            ):
                if name not in credentials:
                    self.fail(
                        key_node,
                        f"{field}.{name}",
                        f"{name!r} is not a credential of service {service!r} "
                        f"(defined: {', '.join(sorted(credentials)) or 'none'})",
                    )
                validations[name] = self.pattern(value_node, f"{field}.{name}")

        return HttpConfig(
            headers=MappingProxyType(headers),
            query_params=MappingProxyType(query_params),
            authenticate_urls=authenticate_urls,
            force_ssl=force_ssl,
            credential_validations=MappingProxyType(validations),
        )

    def url_patterns(self, node: Node, what: str) -> tuple[re.Pattern[str], ...]:
        if isinstance(node, ScalarNode) and node.tag == STR:
            return (self.pattern(node, what),)  # a single string is a one-item list
        if not isinstance(node, SequenceNode) or node.tag != SEQ:
            self.fail(node, what, f"must be a list of regular expressions, not {describe(node)}")
        if not node.value:
            self.fail(node, what, "is empty: no request would get credentials")
        if len(node.value) > _MAX_ITEMS:
            self.fail(node, what, f"has more than {_MAX_ITEMS} entries")
        return tuple(
            self.pattern(item, f"{what}[{index}]") for index, item in enumerate(node.value)
        )

    def pattern(self, node: Node, what: str) -> re.Pattern[str]:
        text = self.string(node, what, hint=" (a regular expression)")
        if not text:
            self.fail(node, what, "an empty pattern matches everything; write '.*' if you mean it")
        try:
            return goregex.compile_regex(text)
        except ValueError as exc:
            self.fail(node, what, f"{text!r}: {exc}")

    def oauth2(self, node: Node, what: str) -> OAuth2Config:
        names = {"token_url", "client_id", "client_secret", "scope", "audience"}
        entries = self.mapping(node, what, known=names)
        for key in ("token_url", "client_id", "client_secret"):
            if key not in entries:
                self.fail(
                    node,
                    f"{what}.{key}",
                    "missing (oauth2 needs token_url, client_id and client_secret)",
                )
        sources: dict[str, CredentialSource] = {}
        for key, (_, value_node) in entries.items():
            if isinstance(value_node, ScalarNode) and value_node.tag != STR:
                self.fail(
                    value_node,
                    f"{what}.{key}",
                    f"must be a string or {{from, get}}, not {describe(value_node)}",
                )
            sources[key] = self.source_of(value_node, f"{what}.{key}", f"oauth2.{key}")
        token_url = sources["token_url"]
        if token_url.provider == "literal":
            try:
                check_token_url(token_url.get)
            except ValueError as exc:
                self.fail(entries["token_url"][1], f"{what}.token_url", str(exc))
        return OAuth2Config(
            token_url=token_url,
            client_id=sources["client_id"],
            client_secret=sources["client_secret"],
            scope=sources.get("scope"),
            audience=sources.get("audience"),
        )


def _same_listener(first: ListenAddress, second: ListenAddress) -> bool:
    """Whether two listeners would collide (same socket, or a wildcard on the same port)."""
    if first.scheme != second.scheme:
        return False
    if first.scheme == "unix":
        return first.path == second.path
    if first.port != second.port:
        return False
    wildcards = {"0.0.0.0", "::"}  # noqa: S104 - comparing, not binding
    first_host = (first.host or "").lower().rstrip(".")
    second_host = (second.host or "").lower().rstrip(".")
    return first_host == second_host or first_host in wildcards or second_host in wildcards
