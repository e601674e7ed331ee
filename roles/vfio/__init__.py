"""VFIO role: the hypervisor's IOMMU on and its passthrough GPUs bound to vfio-pci at boot.

Only devices the preflight verified are ever bound: the GPUs in vfio_gpus with every function
of their IOMMU groups (PCI bridges in a group stay with the host; while the IOMMU is still off,
the GPU's slot, its group checked after the reboot that turns the IOMMU on). Binding happens at
boot, never live: while the running kernel's arguments or a GPU's driver differ from what is
wanted (``pending``), no VM with GPUs is started. With vfio_reboot the host reboots, is checked
and the run goes on; otherwise the run ends with REBOOT PENDING and the command to run next.
"""

from __future__ import annotations

import os
import shlex
import sys

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.operations import files, python, server

from roles import preflight
from roles.common import host_state, prefetch
from roles.common.host_state import UNCHANGED
from roles.common.memo import host_memo
from roles.common.opname import op_name
from roles.common.platform import Release, profile
from roles.preflight import facts
from roles.preflight.evaluate import Verdict, evaluate
from roles.preflight.facts import VfioState
from roles.vfio import assignment, render
from roles.vfio.assignment import vm_gpus
from roles.vfio.settings import VfioSettings

__all__ = ["VfioSettings", "configure", "finish", "only", "pending"]


def only(host) -> bool:
    """Whether vfio_only leaves the other hypervisor roles out on ``host``."""
    return VfioSettings.from_host(host).only


def pending(host) -> list[str]:
    """What only a reboot applies on ``host`` (empty: nothing; always empty without
    vfio_gpus): kernel arguments missing from /proc/cmdline, passed functions not on vfio-pci.
    Until then no VM with GPUs may start: libvirt would unbind the card live from a driver the
    host uses."""
    memo = host_memo(host, "vfio")
    if "pending" not in memo:
        memo["pending"] = []
        if VfioSettings.from_host(host).gpus:
            verdict, state = preflight.verdict(host), preflight.host_state(host)
            memo["pending"] = pending_changes(state, wanted_args(host, verdict), verdict)
    return memo["pending"]


def wanted_args(on_host, verdict: Verdict) -> list[str]:
    """The IOMMU's kernel arguments and those the VMs need (1 GiB hugepages): one reboot."""
    return render.kernel_args(verdict.platform) + assignment.vm_kernel_args(on_host)


def waits_for_reboot(host) -> bool:
    """Whether GPU VMs must wait for a reboot this run does not do (vfio_reboot is False)."""
    return bool(pending(host)) and not VfioSettings.from_host(host).reboot


@deploy("VFIO: GPU passthrough on the host")
def configure():
    """With vfio_gpus set, ensures: the IOMMU kernel arguments (intel_iommu=on on Intel,
    iommu=pt) for every installed kernel and for kernels installed later (EL9: also in
    /etc/kernel/cmdline when the host has one); vfio-pci claiming the verified functions before
    their usual drivers (by ids, or by PCI address with driver_override where a card the host
    keeps has the same ids; modprobe.d, initramfs rebuilt only when its inputs changed). Then,
    if the running kernel lacks the arguments or a function is not bound to vfio-pci, and
    vfio_reboot is set: reboots and checks (with the IOMMU off before, the GPUs' slots are
    bound and their IOMMU groups checked now); the run goes on.

    Example, in your own deploy file:

    .. code:: python

        from roles import vfio

        vfio.configure()  # settings: vfio_* in group_data/hypervisors.py
    """
    settings = VfioSettings.from_host(host)
    if not settings.gpus:
        release(profile(host))
        return
    verdict = preflight.verdict(host)  # refuses the host if anything is wrong
    state = preflight.host_state(host)
    distro = profile(host)
    args = wanted_args(host, verdict)

    if distro.bootloader == "grubby":
        _el9_kernel_args(state, args)
    else:
        _debian_kernel_args(state, args)
    bind(state, verdict, distro)

    todo = pending(host)
    if todo and settings.reboot:
        _reboot(todo, settings.reboot_timeout)
        python.call(
            name="check the kernel arguments and the vfio-pci binding after the reboot",
            function=_after_reboot,
            wanted_args=args,
            verdict=verdict,
            distro=distro,
        )


def finish() -> None:
    """The run's last word on a hypervisor whose reboot is pending (vfio_reboot is False):
    REBOOT PENDING, what the reboot applies, and the command to run after it."""
    todo = pending(host)
    if todo and not VfioSettings.from_host(host).reboot:
        python.call(
            name=op_name("VFIO", "REBOOT PENDING (vfio_reboot is False): " + "; ".join(todo)),
            function=_report_pending,
            pending=todo,
            groups_later=preflight.verdict(host).iommu_pending,
        )


# The modprobe file goes last, renamed while the initramfs is rebuilt (modprobe.d takes only
# *.conf): while either name exists, a release is unfinished and the next run completes it.
RELEASING = f"{render.MODPROBE_CONF}.released"
MANAGED_HEADER = "Managed by the ai-coding-server deploy (roles/vfio)"


_BINDINGS = (render.DRACUT_CONF, render.OVERRIDE_SCRIPT, render.INITRAMFS_HOOK)


def _release_read() -> dict:
    """What :func:`release` reads: only files with this role's header count (a vfio.conf the
    admin wrote by hand stays), and the initramfs modules block."""
    begin = render.BLOCK_MARKER.format(mark="BEGIN")
    files = " ".join([*_BINDINGS, render.MODPROBE_CONF])
    probe = (
        f"grep -l {shlex.quote(MANAGED_HEADER)} {files} | sed 's/^/ours /';"
        f" grep -qxF {shlex.quote(begin)} {render.INITRAMFS_MODULES} && echo block"
    )
    return dict(paths=[RELEASING], probe=probe)


@prefetch.reader("hypervisors")
def reads(host_) -> list[prefetch.Request]:
    """What :func:`configure` reads itself (with vfio_gpus empty; else the preflight's read)."""
    return [] if VfioSettings.from_host(host_).gpus else [host_state.request(**_release_read())]


def release(distro: Release) -> None:
    """With vfio_gpus emptied: the files binding GPUs to vfio-pci removed and the initramfs
    rebuilt, so the GPUs go back to the host's drivers at the next boot (reported). The IOMMU
    kernel arguments stay: harmless with iommu=pt, and other software may rely on them."""
    bindings = _BINDINGS
    conf = render.MODPROBE_CONF
    state = host_state.read(**_release_read())
    ours = {line.removeprefix("ours ") for line in state.probe if line.startswith("ours ")}
    block = "block" in state.probe
    if not (ours or block or state.files):
        return
    commands = [f"rm -f {path}" for path in bindings if path in ours]
    if block:
        begin, end = (render.BLOCK_MARKER.format(mark=m) for m in ("BEGIN", "END"))
        commands.append(f"sed -i '/^{begin}$/,/^{end}$/d' {render.INITRAMFS_MODULES}")
    if conf in ours:
        commands.append(f"mv -f {conf} {RELEASING}")
    server.shell(
        name="vfio-pci claims no GPU: its files removed, the initramfs rebuilt without it",
        commands=[
            *commands,
            "dracut -f --regenerate-all"
            if distro.initramfs == "dracut"
            else "update-initramfs -u -k all",
            f"rm -f {RELEASING}",
        ],
    )
    python.call(
        name=op_name("VFIO", "reboot to give the GPUs back to the host's drivers"),
        function=logger.warning,
        msg=f"{host.name}: vfio_gpus is empty: the GPUs return to the host's drivers at the "
        "next boot (reboot when convenient)",
    )


def bind(state: VfioState, verdict: Verdict, distro: Release) -> None:
    """The files that bind the verified functions to vfio-pci at boot, and the initramfs."""
    functions, by_address = verdict.passthrough, verdict.by_address
    if not functions:
        return
    claimed = [*render.passthrough_ids(functions, by_address), *by_address]
    modprobe = host_state.put(
        state.managed,
        f"vfio-pci claims {', '.join(claimed)}",
        render.MODPROBE_CONF,
        render.modprobe_conf(functions, by_address),
    )
    changed = _by_address_files(state, by_address, distro) or modprobe is not UNCHANGED
    initramfs = _el9_initramfs if distro.initramfs == "dracut" else _debian_initramfs
    initramfs(state, by_address, changed=changed)


def _by_address_files(state: VfioState, by_address: list[str], distro: Release) -> bool:
    """The driver_override script (and, on Debian, the hook putting it into the initramfs)
    while functions are bound by address; removed when none is. Whether any file changes."""
    wanted = {render.OVERRIDE_SCRIPT: render.override_script(by_address)} if by_address else {}
    if by_address and distro.initramfs == "initramfs-tools":
        wanted[render.INITRAMFS_HOOK] = render.initramfs_hook()
    changed = False
    for path in (render.OVERRIDE_SCRIPT, render.INITRAMFS_HOOK):
        if path in wanted:
            op = host_state.put(
                state.managed, f"bind by PCI address ({path})", path, wanted[path], "755"
            )
        else:
            op = host_state.absent(state.managed, f"no binding by PCI address ({path})", path)
        changed = changed or op is not UNCHANGED
    return changed


def pending_changes(state: VfioState, args: list[str], verdict: Verdict) -> list[str]:
    """What a reboot would change: kernel arguments missing from /proc/cmdline, functions not
    bound to vfio-pci, GPUs that can be verified only with the IOMMU on (each described)."""
    todo = []
    missing = render.missing_args(state.cmdline, args)
    if missing:
        todo.append(f"kernel arguments {' '.join(missing)}")
    for function in verdict.passthrough:
        if function.driver != "vfio-pci":
            uses = state.host_uses(function.address) or ["no driver"]
            todo.append(f"{function.address} from {', '.join(uses)} to vfio-pci")
    return todo


def _el9_kernel_args(state: VfioState, args: list[str]) -> None:
    """grubby for every installed kernel's boot entry (BLS); GRUB_CMDLINE_LINUX in
    /etc/default/grub and, where it exists, /etc/kernel/cmdline: the arguments kernel-install
    gives kernels installed later (grubby --update-kernel=ALL changes neither)."""
    if not state.grubby or any(render.missing_args(e.args, args) for e in state.grubby):
        server.shell(
            name=f"kernel arguments {' '.join(args)} for every installed kernel",
            commands=[f"grubby --update-kernel=ALL --args={shlex.quote(' '.join(args))}"],
        )
    line = render.default_grub_line(state.default_grub_cmdline, args)
    if line:
        files.line(
            name=f"kernel arguments {' '.join(args)} for kernels installed later",
            path="/etc/default/grub",
            line=r"^GRUB_CMDLINE_LINUX=.*$",
            replace=line,
        )
    if state.kernel_cmdline is not None:
        wanted = render.with_args(state.kernel_cmdline, args)
        if wanted:
            server.shell(
                name=f"kernel arguments {' '.join(args)} in {render.KERNEL_CMDLINE}",
                commands=[
                    f"printf '%s\\n' {shlex.quote(' '.join(wanted))} > {render.KERNEL_CMDLINE}"
                ],
            )


def _debian_kernel_args(state: VfioState, args: list[str]) -> None:
    """A drop-in for update-grub, and grub.cfg regenerated while a kernel's entry lacks them."""
    dropin = host_state.put(
        state.managed,
        f"kernel arguments {' '.join(args)} (GRUB drop-in)",
        render.GRUB_DROPIN,
        render.grub_dropin(args),
    )
    stale = not state.grub_cfg or any(render.missing_args(a, args) for a in state.grub_cfg)
    if stale or dropin is not UNCHANGED:
        server.shell(name="regenerate grub.cfg (update-grub)", commands=["update-grub"])


def _el9_initramfs(state: VfioState, by_address: list[str], changed: bool) -> None:
    dracut = host_state.put(
        state.managed,
        "vfio-pci in the initramfs (dracut)",
        render.DRACUT_CONF,
        render.dracut_conf(by_address),
    )
    if changed or dracut is not UNCHANGED or state.stale_initramfs:
        server.shell(
            name="rebuild the initramfs of every kernel (dracut)",
            commands=["dracut -f --regenerate-all"],
        )


def _debian_initramfs(state: VfioState, by_address: list[str], changed: bool) -> None:
    content = render.initramfs_modules()
    block = not render.has_block(state.initramfs_modules, content)
    if block:
        files.block(
            name="vfio-pci in the initramfs (initramfs-tools)",
            path=render.INITRAMFS_MODULES,
            content=content,
            marker=render.BLOCK_MARKER,
        )
    if changed or block or state.stale_initramfs:
        server.shell(
            name="rebuild the initramfs of every kernel (update-initramfs)",
            commands=["update-initramfs -u -k all"],
        )


def _reboot(todo: list[str], timeout: int) -> None:
    server.reboot(name="reboot to apply " + "; ".join(todo), delay=10, reboot_timeout=timeout)


def _after_reboot(wanted_args: list[str], verdict: Verdict, distro: Release) -> None:
    """Read the host again: the arguments must be in /proc/cmdline, the IOMMU on, the GPUs'
    IOMMU groups fit (checked only now when the IOMMU was off before) and every passed function
    on vfio-pci. Where a group holds fewer functions than the slot bound before, the files are
    narrowed to it for later boots (operations called here run at once, nested in this one)."""
    state = facts.read(paths=render.MANAGED_FILES)
    _check_args(state, wanted_args)
    if not state.iommu_active:
        raise OperationError(
            "after the reboot the IOMMU is still off (no /sys/kernel/iommu_groups): "
            "enable VT-d / AMD-Vi in the firmware setup"
        )
    now = evaluate(state, VfioSettings.from_host(host).gpus, vm_gpus(host))
    if now.problems:
        raise OperationError(
            "after the reboot, with the IOMMU on, the preflight refuses the GPUs (no VM was "
            "started; to give a GPU back to the host, take it out of vfio_gpus, delete "
            f"{render.MODPROBE_CONF} and reboot):\n"
            + "\n".join(f"  - {problem}" for problem in now.problems)
        )
    if [f.address for f in now.passthrough] != [f.address for f in verdict.passthrough]:
        bind(state, now, distro)
    _check_bound(state, [f.address for f in now.passthrough])


def _check_args(state: VfioState, wanted_args: list[str]) -> None:
    missing = render.missing_args(state.cmdline, wanted_args)
    if missing:
        raise OperationError(
            f"after the reboot /proc/cmdline lacks {' '.join(missing)}: the boot loader did "
            "not pass them (EL9: grubby --info=DEFAULT; Debian: grep linux /boot/grub/grub.cfg)"
        )


def _check_bound(state: VfioState, addresses: list[str]) -> None:
    problems = []
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


def rerun_command() -> str:
    """The command to run after the reboot: this run's own pyinfra command line, if known."""
    if os.path.basename(sys.argv[0]) == "pyinfra" and len(sys.argv) > 1:
        return shlex.join(["pyinfra", *sys.argv[1:]])
    return "pyinfra inventory.py deploy.py"


def _report_pending(pending: list[str], groups_later: bool) -> None:
    then = (
        " With the IOMMU on, that run checks the GPUs' IOMMU groups before any VM starts."
        if groups_later
        else ""
    )
    logger.warning(
        f"{host.print_prefix}REBOOT PENDING, not done because vfio_reboot is False. It will "
        f"apply: {'; '.join(pending)}. No VM with GPUs was started (a GPU is bound to "
        "vfio-pci only at boot, never taken live from the host). Next: reboot the host "
        f"(`systemctl reboot`), then run `{rerun_command()}` again (or set vfio_reboot = True "
        f"and the deploy reboots and goes on by itself).{then}"
    )
