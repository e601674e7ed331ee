"""The TLS front door in the service registry (roles/common/registry.py FRONT_MODULES): every
registered service is reached at https://<guest>:<proxy_port>/<service>/..., with a person's key."""

from __future__ import annotations

import dataclasses

from roles.common.registry import Endpoint, SettingsOf, fronted
from roles.proxy.settings import ProxySettings, key_secret


def front(endpoint: Endpoint, settings_of: SettingsOf) -> Endpoint:
    """``endpoint`` as the editor reaches it: through the door unless proxy_plain_http. The key
    is a person's (the first of proxy_people; the client sends client_person's)."""
    proxy = settings_of(ProxySettings)
    if proxy.plain_http:
        return endpoint
    prefix = f"/{endpoint.service}"
    return fronted(
        endpoint,
        scheme="https",
        port=proxy.port,
        port_key=proxy.key("port"),
        listen="0.0.0.0",
        listen_key=proxy.key("port"),
        auth="bearer",
        key_secret=key_secret(proxy.people[0]),
        api_path=prefix + endpoint.api_path,
        health_path=prefix + endpoint.health_path,
        # Continue's providers join their paths onto apiBase: it ends in a slash at the root.
        provider_path=prefix + (endpoint.provider_path or "/"),
    )


def for_person(endpoint: Endpoint, person: str) -> Endpoint:
    """``endpoint`` with ``person``'s key when the front door stands before it (the client's
    client_person; empty: the first of proxy_people, as ``front`` chose)."""
    if not person or endpoint.upstream is None or endpoint.port_key != ProxySettings.key("port"):
        return endpoint
    return dataclasses.replace(endpoint, key_secret=key_secret(person))
