"""A deployment directory ("home"): the domain CA, coordinator keys, policy, agents.

Layout (private key files 0600, directories holding them 0700)::

    HOME/
      config.json            coordinator address, store URL, domain name, CA fingerprint
      policy.yaml            the policy file (see docs/POLICY.md)
      ca/                    domain CA certificate and key
      coordinator/           coordinator TLS certificate and key; log.key (the domain log
                             signing key, 0600) and log.pub (its public key, 0644)
      coordinator.db         durable store (SQLite, WAL) — agent directory and queues
      events.jsonl           security-event stream
      audit.db               the audit trail: every security event in a signed Merkle log
      registry.db            the registry: every identity event in a signed Merkle log
      alerts.jsonl           alerts raised by the anomaly detectors
      sessions.db            agent-to-agent sessions and their envelope metadata (SQLite)
      memory.db              shared memories: ciphertext segments and wrapped keys (SQLite)
      agents/NAME/           agent identity keys, identity.json, TLS certificate + key, ca.pem

Private keys are encrypted at rest when a passphrase is given (``TRUSTWIRE_PASSPHRASE``
or a prompt in the CLI). The home is used by the CLI, the demo and the tests; programs
embedding trustwire can use :class:`Home` or assemble the pieces themselves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trustwire.client.agent import Credentials
from trustwire.crypto.keyfile import (
    Passphrase,
    ensure_private_dir,
    read_pem_key,
    read_signing_key,
    write_file_atomic,
    write_pem_key,
    write_signing_key,
)
from trustwire.crypto.signing import SigningKey, VerifyKey
from trustwire.crypto.x509 import certificate_fingerprint, certificate_not_after, needs_renewal
from trustwire.errors import ConfigurationError, UnknownAgent
from trustwire.identity.ca import DomainCA
from trustwire.identity.keys import AgentIdentity, check_agent_name
from trustwire.policy.model import PolicyConfig, default_policy, load_policy
from trustwire.registry.registry import Registry
from trustwire.store.base import AgentRecord, Store
from trustwire.store.factory import open_store

__all__ = ["DEFAULT_COORDINATOR", "Home", "HomeConfig", "read_log_public_key"]

DEFAULT_COORDINATOR = "127.0.0.1:7443"
_CONFIG = "config.json"
_TLS_CERT = "tls.crt"
_TLS_KEY = "tls.key"
_CA_COPY = "ca.pem"
_LOG_KEY = "log.key"
_LOG_PUB = "log.pub"


@dataclass(frozen=True, slots=True)
class HomeConfig:
    """The non-secret settings in ``config.json``."""

    domain: str
    coordinator: str
    store_url: str
    ca_fingerprint: str
    #: Optional: a ``secretless.yml`` (absolute, or relative to the home) whose credential
    #: broker ``trustwire serve`` starts alongside the coordinator.
    broker: str | None = None
    #: Optional: the port ``trustwire serve`` serves the HTTPS API on.
    api_port: int | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "version": 1,
            "domain": self.domain,
            "coordinator": self.coordinator,
            "store": self.store_url,
            "ca_fingerprint": self.ca_fingerprint,
        }
        if self.broker is not None:
            data["broker"] = self.broker
        if self.api_port is not None:
            data["api_port"] = self.api_port
        return json.dumps(data, indent=2, sort_keys=True)


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{key!r} must be a non-empty string")
    return value


def _optional_port(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535
    ):
        raise ValueError(f"{key!r} must be a port number (0-65535)")
    return value


def read_log_public_key(path: str | os.PathLike[str]) -> VerifyKey:
    """Read a log public key file (``log.pub``: 64 lowercase hex digits and a newline).

    Raises :class:`ConfigurationError` naming the file when it is missing or malformed.
    """
    where = Path(path)
    try:
        with where.open("rb") as handle:
            data = handle.read(1024)
    except FileNotFoundError:
        raise ConfigurationError(
            f"{where}: no log public key (the log key is created by `trustwire init` or on "
            "the first `trustwire serve`)"
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"{where}: cannot read the log public key ({exc.strerror})"
        ) from None
    text = data.decode("ascii", "replace").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ConfigurationError(f"{where}: not a log public key (expected 64 hex digits)")
    return VerifyKey.from_bytes(bytes.fromhex(text))


class Home:
    """One deployment directory."""

    def __init__(self, path: str | os.PathLike[str], passphrase: Passphrase = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.passphrase = passphrase
        self._config: HomeConfig | None = None

    # -- creation ----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        domain: str = "trustwire",
        coordinator: str = DEFAULT_COORDINATOR,
        passphrase: Passphrase = None,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
        policy: PolicyConfig | None = None,
        now: datetime | None = None,
    ) -> Home:
        """Create a new domain: CA, coordinator certificate, default policy, config.

        Refuses (ConfigurationError) to overwrite an existing home.
        """
        home = cls(path, passphrase)
        if (home.path / _CONFIG).exists():
            raise ConfigurationError(f"{home.path} already holds a trustwire home")
        now = now or datetime.now(UTC)
        ensure_private_dir(home.path)
        ca = DomainCA.create(domain, now=now)
        ca.save(home.path / "ca", passphrase)
        server = ca.issue_server_certificate(hosts, now=now)
        coord_dir = ensure_private_dir(home.path / "coordinator")
        write_file_atomic(coord_dir / _TLS_CERT, server.cert_pem, mode=0o644)
        write_pem_key(coord_dir / _TLS_KEY, server.key_pem, passphrase)
        home._write_log_key(SigningKey.generate())
        (home.path / "policy.yaml").write_text((policy or default_policy()).to_yaml())
        config = HomeConfig(
            domain=domain,
            coordinator=coordinator,
            store_url=f"sqlite:///{home.path / 'coordinator.db'}",
            ca_fingerprint=ca.fingerprint,
        )
        write_file_atomic(home.path / _CONFIG, config.to_json().encode() + b"\n", mode=0o644)
        ensure_private_dir(home.path / "agents")
        return home

    # -- reading -----------------------------------------------------------------------

    @property
    def config(self) -> HomeConfig:
        if self._config is None:
            path = self.path / _CONFIG
            try:
                data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
                self._config = HomeConfig(
                    domain=str(data["domain"]),
                    coordinator=str(data["coordinator"]),
                    store_url=str(data["store"]),
                    ca_fingerprint=str(data["ca_fingerprint"]),
                    broker=_optional_str(data, "broker"),
                    api_port=_optional_port(data, "api_port"),
                )
            except FileNotFoundError as exc:
                raise ConfigurationError(
                    f"no trustwire home at {self.path} (run `trustwire init` first)"
                ) from exc
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigurationError(f"{path}: invalid config ({exc})") from exc
        return self._config

    def ca(self) -> DomainCA:
        self.config  # noqa: B018 - raises a clear error when the home does not exist
        return DomainCA.load(self.path / "ca", self.passphrase)

    @property
    def policy_path(self) -> Path:
        return self.path / "policy.yaml"

    def policy(self) -> PolicyConfig:
        return load_policy(self.policy_path)

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def audit_path(self) -> Path:
        """The audit trail: a signed Merkle log (SQLite) of every security event."""
        return self.path / "audit.db"

    @property
    def registry_path(self) -> Path:
        """The registry: a signed Merkle log (SQLite) of every identity event."""
        return self.path / "registry.db"

    async def open_registry(self, store: Store) -> Registry:
        """Open the registry over ``store``'s agent directory, signed with the log key."""
        return await Registry.open(self.registry_path, self.log_signing_key(), store.agents)

    def registry_key(self) -> VerifyKey | None:
        """The key agents of this home verify registry proofs with, if it has one.

        An operator home has one once it has a registry (``registry.db``); a joined home
        when the join recorded the domain's ``coordinator/log.pub``.
        """
        if not self.log_public_key_path.exists():
            return None
        if self.registry_path.exists() or not self.has_ca_key:
            return self.log_verify_key()
        return None

    @property
    def sessions_url(self) -> str:
        """Store URL of the sessions database (``sqlite:///HOME/sessions.db``)."""
        return f"sqlite:///{self.path / 'sessions.db'}"

    @property
    def memory_url(self) -> str:
        """Store URL of the shared-memory database (``sqlite:///HOME/memory.db``); it holds
        only ciphertext, wrapped keys and metadata."""
        return f"sqlite:///{self.path / 'memory.db'}"

    @property
    def alerts_path(self) -> Path:
        """Alerts raised by the anomaly detectors, one JSON object per line."""
        return self.path / "alerts.jsonl"

    @property
    def log_key_path(self) -> Path:
        """The domain log signing key (Ed25519, 0600, encrypted with the passphrase)."""
        return self.path / "coordinator" / _LOG_KEY

    @property
    def log_public_key_path(self) -> Path:
        """The domain log public key: one line of 64 hex digits (not secret, 0644)."""
        return self.path / "coordinator" / _LOG_PUB

    def log_signing_key(self) -> SigningKey:
        """The key that signs the audit log's tree heads, created if this home has none.

        Homes made before the audit trail existed get their key on first use. Raises
        :class:`ConfigurationError` when ``log.pub`` names another key than ``log.key``
        (one of them was replaced: heads signed now would not verify with the public key
        auditors use), and :class:`~trustwire.errors.KeyFileError` for an unreadable key
        or a wrong passphrase.
        """
        self.config  # noqa: B018 - raises a clear error when the home does not exist
        if not self.log_key_path.exists():
            key = SigningKey.generate()
            self._write_log_key(key)
            return key
        key = read_signing_key(self.log_key_path, self.passphrase)
        if not self.log_public_key_path.exists():
            # A crash between writing the two files; the public half is derived.
            self._write_log_public_key(key.public_key)
        elif self.log_verify_key() != key.public_key:
            raise ConfigurationError(
                f"{self.log_public_key_path} does not match {self.log_key_path}; "
                "one of them was replaced"
            )
        return key

    def log_verify_key(self) -> VerifyKey:
        """The public key that verifies the audit log's tree heads (no passphrase needed)."""
        return read_log_public_key(self.log_public_key_path)

    def _write_log_key(self, key: SigningKey) -> None:
        ensure_private_dir(self.path / "coordinator")
        write_signing_key(self.log_key_path, key, self.passphrase)
        self._write_log_public_key(key.public_key)

    def _write_log_public_key(self, key: VerifyKey) -> None:
        write_file_atomic(
            self.log_public_key_path, key.to_bytes().hex().encode("ascii") + b"\n", mode=0o644
        )

    def coordinator_tls(self) -> tuple[bytes, bytes, bytes]:
        """(cert_pem, key_pem, ca_pem) for the coordinator."""
        d = self.path / "coordinator"
        key_pem = read_pem_key(d / _TLS_KEY, self.passphrase)
        return (d / _TLS_CERT).read_bytes(), key_pem, self.ca().cert_pem

    async def open_store(self) -> Store:
        return await open_store(self.config.store_url)

    # -- agents ------------------------------------------------------------------------

    def agent_dir(self, name: str) -> Path:
        return self.path / "agents" / check_agent_name(name)

    async def create_agent(
        self,
        name: str,
        *,
        roles: tuple[str, ...] = (),
        store: Store | None = None,
        now: datetime | None = None,
    ) -> AgentIdentity:
        """Generate an agent's keys, enrol it through the registry, issue its certificate.

        The enrolment and the certificate issuance are both registry log entries.
        """
        now = now or datetime.now(UTC)
        directory = self.agent_dir(name)
        if directory.exists():
            raise ConfigurationError(f"an agent named {name!r} already exists in {self.path}")
        identity = AgentIdentity.generate(name, issued_at=int(now.timestamp()))
        # Load the CA first: a wrong passphrase must fail before anything is enrolled.
        ca = self.ca()
        signing_key = self.log_signing_key()
        own = store is None
        store = store or await self.open_store()
        try:
            registry = await Registry.open(self.registry_path, signing_key, store.agents)
        except BaseException:
            if own:
                await store.close()
            raise
        try:
            await registry.enrol(
                AgentRecord(
                    name=name,
                    did=identity.did,
                    roles=tuple(roles),
                    agreement_key=identity.agreement.public,
                    agreement_statement=identity.agreement_statement(issued_at=identity.issued_at),
                    agreement_issued_at=identity.issued_at,
                    created_at=now.timestamp(),
                )
            )
            identity.save(directory, self.passphrase)
            credentials = self.issue_certificate(identity, now=now, ca=ca)
            await registry.certificate_issued(
                identity.did,
                fingerprint=certificate_fingerprint(credentials.cert_pem),
                not_after=certificate_not_after(credentials.cert_pem).timestamp(),
            )
        finally:
            try:
                await registry.close()
            finally:
                if own:
                    await store.close()
        return identity

    def issue_certificate(
        self,
        identity: AgentIdentity,
        *,
        now: datetime | None = None,
        lifetime: timedelta = timedelta(hours=24),
        ca: DomainCA | None = None,
    ) -> Credentials:
        """Issue (or renew) the agent's short-lived TLS certificate."""
        now = now or datetime.now(UTC)
        ca = ca or self.ca()
        issued = ca.issue_agent_certificate(identity.did, identity.name, now=now, lifetime=lifetime)
        directory = self.agent_dir(identity.name)
        write_file_atomic(directory / _TLS_CERT, issued.cert_pem, mode=0o644)
        write_pem_key(directory / _TLS_KEY, issued.key_pem, self.passphrase)
        write_file_atomic(directory / _CA_COPY, ca.cert_pem, mode=0o644)
        return Credentials(issued.cert_pem, issued.key_pem, ca.cert_pem)

    def load_agent(self, name: str, *, renew: bool = True) -> tuple[AgentIdentity, Credentials]:
        """Load an agent's identity and credentials, renewing a certificate near expiry.

        The credentials carry :meth:`registry_key`, so the SDK verifies registry proofs.
        """
        directory = self.agent_dir(name)
        if not (directory / "identity.json").exists():
            raise UnknownAgent(f"no agent named {name!r} in {self.path}")
        identity = AgentIdentity.load(directory, self.passphrase)
        cert = (directory / _TLS_CERT).read_bytes()
        now = datetime.now(UTC)
        # A joined home holds no CA key: its agents renew in band (the SDK's RENEW).
        registry_key = self.registry_key()
        if renew and self.has_ca_key and needs_renewal(cert, now=now):
            issued = self.issue_certificate(identity, now=now)
            return identity, dataclasses.replace(issued, registry_key=registry_key)
        return identity, Credentials(
            cert,
            read_pem_key(directory / _TLS_KEY, self.passphrase),
            (directory / _CA_COPY).read_bytes(),
            registry_key,
        )

    @property
    def has_ca_key(self) -> bool:
        """Whether this home holds the domain CA's key (a joined home does not)."""
        return (self.path / "ca" / "ca.key").exists()

    @classmethod
    def init_joined(
        cls,
        path: str | os.PathLike[str],
        *,
        domain: str,
        coordinator: str,
        ca_fingerprint: str,
        log_key: VerifyKey | None = None,
        passphrase: Passphrase = None,
    ) -> Home:
        """A home for agents that joined a domain by token: ``config.json`` (coordinator
        address, CA fingerprint; no store), ``agents/`` and, when given, the domain's log
        public key (``coordinator/log.pub``, what registry proofs are verified with).

        An existing home is reused when it belongs to the same CA; one of another domain
        is refused with :class:`ConfigurationError`.
        """
        home = cls(path, passphrase)
        if (home.path / _CONFIG).exists():
            if home.config.ca_fingerprint != ca_fingerprint:
                raise ConfigurationError(
                    f"{home.path} belongs to another domain (CA {home.config.ca_fingerprint})"
                )
            return home
        ensure_private_dir(home.path)
        config = HomeConfig(
            domain=domain, coordinator=coordinator, store_url="", ca_fingerprint=ca_fingerprint
        )
        write_file_atomic(home.path / _CONFIG, config.to_json().encode() + b"\n", mode=0o644)
        ensure_private_dir(home.path / "agents")
        if log_key is not None:
            ensure_private_dir(home.path / "coordinator")
            home._write_log_public_key(log_key)
        return home

    def save_agent(
        self, identity: AgentIdentity, *, cert_pem: bytes, tls_key_pem: bytes, ca_pem: bytes
    ) -> Credentials:
        """Write an agent's keys, certificate, TLS key and CA copy into ``agents/NAME``
        (a joined agent, or a rotated one). Private keys are encrypted with the home's
        passphrase when it has one."""
        directory = self.agent_dir(identity.name)
        identity.save(directory, self.passphrase)
        write_file_atomic(directory / _TLS_CERT, cert_pem, mode=0o644)
        write_pem_key(directory / _TLS_KEY, tls_key_pem, self.passphrase)
        write_file_atomic(directory / _CA_COPY, ca_pem, mode=0o644)
        return Credentials(cert_pem, tls_key_pem, ca_pem)

    def save_credentials(self, name: str, credentials: Credentials) -> None:
        """Replace agent ``name``'s certificate and TLS key (after an in-band renewal)."""
        directory = self.agent_dir(name)
        write_file_atomic(directory / _TLS_CERT, credentials.cert_pem, mode=0o644)
        write_pem_key(directory / _TLS_KEY, credentials.key_pem, self.passphrase)

    def agent_names(self) -> list[str]:
        root = self.path / "agents"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / "identity.json").exists())

    def certificate_expiry(self, name: str) -> datetime:
        return certificate_not_after((self.agent_dir(name) / _TLS_CERT).read_bytes())
