"""The firewall policy and its two renderings: an nftables table (Debian) and firewalld zones (EL9).

Pure functions, so unit tests check every rule without a host.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pyinfra.api.exceptions import DeployError

from roles.common.templates import render
from roles.firewall.facts import HostNetwork
from roles.firewall.settings import FirewallSettings

TABLE = "aicoder_filter"  # the only nftables table this role writes, replaced as a whole
ADMIN_ZONE = "aicoder-admin"  # firewalld zone holding the allowed networks as sources
LAN_POLICY = "aicoder-lan-to-vms"  # firewalld policy: the allowed networks reach the VMs
NFT_FILE = "/etc/nftables.d/aicoder-filter.nft"
NFT_CONF = "/etc/nftables.conf"


@dataclass(frozen=True)
class Policy:
    """Who may reach what; every address already normalised (network form, sorted)."""

    allowed_v4: tuple[str, ...]
    allowed_v6: tuple[str, ...]
    ssh_ports: tuple[int, ...]
    service_ports: tuple[int, ...]  # reachable from the allowed networks only
    deploy_source: str | None = None  # kept allowed SSH when outside the allowed networks

    @property
    def allowed(self) -> tuple[str, ...]:
        return self.allowed_v4 + self.allowed_v6


def build_policy(
    settings: FirewallSettings, network: HostNetwork, service_ports: list[int], host_name: str = ""
) -> Policy:
    """The policy for one host: the configured networks, else the host's own LAN."""
    cidrs = settings.allowed_networks or network.lan_networks
    if not cidrs:
        raise DeployError(
            f"{host_name}: firewall_allowed_networks is empty and no LAN could be derived (no "
            "default route with a global address on this host); set firewall_allowed_networks "
            "to the networks that may reach SSH and the services, e.g. ['192.168.1.0/24']"
        )
    nets = sorted(
        {ipaddress.ip_network(c, strict=False) for c in cidrs}, key=lambda n: (n.version, n)
    )
    source = None
    if network.ssh_client:
        client = ipaddress.ip_address(network.ssh_client)
        # An IPv4 client reached over IPv6 sockets shows as ::ffff:a.b.c.d.
        client = getattr(client, "ipv4_mapped", None) or client
        if not any(client in n for n in nets if n.version == client.version):
            source = str(client)
    # The port this deploy came in on stays open too: a wrong firewall_ssh_port must not lock
    # the deploy out of its next run.
    ssh_ports = {settings.ssh_port} | ({network.ssh_port} if network.ssh_port else set())
    return Policy(
        allowed_v4=tuple(str(n) for n in nets if n.version == 4),
        allowed_v6=tuple(str(n) for n in nets if n.version == 6),
        ssh_ports=tuple(sorted(ssh_ports)),
        service_ports=tuple(sorted(set(service_ports) - ssh_ports)),
        deploy_source=source,
    )


def nftables_conf() -> str:
    """/etc/nftables.conf: loads the drop-ins, and nothing flushes other tables."""
    return render("firewall/nftables.conf.j2")


def nftables_ruleset(policy: Policy) -> str:
    """The drop-in that atomically replaces this role's table (and only it)."""
    source_family = ""
    if policy.deploy_source:
        version = ipaddress.ip_address(policy.deploy_source).version
        source_family = "ip" if version == 4 else "ip6"
    return render(
        "firewall/aicoder-filter.nft.j2",
        table=TABLE,
        policy=policy,
        source_family=source_family,
        ports=lambda ports: ", ".join(str(p) for p in ports),
    )


def nftables_service_dropin() -> str:
    """Debian's nftables.service stops with ``nft flush ruleset``, which would also wipe the rules
    Docker and libvirt added (a ``systemctl restart nftables`` breaks container networking)."""
    return render("firewall/nftables-service.conf.j2", table=TABLE)


def _zone(short: str, description: str) -> ET.Element:
    zone = ET.Element("zone")
    ET.SubElement(zone, "short").text = short
    ET.SubElement(zone, "description").text = description
    return zone


def _xml(zone: ET.Element) -> str:
    ET.indent(zone, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(zone, "unicode") + "\n"


def firewalld_admin_zone(policy: Policy) -> str:
    """The source zone: the allowed networks (and the deploy's address) reach SSH and the
    services. firewalld handles a packet in the zone of its source before its interface's."""
    zone = _zone(
        ADMIN_ZONE,
        "Managed by the ai-coding-server deploy (roles/firewall): the networks allowed to reach "
        "SSH and the services.",
    )
    for address in policy.allowed + ((policy.deploy_source,) if policy.deploy_source else ()):
        ET.SubElement(zone, "source", address=address)
    for port in policy.ssh_ports + policy.service_ports:
        if port == 22:
            ET.SubElement(zone, "service", name="ssh")
        else:
            ET.SubElement(zone, "port", port=str(port), protocol="tcp")
    ET.SubElement(zone, "forward")  # their traffic to the VMs across the bridge (see below)
    return _xml(zone)


def firewalld_interface_zone(name: str, current: str | None, policy: Policy) -> str:
    """The zone of the host's interfaces (everyone else), merged into what it has now (the
    admin's file, else firewalld's default): what this deploy serves (SSH, the services' ports)
    moves to the source zone, so only the allowed networks reach it; everything else the admin
    put there stays.

    ``<forward/>`` (intra-zone forwarding) lets the guests' traffic cross the bridge when
    ``br_netfilter`` is loaded: it then sends bridged frames through firewalld's forward chain,
    which would reject them (firewalld.zones(5), "Intra Zone Forwarding").
    """
    zone = ET.fromstring(current) if current and current.strip() else _zone(name, "")
    served = {str(p) for p in policy.ssh_ports + policy.service_ports}
    for element in list(zone):
        moved = (element.tag == "service" and element.get("name") == "ssh") or (
            element.tag == "port"
            and element.get("protocol") == "tcp"
            and element.get("port") in served
        )
        if moved:
            zone.remove(element)
    if zone.find("forward") is None:
        ET.SubElement(zone, "forward")
    return _xml(zone)


def firewalld_lan_to_vms_policy(zone: str) -> str:
    """A firewalld policy: traffic from the allowed networks (the source zone) may be forwarded
    to the interface zone, where the bridge and its VMs are (firewalld.policy(5)); the VMs'
    own firewalls decide what they accept."""
    policy = ET.Element("policy", target="ACCEPT")
    ET.SubElement(policy, "short").text = "aicoder LAN to VMs"
    ET.SubElement(policy, "description").text = (
        "Managed by the ai-coding-server deploy (roles/firewall): the allowed networks reach "
        "the VMs across the bridge."
    )
    ET.SubElement(policy, "ingress-zone", name=ADMIN_ZONE)
    ET.SubElement(policy, "egress-zone", name=zone)
    return _xml(policy)
