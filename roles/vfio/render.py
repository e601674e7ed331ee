"""What the vfio role writes, as pure functions of the platform and the verified functions."""

from __future__ import annotations

from collections.abc import Sequence

from roles.common.templates import render
from roles.preflight.parse import PciFunction

MODPROBE_CONF = "/etc/modprobe.d/vfio.conf"
DRACUT_CONF = "/etc/dracut.conf.d/vfio.conf"  # EL9
GRUB_DROPIN = "/etc/default/grub.d/vfio.cfg"  # Debian
INITRAMFS_MODULES = "/etc/initramfs-tools/modules"  # Debian, shared: this role keeps a block
OVERRIDE_SCRIPT = "/usr/local/sbin/aicoder-vfio-override"  # binding by PCI address
INITRAMFS_HOOK = "/etc/initramfs-tools/hooks/aicoder-vfio-override"  # Debian: the script inside
KERNEL_CMDLINE = "/etc/kernel/cmdline"  # EL9, when present: new kernels' arguments
MANAGED_FILES = (MODPROBE_CONF, DRACUT_CONF, GRUB_DROPIN, OVERRIDE_SCRIPT, INITRAMFS_HOOK)
BLOCK_MARKER = "# {mark} ai-coding-server vfio"

# Drivers that would otherwise grab a GPU's functions first: the GPU (nouveau, NVIDIA's), its
# HDMI audio, and, on cards with a USB-C port, its USB controller and UCSI (I2C) function.
SOFTDEPS = ["nouveau", "nvidia", "snd_hda_intel"]
USB_C_SOFTDEPS = ["xhci_hcd", "i2c_nvidia_gpu"]
_USB_C_CLASSES = ("0c03", "0c80")  # USB controller, serial bus controller (UCSI)

# Put in the initramfs with their dependencies (vfio_virqfd on kernels before 6.2 among them);
# vfio_iommu_type1 is only a soft dependency of vfio, so it is named.
INITRAMFS_DRIVERS = ["vfio", "vfio_iommu_type1", "vfio_pci"]


def kernel_args(platform: str | None) -> list[str]:
    """The IOMMU arguments: Intel's VT-d is off unless asked for; AMD-Vi is on by default
    (``amd_iommu=on`` is not a value the kernel knows: admin-guide/kernel-parameters.txt).
    ``iommu=pt`` leaves the host's own devices untranslated (passthrough domains)."""
    return ["intel_iommu=on", "iommu=pt"] if platform == "intel" else ["iommu=pt"]


def missing_args(present: list[str], wanted: list[str]) -> list[str]:
    """The wanted arguments not among ``present`` (a kernel command line's)."""
    return [arg for arg in wanted if arg not in present]


def passthrough_ids(functions: list[PciFunction], by_address=()) -> list[str]:
    """vendor:device ids of the functions, each once, in order; those of the functions bound
    ``by_address`` (their ids would take a card the host keeps) left out."""
    return list(dict.fromkeys(f.ids for f in functions if f.ids and f.address not in by_address))


def softdeps(functions: list[PciFunction]) -> list[str]:
    """Modules that must wait for vfio-pci: the usual GPU ones, the USB-C ones when a function
    is a USB or UCSI controller, and every module lspci names for the functions."""
    modules = list(SOFTDEPS)
    if any(f.class_code in _USB_C_CLASSES for f in functions):
        modules += USB_C_SOFTDEPS
    for function in functions:
        modules += function.modules
    skip = {"vfio_pci", "vfio-pci"}
    return sorted({m.replace("-", "_") for m in modules} - skip)


def modprobe_conf(functions: list[PciFunction], by_address: Sequence[str] = ()) -> str:
    """/etc/modprobe.d/vfio.conf: vfio-pci claims these ids (and, through the override script,
    the functions ``by_address``); the usual drivers load after it."""
    return render(
        "vfio/modprobe-vfio.conf.j2",
        ids=passthrough_ids(functions, by_address),
        addresses=list(by_address),
        script=OVERRIDE_SCRIPT,
        softdeps=softdeps(functions),
    )


def override_script(by_address: Sequence[str]) -> str:
    """The script modprobe runs to load vfio-pci: driver_override for these functions first
    (as TrueNAS binds by address), so a second card with the same ids stays with the host."""
    return render(
        "vfio/vfio-override.sh.j2", addresses=list(by_address), modprobe_conf=MODPROBE_CONF
    )


def initramfs_hook() -> str:
    """Debian: the initramfs-tools hook that copies the override script into the initramfs."""
    return render("vfio/initramfs-hook.sh.j2", script=OVERRIDE_SCRIPT, modprobe_conf=MODPROBE_CONF)


def dracut_conf(by_address: Sequence[str] = ()) -> str:
    """/etc/dracut.conf.d/vfio.conf (EL9): vfio-pci and its options (and the override script,
    when functions are bound by address) in the initramfs."""
    files = [MODPROBE_CONF, *([OVERRIDE_SCRIPT] if by_address else [])]
    return render("vfio/dracut-vfio.conf.j2", modules=INITRAMFS_DRIVERS, files=files)


def initramfs_modules() -> str:
    """The block this role keeps in /etc/initramfs-tools/modules (Debian)."""
    return render("vfio/initramfs-modules.j2", modules=INITRAMFS_DRIVERS).rstrip("\n")


def has_block(text: str, content: str) -> bool:
    """Whether ``text`` holds ``content`` between this role's block markers (files.block's)."""
    begin, end = BLOCK_MARKER.format(mark="BEGIN"), BLOCK_MARKER.format(mark="END")
    return f"{begin}\n{content}\n{end}" in text


def grub_dropin(args: list[str]) -> str:
    """/etc/default/grub.d/vfio.cfg (Debian): the arguments added for every kernel."""
    return render("vfio/grub-vfio.cfg.j2", args=args)


def with_args(present: list[str], args: list[str]) -> list[str] | None:
    """``present`` arguments with the missing ``args`` appended; None when none is missing."""
    missing = missing_args(present, args)
    return present + missing if missing else None


def default_grub_line(current: str | None, args: list[str]) -> str | None:
    """The GRUB_CMDLINE_LINUX line of /etc/default/grub with ``args`` added (EL9: the
    arguments kernels installed later get), or None when it has them all already."""
    present = (current or "").split()
    missing = missing_args(present, args)
    if not missing:
        return None
    return f'GRUB_CMDLINE_LINUX="{" ".join(present + missing)}"'
