"""VFIO role: the hypervisor's IOMMU on and its passthrough GPUs bound to vfio-pci at boot.

Only devices the preflight verified are ever bound: the GPUs in vfio_gpus with every function
of their IOMMU groups. A reboot happens only when the running kernel's arguments or a GPU's
driver differ from what is wanted, and only with vfio_reboot; otherwise the run ends reporting
the pending reboot and what it will change.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.operations import files, python, server

from roles import preflight
from roles.common import host_state
from roles.common.host_state import UNCHANGED
from roles.common.platform import EL9, os_family
from roles.preflight import facts
from roles.preflight.facts import VfioState
from roles.preflight.parse import PciFunction
from roles.vfio import render
from roles.vfio.settings import VfioSettings

__all__ = ["VfioSettings", "configure", "only"]


def only(host) -> bool:
    """Whether vfio_only leaves the other hypervisor roles out on ``host``."""
    return VfioSettings.from_host(host).only


@deploy("VFIO: GPU passthrough on the host")
def configure():
    """With vfio_gpus set, ensures: the IOMMU kernel arguments (intel_iommu=on on Intel,
    iommu=pt) for every installed kernel and for kernels installed later; vfio-pci claiming
    the verified functions' ids before their usual drivers (modprobe.d, initramfs, rebuilt only
    when its inputs changed). Then, if the running kernel lacks the arguments or a function is
    not bound to vfio-pci: reboots and checks the binding (vfio_reboot), or reports the pending
    reboot. While the IOMMU is still off, only the arguments are set: the GPUs' IOMMU groups
    can be verified, and the GPUs bound, on the run after the reboot."""
    settings = VfioSettings.from_host(host)
    if not settings.gpus:
        return
    verdict = preflight.verdict(host)  # refuses the host if anything is wrong
    state = preflight.host_state(host)
    family = os_family(host)
    args = render.kernel_args(verdict.platform)

    if family == EL9:
        _el9_kernel_args(state, args)
    else:
        _debian_kernel_args(state, args)

    functions = verdict.passthrough
    if functions:
        modprobe = host_state.put(
            state.managed,
            f"VFIO: vfio-pci claims {', '.join(render.passthrough_ids(functions))}",
            render.MODPROBE_CONF,
            render.modprobe_conf(functions),
        )
        initramfs = _el9_initramfs if family == EL9 else _debian_initramfs
        initramfs(state, changed=modprobe is not UNCHANGED)

    pending = pending_changes(state, args, functions)
    if pending and settings.reboot:
        server.reboot(
            name="VFIO: reboot to apply " + "; ".join(pending),
            delay=10,
            reboot_timeout=settings.reboot_timeout,
        )
        python.call(
            name="VFIO: check the kernel arguments and the vfio-pci binding after the reboot",
            function=_check_after_reboot,
            wanted_args=args,
            addresses=[f.address for f in functions],
        )
    elif pending:
        python.call(
            name="VFIO: REBOOT PENDING (vfio_reboot is False): " + "; ".join(pending),
            function=_report_pending,
            pending=pending,
            deferred=verdict.iommu_pending,
        )


def pending_changes(state: VfioState, args: list[str], functions: list[PciFunction]) -> list[str]:
    """What a reboot would change: kernel arguments missing from /proc/cmdline, functions not
    bound to vfio-pci (each described for the user)."""
    pending = []
    missing = render.missing_args(state.cmdline, args)
    if missing:
        pending.append(f"kernel arguments {' '.join(missing)}")
    for function in functions:
        if function.driver != "vfio-pci":
            now = function.driver or "no driver"
            pending.append(f"{function.address} from {now} to vfio-pci")
    return pending


def _el9_kernel_args(state: VfioState, args: list[str]) -> None:
    """grubby for every installed kernel's boot entry (BLS), and GRUB_CMDLINE_LINUX in
    /etc/default/grub, which kernels installed later start from."""
    if not state.grubby or any(render.missing_args(e.args, args) for e in state.grubby):
        server.shell(
            name=f"VFIO: kernel arguments {' '.join(args)} for every installed kernel",
            commands=[f"grubby --update-kernel=ALL --args={shlex.quote(' '.join(args))}"],
        )
    line = render.default_grub_line(state.default_grub_cmdline, args)
    if line:
        files.line(
            name=f"VFIO: kernel arguments {' '.join(args)} for kernels installed later",
            path="/etc/default/grub",
            line=r"^GRUB_CMDLINE_LINUX=.*$",
            replace=line,
        )


def _debian_kernel_args(state: VfioState, args: list[str]) -> None:
    """A drop-in for update-grub, and grub.cfg regenerated while a kernel's entry lacks them."""
    dropin = host_state.put(
        state.managed,
        f"VFIO: kernel arguments {' '.join(args)} (GRUB drop-in)",
        render.GRUB_DROPIN,
        render.grub_dropin(args),
    )
    stale = not state.grub_cfg or any(render.missing_args(a, args) for a in state.grub_cfg)
    if stale or dropin is not UNCHANGED:
        server.shell(name="VFIO: regenerate grub.cfg (update-grub)", commands=["update-grub"])


def _el9_initramfs(state: VfioState, changed: bool) -> None:
    dracut = host_state.put(
        state.managed,
        "VFIO: vfio-pci in the initramfs (dracut)",
        render.DRACUT_CONF,
        render.dracut_conf(),
    )
    if changed or dracut is not UNCHANGED or state.stale_initramfs:
        server.shell(
            name="VFIO: rebuild the initramfs of every kernel (dracut)",
            commands=["dracut -f --regenerate-all"],
        )


def _debian_initramfs(state: VfioState, changed: bool) -> None:
    content = render.initramfs_modules()
    block = not render.has_block(state.initramfs_modules, content)
    if block:
        files.block(
            name="VFIO: vfio-pci in the initramfs (initramfs-tools)",
            path=render.INITRAMFS_MODULES,
            content=content,
            marker=render.BLOCK_MARKER,
        )
    if changed or block or state.stale_initramfs:
        server.shell(
            name="VFIO: rebuild the initramfs of every kernel (update-initramfs)",
            commands=["update-initramfs -u -k all"],
        )


def _check_after_reboot(wanted_args: list[str], addresses: list[str]) -> None:
    """Read the host again: the arguments must be in /proc/cmdline and every passed function
    bound to vfio-pci; else fail, saying what is wrong."""
    state = facts.read()
    problems = []
    missing = render.missing_args(state.cmdline, wanted_args)
    if missing:
        problems.append(
            f"/proc/cmdline lacks {' '.join(missing)}: the boot loader did not pass them "
            "(EL9: grubby --info=DEFAULT; Debian: grep linux /boot/grub/grub.cfg)"
        )
    for address in addresses:
        function = state.functions.get(address)
        driver = function.driver if function else "(device gone)"
        if driver != "vfio-pci":
            problems.append(
                f"{address} is bound to {driver or 'no driver'}, not vfio-pci: see "
                f"`lspci -nnk -s {address}` and `dmesg | grep -i vfio`"
            )
    if problems:
        raise OperationError("after the reboot: " + "; ".join(problems))
    if not addresses:
        if not state.iommu_active:
            raise OperationError(
                "after the reboot the IOMMU is still off (no /sys/kernel/iommu_groups): "
                "enable VT-d / AMD-Vi in the firmware setup"
            )
        logger.warning(
            f"{host.print_prefix}The IOMMU is on now: run the deploy again to check the GPUs' "
            "IOMMU groups and bind them to vfio-pci."
        )


def _report_pending(pending: list[str], deferred: bool) -> None:
    then = (
        " Then run the deploy again: with the IOMMU on, the GPUs' IOMMU groups are checked "
        "and the GPUs bound to vfio-pci."
        if deferred
        else ""
    )
    logger.warning(
        f"{host.print_prefix}REBOOT PENDING, not done because vfio_reboot is False. It will "
        f"apply: {'; '.join(pending)}. Reboot the host (or set vfio_reboot = True).{then}"
    )
