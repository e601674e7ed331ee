"""Plan tests of the guest_vm role: the real deploy through the fake connector.

The guest_vm state fact's answers are built in its own format (see tests/unit for a recording
from the lab's hv machine); a converged host, where every VM exists as configured, plans nothing.
"""

from __future__ import annotations

import re

from harness import fixture, os_release_response, run_plan
from test_libvirt_plan import DEBIAN, EL9, LAN, converged_dir, converged_libvirt, own
from vfio_facts import isolated_gpus

from roles.guest_vm import render
from roles.guest_vm.render import GIB, STATE_DIR, VmPaths
from roles.guest_vm.settings import GuestVmSettings

STATE = re.compile(r"echo '\[cpus\]'")
IMAGES = "/var/lib/libvirt/images"
CACHE = f"{IMAGES}/cache/debian-12-generic-amd64.qcow2"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH7 me@laptop"
VM = {"name": "ai", "vcpus": 2, "memory_mb": 4096, "disk_gb": 32, "gpus": ["0000:01:00.0"]}


def host_state(data: dict, *, exists: bool, cpus: str = "0-7", kvm: bool = True, **over) -> str:
    """GuestVmState's output for a host with 8 CPUs and every GPU of ``data``; with ``exists``
    each VM is defined, running and autostarted from exactly these settings."""
    settings, problems = GuestVmSettings.problems_in(data)
    assert not problems, problems
    vms = settings.machines()
    lines = ["[cpus]", cpus, "[kvm]", *(["present"] if kvm else []), "[hugepages]", "0"]
    lines += ["[pci]", *sorted({g for vm in vms for g in vm.gpus})]
    if exists:
        paths = {vm.name: VmPaths.of(vm, IMAGES) for vm in vms}
        names = [vm.name for vm in vms]
        lines += ["[all]", *names, "[running]", *names, "[autostart]", *names, "[uuids]"]
        lines += [f"{vm.name} {over.get('uuid', vm.uuid)}" for vm in vms]
        lines += ["[files]"]
        for i, p in enumerate(paths.values()):
            lines += [f"{p.disk}|{1000 + i}|1073741824", f"{p.seed}|{2000 + i}|374784"]
        lines += ["[disks]"]
        lines += [f"{paths[vm.name].disk}|{over.get('disk', vm.disk_gb * GIB)}" for vm in vms]
        lines += ["[sums]"]
        for vm in vms:
            xml = render.domain_xml(
                vm, settings.domain_type, "br0", paths[vm.name], settings.hugepage_size
            )
            seed = render.digest(*render.seed_files(vm, "aicoder", [KEY]).values())
            lines += [f"{render.digest(xml)}  {paths[vm.name].xml}"]
            lines += [f"{render.digest(seed)}  {paths[vm.name].seed_sum}"]
    return "\n".join(lines)


def plan_for(vms: list[dict], *, state: str | None = None, os_release=DEBIAN, **data):
    """Plan the deploy for ``vms`` on a host where libvirt and, for the VMs' GPUs, the vfio role
    (tests/plan/vfio_facts.py) have converged."""
    gpus = [gpu for vm in vms for gpu in vm.get("gpus", [])]
    vfio_data, vfio_responses = isolated_gpus(gpus, os_release) if gpus else ({}, {})
    data = {"guest_vm_vms": vms, "base_admin_ssh_keys": [KEY], **vfio_data, **data}
    state = state if state is not None else host_state(data, exists=False)
    responses = {STATE: state, **converged_dir(STATE_DIR, "drwx------"), **vfio_responses}
    responses.update(converged_libvirt(os_release, {}))
    responses.update(os_release_response(fixture(os_release)))
    return run_plan({"hypervisors": {**LAN, **data}}, responses)


def test_fresh_host_downloads_the_checked_image_once_and_creates_the_vm():
    plan = plan_for([VM])
    assert plan.error is None, plan.error
    (download,) = plan.find(r"curl .*debian-12-generic-amd64.qcow2")
    assert "SHA512SUMS" in download and "sha512sum -c" in download
    assert download.index("sha512sum -c") < download.index(f"mv {CACHE}.part {CACHE}")
    (disk,) = plan.find(r"qemu-img resize")
    assert disk.startswith(f"test -e {IMAGES}/ai.qcow2 && exit 0; ") and "mv -n" in disk
    assert " 32G " in disk
    (iso,) = plan.find(r"xorriso")
    assert "-volid cidata" in iso and "user-data meta-data network-config" in iso
    user_data = plan.files["/etc/aicoder/vms/ai.cloud-init/user-data"]
    assert "hostname: ai" in user_data and KEY in user_data and "name: aicoder" in user_data
    xml = plan.files["/etc/aicoder/vms/ai.xml.new"]
    assert "<domain type='kvm'>" in xml and "bus='0x01'" in xml and "<source bridge='br0'/>" in xml
    names = own(plan)
    order = [n.split(" | ")[-1] for n in names]
    assert order[-3:] == ["ai: define the domain", "ai: autostart", "ai: start"], order


def test_a_given_checksum_and_a_file_url_need_no_sums_file():
    plan = plan_for(
        [VM],
        guest_vm_image_url="file:///srv/mirror/debian-12-generic-amd64.qcow2",
        guest_vm_image_sha512="ab" * 64,
    )
    (download,) = plan.find(r"curl .*file:///srv/mirror/")
    assert f"sum={'ab' * 64}" in download and "SHA512SUMS" not in download


def test_converged_host_plans_nothing():
    for os_release in (DEBIAN, EL9):
        vms = [VM, {"name": "b", "vcpus": 2, "cpu_pins": [6, 7], "gpus": ["0000:41:00.0"]}]
        data = {"guest_vm_vms": vms, "base_admin_ssh_keys": [KEY]}
        plan = plan_for(vms, state=host_state(data, exists=True), os_release=os_release)
        assert plan.error is None, plan.error
        assert own(plan) == [], own(plan)


def test_changed_settings_redefine_the_domain_and_never_touch_the_disk():
    data = {"guest_vm_vms": [VM], "base_admin_ssh_keys": [KEY]}
    bigger = {**VM, "memory_mb": 8192}
    plan = plan_for([bigger], state=host_state(data, exists=True))
    assert [n.split(" | ")[-1] for n in own(plan)] == [
        "ai: domain XML",
        "ai: define the domain",
        "ai: report that a restart is pending",  # it runs: the new memory waits for a restart
    ]
    assert "<memory unit='MiB'>8192</memory>" in plan.files["/etc/aicoder/vms/ai.xml.new"]
    assert not plan.find(r"qemu-img|cp --sparse|xorriso|curl -fsSL|virsh .*(shutdown|destroy)")


def test_a_running_vm_is_restarted_cleanly_for_its_new_definition_only_when_allowed():
    data = {"guest_vm_vms": [VM], "base_admin_ssh_keys": [KEY]}
    bigger = {**VM, "memory_mb": 8192}
    plan = plan_for([bigger], state=host_state(data, exists=True), guest_vm_restart_on_change=True)
    (restart,) = plan.find(r"virsh .* shutdown ai;")
    assert "domstate ai | grep -qx 'shut off'" in restart and "-le 300 ]" in restart
    assert restart.endswith("virsh -q -c qemu:///system start ai")
    assert "destroy" not in restart  # never forced off: a guest that ignores ACPI fails the run
    names = [n.split(" | ")[-1] for n in own(plan)]
    assert names.index("ai: define the domain") < names.index(
        "ai: restart for the new definition (guest_vm_restart_on_change)"
    )
    stopped = host_state(data, exists=True).replace("[running]\nai\n", "[running]\n")
    plan = plan_for([bigger], state=stopped, guest_vm_restart_on_change=True)
    assert not plan.find(r"shutdown") and plan.find(r"virsh .* start ai$")


def test_a_larger_disk_grows_the_running_vm_and_a_smaller_one_is_refused():
    data = {"guest_vm_vms": [VM], "base_admin_ssh_keys": [KEY]}
    grown = plan_for([{**VM, "disk_gb": 40}], state=host_state(data, exists=True))
    assert grown.find(r"virsh -q -c qemu:///system blockresize ai .*/ai.qcow2 40G$")
    shrunk = plan_for([{**VM, "disk_gb": 16}], state=host_state(data, exists=True))
    assert shrunk.error is not None and not shrunk.changed
    assert "guest_vm_vms[0].disk_gb" in str(shrunk.error) and "never shrunk" in str(shrunk.error)


def test_host_facts_checked_before_any_change():
    pinned = {**VM, "cpu_pins": [6, 9]}
    data = {"guest_vm_vms": [pinned], "base_admin_ssh_keys": [KEY]}
    plan = plan_for([pinned], state=host_state(data, exists=False, cpus="0-7", kvm=False))
    assert plan.error is not None and not plan.changed
    message = str(plan.error)
    assert "guest_vm_vms[0].cpu_pins: host CPU(s) [9] do not exist" in message
    assert "guest_vm_domain_type" in message and "/dev/kvm" in message
    gone = plan_for([VM], state=host_state({"guest_vm_vms": [VM]}, exists=False).replace(
        "0000:01:00.0", ""))  # fmt: skip
    assert "guest_vm_vms[0].gpus: 0000:01:00.0 not found" in str(gone.error)


def test_a_foreign_domain_of_the_same_name_is_not_redefined():
    data = {"guest_vm_vms": [VM], "base_admin_ssh_keys": [KEY]}
    other = "0b0d401a-55c3-433c-a081-261d6204d89f"
    plan = plan_for([VM], state=host_state(data, exists=True, uuid=other))
    assert plan.error is not None and not plan.changed
    assert f"guest_vm_vms[0].uuid = '{other}'" in str(plan.error)


def test_several_vms_with_their_own_gpus_and_hugepages():
    vms = [
        {**VM, "hugepages": True},
        {
            "name": "b",
            "memory_mb": 8192,
            "hugepages": True,
            "gpus": ["0000:41:00.0", "0000:41:00.1"],
        },
    ]
    plan = plan_for(vms)
    assert plan.error is None, plan.error
    assert "vm.nr_hugepages = 6144" in plan.files["/etc/sysctl.d/80-aicoder-hugepages.conf"]
    assert "bus='0x41'" not in plan.files["/etc/aicoder/vms/ai.xml.new"]
    assert plan.files["/etc/aicoder/vms/b.xml.new"].count("<hostdev ") == 2
    assert len(plan.find(r"^mkdir -p .*/cache; sum=")) == 1  # one download for both disks
    assert len(plan.find(r"^virsh .* start ")) == 2


def test_a_vm_gpu_must_be_isolated_by_vfio_before_anything_changes():
    """The preflight (roles/preflight) refuses it, reading the VMs' GPUs from these settings."""
    plan = plan_for([VM], vfio_gpus=["0000:02:00.0"])
    assert plan.error is not None and not plan.changed
    assert "0000:01:00.0" in str(plan.error) and "vfio_gpus" in str(plan.error)


def test_el9_fresh_host_with_an_image_folder_outside_libvirts():
    plan = plan_for([VM], os_release=EL9, libvirt_image_dir="/srv/vms")
    assert plan.error is None, plan.error
    assert plan.find(r"cp --sparse=always /srv/vms/cache/debian-12-generic-amd64.qcow2 /srv/vms/ai")
    assert "<source file='/srv/vms/ai.qcow2'/>" in plan.files["/etc/aicoder/vms/ai.xml.new"]


def test_no_vms_means_no_guest_vm_operations():
    plan = plan_for([], state="")
    assert plan.error is None and [n for n in own(plan) if n.startswith("Guest VMs")] == []


def test_real_card_options_reach_the_defined_domain_and_1g_pages_the_kernel_arguments():
    """A GPU with its audio function, 1 GiB hugepages on NUMA node 0, emulator threads pinned:
    the domain libvirt defines has them, and the vfio role sets the hugepage kernel arguments
    with the IOMMU's (one reboot for both); node 0's share is raised at boot (tmpfiles.d)."""
    vm = {**VM, "memory_mb": 8192, "hugepages": True, "numa_node": 0, "cpu_pins": [2, 3],
          "emulator_cpus": [0], "gpus": ["0000:01:00.0", "0000:01:00.1"]}  # fmt: skip
    plan = plan_for([vm], guest_vm_hugepage_size="1G")
    assert plan.error is None, plan.error
    xml = plan.files["/etc/aicoder/vms/ai.xml.new"]
    assert "<page size='1' unit='GiB'/>" in xml and "<emulatorpin cpuset='0'/>" in xml
    assert "<memory mode='strict' nodeset='0'/>" in xml
    assert f"<pcihole64 unit='KiB'>{64 * 1024 * 1024}</pcihole64>" in xml
    assert "<maxphysaddr mode='passthrough'/>" in xml
    assert "function='0x0' multifunction='on'/>" in xml
    assert (
        "default_hugepagesz=1G hugepagesz=1G hugepages=8"
        in plan.files["/etc/default/grub.d/vfio.cfg"]
    )
    node0 = "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"
    assert f"w {node0} - - - - 8" in plan.files["/etc/tmpfiles.d/aicoder-hugepages-1g.conf"]
    assert not plan.find(r"vm.nr_hugepages|sysctl")
