"""Which guest VM gets which GPU: where vfio_gpus and the VM role's list of VMs meet.

The contract between the two roles:
- ``vfio_gpus`` (roles/vfio) names the GPUs the hypervisor isolates: PCI addresses
  (0000:01:00.0) or vendor:device ids (10de:2204). The whole IOMMU group of each is bound to
  vfio-pci (the GPU and its HDMI audio function, ...).
- each VM in ``guest_vm_vms`` (roles/guest_vm) lists, under ``gpus``, the full PCI addresses
  it gets: every function of its GPU, e.g. ["0000:01:00.0", "0000:01:00.1"].

The preflight reads both on the host (``vm_gpus``) and refuses, before any change, a VM device
that vfio_gpus does not isolate, and a GPU (an IOMMU group) given to two VMs; there the facts
show which ids and groups the addresses belong to.
"""

from __future__ import annotations


def vm_gpus(host) -> dict[str, list[str]]:
    """The guest VMs' PCI devices on ``host``: VM name -> addresses (from guest_vm_vms)."""
    from roles.guest_vm.settings import GuestVmSettings  # the VM role's settings

    return {vm.name: list(vm.gpus) for vm in GuestVmSettings.from_host(host).machines()}


def vm_kernel_args(host) -> list[str]:
    """Kernel arguments the guest VMs need besides the IOMMU's (1 GiB hugepages, reserved at
    boot); this role sets them with its own, so one reboot applies both."""
    from roles.guest_vm.settings import GuestVmSettings  # the VM role's settings

    return GuestVmSettings.from_host(host).kernel_args()
