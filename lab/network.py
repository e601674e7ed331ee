"""The lab's host network: a bridge per lab instance, masquerade in its own nft table, forwarding.

Instances are isolated from each other: each one's table drops forwarding between its bridge and
any other lab subnet (all are in LAB_RANGE), both ways, so a machine reaches only its own bridge
and the NAT out. Without that, one lab's guest reached another's SSH masqueraded to the other
bridge's address, inside the firewall's allowed range, and firewall tests could pass for the
wrong reason.

Everything `up` adds is recorded so that `down` restores the host exactly. ip_forward is shared
by all lab instances on the host: the value from before the first one is kept in /run and put
back when the last one goes down.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import re
import subprocess
import time
from pathlib import Path

from lab.config import Lab

LAB_RANGE = "10.213.0.0/16"  # every instance's subnet is a /24 in it (pick_subnet)
# The machines' LAN (MachineKind.lan): the same addresses in every lab instance, as each lives
# in its own network namespace and never on the host. The peer stands in for another LAN host.
LAN_PREFIX = 24
LAN_MACHINE = "10.77.0.1"
LAN_PEER = "10.77.0.254"
RUN_DIR = Path("/run/aicoder-lab")  # host-wide: which lab instances hold ip_forward
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def _subnet_in_use(net: ipaddress.IPv4Network) -> bool:
    routes = json.loads(_ip("-j", "route", "show", "table", "all").stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("default", "") or ":" in dst:
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(net):
                return True
    return False


def pick_subnet(name: str) -> str:
    """A free /24 of LAB_RANGE, derived from the instance name (next free one on a clash)."""
    subnets = list(ipaddress.IPv4Network(LAB_RANGE).subnets(new_prefix=24))[1:255]
    start = int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(subnets)
    for i in range(len(subnets)):
        net = subnets[(start + i) % len(subnets)]
        if not _subnet_in_use(net):
            return str(net)
    raise RuntimeError(f"no free /24 subnet in {LAB_RANGE} for the lab")


def gateway(subnet: str) -> str:
    return str(next(ipaddress.ip_network(subnet).hosts()))


def address(subnet: str, octet: int) -> str:
    return str(ipaddress.ip_network(subnet).network_address + octet)


@contextlib.contextmanager
def _host_lock():
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _holders() -> dict[str, dict]:
    """Registrations of lab instances (name -> {bridge, dir}) whose bridge still exists."""
    live = {}
    for reg in (RUN_DIR / "instances").glob("*"):
        info = json.loads(reg.read_text())
        if link_exists(info["bridge"]):
            live[reg.name] = info
        else:
            reg.unlink()  # stale: its bridge is gone (host rebooted, or removed by hand)
    return live


def _check_owner(lab: Lab) -> None:
    """Refuse to touch the network of a same-named lab instance that lives in another dir."""
    with _host_lock():
        owner = _holders().get(lab.name)
    if owner and owner["dir"] != str(lab.dir):
        raise SystemExit(
            f"lab instance {lab.name!r} is up from {owner['dir']}, not {lab.dir}: "
            "set AICODER_LAB_NAME to another name for a second lab"
        )


def resolvers() -> tuple[list[str], str | None]:
    """(nameservers the machines can use, loopback resolver to reach through the bridge).

    A loopback resolver (systemd-resolved's 127.0.0.53, a local dnsmasq) is not reachable from
    a machine's network namespace: use the upstream servers when known, else DNAT DNS sent to
    the bridge address to the loopback resolver.
    """
    loopback = None
    for conf in ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"):
        with contextlib.suppress(OSError):
            servers = re.findall(r"^\s*nameserver\s+(\S+)", Path(conf).read_text(), re.M)
            usable = [s for s in servers if not ipaddress.ip_address(s).is_loopback]
            if usable:
                return usable, None
            loopback = loopback or next((s for s in servers if "." in s), None)
    return [], loopback or "127.0.0.53"


def _nft_rules(lab: Lab, subnet: str, dns_dnat: str | None) -> str:
    bridge = f'"{lab.bridge}"'
    rules = f"""
table inet {lab.nft_table} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} ip daddr != {subnet} masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname {bridge} ip daddr {LAB_RANGE} ip daddr != {subnet} drop
        oifname {bridge} ip saddr {LAB_RANGE} ip saddr != {subnet} drop
    }}
"""
    if dns_dnat:
        match = f'iifname "{lab.bridge}" ip daddr {gateway(subnet)} meta l4proto {{ tcp, udp }}'
        rules += f"""
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        {match} th dport 53 dnat ip to {dns_dnat}
    }}
"""
    return rules + "}\n"


def up(lab: Lab, subnet: str) -> list[str]:
    """Create the bridge, the nft table and forwarding (keeping what exists already).

    Returns the nameservers the machines should use.
    """
    _check_owner(lab)
    servers, dns_dnat = resolvers()
    if not link_exists(lab.bridge):
        _ip("link", "add", lab.bridge, "type", "bridge")
        _ip("addr", "add", f"{gateway(subnet)}/{ipaddress.ip_network(subnet).prefixlen}",
            "dev", lab.bridge)  # fmt: skip
        _ip("link", "set", lab.bridge, "up")
    if dns_dnat:  # lets the DNAT to 127.x above be routed; goes away with the bridge
        Path(f"/proc/sys/net/ipv4/conf/{lab.bridge}/route_localnet").write_text("1\n")
        servers = [gateway(subnet)]
    if not nft_table_exists(lab):
        rules = _nft_rules(lab, subnet, dns_dnat)
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    with _host_lock():
        saved = RUN_DIR / "ip_forward.before"
        if not _holders():
            saved.write_text(IP_FORWARD.read_text())
        (RUN_DIR / "instances").mkdir(exist_ok=True)
        info = {"bridge": lab.bridge, "dir": str(lab.dir)}
        (RUN_DIR / "instances" / lab.name).write_text(json.dumps(info))
        IP_FORWARD.write_text("1\n")
    return servers


def nft_table_exists(lab: Lab) -> bool:
    cmd = ["nft", "list", "table", "inet", lab.nft_table]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def down(lab: Lab) -> None:
    """Remove what `up` added; put ip_forward back when no other lab instance needs it."""
    _check_owner(lab)
    lan_down(lab)
    if nft_table_exists(lab):
        subprocess.run(["nft", "delete", "table", "inet", lab.nft_table], check=True)
    if link_exists(lab.bridge):
        _ip("link", "delete", lab.bridge, "type", "bridge")
    with _host_lock():
        (RUN_DIR / "instances" / lab.name).unlink(missing_ok=True)
        saved = RUN_DIR / "ip_forward.before"
        if not _holders() and saved.exists():
            IP_FORWARD.write_text(saved.read_text())
            saved.unlink()


def attach_lan(lab: Lab, link: str, timeout: float = 15) -> None:
    """Move the host end of a machine's LAN veth (created by nspawn) into the LAN namespace and
    give it the peer's address there."""
    if not Path(f"/run/netns/{lab.lan_netns}").exists():
        _ip("netns", "add", lab.lan_netns)
        _ip("-n", lab.lan_netns, "link", "set", "lo", "up")
    deadline = time.monotonic() + timeout
    while not link_exists(link):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nspawn did not create the LAN link {link}")
        time.sleep(0.1)
    _ip("link", "set", link, "netns", lab.lan_netns)
    _ip("-n", lab.lan_netns, "addr", "add", f"{LAN_PEER}/{LAN_PREFIX}", "dev", link)
    _ip("-n", lab.lan_netns, "link", "set", link, "up")


def lan_down(lab: Lab) -> None:
    """Remove the LAN namespace (the links in it go with their machines)."""
    if Path(f"/run/netns/{lab.lan_netns}").exists():
        _ip("netns", "delete", lab.lan_netns)
