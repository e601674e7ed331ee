"""Port checks across roles (the services on one host must not take each other's ports), and the
settings every serving role declares alike: listen address, port, start timeout."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from roles.common import checks
from roles.common.settings import setting

if TYPE_CHECKING:
    from roles.common.registry import Endpoint


def ssh_port_clash(key: str, port: int, data: dict) -> list[tuple[str, str]]:
    """A service port that is sshd's too (firewall_ssh_port): the service could not bind it."""
    # Imported here: the firewall's package imports the registry, which loads the services.
    from roles.firewall.settings import FirewallSettings

    firewall, problems = FirewallSettings.checked(data)
    if firewall is None or problems or port != firewall.ssh_port:
        return []
    return [(key, f"{port} is the SSH port (firewall_ssh_port); give the service another one")]


def service_port_problems(cls, settings, data: dict) -> list[tuple[str, str]]:
    """Problems of the registered service whose settings class is ``cls`` (valid ``settings``
    of the host data ``data``): its port is sshd's, or that of a service registered before it on
    an address both may listen on (each pair is reported once, on the later service)."""
    from roles.common import registry  # the registry loads the services, which import this

    me = registry.service_of(cls)
    if me is None or not me.enabled(settings):
        return []
    own = me.endpoint(settings)
    problems = ssh_port_clash(own.port_key, own.port, data) + behind_the_door(own, data)
    for other in registry.services():
        if other is me:
            break
        found, bad = other.settings.checked(data)
        if found is None or bad or not other.enabled(found):
            continue
        theirs = other.endpoint(found)
        if theirs.port == own.port and may_overlap(theirs.listen, own.listen):
            default = me.endpoint(cls()).port  # the role's default settings
            problems.append(
                (
                    own.port_key,
                    f"{own.port} is {theirs.label}'s port too ({theirs.port_key}) on the same "
                    f"address; give {own.label} another one (its default is {default})",
                )
            )
    return problems


def behind_the_door(own: Endpoint, data: dict) -> list[tuple[str, str]]:
    """A listen address the TLS front door cannot reach: the door forwards to 127.0.0.1."""
    from roles.proxy.settings import ProxySettings  # the proxy's settings import this module

    proxy, bad = ProxySettings.checked(data)
    if proxy is None or bad or proxy.plain_http or own.listen == "auto":
        return []
    if own.listen in checks.WILDCARD_ADDRESSES or ipaddress.ip_address(own.listen).is_loopback:
        return []
    return [
        (
            own.listen_key,
            f"{own.listen} is an address the TLS front door cannot forward to: behind the door "
            f"(proxy_port {proxy.port}) {own.label} listens on 127.0.0.1 and clients reach it "
            f"at https://<guest>:{proxy.port}/{own.service}/. Leave {own.listen_key} 'auto', or "
            "set proxy_plain_http True to serve it directly on that address",
        )
    ]


def listen_setting(label: str) -> Any:
    """The listen address setting of a service that always authenticates: 'auto' or one IP."""
    return setting(
        "auto",
        f"address {label} listens on: 'auto' (every IPv4 address, reachable only from "
        "firewall_allowed_networks, so a new DHCP lease changes nothing; with the firewall off: "
        "the guest's static address), one IP, or 0.0.0.0 (authentication always stays on)",
        checks.auto_or_ip,
    )


def port_setting(default: int, label: str) -> Any:
    return setting(default, f"TCP port of {label}'s OpenAI-compatible API", checks.port)


def start_timeout_setting(default: int, why: str) -> Any:
    return setting(
        default,
        f"seconds the deploy waits for /health after a (re)start: {why}",
        checks.in_range(10, 7200),
    )


class ServicePorts:
    """Mixin for a registered service's RoleSettings (listed before it): ``problems_in`` also
    refuses sshd's port and another service's (see :func:`service_port_problems`)."""

    @classmethod
    def problems_in(cls, data):
        settings, problems = super().problems_in(data)  # type: ignore[misc]
        if settings is not None and not problems:
            problems += service_port_problems(cls, settings, data)
        return settings, problems


def may_overlap(a: str, b: str) -> bool:
    """Whether two listen addresses can be the same socket address on one host."""
    if a == b or a in checks.WILDCARD_ADDRESSES or b in checks.WILDCARD_ADDRESSES:
        return True
    # 'auto' is the LAN address: it may equal another explicit address, never a loopback one.
    other = b if a == "auto" else a if b == "auto" else None
    return other is not None and not ipaddress.ip_address(other).is_loopback
