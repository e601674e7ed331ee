"""The host's addressing on the LAN: read from the uplink as it is now, and the bridge's.

The bridge takes over the uplink's role on the LAN, so by default it carries the uplink's current
addressing (method, addresses, gateway, DNS, MTU): the host keeps its address. A change of method
that can lose the host (a static uplink moved to DHCP) is refused unless asked for explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roles.libvirt.settings import AUTO, DHCP, LibvirtSettings

STATIC, NONE = "static", "none"


@dataclass(frozen=True)
class Addressing:
    """IPv4 addressing of one interface. ``method``: static, dhcp or none (no IPv4)."""

    method: str
    addresses: tuple[str, ...] = ()  # CIDR, static only
    gateway: str = ""
    dns: tuple[str, ...] = ()
    mtu: int | None = None  # None: the default (1500)
    source: str = ""  # where it was read, for messages

    def describe(self) -> str:
        if self.method != STATIC:
            return self.method
        parts = [" ".join(self.addresses)]
        parts += [f"gateway {self.gateway}"] if self.gateway else []
        parts += [f"dns {' '.join(self.dns)}"] if self.dns else []
        return f"static {', '.join(parts)}"


@dataclass
class Stanza:
    """One ``iface NAME inet METHOD`` stanza of ifupdown with its options."""

    name: str
    method: str
    options: dict[str, list[str]] = field(default_factory=dict)


def ifupdown_stanzas(text: str | None) -> dict[str, Stanza]:
    """The ``inet`` stanzas of /etc/network/interfaces by interface (commented lines skipped)."""
    found: dict[str, Stanza] = {}
    current = None
    for line in (text or "").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "iface":
            current = None
            if len(words) >= 4 and words[2] == "inet":
                current = found.setdefault(words[1], Stanza(words[1], words[3]))
        elif words[0] in ("auto", "mapping", "source", "source-directory", "rename") or (
            words[0].startswith("allow-")
        ):
            current = None
        elif current is not None:
            current.options.setdefault(words[0], []).extend(words[1:])
    return found


def _netmask_prefix(mask: str) -> int:
    return sum(bin(int(octet)).count("1") for octet in mask.split("."))


def from_stanza(stanza: Stanza) -> Addressing:
    """Debian: the addressing an ifupdown stanza gives its interface."""
    opt = lambda key: stanza.options.get(key, [])  # noqa: E731
    mtu = int(opt("mtu")[0]) if opt("mtu") else None
    source = f"/etc/network/interfaces (iface {stanza.name} inet {stanza.method})"
    if stanza.method == DHCP:
        return Addressing(DHCP, mtu=mtu, source=source)
    if stanza.method != STATIC:  # manual, loopback...: no address of its own
        return Addressing(NONE, mtu=mtu, source=source)
    addresses = []
    for address in opt("address"):
        if "/" not in address and opt("netmask"):
            address = f"{address}/{_netmask_prefix(opt('netmask')[0])}"
        addresses.append(address)
    gateway = opt("gateway")[0] if opt("gateway") else ""
    return Addressing(STATIC, tuple(addresses), gateway, tuple(opt("dns-nameservers")), mtu, source)


def from_nm_profile(profile: dict[str, str]) -> Addressing:
    """EL9: the addressing of a NetworkManager profile (``nmcli -t connection show`` fields)."""
    value = lambda key: "" if profile.get(key, "") in ("--", "") else profile[key]  # noqa: E731
    method = value("ipv4.method")
    mtu = value("802-3-ethernet.mtu")
    mtu_value = int(mtu) if mtu.isdigit() and int(mtu) else None
    source = f"NetworkManager profile {profile.get('connection.id', '?')!r}"
    if method == "auto":
        return Addressing(DHCP, mtu=mtu_value, source=source)
    if method != "manual":
        return Addressing(NONE, mtu=mtu_value, source=source)
    split = lambda key: tuple(a.strip() for a in value(key).split(",") if a.strip())  # noqa: E731
    return Addressing(
        STATIC, split("ipv4.addresses"), value("ipv4.gateway"), split("ipv4.dns"), mtu_value, source
    )


def problem(settings: LibvirtSettings, uplink: Addressing | None) -> str | None:
    """Why the wanted bridge addressing must not be applied over the uplink's, or None."""
    if uplink is None or settings.bridge_address != DHCP or settings.bridge_dhcp_over_static:
        return None
    if uplink.method != STATIC:
        return None
    return (
        f"libvirt_bridge_address='dhcp' would replace the static address of "
        f"{settings.bridge_uplink} ({uplink.describe()}, from {uplink.source}) with DHCP: the host "
        "may get another address or none and be cut off. Leave libvirt_bridge_address unset "
        "('auto') to keep that address on the bridge, or set libvirt_bridge_dhcp_over_static = "
        "True if a DHCP server on this LAN really serves the host"
    )


def for_bridge(settings: LibvirtSettings, uplink: Addressing | None) -> Addressing:
    """The bridge's addressing: the settings', or with 'auto' the uplink's as it is now (DHCP
    without an uplink). The uplink's MTU goes along in every case."""
    mtu = uplink.mtu if uplink else None
    if settings.bridge_address == AUTO:
        if uplink is None:
            return Addressing(DHCP)
        return Addressing(uplink.method, uplink.addresses, uplink.gateway, uplink.dns, mtu)
    if settings.bridge_address == DHCP:
        return Addressing(DHCP, mtu=mtu)
    return Addressing(
        STATIC,
        (settings.bridge_address,),
        settings.bridge_gateway,
        tuple(settings.bridge_dns),
        mtu,
    )
