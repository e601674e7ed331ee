"""libvirt role: settings, the bridge's files (ifupdown, NetworkManager) and the facts' parsing."""

from pathlib import Path

import pytest

from roles.common.settings import SettingsError, validate_host
from roles.libvirt import render
from roles.libvirt.facts import NetworkLinks, NmConnections, SelinuxImageDir
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


def test_ifupdown_bridge_with_uplink_and_dhcp_keeps_the_uplinks_mac():
    text = render.ifupdown_bridge(settings(bridge_uplink="enp3s0"), "aa:bb:cc:dd:ee:ff")
    assert "auto br0\niface br0 inet dhcp\n" in text
    assert "bridge_ports enp3s0" in text and "bridge_hw aa:bb:cc:dd:ee:ff" in text


def test_ifupdown_bridge_static_without_uplink():
    text = render.ifupdown_bridge(
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
    wanted = render.nm_bridge_properties(
        settings(bridge_uplink="enp3s0", bridge_address="10.0.0.5/24", bridge_dns=["10.0.0.1"]),
        "aa:bb:cc:dd:ee:ff",
    )
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
