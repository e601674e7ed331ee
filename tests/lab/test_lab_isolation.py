"""Two lab instances on one host do not reach each other's machines (lab/network.py).

Without the isolation one lab's guest reached the other's SSH through the host's forwarding,
masqueraded to the other bridge's address, inside the firewall's allowed range: a firewall test
could pass for the wrong reason. Cheap: two bare nspawn guests, no deploy.
"""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.lab

MIRROR = ("deb.debian.org", 80)  # the NAT out: the lab's machines fetch from Debian's mirror


def reaches(inst, host: str, port: int) -> bool:
    """Whether the instance's guest opens a TCP connection to host:port (within 5 s)."""
    probe = f"timeout 5 bash -c '</dev/tcp/{host}/{port}'"
    return inst.ssh("guest", probe, check=False).returncode == 0


@pytest.fixture(scope="module")
def two_labs(lab_factory):
    with lab_factory("test-iso-a", "guest") as a, lab_factory("test-iso-b", "guest") as b:
        yield a, b


def test_instances_cannot_reach_each_others_machines(two_labs):
    a, b = two_labs
    ip_a, ip_b = (inst.machine_state("guest")["ip"] for inst in two_labs)
    assert not reaches(a, ip_b, 22), f"{a.name}'s guest reached {b.name}'s SSH"
    assert not reaches(b, ip_a, 22), f"{b.name}'s guest reached {a.name}'s SSH"
    # Each still has its own bridge and the NAT out; the host still reaches both (the deploy).
    for inst, ip in ((a, ip_a), (b, ip_b)):
        assert reaches(inst, *MIRROR), f"{inst.name}'s guest lost the NAT out"
        assert reaches(inst, ip, 22)
    # The forward rules are what blocks: without them the path is open (LAB-FACTS).
    for inst in two_labs:
        drop = ["nft", "delete", "chain", "inet", inst.config.nft_table, "forward"]
        subprocess.run(drop, check=True)
    assert reaches(a, ip_b, 22), "no path between the labs even without the isolation rules"
