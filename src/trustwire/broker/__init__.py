"""The credential broker: an HTTP forward proxy that injects credentials agents never see.

It reads CyberArk Secretless Broker ``secretless.yml`` version 2 files
(:func:`load_config`), renders header and query-parameter templates
(:class:`Template`) and fetches credentials from their providers (:func:`fetch`,
:func:`resolve`).
"""

from trustwire.broker.config import (
    ACCESS_TOKEN,
    MAX_CONFIG_BYTES,
    BrokerConfig,
    CredentialSource,
    HttpConfig,
    ListenAddress,
    OAuth2Config,
    ServiceConfig,
    check_token_url,
    load_config,
    parse_config,
)
from trustwire.broker.credentials import fetch, resolve
from trustwire.broker.template import Template

__all__ = [
    "ACCESS_TOKEN",
    "MAX_CONFIG_BYTES",
    "BrokerConfig",
    "CredentialSource",
    "HttpConfig",
    "ListenAddress",
    "OAuth2Config",
    "ServiceConfig",
    "Template",
    "check_token_url",
    "fetch",
    "load_config",
    "parse_config",
    "resolve",
]
