"""The whole deploy.py on a fresh EL9 hypervisor, without vfio_only: two phases, exactly.

First run: the IOMMU arguments and the vfio-pci binding are written, libvirt is installed and
the GPU VM defined, but no VM with GPUs starts while the reboot is pending (libvirt would take
the GPU live from the host). With vfio_reboot the host reboots, is checked, and the same run
starts the VM; without it the run ends with REBOOT PENDING and the next command, and the run
after the reboot starts it. A converged host plans nothing. Hosts: the Intel Z370 (IOMMU off,
GT 1030 behind the CPU's root port) and the AMD X570 (IOMMU on, GT 710), from recorded outputs
(tests/plan/vfio_facts.py says which parts are constructed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pytest
from harness import fixture, run_plan
from test_guest_vm_plan import KEY, STATE
from test_guest_vm_plan import host_state as vm_state
from test_libvirt_plan import EL9, LAN, converged_libvirt
from test_libvirt_plan import responses as libvirt_fresh
from test_vfio_plan import after_reboot
from vfio_facts import (
    GT710,
    GT1030,
    X570_FRAMEBUFFERS,
    X570_GROUPS,
    X570_LSPCI_BOUND,
    X570_LSPCI_HOST,
    Z370_GROUPS,
    Z370_LSPCI,
    bound,
    el9_fresh_amd,
    el9_fresh_intel,
    rebooted,
)

from roles.vfio import render


@dataclass
class Hv:
    fresh: Callable[..., dict]  # (files, **sections) -> fake responses of the VFIO read
    after: dict  # sections after the first run and its reboot
    gpus: list[str]
    ids: str


HOSTS = {
    "intel-root-port": Hv(
        el9_fresh_intel,
        rebooted(
            fixture("cmdline.rocky-9.4.no-iommu.txt"),
            ["intel_iommu=on", "iommu=pt"],
            groups=Z370_GROUPS,
            lspci=bound(Z370_LSPCI, GT1030),
        ),
        GT1030,
        "10de:1d01,10de:0fb8",
    ),
    "amd": Hv(
        partial(el9_fresh_amd, lspci=X570_LSPCI_HOST, framebuffers=X570_FRAMEBUFFERS),
        rebooted(
            fixture("cmdline.rocky-9.4.no-iommu.txt"),
            ["iommu=pt"],
            groups=X570_GROUPS,
            lspci=X570_LSPCI_BOUND,
        ),
        [GT710, "0000:24:00.1"],
        "10de:128b,10de:0e0f",
    ),
}


def settings(hv: Hv, **extra) -> dict:
    vm = {"name": "ai", "vcpus": 2, "memory_mb": 4096, "disk_gb": 32, "gpus": hv.gpus}
    return {**LAN, "vfio_gpus": hv.gpus[:1], "guest_vm_vms": [vm], "base_admin_ssh_keys": [KEY],
            **extra}  # fmt: skip


def vm_lines(data: dict, *, defined: bool, running: bool = False) -> str:
    lines = vm_state(data, exists=defined)
    if defined and not running:
        lines = lines.replace("[running]\nai\n[autostart]\nai\n", "[running]\n[autostart]\n")
    return lines


def first_run(hv: Hv, **extra):
    data = settings(hv, **extra)
    responses = {**libvirt_fresh(EL9), STATE: vm_lines(data, defined=False), **hv.fresh()}
    responses["/proc/uptime"] = "100"  # for pyinfra's reboot: read before and after it
    return run_plan({"hypervisors": data}, responses)


def later_run(hv: Hv, *, running: bool, **extra):
    """A run after the first one and the reboot: the role's files as the first run wrote them,
    libvirt in place, the VM defined (and running, with ``running``)."""
    data = settings(hv, **extra)
    written = first_run(hv).files
    files = {p: written[p] for p in (render.MODPROBE_CONF, render.DRACUT_CONF)}
    responses = {
        **converged_libvirt(EL9, {}),
        STATE: vm_lines(data, defined=True, running=running),
        **hv.fresh(files=files, **hv.after),
    }
    return run_plan({"hypervisors": data}, responses)


def names(plan) -> list[str]:
    return [name.rpartition(" | ")[2] for name in plan.names()]


def hypervisor_ops(plan) -> list[str]:
    return [n for n in names(plan) if n.startswith(("VFIO", "libvirt", "ai:"))]


@pytest.mark.parametrize("kind", HOSTS)
def test_first_run_without_vfio_reboot_defines_the_vm_starts_nothing_and_ends_pending(kind, caplog):
    hv = HOSTS[kind]
    plan = first_run(hv)
    assert plan.error is None, plan.error
    done = names(plan)
    assert f"options vfio-pci ids={hv.ids}\n" in plan.files[render.MODPROBE_CONF]
    assert "8086:1901" not in plan.files[render.MODPROBE_CONF]  # the root port stays
    assert plan.find(r"^dracut -f --regenerate-all$")
    assert plan.find(r"^dnf install -y qemu-kvm libvirt")  # libvirt is set up in phase one
    assert "ai: define the domain" in done
    assert "ai: not started, its GPUs wait for the host's reboot (REBOOT PENDING)" in done
    assert not plan.find(r"virsh .* (start|autostart) ai") and not plan.find(r"reboot")
    assert done[-1].startswith("VFIO: REBOOT PENDING (vfio_reboot is False): kernel arguments")
    if kind == "amd":  # the host's use of the card, said: it is taken at boot, never live
        assert "0000:24:00.0 from driver nouveau, console framebuffer fb1 to vfio-pci" in done[-1]
    assert "then run `pyinfra inventory.py deploy.py` again" in caplog.text


@pytest.mark.parametrize("kind", HOSTS)
def test_the_run_after_the_reboot_starts_the_vm_and_changes_nothing_else(kind):
    plan = later_run(HOSTS[kind], running=False)
    assert plan.error is None, plan.error
    assert hypervisor_ops(plan) == ["ai: autostart", "ai: start"]
    (start,) = plan.find(r"virsh .* start ai$")
    assert "domstate ai | grep -qx running ||" in start


@pytest.mark.parametrize("kind", HOSTS)
def test_first_run_with_vfio_reboot_reboots_checks_and_then_starts_the_vm(kind, monkeypatch):
    hv = HOSTS[kind]
    written = first_run(hv).files
    files = {p: written[p] for p in (render.MODPROBE_CONF, render.DRACUT_CONF)}
    reads = after_reboot(monkeypatch, hv.fresh(files=files, **hv.after))
    plan = first_run(hv, vfio_reboot=True)
    assert plan.error is None, plan.error
    done = names(plan)
    reboot = next(i for i, n in enumerate(done) if n.startswith("reboot to apply"))
    check = done.index("check the kernel arguments and the vfio-pci binding after the reboot")
    libvirt = next(i for i, n in enumerate(done) if n.startswith("libvirt"))
    assert reboot < check < libvirt < done.index("ai: define the domain") < done.index("ai: start")
    assert not [n for n in done if "PENDING" in n]
    assert len(reads) == 2  # the preflight's, then the check's after the reboot


def test_intel_groups_refused_after_the_reboot_fail_the_run_before_any_vm_starts(
    monkeypatch, caplog
):
    # Only with the IOMMU on does the Z370 show its groups: here (constructed) the chipset's USB
    # controller is in the GPU's group too. The run stops at the check; nothing starts.
    hv = HOSTS["intel-root-port"]
    groups = Z370_GROUPS.replace("IOMMU group 3 00:14.0", "IOMMU group 2 00:14.0")
    after_reboot(monkeypatch, hv.fresh(**{**hv.after, "groups": groups}))
    with pytest.raises(Exception, match="No hosts remaining"):
        first_run(hv, vfio_reboot=True)
    assert "with the IOMMU on, the preflight refuses the GPUs" in caplog.text
    assert "shares IOMMU group 2 with 0000:00:14.0 USB controller" in caplog.text


@pytest.mark.parametrize("kind", HOSTS)
def test_a_converged_hypervisor_plans_nothing(kind):
    for reboot in (False, True):
        plan = later_run(HOSTS[kind], running=True, vfio_reboot=reboot)
        assert plan.error is None, plan.error
        assert hypervisor_ops(plan) == [], hypervisor_ops(plan)


def test_a_running_gpu_vm_is_not_restarted_while_the_reboot_is_pending():
    # The VM runs (its GPU already passed, say); a second GPU function's binding is pending and
    # the VM's memory changed: with restart_on_change, a restart would still take the card live.
    hv = HOSTS["amd"]
    old = settings(hv)
    data = settings(hv, guest_vm_restart_on_change=True)
    data["guest_vm_vms"] = [{**data["guest_vm_vms"][0], "memory_mb": 8192}]
    responses = {
        **converged_libvirt(EL9, {}),
        STATE: vm_lines(old, defined=True, running=True),
        **hv.fresh(),
    }
    plan = run_plan({"hypervisors": data}, responses)
    assert plan.error is None, plan.error
    assert "ai: define the domain" in names(plan)
    assert "ai: report that a restart is pending" in names(plan)
    assert not plan.find(r"virsh .* (shutdown|start) ai")
