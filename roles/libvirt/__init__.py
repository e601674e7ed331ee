"""libvirt role: QEMU/KVM, libvirt and OVMF, the bridge the VMs join, the VM image folder."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from roles.common import host_state
from roles.common.host_state import State
from roles.common.platform import DEBIAN, os_family
from roles.libvirt import render
from roles.libvirt.facts import (
    IfupdownConfig,
    NetworkLinks,
    NmConnections,
    SelinuxImageDir,
)
from roles.libvirt.settings import LibvirtSettings

__all__ = ["LibvirtSettings", "configure"]

PACKAGES = {
    # qemu-kvm is not a package on Debian 12: qemu-system-x86 is. xorriso builds cloud-init
    # seeds; ifupdown + bridge-utils carry the bridge (Debian's installer sets hosts up so).
    DEBIAN: [
        "qemu-system-x86",
        "qemu-utils",
        "libvirt-daemon-system",
        "libvirt-clients",
        "ovmf",
        "virtinst",
        "xorriso",
        "ifupdown",
        "bridge-utils",
    ],
    "el9": [
        "qemu-kvm",
        "libvirt",
        "edk2-ovmf",
        "virt-install",
        "xorriso",
        "policycoreutils-python-utils",  # semanage, for the image folder's SELinux label
    ],
}

# Units enabled at boot, and units that must be running now. EL9 runs libvirt's modular daemons
# (https://libvirt.org/daemons.html): the sockets start each daemon on demand, and virtqemud's
# *service* is enabled too, because only a daemon started at boot autostarts the VMs. Debian 12
# runs the monolithic libvirtd. libvirt-guests shuts the VMs down cleanly with the host.
_SOCKETS = {
    DEBIAN: ["libvirtd.socket"],
    "el9": [
        *(f"virtqemud{s}.socket" for s in ("", "-ro", "-admin")),
        *(f"virt{d}d.socket" for d in ("network", "nodedev", "storage", "secret", "proxy")),
        "virtlogd.socket",
    ],
}
ENABLED = {
    DEBIAN: ["libvirtd.service", *_SOCKETS[DEBIAN], "libvirt-guests.service"],
    "el9": ["virtqemud.service", *_SOCKETS["el9"], "libvirt-guests.service"],
}
RUNNING = {family: [*_SOCKETS[family], "libvirt-guests.service"] for family in _SOCKETS}
GUESTS_CONFIG = {DEBIAN: "/etc/default/libvirt-guests", "el9": "/etc/sysconfig/libvirt-guests"}
DEFAULT_IMAGE_DIR = LibvirtSettings.image_dir  # EL9's SELinux policy labels it virt_image_t


@deploy("libvirt: virtualization stack, bridge and image folder")
def configure():
    """Ensures QEMU/KVM, libvirt, OVMF and virt-install are installed and libvirt's daemons are
    enabled at boot (so autostarted VMs come up) and listening now; the VMs' bridge exists with
    the configured uplink and address (EL9: NetworkManager, Debian: ifupdown); VMs are shut
    down cleanly with the host; the image folder exists (EL9: labelled virt_image_t).

    Example, in your own deploy file:

    .. code:: python

        from roles import libvirt

        libvirt.configure()  # settings: libvirt_* in group_data/hypervisors.py
    """
    settings = LibvirtSettings.from_host(host)
    family = os_family(host)
    links = host.get_fact(NetworkLinks)
    uplink_mac = _check_uplink(settings, links)
    state = host_state.read(
        paths=[GUESTS_CONFIG[family], *([_stanza_path(settings)] if family == DEBIAN else [])],
        packages=PACKAGES[family],
        units=sorted(set(ENABLED[family] + RUNNING[family])),
        dirs=[settings.image_dir],
    )

    host_state.packages(state, "Virtualization packages", PACKAGES[family])
    if family == DEBIAN:
        _debian_bridge(settings, links, uplink_mac, state)
    else:
        _el9_bridge(settings, links, uplink_mac)

    host_state.put(
        state,
        "libvirt-guests: shut VMs down with the host",
        GUESTS_CONFIG[family],
        render.libvirt_guests_config(),
    )
    _units(family, state)
    if settings.image_dir not in state.dirs:
        files.directory(name="VM image folder", path=settings.image_dir, present=True)
    if family != DEBIAN and not _under(settings.image_dir, DEFAULT_IMAGE_DIR):
        _selinux_image_dir(settings.image_dir)


def _check_uplink(settings: LibvirtSettings, links: dict) -> str:
    """The uplink's MAC, or a DeployError (before any change) when the NIC is missing."""
    if not settings.bridge_uplink:
        return ""
    link = links.get(settings.bridge_uplink)
    if link is None:
        nics = ", ".join(sorted(n for n in links if n != "lo")) or "none"
        raise DeployError(
            f"{host.name}: libvirt_bridge_uplink={settings.bridge_uplink!r} is not a network "
            f"interface on this host (it has: {nics}); set it to the NIC that carries the LAN"
        )
    return link["mac"]


def _units(family: str, state: State) -> None:
    disabled = [u for u in ENABLED[family] if state.units.get(u, ("", ""))[0] != "enabled"]
    stopped = [u for u in RUNNING[family] if state.units.get(u, ("", ""))[1] != "active"]
    if disabled:
        server.shell(
            name="Enable libvirt at boot", commands=[f"systemctl enable {' '.join(disabled)}"]
        )
    if stopped:
        server.shell(name="Start libvirt", commands=[f"systemctl start {' '.join(stopped)}"])


def _stanza_path(settings: LibvirtSettings) -> str:
    """Debian: the bridge's ifupdown stanza."""
    return f"{render.IFUPDOWN_DIR}/{settings.bridge}"


def _debian_bridge(settings: LibvirtSettings, links: dict, uplink_mac: str, state: State) -> None:
    """ifupdown owns the bridge; the uplink's old stanza is commented out in the same step that
    brings the bridge up, detached, so a dropped SSH session cannot stop it halfway."""
    bridge = settings.bridge
    stanza = host_state.put(
        state,
        f"Bridge {bridge} (ifupdown)",
        _stanza_path(settings),
        render.ifupdown_bridge(settings, uplink_mac),
    )
    current = host.get_fact(IfupdownConfig)
    wanted = render.interfaces_for_bridge(current, settings.bridge_uplink)
    steps = []
    if wanted != current:
        files.put(
            name="ifupdown: /etc/network/interfaces for the bridge",
            src=StringIO(wanted),
            dest="/etc/network/interfaces.aicoder-new",
            mode="644",
        )
        uplink = shlex.quote(settings.bridge_uplink)
        steps.append(
            "[ -e /etc/network/interfaces.before-bridge ] || "
            "cp -a /etc/network/interfaces /etc/network/interfaces.before-bridge 2>/dev/null"
        )
        if settings.bridge_uplink:  # release its address while its old stanza still says how
            steps.append(f"ifdown {uplink} 2>/dev/null")
        steps.append("mv /etc/network/interfaces.aicoder-new /etc/network/interfaces")
        if settings.bridge_uplink:
            steps.append(f"ip addr flush dev {uplink}")
    # ifdown deletes the bridge: put the running VMs' tap devices back on the new one.
    steps += [
        f"taps=$(ls /sys/class/net/{bridge}/brif 2>/dev/null | grep '^vnet')",
        f"ifdown {bridge} 2>/dev/null",
        f"ifup {bridge}",
        f"for t in $taps; do ip link set $t master {bridge}; done",
    ]
    server.shell(
        name=f"Bring bridge {bridge} up",
        commands=[_detached(steps, bridge)],
        _if=[lambda: bool(wanted != current or bridge not in links or stanza.did_change())],
    )


def _el9_bridge(settings: LibvirtSettings, links: dict, uplink_mac: str) -> None:
    """NetworkManager owns the bridge (and the uplink as its port)."""
    bridge, port = settings.bridge, render.port_profile(settings)
    nm = host.get_fact(NmConnections, names=[bridge, port])
    wanted = render.nm_bridge_properties(settings, uplink_mac)
    current = nm["profiles"].get(bridge)
    differences = {} if current is None else render.nm_differences(wanted, current)
    changed = current is None or bool(differences)
    if current is None:
        server.shell(
            name=f"Bridge {bridge} (NetworkManager)",
            commands=[
                f"nmcli connection add type bridge con-name {bridge} ifname {bridge} "
                + render.nm_args({k: v for k, v in wanted.items() if v})
            ],
        )
    elif changed:
        server.shell(
            name=f"Bridge {bridge} settings (NetworkManager)",
            commands=[f"nmcli connection modify {bridge} " + render.nm_args(differences)],
        )
    steps = []
    if settings.bridge_uplink and port not in nm["profiles"]:
        uplink = settings.bridge_uplink
        server.shell(
            name=f"Uplink {uplink} as a port of {bridge}",
            commands=[
                f"nmcli connection add type ethernet con-name {port} ifname {uplink} "
                f"master {bridge} slave-type bridge connection.autoconnect yes"
            ],
        )
        # The profile that had the NIC must not take it back at the next boot.
        for old in nm["active"].get(uplink, []):
            steps.append(f"nmcli connection modify {shlex.quote(old)} connection.autoconnect no")
        steps.append(f"nmcli connection up {port}")
    if steps or changed or bridge not in nm["active"].get(bridge, []):
        steps.append(f"nmcli connection up {bridge}")
        server.shell(name=f"Bring bridge {bridge} up", commands=[_detached(steps, bridge)])


def _detached(steps: list[str], bridge: str, timeout: int = 90) -> str:
    """Run ``steps`` in their own session (they may cut this SSH connection for a moment), then
    wait until the bridge is up, failing with its log after ``timeout`` seconds."""
    log = f"/var/log/aicoder-bridge-{bridge}.log"
    script = shlex.quote("; ".join(steps))
    return (
        f"setsid sh -c {script} >{log} 2>&1 </dev/null & "
        f"for i in $(seq {timeout}); do "
        f"ip -o link show dev {bridge} up 2>/dev/null | grep -q . && exit 0; sleep 1; done; "
        f"echo 'bridge {bridge} did not come up:' >&2; cat {log} >&2; exit 1"
    )


def _selinux_image_dir(path: str) -> None:
    """Label a VM folder outside libvirt's default with virt_image_t, so confined QEMU (sVirt)
    may use the disks (RHEL 9 'Configuring and managing virtualization', SELinux section)."""
    state = host.get_fact(SelinuxImageDir, path=path)
    if not state["enabled"]:
        return
    pattern = shlex.quote(f"{path}(/.*)?")
    if not state["rule"]:
        server.shell(
            name="SELinux: label the VM image folder virt_image_t",
            commands=[f"semanage fcontext -a -t virt_image_t {pattern}"],
        )
    if not state["rule"] or state["type"] != "virt_image_t":
        server.shell(
            name="SELinux: relabel the VM image folder",
            commands=[f"restorecon -R {shlex.quote(path)}"],
        )


def _under(path: str, folder: str) -> bool:
    path = path.rstrip("/")
    return path == folder or path.startswith(folder + "/")
