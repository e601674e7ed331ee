"""What the preflight and the vfio role read on a hypervisor, in one round trip.

The read is the project's HostState fact (roles/common/host_state.py): the files the vfio role
manages (mode, owner, sha1) plus this module's probe, a shell snippet printing one section per
source, each headed by a line ``@@ name``. Nothing in it changes the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roles.common import host_state
from roles.preflight import parse
from roles.preflight.parse import BootEntry, PciFunction

# Without pciutils, sysfs gives the same facts in `lspci -Dnnk` form (no names, no modules), so
# a host lacking lspci is still checked, with one parser.
_SYSFS_LSPCI = r"""for d in /sys/bus/pci/devices/*; do
  c=$(cut -c3-6 "$d/class"); v=$(cut -c3- "$d/vendor"); p=$(cut -c3- "$d/device")
  echo "${d##*/} Class [$c]: Device [$v:$p]"
  if [ -L "$d/driver" ]; then l=$(readlink "$d/driver"); echo "	Kernel driver in use: ${l##*/}"; fi
done"""

# Each installed kernel's initramfs (Debian's initrd.img-V, EL9's initramfs-V.img) that is older
# than a file it is built from, so must be rebuilt.
_STALE_INITRAMFS = r"""for v in /lib/modules/*; do
  for i in "/boot/initrd.img-${v##*/}" "/boot/initramfs-${v##*/}.img"; do
    [ -e "$i" ] || continue
    for c in /etc/modprobe.d/vfio.conf /etc/dracut.conf.d/vfio.conf /etc/initramfs-tools/modules
    do if [ "$i" -ot "$c" ]; then echo "$i"; break; fi; done
  done
done"""

PROBE = "\n".join(
    [
        "echo '@@ cpuinfo'; grep -m2 -E '^(vendor_id|flags)[[:space:]]*:' /proc/cpuinfo",
        "echo '@@ cmdline'; cat /proc/cmdline",
        # DMAR (Intel VT-d) or IVRS (AMD-Vi): the firmware describes an IOMMU.
        "echo '@@ acpi'; ls /sys/firmware/acpi/tables",
        "echo '@@ lspci'; if command -v lspci >/dev/null; then lspci -Dnnk; else",
        _SYSFS_LSPCI,
        "fi",
        "echo '@@ groups'; for d in /sys/kernel/iommu_groups/*/devices/*; do"
        ' [ -e "$d" ] || continue; g=${d%/devices/*}; echo "IOMMU Group ${g##*/} ${d##*/}"; done',
        "echo '@@ boot_vga'; grep -H . /sys/bus/pci/devices/*/boot_vga",
        "echo '@@ dmesg'; dmesg | grep -i -e DMAR -e IOMMU -e AMD-Vi | tail -n 40",
        # EL9: the kernels' boot entries, and the arguments kernels installed later get.
        "echo '@@ grubby'; command -v grubby >/dev/null && grubby --info=ALL",
        "echo '@@ default_grub'; grep -E '^GRUB_CMDLINE_LINUX=' /etc/default/grub",
        # EL9 (leapp upgrades, Image Builder): kernel-install builds new kernels' BLS entries
        # from this file when it exists; grubby --update-kernel=ALL leaves it alone.
        "if [ -e /etc/kernel/cmdline ]; then echo '@@ kernel_cmdline'; cat /etc/kernel/cmdline; fi",
        # Framebuffers and the PCI device each draws on: a console on a GPU means the host uses it.
        "echo '@@ framebuffers'; for f in /sys/class/graphics/fb*; do"
        ' [ -e "$f/device" ] && echo "${f##*/} $(readlink -f "$f/device")"; done',
        # Debian: the arguments update-grub wrote for each kernel; initramfs-tools' module list.
        "echo '@@ grub_cfg'; grep -E '^[[:space:]]*linux[[:space:]]' /boot/grub/grub.cfg",
        "echo '@@ initramfs_modules'; cat /etc/initramfs-tools/modules",
        "echo '@@ stale_initramfs'",
        _STALE_INITRAMFS,
    ]
)


@dataclass
class VfioState:
    """What the host looks like for GPU passthrough."""

    cpu_vendor: str | None = None  # "intel" | "amd"
    cpu_flags: set[str] = field(default_factory=set)
    cmdline: list[str] = field(default_factory=list)
    acpi_tables: set[str] = field(default_factory=set)  # empty when unreadable
    functions: dict[str, PciFunction] = field(default_factory=dict)  # by address
    groups: dict[str, int] = field(default_factory=dict)  # address -> IOMMU group; empty: off
    boot_vga: set[str] = field(default_factory=set)
    dmesg: list[str] = field(default_factory=list)
    grubby: list[BootEntry] = field(default_factory=list)
    default_grub_cmdline: str | None = None
    kernel_cmdline: list[str] | None = None  # /etc/kernel/cmdline's arguments; None: no file
    framebuffers: dict[str, str] = field(default_factory=dict)  # PCI address -> fb0
    grub_cfg: list[list[str]] = field(default_factory=list)
    initramfs_modules: str = ""
    stale_initramfs: list[str] = field(default_factory=list)
    managed: host_state.State = field(default_factory=host_state.State)  # the role's files

    @property
    def iommu_active(self) -> bool:
        return bool(self.groups)

    def host_uses(self, address: str) -> list[str]:
        """How the host uses the function at ``address`` now (empty: it does not): a live
        unbind from such a driver can hang the host, so it happens only at boot."""
        uses = []
        function = self.functions.get(address)
        if function and function.driver and function.driver != "vfio-pci":
            uses.append(f"driver {function.driver}")
        if address in self.framebuffers:
            uses.append(f"console framebuffer {self.framebuffers[address]}")
        if address in self.boot_vga:
            uses.append("boot VGA")
        return uses

    def group_members(self, address: str) -> list[str]:
        """Every address in the IOMMU group of ``address`` (itself alone when unknown)."""
        group = self.groups.get(address)
        if group is None:
            return [address]
        return sorted(a for a, g in self.groups.items() if g == group)


def vfio_state(sections: dict[str, str]) -> VfioState:
    """Build the state from the probe's sections (each one command's output)."""
    get = sections.get
    vendor, flags = parse.parse_cpuinfo(get("cpuinfo", ""))
    functions = parse.parse_lspci(get("lspci", ""))
    groups, described = parse.parse_iommu_groups(get("groups", ""))
    for address, function in described.items():
        functions.setdefault(address, function)
    for address in groups:
        functions.setdefault(address, PciFunction(address))
    return VfioState(
        cpu_vendor=vendor,
        cpu_flags=flags,
        cmdline=parse.parse_cmdline(get("cmdline", "")),
        acpi_tables=set(get("acpi", "").split()),
        functions=functions,
        groups=groups,
        boot_vga=parse.parse_boot_vga(get("boot_vga", "")),
        dmesg=[line for line in get("dmesg", "").splitlines() if line.strip()],
        grubby=parse.parse_grubby(get("grubby", "")),
        default_grub_cmdline=parse.parse_default_grub_cmdline(get("default_grub", "")),
        kernel_cmdline=get("kernel_cmdline", "").split() if "kernel_cmdline" in sections else None,
        framebuffers=parse.parse_framebuffers(get("framebuffers", "")),
        grub_cfg=parse.parse_grub_cfg_linux(get("grub_cfg", "")),
        initramfs_modules=get("initramfs_modules", ""),
        stale_initramfs=get("stale_initramfs", "").split(),
    )


def from_host_state(state: host_state.State) -> VfioState:
    """The VfioState in a HostState read whose probe was PROBE."""
    vfio = vfio_state(parse.split_sections(state.probe))
    vfio.managed = state
    return vfio


def read(paths=()) -> VfioState:
    """Read the current host (one round trip): the probe, and the files at ``paths``."""
    return from_host_state(host_state.read(paths=paths, probe=PROBE))
