"""libvirt role: QEMU/KVM, libvirt and OVMF, the bridge the VMs join, the VM image folder."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from roles.common import host_state, prefetch
from roles.common.host_state import FileState, State, sha1
from roles.common.platform import DEBIAN, os_family
from roles.libvirt import addressing, guard, render
from roles.libvirt.addressing import Addressing
from roles.libvirt.facts import (
    IfupdownConfig,
    NetworkLinks,
    NmConnections,
    SelinuxImageDir,
    bridge_profile,
    port_profile,
)
from roles.libvirt.settings import DHCP, LibvirtSettings

__all__ = ["LibvirtSettings", "bridge_plan", "configure"]

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
        "iputils-ping",  # the bridge's connectivity check (roles/libvirt/guard.py)
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
BRIDGE_STAGING = "/var/lib/aicoder/bridge"  # Debian: the new ifupdown files before the change
DEFAULT_IMAGE_DIR = LibvirtSettings.image_dir  # EL9's SELinux policy labels it virt_image_t


def _read_spec(settings: LibvirtSettings, family: str) -> dict:
    return dict(
        paths=[GUESTS_CONFIG[family], *([_stanza_path(settings)] if family == DEBIAN else [])],
        packages=PACKAGES[family],
        units=sorted(set(ENABLED[family] + RUNNING[family])),
        dirs=[settings.image_dir],
    )


@prefetch.reader("hypervisors")
def reads(host) -> list[prefetch.Request]:
    """What :func:`configure` reads: each OS family's read (the family is not known yet; the
    other one's costs a few lines of output) and the network configuration."""
    settings = LibvirtSettings.from_host(host)
    return [
        prefetch.Request.of(NetworkLinks),
        prefetch.Request.of(IfupdownConfig),
        prefetch.Request.of(NmConnections),
        *(host_state.request(**_read_spec(settings, family)) for family in PACKAGES),
    ]


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
    links = prefetch.fact(host, NetworkLinks)
    uplink_mac = _check_uplink(settings, links)
    state = host_state.read(**_read_spec(settings, family))

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


def _refuse(settings: LibvirtSettings, uplink: Addressing | None) -> None:
    """Stop before any change when the bridge's addressing could cut the host off."""
    msg = addressing.problem(settings, uplink)
    if msg:
        raise DeployError(f"{host.name}: {msg}")


def _debian_uplink(settings: LibvirtSettings, links: dict, text: str | None) -> Addressing | None:
    """The addressing the bridge takes over: an existing stanza of the bridge itself (adopted),
    else the uplink's stanza (also once this role has commented it out), else None without an
    uplink. An uplink with addresses but no ifupdown stanza is run by another network manager:
    refused, as ifupdown would fight it."""
    stanzas = addressing.ifupdown_stanzas(render.moved_stanzas(text))
    own = stanzas.get(settings.bridge)
    if own:
        return addressing.from_stanza(own)
    uplink = settings.bridge_uplink
    if not uplink:
        return None
    if uplink in stanzas:
        return addressing.from_stanza(stanzas[uplink])
    if links[uplink]["ipv4"] and links[uplink]["bridge"] != settings.bridge:
        raise DeployError(
            f"{host.name}: libvirt_bridge_uplink={uplink!r} has addresses "
            f"({' '.join(links[uplink]['ipv4'])}) but no stanza in /etc/network/interfaces: "
            "another network manager runs it, and an ifupdown bridge would fight it. Configure "
            f"{uplink} in /etc/network/interfaces first, or bridge it with that manager and "
            "leave libvirt_bridge_uplink empty"
        )
    return Addressing(addressing.NONE, source=f"{uplink} (no ifupdown stanza, no address)")


def _debian_bridge(settings: LibvirtSettings, links: dict, uplink_mac: str, state: State) -> None:
    """ifupdown owns the bridge; the uplink's old stanza is commented out in the same guarded
    step that brings the bridge up (roles/libvirt/guard.py)."""
    bridge, uplink = settings.bridge, settings.bridge_uplink
    current = prefetch.fact(host, IfupdownConfig)
    carried = _debian_uplink(settings, links, current)
    _refuse(settings, carried)
    wanted_addressing = addressing.for_bridge(settings, carried)
    stanza_path = _stanza_path(settings)
    stanza = render.ifupdown_bridge(settings, wanted_addressing, uplink_mac)
    stanza_changed = state.files.get(stanza_path) != FileState("644", "root:root", sha1(stanza))
    wanted = render.interfaces_for_bridge(current, uplink, bridge)
    if not (stanza_changed or wanted != current or bridge not in links):
        return
    # Uploaded aside (never into interfaces.d, whose every file ifupdown sources): the guarded
    # step saves the real files, then moves these in.
    steps = [f"taps=$(ls /sys/class/net/{bridge}/brif 2>/dev/null | grep '^vnet')"]
    if uplink:  # release its address while its old stanza still says how
        steps.append(f"ifdown {shlex.quote(uplink)} 2>/dev/null")
    steps.append(f"ifdown {bridge} 2>/dev/null")
    for path, content, changed in (
        (render.INTERFACES, wanted, wanted != current),
        (stanza_path, stanza, stanza_changed),
    ):
        if changed:
            staged = f"{BRIDGE_STAGING}/{path.replace('/', '_')}"
            files.put(name=f"ifupdown: {path} (new)", src=StringIO(content), dest=staged,
                      mode="644", user="root", group="root")  # fmt: skip
            steps.append(f"mv {staged} {path}")
    if uplink:
        steps.append(f"ip addr flush dev {shlex.quote(uplink)}")
    # ifdown deletes the bridge: put the running VMs' tap devices back on the new one.
    reattach = f"for t in $taps; do ip link set $t master {bridge}; done"
    steps += [f"ifup {bridge}", reattach]
    save, rollback = guard.ifupdown_backup([render.INTERFACES, stanza_path], bridge, uplink)
    _guarded(settings, wanted_addressing, save, steps, [*rollback, reattach], checkpoint=False)


def _guarded(settings: LibvirtSettings, wanted: Addressing, save: list[str], steps: list[str],
             rollback: list[str], checkpoint: bool) -> None:  # fmt: skip
    """Apply the bridge change with its automatic rollback, then confirm it from the deploy."""
    script = guard.apply_script(
        settings.bridge,
        save,
        steps,
        rollback,
        settings.bridge_check_address,
        wants_address=wanted.method in (addressing.STATIC, DHCP),
        seconds=settings.bridge_rollback_seconds,
    )
    server.shell(
        name=f"Bring bridge {settings.bridge} up (rolled back by itself unless confirmed)",
        commands=[guard.run_detached(settings.bridge, script)],
    )
    # A new command after the change: the deploy reaches the host through the new network.
    server.shell(
        name=f"Bridge {settings.bridge}: the deploy still reaches the host, keep the change",
        commands=[guard.confirm(checkpoint)],
    )


def _el9_uplink(settings: LibvirtSettings, nm: dict, name: str | None) -> Addressing | None:
    """The addressing the bridge takes over: the existing bridge profile's (adopted, or made by
    an earlier run), else that of the profile active on the uplink, else None without one."""
    uplink = settings.bridge_uplink
    if name:
        return addressing.from_nm_profile(nm["profiles"][name])
    if not uplink:
        return None
    active = [n for n in nm["active"].get(uplink, []) if n in nm["profiles"]]
    if active:
        return addressing.from_nm_profile(nm["profiles"][active[0]])
    return Addressing(addressing.NONE, source=f"{uplink} (no active profile)")


def bridge_plan(settings: LibvirtSettings, family: str, links: dict) -> list[str]:
    """What the deploy would do with the bridge, for the host report (roles/report); raises
    the deploy's own DeployError where the deploy would refuse."""
    _check_uplink(settings, links)
    if family == DEBIAN:
        carried = _debian_uplink(settings, links, prefetch.fact(host, IfupdownConfig))
    else:
        nm = prefetch.fact(host, NmConnections)
        name = bridge_profile(nm, settings.bridge)
        carried = _el9_uplink(settings, nm, name)
        if name and carried:
            return [f"would adopt the existing bridge profile {name!r} ({carried.describe()})"]
    _refuse(settings, carried)
    wanted = addressing.for_bridge(settings, carried)
    uplink = settings.bridge_uplink or "no uplink"
    source = f", carried from {carried.source}" if carried and carried.source else ""
    return [f"would bridge {settings.bridge} ({uplink}): {wanted.describe()}{source}"]


def _el9_bridge(settings: LibvirtSettings, links: dict, uplink_mac: str) -> None:
    """NetworkManager owns the bridge (and the uplink as its port). An existing profile of type
    bridge for the interface is adopted whatever its name; the change runs inside a checkpoint."""
    bridge, uplink = settings.bridge, settings.bridge_uplink
    nm = prefetch.fact(host, NmConnections)
    name = bridge_profile(nm, bridge)
    port = port_profile(nm, uplink, bridge, name) if uplink else None
    carried = _el9_uplink(settings, nm, name)
    _refuse(settings, carried)
    wanted_addressing = addressing.for_bridge(settings, carried)
    wanted = render.nm_bridge_properties(settings, wanted_addressing, uplink_mac)
    current = nm["profiles"].get(name) if name else None
    differences = {} if current is None else render.nm_differences(wanted, current)
    steps = []
    if name is None:
        name = bridge
        steps.append(
            f"nmcli connection add type bridge con-name {bridge} ifname {bridge} "
            + render.nm_args({k: v for k, v in wanted.items() if v})
        )
    elif differences:
        steps.append(f"nmcli connection modify {shlex.quote(name)} " + render.nm_args(differences))
    if uplink and port is None:
        port = render.port_profile(settings)
        mtu = f" 802-3-ethernet.mtu {wanted_addressing.mtu}" if wanted_addressing.mtu else ""
        steps.append(
            f"nmcli connection add type ethernet con-name {port} ifname {uplink} "
            f"master {bridge} slave-type bridge connection.autoconnect yes{mtu}"
        )
        # The profile that had the NIC must not take it back at the next boot.
        for old in nm["active"].get(uplink, []):
            steps.append(f"nmcli connection modify {shlex.quote(old)} connection.autoconnect no")
        steps.append(f"nmcli connection up {port}")
    if steps or name not in nm["active"].get(bridge, []):
        steps.append(f"nmcli connection up {shlex.quote(name)}")
        save, rollback = guard.nm_checkpoint(settings.bridge_rollback_seconds)
        _guarded(settings, wanted_addressing, save, steps, rollback, checkpoint=True)


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
