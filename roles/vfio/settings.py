"""Settings of the vfio role: the GPUs the host isolates for its VMs, and whether it may reboot."""

from __future__ import annotations

from dataclasses import dataclass

from typing_extensions import override

from roles.common import checks
from roles.common.settings import RoleSettings, setting


@dataclass(frozen=True)
class VfioSettings(RoleSettings):
    PREFIX = "vfio"
    GROUPS = ("hypervisors",)

    gpus: list[str] = setting(
        [],
        "GPUs bound to vfio-pci for the VMs, each a PCI address (0000:01:00.0) or vendor:device "
        "ids (10de:2204, every card with them); the whole IOMMU group (HDMI audio, ...) goes "
        "along. Empty: the host keeps its GPUs and nothing here changes",
        checks.pci_device,
    )
    reboot: bool = setting(
        False,
        "reboot the host when the kernel arguments or a GPU's driver differ from what is wanted, "
        "check it and go on in the same run (False: VMs with GPUs are defined but not started, "
        "and the run ends with REBOOT PENDING and the command to run after the reboot)",
    )
    only: bool = setting(
        False,
        "run only the preflight and this role on the hypervisor, leaving out libvirt and the "
        "guest VMs (where the VMs are managed apart); a first run does not need it",
    )
    reboot_timeout: int = setting(
        900,
        "seconds to wait for the host to come back after that reboot",
        checks.in_range(60, 7200),
    )

    @override
    def check(self):
        twice = sorted({gpu for gpu in self.gpus if self.gpus.count(gpu) > 1})
        if twice:
            return [(self.key("gpus"), f"lists {', '.join(twice)} twice; list each GPU once")]
        return []
