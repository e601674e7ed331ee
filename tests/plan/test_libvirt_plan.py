"""Plan tests of the libvirt role: the real deploy against recorded Rocky 9 / Debian 12 facts.

Recorded: the os-release files and `sestatus` (tests/fixtures/el9). The "converged" responses
below (HostState lines, the rpm list, nmcli and semanage output) are not recordings:
they describe the state this deploy itself leaves, in each command's documented format, so that
a converged host must plan nothing.
"""

from __future__ import annotations

import re

from guest_services_facts import unit_line
from harness import file_line, fixture, os_release_response, package_lines, run_plan

from roles.libvirt import ENABLED, GUESTS_CONFIG, PACKAGES, RUNNING, render
from roles.libvirt.settings import LibvirtSettings

DEBIAN, EL9 = "os-release.debian-12.txt", "os-release.rocky-9.4.txt"
FAMILY = {DEBIAN: "debian", EL9: "el9"}
LAN = {"firewall_allowed_networks": ["192.168.1.0/24"]}  # the firewall role needs a LAN
UPLINK_MAC = "aa:bb:cc:dd:ee:01"
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
    if family == "debian":
        state.append(
            file_line("/etc/network/interfaces.d/br0", render.ifupdown_bridge(settings, mac))
        )
        found["cat /etc/network/interfaces"] = render.interfaces_for_bridge(
            "auto lo\niface lo inet loopback\n", settings.bridge_uplink
        )
    else:
        profile = {"connection.id": "br0", **render.nm_bridge_properties(settings, mac)}
        nm = ["[active]", "br0:br0"]
        if settings.bridge_uplink:
            nm.append(f"br0-port-{settings.bridge_uplink}:{settings.bridge_uplink}")
            nm += ["[profile]", f"connection.id:br0-port-{settings.bridge_uplink}"]
        nm += ["[profile]"] + [f"{k}:{v.replace(':', chr(92) + ':')}" for k, v in profile.items()]
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


def own(plan) -> list[str]:
    """Names of the changed operations of the libvirt and guest_vm roles."""
    return [name for name in plan.names() if OWN_OPS.match(name)]


def test_debian_gets_libvirtd_ovmf_and_an_ifupdown_bridge():
    plan = run_plan({"hypervisors": LAN}, responses(DEBIAN))
    assert plan.error is None, plan.error
    assert plan.find(r"apt-get .*install.* qemu-system-x86 .*libvirt-daemon-system .*ovmf virtinst")
    assert plan.find(r"^systemctl enable libvirtd.service libvirtd.socket libvirt-guests.service$")
    stanza = plan.files["/etc/network/interfaces.d/br0"]
    assert "iface br0 inet dhcp" in stanza and "bridge_ports none" in stanza
    assert plan.find(r"ifup br0")
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
    assert f"bridge_hw {UPLINK_MAC}" in plan.files["/etc/network/interfaces.d/br0"]
    new = plan.files["/etc/network/interfaces.aicoder-new"]
    assert "#moved-to-bridge# iface enp3s0 inet dhcp" in new
    (script,) = plan.find(r"^setsid sh -c")
    # Released with its old stanza, then the new file, then the bridge: in one detached step.
    assert script.index("ifdown enp3s0") < script.index("mv /etc/network/interfaces.aicoder-new")
    assert script.index("mv /etc/network/interfaces.aicoder-new") < script.index("ifup br0")


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
    (add,) = plan.find(r"^nmcli connection add type bridge ")
    assert "ipv4.method auto" in add and "bridge.mac-address AA:BB:CC:DD:EE:01" in add
    assert plan.find(
        r"^nmcli connection add type ethernet con-name br0-port-enp3s0 ifname enp3s0 master br0"
    )
    assert plan.find(r"nmcli connection up br0-port-enp3s0; nmcli connection up br0")
    assert "ON_SHUTDOWN=shutdown" in plan.files["/etc/sysconfig/libvirt-guests"]
    assert not plan.find(r"apt-get|ifup|interfaces\.d")


def test_el9_static_bridge_without_uplink():
    data = {**LAN, "libvirt_bridge_address": "10.0.0.5/24", "libvirt_bridge_gateway": "10.0.0.1",
            "libvirt_bridge_dns": ["10.0.0.1"]}  # fmt: skip
    plan = run_plan({"hypervisors": data}, responses(EL9))
    (add,) = plan.find(r"^nmcli connection add type bridge ")
    assert "ipv4.method manual ipv4.addresses 10.0.0.5/24 ipv4.gateway 10.0.0.1" in add
    assert not plan.find(r"type ethernet|bridge.mac-address")


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
    assert plan.find(r"^nmcli connection modify br0 ipv4.addresses 10.0.0.6/24$"), own(plan)
    assert plan.find(r"nmcli connection up br0")


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
