"""A read-only report of a hypervisor before the first deploy: what is there, and what the deploy
would do with it. ``pyinfra inventory.py report.py`` (README); it plans no operation.

It reads with the roles' own facts and judges with their own functions (preflight, libvirt's
addressing, firewall's zone merge), so it says what a deploy would say, and its output doubles
as a recording of the host for fixtures.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.exceptions import PyinfraError

from roles import libvirt, preflight
from roles.common.platform import DEBIAN, os_family
from roles.common.settings import SettingsError
from roles.firewall.facts import FirewalldZoneFile
from roles.firewall.settings import FirewallSettings
from roles.libvirt.facts import NetworkLinks, NmConnections
from roles.libvirt.settings import LibvirtSettings
from roles.preflight.evaluate import evaluate
from roles.report.facts import HostReport
from roles.vfio import render as vfio_render
from roles.vfio import wanted_args
from roles.vfio.assignment import vm_gpus
from roles.vfio.settings import VfioSettings

__all__ = ["text"]


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"== {title}", *(f"  {line}" for line in (lines or ["(nothing)"]))]


def _iommu(state) -> list[str]:
    if not state.iommu_active:
        return ["IOMMU off (no /sys/kernel/iommu_groups)"]
    lines = []
    for group in sorted(set(state.groups.values())):
        for address in sorted(a for a, g in state.groups.items() if g == group):
            f = state.functions.get(address)
            driver = (f.driver if f else None) or "no driver"
            label = f.label() if f else address
            lines.append(f"group {group}: {label}, driver {driver}")
    return lines


def _gpus(state, settings: VfioSettings) -> list[str]:
    boot = sorted(state.boot_vga) or ["unknown (no boot_vga in sysfs)"]
    lines = [f"boot GPU (the host's console): {', '.join(boot)}"]
    verdict = evaluate(state, settings.gpus, vm_gpus(host))
    wanted = wanted_args(host, verdict)
    missing = vfio_render.missing_args(state.cmdline, wanted)
    if not settings.gpus:
        return [*lines, "vfio_gpus is empty: the deploy leaves the GPUs to the host"]
    lines += [f"would refuse: {p}" for p in verdict.problems]
    lines += [f"would bind to vfio-pci: {f.label()} (now {f.driver or 'no driver'})"
              for f in verdict.passthrough]  # fmt: skip
    if missing:
        lines.append(f"would add kernel arguments {' '.join(missing)} and need a reboot")
    if verdict.iommu_pending:
        lines.append("the IOMMU groups are checked after that reboot (the IOMMU is off now)")
    return lines


def _kernel(state, report: dict) -> list[str]:
    lines = [f"/proc/cmdline: {' '.join(state.cmdline)}"]
    cmdline = report.get("kernel-cmdline")
    lines.append(f"/etc/kernel/cmdline: {' '.join(cmdline)}" if cmdline else
                 "/etc/kernel/cmdline: absent")  # fmt: skip
    lines += [f"boot entry {e.kernel}: {' '.join(e.args)}" for e in state.grubby]
    if state.default_grub_cmdline is not None:
        lines.append(f"/etc/default/grub GRUB_CMDLINE_LINUX: {state.default_grub_cmdline}")
    return lines


def _bridge(settings: LibvirtSettings, family: str) -> list[str]:
    links = host.get_fact(NetworkLinks)
    lines = [f"{name}: {link['mac']} {' '.join(link['ipv4'])}".rstrip()
             + (f" (port of {link['bridge']})" if link["bridge"] else "")
             for name, link in sorted(links.items()) if name != "lo"]  # fmt: skip
    if family != DEBIAN:
        nm = host.get_fact(NmConnections)
        for name, p in sorted(nm["profiles"].items()):
            active = [d for d, names in nm["active"].items() if name in names]
            lines.append(
                f"NetworkManager profile {name!r}: {p.get('connection.type')} "
                f"{p.get('connection.interface-name', '')} ipv4 {p.get('ipv4.method')} "
                f"{p.get('ipv4.addresses', '')}"
                + (f", active on {', '.join(active)}" if active else "")
            )
    try:
        lines += libvirt.bridge_plan(settings, family, links)
    except PyinfraError as error:
        lines.append(f"would refuse: {error}")
    return lines


def _firewall(settings: FirewallSettings, family: str, report: dict) -> list[str]:
    if family == DEBIAN:
        return ["nftables: the deploy adds its own table inet aicoder_filter, nothing else"]
    lines = report.get("firewalld") or ["firewalld is not installed"]
    lines += [f"file /etc/firewalld/…/{name}" for name in report.get("firewalld-files", [])]
    zone = host.get_fact(FirewalldZoneFile, zone=settings.firewalld_zone)
    if zone is not None:
        lines.append(
            f"would merge zone {settings.firewalld_zone!r}: SSH and the services' ports move to "
            "the allowed networks' zone 'aicoder-admin', everything else stays (saved once)"
        )
    return lines


def text() -> str:
    """The report of the current host."""
    out = [f"### {host.name}: host report (read-only; nothing was changed)"]
    if "hypervisors" not in host.groups:
        return "\n".join([*out, "not in the hypervisors group: nothing to report"])
    try:
        vfio, bridge = VfioSettings.from_host(host), LibvirtSettings.from_host(host)
        firewall = FirewallSettings.from_host(host)
    except SettingsError as error:
        return "\n".join([*out, str(error)])
    family = os_family(host)
    report = host.get_fact(HostReport)
    state = preflight.host_state(host)
    out += _section("system", [*report.get("os", []), f"family {family}"])
    out += _section("IOMMU groups (class, ids, driver)", _iommu(state))
    out += _section("GPUs and VFIO", _gpus(state, vfio))
    out += _section("kernel arguments", _kernel(state, report))
    out += _section("curl", report.get("curl", []))
    out += _section("network and the bridge", _bridge(bridge, family))
    out += _section("SELinux", report.get("selinux", []) or ["not present"])
    out += _section("firewall", _firewall(firewall, family, report))
    return "\n".join(out)
