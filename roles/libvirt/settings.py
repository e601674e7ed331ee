"""Settings of the libvirt role: the virtualization stack, the guests' bridge, the image folder."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from typing_extensions import override

from roles.common import checks
from roles.common.settings import RoleSettings, setting

DHCP = "dhcp"
AUTO = "auto"  # the uplink's addressing as it is now (DHCP without an uplink)


def _bridge_address(value: str) -> str | None:
    return None if value in (AUTO, DHCP) else checks.cidr_address(value)


@dataclass(frozen=True)
class LibvirtSettings(RoleSettings):
    PREFIX = "libvirt"
    GROUPS = ("hypervisors",)

    bridge: str = setting(
        "br0",
        "Linux bridge the VMs' network cards join (created on the hypervisor)",
        checks.matches(checks.INTERFACE, "an interface name (at most 15 of A-Z a-z 0-9 _ . -)"),
    )
    bridge_uplink: str = setting(
        "",
        "host NIC enslaved to the bridge so VMs sit on the LAN (e.g. enp3s0); empty: a bridge "
        "without uplink (VMs reach only the host and each other)",
        checks.matches(f"|{checks.INTERFACE}", "an interface name like enp3s0, or empty"),
    )
    bridge_address: str = setting(
        AUTO,
        "the host's address on the bridge: 'auto' (the uplink's addressing as it is now: "
        "method, addresses, gateway, DNS, MTU; DHCP without an uplink), 'dhcp', or a static "
        "address with prefix (192.168.1.5/24); with an uplink it replaces the uplink's own",
        _bridge_address,
    )
    bridge_dhcp_over_static: bool = setting(
        False,
        "allow bridge_address 'dhcp' although the uplink has a static address now (the host's "
        "address changes; refused by default, as a LAN without DHCP would cut the host off)",
    )
    bridge_check_address: str = setting(
        "",
        "an address on the LAN that must answer ping through the bridge once it is up (empty: "
        "the bridge's gateway, if any); if it does not, the change is rolled back",
        checks.optional(checks.ip_address),
    )
    bridge_rollback_seconds: int = setting(
        120,
        "seconds a bridge change has to be confirmed by the deploy reaching the host again "
        "afterwards; unconfirmed (the host lost), it is rolled back by itself",
        checks.in_range(30, 3600),
    )
    bridge_gateway: str = setting(
        "",
        "default gateway with a static bridge_address (empty: none)",
        checks.optional(checks.ip_address),
    )
    bridge_dns: list[str] = setting(
        [], "DNS servers with a static bridge_address (EL9: NetworkManager needs them)"
    )
    image_dir: str = setting(
        "/var/lib/libvirt/images",
        "folder for VM disks, cloud-init seeds and the image cache (EL9: labelled virt_image_t)",
        checks.absolute_path,
    )

    @override
    def check(self):
        problems = []
        if self.bridge_uplink == self.bridge:
            problems.append(
                (self.key("bridge_uplink"), "must be a NIC, not the bridge itself; e.g. enp3s0")
            )
        if self.bridge_address in (AUTO, DHCP) and (self.bridge_gateway or self.bridge_dns):
            key = "bridge_gateway" if self.bridge_gateway else "bridge_dns"
            problems.append(
                (
                    self.key(key),
                    "only applies to a static bridge_address ('auto' carries the uplink's, "
                    "DHCP provides it)",
                )
            )
        for server in self.bridge_dns:
            msg = checks.ip_address(server)
            if msg:
                problems.append((self.key("bridge_dns"), msg))
        if self.bridge_gateway:
            msg = checks.ip_address(self.bridge_gateway)
            if not msg and self.bridge_address not in (AUTO, DHCP):
                own = ipaddress.ip_interface(self.bridge_address)
                gateway = ipaddress.ip_address(self.bridge_gateway)
                if gateway == own.ip:
                    msg = f"{gateway} is the bridge's own address; use the router's"
                elif gateway not in own.network:
                    msg = f"{gateway} is not in {self.bridge_address}'s network"
            if msg:
                problems.append((self.key("bridge_gateway"), msg))
        return problems
