"""The preflight's judgement, as pure functions of the host's state and the settings.

Every problem is collected (not only the first), each saying what is wrong and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from roles.common.checks import PCI_ADDRESS
from roles.preflight.facts import VfioState
from roles.preflight.parse import PciFunction, slot_of

# Arguments that keep the IOMMU off; this deploy adds arguments, it never removes any.
_IOMMU_OFF = ("intel_iommu=off", "amd_iommu=off", "iommu=off")
_FIRMWARE_SWITCH = {
    "intel": "VT-d (Intel Virtualization Technology for Directed I/O)",
    "amd": "the IOMMU (AMD-Vi)",
    None: "VT-d (Intel) or the IOMMU / AMD-Vi (AMD)",
}


@dataclass
class Verdict:
    """What the preflight found on one host."""

    problems: list[str] = field(default_factory=list)
    platform: str | None = None  # "intel" | "amd": whose IOMMU, for the kernel arguments
    # Off now, on after a reboot with the arguments the deploy sets: the GPUs' slots are bound
    # already, and their IOMMU groups checked after that reboot.
    iommu_pending: bool = False
    passthrough: list[PciFunction] = field(default_factory=list)  # verified, to bind to vfio-pci
    # Of those, the ones whose vendor:device ids a device the host keeps has too: vfio-pci takes
    # them by PCI address (driver_override), never by ``ids=``.
    by_address: list[str] = field(default_factory=list)


def platform_of(state: VfioState) -> str | None:
    """Whose IOMMU the firmware describes (its ACPI table: DMAR is Intel's, IVRS AMD's); the
    CPU vendor when the tables cannot be read."""
    if "DMAR" in state.acpi_tables:
        return "intel"
    if "IVRS" in state.acpi_tables:
        return "amd"
    return state.cpu_vendor


def evaluate(
    state: VfioState, gpus: Sequence[str], vm_gpus: Mapping[str, Sequence[str]] | None = None
) -> Verdict:
    """Judge the host for passing ``gpus`` (vfio_gpus) through to the VMs in ``vm_gpus``
    (VM name -> PCI addresses). Nothing to judge when no GPU is configured."""
    verdict = Verdict(platform=platform_of(state))
    vm_gpus = vm_gpus or {}
    if not gpus and not any(vm_gpus.values()):
        return verdict
    problems = verdict.problems
    if not state.cpu_flags & {"vmx", "svm"}:
        problems.append(
            "CPU: no virtualization extensions (neither vmx nor svm in /proc/cpuinfo): enable "
            "Intel VT-x or AMD-V (SVM) in the firmware setup"
        )
    problems += _iommu_problems(state, verdict)

    chosen: dict[str, list[str]] = {}  # GPU setting -> addresses it names
    for gpu in gpus:
        found = _resolve(state, gpu)
        if not found:
            problems.append(_not_found(state, gpu))
        chosen[gpu] = found

    passing: dict[str, PciFunction] = {}
    for gpu, addresses in chosen.items():
        for address in addresses:
            members, group_problems = _group(state, gpu, address)
            problems += group_problems
            passing.update({m: state.functions[m] for m in members})
    problems += _boot_vga_problems(state, passing)
    problems += assignment_problems(state, passing, vm_gpus)

    if not problems:
        verdict.passthrough = [passing[a] for a in sorted(passing)]
        shared = shared_ids(state, passing)
        verdict.by_address = [a for a in sorted(passing) if passing[a].ids in shared]
    return verdict


def _iommu_problems(state: VfioState, verdict: Verdict) -> list[str]:
    if state.iommu_active:
        return []
    switch = _FIRMWARE_SWITCH[verdict.platform]
    off = [arg for arg in state.cmdline if arg in _IOMMU_OFF]
    if off:
        return [
            f"IOMMU: the kernel command line has {' '.join(off)}, which keeps it off; remove "
            "it (EL9: grubby --update-kernel=ALL --remove-args=...; Debian: /etc/default/grub "
            "and update-grub): this deploy adds arguments, it does not remove any"
        ]
    if state.acpi_tables and not state.acpi_tables & {"DMAR", "IVRS"}:
        return [
            f"IOMMU: off, and the firmware describes none (no DMAR or IVRS ACPI table): enable "
            f"{switch} in the firmware (BIOS/UEFI) setup"
        ]
    if verdict.platform == "intel" and "intel_iommu=on" not in state.cmdline:
        verdict.iommu_pending = True  # the deploy adds intel_iommu=on; groups show after reboot
        return []
    seen = "; dmesg says: " + " | ".join(state.dmesg[-3:]) if state.dmesg else ""
    return [
        f"IOMMU: not active (no /sys/kernel/iommu_groups), although the firmware describes one "
        f"and no kernel argument turns it off: check that {switch} is enabled in the firmware "
        "setup and look at "
        f"`dmesg | grep -i -e DMAR -e IOMMU -e AMD-Vi`{seen}"
    ]


def _resolve(state: VfioState, gpu: str) -> list[str]:
    """The addresses a vfio_gpus entry names: itself, or every function with those ids."""
    if re.fullmatch(PCI_ADDRESS, gpu):
        return [gpu] if gpu in state.functions else []
    return sorted(a for a, f in state.functions.items() if f.ids == gpu)


def _not_found(state: VfioState, gpu: str) -> str:
    displays = [f.label() for f in state.functions.values() if f.is_display]
    found = "; display controllers here: " + ", ".join(displays) if displays else ""
    what = "no PCI device at" if re.fullmatch(PCI_ADDRESS, gpu) else "no PCI device with ids"
    return f"vfio_gpus {gpu}: {what} {gpu} on this host (see `lspci -Dnn`){found}"


def _group(state: VfioState, gpu: str, address: str) -> tuple[list[str], list[str]]:
    """The functions that go with the GPU at ``address`` (its IOMMU group; its slot while the
    IOMMU is off) and the problems with them."""
    function = state.functions[address]
    problems = []
    if not function.is_display:
        problems.append(
            f"vfio_gpus {gpu}: {function.label()} is not a GPU (display controller); name the "
            "GPU's own function (usually .0): the other functions of its group go along"
        )
    if not state.iommu_active:
        slot = slot_of(address)
        return sorted(a for a in state.functions if slot_of(a) == slot), problems
    # Bridges (the root port without ACS the GPU sits behind, on most Intel desktops) may share
    # the group: they stay with the host and are never passed, bound or waited for.
    members = [m for m in state.group_members(address) if not state.functions[m].is_bridge]
    strangers = [m for m in members if slot_of(m) != slot_of(address)]
    if strangers:
        listed = ", ".join(state.functions[m].label() for m in strangers)
        problems.append(
            f"vfio_gpus {gpu}: {address} shares IOMMU group {state.groups[address]} with "
            f"{listed}; a group goes to a VM whole, and these devices belong to the host "
            "(a chipset device without ACS isolation). Move the card to a slot whose IOMMU "
            "group holds only the card's own functions (and PCI bridges), or choose another GPU"
        )
    return members, problems


def _boot_vga_problems(state: VfioState, passing: dict[str, PciFunction]) -> list[str]:
    return [
        f"vfio_gpus: {passing[address].label()} is the host's boot VGA (boot_vga=1): the "
        "firmware and the host console use it. Pass a second GPU, or make another adapter the "
        "primary display in the firmware setup"
        for address in sorted(passing)
        if address in state.boot_vga
    ]


def shared_ids(state: VfioState, passing: Mapping[str, PciFunction]) -> set[str]:
    """The ids of passed functions that a device the host keeps has too (a second card of the
    same model): ``options vfio-pci ids=`` would take that one from the host as well."""
    return {
        f.ids
        for a, f in state.functions.items()
        if f.ids and a not in passing and f.ids in {p.ids for p in passing.values()}
    }


def assignment_problems(
    state: VfioState, passing: Mapping[str, PciFunction], vm_gpus: Mapping[str, Sequence[str]]
) -> list[str]:
    """Each VM's PCI devices must be isolated by vfio_gpus, and an IOMMU group (or, while the
    IOMMU is off, a slot) can go to one VM only."""
    problems = []
    owner: dict[object, str] = {}
    for vm, addresses in vm_gpus.items():
        for address in addresses:
            if address not in passing:
                problems.append(
                    f"guest VM {vm!r}: gets {address}, which vfio_gpus does not pass through; "
                    "add its GPU to vfio_gpus (the whole IOMMU group is bound to vfio-pci)"
                )
                continue
            unit = state.groups.get(address, slot_of(address))
            if owner.setdefault(unit, vm) != vm:
                problems.append(
                    f"guest VM {vm!r}: gets {address}, but its GPU is given to VM "
                    f"{owner[unit]!r} too; a GPU (its whole IOMMU group) goes to one VM only"
                )
    return problems
