"""Pure parsers for what the VFIO host fact reads: each takes one command's output as text.

Unit-tested on recorded outputs (tests/fixtures/el9/). lspci output may come with or
without the PCI domain (``-D``); addresses are normalized to the full form 0000:01:00.0.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

_ADDRESS = r"(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
_DEVICE_LINE = re.compile(rf"^(?P<address>{_ADDRESS})(?:\s+(?P<rest>.+))?$")
_CLASS = re.compile(r"^(?P<name>[^\[:]+?)(?: \[(?P<code>[0-9a-fA-F]{4})\])?: (?P<desc>.*)$")
_IDS = re.compile(r"\[([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\]")
_GROUP_LINE = re.compile(r"^IOMMU [Gg]roup (?P<group>\d+):?\s*(?P<rest>.*)$")
_BOOT_VGA = re.compile(rf"/devices/(?P<address>{_ADDRESS})/boot_vga:(?P<value>\d)")


def full_address(address: str) -> str:
    """0000:01:00.0 for 01:00.0 (lspci without -D leaves out domain 0000), lower case."""
    address = address.lower()
    return address if address.count(":") == 2 else f"0000:{address}"


def slot_of(address: str) -> str:
    """The slot an address is a function of: 0000:01:00 for 0000:01:00.1."""
    return address.rpartition(".")[0]


@dataclass
class PciFunction:
    """One PCI function as lspci shows it."""

    address: str
    class_name: str = ""
    class_code: str = ""  # "0300"; empty when lspci ran without -nn
    ids: str = ""  # "10de:2204"; empty when lspci ran without -nn
    description: str = ""
    driver: str | None = None  # "Kernel driver in use"
    modules: list[str] = field(default_factory=list)  # "Kernel modules"

    @property
    def is_display(self) -> bool:
        """A VGA, 3D or other display controller (PCI base class 03)."""
        if self.class_code:
            return self.class_code.startswith("03")
        return any(w in self.class_name for w in ("VGA", "3D controller", "Display controller"))

    @property
    def is_bridge(self) -> bool:
        """A PCI bridge or PCIe root/downstream port (class 0604, driver pcieport): it routes the
        GPU's traffic and stays with the host; vfio-pci never binds it (the kernel lets a
        group hold bridges beside the functions it passes)."""
        if self.class_code:
            return self.class_code == "0604"
        return self.driver == "pcieport" or self.class_name == "PCI bridge"

    def label(self) -> str:
        """``0000:01:00.1 Audio device [10de:1aef]`` for messages."""
        ids = f" [{self.ids}]" if self.ids else ""
        return f"{self.address} {self.class_name}{ids}".strip()


def parse_device_line(line: str) -> PciFunction | None:
    """One lspci device line (``lspci -nn`` form, with or without the domain)."""
    match = _DEVICE_LINE.match(line.strip())
    if not match:
        return None
    function = PciFunction(full_address(match["address"]))
    klass = _CLASS.match(match["rest"] or "")
    if klass:
        function.class_name = klass["name"].strip()
        function.class_code = (klass["code"] or "").lower()
        function.description = klass["desc"].strip()
    else:
        function.description = (match["rest"] or "").strip()
    ids = _IDS.findall(function.description)
    if ids:
        vendor, device = ids[-1]  # the last [xxxx:xxxx] is the device's; names may hold brackets
        function.ids = f"{vendor}:{device}".lower()
    return function


def parse_lspci(text: str) -> dict[str, PciFunction]:
    """``lspci -Dnnk`` (or ``-nnk``, ``-k``, grep-filtered) -> functions by full address."""
    functions: dict[str, PciFunction] = {}
    current = None
    for line in text.splitlines():
        if not line.strip() or line.strip() == "--":
            continue
        if line[0].isspace():
            if current is None:
                continue
            key, _, value = line.strip().partition(":")
            if key == "Kernel driver in use":
                current.driver = value.strip()
            elif key == "Kernel modules":
                current.modules = [m.strip() for m in value.split(",") if m.strip()]
            continue
        current = parse_device_line(line)
        if current:
            functions[current.address] = current
    return functions


def parse_iommu_groups(text: str) -> tuple[dict[str, int], dict[str, PciFunction]]:
    """The IOMMU group listing -> (group of each address, functions described in it).

    Reads the usual forms: ``IOMMU Group 1:`` followed by indented ``lspci -nns`` lines,
    ``IOMMU Group 1 <lspci -nns line>`` on one line, and the bare ``IOMMU Group 1 <address>``
    the fact prints.
    """
    groups: dict[str, int] = {}
    described: dict[str, PciFunction] = {}
    current = None
    for line in text.splitlines():
        if not line.strip():
            continue
        header = _GROUP_LINE.match(line.strip())
        if header:
            current = int(header["group"])
            device = header["rest"]
        elif line[0].isspace() and current is not None:
            device = line.strip()
        else:
            continue
        function = parse_device_line(device) if device else None
        if function:
            groups[function.address] = current
            if function.class_name or function.description:
                described[function.address] = function
    return groups, described


def parse_boot_vga(text: str) -> set[str]:
    """``grep -H . /sys/bus/pci/devices/*/boot_vga`` -> addresses whose boot_vga is 1."""
    return {
        full_address(m["address"])
        for m in map(_BOOT_VGA.search, text.splitlines())
        if m and m["value"] == "1"
    }


def parse_framebuffers(text: str) -> dict[str, str]:
    """``fb0 /sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0`` lines -> {address: "fb0"}
    (framebuffers of no PCI device, such as simple-framebuffer, are left out)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, _, device = line.strip().partition(" ")
        address = device.rpartition("/")[2]
        if re.fullmatch(_ADDRESS, address):
            found.setdefault(full_address(address), name)
    return found


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """The vendor_id and flags lines of /proc/cpuinfo -> ("intel" | "amd" | None, flags)."""
    vendor, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id":
            vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(value.strip())
        elif key == "flags":
            flags = set(value.split())
    return vendor, flags


def parse_cmdline(text: str) -> list[str]:
    """/proc/cmdline -> its arguments."""
    return text.split()


@dataclass
class BootEntry:
    """One boot entry as ``grubby --info=ALL`` lists it."""

    index: int
    kernel: str = ""
    args: list[str] = field(default_factory=list)


def parse_grubby(text: str) -> list[BootEntry]:
    """``grubby --info=ALL`` -> its boot entries (kernel and arguments)."""
    entries: list[BootEntry] = []
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        value = value.strip().strip('"')
        if key == "index":
            entries.append(BootEntry(int(value)))
        elif entries and key == "kernel":
            entries[-1].kernel = value
        elif entries and key == "args":
            entries[-1].args = value.split()
    return entries


def parse_grub_cfg_linux(text: str) -> list[list[str]]:
    """The ``linux`` lines of grub.cfg -> the kernel arguments of each (path left out)."""
    return [line.split()[2:] for line in text.splitlines() if line.split()[:1] == ["linux"]]


def parse_default_grub_cmdline(text: str) -> str | None:
    """The GRUB_CMDLINE_LINUX value in /etc/default/grub (None when the line is missing)."""
    value = None
    for line in text.splitlines():
        if line.startswith("GRUB_CMDLINE_LINUX="):
            value = " ".join(shlex.split(line.partition("=")[2], posix=True))
    return value


def split_sections(lines: list[str]) -> dict[str, str]:
    """The fact's output, ``@@ name`` lines heading each command's output -> name: text."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith("@@ "):
            current = line[3:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(body) for name, body in sections.items()}
