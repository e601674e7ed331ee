"""Pure rendering for the libvirt role: the bridge (ifupdown, NetworkManager), libvirt-guests."""

from __future__ import annotations

import re
import shlex

from roles.common.templates import render as template
from roles.libvirt.addressing import NONE, STATIC, Addressing
from roles.libvirt.settings import DHCP, LibvirtSettings

# --- Debian: ifupdown -----------------------------------------------------------------------

IFUPDOWN_DIR = "/etc/network/interfaces.d"
INTERFACES = "/etc/network/interfaces"
_STANZA = re.compile(r"(iface|mapping|auto|allow-\S+|source|source-directory|rename)\b")
_MOVED = "#moved-to-bridge# "


def ifupdown_bridge(settings: LibvirtSettings, addressing: Addressing, uplink_mac: str = "") -> str:
    """The bridge's stanza for /etc/network/interfaces.d/<bridge>."""
    method = {STATIC: "static", DHCP: "dhcp"}.get(addressing.method, "manual")
    return template(
        "libvirt/ifupdown-bridge.j2", s=settings, a=addressing, method=method, uplink_mac=uplink_mac
    )


def moved_stanzas(text: str | None) -> str:
    """/etc/network/interfaces with the stanzas this role commented out active again: what the
    host had before the bridge (for reading the uplink's original addressing)."""
    return "\n".join(line.removeprefix(_MOVED) for line in (text or "").splitlines())


def interfaces_for_bridge(text: str | None, uplink: str, bridge: str = "") -> str:
    """/etc/network/interfaces with the uplink's own stanza commented out (the bridge owns the
    NIC now), and the bridge's own stanza if it has one there (adopted: it moves to
    interfaces.d), and interfaces.d sourced; a minimal file when there is none (``text`` None).
    Unchanged text means nothing to do."""
    if text is None:
        return "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n"
    moved = {name for name in (uplink, bridge) if name}
    out, in_moved_stanza = [], False
    for line in text.splitlines():
        words = line.split()
        starts_stanza = bool(words) and bool(_STANZA.fullmatch(words[0]))
        if starts_stanza:
            in_moved_stanza = words[0] == "iface" and len(words) > 1 and words[1] in moved
        if in_moved_stanza:
            out.append(_MOVED + line)
        elif moved and starts_stanza and (words[0] == "auto" or words[0].startswith("allow-")):
            others = [w for w in words[1:] if w not in moved]
            if len(others) == len(words) - 1:
                out.append(line)
            else:
                out.append(_MOVED + line)
                if others:
                    out.append(" ".join([words[0], *others]))
        else:
            out.append(line)
    if not any(_sources_interfaces_d(line) for line in out):
        out += ["", "source /etc/network/interfaces.d/*"]
    return "\n".join(out) + "\n"


def _sources_interfaces_d(line: str) -> bool:
    words = line.split()
    return len(words) == 2 and (
        (words[0] == "source" and words[1].startswith(IFUPDOWN_DIR))
        or (words[0] == "source-directory" and words[1].rstrip("/") == IFUPDOWN_DIR)
    )


# --- EL9: NetworkManager --------------------------------------------------------------------


def port_profile(settings: LibvirtSettings) -> str:
    return f"{settings.bridge}-port-{settings.bridge_uplink}"


def nm_bridge_properties(
    settings: LibvirtSettings, addressing: Addressing, uplink_mac: str = ""
) -> dict[str, str]:
    """The bridge profile's NetworkManager properties, as ``nmcli -t`` prints them."""
    static = addressing.method == STATIC
    methods = {STATIC: "manual", DHCP: "auto", NONE: "disabled"}
    props = {
        "connection.interface-name": settings.bridge,
        "connection.autoconnect": "yes",
        "bridge.stp": "no",
        "ipv4.method": methods[addressing.method],
        "ipv4.addresses": ",".join(addressing.addresses) if static else "",
        "ipv4.gateway": addressing.gateway if static else "",
        "ipv4.dns": ",".join(addressing.dns) if static else "",
    }
    if uplink_mac:  # keeps the uplink's DHCP lease and address across the move
        props["bridge.mac-address"] = uplink_mac.upper()
    return props


def nm_differences(wanted: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    """Properties whose current value differs ('--' is how nmcli prints an empty one)."""

    def norm(key, value):
        value = "" if value in ("--", None) else value
        if key in ("ipv4.addresses", "ipv4.dns"):  # lists: nmcli may print ", " between items
            return ",".join(item.strip() for item in value.split(",") if item.strip())
        return value.upper() if key == "bridge.mac-address" else value

    return {k: v for k, v in wanted.items() if norm(k, current.get(k)) != norm(k, v)}


def nm_args(props: dict[str, str]) -> str:
    """``key value`` pairs for nmcli, quoted (an empty value clears the property)."""
    return " ".join(f"{k} {shlex.quote(v)}" for k, v in props.items())


# --- both -----------------------------------------------------------------------------------


def libvirt_guests_config(shutdown_timeout: int = 300) -> str:
    """/etc/default|sysconfig/libvirt-guests: clean shutdown of the VMs with the host."""
    return template("libvirt/libvirt-guests.j2", shutdown_timeout=shutdown_timeout)
