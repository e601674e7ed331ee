"""Checks of the firewall role on every host: the ruleset is loaded, kept across reboots, drops by
default, lets the allowed networks reach SSH and the services, and leaves Docker's rules alone."""

from __future__ import annotations

import ipaddress
import re

import pytest
from role_settings import enabled_settings, settings_of

from roles.common import registry
from roles.firewall.render import ADMIN_ZONE, TABLE
from roles.firewall.settings import FirewallSettings


@pytest.fixture
def firewall(host_data: dict) -> FirewallSettings:
    return enabled_settings(FirewallSettings, host_data, ": the host firewall is the user's")


def _family(host) -> str:
    return "el9" if host.system_info.distribution in ("rocky", "rhel", "almalinux") else "debian"


@pytest.fixture
def nft_host(any_host, firewall):
    if _family(any_host) != "debian":
        pytest.skip("EL9 hosts use firewalld (see the firewalld checks)")
    return any_host


@pytest.fixture
def firewalld_host(any_host, firewall):
    if _family(any_host) != "el9":
        pytest.skip("Debian hosts use nftables (see the nftables checks)")
    return any_host


def _table(host) -> str:
    result = host.run(f"nft list table inet {TABLE}")
    assert result.rc == 0, f"table inet {TABLE} is not loaded: {result.stderr}"
    return result.stdout


def _set_elements(table: str, name: str) -> set[str]:
    body = re.search(rf"set {name} {{(.*?)\n\s*}}", table, re.S)
    elements = re.search(r"elements = {(.*?)}", body.group(1), re.S) if body else None
    return {e.strip() for e in elements.group(1).split(",")} if elements else set()


def _ports(table: str, comment: str) -> set[int]:
    """TCP ports of the rules with this comment that accept the allowed IPv4 networks."""
    ports = set()
    for line in table.splitlines():
        if f'comment "{comment}"' in line and "@allowed_v4 accept" in line:
            match = re.search(r"tcp dport ({[^}]*}|\d+)", line)
            ports |= {int(p) for p in re.findall(r"\d+", match.group(1))} if match else set()
    return ports


# --- Debian: nftables ---------------------------------------------------------------------------


def test_nftables_service_loads_the_ruleset_at_boot(nft_host):
    assert nft_host.service("nftables").is_enabled
    conf = nft_host.file("/etc/nftables.conf").content_string
    assert not re.search(r"^\s*flush\s+ruleset", conf, re.M), "would wipe Docker's rules"
    stop = nft_host.check_output("systemctl show -p ExecStop nftables.service")
    assert f"delete table inet {TABLE}" in stop and "flush ruleset" not in stop


def test_input_policy_is_drop_with_ssh_from_the_allowed_networks(nft_host, firewall):
    table = _table(nft_host)
    assert re.search(r"hook input priority filter; policy drop;", table)
    assert "ct state established,related accept" in table
    assert re.search(
        rf"tcp dport (\{{ )?[0-9, ]*\b{firewall.ssh_port}\b.*@allowed_v4 accept", table
    )
    allowed = _set_elements(table, "allowed_v4") | _set_elements(table, "allowed_v6")
    assert allowed, "no network may reach SSH"
    for cidr in firewall.allowed_networks:
        assert str(ipaddress.ip_network(cidr, strict=False)) in allowed


def test_guest_services_only_from_the_allowed_networks(guest, host_data):
    if _family(guest) != "debian":
        pytest.skip("the AI guests are Debian")
    table = _table(guest)
    open_ports = _ports(table, "services")
    endpoints = registry.endpoints(lambda cls: settings_of(cls, host_data), ["ai_guests"])
    for endpoint in endpoints:  # every enabled registered service's public port
        # (nft prints one port bare, several as a set: _ports reads both)
        assert endpoint.port in open_ports, (
            f"{endpoint.label}'s port {endpoint.port} is not open to the allowed networks"
        )
        if endpoint.upstream:  # behind the TLS front door: the server's own port stays shut
            assert endpoint.own.port not in open_ports, endpoint
    # Docker-published ports bypass the input chain: the forward hook checks DNAT'ed traffic.
    assert "ct direction original ct status dnat jump published" in table


def test_docker_rules_are_left_in_place(guest):
    if not guest.service("docker").is_running:
        pytest.skip("Docker is not running on this guest")
    tables = guest.check_output("nft list tables")
    assert f"table inet {TABLE}" in tables
    assert "table ip filter" in tables and "table ip nat" in tables, tables


# --- EL9: firewalld -----------------------------------------------------------------------------


def test_firewalld_runs_with_the_admin_zone(firewalld_host, firewall):
    svc = firewalld_host.service("firewalld")
    assert svc.is_running and svc.is_enabled
    sources = firewalld_host.check_output(f"firewall-cmd --zone={ADMIN_ZONE} --list-sources")
    assert sources.split(), "no network may reach SSH"
    for cidr in firewall.allowed_networks:
        assert str(ipaddress.ip_network(cidr, strict=False)) in sources.split()


def test_firewalld_interface_zone_offers_no_ssh(firewalld_host, firewall):
    zone = firewall.firewalld_zone
    services = firewalld_host.check_output(f"firewall-cmd --zone={zone} --list-services").split()
    assert "ssh" not in services and "cockpit" not in services
