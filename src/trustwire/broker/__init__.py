"""The credential broker: an HTTP forward proxy that injects credentials agents never see.

It reads CyberArk Secretless Broker ``secretless.yml`` version 2 files
(:func:`load_config`), renders header and query-parameter templates
(:class:`Template`) and fetches credentials from their providers (:func:`fetch`,
:func:`resolve`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from trustwire.broker.client import broker_client
    from trustwire.broker.oauth2 import TokenSource, TokenUnavailable
    from trustwire.broker.proxy import Broker, Listener, RunningBroker, start_broker

# The proxy side (aiohttp, httpx, authlib) loads on first use (PEP 562), so reading a
# configuration does not import the HTTP stack.
_LAZY = {
    "Broker": "trustwire.broker.proxy",
    "Listener": "trustwire.broker.proxy",
    "RunningBroker": "trustwire.broker.proxy",
    "TokenSource": "trustwire.broker.oauth2",
    "TokenUnavailable": "trustwire.broker.oauth2",
    "broker_client": "trustwire.broker.client",
    "start_broker": "trustwire.broker.proxy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trustwire.broker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ACCESS_TOKEN",
    "MAX_CONFIG_BYTES",
    "Broker",
    "BrokerConfig",
    "CredentialSource",
    "HttpConfig",
    "ListenAddress",
    "Listener",
    "OAuth2Config",
    "RunningBroker",
    "ServiceConfig",
    "Template",
    "TokenSource",
    "TokenUnavailable",
    "broker_client",
    "check_token_url",
    "fetch",
    "load_config",
    "parse_config",
    "resolve",
    "start_broker",
]
