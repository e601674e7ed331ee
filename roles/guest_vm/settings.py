"""Settings of the guest_vm role: the source image and the list of VMs each hypervisor runs."""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import override

from roles.common import checks
from roles.common.platform import DEBIAN_CLOUD, DEFAULT_GUEST, GUEST_RELEASES, RELEASES, Release
from roles.common.settings import RoleSettings, setting, type_matches, type_name

# {codename} and {version} are filled from each VM's release (roles/common/platform.py).
DEBIAN_IMAGES = DEBIAN_CLOUD + "/{codename}/latest"
_UUID_NAMESPACE = uuid.UUID("5d1f5b0e-3c1a-4b44-9a57-7f1e3e6f2a10")


@dataclass(frozen=True)
class Vm:
    """One VM, validated. ``uuid`` and ``mac`` are derived from the name unless given, so a
    re-run keeps both (libvirt refuses to re-define a name under another UUID)."""

    name: str
    vcpus: int = 4
    memory_mb: int = 8192
    hugepages: bool = False
    cpu_pins: list[int] = field(default_factory=list)
    disk_gb: int = 64
    gpus: list[str] = field(default_factory=list)
    address: str = "dhcp"
    gateway: str = ""
    dns: list[str] = field(default_factory=list)
    hostname: str = ""
    mac: str = ""
    uuid: str = ""
    autostart: bool = True
    mmio64_gb: int = 0
    emulator_cpus: list[int] = field(default_factory=list)
    numa_node: int = -1
    release: str = DEFAULT_GUEST.key

    def __post_init__(self):
        digest = hashlib.sha256(self.name.encode()).digest()
        if not self.hostname:
            object.__setattr__(self, "hostname", self.name)
        if not self.mac:  # 52:54:00 is QEMU's locally administered prefix
            object.__setattr__(self, "mac", "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3]))
        if not self.uuid:
            object.__setattr__(self, "uuid", str(uuid.uuid5(_UUID_NAMESPACE, self.name)))

    @property
    def os(self) -> Release:
        """The VM's OS release (its disk comes from that release's cloud image)."""
        return RELEASES[self.release]

    @property
    def static(self) -> bool:
        return self.address != "dhcp"

    @property
    def pcihole64_gb(self) -> int:
        """The 64-bit PCI hole (MMIO window) the VM gets: mmio64_gb, or with 0 and GPUs 64 GiB
        per card (a 24 GB card's 32 GiB BAR needs more than QEMU's q35 default of 32 GiB in
        all: kubevirt#11093), or 0 (QEMU's default) without GPUs."""
        if self.mmio64_gb:
            return self.mmio64_gb
        slots = {gpu.rsplit(".", 1)[0] for gpu in self.gpus}
        return 64 * len(slots)

    @property
    def ip(self) -> str | None:
        """The VM's address without its prefix (None with DHCP)."""
        return self.address.split("/")[0] if self.static else None


# What each VM key means: key -> (type, doc).
VM_KEYS: dict[str, tuple[Any, str]] = {
    "name": (str, "libvirt domain name, also the default hostname (required)"),
    "vcpus": (int, "virtual CPUs (one socket, this many cores)"),
    "memory_mb": (int, "memory in MiB"),
    "hugepages": (
        bool,
        "back the memory with hugepages reserved on the host (guest_vm_hugepage_size)",
    ),
    "cpu_pins": (list[int], "host CPU for each vCPU, in order (empty: no pinning)"),
    "disk_gb": (int, "system disk size in GiB; raising it grows the disk, it never shrinks"),
    "gpus": (list[str], "PCI addresses passed through, every function (0000:01:00.0, ...)"),
    "address": (str, "'dhcp' or a static address with prefix, e.g. 192.168.1.50/24"),
    "gateway": (str, "default gateway with a static address"),
    "dns": (list[str], "DNS servers with a static address"),
    "hostname": (str, "hostname set by cloud-init (default: name)"),
    "mac": (str, "MAC address (default: derived from the name, 52:54:00:...)"),
    "uuid": (str, "domain UUID (default: derived from the name); give it to adopt a domain"),
    "autostart": (bool, "start with the host"),
    "mmio64_gb": (
        int,
        "64-bit MMIO window (PCI hole) in GiB for the GPUs' BARs; 0: 64 per GPU (24 GB+ cards "
        "hang or show BAR0 0M in OVMF with the default), QEMU's default without GPUs",
    ),
    "emulator_cpus": (list[int], "host CPUs for QEMU's emulator threads (empty: not pinned)"),
    "numa_node": (int, "host NUMA node the memory (and its hugepages) comes from; -1: any"),
    "release": (
        str,
        f"the VM's OS, from its release's cloud image: {' or '.join(GUEST_RELEASES)} "
        f"(default {DEFAULT_GUEST.key}); set when the VM is created (its disk is never replaced)",
    ),
}
_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _vm_problems(i: int, raw: dict) -> list[tuple[str, str]]:
    """Problems of one VM dict, each keyed ``guest_vm_vms[i].key``."""
    key = lambda k: f"guest_vm_vms[{i}].{k}"  # noqa: E731
    problems = []
    for k, value in raw.items():
        if k not in VM_KEYS:
            close = difflib.get_close_matches(str(k), VM_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(VM_KEYS)}"
            problems.append((key(k), f"unknown VM setting; {hint}"))
        elif not type_matches(value, VM_KEYS[k][0]):
            expected = type_name(VM_KEYS[k][0])
            problems.append((key(k), f"got {value!r}; expected {expected}"))
    if "name" not in raw:
        problems.append((key("name"), "missing; every VM needs a name like 'ai-guest'"))
    if problems:
        return problems
    vm = Vm(**raw)
    rules = [
        ("name", _NAME.fullmatch(vm.name), "use 1-63 of a-z 0-9 '-', starting with a letter"),
        ("hostname", _HOSTNAME.fullmatch(vm.hostname), "use a-z 0-9 '-' (a DNS label)"),
        ("vcpus", 1 <= vm.vcpus <= 256, "use 1 to 256"),
        ("memory_mb", 512 <= vm.memory_mb <= 4 * 1024 * 1024, "use at least 512 (MiB)"),
        ("disk_gb", 4 <= vm.disk_gb <= 65536, "use at least 4 (GiB)"),
        (
            "cpu_pins",
            not vm.cpu_pins or len(vm.cpu_pins) == vm.vcpus,
            f"give one host CPU per vCPU ({vm.vcpus}), or none",
        ),
        (
            "cpu_pins",
            len(set(vm.cpu_pins)) == len(vm.cpu_pins) and min(vm.cpu_pins, default=0) >= 0,
            "each host CPU once, numbered from 0",
        ),
        ("mac", not checks.unicast_mac(vm.mac), "use a unicast MAC like 52:54:00:12:34:56"),
        ("uuid", _is_uuid(vm.uuid), "use a UUID like 6f1c...-...; or leave it out"),
        ("gateway", not vm.gateway or vm.static, "only with a static address"),
        ("mmio64_gb", 0 <= vm.mmio64_gb <= 65536, "use 0 (automatic) or GiB up to 65536"),
        ("numa_node", -1 <= vm.numa_node <= 1023, "use a node number like 0, or -1 (any)"),
        (
            "emulator_cpus",
            min(vm.emulator_cpus, default=0) >= 0 and not set(vm.emulator_cpus) & set(vm.cpu_pins),
            "host CPUs numbered from 0, other than the vCPUs' own (cpu_pins)",
        ),
        ("dns", not vm.dns or vm.static, "only with a static address"),
        ("release", vm.release in GUEST_RELEASES, f"use {' or '.join(GUEST_RELEASES)}"),
    ]
    problems += [(key(k), f"{getattr(vm, k)!r}: {fix}") for k, ok, fix in rules if not ok]
    bad_gpu = checks.matches(checks.PCI_ADDRESS, "a PCI address like 0000:01:00.0")(vm.gpus)
    if bad_gpu:
        problems.append((key("gpus"), bad_gpu))
    if len(set(vm.gpus)) != len(vm.gpus):
        problems.append((key("gpus"), "lists a PCI address twice"))
    if vm.static:
        msg = checks.cidr_address(vm.address)
        if msg:
            problems.append((key("address"), f"{msg}; or 'dhcp'"))
        elif vm.gateway and (msg := checks.ip_address(vm.gateway)):
            problems.append((key("gateway"), msg))
        else:
            problems += [(key(k), msg) for k, msg in _address_problems(vm)]
    for server in vm.dns:
        if msg := checks.ip_address(server):
            problems.append((key("dns"), msg))
    return problems


def _address_problems(vm: Vm) -> list[tuple[str, str]]:
    """A static address is a host of its network (not the network or broadcast address), and
    the gateway is another host of that network."""
    iface = ipaddress.ip_interface(vm.address)
    net, problems = iface.network, []
    if net.num_addresses > 2 and iface.ip in (net.network_address, net.broadcast_address):
        problems.append(("address", f"{vm.address} is its network's own address; pick a host"))
    if vm.gateway:
        gateway = ipaddress.ip_address(vm.gateway)
        if gateway not in net:
            problems.append(("gateway", f"{vm.gateway} is not in {vm.address}'s network"))
        elif gateway == iface.ip:
            problems.append(("gateway", f"{vm.gateway} is the VM's own address; use the router's"))
    return problems


def _template(value: str) -> str | None:
    """A URL naming no placeholder but {codename} and {version}."""
    try:
        DEFAULT_GUEST.fill(value)
    except (KeyError, IndexError, ValueError):
        return "use no braces but the placeholders {codename} and {version}"
    return None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class GuestVmSettings(RoleSettings):
    PREFIX = "guest_vm"
    GROUPS = ("hypervisors",)

    vms: list[dict] = setting(
        [],
        "the VMs this hypervisor runs, each a dict: name (required), vcpus, memory_mb, "
        "hugepages, cpu_pins, disk_gb, gpus, address ('dhcp' or CIDR), gateway, dns, hostname, "
        "mac, uuid, autostart, mmio64_gb, emulator_cpus, numa_node, release ('debian12', the "
        "default, or 'debian13') (each explained in VM_KEYS, "
        "roles/guest_vm/settings.py)",
    )
    image_url: str = setting(
        f"{DEBIAN_IMAGES}/debian-{{version}}-generic-amd64.qcow2",
        "Debian cloud image each new VM disk is copied from (https://, http:// or file:///); "
        "{codename} and {version} are those of the VM's release (guest_vm_vms[].release)",
        checks.url("https", "http", "file"),
        _template,
    )
    image_sha512: str = setting(
        "",
        "the image's SHA-512 (empty: look it up in image_sha512sums_url)",
        checks.matches(r"|[0-9a-f]{128}", "a SHA-512 in hex (128 characters), or empty"),
    )
    image_sha512sums_url: str = setting(
        f"{DEBIAN_IMAGES}/SHA512SUMS",
        "SHA512SUMS file listing the image by file name (used when image_sha512 is empty); "
        "{codename} and {version} as in image_url",
        checks.url("https", "http", "file"),
        _template,
    )
    domain_type: str = setting(
        "kvm",
        "libvirt domain type: 'kvm' (hardware virtualization) or 'qemu' (emulation, no /dev/kvm)",
        checks.one_of("kvm", "qemu"),
    )
    restart_on_change: bool = setting(
        False,
        "a running VM whose definition changed is shut down (ACPI, as a power button) and "
        "started again; False: the deploy says a restart is pending",
    )
    hugepage_size: str = setting(
        "2M",
        "size of the hugepages of VMs with hugepages = True: '2M' (reserved with a sysctl, no "
        "reboot) or '1G' (reserved at boot by kernel arguments, per NUMA node with numa_node: "
        "needs vfio_gpus, as the vfio role sets the arguments, and a reboot)",
        checks.one_of("2M", "1G"),
    )
    shutdown_timeout: int = setting(
        300,
        "seconds a VM may take to shut down for restart_on_change (never forced off)",
        checks.in_range(10, 3600),
    )

    def machines(self) -> list[Vm]:
        """The VMs as validated objects (call after validation)."""
        return [Vm(**raw) for raw in self.vms]

    def image(self, release: Release) -> tuple[str, str]:
        """(image URL, SHA512SUMS URL) of ``release``'s cloud image."""
        return release.fill(self.image_url), release.fill(self.image_sha512sums_url)

    def hugepages_mb(self) -> int:
        """Memory the host must reserve as hugepages for the VMs that ask for them."""
        return sum(vm.memory_mb for vm in self.machines() if vm.hugepages)

    def gigantic_pages(self) -> dict[int, int]:
        """1 GiB pages the VMs need by host NUMA node (-1: any node), with hugepage_size 1G."""
        if self.hugepage_size != "1G":
            return {}
        need: dict[int, int] = {}
        for vm in self.machines():
            if vm.hugepages:
                need[vm.numa_node] = need.get(vm.numa_node, 0) + -(-vm.memory_mb // 1024)
        return need

    def kernel_args(self) -> list[str]:
        """Kernel arguments the VMs need (the vfio role sets them): 1 GiB pages can only be
        reserved reliably at boot (Documentation/admin-guide/mm/hugetlbpage.rst)."""
        total = sum(self.gigantic_pages().values())
        if not total:
            return []
        return ["default_hugepagesz=1G", "hugepagesz=1G", f"hugepages={total}"]

    @override
    def check(self):
        problems = []
        for i, raw in enumerate(self.vms):
            problems += _vm_problems(i, raw)
        if problems:
            return problems
        vms = self.machines()
        problems += _duplicates(vms, "name", "each VM needs its own name")
        problems += _duplicates(vms, "mac", "each VM needs its own MAC")
        problems += _duplicates(vms, "uuid", "each VM needs its own UUID")
        problems += _duplicates(vms, "ip", "each VM needs its own address", skip=None)
        problems += _shared_items(vms, "gpus", "a GPU can be passed to one VM only")
        problems += _shared_items(vms, "cpu_pins", "pinned host CPUs must not overlap")
        if self.hugepage_size == "1G":
            problems += [
                (f"guest_vm_vms[{i}].memory_mb", f"{vm.memory_mb}: use whole GiB (a multiple of "
                 "1024) with guest_vm_hugepage_size '1G'")
                for i, vm in enumerate(vms) if vm.hugepages and vm.memory_mb % 1024
            ]  # fmt: skip
        if self.image_sha512 and len({vm.release for vm in vms}) > 1:
            why = "one checksum cannot fit the images of several releases: leave it empty"
            problems.append((self.key("image_sha512"), why))
        return problems


def _duplicates(vms: list[Vm], attr: str, why: str, skip: Any = "") -> list[tuple[str, str]]:
    seen: dict[Any, int] = {}
    problems = []
    for i, vm in enumerate(vms):
        value = getattr(vm, attr)
        if value == skip:
            continue
        if value in seen:
            problems.append(
                (f"guest_vm_vms[{i}].{attr}", f"{value!r} is also VM {seen[value]}'s; {why}")
            )
        seen.setdefault(value, i)
    return problems


def _shared_items(vms: list[Vm], attr: str, why: str) -> list[tuple[str, str]]:
    owner: dict[Any, int] = {}
    problems = []
    for i, vm in enumerate(vms):
        for item in getattr(vm, attr):
            if item in owner and owner[item] != i:
                problems.append(
                    (f"guest_vm_vms[{i}].{attr}", f"{item!r} is also in VM {owner[item]}; {why}")
                )
            owner.setdefault(item, i)
    return problems
