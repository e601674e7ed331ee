"""The preflight through the real deploy.py on recorded EL9 hosts: every refusal stops the deploy
before any operation, with a message saying what is wrong and what to do."""

import re

import pytest
from harness import fixture, run_plan
from vfio_facts import (
    AMD_CPU,
    GT710,
    INTEL_CPU,
    NO_IOMMU_ACPI,
    NO_VIRT_CPU,
    VFIO_READ,
    X570_GROUPS,
    el9_fresh_amd,
    host,
)

from roles.common.settings import SettingsError

HV = {"vfio_only": True, "firewall_allowed_networks": ["192.168.1.0/24"]}


def refused(responses, **data) -> str:
    """The preflight's message; fails unless the deploy stopped before any operation (the
    preflight runs with every host's validation, roles/validate.py)."""
    plan = run_plan({"hypervisors": {**HV, **data}}, responses)
    assert isinstance(plan.error, SettingsError), plan.error
    assert plan.changed == []
    message = str(plan.error)
    assert "nothing was changed" in message
    return message


def test_a_clean_gpu_passes_with_every_function_of_its_group():
    plan = run_plan({"hypervisors": {**HV, "vfio_gpus": [GT710]}}, el9_fresh_amd())
    assert plan.error is None, plan.error
    assert "options vfio-pci ids=10de:128b,10de:0e0f\n" in plan.files["/etc/modprobe.d/vfio.conf"]


ROOT_PORT_HOSTS = [
    ("iommu-groups.shared-root-port.gt1030.ubuntu-6.8.txt", "10de:1d01,10de:0fb8"),
    ("iommu-groups.shared-root-port.rtx3070ti.partial.txt", "10de:2482,10de:228b"),
]


@pytest.mark.parametrize(("groups", "ids"), ROOT_PORT_HOSTS)
def test_gpu_sharing_its_group_with_the_cpu_root_port_is_accepted(groups, ids):
    # The usual Intel desktop: the x16 root port 00:01.0 (no ACS) is in the GPU's group. It stays
    # with the host: not in ids=, not waited for.
    found = host(
        cpuinfo=INTEL_CPU,
        cmdline=fixture("cmdline.rhel-9.0-rt.intel-iommu-on.txt"),
        groups=fixture(groups),
    )
    plan = run_plan({"hypervisors": {**HV, "vfio_gpus": ["0000:01:00.0"]}}, found)
    assert plan.error is None, plan.error
    modprobe = plan.files["/etc/modprobe.d/vfio.conf"]
    assert f"options vfio-pci ids={ids}\n" in modprobe and "8086:1901" not in modprobe
    pending = [n for n in plan.names() if "REBOOT PENDING" in n]
    assert pending and "0000:00:01.0" not in pending[0] and "0000:01:00.1 from" in pending[0]


def test_a_vm_given_the_root_port_is_refused():
    found = host(
        cpuinfo=INTEL_CPU,
        cmdline=fixture("cmdline.rhel-9.0-rt.intel-iommu-on.txt"),
        groups=fixture(ROOT_PORT_HOSTS[0][0]),
    )
    vms = [{"name": "ai", "gpus": ["0000:01:00.0", "0000:00:01.0"]}]
    message = refused(found, vfio_gpus=["0000:01:00.0"], guest_vm_vms=vms)
    assert "gets 0000:00:01.0, which vfio_gpus does not pass through" in message


def test_an_endpoint_device_in_the_gpus_group_is_still_refused():
    # Constructed from the GT 1030 host: its chipset USB controller moved into the GPU's group.
    groups = fixture(ROOT_PORT_HOSTS[0][0]).replace(
        "IOMMU group 3 00:14.0", "IOMMU group 2 00:14.0"
    )
    found = host(
        cpuinfo=INTEL_CPU, cmdline=fixture("cmdline.rhel-9.0-rt.intel-iommu-on.txt"), groups=groups
    )
    message = refused(found, vfio_gpus=["0000:01:00.0"])
    assert (
        "0000:01:00.0 shares IOMMU group 2 with 0000:00:14.0 USB controller [8086:a2af]" in message
    )
    assert "0000:00:01.0" not in message  # the bridge is not the problem
    assert "Move the card to a slot" in message


def test_the_host_boot_vga_is_refused():
    boot_vga = "/sys/bus/pci/devices/0000:24:00.0/boot_vga:1\n"
    message = refused(el9_fresh_amd(boot_vga=boot_vga), vfio_gpus=[GT710])
    assert f"{GT710} VGA compatible controller [10de:128b] is the host's boot VGA" in message
    assert "Pass a second GPU" in message


def test_a_missing_device_is_refused_naming_the_gpus_there_are():
    message = refused(el9_fresh_amd(), vfio_gpus=["0000:09:00.0", "10de:2204"])
    assert "vfio_gpus 0000:09:00.0: no PCI device at 0000:09:00.0" in message
    assert "vfio_gpus 10de:2204: no PCI device with ids 10de:2204" in message
    assert "0000:24:00.0 VGA compatible controller [10de:128b]" in message  # what there is


def test_a_function_that_is_not_a_gpu_is_refused():
    message = refused(el9_fresh_amd(), vfio_gpus=["0000:24:00.1"])
    assert "Audio device [10de:0e0f] is not a GPU" in message


def test_intel_iommu_off_although_asked_for_is_refused():
    # intel_iommu=on is on the command line, yet no IOMMU groups: VT-d is off in the firmware.
    found = host(
        cpuinfo=INTEL_CPU,
        cmdline=fixture("cmdline.rhel-9.0-rt.intel-iommu-on.txt"),
        groups="",
        lspci=fixture("lspci-nnk.gt710-vfio.x570.ubuntu-20.04.txt"),
    )
    message = refused(found, vfio_gpus=[GT710])
    assert "IOMMU: not active" in message and "VT-d" in message


def test_intel_iommu_missing_from_the_firmware_tables_is_refused():
    found = host(
        cpuinfo=INTEL_CPU,
        cmdline=fixture("cmdline.rocky-9.4.no-iommu.txt"),
        acpi=NO_IOMMU_ACPI,
        groups="",
        lspci=fixture("lspci-nnk.gt710-vfio.x570.ubuntu-20.04.txt"),
    )
    message = refused(found, vfio_gpus=[GT710])
    assert "the firmware describes none (no DMAR or IVRS ACPI table)" in message


def test_amd_iommu_off_is_refused():
    # AMD-Vi is on by default: no groups means the firmware has it off.
    found = el9_fresh_amd(groups="", lspci=fixture("lspci-nnk.gt710-vfio.x570.ubuntu-20.04.txt"))
    message = refused(found, vfio_gpus=[GT710])
    assert "IOMMU: not active" in message and "AMD-Vi" in message


def test_amd_iommu_turned_off_on_the_command_line_is_refused():
    found = el9_fresh_amd(groups="", cmdline="BOOT_IMAGE=x ro amd_iommu=off")
    message = refused(found, vfio_gpus=[GT710])
    assert "has amd_iommu=off, which keeps it off; remove it" in message


def test_no_virtualization_extensions_are_refused():
    message = refused(el9_fresh_amd(cpuinfo=NO_VIRT_CPU), vfio_gpus=[GT710])
    assert "neither vmx nor svm" in message


def twin_3090s(os_release: str = "os-release.rocky-9.4.txt") -> dict:
    """Two RTX 3090s (recorded lspci, both on nvidia), each alone in its IOMMU group (the group
    lines are constructed: the source printed none), the IOMMU on."""
    groups = "\n".join(
        f"IOMMU Group {20 + i} 0000:{bus}:00.{fn}"
        for i, bus in enumerate(("05", "0a"))
        for fn in (0, 1)
    )
    return host(
        os_release,
        cpuinfo=INTEL_CPU,
        cmdline=fixture("cmdline.rhel-9.0-rt.intel-iommu-on.txt"),
        lspci=fixture("lspci-nnk-grep-A3.nvidia-3090x2.nvidia-driver.partial.txt"),
        groups=groups,
    )


def test_a_twin_card_with_the_same_ids_is_bound_by_pci_address():
    # vfio-pci's ids= would take the host's own 3090 too: the passed one goes by driver_override.
    plan = run_plan({"hypervisors": {**HV, "vfio_gpus": ["0000:05:00.0"]}}, twin_3090s())
    assert plan.error is None, plan.error
    modprobe = plan.files["/etc/modprobe.d/vfio.conf"]
    assert "ids=" not in modprobe
    assert "install vfio-pci /usr/local/sbin/aicoder-vfio-override $CMDLINE_OPTS\n" in modprobe
    script = plan.files["/usr/local/sbin/aicoder-vfio-override"]
    assert "for dev in 0000:05:00.0 0000:05:00.1; do" in script and "0a:00" not in script
    assert "/usr/local/sbin/aicoder-vfio-override" in plan.files["/etc/dracut.conf.d/vfio.conf"]
    assert plan.find(r"^chmod 755 /usr/local/sbin/aicoder-vfio-override$")
    assert plan.find(r"^dracut -f --regenerate-all$")


def test_on_debian_the_override_script_goes_into_the_initramfs_by_a_hook():
    plan = run_plan(
        {"hypervisors": {**HV, "vfio_gpus": ["0000:05:00.0"]}},
        twin_3090s("os-release.debian-12.txt"),
    )
    assert plan.error is None, plan.error
    hook = plan.files["/etc/initramfs-tools/hooks/aicoder-vfio-override"]
    assert "copy_file script /usr/local/sbin/aicoder-vfio-override" in hook
    assert plan.find(r"^chmod 755 /etc/initramfs-tools/hooks/aicoder-vfio-override$")
    assert plan.find(r"^update-initramfs -u -k all$")


def test_both_twin_cards_by_ids_need_no_override():
    plan = run_plan({"hypervisors": {**HV, "vfio_gpus": ["10de:2204"]}}, twin_3090s())
    assert plan.error is None, plan.error
    assert "options vfio-pci ids=10de:2204,10de:1aef\n" in plan.files["/etc/modprobe.d/vfio.conf"]
    assert "/usr/local/sbin/aicoder-vfio-override" not in plan.files
    # A script left from binding one of them by address goes: nothing would run it any more.
    left = twin_3090s()
    left[VFIO_READ] = (
        "file 755 root:root 0 /usr/local/sbin/aicoder-vfio-override\n" + left[VFIO_READ]
    )
    left[re.compile(r"stat -c .* /usr/local/sbin/aicoder-vfio-override 2>")] = (
        "user=root group=root mode=-rwxr-xr-x atime=0 mtime=0 ctime=0 size=400 "
        "'/usr/local/sbin/aicoder-vfio-override'"
    )  # pyinfra's File fact, for files.file
    plan = run_plan({"hypervisors": {**HV, "vfio_gpus": ["10de:2204"]}}, left)
    assert plan.find(r"^rm -f /usr/local/sbin/aicoder-vfio-override$"), plan.names()


def test_a_gpu_given_to_two_vms_is_refused():
    vms = [
        {"name": "ai-one", "gpus": [GT710]},
        {"name": "ai-two", "gpus": ["0000:24:00.1"]},  # the same card's audio function
    ]
    message = refused(el9_fresh_amd(), vfio_gpus=[GT710], guest_vm_vms=vms)
    assert "guest VM 'ai-two': gets 0000:24:00.1, but its GPU is given to VM 'ai-one'" in message


def test_a_vm_device_that_vfio_gpus_does_not_isolate_is_refused():
    vms = [{"name": "ai", "gpus": ["0000:2d:00.0"]}]
    message = refused(el9_fresh_amd(), vfio_gpus=[GT710], guest_vm_vms=vms)
    assert "guest VM 'ai': gets 0000:2d:00.0, which vfio_gpus does not pass through" in message


def test_every_problem_is_listed_at_once():
    found = el9_fresh_amd(cpuinfo=NO_VIRT_CPU)
    message = refused(found, vfio_gpus=["0000:09:00.0", "0000:24:00.1"])
    assert message.count("\n  - ") == 3


def test_without_gpus_the_host_is_not_read_at_all():
    plan = run_plan({"hypervisors": HV}, host(cpuinfo=NO_VIRT_CPU, groups=X570_GROUPS))
    assert plan.error is None, plan.error
    assert not [name for name, _ in plan.changed if name.startswith("VFIO")]


def test_amd_groups_with_amd_cpu_read_from_the_lab_capture():
    # The lab VM's CPU (qemu TCG, AuthenticAMD with svm) passes the virtualization check.
    plan = run_plan({"hypervisors": {**HV, "vfio_gpus": [GT710]}}, el9_fresh_amd(cpuinfo=AMD_CPU))
    assert plan.error is None, plan.error
