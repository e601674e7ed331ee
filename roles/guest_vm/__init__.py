"""guest_vm role: the AI guest VMs, each created once from its Debian release's cloud image."""

from __future__ import annotations

import math
import posixpath
import shlex
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, python, server

from roles import vfio
from roles.base.settings import BaseSettings
from roles.common import host_state, prefetch
from roles.common.memo import host_memo
from roles.common.platform import Release
from roles.guest_vm import render
from roles.guest_vm.facts import VIRSH, GuestVmState
from roles.guest_vm.render import GIB, VmPaths
from roles.guest_vm.settings import GuestVmSettings, Vm
from roles.libvirt.settings import LibvirtSettings

__all__ = ["GuestVmSettings", "configure"]

HUGEPAGES_SYSCTL = "/etc/sysctl.d/80-aicoder-hugepages.conf"
GIGANTIC_TMPFILES = "/etc/tmpfiles.d/aicoder-hugepages-1g.conf"
NODE_PAGES = "/sys/devices/system/node/node{node}/hugepages/hugepages-1048576kB/nr_hugepages"
HUGEPAGE_MB = 2  # the default hugepage size on x86_64


@deploy("Guest VMs: disks, cloud-init seeds, domains")
def configure():
    """Ensures each VM in guest_vm_vms has a system disk copied once from the checksummed
    Debian image (never overwritten, grown only when disk_gb grows, never shrunk), a cloud-init
    seed (hostname, admin user and SSH keys, network), and a libvirt domain defined from the
    settings (re-defined only when they change), autostarted and running. A VM with GPUs is
    defined but neither started, restarted nor autostarted while the host's VFIO reboot is
    pending and this run does not do it (vfio_reboot False): libvirt would take the GPU live
    from the host's driver.

    Example, in your own deploy file:

    .. code:: python

        from roles import guest_vm

        guest_vm.configure()  # settings: guest_vm_* in group_data/hypervisors.py
    """
    settings = GuestVmSettings.from_host(host)
    vms = settings.machines()
    if not vms:
        return
    paths, caches, state = _read(host)
    problems = host_problems(host)
    if problems:  # validate_inventory reports these first; kept for a deploy run without it
        raise DeployError(
            f"{host.name}: the VMs cannot be set up as configured (nothing was changed):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )

    folder = host_state.read(dirs=[render.STATE_DIR])
    host_state.directory(folder, "VM state folder", render.STATE_DIR, "700")
    if settings.hugepage_size == "1G":
        _reserve_gigantic_pages(settings.gigantic_pages())
    else:
        _reserve_hugepages(settings.hugepages_mb())
    for release, cache in caches.items():
        needed = any(paths[vm.name].disk not in state["files"] for vm in vms if vm.os == release)
        if needed and cache not in state["files"]:
            _download_image(settings, release, cache)
    for vm in vms:
        _vm(vm, settings, paths[vm.name], caches[vm.os], state)


def _read(host_) -> tuple[dict[str, VmPaths], dict[Release, str], dict]:
    """(paths by VM name, cached image path by release, GuestVmState) of ``host_``, read once
    per run."""
    memo = host_memo(host_, "guest_vm")
    if "state" not in memo:
        settings = GuestVmSettings.from_host(host_)
        vms = settings.machines()
        image_dir = LibvirtSettings.from_host(host_).image_dir
        paths = {vm.name: VmPaths.of(vm, image_dir) for vm in vms}
        caches = _caches(settings, vms, image_dir)
        request = _state_request(vms, paths, caches, image_dir)
        memo["state"] = (paths, caches, prefetch.fact(host_, request.fact, **dict(request.kwargs)))
    return memo["state"]


def _caches(settings: GuestVmSettings, vms: list[Vm], image_dir: str) -> dict[Release, str]:
    """Each release's cached cloud image (by the VMs' release)."""
    return {vm.os: render.cached_image(settings.image(vm.os)[0], image_dir) for vm in vms}


def _state_request(
    vms: list[Vm], paths: dict, caches: dict[Release, str], image_dir: str
) -> prefetch.Request:
    """The GuestVmState read of ``vms`` (tuples, so the deploy's one read can key it)."""
    return prefetch.Request.of(
        GuestVmState,
        names=tuple(vm.name for vm in vms),
        files=(
            *caches.values(),
            *(p.disk for p in paths.values()),
            *(p.seed for p in paths.values()),
        ),
        disks=tuple(p.disk for p in paths.values()),
        sums=tuple(f for p in paths.values() for f in (p.xml, p.seed_sum)),
        pci=tuple(sorted({gpu for vm in vms for gpu in vm.gpus})),
        image_dir=image_dir,
    )


@prefetch.reader("hypervisors")
def reads(host_) -> list[prefetch.Request]:
    """What :func:`host_problems` and :func:`configure` read."""
    settings = GuestVmSettings.from_host(host_)
    vms = settings.machines()
    image_dir = LibvirtSettings.from_host(host_).image_dir
    paths = {vm.name: VmPaths.of(vm, image_dir) for vm in vms}
    return [
        _state_request(vms, paths, _caches(settings, vms, image_dir), image_dir),
        host_state.request(dirs=[render.STATE_DIR]),
    ]


def host_problems(host_) -> list[str]:
    """What the host's facts refuse in valid settings ("key: why"): checked for every host
    before any host plans an operation (roles/validate.py)."""
    settings = GuestVmSettings.from_host(host_)
    vms = settings.machines()
    if not vms:
        return []
    paths, _, state = _read(host_)
    problems = []
    if settings.domain_type == "kvm" and not state["kvm"]:
        problems.append(
            "guest_vm_domain_type: 'kvm' needs /dev/kvm, which this host lacks; enable "
            "VT-x/AMD-V in the firmware, or set 'qemu' (emulation, very slow)"
        )
    problems += _too_big_for_host(vms, paths, state)
    for i, vm in enumerate(vms):
        key = f"guest_vm_vms[{i}]"
        missing_cpus = sorted(set(vm.cpu_pins) - state["cpus"])
        if missing_cpus:
            have = ",".join(map(str, sorted(state["cpus"])))
            problems.append(
                f"{key}.cpu_pins: host CPU(s) {missing_cpus} do not exist (online: {have})"
            )
        missing_gpus = [gpu for gpu in vm.gpus if gpu not in state["pci"]]
        if missing_gpus:
            problems.append(
                f"{key}.gpus: {', '.join(missing_gpus)} not found on this host; "
                "list the GPU's functions with `lspci -D -nn | grep -i nvidia`"
            )
        size = state["disk_sizes"].get(paths[vm.name].disk)
        if size and size > vm.disk_gb * GIB:
            problems.append(
                f"{key}.disk_gb: {vm.disk_gb} is smaller than the existing disk "
                f"({size / GIB:g} GiB); disks are never shrunk: set {math.ceil(size / GIB)}+"
            )
        uuid = state["uuids"].get(vm.name)
        if uuid and uuid != vm.uuid:
            problems.append(
                f"{key}: a domain named {vm.name!r} already exists with UUID {uuid}; to manage "
                f"it here set {key}.uuid = {uuid!r}, or choose another name"
            )
    return problems


def _restart_for_new_definition(vm: Vm, settings: GuestVmSettings, define, wait: bool) -> None:
    """A running domain keeps its old definition until it is powered off: restart it when the
    settings allow it (a clean ACPI shutdown, never a forced one) and its GPUs need no reboot
    of the host first (``wait``), else say so."""
    if settings.restart_on_change and not wait:
        timeout, name = settings.shutdown_timeout, vm.name
        server.shell(
            name=f"{name}: restart for the new definition (guest_vm_restart_on_change)",
            commands=[
                f"{VIRSH} shutdown {name}; i=0; "
                f"until {VIRSH} domstate {name} | grep -qx 'shut off'; do "
                f'i=$((i + 1)); [ "$i" -le {timeout} ] || {{ echo "{name} did not shut down '
                f'in {timeout} s (guest_vm_shutdown_timeout); it still runs" >&2; exit 1; }}; '
                "sleep 1; done; "
                f"{VIRSH} start {name}"
            ],
            _if=define.did_change,
        )
        return

    def warn():
        logger.warning(
            f"[{host.name}] RESTART PENDING: {vm.name} runs its old definition until it is "
            f"shut down and started again (virsh shutdown {vm.name}; virsh start {vm.name}), "
            "or set guest_vm_restart_on_change = True"
        )

    python.call(name=f"{vm.name}: report that a restart is pending", function=warn,
                _if=define.did_change)  # fmt: skip


def _too_big_for_host(vms: list[Vm], paths, state) -> list[str]:
    """VMs that cannot fit the host: more vCPUs than it has, more memory than it has (a VM with
    a GPU pins all its memory, so none of it can be overcommitted), a new disk larger than the
    filesystem it goes on. A fact the host did not answer is not checked."""
    problems = []
    cpus, mem_mib, fs_bytes = len(state["cpus"]), state.get("mem_mib"), state.get("fs_bytes")
    for i, vm in enumerate(vms):
        key = f"guest_vm_vms[{i}]"
        if cpus and vm.vcpus > cpus:
            problems.append(f"{key}.vcpus: {vm.vcpus} is more than the host's {cpus} CPUs")
        if mem_mib and vm.memory_mb > mem_mib:
            problems.append(
                f"{key}.memory_mb: {vm.memory_mb} is more than the host's {mem_mib} MiB"
            )
        new_disk = paths[vm.name].disk not in state["files"]
        if fs_bytes and new_disk and vm.disk_gb * GIB > fs_bytes:
            problems.append(
                f"{key}.disk_gb: {vm.disk_gb} GiB is more than the whole filesystem of "
                f"libvirt_image_dir ({fs_bytes / GIB:.0f} GiB)"
            )
    total = sum(vm.memory_mb for vm in vms)
    if mem_mib and len(vms) > 1 and total > mem_mib and not problems:
        problems.append(
            f"guest_vm_vms: the VMs' memory_mb add up to {total}, more than the host's "
            f"{mem_mib} MiB; make some smaller"
        )
    return problems


def _reserve_hugepages(total_mb: int) -> None:
    """Reserve the VMs' hugepages with a sysctl.d file: it applies early at every boot, while
    memory is still unfragmented, and now. A kernel argument would need a reboot."""
    if not total_mb:
        return
    pages = math.ceil(total_mb / HUGEPAGE_MB)
    sysctl = files.put(
        name=f"Reserve {pages} hugepages for the VMs",
        src=StringIO(
            "# Managed by the ai-coding-server deploy (roles/guest_vm): memory of the VMs with\n"
            f"# hugepages = True, in {HUGEPAGE_MB} MiB pages.\nvm.nr_hugepages = {pages}\n"
        ),
        dest=HUGEPAGES_SYSCTL,
        mode="644",
    )
    server.shell(
        name="Apply the hugepage reservation",
        commands=[
            f"sysctl -q -p {HUGEPAGES_SYSCTL}; got=$(cat /proc/sys/vm/nr_hugepages); "
            f'[ "$got" -ge {pages} ] || {{ echo "only $got of {pages} hugepages could be '
            'reserved (memory is fragmented): reboot the host to reserve them at boot" >&2; '
            "exit 1; }"
        ],
        _if=sysctl.did_change,
    )


def _reserve_gigantic_pages(need: dict[int, int]) -> None:
    """1 GiB pages: the kernel arguments (set by the vfio role) reserve the total at boot,
    spread over the NUMA nodes; a VM bound to a node (numa_node) gets that node's share raised
    early at every boot (tmpfiles.d) and now, while memory is least fragmented."""
    per_node = {node: pages for node, pages in sorted(need.items()) if node >= 0}
    if not per_node:
        return
    lines = [f"w {NODE_PAGES.format(node=n)} - - - - {pages}" for n, pages in per_node.items()]
    tmpfiles = files.put(
        name="Reserve 1 GiB pages per NUMA node at boot",
        src=StringIO(
            "# Managed by the ai-coding-server deploy (roles/guest_vm): 1 GiB pages of the VMs\n"
            "# bound to a NUMA node (guest_vm_vms[].numa_node).\n" + "\n".join(lines) + "\n"
        ),
        dest=GIGANTIC_TMPFILES,
        mode="644",
    )
    checks = "; ".join(
        f'[ "$(cat {NODE_PAGES.format(node=n)})" -ge {pages} ] || '
        f'{{ echo "NUMA node {n} has fewer than {pages} 1 GiB pages: reboot the host to '
        'reserve them at boot" >&2; exit 1; }'
        for n, pages in per_node.items()
    )
    server.shell(
        name="Apply the 1 GiB page reservation per NUMA node",
        commands=[f"systemd-tmpfiles --create {GIGANTIC_TMPFILES}; {checks}"],
        _if=tmpfiles.did_change,
    )


def _download_image(settings: GuestVmSettings, release: Release, cache: str) -> None:
    """Download ``release``'s image once into the cache, checking its SHA-512 before keeping
    it."""
    name = posixpath.basename(cache)
    part = shlex.quote(f"{cache}.part")
    url, sums_url = settings.image(release)
    if settings.image_sha512:
        get_sum = f"sum={settings.image_sha512}"
    else:
        sums = shlex.quote(sums_url)
        get_sum = (
            f"sum=$(curl -fsSL {sums} | awk -v f={shlex.quote(name)} "
            "'$2 == f || $2 == \"*\" f {print $1}'); "
            f'[ -n "$sum" ] || {{ echo "{name} is not listed in {sums}" >&2; exit 1; }}'
        )
    server.shell(
        name=f"Download {name}",
        commands=[
            f"mkdir -p {shlex.quote(posixpath.dirname(cache))}; {get_sum}; "
            f"curl -fsSL --retry 3 -o {part} {shlex.quote(url)} && "
            f'echo "$sum  {cache}.part" | sha512sum -c --quiet || '
            f'{{ rm -f {part}; echo "{name}: download failed or SHA-512 mismatch" >&2; exit 1; }}; '
            f"mv {part} {shlex.quote(cache)}"
        ],
    )


def _vm(vm: Vm, settings: GuestVmSettings, paths: VmPaths, cache: str, state: dict) -> None:
    base = BaseSettings.from_host(host)
    libvirt = LibvirtSettings.from_host(host)
    wait = bool(vm.gpus) and vfio.waits_for_reboot(host)
    disk, size = shlex.quote(paths.disk), f"{vm.disk_gb}G"

    if paths.disk not in state["files"]:
        # Never overwrite: the guard is in the command too, and the copy is moved in with -n.
        server.shell(
            name=f"{vm.name}: system disk from the image",
            commands=[
                f"test -e {disk} && exit 0; "
                f"cp --sparse=always {shlex.quote(cache)} {disk}.part && "
                f"qemu-img resize -q {disk}.part {size} && mv -n {disk}.part {disk}"
            ],
        )
    elif state["disk_sizes"].get(paths.disk, 0) < vm.disk_gb * GIB:
        running = vm.name in state["running"]
        server.shell(
            name=f"{vm.name}: grow the system disk to {size}",
            commands=[
                f"{VIRSH} blockresize {vm.name} {disk} {size}"
                if running
                else f"qemu-img resize -q {disk} {size}"
            ],
        )

    seed = render.seed_files(vm, base.admin_user, base.admin_ssh_keys)
    seed_sum = render.digest(*seed.values())
    # The marker holds the digest of the seed the ISO was built from; the fact reads its sha256.
    if state["sums"].get(paths.seed_sum) != render.digest(seed_sum) or (
        paths.seed not in state["files"]
    ):
        files.directory(name=f"{vm.name}: seed folder", path=paths.seed_dir, mode="700")
        for filename, content in seed.items():
            files.put(
                name=f"{vm.name}: cloud-init {filename}",
                src=StringIO(content),
                dest=f"{paths.seed_dir}/{filename}",
                mode="600",
            )
        iso = shlex.quote(paths.seed)
        server.shell(
            name=f"{vm.name}: cloud-init seed ISO",
            commands=[
                f"cd {shlex.quote(paths.seed_dir)} && "
                f"xorriso -as mkisofs -quiet -output {iso}.part -volid cidata -joliet -rock "
                f"{' '.join(seed)} && mv {iso}.part {iso} && "
                f"printf %s {seed_sum} > {shlex.quote(paths.seed_sum)}"
            ],
        )

    xml = render.domain_xml(vm, settings.domain_type, libvirt.bridge, paths, settings.hugepage_size)
    if vm.name not in state["domains"] or state["sums"].get(paths.xml) != render.digest(xml):
        files.put(
            name=f"{vm.name}: domain XML",
            src=StringIO(xml),
            dest=f"{paths.xml}.new",
            mode="600",
        )
        # The stored copy becomes the reference only once libvirt has accepted it.
        define = server.shell(
            name=f"{vm.name}: define the domain",
            commands=[f"{VIRSH} define {paths.xml}.new && mv {paths.xml}.new {paths.xml}"],
        )
        if vm.name in state["running"]:
            _restart_for_new_definition(vm, settings, define, wait)
    if wait:  # neither now nor at the next boot, where the GPU may still be the host's
        if vm.name not in state["running"]:
            python.call(
                name=f"{vm.name}: not started, its GPUs wait for the host's reboot "
                "(REBOOT PENDING)",
                function=lambda: None,
            )
        return
    if vm.autostart and vm.name not in state["autostart"]:
        server.shell(name=f"{vm.name}: autostart", commands=[f"{VIRSH} autostart {vm.name}"])
    if not vm.autostart and vm.name in state["autostart"]:
        server.shell(
            name=f"{vm.name}: no autostart", commands=[f"{VIRSH} autostart --disable {vm.name}"]
        )
    if vm.autostart and vm.name not in state["running"]:
        # The check: a reboot earlier in this run (vfio_reboot) may have autostarted it.
        server.shell(
            name=f"{vm.name}: start",
            commands=[f"{VIRSH} domstate {vm.name} | grep -qx running || {VIRSH} start {vm.name}"],
        )
