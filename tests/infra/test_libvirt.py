"""Checks of the libvirt and guest_vm roles on every hypervisor: the stack, the bridge, the VMs."""

from __future__ import annotations

import re

import pytest
from role_settings import settings_of

from roles.guest_vm.render import VmPaths
from roles.guest_vm.settings import GuestVmSettings
from roles.libvirt import ENABLED, PACKAGES, RUNNING
from roles.libvirt.settings import AUTO, DHCP, LibvirtSettings

VIRSH = "virsh -c qemu:///system"


@pytest.fixture
def family(hypervisor) -> str:
    return "debian" if hypervisor.system_info.distribution == "debian" else "el9"


@pytest.fixture
def libvirt(host_data) -> LibvirtSettings:
    return settings_of(LibvirtSettings, host_data)


@pytest.fixture
def vms(host_data):
    return settings_of(GuestVmSettings, host_data).machines()


def test_virtualization_packages_are_installed(hypervisor, family):
    for package in PACKAGES[family]:
        assert hypervisor.package(package).is_installed, package


def test_libvirt_starts_at_boot_and_listens(hypervisor, family):
    for unit in ENABLED[family]:
        assert hypervisor.service(unit).is_enabled, f"{unit} is not enabled"
    for unit in RUNNING[family]:
        assert hypervisor.service(unit).is_running, f"{unit} is not running"
    assert hypervisor.run(f"{VIRSH} version").rc == 0


def test_bridge_has_its_address_and_uplink(hypervisor, libvirt):
    addresses = hypervisor.check_output(f"ip -4 -o addr show dev {libvirt.bridge}")
    if libvirt.bridge_address in (AUTO, DHCP):  # DHCP's, or the uplink's carried over
        assert re.search(r"inet \d+\.\d+\.\d+\.\d+/", addresses), addresses
    else:
        assert f"inet {libvirt.bridge_address} " in addresses, addresses
    if libvirt.bridge_uplink:
        master = hypervisor.check_output(f"readlink /sys/class/net/{libvirt.bridge_uplink}/master")
        assert master.endswith(f"/{libvirt.bridge}")
        # The uplink's own address moved to the bridge: none left on the port.
        port = hypervisor.check_output(f"ip -4 -o addr show dev {libvirt.bridge_uplink}")
        assert "inet " not in port, port


def test_image_folder_exists_with_libvirts_selinux_type(hypervisor, libvirt, family):
    assert hypervisor.file(libvirt.image_dir).is_directory
    if family == "el9" and hypervisor.run("selinuxenabled").rc == 0:
        context = hypervisor.check_output(f"stat -c %C {libvirt.image_dir}")
        assert ":virt_image_t:" in context or libvirt.image_dir.startswith("/var/lib/libvirt/")


def test_each_vm_is_defined_autostarted_and_running(hypervisor, vms, libvirt):
    if not vms:
        pytest.skip("guest_vm_vms is empty: this hypervisor runs no VMs")
    for vm in vms:
        info = hypervisor.check_output(f"{VIRSH} dominfo {vm.name}")
        assert re.search(rf"UUID:\s+{vm.uuid}", info), info
        if vm.autostart:
            assert re.search(r"State:\s+running", info), info
            assert re.search(r"Autostart:\s+enable", info), info
        paths = VmPaths.of(vm, libvirt.image_dir)
        assert hypervisor.file(paths.disk).is_file and hypervisor.file(paths.seed).is_file
        xml = hypervisor.check_output(f"{VIRSH} dumpxml --inactive {vm.name}")
        assert f"<source bridge='{libvirt.bridge}'/>" in xml and f"address='{vm.mac}'" in xml
        for gpu in vm.gpus:
            _, bus, rest = gpu.split(":")
            slot, function = rest.split(".")
            wanted = f"bus='0x{bus}' slot='0x{slot}' function='0x{function}'"
            assert wanted in xml, f"{vm.name}: GPU {gpu} is not passed through"


def test_hugepages_are_reserved_for_the_vms_that_ask(hypervisor, host_data):
    needed = settings_of(GuestVmSettings, host_data).hugepages_mb() // 2
    if not needed:
        pytest.skip("no VM asks for hugepages")
    assert int(hypervisor.check_output("cat /proc/sys/vm/nr_hugepages")) >= needed


def test_vms_with_a_static_address_answer_ssh(hypervisor, vms):
    static = [vm for vm in vms if vm.static and vm.autostart]
    if not static:
        pytest.skip("no running VM with a static address")
    for vm in static:
        probe = f"timeout 5 bash -c '</dev/tcp/{vm.ip}/22'"
        assert hypervisor.run(probe).rc == 0, f"{vm.name} ({vm.ip}) does not answer on port 22"
