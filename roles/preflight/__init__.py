"""Preflight: read-only checks of a hypervisor that fail closed before anything changes.

Runs first on every hypervisor. One read of the host, one round trip (CPU flags, kernel
command line, ACPI tables, PCI functions and drivers, IOMMU groups, boot VGA, IOMMU kernel
messages); the GPUs in vfio_gpus and the guest VMs' devices are judged against it, and every
problem is reported at once, before any operation of the deploy has run.
"""

from __future__ import annotations

from pyinfra import host as current_host
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError

from roles.common import host_state as common_host_state
from roles.common import prefetch
from roles.common.memo import host_memo
from roles.preflight import facts
from roles.preflight.evaluate import Verdict, evaluate
from roles.preflight.facts import VfioState
from roles.vfio.assignment import vm_gpus
from roles.vfio.render import MANAGED_FILES
from roles.vfio.settings import VfioSettings

__all__ = ["PreflightError", "check", "host_state", "problems", "verdict"]


class PreflightError(PyinfraError):
    """The host is not fit for the configured GPU passthrough; nothing was changed."""

    def __init__(self, host_name: str, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            f"Preflight refused host {host_name!r} for GPU passthrough "
            "(nothing was changed; fix these, then run again):\n"
            + "\n".join(f"  - {problem}" for problem in self.problems)
        )


@prefetch.reader("hypervisors")
def reads(host) -> list[prefetch.Request]:
    """What :func:`host_state` reads (the vfio role's files and the VFIO probe)."""
    return [common_host_state.request(paths=MANAGED_FILES, probe=facts.PROBE)]


def host_state(host) -> VfioState:
    """The host's VFIO state with the vfio role's files, read once per run (pyinfra 3 does not
    cache facts)."""
    cache = host_memo(host, "vfio")
    if "state" not in cache:
        cache["state"] = facts.read(paths=MANAGED_FILES)
    return cache["state"]


def verdict(host) -> Verdict:
    """The preflight's verdict for ``host``; a PreflightError listing every problem, if any."""
    cache = host_memo(host, "vfio")
    if "verdict" not in cache:
        gpus, vms = VfioSettings.from_host(host).gpus, vm_gpus(host)
        configured = gpus or any(vms.values())  # else no need to read the host at all
        cache["verdict"] = evaluate(host_state(host), gpus, vms) if configured else Verdict()
    found = cache["verdict"]
    if found.problems:
        raise PreflightError(host.name, found.problems)
    return found


def problems(host) -> list[str]:
    """The preflight's problems for ``host`` (none when it is fit), without raising."""
    try:
        verdict(host)
    except PreflightError as error:
        return error.problems
    return []


@deploy("Preflight: GPU passthrough checks")
def check():
    """Changes nothing. Refuses the host, listing every problem, unless: the CPU has vmx/svm;
    the IOMMU is on (or turns on with the arguments this deploy sets); each GPU in vfio_gpus
    exists, is not the boot VGA, and shares its IOMMU group with nothing but its own functions
    and PCI bridges (which stay with the host); each guest VM's devices are isolated by
    vfio_gpus and no GPU goes to two VMs. With vfio_gpus empty there is nothing to check.

    Example, in your own deploy file:

    .. code:: python

        from roles import preflight

        preflight.check()  # reads vfio_gpus and the host, changes nothing
    """
    verdict(current_host)
