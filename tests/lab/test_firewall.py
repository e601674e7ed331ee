"""The firewall on a real Debian 12 lab machine: who can connect, and what stays untouched.

From this host, the lab bridge's own address (inside the guest's LAN, so allowed by the derived
default of firewall_allowed_networks) reaches SSH and a Docker-published port; a second address
added to the same bridge for the test, 198.18.X.1 (RFC 2544 benchmarking range, outside every
allowed network), reaches neither. Traffic only ever goes to the lab machine's own address. The
rules live in the machine's network namespace: this host's ruleset stays as it was.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
from contextlib import contextmanager

import pytest

from roles.firewall.render import TABLE

pytestmark = pytest.mark.lab

PUBLISHED = 18080  # Docker publishes the test container's httpd here
UNLISTED = 18081  # a listener on the guest itself that no rule allows
IMAGE = "aicoder-fwtest/busybox:1"


def _connects(source: str, target: str, port: int, timeout: float = 3) -> bool:
    with socket.socket() as sock:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        try:
            sock.connect((target, port))
        except OSError:  # timed out (dropped) or refused
            return False
        return True


def _bridge_address(bridge: str) -> str:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", bridge], capture_output=True)
    return json.loads(out.stdout)[0]["addr_info"][0]["local"]


@contextmanager
def _denied_source(bridge: str, gateway: str):
    """A second host address on the lab bridge, outside the allowed networks; removed after."""
    address = f"198.18.{ipaddress.ip_address(gateway).packed[2]}.1"
    subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", bridge], check=True)
    try:
        yield address
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", bridge], check=False)


def _dropped_published(lab) -> int:
    table = lab.ssh("guest", f"nft list chain inet {TABLE} published").stdout
    match = re.search(r"counter packets (\d+) bytes \d+ drop", table)
    return int(match.group(1)) if match else 0


@pytest.fixture
def published_port(deployed):
    """A container publishing PUBLISHED, and a plain listener on UNLISTED, in the guest."""
    if deployed.ssh("guest", "command -v docker", check=False).returncode != 0:
        pytest.skip("Docker is not installed on the guest (docker role): no published port")
    deployed.ssh(
        "guest",
        "set -e; DEBIAN_FRONTEND=noninteractive apt-get -q install -y busybox-static >/dev/null; "
        f"if ! docker image inspect {IMAGE} >/dev/null 2>&1; then d=$(mktemp -d); "
        f"mkdir $d/bin; cp /bin/busybox $d/bin/; tar -C $d -c . | docker import - {IMAGE}; fi; "
        "docker rm -f fwtest >/dev/null 2>&1 || true; "
        f"docker run -d --name fwtest -p {PUBLISHED}:8080 {IMAGE} /bin/busybox httpd -f -p 8080; "
        f"systemd-run --unit fwtest-unlisted /bin/busybox httpd -f -p {UNLISTED}",
        timeout=300,
    )
    yield
    deployed.ssh("guest", "docker rm -f fwtest; systemctl stop fwtest-unlisted; true", check=False)


def test_allowed_source_connects_denied_source_does_not(deployed, published_port, host_state):
    before = host_state(other_than=deployed.name)
    guest = deployed.machine_state("guest")["ip"]
    bridge = deployed.config.bridge
    allowed = _bridge_address(bridge)

    assert _connects(allowed, guest, 22), "SSH from the lab subnet must stay reachable"
    assert _connects(allowed, guest, PUBLISHED), "the published port, from an allowed network"
    assert not _connects(allowed, guest, UNLISTED), "a port no rule allows is dropped"

    dropped = _dropped_published(deployed)
    with _denied_source(bridge, allowed) as denied:
        assert not _connects(denied, guest, 22), f"SSH from {denied} (not allowed)"
        assert not _connects(denied, guest, PUBLISHED), f"published port from {denied}"
    # The denied SYNs reached the guest and were dropped by our forward chain, not lost on the
    # way: the drop counter of the published-ports chain moved.
    assert _dropped_published(deployed) > dropped

    after = host_state(other_than=deployed.name)
    assert after["nft"] == before["nft"], "the host's own ruleset changed"
    host_tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert TABLE not in host_tables


def test_restarting_nftables_keeps_docker_networking(deployed, published_port):
    """Debian's unit would `nft flush ruleset` on stop; the role's drop-in removes only its
    own table, so Docker's NAT rules survive and the published port still answers."""
    guest = deployed.machine_state("guest")["ip"]
    deployed.ssh("guest", "systemctl restart nftables.service")
    tables = deployed.ssh("guest", "nft list tables").stdout
    assert f"table inet {TABLE}" in tables and "table ip nat" in tables, tables
    assert _connects(_bridge_address(deployed.config.bridge), guest, PUBLISHED)


def test_second_deploy_changes_no_firewall_operation(deploys):
    first, second = deploys
    assert first.ok and second is not None, first.tail()
    assert [op for op in second.changed_operations() if op.startswith("Firewall")] == []
