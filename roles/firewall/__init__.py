"""Firewall role: SSH and the model servers reachable only from the allowed networks.

Runs on every host right after the base role, before any service listens (deploy.py): on a first
deploy no port is ever open to the whole LAN, not even for the minutes between Ollama's start and
a later firewall step. SSH cannot be cut off: established connections stay accepted, and the
address this deploy connected from is kept allowed (see build_policy).
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, dnf, files, server, systemd

from roles.common.platform import DEBIAN, os_family
from roles.firewall.facts import FirewallHostNetwork
from roles.firewall.render import (
    ADMIN_ZONE,
    NFT_FILE,
    Policy,
    build_policy,
    firewalld_admin_zone,
    firewalld_interface_zone,
    nftables_conf,
    nftables_ruleset,
    nftables_service_dropin,
)
from roles.firewall.settings import FirewallSettings
from roles.ollama.settings import OllamaSettings
from roles.tabbyapi.settings import TabbyapiSettings

__all__ = ["FirewallSettings", "configure"]

# The checked copy of the ruleset: a file that fails `nft -c` never reaches /etc/nftables.d,
# so the next boot still loads the last good one.
NFT_CANDIDATE = "/var/lib/aicoder/firewall/aicoder-filter.nft"
NFT_DROPIN = "/etc/systemd/system/nftables.service.d/aicoder.conf"


def _put(name: str, text: str, dest: str, mode: str):
    return files.put(name=name, src=StringIO(text), dest=dest, mode=mode, create_remote_dir=True)


def service_ports(settings: FirewallSettings) -> list[int]:
    """TCP ports the allowed networks may reach on this host besides SSH."""
    ports = list(settings.extra_tcp_ports)
    if "ai_guests" in host.groups:
        # The services' own settings: one place for each port.
        ports += [TabbyapiSettings.from_host(host).port, OllamaSettings.from_host(host).port]
    return ports


def host_policy(settings: FirewallSettings) -> Policy:
    # Without sudo: sudo resets the environment and would hide SSH_CONNECTION.
    network = host.get_fact(FirewallHostNetwork, _sudo=False)
    return build_policy(settings, network, service_ports(settings), host.name)


@deploy("Firewall: nftables")
def _nftables(policy: Policy):
    apt.packages(name="nftables", packages=["nftables"])
    ruleset = nftables_ruleset(policy)
    candidate = _put("Firewall ruleset (candidate)", ruleset, NFT_CANDIDATE, "600")
    server.shell(
        name="Check the ruleset (nft -c)",
        # Drop a failing candidate so the next run uploads and checks it again.
        commands=[f"nft -c -f {NFT_CANDIDATE} || {{ rm -f {NFT_CANDIDATE}; exit 1; }}"],
        _if=candidate.did_change,
    )
    _put(
        "/etc/nftables.conf loads the drop-ins, flushes nothing",
        nftables_conf(),
        "/etc/nftables.conf",
        "755",
    )
    rules = _put("Firewall ruleset", ruleset, NFT_FILE, "600")
    dropin = _put(
        "nftables.service stops without flushing other tables",
        nftables_service_dropin(),
        NFT_DROPIN,
        "644",
    )
    systemd.daemon_reload(name="Reload systemd units", _if=dropin.did_change)
    server.shell(
        name="Load the firewall table",
        # Only this file: it replaces only our table (other drop-ins are left as loaded).
        commands=[f"nft -f {NFT_FILE}"],
        _if=rules.did_change,
    )
    systemd.service(
        name="nftables loads the firewall at boot",
        service="nftables.service",
        running=True,
        enabled=True,
    )


@deploy("Firewall: firewalld")
def _firewalld(policy: Policy, zone: str):
    dnf.packages(name="firewalld", packages=["firewalld"])
    admin = _put(
        f"firewalld zone {ADMIN_ZONE} (allowed networks)",
        firewalld_admin_zone(policy),
        f"/etc/firewalld/zones/{ADMIN_ZONE}.xml",
        "644",
    )
    interfaces = _put(
        f"firewalld zone {zone} (everyone else)",
        firewalld_interface_zone(zone),
        f"/etc/firewalld/zones/{zone}.xml",
        "644",
    )
    changed = [lambda: admin.did_change() or interfaces.did_change()]
    server.shell(
        name="Check the firewalld configuration",
        commands=["firewall-offline-cmd --check-config"],  # reads the files, needs no daemon
        _if=changed,
    )
    systemd.service(
        name="firewalld running and enabled",
        service="firewalld.service",
        running=True,
        enabled=True,
    )
    server.shell(
        name="Reload firewalld",
        commands=["firewall-cmd --reload"],  # harmless right after a first start
        _if=changed,
    )


@deploy("Firewall: configure")
def configure():
    """Ensures an input policy of drop except established traffic, loopback, essential ICMP,
    SSH from the allowed networks (and this deploy's own address) and the services' ports from
    the allowed networks; Docker-published ports obey the allowed networks too. Debian: the
    nftables table ``inet aicoder_filter`` (no other table touched); EL9: firewalld zones."""
    settings = FirewallSettings.from_host(host)
    if not settings.enabled:
        return
    policy = host_policy(settings)
    if os_family(host) == DEBIAN:
        _nftables(policy)
    else:
        _firewalld(policy, settings.firewalld_zone)
