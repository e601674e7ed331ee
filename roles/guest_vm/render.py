"""Pure rendering for the guest_vm role: file locations, the domain XML, the cloud-init seed."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from urllib.parse import urlparse

import yaml

from roles.common.templates import render as template
from roles.guest_vm.settings import Vm

STATE_DIR = "/etc/aicoder/vms"  # what the deploy last defined, and the seeds' sources
GIB = 1024**3


@dataclass(frozen=True)
class VmPaths:
    disk: str  # the VM's system disk, created once from the image
    seed: str  # its cloud-init NoCloud seed ISO (volume label cidata)
    seed_dir: str  # the seed's files, as uploaded
    seed_sum: str  # sha256 of the seed's content the ISO was built from
    xml: str  # the domain XML last defined

    @classmethod
    def of(cls, vm: Vm, image_dir: str) -> VmPaths:
        return cls(
            disk=f"{image_dir}/{vm.name}.qcow2",
            seed=f"{image_dir}/{vm.name}-seed.iso",
            seed_dir=f"{STATE_DIR}/{vm.name}.cloud-init",
            seed_sum=f"{STATE_DIR}/{vm.name}.cloud-init.sha256",
            xml=f"{STATE_DIR}/{vm.name}.xml",
        )


def cached_image(image_url: str, image_dir: str) -> str:
    """Where the downloaded image is kept: its file name under ``<image_dir>/cache``."""
    return f"{image_dir}/cache/{posixpath.basename(urlparse(image_url).path)}"


@dataclass(frozen=True)
class PciAddress:
    domain: str
    bus: str
    slot: str
    function: str

    @classmethod
    def parse(cls, address: str) -> PciAddress:
        domain, bus, rest = address.split(":")
        slot, function = rest.split(".")
        return cls(domain, bus, slot, function)


@dataclass(frozen=True)
class GuestSlot:
    """One host PCI slot passed through (a GPU with its audio function, ...): in the guest it
    sits alone on a root port (bus ``bus``) with the host's function numbers, multifunction."""

    bus: int
    functions: tuple[PciAddress, ...]

    @property
    def multifunction(self) -> bool:
        return len(self.functions) > 1


def guest_slots(gpus: list[str]) -> list[GuestSlot]:
    """The passed functions grouped by host slot, in order, each group on its own root port
    (buses 1, 2, ...): the guest's driver sees the GPU and its audio as one device, as on the
    host."""
    groups: dict[tuple[str, str, str], list[PciAddress]] = {}
    for address in gpus:
        pci = PciAddress.parse(address)
        groups.setdefault((pci.domain, pci.bus, pci.slot), []).append(pci)
    return [
        GuestSlot(i, tuple(sorted(functions, key=lambda f: f.function)))
        for i, functions in enumerate(groups.values(), start=1)
    ]


def domain_xml(
    vm: Vm, domain_type: str, bridge: str, paths: VmPaths, hugepage_size: str = "2M"
) -> str:
    """The libvirt domain for ``vm``: q35, UEFI, virtio disk and NIC, GPUs as managed
    multifunction hostdevs with a 64-bit MMIO window for their BARs, optional hugepages of
    ``hugepage_size``, NUMA placement and emulator thread pinning."""
    return template(
        "guest_vm/domain.xml.j2",
        vm=vm,
        domain_type=domain_type,
        bridge=bridge,
        disk=paths.disk,
        seed=paths.seed,
        slots=guest_slots(vm.gpus),
        gigantic=hugepage_size == "1G",
    )


def _yaml(data: dict) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


def admin_user_entry(admin_user: str, ssh_keys: list[str]) -> dict:
    """cloud-config `users` entry: the admin user the deploy logs in as, with key login and
    passwordless sudo (the lab gives its machines the same, lab/admin.py)."""
    return {
        "name": admin_user,
        "groups": ["sudo"],
        "shell": "/bin/bash",
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "lock_passwd": True,
        "ssh_authorized_keys": list(ssh_keys),
    }


def user_data(vm: Vm, admin_user: str, ssh_keys: list[str]) -> str:
    """cloud-config: hostname, the admin user with its SSH keys and sudo, no passwords."""
    data = {
        "hostname": vm.hostname,
        "manage_etc_hosts": True,
        "users": [admin_user_entry(admin_user, ssh_keys)],
        "ssh_pwauth": False,
        "disable_root": True,
    }
    return "#cloud-config\n" + _yaml(data)


def meta_data(vm: Vm) -> str:
    # A fixed instance-id: cloud-init's per-instance steps run on the first boot only, also
    # when the seed is rebuilt later.
    return _yaml({"instance-id": vm.uuid, "local-hostname": vm.hostname})


def network_config(vm: Vm) -> str:
    """Network config version 2, matching the NIC by its MAC."""
    nic: dict = {"match": {"macaddress": vm.mac}}
    if vm.static:
        nic["addresses"] = [vm.address]
        if vm.gateway:
            nic["routes"] = [{"to": "0.0.0.0/0", "via": vm.gateway}]
        if vm.dns:
            nic["nameservers"] = {"addresses": list(vm.dns)}
    else:
        nic["dhcp4"] = True
    return _yaml({"version": 2, "ethernets": {"lan": nic}})


def seed_files(vm: Vm, admin_user: str, ssh_keys: list[str]) -> dict[str, str]:
    """The NoCloud seed's files by name."""
    return {
        "user-data": user_data(vm, admin_user, ssh_keys),
        "meta-data": meta_data(vm),
        "network-config": network_config(vm),
    }


def digest(*texts: str) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()
