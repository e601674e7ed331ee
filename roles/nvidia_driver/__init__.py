"""NVIDIA driver on the Debian 12 AI guest: Debian's packages or NVIDIA's repository."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.api.exceptions import DeployError, OperationError
from pyinfra.operations import python, server, systemd
from typing_extensions import override

from roles.common import apt_repo, gpu, host_state, prefetch
from roles.common.apt_repo import AptRepo
from roles.common.host_state import UNCHANGED, State
from roles.common.platform import DEBIAN, DEBIAN_12, profile
from roles.nvidia_driver import facts, render
from roles.nvidia_driver.facts import DriverState
from roles.nvidia_driver.settings import NvidiaDriverSettings

__all__ = ["NvidiaDriverSettings", "install"]

PERSISTENCED = "nvidia-persistenced"


class DriverProbe(FactBase):
    """The role's driver probe alone: read again after a reboot."""

    @override
    def command(self, flavour: str) -> str:
        return facts.probe(flavour)

    @override
    def process(self, output: list[str]) -> DriverState:
        return facts.parse_state(output)


def _cuda(settings: NvidiaDriverSettings) -> AptRepo:
    """NVIDIA's CUDA repository for this host's release."""
    return render.cuda_repo(settings, profile(host, allowed=(DEBIAN,)))


def _read_spec(settings: NvidiaDriverSettings) -> dict:
    """Everything this role manages, plus the driver probe."""
    return dict(
        paths=[
            render.BLACKLIST_PATH,
            render.PIN_PATH,
            render.PERSISTENCED_DROPIN,
            # Its files have the same paths for every release (only their text differs).
            *apt_repo.paths(render.cuda_repo(settings, DEBIAN_12)),
        ],
        packages=settings.packages,
        units=[PERSISTENCED],
        probe=facts.probe(settings.kernel_flavour),
    )


@prefetch.reader("ai_guests")
def reads(host) -> list[prefetch.Request]:
    """What :func:`install` reads on ``host``."""
    return [host_state.request(**_read_spec(NvidiaDriverSettings.from_host(host)))]


def _read_state(settings: NvidiaDriverSettings) -> tuple[State, DriverState]:
    state = host_state.read(**_read_spec(settings))
    return state, facts.parse_state(state.probe)


def _refuse_secure_boot(settings: NvidiaDriverSettings, driver: DriverState) -> None:
    """DKMS builds an unsigned module, which a Secure Boot kernel refuses to load: the driver
    would be installed but never run. Refused before any change (a driver that is loaded
    already was signed by a key the firmware trusts)."""
    if driver.secure_boot and not driver.driver_loaded and not settings.secure_boot_mok:
        raise DeployError(
            f"{host.name}: Secure Boot is on, and the NVIDIA driver's DKMS module is unsigned, "
            "so the kernel would refuse to load it. Turn Secure Boot off in the VM's firmware "
            "(libvirt: <feature enabled='no' name='secure-boot'/> in <os><firmware>, as the "
            "guest_vm role defines its VMs; or the OVMF setup menu), or enroll DKMS's signing "
            "key as a MOK (mokutil --import /var/lib/dkms/mok.pub, confirm in MokManager at the "
            "next boot) and set nvidia_driver_secure_boot_mok = True"
        )


def _nvidia_repository(settings: NvidiaDriverSettings, state: State) -> list:
    """NVIDIA's CUDA repository and the branch pin; returns the ops whose change needs an index
    refresh."""
    pin = host_state.put(
        state,
        f"pin the {settings.branch} branch",
        render.PIN_PATH,
        render.branch_pin(settings),
    )
    return [pin, *apt_repo.add(_cuda(settings), state)]


def _debian_repository(settings: NvidiaDriverSettings, state: State) -> list:
    """Debian's non-free packages need no extra repository (the base role enables non-free);
    drop NVIDIA's repository and pin if an earlier run used source 'nvidia'."""
    unpin = host_state.absent(state, "remove the branch pin", render.PIN_PATH)
    return [unpin, *apt_repo.remove(_cuda(settings), state)]


def _build_module(settings: NvidiaDriverSettings, driver: DriverState, packages):
    """Build the DKMS module for the kernel the image metapackage is for (the newest installed,
    which GRUB boots by default), not for ``uname -r``: in a container, or before a reboot into
    a new kernel, those differ. The kernel is read when the op runs, after the install, and the
    op fails unless that kernel is installed and its module file is where DKMS puts it."""
    kernel = driver.target_kernel
    built = kernel and kernel in driver.boot_kernels and driver.module_built(kernel)
    if built and packages is UNCHANGED:
        host.noop(f"nvidia DKMS module installed for kernel {kernel}")
        return UNCHANGED
    image = settings.kernel_image
    find_kernel = (
        f"k=$(dpkg-query -W -f='${{Depends}}' {image} "
        "| sed -n 's/^linux-image-\\([^ ,]*\\).*/\\1/p')"
    )
    return server.shell(
        name="DKMS module built for the default boot kernel",
        commands=[
            f'{find_kernel}; [ -n "$k" ] || {{ echo "{image} is not installed" >&2; exit 1; }}; '
            f'[ -e "/boot/vmlinuz-$k" ] || {{ echo "kernel $k ({image}) has no /boot/vmlinuz-$k" '
            ">&2; exit 1; }; "
            f'[ -d "/lib/modules/$k/build" ] || {{ echo "no headers for kernel $k: install '
            f'{settings.kernel_headers} from the same suite as {image}" >&2; exit 1; }}; '
            'dkms autoinstall -k "$k"; '
            # Fail loudly when no module came out of it (e.g. a kernel API change upstream).
            'ls /lib/modules/"$k"/updates/dkms/nvidia*.ko* >/dev/null 2>&1 || { echo "no nvidia '
            "module for kernel $k (the default boot kernel) in /lib/modules/$k/updates/dkms: "
            'see /var/lib/dkms/*/*/build/make.log" >&2; exit 1; }'
        ],
    )


def _persistenced(state: State, driver: DriverState, packages, dropin) -> None:
    """nvidia-persistenced enabled, started only where the driver runs (see the drop-in, put
    before the package's own start at install), and never left failed: a failed unit marks the
    whole system degraded."""
    host_state.after([dropin], systemd.daemon_reload, name="reload systemd units")
    host_state.service(
        state,
        f"{PERSISTENCED} enabled",
        PERSISTENCED,
        enabled=True,
        # It can only run with the driver loaded; until the reboot, enabling is all there is.
        running=True if driver.driver_loaded else None,
    )
    if driver.driver_loaded:
        return
    failed = state.units.get(PERSISTENCED, ("", ""))[1] == "failed"
    host_state.after(
        [packages, dropin],
        server.shell,
        force=failed,
        name=f"{PERSISTENCED} not left failed (no driver loaded yet)",
        commands=[
            f"systemctl is-failed -q {PERSISTENCED} && systemctl reset-failed {PERSISTENCED}; true"
        ],
    )


def _verify_after_reboot(flavour: str) -> None:
    """After the reboot: the nvidia module must drive the GPU, on the kernel it was built for."""
    driver = host.get_fact(DriverProbe, flavour=flavour)
    problems = []
    if "nouveau" in driver.loaded:
        problems.append("nouveau is loaded (see /etc/modprobe.d and `update-initramfs -u -k all`)")
    if "nvidia" not in driver.loaded:
        problems.append(
            "the nvidia module is not loaded (see `dmesg | grep -i nvidia` and "
            f"`modprobe nvidia`; module files: /lib/modules/{driver.running_kernel}/updates/dkms)"
        )
    if driver.target_kernel and driver.running_kernel != driver.target_kernel:
        problems.append(
            f"the guest booted kernel {driver.running_kernel}, not {driver.target_kernel} "
            "(the default boot kernel the module was built for: see `grub-editenv list`)"
        )
    if problems:
        raise OperationError("after the reboot: " + "; ".join(problems))


def _reboot_or_hold(settings: NvidiaDriverSettings, driver: DriverState, changes: list) -> None:
    """While the driver cannot drive the GPU before a reboot, either reboot (allowed by
    nvidia_driver_reboot), check and go on, or hold every GPU service back for this run and end
    with REBOOT PENDING. Without a GPU in the guest, GPU services are held back too."""
    reasons = driver.pending_reasons()
    if any(op is not UNCHANGED for op in changes):
        reasons.insert(
            0, "this run installs or changes the driver, the kernel or the nouveau blacklist"
        )
    if not driver.gpus:
        no_gpu = "no NVIDIA GPU is visible in the guest"
        passthrough = (
            "pass the GPU through to the VM (guest_vm_vms 'gpus' on the hypervisor), power the "
            "VM off and on, and run the deploy again"
        )
        if reasons:
            gpu.hold(host, "REBOOT PENDING", [*reasons, no_gpu], passthrough)
        else:
            gpu.hold(host, "NO GPU", [no_gpu], passthrough)
        return
    if not reasons:
        gpu.release(host)
        return
    if settings.reboot:
        # Also without a change in this run: a user who set nvidia_driver_reboot after a run
        # that only reported the reboot gets it now. A driver that still does not load fails
        # the check below, every run, with the reason.
        server.reboot(
            name="reboot to load the driver (allowed by nvidia_driver_reboot)",
            delay=10,
            reboot_timeout=600,
        )
        python.call(
            name="the nvidia module is loaded for the running kernel",
            function=_verify_after_reboot,
            flavour=settings.kernel_flavour,
        )
        gpu.release(host)
        return
    gpu.hold(
        host,
        "REBOOT PENDING",
        reasons,
        "reboot the guest (sudo systemctl reboot), then run the deploy again; or set "
        "nvidia_driver_reboot = True and the run reboots, checks the driver and goes on",
    )


@deploy("NVIDIA driver")
def install():
    """Ensures the NVIDIA driver from the configured source (NVIDIA's CUDA repository pinned to
    one branch, or Debian's non-free packages), the kernel image and headers metapackages and
    the DKMS module built for the default boot kernel (checked), nouveau blacklisted (initramfs
    rebuilt only when that changed) and nvidia-persistenced enabled (started only with the
    driver loaded). Refuses a Secure Boot guest before any change. While the driver cannot drive
    the GPU before a reboot: reboots, checks and goes on if ``nvidia_driver_reboot`` allows it;
    otherwise no GPU service starts in this run, which ends with REBOOT PENDING.

    Example, in your own deploy file:

    .. code:: python

        from roles import nvidia_driver

        nvidia_driver.install()  # settings: nvidia_driver_* in group_data/ai_guests.py
    """
    settings = NvidiaDriverSettings.from_host(host)
    if settings.lab_skip:  # LAB ONLY (see the setting): nothing of the driver's is touched
        return
    profile(host, allowed=(DEBIAN,))
    state, driver = _read_state(settings)
    _refuse_secure_boot(settings, driver)

    blacklist = host_state.put(
        state, "blacklist nouveau", render.BLACKLIST_PATH, render.blacklist_nouveau()
    )
    if blacklist is not UNCHANGED:
        if driver.has_initramfs_tools:
            server.shell(
                name="rebuild the initramfs without nouveau",
                commands=["update-initramfs -u -k all"],
                _if=blacklist.did_change,
            )
        else:
            # A kernel installed below builds its initramfs with the blacklist already there.
            host.noop("no initramfs-tools yet (no kernel image): nothing to rebuild")

    if settings.source == "nvidia":
        repo_ops = _nvidia_repository(settings, state)
    else:
        repo_ops = _debian_repository(settings, state)
    missing = host_state.missing(state, settings.packages)
    apt_repo.refresh_index(
        "NVIDIA driver", repo_ops, missing if settings.source == "nvidia" else []
    )
    dropin = host_state.put(
        state,
        f"{PERSISTENCED} only with a GPU and the driver",
        render.PERSISTENCED_DROPIN,
        render.persistenced_dropin(),
    )
    if settings.source == "nvidia" and missing:
        server.shell(
            name=f"the {settings.branch} branch is in NVIDIA's repository",
            commands=[render.branch_available(settings, profile(host))],
        )
    packages = host_state.packages(state, f"packages ({settings.source})", settings.packages)
    built = _build_module(settings, driver, packages)
    _persistenced(state, driver, packages, dropin)
    _reboot_or_hold(settings, driver, [blacklist, packages, built])
