"""One fact that reads what the firewall needs to know about the host's network, in one round trip.

The default routes (IPv4 and IPv6), every interface address, and ``$SSH_CONNECTION`` (the address
and port this deploy connected from and to; under sudo, which resets the environment, from the
nearest ancestor process that has it). ``ip`` needs no root to read.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from pyinfra.api import FactBase
from typing_extensions import override


@dataclass
class HostNetwork:
    default_interfaces: list[str] = field(default_factory=list)  # carrying a default route
    lan_networks: list[str] = field(default_factory=list)  # their networks, IPv4 then IPv6
    ssh_client: str | None = None  # the deploy's source address as this host sees it
    ssh_port: int | None = None  # the local port that SSH connection arrived on


def _default_devices(routes: list[dict]) -> list[str]:
    """Interfaces of the preferred (lowest metric) default route; multipath routes list
    their interfaces under ``nexthops``."""
    defaults = [r for r in routes if r.get("dst") == "default"]
    if not defaults:
        return []
    best = min(defaults, key=lambda r: r.get("metric", 0))
    devices = [best["dev"]] if best.get("dev") else []
    return devices + [hop["dev"] for hop in best.get("nexthops", []) if hop.get("dev")]


def _networks(interfaces: list[dict], names: list[str]) -> list[str]:
    """Networks of the global addresses on ``names``; /32 and /128 host routes say nothing about
    a LAN and are left out."""
    found: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for iface in interfaces:
        if iface.get("ifname") not in names:
            continue
        for addr in iface.get("addr_info", []):
            if addr.get("scope") != "global" or "local" not in addr:
                continue
            net = ipaddress.ip_interface(f"{addr['local']}/{addr['prefixlen']}").network
            if net.prefixlen < net.max_prefixlen and net not in found:
                found.append(net)
    found.sort(key=lambda n: (n.version, n))
    return [str(n) for n in found]


def _json(text: str) -> list:
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def parse_host_network(lines: list[str]) -> HostNetwork:
    parts = {}
    for line in lines:
        kind, _, rest = line.partition(" ")
        parts[kind] = rest.strip()
    devices: list[str] = []
    for kind in ("route4", "route6"):
        devices += [d for d in _default_devices(_json(parts.get(kind, ""))) if d not in devices]
    result = HostNetwork(devices, _networks(_json(parts.get("addr", "")), devices))
    # SSH_CONNECTION is "client_ip client_port server_ip server_port" (ssh(1), ENVIRONMENT).
    ssh = parts.get("ssh", "").split()
    if len(ssh) == 4:
        try:
            result.ssh_client = str(ipaddress.ip_address(ssh[0].split("%")[0]))
            result.ssh_port = int(ssh[3])
        except ValueError:
            pass
    return result


class FirewallHostNetwork(FactBase):
    """Default-route interfaces, their networks, and this SSH session's client address."""

    @override
    def command(self) -> str:
        return (
            "printf 'route4 %s\\n' \"$(ip -j -4 route show default 2>/dev/null)\"; "
            "printf 'route6 %s\\n' \"$(ip -j -6 route show default 2>/dev/null)\"; "
            "printf 'addr %s\\n' \"$(ip -j addr show 2>/dev/null)\"; "
            # sudo resets the environment: then the nearest ancestor that has SSH_CONNECTION
            # (sudo itself, the login shell) tells it, so this fact may run with the others.
            'c=${SSH_CONNECTION:-}; p=$PPID; while [ -z "$c" ] && [ "${p:-0}" -gt 1 ]; do '
            "c=$(tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | sed -n 's/^SSH_CONNECTION=//p'); "
            "p=$(sed 's/.*) [A-Za-z] \\([0-9]*\\).*/\\1/' /proc/$p/stat 2>/dev/null); done; "
            "printf 'ssh %s\\n' \"$c\""
        )

    @override
    def process(self, output):
        return parse_host_network(output)

    @staticmethod
    @override
    def default():
        return HostNetwork()


class FirewalldZoneFile(FactBase):
    """The zone file firewalld uses for ``zone``: /etc/firewalld/zones/<zone>.xml, else the
    default in /usr/lib/firewalld/zones; None when neither exists."""

    @override
    def command(self, zone: str) -> str:
        return (
            f"cat /etc/firewalld/zones/{zone}.xml 2>/dev/null || "
            f"cat /usr/lib/firewalld/zones/{zone}.xml 2>/dev/null || echo '#absent'"
        )

    @override
    def process(self, output):
        text = "\n".join(output)
        return None if text.strip() == "#absent" else text
