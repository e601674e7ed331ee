"""Settings of the firewall role (hypervisors and AI guests): who may reach SSH and the services."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from typing_extensions import override

from roles.common import checks
from roles.common.settings import RoleSettings, setting


@dataclass(frozen=True)
class FirewallSettings(RoleSettings):
    PREFIX = "firewall"
    GROUPS = ("hypervisors", "ai_guests")

    enabled: bool = setting(
        True, "manage the host firewall (False leaves it entirely to you: Ollama has no auth!)"
    )
    allowed_networks: list[str] = setting(
        [],
        "networks (CIDR, IPv4/IPv6) that may reach SSH and the services; empty: the LAN of the "
        "interface carrying the default route, read at deploy time",
        checks.cidrs,
    )
    allow_anywhere: bool = setting(
        False, "set True to accept 0.0.0.0/0 or ::/0 in firewall_allowed_networks (not advised)"
    )
    ssh_port: int = setting(22, "the TCP port sshd listens on", checks.port)
    extra_tcp_ports: list[int] = setting(
        [], "more TCP ports reachable from the allowed networks (e.g. a web UI)", checks.ports
    )
    firewalld_zone: str = setting(
        "public",
        "EL9: the firewalld zone of the host's interfaces, merged into the admin's (saved once "
        "in /var/lib/aicoder/firewall): SSH and the services' ports move to the source zone "
        "'aicoder-admin' of the allowed networks, everything else stays; forwarding on, so "
        "the allowed networks reach the VMs across the bridge",
        checks.matches(r"[A-Za-z0-9_-]{1,17}", "a firewalld zone name"),
    )

    @override
    def check(self):
        problems = []
        if not self.allow_anywhere:
            for cidr in self.allowed_networks:
                if ipaddress.ip_network(cidr, strict=False).prefixlen == 0:
                    problems.append(
                        (
                            self.key("allowed_networks"),
                            f"{cidr!r} lets the whole internet reach SSH, tabbyAPI and Ollama "
                            "(which has no authentication); list your LAN (e.g. 192.168.1.0/24) "
                            "or, if you really mean it, also set firewall_allow_anywhere = True",
                        )
                    )
        return problems
