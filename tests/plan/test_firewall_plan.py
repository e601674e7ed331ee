"""Plan tests of the firewall role: the real deploy on recorded Debian 12 and EL9 facts."""

from __future__ import annotations

import re

import pytest
from guest_services_facts import unit_line
from harness import file_line, fixture, os_release_response, package_lines, run_plan

from roles.common import registry
from roles.firewall import FIREWALLD_CANDIDATE, NFT_CANDIDATE, NFT_DROPIN
from roles.firewall.facts import FirewallHostNetwork
from roles.firewall.render import NFT_FILE

NETWORK_FACT = FirewallHostNetwork().command()
LAB_NETWORK = fixture("firewall-host-network.debian-12-docker.txt")  # LAN 10.213.143.0/24
NO_NETWORK = "route4 []\nroute6 []\naddr []\nssh "
EL9_RELEASES = [
    "os-release.rocky-9.4.txt",
    "os-release.almalinux-9.4.txt",
    "os-release.rhel-9.4.txt",
]
# The servers' 'auto' is loopback behind the TLS front door: no address fact needed.
GUEST: dict = {}
# The role's HostState read: it lists the files it manages, the first under /etc/nftables* or
# /etc/firewalld/zones (the base role's read comes earlier and lists apt's files).
FIREWALL_STATE = re.compile(r"^for f in (/var/lib/aicoder/firewall|/etc/firewalld/zones)")
DEBIAN_FILES = {
    NFT_CANDIDATE: "600",
    "/etc/nftables.conf": "755",
    NFT_FILE: "600",
    NFT_DROPIN: "644",
}
EL9_NAMES = ["zones/aicoder-admin.xml", "zones/public.xml", "policies/aicoder-lan-to-vms.xml"]
EL9_FILES = {
    **{f"/etc/firewalld/{n}": "644" for n in EL9_NAMES},
    **{f"{FIREWALLD_CANDIDATE}/{n}": "644" for n in EL9_NAMES},
}
# firewalld's default public zone (tests/fixtures/el9/SOURCES.md, section 10), as the zone fact
# reads it on a host whose /etc/firewalld/zones has no public.xml yet.
DEFAULT_ZONE = {re.compile(r"cat /etc/firewalld/zones/public.xml"): fixture(
    "firewalld-zone.public.default.xml")}  # fmt: skip


def responses(release: str, network: str = LAB_NETWORK, extra: dict | None = None) -> dict:
    found = {NETWORK_FACT: network}
    found.update(extra or {})
    found.update(os_release_response(fixture(release)))
    return found


def firewall_ops(plan) -> list[tuple[str, list[str]]]:
    return [(name, cmds) for name, cmds in plan.changed if name.startswith("Firewall")]


def converged(uploaded: dict[str, str], modes: dict[str, str], service: str, package: str) -> dict:
    """The firewall's one HostState read on a host where every file already holds what a fresh
    run uploads, the package is installed and the service is active and enabled."""
    lines = [file_line(path, uploaded[path], mode) for path, mode in modes.items()]
    lines += [*package_lines([package]), unit_line(service)]
    return {FIREWALL_STATE: lines}


# --- Debian 12 (guest, and a Debian hypervisor: the same code path) ----------------------------


def test_fresh_debian_guest_gets_a_checked_ruleset_for_its_lan_then_loads_it():
    plan = run_plan({"ai_guests": GUEST}, responses("os-release.debian-12.txt"))
    assert plan.error is None, plan.error
    commands = [c for _, cmds in firewall_ops(plan) for c in cmds]
    assert any("apt-get" in c and "install nftables" in c for c in commands)
    check = commands.index(f"nft -c -f {NFT_CANDIDATE} || {{ rm -f {NFT_CANDIDATE}; exit 1; }}")
    assert check < commands.index(f"upload {NFT_FILE}") < commands.index(f"nft -f {NFT_FILE}")
    assert "systemctl enable nftables.service" in commands
    rules = plan.files[NFT_FILE]
    assert rules == plan.files[NFT_CANDIDATE]
    assert "elements = { 10.213.143.0/24 }" in rules  # the recorded host's LAN
    # The TLS front door only: tabbyAPI and Ollama listen on loopback behind it.
    assert "tcp dport { 8443 }" in rules and "5000" not in rules and "11434" not in rules
    assert not re.search(r"^\s*flush", plan.files["/etc/nftables.conf"], re.M)


def test_a_disabled_service_gets_no_open_port():
    guest = {**GUEST, "ollama_enabled": False, "tabbyapi_port": 5100, "proxy_plain_http": True}
    plan = run_plan({"ai_guests": guest}, responses("os-release.debian-12.txt"))
    assert plan.error is None, plan.error
    assert "tcp dport { 5100 }" in plan.files[NFT_FILE]  # the registry's enabled services only


def test_a_front_before_a_service_opens_its_public_port_instead(monkeypatch):
    def front(endpoint, settings_of):
        if endpoint.service != "tabbyapi":
            return endpoint
        return registry.fronted(endpoint, scheme="https", port=8443, listen="auto")

    monkeypatch.setattr(registry, "_fronts", lambda: (front,))
    plan = run_plan({"ai_guests": GUEST}, responses("os-release.debian-12.txt"))
    assert plan.error is None, plan.error
    assert "tcp dport { 8443, 11434 }" in plan.files[NFT_FILE]  # not tabbyAPI's own 5000


def test_first_run_loads_before_any_service_role_and_right_after_base():
    plan = run_plan({"ai_guests": GUEST}, responses("os-release.debian-12.txt"))
    names = plan.names()
    load = next(i for i, n in enumerate(names) if n.endswith("Load the firewall table"))
    assert all(n.startswith(("Base", "Firewall")) for n in names[:load])


def test_debian_hypervisor_uses_nftables_without_service_ports():
    plan = run_plan({"hypervisors": {}}, responses("os-release.debian-12.txt"))
    assert plan.error is None, plan.error
    rules = plan.files[NFT_FILE]
    assert 'comment "services"' not in rules and "tcp dport { 22 }" in rules
    assert not plan.find("firewall-cmd")


def test_deploy_from_outside_the_allowed_networks_keeps_its_own_address():
    data = {"firewall_allowed_networks": ["192.168.50.0/24", "fd00:50::/64"]}
    plan = run_plan({"ai_guests": {**GUEST, **data}}, responses("os-release.debian-12.txt"))
    rules = plan.files[NFT_FILE]
    assert "elements = { 192.168.50.0/24 }" in rules and "elements = { fd00:50::/64 }" in rules
    assert 'ip saddr 10.213.143.1 tcp dport { 22 } accept comment "deploy source"' in rules


def test_converged_debian_host_plans_nothing():
    fresh = run_plan({"ai_guests": GUEST}, responses("os-release.debian-12.txt"))
    facts = converged(fresh.files, DEBIAN_FILES, "nftables.service", "nftables")
    plan = run_plan({"ai_guests": GUEST}, responses("os-release.debian-12.txt", extra=facts))
    assert plan.error is None, plan.error
    assert firewall_ops(plan) == []


# --- EL9 hypervisor: firewalld -----------------------------------------------------------------


@pytest.mark.parametrize("release", EL9_RELEASES)
def test_el9_hypervisor_gets_firewalld_zones_checked_as_a_candidate_then_installed(release):
    plan = run_plan({"hypervisors": {}}, responses(release, extra=DEFAULT_ZONE))
    assert plan.error is None, plan.error
    commands = [c for _, cmds in firewall_ops(plan) for c in cmds]
    assert "dnf install -y firewalld" in commands
    (check,) = [i for i, c in enumerate(commands) if "firewall-offline-cmd" in c]
    # The candidate: a copy of /etc/firewalld with the new files, checked before any of them
    # reaches /etc/firewalld; a failing one is dropped and /etc/firewalld left as it is.
    assert f"cp -a /etc/firewalld {FIREWALLD_CANDIDATE}.full" in commands[check]
    assert f"--system-config {FIREWALLD_CANDIDATE}.full --check-config" in commands[check]
    assert all(commands.index(f"upload {FIREWALLD_CANDIDATE}/{n}") < check for n in EL9_NAMES)
    assert all(check < commands.index(f"upload /etc/firewalld/{n}") for n in EL9_NAMES)
    assert check < commands.index("firewall-cmd --reload")
    assert "systemctl enable firewalld.service" in commands
    admin = plan.files["/etc/firewalld/zones/aicoder-admin.xml"]
    assert '<source address="10.213.143.0/24" />' in admin and '<service name="ssh" />' in admin
    assert "<forward />" in admin
    public = plan.files["/etc/firewalld/zones/public.xml"]
    # firewalld's own default, merged: SSH moved to the allowed networks, the rest kept.
    assert "ssh" not in public and "<forward />" in public
    assert '<service name="dhcpv6-client" />' in public and "<short>Public</short>" in public
    lan = plan.files["/etc/firewalld/policies/aicoder-lan-to-vms.xml"]
    assert '<ingress-zone name="aicoder-admin" />' in lan and 'target="ACCEPT"' in lan
    assert not plan.find(r"\bnft\b|apt-get")


def test_el9_admins_zone_is_merged_and_saved_once_never_replaced():
    admins = fixture("firewalld-zone.public.default.xml").replace(
        "<forward/>", '<port port="8443" protocol="tcp"/><service name="cockpit"/>'
    )
    found = {re.compile(r"cat /etc/firewalld/zones/public.xml"): admins}
    plan = run_plan({"hypervisors": {}}, responses("os-release.rocky-9.4.txt", extra=found))
    public = plan.files["/etc/firewalld/zones/public.xml"]
    assert '<port port="8443" protocol="tcp" />' in public and '"cockpit"' in public
    assert '"ssh"' not in public
    (save,) = plan.find(r"public.xml.before-aicoder")
    assert "[ ! -e /var/lib/aicoder/firewall/public.xml.before-aicoder ]" in save


def test_el9_zone_name_is_a_setting():
    plan = run_plan(
        {"hypervisors": {"firewall_firewalld_zone": "FedoraServer"}},
        responses("os-release.rocky-9.4.txt"),
    )
    assert "/etc/firewalld/zones/FedoraServer.xml" in plan.files


@pytest.mark.parametrize("release", EL9_RELEASES)
def test_converged_el9_hypervisor_plans_nothing(release):
    fresh = run_plan({"hypervisors": {}}, responses(release, extra=DEFAULT_ZONE))
    files = {**fresh.files, **{p: fresh.files[f"/etc/firewalld/{n}"] for n in EL9_NAMES
                              for p in [f"{FIREWALLD_CANDIDATE}/{n}"]}}  # fmt: skip
    facts = converged(files, EL9_FILES, "firewalld.service", "firewalld")
    # The zone fact now reads the merged file this deploy installed.
    facts[re.compile(r"cat /etc/firewalld/zones/public.xml")] = fresh.files[
        "/etc/firewalld/zones/public.xml"
    ]
    plan = run_plan({"hypervisors": {}}, responses(release, extra=facts))
    assert plan.error is None, plan.error
    assert firewall_ops(plan) == []


# --- refusals before any change ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"firewall_allowed_networks": ["0.0.0.0/0"]}, "firewall_allow_anywhere = True"),
        ({"firewall_allowed_networks": ["192.168.1.0/24", "::/0"]}, "firewall_allow_anywhere"),
        ({"firewall_allowed_networks": ["192.168.1.300/24"]}, "not a network in CIDR form"),
    ],
)
def test_bad_networks_stop_the_deploy_before_any_operation(data, fragment):
    plan = run_plan({"ai_guests": {**GUEST, **data}}, responses("os-release.debian-12.txt"))
    assert plan.error is not None and not plan.changed
    assert "firewall_allowed_networks" in str(plan.error) and fragment in str(plan.error)


def test_anywhere_with_the_explicit_flag_is_deployed():
    data = {"firewall_allowed_networks": ["0.0.0.0/0"], "firewall_allow_anywhere": True}
    plan = run_plan({"ai_guests": {**GUEST, **data}}, responses("os-release.debian-12.txt"))
    assert plan.error is None, plan.error
    assert "elements = { 0.0.0.0/0 }" in plan.files[NFT_FILE]


def test_host_without_a_lan_and_no_setting_is_refused_before_any_operation():
    plan = run_plan({"hypervisors": {}}, responses("os-release.rocky-9.4.txt", NO_NETWORK))
    assert plan.error is not None and not plan.changed
    assert re.search(r"set firewall_allowed_networks", str(plan.error))


def test_disabled_firewall_plans_nothing():
    plan = run_plan(
        {"ai_guests": {**GUEST, "firewall_enabled": False}}, responses("os-release.debian-12.txt")
    )
    assert plan.error is None and firewall_ops(plan) == []
