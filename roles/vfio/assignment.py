"""Which guest VM gets which GPU: where vfio_gpus and the VM role's list of VMs meet.

The contract between the two roles:
- ``vfio_gpus`` (roles/vfio) names the GPUs the hypervisor isolates: PCI addresses
  (0000:01:00.0) or vendor:device ids (10de:2204). The whole IOMMU group of each is bound to
  vfio-pci (the GPU and its HDMI audio function, ...).
- each VM in ``guest_vm_vms`` (roles/guest_vm) lists, under ``gpus``, the full PCI addresses
  it gets: every function of its GPU, e.g. ["0000:01:00.0", "0000:01:00.1"].

The preflight reads both on the host (``vm_gpus``) and refuses, before any change, a VM device
that vfio_gpus does not isolate, and a GPU (an IOMMU group) given to two VMs; there the facts
show which ids and groups the addresses belong to. Where only settings are visible (a settings
``check()``), ``settings_problems`` does what can be done without the host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from roles.common.checks import PCI_ADDRESS
from roles.preflight.parse import slot_of

Problem = tuple[str, str]


def vm_gpus(host) -> dict[str, list[str]]:
    """The guest VMs' PCI devices on ``host``: VM name -> addresses (from guest_vm_vms)."""
    from roles.guest_vm.settings import GuestVmSettings  # the VM role's settings

    return {vm.name: list(vm.gpus) for vm in GuestVmSettings.from_host(host).machines()}


def settings_problems(
    vfio_gpus: Sequence[str], vms: Mapping[str, Sequence[str]], key: str = "guest_vm_vms"
) -> list[Problem]:
    """Problems seen from the settings alone: a VM device outside every slot vfio_gpus names
    by address, and a slot given to two VMs. vfio_gpus given as ids are checked by the
    preflight only (which devices have them is known on the host)."""
    by_address = {slot_of(g) for g in vfio_gpus if re.fullmatch(PCI_ADDRESS, g)}
    by_ids = len(by_address) < len(vfio_gpus)
    problems: list[Problem] = []
    owner: dict[str, str] = {}
    for vm, addresses in vms.items():
        for address in addresses:
            slot = slot_of(address)
            if slot not in by_address and not by_ids:
                problems.append(
                    (key, f"VM {vm!r} gets {address}, which vfio_gpus does not pass through; "
                     f"add its GPU ({slot}.0) to vfio_gpus")
                )  # fmt: skip
            if owner.setdefault(slot, vm) != vm:
                problems.append(
                    (key, f"VM {vm!r} gets {address}, but {slot} is given to VM {owner[slot]!r} "
                     "too; a GPU goes to one VM only")
                )  # fmt: skip
    return problems
