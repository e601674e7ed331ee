"""Fake hypervisor reads for the plan tests of preflight and vfio (sources: README-vfio.md).

The roles read a hypervisor with one HostState fact whose probe prints one section per source
(``@@ cmdline``, ``@@ groups``, ...). These helpers answer it from recorded outputs: a host is a
set of sections, each the recorded output of the command the probe runs, plus the files the
vfio role manages.
"""

from __future__ import annotations

import re

from harness import file_line, fixture, os_release_response

from roles.preflight import parse
from roles.preflight.evaluate import evaluate
from roles.preflight.facts import vfio_state
from roles.vfio import render

VFIO_READ = re.compile(r"echo '@@ cpuinfo'")  # the probe inside the HostState command

INTEL_CPU = fixture("cpuinfo-grep.intel-i7-4800mq.insights-fixture.txt")
AMD_CPU = fixture("cpuinfo-grep.amd-tcg-svm.debian-12-lab-vm.txt")
NO_VIRT_CPU = fixture("cpuinfo-grep.amd-no-svm.debian-12-build-machine.txt")
NO_IOMMU_ACPI = fixture("acpi-tables.debian-12-build-machine.txt")  # no DMAR, no IVRS

# The X570 host of yyu/vm: GT 710 (24:00.x) passed through, RX 570 (2d:00.x) for the host.
X570_GROUPS = fixture("iommu-groups.clean.gt710-x570.ubuntu-20.04.txt")
X570_LSPCI_BOUND = fixture("lspci-nnk.gt710-vfio.x570.ubuntu-20.04.txt")
GT710 = "0000:24:00.0"
# The same host before the binding (constructed from it): the GT 710 on the drivers its lspci
# names (nouveau, snd_hda_intel), nouveau's framebuffer console fb1 on it.
X570_LSPCI_HOST = re.sub(
    r"(24:00\.0 .*\n.*\n\tKernel driver in use: )vfio-pci", r"\1nouveau", X570_LSPCI_BOUND
).replace("Kernel driver in use: vfio-pci", "Kernel driver in use: snd_hda_intel")
X570_FRAMEBUFFERS = (
    "fb0 /sys/devices/pci0000:00/0000:00:03.1/0000:2d:00.0\n"
    "fb1 /sys/devices/pci0000:00/0000:00:03.2/0000:24:00.0\n"
)
# No source prints boot_vga (SOURCES.md); these lines say what yyu/vm describes: the RX 570
# drives the host's display.
X570_BOOT_VGA = (
    "/sys/bus/pci/devices/0000:24:00.0/boot_vga:0\n/sys/bus/pci/devices/0000:2d:00.0/boot_vga:1\n"
)


def probe_lines(**sections: str) -> list[str]:
    """The probe's output for these sections (name -> the recorded command output)."""
    lines = []
    for name, text in sections.items():
        lines.append(f"probe @@ {name}")
        lines += [f"probe {line}" for line in text.splitlines()]
    return lines


def host(os_release: str = "os-release.rocky-9.4.txt", files: dict | None = None, **sections):
    """Fake responses of a hypervisor: its os-release, the VFIO read (with ``files``, path ->
    content, as the role writes them) and, for files.line when it runs, the recorded
    GRUB_CMDLINE_LINUX line of /etc/default/grub."""
    lines = [file_line(path, content) for path, content in (files or {}).items()]
    found: dict = {VFIO_READ: "\n".join(lines + probe_lines(**sections))}
    grub = [line for line in sections.get("default_grub", "").splitlines()
            if line.startswith("GRUB_CMDLINE_LINUX=")]  # fmt: skip
    if grub:
        found[re.compile(r"GRUB_CMDLINE_LINUX=.* /etc/default/grub")] = grub
    found.update(os_release_response(fixture(os_release)))
    return found


def grubby_after(recorded: str, args: list[str]) -> str:
    """``grubby --info=ALL`` after ``grubby --update-kernel=ALL --args=...``: each entry's args
    with those it lacked appended."""

    def add(match):
        present = match[1].split()
        return 'args="' + " ".join(present + render.missing_args(present, args)) + '"'

    return re.sub(r'^args="([^"]*)"', add, recorded, flags=re.M)


def el9_fresh_amd(files: dict | None = None, **extra):
    """Rocky 9.4, an AMD CPU (AMD-Vi on by default: IOMMU groups present), the X570 board with
    its GT 710 alone in group 23, no IOMMU arguments yet, nothing of the vfio role's yet."""
    sections = {
        "cpuinfo": AMD_CPU,
        "cmdline": fixture("cmdline.rocky-9.4.no-iommu.txt"),
        "groups": X570_GROUPS,
        "boot_vga": X570_BOOT_VGA,
        "dmesg": fixture("dmesg-iommu.amd-vi.ubuntu-20.04.no-params.txt"),
        "grubby": fixture("grubby-info-all.rocky-9.1.txt"),
        "default_grub": fixture("default-grub.almalinux-9.4.txt"),
    }
    sections.update(extra)
    return host(files=files, **sections)


# The Z370 host of asokolsky's notes (Intel; GT 1030 at 01:00.x behind the CPU's x16 root port
# 00:01.0, all three in IOMMU group 2; the iGPU 00:02.0 drives the host).
Z370_GROUPS = fixture("iommu-groups.shared-root-port.gt1030.ubuntu-6.8.txt")
GT1030 = ["0000:01:00.0", "0000:01:00.1"]
# Its `lspci -nn` while the IOMMU is off: the recorded group listing's lspci lines without the
# group prefix (the recording has no drivers).
Z370_LSPCI = re.sub(r"^IOMMU group \d+ ", "", Z370_GROUPS, flags=re.M)
Z370_BOOT_VGA = (  # constructed, as for the X570: the iGPU is the boot VGA
    "/sys/bus/pci/devices/0000:00:02.0/boot_vga:1\n/sys/bus/pci/devices/0000:01:00.0/boot_vga:0\n"
)


def bound(lspci: str, addresses: list[str]) -> str:
    """``lspci`` with "Kernel driver in use: vfio-pci" under each of ``addresses`` (constructed:
    what the binding leaves)."""
    short = {a.removeprefix("0000:") for a in addresses}
    out = []
    for line in lspci.splitlines():
        out.append(line)
        if line.split(" ", 1)[0] in short:
            out.append("\tKernel driver in use: vfio-pci")
    return "\n".join(out) + "\n"


def el9_fresh_intel(files: dict | None = None, **extra):
    """Rocky 9.4 on the Z370 (Intel): no IOMMU arguments, so the IOMMU is off (no groups), the
    GPU behind the root port, nothing of the vfio role's yet."""
    sections = {
        "cpuinfo": INTEL_CPU,
        "cmdline": fixture("cmdline.rocky-9.4.no-iommu.txt"),
        "lspci": Z370_LSPCI,
        "boot_vga": Z370_BOOT_VGA,
        "grubby": fixture("grubby-info-all.rocky-9.1.txt"),
        "default_grub": fixture("default-grub.almalinux-9.4.txt"),
    }
    sections.update(extra)
    return host(files=files, **sections)


def rebooted(recorded_cmdline: str, args: list[str], **sections) -> dict:
    """Sections of a host after the vfio role's files and the reboot: ``args`` in
    /proc/cmdline, every boot entry and /etc/default/grub (constructed from the recorded ones
    the way grubby and the role's line edit change them)."""
    default_grub = fixture("default-grub.almalinux-9.4.txt")
    line = render.default_grub_line(parse.parse_default_grub_cmdline(default_grub), args)
    return {
        "cmdline": " ".join(render.with_args(recorded_cmdline.split(), args) or []),
        "grubby": grubby_after(fixture("grubby-info-all.rocky-9.1.txt"), args),
        "default_grub": re.sub(r"^GRUB_CMDLINE_LINUX=.*$", line or "", default_grub, flags=re.M),
        **sections,
    }


def isolated_gpus(addresses: list[str], os_release: str = "os-release.debian-12.txt"):
    """(host data, fake responses) of a hypervisor where the vfio role has converged for the
    GPU functions ``addresses`` (one IOMMU group per slot, every function on vfio-pci): for
    plan tests of roles that pass those GPUs to VMs (guest_vm). Built, not recorded."""
    gpus = sorted({a for a in addresses if a.endswith(".0")}) or sorted(addresses)[:1]
    groups, lspci = [], []
    for address in sorted(addresses):
        gpu = address.endswith(".0")
        kind, ids = ("VGA compatible controller [0300]", "10de:2204") if gpu else (
            "Audio device [0403]", "10de:1aef")  # fmt: skip
        line = f"{address} {kind}: NVIDIA Corporation Device [{ids}] (rev a1)"
        groups.append(f"IOMMU Group {20 + int(address.split(':')[1], 16)} {line}")
        lspci += [line, "\tKernel driver in use: vfio-pci"]
    sections = {
        "cpuinfo": AMD_CPU,
        "cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro iommu=pt",
        "lspci": "\n".join(lspci),
        "groups": "\n".join(groups),
        "grubby": 'index=0\nkernel="/boot/vmlinuz"\nargs="ro iommu=pt"\n',
        "default_grub": 'GRUB_CMDLINE_LINUX="iommu=pt"\n',
        "grub_cfg": "\tlinux /vmlinuz root=/dev/sda1 ro iommu=pt\n",
        "initramfs_modules": "\n".join(
            [
                render.BLOCK_MARKER.format(mark="BEGIN"),
                render.initramfs_modules(),
                render.BLOCK_MARKER.format(mark="END"),
            ]
        ),
    }
    verdict = evaluate(vfio_state(sections), gpus)
    files = {
        render.MODPROBE_CONF: render.modprobe_conf(verdict.passthrough),
        render.DRACUT_CONF: render.dracut_conf(),
        render.GRUB_DROPIN: render.grub_dropin(render.kernel_args(verdict.platform)),
    }
    return {"vfio_gpus": gpus}, host(os_release, files=files, **sections)


def recorded_host(name: str, os_release: str = "os-release.debian-12.txt", gpus=()):
    """Fake responses from a whole recorded read (tests/plan/fixtures/vfio-host.*.txt), with
    the role's files as it writes them for that host and ``gpus`` (the recordings hold the
    probe's sections only)."""
    sections = parse.split_sections(fixture(name).splitlines())
    files = {}
    if gpus:
        verdict = evaluate(vfio_state(sections), list(gpus))
        files = {
            render.MODPROBE_CONF: render.modprobe_conf(verdict.passthrough),
            render.GRUB_DROPIN: render.grub_dropin(render.kernel_args(verdict.platform)),
        }
    return host(os_release, files=files, **sections)
