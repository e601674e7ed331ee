"""guest_vm rendering: the domain XML (checked by libvirt's own schema) and the cloud-init seed."""

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from roles.guest_vm import render
from roles.guest_vm.facts import GuestVmState, cpu_list
from roles.guest_vm.settings import Vm

IMAGES = "/var/lib/libvirt/images"

VMS = {
    "minimal": Vm(name="ai"),
    "gpu-pinned-hugepages": Vm(
        name="ai-guest",
        vcpus=4,
        memory_mb=16384,
        hugepages=True,
        cpu_pins=[2, 3, 4, 5],
        gpus=["0000:01:00.0", "0000:01:00.1"],
        address="192.168.1.50/24",
        gateway="192.168.1.1",
        dns=["192.168.1.1"],
    ),
    "two-gpus": Vm(
        name="big",
        vcpus=8,
        memory_mb=65536,
        gpus=["0000:01:00.0", "0000:01:00.1", "0000:41:00.0", "0000:41:00.1"],
    ),
    "gigantic-numa-emulatorpin": Vm(
        name="numa",
        vcpus=4,
        memory_mb=32768,
        hugepages=True,
        cpu_pins=[4, 5, 6, 7],
        emulator_cpus=[0, 1],
        numa_node=1,
        mmio64_gb=256,
        gpus=["0000:81:00.0", "0000:81:00.1"],
    ),
}
GIGANTIC = {"gigantic-numa-emulatorpin"}


def domain(vm: Vm, domain_type: str = "kvm") -> str:
    size = "1G" if vm.name == "numa" else "2M"
    return render.domain_xml(vm, domain_type, "br0", render.VmPaths.of(vm, IMAGES), size)


@pytest.mark.parametrize("domain_type", ["kvm", "qemu"])
@pytest.mark.parametrize("case", sorted(VMS))
def test_domain_xml_passes_libvirts_schema(case, domain_type, tmp_path):
    if not shutil.which("virt-xml-validate") or not shutil.which("xmllint"):
        pytest.skip("virt-xml-validate needs libvirt-clients and libxml2-utils (xmllint)")
    path = tmp_path / "domain.xml"
    path.write_text(domain(VMS[case], domain_type))
    result = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_domain_has_q35_uefi_boot_order_bridge_and_managed_gpus():
    vm = VMS["gpu-pinned-hugepages"]
    root = ET.fromstring(domain(vm))
    assert root.get("type") == "kvm" and root.find("features/tcg") is None
    assert root.findtext("uuid") == vm.uuid
    assert root.find("os").get("firmware") == "efi"
    assert root.find("os/type").get("machine") == "q35"
    cpu = root.find("cpu")
    assert cpu.get("mode") == "host-passthrough"
    assert cpu.find("topology").get("cores") == "4"
    assert [p.get("cpuset") for p in root.findall("cputune/vcpupin")] == ["2", "3", "4", "5"]
    assert root.find("memoryBacking/hugepages") is not None
    disks = root.findall("devices/disk")
    assert (
        disks[0].find("boot").get("order") == "1" and disks[0].find("target").get("bus") == "virtio"
    )
    assert disks[1].get("device") == "cdrom" and disks[1].find("boot") is None
    nic = root.find("devices/interface")
    assert nic.get("type") == "bridge" and nic.find("source").get("bridge") == "br0"
    assert nic.find("mac").get("address") == vm.mac
    hostdevs = root.findall("devices/hostdev")
    assert [h.get("managed") for h in hostdevs] == ["yes", "yes"]
    assert [h.find("source/address").get("function") for h in hostdevs] == ["0x0", "0x1"]


def test_domain_without_kvm_uses_emulation_and_no_hugepages_unless_asked():
    root = ET.fromstring(domain(VMS["minimal"], "qemu"))
    assert root.get("type") == "qemu"
    assert root.find("cpu").get("mode") == "maximum"
    assert root.find("features/tcg/tb-cache").text == "128"
    assert root.find("memoryBacking") is None and root.find("cputune") is None
    assert root.findall("devices/hostdev") == []


def test_several_gpus_become_one_hostdev_each():
    root = ET.fromstring(domain(VMS["two-gpus"]))
    buses = [h.find("source/address").get("bus") for h in root.findall("devices/hostdev")]
    assert buses == ["0x01", "0x01", "0x41", "0x41"]


def test_same_settings_render_the_same_xml():
    assert domain(VMS["minimal"]) == domain(Vm(name="ai"))
    assert domain(VMS["minimal"]) != domain(Vm(name="ai", memory_mb=4096))


def test_seed_has_hostname_admin_user_key_and_static_network():
    vm = VMS["gpu-pinned-hugepages"]
    seed = render.seed_files(vm, "aicoder", ["ssh-ed25519 AAAAC3 me@laptop"])
    assert seed["user-data"].startswith("#cloud-config\n")
    user_data = yaml.safe_load(seed["user-data"])
    assert user_data["hostname"] == "ai-guest"
    (user,) = user_data["users"]
    assert user["name"] == "aicoder" and user["ssh_authorized_keys"] == [
        "ssh-ed25519 AAAAC3 me@laptop"
    ]
    assert user["lock_passwd"] is True and user_data["ssh_pwauth"] is False
    assert yaml.safe_load(seed["meta-data"]) == {
        "instance-id": vm.uuid,
        "local-hostname": "ai-guest",
    }
    nic = yaml.safe_load(seed["network-config"])["ethernets"]["lan"]
    assert nic["match"] == {"macaddress": vm.mac}
    assert nic["addresses"] == ["192.168.1.50/24"]
    assert nic["routes"] == [{"to": "0.0.0.0/0", "via": "192.168.1.1"}]
    assert nic["nameservers"] == {"addresses": ["192.168.1.1"]}


def test_seed_with_dhcp():
    nic = yaml.safe_load(render.network_config(VMS["minimal"]))["ethernets"]["lan"]
    assert nic["dhcp4"] is True and "addresses" not in nic


def test_cached_image_is_named_after_the_url():
    url = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2"
    assert render.cached_image(url, IMAGES) == f"{IMAGES}/cache/debian-12-generic-amd64.qcow2"
    assert render.cached_image("file:///srv/img/x.qcow2", "/srv/vms") == "/srv/vms/cache/x.qcow2"


def test_cpu_list_parses_kernel_ranges():
    assert cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert cpu_list("0") == {0}


# Recorded on the lab's hv machine: see tests/plan/fixtures/README-guest-vm.md.
RECORDED_STATE = (
    Path(__file__).resolve().parents[1]
    / "plan"
    / "fixtures"
    / ("guest-vm-state.debian-12-lab-hv.txt")
)


def test_state_fact_parses_a_recorded_host():
    state = GuestVmState().process(RECORDED_STATE.read_text().splitlines())
    assert state["cpus"] == {0, 1} and state["kvm"] is False and state["hugepages"] == 0
    assert state["domains"] == state["running"] == state["autostart"] == {"labvm"}
    assert state["uuids"] == {"labvm": Vm(name="labvm").uuid}
    assert state["files"]["/var/lib/libvirt/images/labvm.qcow2"]["inode"] == 15441926
    assert state["disk_sizes"] == {"/var/lib/libvirt/images/labvm.qcow2": 6 * 1024**3}
    assert set(state["sums"]) == {
        "/etc/aicoder/vms/labvm.xml",
        "/etc/aicoder/vms/labvm.cloud-init.sha256",
    }
    assert state["pci"] == set()


def test_state_fact_of_a_fresh_host_is_empty():
    state = GuestVmState().process([])
    assert state["domains"] == set() and state["files"] == {} and state["cpus"] == set()


def test_gpu_and_its_audio_are_one_multifunction_guest_device_per_card():
    root = ET.fromstring(domain(VMS["two-gpus"]))
    ports = [c for c in root.findall("devices/controller") if c.get("model") == "pcie-root-port"]
    assert [p.get("index") for p in ports] == ["1", "2"]
    guest = [h.find("address") for h in root.findall("devices/hostdev")]
    assert [(a.get("bus"), a.get("slot"), a.get("function")) for a in guest] == [
        ("0x01", "0x00", "0x0"), ("0x01", "0x00", "0x1"),
        ("0x02", "0x00", "0x0"), ("0x02", "0x00", "0x1"),
    ]  # fmt: skip
    assert [a.get("multifunction") for a in guest] == ["on", None, "on", None]
    single = ET.fromstring(domain(Vm(name="one", gpus=["0000:01:00.0"])))
    assert single.find("devices/hostdev/address").get("multifunction") is None


def test_gpu_vms_get_a_64_bit_mmio_window_and_the_hosts_address_width():
    def hole(vm: Vm, domain_type: str = "kvm") -> tuple[str | None, str | None] | None:
        root = ET.fromstring(domain(vm, domain_type))
        found = root.find("devices/controller[@model='pcie-root']/pcihole64")
        return None if found is None else (found.get("unit"), found.text)

    assert hole(VMS["gpu-pinned-hugepages"]) == ("KiB", str(64 * 1024 * 1024))  # one card
    assert hole(VMS["two-gpus"]) == ("KiB", str(128 * 1024 * 1024))
    assert hole(VMS["gigantic-numa-emulatorpin"]) == ("KiB", str(256 * 1024 * 1024))  # set
    assert hole(VMS["minimal"]) is None  # no GPU: QEMU's default
    kvm = ET.fromstring(domain(VMS["two-gpus"]))
    assert kvm.find("cpu/maxphysaddr").get("mode") == "passthrough"
    # Emulation has no host-passthrough CPU, which passthrough needs (libvirt refuses it).
    assert ET.fromstring(domain(VMS["two-gpus"], "qemu")).find("cpu/maxphysaddr") is None
    assert ET.fromstring(domain(VMS["minimal"])).find("cpu/maxphysaddr") is None


def test_1g_hugepages_numa_node_and_emulator_pinning():
    root = ET.fromstring(domain(VMS["gigantic-numa-emulatorpin"]))
    page = root.find("memoryBacking/hugepages/page")
    assert (page.get("size"), page.get("unit")) == ("1", "GiB")
    assert root.find("numatune/memory").attrib == {"mode": "strict", "nodeset": "1"}
    assert root.find("cputune/emulatorpin").get("cpuset") == "0,1"
    plain = ET.fromstring(domain(VMS["gpu-pinned-hugepages"]))
    assert plain.find("memoryBacking/hugepages/page") is None
    assert plain.find("numatune") is None and plain.find("cputune/emulatorpin") is None


@pytest.mark.parametrize("case", sorted(VMS))
def test_libvirt_itself_parses_the_domain_and_keeps_the_gpu_layout(case, tmp_path):
    """libvirt's own domain parser (its in-process test driver, no daemon) accepts the XML and
    keeps the guest addresses, the MMIO window and the pinning as written."""
    if not shutil.which("virsh"):
        pytest.skip("virsh needs libvirt-clients")
    path = tmp_path / "domain.xml"
    path.write_text(domain(VMS[case]))
    result = subprocess.run(
        ["virsh", "-c", "test:///default", f"define {path}; dumpxml {VMS[case].name}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    parsed = ET.fromstring(result.stdout.split("\n", 1)[1])
    written = ET.fromstring(domain(VMS[case]))
    addresses = lambda root: [ET.tostring(a) for a in root.findall("devices/hostdev/address")]  # noqa: E731
    assert addresses(parsed) == addresses(written)
    for xpath in ("devices/controller[@model='pcie-root']/pcihole64", "cputune/emulatorpin"):
        assert (parsed.find(xpath) is None) == (written.find(xpath) is None), xpath
