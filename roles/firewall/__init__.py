"""Firewall role: SSH and the model servers reachable only from the allowed networks.

Runs on every host right after the base role, before any service listens (deploy.py): on a first
deploy no port is ever open to the whole LAN, not even for the minutes between Ollama's start and
a later firewall step. SSH cannot be cut off: established connections stay accepted, and the
address this deploy connected from is kept allowed (see build_policy).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server, systemd

from roles.common import host_state, prefetch, registry
from roles.common.platform import profile
from roles.firewall.facts import FirewalldZoneFile, FirewallHostNetwork
from roles.firewall.render import (
    ADMIN_ZONE,
    LAN_POLICY,
    NFT_CONF,
    NFT_FILE,
    Policy,
    build_policy,
    firewalld_admin_zone,
    firewalld_interface_zone,
    firewalld_lan_to_vms_policy,
    nftables_conf,
    nftables_ruleset,
    nftables_service_dropin,
)
from roles.firewall.settings import FirewallSettings

__all__ = ["FirewallSettings", "configure"]

# The checked copy of the ruleset: a file that fails `nft -c` never reaches /etc/nftables.d,
# so the next boot still loads the last good one.
FIREWALL_STATE = "/var/lib/aicoder/firewall"
NFT_CANDIDATE = f"{FIREWALL_STATE}/aicoder-filter.nft"
FIREWALLD_CANDIDATE = f"{FIREWALL_STATE}/firewalld"  # the zone files as checked
NFT_DROPIN = "/etc/systemd/system/nftables.service.d/aicoder.conf"


def service_ports(settings: FirewallSettings) -> list[int]:
    """TCP ports the allowed networks may reach on this host besides SSH: the extra ones and
    the public ports of the enabled registered services it runs (each from its own settings;
    behind the TLS front door they share its one port)."""
    endpoints = registry.endpoints(lambda cls: cls.from_host(host), host.groups)
    return list(dict.fromkeys([*settings.extra_tcp_ports, *(e.port for e in endpoints)]))


NETWORK_READ = prefetch.Request.of(FirewallHostNetwork)
NFT_READ: dict = dict(
    paths=[NFT_CANDIDATE, NFT_CONF, NFT_FILE, NFT_DROPIN],
    packages=["nftables"],
    units=["nftables.service"],
)


def _firewalld_read(zone: str) -> dict:
    names = [f"zones/{ADMIN_ZONE}.xml", f"zones/{zone}.xml", f"policies/{LAN_POLICY}.xml"]
    return dict(
        paths=[
            *(f"{FIREWALLD_CANDIDATE}/{f}" for f in names),
            *(f"/etc/firewalld/{f}" for f in names),
        ],
        packages=["firewalld"],
        units=["firewalld.service"],
    )


@prefetch.reader("hypervisors", "ai_guests")
def reads(host) -> list[prefetch.Request]:
    """What :func:`configure` reads, with nftables and with firewalld (the OS family is not
    known yet; the other one's read costs a few lines of output)."""
    settings = FirewallSettings.from_host(host)
    if not settings.enabled:
        return []
    zone = settings.firewalld_zone
    return [
        NETWORK_READ,
        host_state.request(**NFT_READ),
        prefetch.Request.of(FirewalldZoneFile, zone=zone),
        host_state.request(**_firewalld_read(zone)),
    ]


def host_policy(settings: FirewallSettings) -> Policy:
    network = prefetch.fact(host, FirewallHostNetwork)
    return build_policy(settings, network, service_ports(settings), host.name)


@deploy("Firewall: nftables")
def _nftables(policy: Policy):
    ruleset = nftables_ruleset(policy)
    state = host_state.read(**NFT_READ)
    host_state.packages(state, "nftables", ["nftables"])
    candidate = host_state.put(state, "Firewall ruleset (candidate)", NFT_CANDIDATE, ruleset, "600")
    host_state.after(
        [candidate],
        server.shell,
        name="Check the ruleset (nft -c)",
        # Drop a failing candidate so the next run uploads and checks it again.
        commands=[f"nft -c -f {NFT_CANDIDATE} || {{ rm -f {NFT_CANDIDATE}; exit 1; }}"],
    )
    host_state.put(
        state, f"{NFT_CONF} loads the drop-ins, flushes nothing", NFT_CONF, nftables_conf(), "755"
    )
    rules = host_state.put(state, "Firewall ruleset", NFT_FILE, ruleset, "600")
    dropin = host_state.put(
        state,
        "nftables.service stops without flushing other tables",
        NFT_DROPIN,
        nftables_service_dropin(),
    )
    host_state.after([dropin], systemd.daemon_reload, name="Reload systemd units")
    host_state.after(
        [rules],
        server.shell,
        name="Load the firewall table",
        # Only this file: it replaces only our table (other drop-ins are left as loaded).
        commands=[f"nft -f {NFT_FILE}"],
    )
    host_state.service(state, "nftables loads the firewall at boot", "nftables.service")


@deploy("Firewall: firewalld")
def _firewalld(policy: Policy, zone: str):
    """The zone files are checked as a candidate (/etc/firewalld with them, in a copy) before
    they are installed; the interface zone is merged into the admin's, whose file is saved
    once beside the candidate."""
    wanted = {
        f"zones/{ADMIN_ZONE}.xml": firewalld_admin_zone(policy),
        f"zones/{zone}.xml": firewalld_interface_zone(
            zone, prefetch.fact(host, FirewalldZoneFile, zone=zone), policy
        ),
        f"policies/{LAN_POLICY}.xml": firewalld_lan_to_vms_policy(zone),
    }
    state = host_state.read(**_firewalld_read(zone))
    host_state.packages(state, "firewalld", ["firewalld"])
    candidates = [
        host_state.put(
            state, f"firewalld {name} (candidate)", f"{FIREWALLD_CANDIDATE}/{name}", text
        )
        for name, text in wanted.items()
    ]
    check = host_state.after(
        candidates,
        server.shell,
        name="Check the candidate firewalld configuration",
        commands=[_check_candidate(list(wanted))],
    )
    saved = f"{FIREWALL_STATE}/{zone}.xml.before-aicoder"
    host_state.after(
        [check],
        server.shell,
        name=f"Keep the admin's {zone} zone file before the first change",
        commands=[
            f"[ -e /etc/firewalld/zones/{zone}.xml ] && [ ! -e {saved} ] && "
            f"cp -a /etc/firewalld/zones/{zone}.xml {saved}; true"
        ],  # fmt: skip
    )
    installed = [
        host_state.put(state, f"firewalld {name}", f"/etc/firewalld/{name}", text)
        for name, text in wanted.items()
    ]
    host_state.service(state, "firewalld running and enabled", "firewalld.service")
    host_state.after(
        installed,
        server.shell,
        name="Reload firewalld",
        commands=["firewall-cmd --reload"],  # harmless right after a first start
    )


def _check_candidate(names: list[str]) -> str:
    """firewall-offline-cmd --check-config on a copy of /etc/firewalld holding the candidate
    files (it reads files only, needs no daemon); a failing candidate is dropped so that the
    next run uploads and checks it again, and /etc/firewalld is never touched."""
    full = f"{FIREWALLD_CANDIDATE}.full"
    copies = "; ".join(f"cp {FIREWALLD_CANDIDATE}/{n} {full}/{n}" for n in names)
    return (
        f"rm -rf {full} && cp -a /etc/firewalld {full} && mkdir -p {full}/zones {full}/policies "
        f"&& {{ {copies}; }} && firewall-offline-cmd --system-config {full} --check-config "
        f"|| {{ rm -rf {FIREWALLD_CANDIDATE} {full}; exit 1; }}; rm -rf {full}"
    )


@deploy("Firewall: configure")
def configure():
    """Ensures an input policy of drop except established traffic, loopback, essential ICMP,
    SSH from the allowed networks (and this deploy's own address) and the services' ports from
    the allowed networks; Docker-published ports obey the allowed networks too. Debian: the
    nftables table ``inet aicoder_filter`` (no other table touched); EL9: firewalld zones.

    Example, in your own deploy file:

    .. code:: python

        from roles import firewall

        firewall.configure()  # settings: firewall_* in group_data/all.py
    """
    settings = FirewallSettings.from_host(host)
    if not settings.enabled:
        return
    policy = host_policy(settings)
    if profile(host).firewall == "nftables":
        _nftables(policy=policy)
    else:
        _firewalld(policy=policy, zone=settings.firewalld_zone)
