"""Operation names: pyinfra prefixes each with its deploy's name, so a role never repeats it."""

from __future__ import annotations

import pytest
from harness import repeats_its_role, run_plan
from test_bad_input import GUEST, HV, host_for


@pytest.mark.parametrize(
    ("group", "data"),
    [
        (HV, {}),
        (HV, {"vfio_reboot": True}),
        (GUEST, {}),
        (GUEST, {"nvidia_driver_source": "nvidia", "docker_source": "debian"}),
    ],
    ids=["hypervisor", "hypervisor-reboot", "guest", "guest-nvidia-debian-docker"],
)
def test_no_operation_name_repeats_its_deploys_role(group, data):
    group_data, responses = host_for(group, data)
    plan = run_plan({group: group_data}, responses)
    assert plan.error is None, plan.error
    assert len(plan.changed) > 10, plan.names()  # a fresh host: most of its roles plan work
    assert [n for n in plan.names() if repeats_its_role(n)] == []


def test_the_check_finds_a_repeated_role():
    assert repeats_its_role("Ollama | Ollama: compose.yaml")
    assert repeats_its_role("Firewall: configure | Firewall: nftables | Firewall: ruleset")
    assert repeats_its_role("Docker | Docker")
    assert not repeats_its_role("Ollama | compose.yaml")
    assert not repeats_its_role("libvirt: virtualization stack | libvirt-guests: shut VMs down")
    assert not repeats_its_role("NVIDIA driver | NVIDIA CUDA repository: apt source (deb822)")
