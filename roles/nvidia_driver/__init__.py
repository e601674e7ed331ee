"""NVIDIA driver on the Debian 12 AI guest: Debian's packages or NVIDIA's repository."""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import python, server

from roles.common import apt_repo, host_state
from roles.common.host_state import UNCHANGED, State
from roles.common.platform import DEBIAN, os_family
from roles.nvidia_driver import facts, render
from roles.nvidia_driver.facts import DriverState
from roles.nvidia_driver.settings import NvidiaDriverSettings

__all__ = ["NvidiaDriverSettings", "install"]

PERSISTENCED = "nvidia-persistenced"


def _read_state(settings: NvidiaDriverSettings) -> tuple[State, DriverState]:
    """Everything this role manages, plus the driver probe, in one round trip."""
    cuda = render.cuda_repo(settings)
    state = host_state.read(
        paths=[render.BLACKLIST_PATH, render.PIN_PATH, *apt_repo.paths(cuda)],
        packages=settings.packages,
        units=[PERSISTENCED],
        probe=facts.probe(settings.kernel_headers),
    )
    return state, facts.parse_state(state.probe)


def _nvidia_repository(settings: NvidiaDriverSettings, state: State) -> list:
    """NVIDIA's CUDA repository and the branch pin; returns the ops whose change needs an index
    refresh."""
    pin = host_state.put(
        state,
        f"NVIDIA driver: pin the {settings.branch} branch",
        render.PIN_PATH,
        render.branch_pin(settings),
    )
    return [pin, *apt_repo.add(render.cuda_repo(settings), state)]


def _debian_repository(settings: NvidiaDriverSettings, state: State) -> list:
    """Debian's non-free packages need no extra repository (the base role enables non-free);
    drop NVIDIA's repository and pin if an earlier run used source 'nvidia'."""
    unpin = host_state.absent(state, "NVIDIA driver: remove the branch pin", render.PIN_PATH)
    return [unpin, *apt_repo.remove(render.cuda_repo(settings), state)]


def _build_module(settings: NvidiaDriverSettings, driver: DriverState, packages):
    """Build the DKMS module for the kernel the headers package is for (the installed kernel,
    which the guest boots next), not for ``uname -r``: in a container, or before a reboot into a
    new kernel, those differ. The kernel is read when the op runs, after the headers install."""
    built = driver.target_kernel and driver.module_built(driver.target_kernel)
    if built and packages is UNCHANGED:
        host.noop(f"nvidia DKMS module installed for kernel {driver.target_kernel}")
        return UNCHANGED
    headers = settings.kernel_headers
    find_kernel = (
        f"k=$(dpkg-query -W -f='${{Depends}}' {headers} "
        "| sed -n 's/^linux-headers-\\([^ ,]*\\).*/\\1/p')"
    )
    return server.shell(
        name="NVIDIA driver: DKMS module built for the installed kernel",
        commands=[
            f'{find_kernel}; [ -n "$k" ] || {{ echo "{headers} is not installed" >&2; exit 1; }}; '
            'dkms autoinstall -k "$k"; '
            # Fail loudly when no module came out of it (e.g. a kernel API change upstream).
            'dkms status -k "$k" | grep -E "^nvidia.*: installed" || { echo "no nvidia DKMS '
            'module for kernel $k: see /var/lib/dkms/*/*/build/make.log" >&2; exit 1; }'
        ],
    )


def _report_or_reboot(settings: NvidiaDriverSettings, driver: DriverState, changes: list) -> None:
    """Reboot only when the user allowed it; otherwise say clearly that a reboot is pending."""
    hint = "set nvidia_driver_reboot = True to let the deploy reboot, or reboot the guest yourself"
    if driver.reboot_pending:
        logger.warning(
            f"[{host.name}] REBOOT PENDING: the NVIDIA driver is not loaded on the GPU yet; {hint}"
        )
    changes = [op for op in changes if op is not UNCHANGED]
    if not changes:
        return

    def changed() -> bool:
        return any(op.did_change() for op in changes)

    if settings.reboot:
        # Only after a change made by this run: a driver that still fails to load after a
        # reboot must not make every later run reboot again.
        server.reboot(
            name="NVIDIA driver: reboot to load the driver (allowed by nvidia_driver_reboot)",
            _if=changed,
        )
        return

    def warn():
        logger.warning(
            f"[{host.name}] REBOOT PENDING: the NVIDIA driver or the nouveau blacklist changed "
            f"and takes effect after a reboot; {hint}"
        )

    python.call(
        name="NVIDIA driver: report that a reboot is pending (not allowed to reboot)",
        function=warn,
        _if=changed,
    )


@deploy("NVIDIA driver")
def install():
    """Ensures the NVIDIA driver from the configured source (Debian's non-free packages, or
    NVIDIA's CUDA repository pinned to one branch), the kernel headers and the DKMS module built
    for the installed kernel, nouveau blacklisted (initramfs rebuilt only when that changed) and
    nvidia-persistenced enabled. Reboots only when ``nvidia_driver_reboot`` allows it; otherwise
    a pending reboot is reported."""
    settings = NvidiaDriverSettings.from_host(host)
    os_family(host, allowed=(DEBIAN,))
    state, driver = _read_state(settings)

    blacklist = host_state.put(
        state, "NVIDIA driver: blacklist nouveau", render.BLACKLIST_PATH, render.blacklist_nouveau()
    )
    if blacklist is not UNCHANGED:
        if driver.has_initramfs_tools:
            server.shell(
                name="NVIDIA driver: rebuild the initramfs without nouveau",
                commands=["update-initramfs -u -k all"],
                _if=blacklist.did_change,
            )
        else:
            host.noop("no initramfs-tools (no kernel image, e.g. a container): nothing to rebuild")

    if settings.source == "nvidia":
        repo_ops = _nvidia_repository(settings, state)
    else:
        repo_ops = _debian_repository(settings, state)
    missing = host_state.missing(state, settings.packages)
    apt_repo.refresh_index(
        "NVIDIA driver", repo_ops, missing if settings.source == "nvidia" else []
    )
    packages = host_state.packages(
        state, f"NVIDIA driver: packages ({settings.source})", settings.packages
    )
    built = _build_module(settings, driver, packages)
    host_state.service(
        state,
        f"NVIDIA driver: {PERSISTENCED} enabled",
        PERSISTENCED,
        enabled=True,
        # It can only run with the driver loaded; until the reboot, enabling is all there is.
        running=True if "nvidia" in driver.loaded else None,
    )
    _report_or_reboot(settings, driver, [blacklist, packages, built])
