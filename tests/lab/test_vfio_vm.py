"""Preflight and vfio on a real kernel: the lab's qemu VM `vfiohost` (lab/vm.py).

The VM is Debian 12 booting through OVMF and GRUB on a q35 machine with an emulated Intel
IOMMU; its stand-in GPU is a VGA adapter with an HD audio function in one slot (one IOMMU
group), beside the primary adapter, the boot VGA. The real `pyinfra` CLI runs deploy.py on it
(host data from the lab's inventory, vfio_only, so libvirt and a nested guest are left out).

One VM serves the whole module, in this order (TCG boots are slow on 2 shared cores):
refusals first (nothing may change), a run without reboot permission (the pending reboot is
reported, nothing reboots), a run allowed to reboot (it reboots, the stand-in's functions come up
on vfio-pci), a re-run (nothing changes, no reboot). The infra checks then run against the VM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from deploy_run import pyinfra_deploy

from lab import vm
from roles.preflight.facts import PROBE

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.lab

LAB_NAME = "test-vfio"
STANDIN, AUDIO, PRIMARY = vm.STANDIN, vm.STANDIN_AUDIO, vm.PRIMARY_VGA
ARGS = "intel_iommu=on iommu=pt"  # the VM's IOMMU is Intel's (its DMAR table)
MANAGED = ["/etc/default/grub.d/vfio.cfg", "/etc/modprobe.d/vfio.conf"]


@dataclass
class VfioHost:
    lab: Any  # LabInstance of tests/lab/conftest.py
    timings: dict
    runs: dict = field(default_factory=dict)

    def sh(self, command: str) -> str:
        return self.lab.ssh(vm.NAME, command).stdout

    def snapshot(self) -> dict:
        """What a deploy could change: boot, kernel arguments, drivers, the managed files."""
        out = self.sh(
            "cat /proc/sys/kernel/random/boot_id /proc/cmdline; lspci -nnk -s 00:05;"
            f"for f in {' '.join(MANAGED)} /etc/initramfs-tools/modules; do"
            ' echo "$f $(sha1sum < $f 2>/dev/null)"; done; ls -l --time-style=+%s /boot'
        )
        boot_id, cmdline, rest = out.split("\n", 2)
        return {"boot_id": boot_id, "cmdline": cmdline, "rest": rest}

    def qemu_pid(self) -> int:
        return json.loads((self.lab.dir / "vms" / vm.NAME / "state.json").read_text())["qemu"][
            "pid"
        ]

    def deploy(self, label: str, **data) -> object:
        """``pyinfra -y <lab inventory> deploy.py [--data key=value ...]``, as a user runs it."""
        args = [
            arg for key, value in data.items() for arg in ("--data", f"{key}={json.dumps(value)}")
        ]
        run = pyinfra_deploy(self.lab.inventory, *args)
        self.timings[f"vfio {label}"] = run.seconds
        self.runs[label] = run
        return run


@pytest.fixture(scope="module")
def vfiohost(lab_factory, lab_timings):
    if not Path(vm.OVMF_CODE).exists() or not _which("qemu-system-x86_64"):
        pytest.skip("the lab VM needs qemu-system-x86 and ovmf (scripts/bootstrap.sh)")
    started = time.monotonic()
    with lab_factory(LAB_NAME, vm.NAME) as lab:
        lab_timings["vfio VM up"] = time.monotonic() - started
        yield VfioHost(lab, lab_timings)


def _which(tool: str) -> bool:
    return any(Path(d, tool).exists() for d in os.environ.get("PATH", "").split(":"))


def test_the_stand_in_gpu_is_alone_in_its_iommu_group_and_the_primary_is_boot_vga(vfiohost):
    group = vfiohost.sh(f"readlink /sys/bus/pci/devices/{STANDIN}/iommu_group").strip()
    members = vfiohost.sh(f"ls /sys/kernel/iommu_groups/{group.rsplit('/', 1)[1]}/devices")
    assert members.split() == [STANDIN, AUDIO]
    assert vfiohost.sh(f"cat /sys/bus/pci/devices/{PRIMARY}/boot_vga").strip() == "1"
    assert vfiohost.sh(f"cat /sys/bus/pci/devices/{STANDIN}/boot_vga").strip() == "0"


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [
        (PRIMARY, f"vfio_gpus: {PRIMARY} VGA compatible controller [1234:1111] is the host's boot "
                  "VGA (boot_vga=1)"),
        ("0000:00:09.0", "vfio_gpus 0000:00:09.0: no PCI device at 0000:00:09.0"),
    ],
)  # fmt: skip
def test_preflight_refuses_and_nothing_changes(vfiohost, gpu, expected):
    before = vfiohost.snapshot()
    run = vfiohost.deploy(f"refused {gpu}", vfio_gpus=[gpu])
    assert run.returncode != 0
    # The preflight runs with every host's validation (roles/validate.py), before any host plans.
    assert "Invalid settings for host" in run.output and expected in run.output, run.tail()
    assert "--> Starting operation" not in run.output  # refused before any operation ran
    assert vfiohost.snapshot() == before


def test_without_permission_the_run_configures_and_reports_the_pending_reboot(vfiohost):
    before = vfiohost.snapshot()
    run = vfiohost.deploy("fresh, no reboot")
    assert run.ok, run.tail()
    assert "REBOOT PENDING" in run.output
    assert f"kernel arguments {ARGS}" in run.output
    # nothing taken live: the stand-in stays on its drivers until the reboot; the run says
    # what to do next, with its own command line
    assert "No VM with GPUs was started" in run.output
    assert "Next: reboot the host" in run.output and "deploy.py" in run.output
    after = vfiohost.snapshot()
    assert after["boot_id"] == before["boot_id"] and after["cmdline"] == before["cmdline"]
    assert "Kernel driver in use: snd_hda_intel" in after["rest"]  # still the host's audio
    assert ARGS in vfiohost.sh("grep -E '^[[:space:]]*linux' /boot/grub/grub.cfg")
    conf = vfiohost.sh("cat /etc/modprobe.d/vfio.conf")
    assert "options vfio-pci ids=1002:5046,8086:293e\n" in conf
    # the rebuilt initramfs carries vfio-pci and its options
    listing = vfiohost.sh("lsinitramfs /boot/initrd.img-$(uname -r)")
    assert "etc/modprobe.d/vfio.conf" in listing and "vfio-pci.ko" in listing


def test_allowed_to_reboot_the_run_reboots_and_binds_both_functions(vfiohost):
    before, pid = vfiohost.snapshot(), vfiohost.qemu_pid()
    run = vfiohost.deploy("reboot allowed", vfio_reboot=True)
    assert run.ok, run.tail()
    after = vfiohost.snapshot()
    assert after["boot_id"] != before["boot_id"]
    assert vfiohost.qemu_pid() == pid  # a guest reboot, the same qemu process
    assert ARGS in after["cmdline"]
    lspci = vfiohost.sh("lspci -nnk -s 00:05")
    assert lspci.count("Kernel driver in use: vfio-pci") == 2, lspci
    group = vfiohost.sh(f"readlink /sys/bus/pci/devices/{STANDIN}/iommu_group").rsplit("/", 1)[1]
    assert vfiohost.sh(f"ls /dev/vfio/{group.strip()}").strip()
    assert "REBOOT PENDING" not in run.output
    assert "VFIO: GPU passthrough on the host | check the kernel arguments and the vfio-pci " in (
        run.output
    )


def test_a_second_run_changes_nothing_and_does_not_reboot(vfiohost):
    before = vfiohost.snapshot()
    run = vfiohost.deploy("re-run", vfio_reboot=True)
    assert run.ok, run.tail()
    assert run.changed_operations() == []
    assert vfiohost.snapshot() == before
    # Kept beside the lab's state: the converged host's read, for plan-test fixtures.
    (vfiohost.lab.dir / "vfio-host.converged.txt").write_text(vfiohost.sh(PROBE))


def test_the_infra_checks_pass_on_the_vm(vfiohost):
    checks = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*checks, "tests/infra/test_vfio.py"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "AICODER_INVENTORY": str(vfiohost.lab.inventory)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert "skipped" not in result.stdout.splitlines()[-1], result.stdout[-1500:]
