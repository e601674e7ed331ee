"""The hypervisor roles on a real lab machine: libvirt, the bridge, and a guest VM really booted.

The lab machine `hv` (its own lab instance, so the shared lab stays light) is the hypervisor.
It has no usable /dev/kvm, so the VM is emulated (domain type qemu, settings in lab/overrides.py)
and is created from the lab's own cloud image of its release (Debian 13 here; lab/cloud_image.py)
in place of the official one, which cannot be downloaded here. The test reaches the VM over SSH
through the hv machine, checks what cloud-init applied, re-runs the deploy (nothing may change,
the disk must be the same file and a marker written inside the VM must survive), then restarts
the hv machine and waits for the VM to come back by itself. A VM boot under TCG takes a minute
or two.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deploy_run import pyinfra_deploy

from lab import network
from lab.overrides import OVERRIDES
from roles.common.platform import DEFAULT_GUEST, RELEASES

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.lab

LAB_NAME = "test-hv"
VM = OVERRIDES["hypervisors"]["guest_vm_vms"][0]
VM_IP = VM["address"].split("/")[0]
DISK = f"/var/lib/libvirt/images/{VM['name']}.qcow2"
MARKER = "/var/tmp/aicoder-lab-marker"
VM_BOOT_TIMEOUT = 600  # TCG on 2 shared cores; a boot with cloud-init's first run takes 1-3 min


@dataclass
class Hypervisor:
    lab: Any  # LabInstance of tests/lab/conftest.py
    first: Any  # DeployRun of tests/lab/conftest.py
    second: Any = None
    before_second: dict | None = None
    host_links_before: str = ""

    def sh(self, command: str, check: bool = True):
        return self.lab.ssh("hv", command, check=check)

    def vm(self, command: str, check: bool = True, timeout: float = 60):
        """Run ``command`` in the VM as the admin user, over SSH through the hv machine."""
        key = str(self.lab.config.key)
        opts = []
        for option in ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null",
                       "LogLevel=ERROR", "BatchMode=yes", "ConnectTimeout=10"):  # fmt: skip
            opts += ["-o", option]
        hv = self.lab.machine_state("hv")["ip"]
        jump = " ".join(["ssh", "-i", key, *opts, "-W", "%h:%p", f"aicoder@{hv}"])
        cmd = ["ssh", "-i", key, *opts, "-o", f"ProxyCommand={jump}", f"aicoder@{VM_IP}", command]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"VM: {command!r} exited {result.returncode}:\n{result.stderr}")
        return result

    def wait_for_vm(self) -> float:
        """Seconds until the VM answers over SSH (fails after VM_BOOT_TIMEOUT)."""
        started = time.monotonic()
        while time.monotonic() - started < VM_BOOT_TIMEOUT:
            try:
                if (
                    self.vm("cloud-init status --wait >/dev/null; true", check=False).returncode
                    == 0
                ):
                    return time.monotonic() - started
            except subprocess.TimeoutExpired:
                pass
            time.sleep(5)
        console = self.sh(f"virsh -c qemu:///system domstate {VM['name']}", check=False).stdout
        pytest.fail(f"the VM did not answer SSH within {VM_BOOT_TIMEOUT} s (state: {console})")

    def disk_identity(self) -> dict:
        inode, size = self.sh(f"stat -c '%i %s' {DISK}").stdout.split()
        domid = self.sh(f"virsh -c qemu:///system domid {VM['name']}").stdout.strip()
        return {"inode": int(inode), "size": int(size), "domid": domid}


@pytest.fixture(scope="module")
def hv(lab_factory, lab_timings):
    host_links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    with lab_factory(LAB_NAME, "hv") as lab:
        first = pyinfra_deploy(lab.inventory)
        lab_timings["hv deploy"] = first.seconds
        hyper = Hypervisor(lab, first, host_links_before=host_links)
        if first.ok:
            lab_timings["hv VM first boot to SSH"] = hyper.wait_for_vm()
            hyper.vm(f"echo {secrets.token_hex(8)} > {MARKER}; sync")
            marker = hyper.vm(f"cat {MARKER}").stdout
            hyper.before_second = {**hyper.disk_identity(), "marker": marker}
            hyper.second = pyinfra_deploy(lab.inventory)
            lab_timings["hv re-deploy"] = hyper.second.seconds
        yield hyper


@pytest.fixture(scope="module")
def deployed_hv(hv):
    if not hv.first.ok:
        pytest.fail(f"the deploy to the hv machine failed (exit {hv.first.returncode}):\n"
                    f"{hv.first.tail(120)}")  # fmt: skip
    return hv


def test_virtualization_stack_is_installed_and_running(deployed_hv):
    deployed_hv.sh("dpkg -s qemu-system-x86 libvirt-daemon-system ovmf virtinst xorriso >/dev/null")
    assert deployed_hv.sh("systemctl is-enabled libvirtd.service").stdout.strip() == "enabled"
    assert deployed_hv.sh("systemctl is-active libvirtd.socket").stdout.strip() == "active"
    guests = deployed_hv.sh("cat /etc/default/libvirt-guests").stdout
    assert "ON_SHUTDOWN=shutdown" in guests


def test_bridge_is_inside_the_machine_only(deployed_hv):
    inside = deployed_hv.sh("ip -4 -br addr show dev br0").stdout
    assert "10.77.0.1/24" in inside, inside
    # The VM's tap device is a port of the bridge.
    assert deployed_hv.sh("ls /sys/class/net/br0/brif").stdout.split()
    host_links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    names = lambda text: {line.split()[0].split("@")[0] for line in text.splitlines()}  # noqa: E731
    assert "br0" not in names(host_links) - names(deployed_hv.host_links_before)


def test_the_bridge_took_over_the_lan_uplink_with_its_static_address(deployed_hv):
    """lan0 (the LAN uplink, statically addressed in ifupdown; SSH uses another link) is now a
    port of br0, which carries its address; the LAN peer answers through the bridge."""
    sh = deployed_hv.sh
    assert "lan0" in sh("ls /sys/class/net/br0/brif").stdout.split()
    assert "inet " not in sh("ip -4 -o addr show dev lan0").stdout
    assert "10.77.0.1/24" in sh("ip -4 -br addr show dev br0").stdout
    assert "#moved-to-bridge# iface lan0 inet static" in sh("cat /etc/network/interfaces").stdout
    assert sh(f"ping -c 1 -W 2 -I br0 {network.LAN_PEER}", check=False).returncode == 0


def test_the_host_report_changes_nothing_and_describes_the_machine(deployed_hv, lab_timings):
    """`pyinfra <inventory> report.py` (README) on the hv machine: no operation, and the
    sections a user shares; its output is kept for the record (.lab/hv-report.txt)."""
    run = pyinfra_deploy(deployed_hv.lab.inventory, deploy_file="report.py")
    lab_timings["hv host report"] = run.seconds
    assert run.ok, run.tail(60)
    assert run.changed_operations() == [], run.tail(60)
    for section in ("== IOMMU groups", "== kernel arguments", "== network and the bridge",
                    "== SELinux", "== firewall"):  # fmt: skip
        assert section in run.output, run.tail(80)
    assert "lan0" in run.output and "would bridge br0 (lan0): static 10.77.0.1/24" in run.output
    (REPO / ".lab").mkdir(exist_ok=True)
    (REPO / ".lab" / "hv-report.txt").write_text(run.output)


def test_vm_is_defined_from_the_settings_autostarted_and_running(deployed_hv):
    info = deployed_hv.sh(f"virsh -c qemu:///system dominfo {VM['name']}").stdout
    assert re.search(r"State:\s+running", info) and re.search(r"Autostart:\s+enable", info), info
    xml = deployed_hv.sh(f"virsh -c qemu:///system dumpxml --inactive {VM['name']}").stdout
    assert "<domain type='qemu'" in xml and "<boot order='1'/>" in xml
    assert "<vcpupin vcpu='0' cpuset='1'/>" in xml
    assert "firmware='efi'" in xml and "<source bridge='br0'/>" in xml


def test_cloud_init_applied_hostname_user_and_key(deployed_hv):
    vm = deployed_hv.vm
    assert vm("hostname").stdout.strip() == VM["hostname"]
    assert vm("id -un").stdout.strip() == "aicoder"
    keys = vm("cat ~/.ssh/authorized_keys").stdout
    assert deployed_hv.lab.config.key.with_suffix(".pub").read_text().split()[1] in keys
    assert vm("sudo -n true").returncode == 0
    assert VM["address"] in vm("ip -4 -br addr").stdout
    status = vm("cloud-init status --long", check=False).stdout
    assert "status: done" in status, status


def test_the_vm_runs_the_release_its_settings_name(deployed_hv):
    """The lab's VM is Debian 13 (lab/overrides.py), made from the Debian 13 image on a Debian 12
    hypervisor: the guest_vm role picks each VM's image by its release."""
    release = RELEASES[VM.get("release", DEFAULT_GUEST.key)]
    version = deployed_hv.vm(". /etc/os-release; echo $VERSION_ID").stdout.strip()
    assert version == str(release.version)
    assert deployed_hv.sh(". /etc/os-release; echo $VERSION_ID").stdout.strip() == "12"
    cached = deployed_hv.sh("ls /var/lib/libvirt/images/cache").stdout.split()
    assert cached == [release.lab_cloud_image], cached


def test_second_deploy_changes_nothing_and_keeps_the_disk(deployed_hv):
    second = deployed_hv.second
    assert second is not None and second.ok, second and second.tail(120)
    assert second.changed_operations() == [], second.tail(120)
    before = deployed_hv.before_second
    after = deployed_hv.disk_identity()
    # The same file (not re-created from the image), never smaller, and the VM not restarted.
    assert after["inode"] == before["inode"] and after["size"] >= before["size"]
    assert after["domid"] == before["domid"]
    assert deployed_hv.vm(f"cat {MARKER}").stdout == before["marker"]


def test_infra_checks_pass_on_the_hv_machine(deployed_hv):
    """The users' checks of these roles (tests/infra/test_libvirt.py) against the hv machine."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/infra/test_libvirt.py", "-p", "no:cacheprovider",
         "-q", "-rs"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "AICODER_INVENTORY": str(deployed_hv.lab.inventory)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout), result.stdout


def test_vm_comes_back_by_itself_after_the_host_restarts(deployed_hv, lab_timings):
    before = deployed_hv.disk_identity()
    started = time.monotonic()
    deployed_hv.lab.cli("restart", "hv")
    lab_timings["hv restart"] = time.monotonic() - started
    lab_timings["hv VM back to SSH after restart"] = deployed_hv.wait_for_vm()
    info = deployed_hv.sh(f"virsh -c qemu:///system domstate {VM['name']}").stdout
    assert info.strip() == "running"
    assert deployed_hv.disk_identity()["inode"] == before["inode"]
    assert deployed_hv.vm(f"cat {MARKER}").stdout == deployed_hv.before_second["marker"]
    assert "10.77.0.1/24" in deployed_hv.sh("ip -4 -br addr show dev br0").stdout


def test_a_changed_vm_is_restarted_cleanly_when_allowed(deployed_hv, lab_timings, tmp_path):
    """More memory for the running VM with guest_vm_restart_on_change: the deploy redefines it,
    shuts it down through ACPI and starts it; the guest comes back with the memory and its
    disk, and the next run changes nothing. (The inventory is the lab's, with those two values
    changed, as a user edits group_data.)"""
    memory = VM["memory_mb"] + 256
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        deployed_hv.lab.inventory.read_text()
        + "\nfor _name, _data in hypervisors:\n"
        + f"    _data['guest_vm_vms'] = [{{**_data['guest_vm_vms'][0], 'memory_mb': {memory}}}]\n"
        + "    _data['guest_vm_restart_on_change'] = True\n"
    )
    mem_kib = "sed -n 's/^MemTotal: *\\([0-9]*\\) kB$/\\1/p' /proc/meminfo"
    before = int(deployed_hv.vm(mem_kib).stdout)

    run = pyinfra_deploy(inventory)
    assert run.ok, run.tail(120)
    restart = f"{VM['name']}: restart for the new definition (guest_vm_restart_on_change)"
    assert any(restart in name for name in run.changed_operations()), run.tail(120)
    lab_timings["hv VM redefined and restarted"] = run.seconds
    lab_timings["hv VM back to SSH after its restart"] = deployed_hv.wait_for_vm()
    after = int(deployed_hv.vm(mem_kib).stdout)
    assert after - before > 200 * 1024, (before, after)  # 256 MiB more, less what the kernel keeps
    assert deployed_hv.vm(f"cat {MARKER}").stdout == deployed_hv.before_second["marker"]

    again = pyinfra_deploy(inventory)
    assert again.ok and again.changed_operations() == [], again.tail(120)


def _with(inventory_text: str, **data) -> str:
    """The lab's inventory with ``data`` set on its hypervisor, as a user edits group_data."""
    lines = "".join(f"    _data[{k!r}] = {v!r}\n" for k, v in data.items())
    return inventory_text + "\nfor _name, _data in hypervisors:\n" + lines


def test_a_bad_bridge_change_rolls_back_by_itself(deployed_hv, lab_timings, tmp_path):
    """A static bridge address on the wrong network: the LAN peer no longer answers through the
    bridge, so the change is undone by itself (files and addresses as before) and the deploy
    fails saying so; the VM keeps running and reachable."""
    files = "sha1sum /etc/network/interfaces /etc/network/interfaces.d/br0"
    before = deployed_hv.sh(files).stdout
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        _with(deployed_hv.lab.inventory.read_text(), libvirt_bridge_address="10.99.0.1/24")
    )
    run = pyinfra_deploy(inventory)
    lab_timings["hv bad bridge change rolled back"] = run.seconds
    assert not run.ok, run.tail(60)
    assert f"rolled back: br0 did not reach {network.LAN_PEER}" in run.output, run.tail(60)
    assert deployed_hv.sh(files).stdout == before
    assert "10.77.0.1/24" in deployed_hv.sh("ip -4 -br addr show dev br0").stdout
    assert "lan0" in deployed_hv.sh("ls /sys/class/net/br0/brif").stdout.split()
    assert deployed_hv.sh(f"ping -c 1 -W 2 {network.LAN_PEER}", check=False).returncode == 0
    assert deployed_hv.vm("true").returncode == 0


def test_an_unconfirmed_bridge_change_rolls_back_by_itself(deployed_hv, lab_timings):
    """The deploy never comes back to confirm (as when a change cuts it off): the guarded step
    (roles/libvirt/guard.py, as the libvirt role builds it on Debian) undoes the change by
    itself once its time is up, and the VM's tap device returns to the bridge."""
    from roles.libvirt import guard

    interfaces = ["/etc/network/interfaces", "/etc/network/interfaces.d/br0"]
    save, rollback = guard.ifupdown_backup(interfaces, "br0", "")
    taps = "taps=$(ls /sys/class/net/br0/brif | grep '^vnet')"
    reattach = "for t in $taps; do ip link set $t master br0; done"
    # The change: the bridge loses the host's LAN address. No check target: it "succeeds".
    script = guard.apply_script(
        "br0", save, [taps, "ip addr flush dev br0"], [*rollback, reattach], "", False, 30
    )
    started = time.monotonic()
    deployed_hv.sh(guard.run_detached("br0", script))
    assert "10.77.0.1/24" not in deployed_hv.sh("ip -4 -br addr show dev br0").stdout
    status = ""
    while time.monotonic() - started < 120 and "rolled back" not in status:
        time.sleep(2)
        status = deployed_hv.sh(f"cat {guard.STATE_DIR}/status", check=False).stdout
    lab_timings["hv unconfirmed bridge change rolled back"] = time.monotonic() - started
    assert "rolled back: not confirmed within 30 s" in status, status
    assert "10.77.0.1/24" in deployed_hv.sh("ip -4 -br addr show dev br0").stdout
    ports = deployed_hv.sh("ls /sys/class/net/br0/brif").stdout.split()
    assert "lan0" in ports and any(p.startswith("vnet") for p in ports), ports
    assert deployed_hv.vm("true").returncode == 0
