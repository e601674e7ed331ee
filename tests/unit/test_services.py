"""Where 'auto' makes a service listen: every address behind the firewall, else the host's
static address; an address DHCP leased is refused there (it changes at the next lease)."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import DeployError

from roles.common.services import (
    ALL_IPV4,
    HostAddress,
    fixed_address,
    parse_host_address,
    resolve_on,
)

# `ip -4 -o addr show scope global` lines as iproute2 prints them, through the probe's awk.
LEASED = ["route 192.168.1.20", "addr 192.168.1.20/24 dynamic", "addr 10.0.3.1/24 "]
STATIC = ["route 192.168.1.20", "addr 192.168.1.20/24 ", "addr 10.0.3.1/24 dynamic"]


def test_the_probe_tells_a_leased_primary_address_from_a_static_one():
    assert parse_host_address(LEASED) == HostAddress("192.168.1.20", dynamic=True)
    assert parse_host_address(STATIC) == HostAddress("192.168.1.20", dynamic=False)
    assert parse_host_address(["addr 10.0.3.1/24 dynamic"]) == HostAddress("10.0.3.1", True)
    assert parse_host_address([]) == HostAddress(None)


def test_auto_behind_the_firewall_is_every_address_whatever_the_lease():
    def never(_command):
        raise AssertionError("no probe needed")

    assert resolve_on("auto", never, filtered=True) == ALL_IPV4
    assert resolve_on("10.1.2.3", never, filtered=False) == "10.1.2.3"


def test_auto_without_the_firewall_binds_a_static_address_and_refuses_a_lease():
    assert resolve_on("auto", lambda _: "\n".join(STATIC), filtered=False) == "192.168.1.20"
    assert resolve_on("auto", lambda _: "\n".join(LEASED), filtered=False) is None
    assert fixed_address(HostAddress("192.168.1.20"), "guest", "tabbyapi_host") == "192.168.1.20"
    with pytest.raises(DeployError) as caught:
        fixed_address(HostAddress("192.168.1.20", True), "guest", "ollama_bind_address")
    message = str(caught.value)
    assert "ollama_bind_address is 'auto'" in message and "leased by DHCP" in message
    assert "firewall_enabled" in message and "static address" in message
    with pytest.raises(DeployError, match="no IPv4 address"):
        fixed_address(HostAddress(None), "guest", "tabbyapi_host")
