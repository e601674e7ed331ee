"""libvirt role: settings, the bridge's files (ifupdown, NetworkManager) and the facts' parsing."""

from pathlib import Path

import pytest

from roles.common.settings import SettingsError, validate_host
from roles.libvirt import addressing, guard, render
from roles.libvirt.addressing import Addressing
from roles.libvirt.facts import (
    NetworkLinks,
    NmConnections,
    SelinuxImageDir,
    bridge_profile,
    port_profile,
)
from roles.libvirt.settings import LibvirtSettings

EL9_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "el9"


class FakeHost:
    def __init__(self, data):
        self.name = "testhost"
        self.data = type("Data", (), {"dict": lambda _self: dict(data)})()


def settings(**values) -> LibvirtSettings:
    instance, problems = LibvirtSettings.problems_in({f"libvirt_{k}": v for k, v in values.items()})
    assert not problems, problems
    return instance


BAD = [
    ({"bridge": "a bridge"}, "libvirt_bridge", "interface name"),
    ({"bridge_uplink": "br0"}, "libvirt_bridge_uplink", "not the bridge itself"),
    ({"bridge_address": "10.0.0.5"}, "libvirt_bridge_address", "prefix length"),
    ({"bridge_gateway": "10.0.0.1"}, "libvirt_bridge_gateway", "static bridge_address"),
    (
        {"bridge_address": "10.0.0.5/24", "bridge_dns": ["dns.example"]},
        "libvirt_bridge_dns",
        "not an IP address",
    ),
    ({"image_dir": "vms"}, "libvirt_image_dir", "absolute path"),
]


@pytest.mark.parametrize(("values", "key", "fragment"), BAD)
def test_bad_settings_name_the_key(values, key, fragment):
    data = {f"libvirt_{k}": v for k, v in values.items()}
    with pytest.raises(SettingsError) as caught:
        validate_host(FakeHost(data), [LibvirtSettings])
    found = dict(caught.value.problems)
    assert fragment in found[key], found


def bridge_stanza(s: LibvirtSettings, uplink: Addressing | None = None, mac: str = "") -> str:
    return render.ifupdown_bridge(s, addressing.for_bridge(s, uplink), mac)


def test_ifupdown_bridge_with_uplink_and_dhcp_keeps_the_uplinks_mac():
    s = settings(bridge_uplink="enp3s0")
    text = bridge_stanza(s, Addressing("dhcp"), "aa:bb:cc:dd:ee:ff")
    assert "auto br0\niface br0 inet dhcp\n" in text
    assert "bridge_ports enp3s0" in text and "bridge_hw aa:bb:cc:dd:ee:ff" in text


def test_ifupdown_bridge_static_without_uplink():
    text = bridge_stanza(
        settings(
            bridge_address="10.77.0.1/24", bridge_gateway="10.77.0.254", bridge_dns=["1.1.1.1"]
        )
    )
    assert "iface br0 inet static\n    address 10.77.0.1/24\n    gateway 10.77.0.254" in text
    assert "dns-nameservers 1.1.1.1" in text and "bridge_ports none" in text


# /etc/network/interfaces as Debian's installer writes it (a DHCP NIC).
INSTALLER_INTERFACES = """\
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
allow-hotplug enp3s0
iface enp3s0 inet static
\taddress 192.168.1.5/24
\tgateway 192.168.1.1
iface enp3s0 inet6 auto
"""


def test_uplink_stanza_is_commented_out_and_the_rest_kept():
    out = render.interfaces_for_bridge(INSTALLER_INTERFACES, "enp3s0")
    live = [line for line in out.splitlines() if not line.startswith("#")]
    assert not any("enp3s0" in line or "192.168.1.5" in line for line in live), out
    assert "iface lo inet loopback" in live and "source /etc/network/interfaces.d/*" in live
    assert "#moved-to-bridge# allow-hotplug enp3s0" in out
    # Applying it again changes nothing: the deploy converges.
    assert render.interfaces_for_bridge(out, "enp3s0") == out


def test_the_uplinks_static_stanza_is_read_and_carried_to_the_bridge():
    stanzas = addressing.ifupdown_stanzas(INSTALLER_INTERFACES)
    uplink = addressing.from_stanza(stanzas["enp3s0"])
    assert (uplink.method, uplink.addresses, uplink.gateway) == (
        "static",
        ("192.168.1.5/24",),
        "192.168.1.1",
    )
    text = bridge_stanza(settings(bridge_uplink="enp3s0"), uplink, "aa:bb:cc:dd:ee:ff")
    assert "iface br0 inet static\n    address 192.168.1.5/24\n    gateway 192.168.1.1" in text
    # Once commented out by the role, the original stanza is still what is carried (re-runs).
    moved = render.moved_stanzas(render.interfaces_for_bridge(INSTALLER_INTERFACES, "enp3s0"))
    assert addressing.ifupdown_stanzas(moved)["enp3s0"] == stanzas["enp3s0"]


def test_netmask_form_and_mtu_are_read():
    text = "iface eno1 inet static\n  address 10.1.2.3\n  netmask 255.255.254.0\n  mtu 9000\n"
    uplink = addressing.from_stanza(addressing.ifupdown_stanzas(text)["eno1"])
    assert uplink.addresses == ("10.1.2.3/23",) and uplink.mtu == 9000
    assert "    mtu 9000\n" in bridge_stanza(settings(bridge_uplink="eno1"), uplink)


def test_dhcp_over_a_static_uplink_is_a_problem_unless_asked_for():
    static = Addressing("static", ("192.168.1.5/24",), "192.168.1.1", source="test")
    msg = addressing.problem(settings(bridge_uplink="enp3s0", bridge_address="dhcp"), static)
    assert msg and "libvirt_bridge_dhcp_over_static" in msg and "192.168.1.5/24" in msg
    forced = settings(bridge_uplink="enp3s0", bridge_address="dhcp", bridge_dhcp_over_static=True)
    assert addressing.problem(forced, static) is None
    assert addressing.problem(settings(bridge_uplink="enp3s0"), static) is None  # auto carries
    dhcp = Addressing("dhcp")
    assert addressing.problem(settings(bridge_uplink="e", bridge_address="dhcp"), dhcp) is None


def test_an_existing_bridge_stanza_in_interfaces_is_moved_like_the_uplinks():
    text = (
        "auto lo\niface lo inet loopback\nauto enp3s0 br0\niface enp3s0 inet manual\n"
        "iface br0 inet static\n  address 192.168.1.5/24\n  bridge_ports enp3s0\n"
    )
    out = render.interfaces_for_bridge(text, "enp3s0", "br0")
    assert "#moved-to-bridge# iface br0 inet static" in out and "auto lo\n" in out
    assert render.interfaces_for_bridge(out, "enp3s0", "br0") == out


def test_guarded_apply_rolls_back_on_a_failed_check_or_without_confirmation():
    save, rollback = guard.ifupdown_backup(["/etc/network/interfaces"], "br0", "enp3s0")
    script = guard.apply_script("br0", save, ["ifup br0"], rollback, "10.0.0.1", True, 90)
    assert script.index("cp -a /etc/network/interfaces") < script.index("ifup br0")
    assert "ping -c 1 -W 1 -I br0" in script and "target=10.0.0.1" in script
    assert 'ifup -a; ifup enp3s0; echo "rolled back: br0 did not reach' in script
    assert "if mv /run/aicoder-bridge/pending /run/aicoder-bridge/expired" in script
    assert "-lt 90 ]" in script
    assert guard.confirm(False).startswith("if mv /run/aicoder-bridge/pending ")
    assert "CheckpointDestroy" in guard.confirm(True)
    save, rollback = guard.nm_checkpoint(120)
    assert (
        "CheckpointCreate '@ao []' 'uint32 120' 'uint32 7'" in save[0]
        and "CheckpointRollback" in rollback[0]
    )


def test_interfaces_without_source_line_get_one_and_a_missing_file_a_minimal_one():
    out = render.interfaces_for_bridge("auto lo\niface lo inet loopback\n", "")
    assert out.endswith("source /etc/network/interfaces.d/*\n")
    assert render.interfaces_for_bridge(out, "") == out
    minimal = render.interfaces_for_bridge(None, "")
    assert (
        "iface lo inet loopback" in minimal and render.interfaces_for_bridge(minimal, "") == minimal
    )


def test_shared_auto_line_keeps_the_other_interfaces():
    out = render.interfaces_for_bridge("auto lo eth0\niface eth0 inet dhcp\n", "eth0")
    assert "auto lo\n" in out and "#moved-to-bridge# iface eth0 inet dhcp" in out


def test_nm_properties_and_differences():
    s = settings(bridge_uplink="enp3s0", bridge_address="10.0.0.5/24", bridge_dns=["10.0.0.1"])
    wanted = render.nm_bridge_properties(s, addressing.for_bridge(s, None), "aa:bb:cc:dd:ee:ff")
    assert wanted["ipv4.method"] == "manual" and wanted["bridge.mac-address"] == "AA:BB:CC:DD:EE:FF"
    current = {**wanted, "ipv4.gateway": "--", "ipv4.dns": "10.0.0.2"}
    assert render.nm_differences(wanted, current) == {"ipv4.dns": "10.0.0.1"}
    assert render.nm_args({"ipv4.dns": ""}) == "ipv4.dns ''"


def test_network_links_fact():
    links = NetworkLinks().process(
        [
            "lo|00:00:00:00:00:00||127.0.0.1/8 ",
            "enp3s0|aa:bb:cc:dd:ee:ff|br0|",
            "br0|aa:bb:cc:dd:ee:ff||10.0.0.5/24 ",
        ]
    )
    assert links["enp3s0"]["bridge"] == "br0" and links["br0"]["ipv4"] == ["10.0.0.5/24"]


def test_nm_connections_fact_unescapes_terse_values():
    output = [
        "[active]",
        "br0:br0",
        "br0-port-enp3s0:enp3s0",
        "[profile]",
        "connection.id:br0",
        "connection.interface-name:br0",
        "bridge.mac-address:AA\\:BB\\:CC\\:DD\\:EE\\:FF",
        "ipv4.method:auto",
        "[profile]",
    ]
    nm = NmConnections().process(output)
    assert nm["active"] == {"br0": ["br0"], "enp3s0": ["br0-port-enp3s0"]}
    assert nm["profiles"]["br0"]["bridge.mac-address"] == "AA:BB:CC:DD:EE:FF"


def test_an_existing_bridge_profile_is_found_by_interface_and_type_not_name():
    nm = {
        "active": {"br0": ["bridge-br0"], "enp3s0": ["bridge-slave-enp3s0"]},
        "profiles": {
            "br0": {"connection.type": "802-3-ethernet", "connection.interface-name": "br0"},
            "bridge-br0": {"connection.type": "bridge", "connection.interface-name": "br0",
                           "connection.uuid": "u-1"},
            "bridge-slave-enp3s0": {"connection.interface-name": "enp3s0",
                                    "connection.slave-type": "bridge", "connection.master": "u-1"},
        },
    }  # fmt: skip
    assert bridge_profile(nm, "br0") == "bridge-br0"
    assert port_profile(nm, "enp3s0", "br0", "bridge-br0") == "bridge-slave-enp3s0"
    assert bridge_profile(nm, "br1") is None


def test_selinux_fact_on_recorded_sestatus():
    status = (EL9_FIXTURES / "sestatus.rocky-9.setenforce0.txt").read_text().splitlines()
    state = SelinuxImageDir().process(["[status]", status[0], "[rules]", "[type]"])
    assert state == {"enabled": True, "rule": False, "type": None}
    labelled = SelinuxImageDir().process(
        [
            "[status]",
            status[0],
            "[rules]",
            "/srv/vms(/.*)?    all files    system_u:object_r:virt_image_t:s0",
            "[type]",
            "system_u:object_r:virt_image_t:s0",
        ]
    )
    assert labelled == {"enabled": True, "rule": True, "type": "virt_image_t"}


def test_the_guarded_scripts_are_valid_shell(tmp_path):
    """sh -n on every script the bridge step runs (both families, and the confirmation)."""
    import subprocess

    debian = guard.ifupdown_backup(["/etc/network/interfaces"], "br0", "enp3s0")
    el9 = guard.nm_checkpoint(120)
    for save, rollback in (debian, el9):
        script = guard.apply_script("br0", save, ["true"], rollback, "", True, 60)
        for text in (script, guard.run_detached("br0", script), guard.confirm(True)):
            path = tmp_path / "script.sh"
            path.write_text(text)
            result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
            assert result.returncode == 0, result.stderr + text


@pytest.mark.parametrize("value", ["....", "1.2.3", "::g"])
def test_bridge_check_address_must_be_an_ip_address(value):
    _, problems = LibvirtSettings.problems_in({"libvirt_bridge_check_address": value})
    assert any("libvirt_bridge_check_address" in p for p in problems), problems


@pytest.mark.parametrize("value", ["", "192.168.1.1", "fe80::1"])
def test_bridge_check_address_may_be_empty_or_an_ip_address(value):
    _, problems = LibvirtSettings.problems_in({"libvirt_bridge_check_address": value})
    assert not [p for p in problems if "libvirt_bridge_check_address" in p], problems
