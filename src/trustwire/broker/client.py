"""The agent's side of the credential broker: an :class:`httpx.AsyncClient` that sends
every request through a broker listener, authenticated with the agent's certificate.

Agents address upstream APIs with plain ``http://`` URLs; the client sends them to the
broker in absolute form (``GET http://api.example.com/v1/items``) over mutual TLS 1.3,
and the service's ``forceSSL`` makes the broker's upstream hop HTTPS — the Secretless
pattern. An ``https://`` URL would make httpx open a ``CONNECT`` tunnel, which the broker
refuses (it must see the request to add credentials), so this client refuses such URLs
itself, before anything is sent, with :class:`~trustwire.errors.BrokerError`.

Invariants:

- The broker is verified against the domain CA only (host name checked), and the agent
  presents its trustwire client certificate; see :func:`trustwire.transport.tls.client_ssl_context`
  (the key reaches ``ssl`` through a 0700 temporary directory of 0600 files, encrypted
  under a one-time password, removed right after loading).
- Environment proxy settings (``HTTP_PROXY``...) are ignored: every request goes to the
  broker given.
"""

from __future__ import annotations

from typing import Any

import httpx

from trustwire.errors import BrokerError
from trustwire.transport.tls import client_ssl_context

__all__ = ["broker_client"]


class _RefuseHttps(httpx.AsyncBaseTransport):
    """Mounted for ``https://``: such requests cannot be brokered."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise BrokerError(
            f"cannot send {request.url.scheme}://{request.url.host} through the credential "
            "broker: it refuses CONNECT tunnels because it must see the request to add "
            "credentials. Use an http:// URL; the service's forceSSL makes the upstream hop "
            "HTTPS."
        )


def broker_client(
    *,
    broker_url: str,
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    **httpx_kwargs: Any,
) -> httpx.AsyncClient:
    """An :class:`httpx.AsyncClient` whose ``http://`` requests go through the broker at
    ``broker_url`` (``https://host:port`` of a service's TCP listener), presenting the
    agent's certificate ``cert_pem``/``key_pem`` and trusting only ``ca_pem`` for the
    broker. Extra keyword arguments go to :class:`httpx.AsyncClient` (``timeout``,
    ``follow_redirects``, ``headers``...); ``proxy``, ``mounts``, ``transport`` and
    ``trust_env`` are set here and cannot be overridden.

    Use it as ``async with broker_client(...) as http: await http.get("http://api/...")``.
    """
    for name in ("proxy", "mounts", "transport", "trust_env"):
        if name in httpx_kwargs:
            raise TypeError(f"broker_client() sets {name!r} itself")
    proxy_url = httpx.URL(broker_url)
    if proxy_url.scheme != "https" or not proxy_url.host:
        raise ValueError(
            "broker_url must be https://HOST:PORT (the broker authenticates agents by their "
            "client certificate over TLS)"
        )
    context = client_ssl_context(cert_pem, key_pem, ca_pem)
    proxy = httpx.Proxy(proxy_url, ssl_context=context)
    return httpx.AsyncClient(
        mounts={
            "http://": httpx.AsyncHTTPTransport(proxy=proxy, retries=0),
            "https://": _RefuseHttps(),
        },
        trust_env=False,
        **httpx_kwargs,
    )
