"""Plan tests of the libvirt role: the real deploy against recorded Rocky 9 / Debian 12 facts.

Recorded: the os-release files and `sestatus` (tests/fixtures/el9). The "converged" responses
below (HostState lines, the rpm list, nmcli and semanage output) are not recordings:
they describe the state this deploy itself leaves, in each command's documented format, so that
a converged host must plan nothing.
"""

from __future__ import annotations

import re
import shlex

from guest_services_facts import unit_line
from harness import file_line, fixture, os_release_response, package_lines, run_plan

from roles.libvirt import ENABLED, GUESTS_CONFIG, PACKAGES, RUNNING, addressing, render
from roles.libvirt.settings import LibvirtSettings

DEBIAN, EL9 = "os-release.debian-12.txt", "os-release.rocky-9.4.txt"
DEBIAN13 = "os-release.debian-13.txt"
FAMILY = {DEBIAN: "debian", DEBIAN13: "debian", EL9: "el9"}
LAN = {"firewall_allowed_networks": ["192.168.1.0/24"]}  # the firewall role needs a LAN
UPLINK_MAC = "aa:bb:cc:dd:ee:01"
STAGED_STANZA = "/var/lib/aicoder/bridge/_etc_network_interfaces.d_br0"
STAGED_INTERFACES = "/var/lib/aicoder/bridge/_etc_network_interfaces"
OWN_OPS = re.compile(r"^(libvirt:|Guest VMs:)")


def links(*, bridge: bool) -> str:
    """NetworkLinks output: lo and enp3s0, plus br0 once it exists."""
    rows = ["lo|00:00:00:00:00:00||127.0.0.1/8 ", f"enp3s0|{UPLINK_MAC}||192.168.1.5/24 "]
    if bridge:
        rows.append(f"br0|{UPLINK_MAC}||192.168.1.5/24 ")
    return "\n".join(rows)


def responses(os_release: str, extra: dict | None = None) -> dict:
    base = {re.compile(r"for d in /sys/class/net/\*"): links(bridge=False)}
    return {**(extra or {}), **base, **os_release_response(fixture(os_release))}


def nm_profile(fields: dict[str, str]) -> list[str]:
    """One profile as the NmConnections fact prints it: ``nmcli -t connection show`` lines
    (terse: ':' in values escaped)."""
    return ["[profile]"] + [f"{k}:{v.replace(':', chr(92) + ':')}" for k, v in fields.items()]


def converged_dir(path: str, mode: str = "drwxr-xr-x") -> dict:
    stat = f"user=root group=root mode={mode} atime=0 mtime=0 ctime=0 size=4096 '{path}'"
    return {re.compile(rf"stat -c .* {re.escape(path)} 2>"): stat}


def converged_libvirt(os_release: str, data: dict) -> dict:
    """Responses of a host where the libvirt role has already run with ``data``."""
    family = FAMILY[os_release]
    settings, problems = LibvirtSettings.problems_in(data)
    assert not problems, problems
    mac = UPLINK_MAC if settings.bridge_uplink else ""
    units = sorted(set(ENABLED[family] + RUNNING[family]))
    # The role's one HostState read: its files, packages (Debian), units and image folder.
    state = [
        file_line(GUESTS_CONFIG[family], render.libvirt_guests_config()),
        *(unit_line(u) for u in units),
        *package_lines(PACKAGES[family]),
        f"dir 755 root:root {settings.image_dir}",
    ]
    found: dict = {
        re.compile(rf"for f in {re.escape(GUESTS_CONFIG[family])}\b"): state,
        re.compile(r"for d in /sys/class/net/\*"): links(bridge=True),
    }
    uplink = addressing.Addressing("dhcp") if settings.bridge_uplink else None
    bridge_addressing = addressing.for_bridge(settings, uplink)
    if family == "debian":
        stanza = render.ifupdown_bridge(settings, bridge_addressing, mac)
        state.append(file_line("/etc/network/interfaces.d/br0", stanza))
        before = "auto lo\niface lo inet loopback\n"
        if settings.bridge_uplink:
            before += f"allow-hotplug {settings.bridge_uplink}\niface enp3s0 inet dhcp\n"
        found["cat /etc/network/interfaces"] = render.interfaces_for_bridge(
            before, settings.bridge_uplink, "br0"
        )
    else:
        bridge = {"connection.type": "bridge",
                  **render.nm_bridge_properties(settings, bridge_addressing, mac)}  # fmt: skip
        nm = ["[active]", "br0:br0"]
        if settings.bridge_uplink:
            nm.append(f"br0-port-{settings.bridge_uplink}:{settings.bridge_uplink}")
            port = {"connection.id": f"br0-port-{settings.bridge_uplink}",
                    "connection.type": "802-3-ethernet", "connection.master": "br0",
                    "connection.slave-type": "bridge",
                    "connection.interface-name": settings.bridge_uplink}  # fmt: skip
            nm += nm_profile(port)
        nm += nm_profile({"connection.id": "br0", **bridge})
        found[re.compile(r"nmcli -t -f NAME,DEVICE")] = "\n".join(nm)
        status = fixture("sestatus.rocky-9.setenforce0.txt").splitlines()[0]
        found[re.compile(r"echo '\[status\]'; sestatus")] = "\n".join(
            [
                "[status]",
                status,
                "[rules]",
                f"{settings.image_dir}(/.*)?    all files    system_u:object_r:virt_image_t:s0",
                "[type]",
                "system_u:object_r:virt_image_t:s0",
            ]
        )
    return found


def guarded(plan) -> list[str]:
    """The lines of the detached, self-rolling-back bridge script (roles/libvirt/guard.py)."""
    (command,) = plan.find(r"setsid sh -xc ")
    return shlex.split(command.split("setsid sh -xc ", 1)[1])[0].splitlines()


def steps_of(plan) -> str:
    return "\n".join(guarded(plan))


# NetworkManager as `nmcli -t` prints it (documented terse format; synthetic, not recorded: no
# real EL9 capture was found, tests/fixtures/el9/SOURCES.md).
STATIC_UPLINK = {
    "connection.id": "enp3s0", "connection.uuid": "6f1c0d6e-1111-4a3b-9c55-0123456789ab",
    "connection.type": "802-3-ethernet", "connection.interface-name": "enp3s0",
    "ipv4.method": "manual", "ipv4.addresses": "192.168.1.5/24", "ipv4.gateway": "192.168.1.1",
    "ipv4.dns": "192.168.1.1,192.168.1.2", "802-3-ethernet.mtu": "9000",
}  # fmt: skip


def nm_response(active: list[str], *profiles: dict) -> dict:
    lines = ["[active]", *active]
    for profile in profiles:
        lines += nm_profile(profile)
    return {re.compile(r"nmcli -t -f NAME,DEVICE"): "\n".join(lines)}


def own(plan) -> list[str]:
    """Names of the changed operations of the libvirt and guest_vm roles."""
    return [name for name in plan.names() if OWN_OPS.match(name)]


def test_debian_gets_libvirtd_ovmf_and_an_ifupdown_bridge():
    plan = run_plan({"hypervisors": LAN}, responses(DEBIAN))
    assert plan.error is None, plan.error
    assert plan.find(r"apt-get .*install.* qemu-system-x86 .*libvirt-daemon-system .*ovmf virtinst")
    assert plan.find(r"^systemctl enable libvirtd.service libvirtd.socket libvirt-guests.service$")
    stanza = plan.files[STAGED_STANZA]
    assert "iface br0 inet dhcp" in stanza and "bridge_ports none" in stanza
    assert "ifup br0" in guarded(plan)
    assert "ON_SHUTDOWN=shutdown" in plan.files["/etc/default/libvirt-guests"]
    assert not plan.find(r"nmcli|semanage|dnf ")


def test_debian_bridge_takes_the_uplink_with_its_mac_and_comments_its_old_stanza():
    installed = (
        "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n"
        "allow-hotplug enp3s0\niface enp3s0 inet dhcp\n"
    )
    plan = run_plan(
        {"hypervisors": {**LAN, "libvirt_bridge_uplink": "enp3s0"}},
        responses(DEBIAN, {"cat /etc/network/interfaces": installed}),
    )
    stanza = plan.files[STAGED_STANZA]
    assert f"bridge_hw {UPLINK_MAC}" in stanza and "iface br0 inet dhcp" in stanza
    new = plan.files[STAGED_INTERFACES]
    assert "#moved-to-bridge# iface enp3s0 inet dhcp" in new
    script = steps_of(plan)
    # Saved first; released with its old stanza, then the new files, then the bridge.
    assert script.index("cp -a /etc/network/interfaces ") < script.index("ifdown enp3s0")
    assert script.index("ifdown enp3s0") < script.index(
        f"mv {STAGED_INTERFACES} /etc/network/interfaces"
    )
    assert script.index(f"mv {STAGED_INTERFACES} /etc/network/interfaces") < script.index(
        "ifup br0"
    )
    # Then the deploy confirms from a fresh command, else it is undone by itself.
    names = own(plan)
    bring = names.index(next(n for n in names if "Bring bridge br0 up" in n))
    assert "keep the change" in names[bring + 1]


STATIC_INTERFACES = (
    "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n"
    "auto enp3s0\niface enp3s0 inet static\n  address 192.168.1.5/24\n  gateway 192.168.1.1\n"
    "  dns-nameservers 192.168.1.1\n  mtu 9000\n"
)


def test_debian_static_uplink_is_carried_over_to_the_bridge():
    plan = run_plan(
        {"hypervisors": {**LAN, "libvirt_bridge_uplink": "enp3s0"}},
        responses(DEBIAN, {"cat /etc/network/interfaces": STATIC_INTERFACES}),
    )
    assert plan.error is None, plan.error
    stanza = plan.files[STAGED_STANZA]
    assert "iface br0 inet static\n    address 192.168.1.5/24\n    gateway 192.168.1.1\n" in stanza
    assert "dns-nameservers 192.168.1.1\n    mtu 9000\n    bridge_ports enp3s0" in stanza
    # The check pings the gateway through the bridge (the default: the bridge's gateway).
    assert any("ping -c 1 -W 1 -I br0" in line for line in guarded(plan))


def test_debian_dhcp_on_a_static_uplink_is_refused_before_any_change_unless_asked_for():
    data = {**LAN, "libvirt_bridge_uplink": "enp3s0", "libvirt_bridge_address": "dhcp"}
    found = responses(DEBIAN, {"cat /etc/network/interfaces": STATIC_INTERFACES})
    plan = run_plan({"hypervisors": data}, found)
    assert plan.error is not None and not plan.changed
    assert "libvirt_bridge_dhcp_over_static" in str(plan.error)
    assert "192.168.1.5/24" in str(plan.error)
    forced = run_plan({"hypervisors": {**data, "libvirt_bridge_dhcp_over_static": True}}, found)
    assert forced.error is None, forced.error
    assert "iface br0 inet dhcp" in forced.files[STAGED_STANZA]


def test_debian_uplink_run_by_another_network_manager_is_refused():
    plan = run_plan({"hypervisors": {**LAN, "libvirt_bridge_uplink": "enp3s0"}}, responses(DEBIAN))
    assert plan.error is not None and not plan.changed
    assert "no stanza in /etc/network/interfaces" in str(plan.error)


def test_missing_uplink_nic_stops_the_deploy_before_any_change():
    plan = run_plan({"hypervisors": {**LAN, "libvirt_bridge_uplink": "eno1"}}, responses(DEBIAN))
    assert plan.error is not None and not plan.changed
    assert "libvirt_bridge_uplink='eno1'" in str(plan.error) and "enp3s0" in str(plan.error)


def test_el9_gets_modular_daemons_enabled_for_autostart_and_a_networkmanager_bridge():
    plan = run_plan({"hypervisors": {**LAN, "libvirt_bridge_uplink": "enp3s0"}}, responses(EL9))
    assert plan.error is None, plan.error
    assert plan.find(r"^dnf install -y qemu-kvm libvirt edk2-ovmf virt-install")
    (enable,) = plan.find(r"^systemctl enable .*virt")
    # The service (not only its socket) so that autostarted VMs start at boot.
    assert "virtqemud.service" in enable and "virtqemud.socket" in enable
    assert "libvirtd" not in enable
    script = guarded(plan)
    (add,) = [line for line in script if line.startswith("nmcli connection add type bridge ")]
    assert "ipv4.method disabled" in add and "bridge.mac-address AA:BB:CC:DD:EE:01" in add
    assert any(
        line.startswith("nmcli connection add type ethernet con-name br0-port-enp3s0 ifname "
                        "enp3s0 master br0") for line in script
    )  # fmt: skip
    assert script.index("nmcli connection up br0-port-enp3s0") < script.index(
        "nmcli connection up br0"
    )
    # Inside a NetworkManager checkpoint that rolls back by itself unless the deploy confirms.
    assert "CheckpointCreate '@ao []' 'uint32 120' 'uint32 7'" in script[1]
    assert plan.find(r"CheckpointDestroy")
    assert "ON_SHUTDOWN=shutdown" in plan.files["/etc/sysconfig/libvirt-guests"]
    assert not plan.find(r"apt-get|ifup|interfaces\.d")


def test_el9_static_bridge_without_uplink():
    data = {**LAN, "libvirt_bridge_address": "10.0.0.5/24", "libvirt_bridge_gateway": "10.0.0.1",
            "libvirt_bridge_dns": ["10.0.0.1"]}  # fmt: skip
    plan = run_plan({"hypervisors": data}, responses(EL9))
    (add,) = [line for line in guarded(plan) if "nmcli connection add type bridge " in line]
    assert "ipv4.method manual ipv4.addresses 10.0.0.5/24 ipv4.gateway 10.0.0.1" in add
    assert "type ethernet" not in steps_of(plan) and "bridge.mac-address" not in add


def test_el9_static_uplink_is_carried_over_to_the_bridge():
    found = responses(EL9, nm_response(["enp3s0:enp3s0"], STATIC_UPLINK))
    plan = run_plan({"hypervisors": {**LAN, "libvirt_bridge_uplink": "enp3s0"}}, found)
    assert plan.error is None, plan.error
    script = steps_of(plan)
    assert ("ipv4.method manual ipv4.addresses 192.168.1.5/24 ipv4.gateway 192.168.1.1 "
            "ipv4.dns 192.168.1.1,192.168.1.2") in script  # fmt: skip
    assert "slave-type bridge connection.autoconnect yes 802-3-ethernet.mtu 9000" in script
    assert "nmcli connection modify enp3s0 connection.autoconnect no" in script


def test_el9_dhcp_on_a_static_uplink_is_refused_before_any_change():
    found = responses(EL9, nm_response(["enp3s0:enp3s0"], STATIC_UPLINK))
    data = {**LAN, "libvirt_bridge_uplink": "enp3s0", "libvirt_bridge_address": "dhcp"}
    plan = run_plan({"hypervisors": data}, found)
    assert plan.error is not None and not plan.changed
    assert "libvirt_bridge_dhcp_over_static = True" in str(plan.error)
    assert "NetworkManager profile 'enp3s0'" in str(plan.error)


def test_el9_existing_bridge_profile_is_adopted_not_fought():
    """A `bridge-br0` profile (nmcli's default name) for br0 with its port: nothing new is
    added, its static addressing is kept, only what differs is modified inside a checkpoint."""
    bridge = {"connection.id": "bridge-br0", "connection.uuid": "0b7a-1", "connection.type":
              "bridge", "connection.interface-name": "br0", "connection.autoconnect": "yes",
              "bridge.stp": "yes", "ipv4.method": "manual", "ipv4.addresses": "192.168.1.5/24",
              "ipv4.gateway": "192.168.1.1", "ipv4.dns": "192.168.1.1",
              "bridge.mac-address": UPLINK_MAC.upper()}  # fmt: skip
    port = {"connection.id": "bridge-slave-enp3s0", "connection.type": "802-3-ethernet",
            "connection.interface-name": "enp3s0", "connection.master": "0b7a-1",
            "connection.slave-type": "bridge"}  # fmt: skip
    active = ["bridge-br0:br0", "bridge-slave-enp3s0:enp3s0"]
    found = responses(EL9, nm_response(active, bridge, port))
    plan = run_plan({"hypervisors": {**LAN, "libvirt_bridge_uplink": "enp3s0"}}, found)
    assert plan.error is None, plan.error
    script = steps_of(plan)
    assert "nmcli connection add" not in script
    assert "nmcli connection modify bridge-br0 bridge.stp no" in script
    assert "nmcli connection up bridge-br0" in script
    converged = responses(EL9, nm_response(active, {**bridge, "bridge.stp": "no"}, port))
    again = run_plan({"hypervisors": {**LAN, "libvirt_bridge_uplink": "enp3s0"}}, converged)
    assert not again.find(r"setsid|CheckpointDestroy")


def test_el9_image_folder_outside_libvirts_gets_the_virt_image_t_label():
    status = fixture("sestatus.rocky-9.setenforce0.txt")
    extra = {re.compile(r"echo '\[status\]'; sestatus"): "[status]\n" + status.splitlines()[0]}
    plan = run_plan(
        {"hypervisors": {**LAN, "libvirt_image_dir": "/srv/vms"}}, responses(EL9, extra)
    )
    assert plan.find(r"^semanage fcontext -a -t virt_image_t '/srv/vms\(/\.\*\)\?'$")
    assert plan.find(r"^restorecon -R /srv/vms$")
    default = run_plan({"hypervisors": LAN}, responses(EL9, extra))
    assert not default.find(r"semanage|restorecon")


def test_el9_changed_bridge_address_modifies_only_the_difference():
    old = {"libvirt_bridge_address": "10.0.0.5/24", "libvirt_bridge_gateway": "10.0.0.1"}
    new = {**old, "libvirt_bridge_address": "10.0.0.6/24"}
    found = converged_libvirt(EL9, old)
    plan = run_plan({"hypervisors": {**LAN, **new}}, {**found, **os_release_response(fixture(EL9))})
    assert "nmcli connection modify br0 ipv4.addresses 10.0.0.6/24" in guarded(plan), own(plan)
    assert "nmcli connection up br0" in guarded(plan)


def test_converged_hosts_plan_nothing_for_libvirt():
    cases: list[tuple[str, dict]] = [
        (DEBIAN, {}),
        (DEBIAN, {"libvirt_bridge_uplink": "enp3s0"}),
        (EL9, {"libvirt_bridge_uplink": "enp3s0", "libvirt_image_dir": "/srv/vms"}),
        (EL9, {"libvirt_bridge_address": "10.0.0.5/24", "libvirt_bridge_dns": ["10.0.0.1"]}),
    ]
    for os_release, data in cases:
        found = {**converged_libvirt(os_release, data), **os_release_response(fixture(os_release))}
        plan = run_plan({"hypervisors": {**LAN, **data}}, found)
        assert plan.error is None, plan.error
        assert own(plan) == [], (os_release, data, own(plan))
