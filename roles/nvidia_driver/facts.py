"""The guest's driver state: a probe run inside the role's one HostState read, and its parser."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

# NVIDIA's PCI vendor id; display controllers are PCI class 0x03xxxx (VGA 0x0300, 3D 0x0302).
# Reads sysfs, so it works before any driver is installed.
GPU_PROBE = (
    "for d in /sys/bus/pci/devices/*; do "
    '[ "$(cat $d/vendor 2>/dev/null)" = 0x10de ] || continue; '
    'case "$(cat $d/class)" in 0x03*) echo "gpu ${d##*/}";; esac; done'
)


@dataclass
class DriverState:
    running_kernel: str = ""
    target_kernel: str = ""  # the kernel the headers meta package is for (what boots next)
    dkms: dict[str, set[str]] = field(default_factory=dict)  # kernel -> DKMS-installed modules
    loaded: set[str] = field(default_factory=set)  # of nvidia, nouveau
    gpus: list[str] = field(default_factory=list)  # PCI addresses of NVIDIA display devices
    has_initramfs_tools: bool = False

    def module_built(self, kernel: str) -> bool:
        """Whether an nvidia DKMS module (nvidia-current, nvidia, nvidia-open...) is installed."""
        return any(m.startswith("nvidia") for m in self.dkms.get(kernel, ()))

    @property
    def reboot_pending(self) -> bool:
        """A GPU is there but the nvidia module is not loaded, or nouveau still holds it."""
        return bool(self.gpus) and ("nvidia" not in self.loaded or "nouveau" in self.loaded)


# /lib/modules/6.1.0-28-amd64/updates/dkms/nvidia-current.ko (or .ko.xz where compressed)
_KO = re.compile(r"^/lib/modules/([^/]+)/updates/dkms/([^/]+?)\.ko(\.\w+)?$")


def parse_state(lines: list[str]) -> DriverState:
    state = DriverState()
    for line in lines:
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        if kind == "running":
            state.running_kernel = rest
        elif kind == "headers":
            # ${Depends} of linux-headers-amd64: "linux-headers-6.1.0-28-amd64 (= 6.1.119-1)"
            match = re.match(r"linux-headers-(\S+)", rest)
            state.target_kernel = match.group(1) if match else ""
        elif kind == "ko":
            match = _KO.match(rest)
            if match:
                state.dkms.setdefault(match.group(1), set()).add(match.group(2))
        elif kind == "loaded":
            state.loaded.add(rest)
        elif kind == "gpu":
            state.gpus.append(rest)
        elif kind == "initramfs":
            state.has_initramfs_tools = True
    return state


def probe(headers_package: str = "linux-headers-amd64") -> str:
    """Shell that prints the lines :func:`parse_state` reads: kernels (running, and the one the
    headers package is for), DKMS modules, loaded modules, NVIDIA GPUs, initramfs-tools."""
    return "; ".join(
        [
            "echo running $(uname -r)",
            f"dpkg-query -W -f='headers ${{Depends}}\\n' {shlex.quote(headers_package)}",
            # What `dkms status` calls "installed", read from the files (dkms status takes 0.3 s):
            # DKMS installs the built modules under /lib/modules/<kernel>/updates/dkms/.
            "for f in /lib/modules/*/updates/dkms/nvidia*.ko*; do [ -e $f ] && echo ko $f; done",
            "for m in nvidia nouveau; do [ -d /sys/module/$m ] && echo loaded $m; done",
            GPU_PROBE,
            "command -v update-initramfs >/dev/null && echo initramfs yes",
            "true",
        ]
    )
