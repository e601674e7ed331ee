"""Facts of the libvirt role, each one round trip that reads everything one step needs."""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase
from typing_extensions import override


def sections(lines: list[str]) -> dict[str, list[str]]:
    """Split output printed as ``[name]`` header lines followed by their content."""
    found: dict[str, list[str]] = {}
    current = None
    for line in lines:
        header = re.fullmatch(r"\[([a-z0-9-]+)\]", line.strip())
        if header:
            current = found.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    return found


class NetworkLinks(FactBase):
    """The host's network interfaces: name -> {"mac", "bridge" (its master), "ipv4" [cidr]}."""

    @override
    def command(self) -> str:
        return (
            "for d in /sys/class/net/*; do n=${d##*/}; "
            'm=$(readlink "$d/master" 2>/dev/null); '
            'echo "$n|$(cat "$d/address" 2>/dev/null)|${m##*/}|'
            '$(ip -o -4 addr show dev "$n" 2>/dev/null | awk \'{printf "%s ", $4}\')"; done'
        )

    @staticmethod
    @override
    def default():
        return {}

    @override
    def process(self, output):
        links = {}
        for line in output:
            parts = line.strip().split("|")
            if len(parts) == 4:
                name, mac, master, ipv4 = parts
                links[name] = {"mac": mac, "bridge": master, "ipv4": ipv4.split()}
        return links


class IfupdownConfig(FactBase):
    """Debian: /etc/network/interfaces as text (None when ifupdown has no such file)."""

    @override
    def command(self) -> str:
        return "cat /etc/network/interfaces 2>/dev/null || echo '#absent'"

    @override
    def process(self, output):
        text = "\n".join(output) + "\n"
        return None if text.strip() == "#absent" else text


class NmConnections(FactBase):
    """NetworkManager: every profile's properties (``nmcli -t connection show <uuid>``) by name
    under "profiles", and "active": profile names active per device; empty without nmcli."""

    @override
    def command(self) -> str:
        return (
            "command -v nmcli >/dev/null || exit 0; "
            "echo '[active]'; nmcli -t -f NAME,DEVICE connection show --active; "
            "nmcli -t -f UUID connection show | while read -r u; do echo '[profile]'; "
            'nmcli -t connection show uuid "$u" 2>/dev/null; done'
        )

    @staticmethod
    @override
    def default():
        return {"active": {}, "profiles": {}}

    @override
    def process(self, output):
        result = self.default()
        current: str | dict | None = None
        for line in output:
            line = line.rstrip("\n")
            if line == "[active]":
                current = "active"
            elif line == "[profile]":
                current = {}
            elif current == "active":
                name, _, device = _unescape_split(line)
                result["active"].setdefault(device, []).append(name)
            elif isinstance(current, dict):
                key, _, value = _unescape_split(line)
                current[key] = value
                if key == "connection.id":
                    result["profiles"][value] = current
        return result


def bridge_profile(nm: dict, bridge: str) -> str | None:
    """The profile of type bridge for interface ``bridge`` (an existing one is adopted whatever
    its name, e.g. 'bridge-br0'); an active one first."""
    found = [
        name
        for name, p in nm["profiles"].items()
        if p.get("connection.type") == "bridge" and p.get("connection.interface-name") == bridge
    ]
    active = nm["active"].get(bridge, [])
    return next((n for n in found if n in active), found[0] if found else None)


def port_profile(nm: dict, uplink: str, bridge: str, bridge_name: str | None) -> str | None:
    """The profile that makes ``uplink`` a port of the bridge (by interface, master and type)."""
    masters = {bridge, bridge_name}
    if bridge_name:
        masters.add(nm["profiles"][bridge_name].get("connection.uuid"))
    for name, p in nm["profiles"].items():
        if (
            p.get("connection.interface-name") == uplink
            and p.get("connection.slave-type") == "bridge"
            and p.get("connection.master") in masters
        ):
            return name
    return None


def _unescape_split(line: str) -> tuple[str, str, str]:
    """Split a terse nmcli line on its first unescaped ':' and unescape the value."""
    match = re.match(r"((?:[^:\\]|\\.)*):(.*)", line)
    if not match:
        return line, "", ""
    unescape = lambda s: re.sub(r"\\(.)", r"\1", s)  # noqa: E731
    return unescape(match.group(1)), ":", unescape(match.group(2))


class SelinuxImageDir(FactBase):
    """EL9: whether SELinux is enabled, whether a local file-context rule labels ``path`` as
    virt_image_t, and the type the folder has now."""

    @override
    def command(self, path: str) -> str:
        rule = shlex.quote(f"{path}(/.*)?")
        return (
            "echo '[status]'; sestatus 2>/dev/null | head -1; "
            "echo '[rules]'; semanage fcontext -l -C 2>/dev/null | "
            f"grep -F -- {rule} || true; "
            f"echo '[type]'; stat -c %C {shlex.quote(path)} 2>/dev/null || true"
        )

    @staticmethod
    @override
    def default():
        return {"enabled": False, "rule": False, "type": None}

    @override
    def process(self, output):
        found = sections(output)
        status = " ".join(found.get("status", []))
        context = " ".join(found.get("type", [])).strip()
        return {
            "enabled": bool(re.search(r"SELinux status:\s+enabled", status)),
            "rule": any(":virt_image_t:" in line for line in found.get("rules", [])),
            "type": context.split(":")[2] if context.count(":") >= 3 else None,
        }
