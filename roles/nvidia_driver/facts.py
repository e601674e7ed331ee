"""The guest's driver state: a probe run inside the role's one HostState read, and its parser."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

# NVIDIA's PCI vendor id; display controllers are PCI class 0x03xxxx (VGA 0x0300, 3D 0x0302).
# Reads sysfs, so it works before any driver is installed.
# The UEFI variable whose data byte (after 4 attribute bytes) is 1 when Secure Boot is on.
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

GPU_PROBE = (
    "for d in /sys/bus/pci/devices/*; do "
    '[ "$(cat $d/vendor 2>/dev/null)" = 0x10de ] || continue; '
    'case "$(cat $d/class)" in 0x03*) echo "gpu ${d##*/}";; esac; done'
)


@dataclass
class DriverState:
    running_kernel: str = ""
    # The kernel the image metapackage (linux-image-amd64) is for: the newest, which GRUB boots
    # by default. headers_kernel: the one the headers metapackage is for; they match when both
    # come from one suite.
    target_kernel: str = ""
    headers_kernel: str = ""
    boot_kernels: set[str] = field(default_factory=set)  # /boot/vmlinuz-<kernel> present
    dkms: dict[str, set[str]] = field(default_factory=dict)  # kernel -> DKMS-installed modules
    loaded: set[str] = field(default_factory=set)  # of nvidia, nouveau
    gpus: list[str] = field(default_factory=list)  # PCI addresses of NVIDIA display devices
    has_initramfs_tools: bool = False
    secure_boot: bool = False

    def module_built(self, kernel: str) -> bool:
        """Whether an nvidia DKMS module (nvidia-current, nvidia, nvidia-open...) is installed."""
        return any(m.startswith("nvidia") for m in self.dkms.get(kernel, ()))

    @property
    def driver_loaded(self) -> bool:
        """The nvidia module drives the GPU (loaded, and nouveau not)."""
        return "nvidia" in self.loaded and "nouveau" not in self.loaded

    @property
    def reboot_pending(self) -> bool:
        """A GPU is there but the nvidia module is not loaded, or nouveau still holds it."""
        return bool(self.gpus) and not self.driver_loaded

    def pending_reasons(self) -> list[str]:
        """Why the driver cannot drive the GPU before a reboot, as the host is now."""
        reasons = []
        if self.gpus and "nouveau" in self.loaded:
            reasons.append("nouveau holds the GPU (blacklisted from the next boot on)")
        if not self.driver_loaded and self.target_kernel != self.running_kernel:
            reasons.append(
                f"the guest runs kernel {self.running_kernel}; the driver is built for "
                f"{self.target_kernel or 'the installed kernel'}, which boots next"
            )
        elif self.gpus and "nvidia" not in self.loaded:
            reasons.append("the nvidia module is not loaded")
        return reasons


# /lib/modules/6.1.0-28-amd64/updates/dkms/nvidia-current.ko (or .ko.xz where compressed)
_KO = re.compile(r"^/lib/modules/([^/]+)/updates/dkms/([^/]+?)\.ko(\.\w+)?$")


def parse_state(lines: list[str]) -> DriverState:
    state = DriverState()
    for line in lines:
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        if kind == "running":
            state.running_kernel = rest
        elif kind in ("image", "headers"):
            # ${Depends} of linux-image-amd64: "linux-image-6.1.0-28-amd64 (= 6.1.119-1)" (of
            # linux-headers-amd64: "linux-headers-6.1.0-28-amd64 (= 6.1.119-1)")
            match = re.match(r"linux-(?:image|headers)-(\S+)", rest)
            kernel = match.group(1) if match else ""
            if kind == "image":
                state.target_kernel = kernel
            else:
                state.headers_kernel = kernel
        elif kind == "boot":
            state.boot_kernels.add(rest)
        elif kind == "secureboot":
            state.secure_boot = rest == "1"
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


def probe(flavour: str = "amd64") -> str:
    """Shell that prints the lines :func:`parse_state` reads: kernels (running, the ones the
    image and headers metapackages are for, those in /boot), DKMS modules, loaded modules,
    NVIDIA GPUs, initramfs-tools, Secure Boot."""
    image, headers = (shlex.quote(f"linux-{kind}-{flavour}") for kind in ("image", "headers"))
    return "; ".join(
        [
            "echo running $(uname -r)",
            f"dpkg-query -W -f='image ${{Depends}}\\n' {image}",
            f"dpkg-query -W -f='headers ${{Depends}}\\n' {headers}",
            'for f in /boot/vmlinuz-*; do [ -e "$f" ] && echo boot ${f#/boot/vmlinuz-}; done',
            # What `dkms status` calls "installed", read from the files (dkms status takes 0.3 s):
            # DKMS installs the built modules under /lib/modules/<kernel>/updates/dkms/.
            "for f in /lib/modules/*/updates/dkms/nvidia*.ko*; do [ -e $f ] && echo ko $f; done",
            "for m in nvidia nouveau; do [ -d /sys/module/$m ] && echo loaded $m; done",
            GPU_PROBE,
            "command -v update-initramfs >/dev/null && echo initramfs yes",
            f"echo secureboot $(od -An -tu1 -j4 -N1 {SECURE_BOOT_VAR})",
            "true",
        ]
    )
