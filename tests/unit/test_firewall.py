"""Firewall role: settings validation, the host-network fact, the policy and its renderings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pyinfra.api.exceptions import DeployError

from roles.common.settings import SettingsError, validate_host
from roles.firewall.facts import HostNetwork, parse_host_network
from roles.firewall.render import (
    TABLE,
    build_policy,
    firewalld_admin_zone,
    firewalld_interface_zone,
    firewalld_lan_to_vms_policy,
    nftables_conf,
    nftables_ruleset,
    nftables_service_dropin,
)
from roles.firewall.settings import FirewallSettings

FIXTURES = Path(__file__).resolve().parents[1] / "plan" / "fixtures"
LAN = HostNetwork(["eth0"], ["192.168.1.0/24"], "192.168.1.50", 22)
GUEST_PORTS = [5000, 11434]


class FakeHost:
    def __init__(self, data):
        self.name = "testhost"
        self.data = type("Data", (), {"dict": lambda _self: dict(data)})()


def settings(**values) -> FirewallSettings:
    return FirewallSettings(**values)


def problems(data: dict) -> str:
    with pytest.raises(SettingsError) as caught:
        validate_host(FakeHost(data), [FirewallSettings])
    return str(caught.value)


# --- settings ---------------------------------------------------------------------------------


def test_defaults_are_valid():
    validate_host(FakeHost({}), [FirewallSettings])


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("firewall_allowed_networks", ["192.168.1.0/33"], "not a network in CIDR form"),
        ("firewall_allowed_networks", ["lan"], "not a network in CIDR form"),
        ("firewall_allowed_networks", ["fd00::/129"], "not a network in CIDR form"),
        ("firewall_allowed_networks", "192.168.1.0/24", "expected a list"),
        ("firewall_ssh_port", 0, "not a TCP port"),
        ("firewall_ssh_port", "22", "expected an integer"),
        ("firewall_extra_tcp_ports", [8080, 70000], "not a TCP port"),
        ("firewall_firewalld_zone", "my zone", "firewalld zone name"),
        ("firewall_allow_anywhere", "yes", "True or False"),
    ],
)
def test_bad_value_is_rejected_naming_the_key(key, value, fragment):
    message = problems({key: value})
    assert f"- {key}: " in message and fragment in message


@pytest.mark.parametrize("anywhere", ["0.0.0.0/0", "::/0", "10.1.2.3/0"])
def test_anywhere_is_refused_without_the_explicit_flag(anywhere):
    message = problems({"firewall_allowed_networks": ["192.168.1.0/24", anywhere]})
    assert "- firewall_allowed_networks: " in message
    assert "firewall_allow_anywhere = True" in message


def test_anywhere_is_accepted_with_the_explicit_flag():
    data = {"firewall_allowed_networks": ["0.0.0.0/0", "::/0"], "firewall_allow_anywhere": True}
    validate_host(FakeHost(data), [FirewallSettings])


# --- the host-network fact --------------------------------------------------------------------


def test_fact_on_a_lab_machine_with_docker_finds_only_the_default_route_lan():
    lines = (FIXTURES / "firewall-host-network.debian-12-docker.txt").read_text().splitlines()
    network = parse_host_network(lines)
    assert network.default_interfaces == ["host0"]
    assert network.lan_networks == ["10.213.143.0/24"]  # not docker0's 172.17.0.0/16
    assert (network.ssh_client, network.ssh_port) == ("10.213.143.1", 22)


def test_fact_with_ipv4_and_ipv6_default_routes_and_no_ssh_session():
    lines = (FIXTURES / "firewall-host-network.debian-12-ipv6.txt").read_text().splitlines()
    network = parse_host_network(lines)
    assert network.lan_networks == ["192.0.2.0/24", "fd00::/64"]
    assert network.ssh_client is None and network.ssh_port is None


def test_fact_takes_the_lowest_metric_default_and_multipath_interfaces():
    lines = [
        'route4 [{"dst":"default","dev":"wan0","metric":600},'
        '{"dst":"default","metric":100,"nexthops":[{"dev":"br0"},{"dev":"eth1"}]}]',
        "route6 []",
        'addr [{"ifname":"br0","addr_info":[{"family":"inet","local":"10.0.0.5","prefixlen":24,'
        '"scope":"global"},{"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]},'
        '{"ifname":"eth1","addr_info":[{"family":"inet","local":"10.9.9.9","prefixlen":32,'
        '"scope":"global"}]},{"ifname":"wan0","addr_info":[{"family":"inet",'
        '"local":"203.0.113.7","prefixlen":24,"scope":"global"}]}]',
        "ssh fe80::2%br0 4000 fe80::1 2222",
    ]
    network = parse_host_network(lines)
    assert network.default_interfaces == ["br0", "eth1"]
    assert network.lan_networks == ["10.0.0.0/24"]  # the /32 says nothing about a LAN
    assert (network.ssh_client, network.ssh_port) == ("fe80::2", 2222)


def test_fact_without_default_route_or_output():
    assert parse_host_network([]) == HostNetwork()
    assert parse_host_network(["route4 []", "route6 ", "addr garbage", "ssh "]) == HostNetwork()


# --- the policy -------------------------------------------------------------------------------


def test_policy_defaults_to_the_lan_and_the_services():
    policy = build_policy(settings(), LAN, GUEST_PORTS)
    assert policy.allowed_v4 == ("192.168.1.0/24",) and policy.allowed_v6 == ()
    assert policy.ssh_ports == (22,) and policy.service_ports == (5000, 11434)
    assert policy.deploy_source is None  # inside the LAN already


def test_configured_networks_replace_the_lan_normalised_and_split_by_family():
    configured = ["fd00:1::/64", "10.1.2.3/16", "192.168.7.0/24", "2001:db8::1"]
    policy = build_policy(settings(allowed_networks=configured), LAN, [])
    assert policy.allowed_v4 == ("10.1.0.0/16", "192.168.7.0/24")
    assert policy.allowed_v6 == ("2001:db8::1/128", "fd00:1::/64")
    assert policy.deploy_source == "192.168.1.50"  # the deploy came from outside them


def test_deploy_source_reached_over_ipv6_sockets_is_kept_as_ipv4():
    network = HostNetwork(["eth0"], [], "::ffff:198.51.100.4", 22)
    policy = build_policy(settings(allowed_networks=["10.0.0.0/8"]), network, [])
    assert policy.deploy_source == "198.51.100.4"


def test_the_port_the_deploy_came_in_on_stays_open_for_ssh():
    network = HostNetwork(["eth0"], ["10.0.0.0/24"], "10.0.0.9", 2222)
    policy = build_policy(settings(), network, [2222, 5000])
    assert policy.ssh_ports == (22, 2222) and policy.service_ports == (5000,)


def test_no_lan_and_no_setting_stops_the_deploy_with_a_fix():
    with pytest.raises(DeployError, match="set firewall_allowed_networks"):
        build_policy(settings(), HostNetwork(), GUEST_PORTS, "gpu-host")


# --- nftables ---------------------------------------------------------------------------------


def test_ruleset_replaces_only_its_own_table_and_drops_by_default():
    text = nftables_ruleset(build_policy(settings(), LAN, GUEST_PORTS))
    assert "flush ruleset" not in text
    assert text.index(f"table inet {TABLE}\n") < text.index(f"delete table inet {TABLE}\n")
    assert "type filter hook input priority filter; policy drop;" in text
    assert "ct state established,related accept" in text
    assert 'iif "lo" accept' in text
    assert "elements = { 192.168.1.0/24 }" in text
    assert 'tcp dport { 22 } ip saddr @allowed_v4 accept comment "SSH"' in text
    assert 'tcp dport { 5000, 11434 } ip saddr @allowed_v4 accept comment "services"' in text
    assert "deploy source" not in text
    assert 'iifname "virbr*" meta l4proto { tcp, udp } th dport { 53, 67 } accept' in text
    # Docker-published ports: DNAT'ed traffic is checked in the forward hook.
    assert "ct direction original ct status dnat jump published" in text


def test_ruleset_with_several_ipv4_and_ipv6_networks_and_a_v6_deploy_source():
    configured = ["10.0.0.0/8", "192.168.1.0/24", "fd00::/64", "2001:db8:1::/48"]
    network = HostNetwork(["eth0"], [], "2001:db8:ffff::7", 2200)
    text = nftables_ruleset(build_policy(settings(allowed_networks=configured), network, [5000]))
    assert "elements = { 10.0.0.0/8, 192.168.1.0/24 }" in text
    assert "elements = { 2001:db8:1::/48, fd00::/64 }" in text
    assert "ip6 saddr 2001:db8:ffff::7 tcp dport { 22, 2200 } accept" in text
    assert "tcp dport { 5000 } ip6 saddr @allowed_v6 accept" in text


def test_hypervisor_ruleset_has_no_service_ports_and_an_empty_v6_set():
    text = nftables_ruleset(build_policy(settings(), LAN, []))
    assert 'comment "services"' not in text
    v6 = text.split("set allowed_v6 {")[1].split("}")[0]
    assert "elements" not in v6


def test_nftables_conf_and_service_dropin_never_flush_other_tables():
    conf = nftables_conf()
    assert not re.search(r"^\s*flush", conf, re.M)  # only mentioned in a comment
    assert 'include "/etc/nftables.d/*.nft"' in conf
    dropin = nftables_service_dropin()
    assert "ExecStop=\n" in dropin
    assert f"ExecStop=-/usr/sbin/nft delete table inet {TABLE}" in dropin


def _can_check_with_nft() -> str | None:
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"):
        return "needs root, nft and unshare to check rulesets in a private network namespace"
    return None


@pytest.mark.skipif(_can_check_with_nft() is not None, reason=str(_can_check_with_nft()))
@pytest.mark.parametrize(
    ("configured", "network", "ports"),
    [
        ([], LAN, GUEST_PORTS),
        (["10.0.0.0/8", "fd00::/64", "2001:db8::5"], HostNetwork([], [], "fe80::9", 2222), [80]),
        (["0.0.0.0/0", "::/0"], HostNetwork(), []),
    ],
)
def test_nft_accepts_and_loads_the_ruleset_twice(configured, network, ports, tmp_path):
    """`nft -c`, then a real load twice (the replace idiom), inside `unshare -n`: this host's
    own ruleset is never touched."""
    flag = {"allow_anywhere": True} if "0.0.0.0/0" in configured else {}
    policy = build_policy(settings(allowed_networks=configured, **flag), network, ports)
    path = tmp_path / "rules.nft"
    path.write_text(nftables_ruleset(policy))
    script = f"nft -c -f {path} && nft -f {path} && nft -f {path} && nft list tables"
    result = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["table", "inet", TABLE]


# --- firewalld --------------------------------------------------------------------------------


def test_admin_zone_lists_allowed_sources_the_deploy_source_ssh_and_services():
    network = HostNetwork(["br0"], [], "203.0.113.9", 22)
    configured = ["192.168.1.0/24", "fd00::/64"]
    zone = ET.fromstring(
        firewalld_admin_zone(build_policy(settings(allowed_networks=configured), network, [8080]))
    )
    assert zone.tag == "zone" and zone.findtext("short") == "aicoder-admin"
    sources = [s.get("address") for s in zone.findall("source")]
    assert sources == ["192.168.1.0/24", "fd00::/64", "203.0.113.9"]
    assert [s.get("name") for s in zone.findall("service")] == ["ssh"]
    assert [(p.get("port"), p.get("protocol")) for p in zone.findall("port")] == [("8080", "tcp")]


def test_admin_zone_with_another_ssh_port_opens_that_port_not_the_ssh_service():
    network = HostNetwork(["eth0"], ["192.168.1.0/24"])
    zone = ET.fromstring(firewalld_admin_zone(build_policy(settings(ssh_port=2222), network, [])))
    assert zone.findall("service") == []
    assert [p.get("port") for p in zone.findall("port")] == ["2222"]


DEFAULT_PUBLIC = Path(__file__).parents[1] / "fixtures/el9/firewalld-zone.public.default.xml"


def test_interface_zone_offers_no_ssh_and_forwards_bridged_guest_traffic():
    policy = build_policy(settings(), HostNetwork(["eth0"], ["192.168.1.0/24"]), [5000])
    zone = ET.fromstring(firewalld_interface_zone("public", DEFAULT_PUBLIC.read_text(), policy))
    assert [s.get("name") for s in zone.findall("service")] == ["dhcpv6-client"]
    assert zone.find("forward") is not None and zone.findtext("short") == "Public"
    assert zone.findall("source") == [] and zone.get("target") is None


def test_interface_zone_keeps_what_the_admin_added_and_converges():
    policy = build_policy(settings(), HostNetwork(["eth0"], ["192.168.1.0/24"]), [5000])
    admins = DEFAULT_PUBLIC.read_text().replace(
        "<forward/>",
        '<service name="cockpit"/><port port="8443" protocol="tcp"/>'
        '<port port="5000" protocol="tcp"/><rich-rule family="ipv4"><source address="10.9.0.0/16"/>'
        "<accept/></rich-rule>",
    )
    merged = firewalld_interface_zone("public", admins, policy)
    zone = ET.fromstring(merged)
    assert [s.get("name") for s in zone.findall("service")] == ["dhcpv6-client", "cockpit"]
    # Its own port stays; the deploy's service port moves to the allowed networks' zone.
    assert [p.get("port") for p in zone.findall("port")] == ["8443"]
    assert zone.find("rich-rule/source").get("address") == "10.9.0.0/16"
    assert zone.find("forward") is not None
    assert firewalld_interface_zone("public", merged, policy) == merged


def test_lan_to_vms_policy_forwards_from_the_allowed_networks_to_the_bridge_zone():
    policy = ET.fromstring(firewalld_lan_to_vms_policy("public"))
    assert policy.get("target") == "ACCEPT"
    assert policy.find("ingress-zone").get("name") == "aicoder-admin"
    assert policy.find("egress-zone").get("name") == "public"
