"""Value checks for settings: each returns None when the value is fine, else what to fix."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

Check = Callable[[Any], str | None]


def one_of(*choices: Any) -> Check:
    def check(value):
        if value not in choices:
            return f"{value!r} is not one of {', '.join(repr(c) for c in choices)}"
        return None

    return check


def in_range(low: float, high: float) -> Check:
    def check(value):
        if not low <= value <= high:
            return f"{value!r} is out of range; use a value from {low} to {high}"
        return None

    return check


def matches(pattern: str, what: str) -> Check:
    """The value (or every item of a list) must match ``pattern``; ``what`` names the form."""
    compiled = re.compile(pattern)

    def check(value):
        for item in value if isinstance(value, list | tuple) else [value]:
            if not compiled.fullmatch(str(item)):
                return f"{item!r} is not {what}"
        return None

    return check


def url(*schemes: str) -> Check:
    schemes = schemes or ("http", "https")

    def check(value):
        parsed = urlparse(value)
        local = parsed.scheme == "file" and parsed.path.startswith("/")
        if parsed.scheme not in schemes or not (parsed.netloc or local):
            return f"{value!r} is not a URL ({'/'.join(schemes)}://host/path)"
        return None

    return check


WILDCARD_ADDRESSES = ("0.0.0.0", "::")
"""Listen addresses that mean every interface."""


def ip_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address (e.g. 127.0.0.1 or 192.168.1.10)"
    return None


def cidrs(value: list[str]) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not a network in CIDR form (e.g. 192.168.1.0/24)"
    return None


def port(value: int) -> str | None:
    if not 1 <= value <= 65535:
        return f"{value!r} is not a TCP port (1-65535)"
    return None


def not_empty(value: Any) -> str | None:
    return "must not be empty" if not value else None


def absolute_path(value: str) -> str | None:
    if not value.startswith("/"):
        return f"{value!r} is not an absolute path (start it with /)"
    return None


NAME = r"[a-z_][a-z0-9_-]{0,31}"
"""A POSIX user or group name."""

APT_PACKAGE = r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?"
"""A Debian package name, optionally pinned as name=version."""

PCI_ADDRESS = r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]"
"""A full PCI address as sysfs and libvirt name it: domain:bus:slot.function (0000:01:00.0)."""

MAC_ADDRESS = r"[0-9a-f]{2}(:[0-9a-f]{2}){5}"
"""A MAC address in lower case (52:54:00:12:34:56)."""

INTERFACE = r"[A-Za-z0-9_.-]{1,15}"
"""A Linux network interface name (at most 15 characters)."""


def cidr_address(value: str) -> str | None:
    """An interface address with its prefix length, like 192.168.1.10/24."""
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return f"{value!r} is not an address with a prefix length (e.g. 192.168.1.10/24)"
    if "/" not in value:
        return f"{value!r} lacks its prefix length (e.g. {value}/24)"
    return None


def optional(check: Check) -> Check:
    """``check`` for a value that may also be left empty ("" means: use the derived default)."""

    def wrapped(value):
        return check(value) if value else None

    return wrapped


def ports(value: list[int]) -> str | None:
    """Every item of a list is a TCP/UDP port."""
    for item in value:
        msg = port(item)
        if msg:
            return msg
    return None


PCI_IDS = r"[0-9a-f]{4}:[0-9a-f]{4}"
"""A PCI vendor:device id pair as lspci -nn prints it (10de:2204)."""


def pci_device(value) -> str | None:
    """Every item names a PCI device: a full address (0000:01:00.0) or vendor:device ids."""
    for item in value if isinstance(value, list | tuple) else [value]:
        text = str(item)
        if not (re.fullmatch(PCI_ADDRESS, text) or re.fullmatch(PCI_IDS, text)):
            return (
                f"{item!r} is neither a PCI address like 0000:01:00.0 nor vendor:device ids "
                f"like 10de:2204 (lower case; see `lspci -Dnn`)"
            )
    return None


apt_packages = matches(APT_PACKAGE, "a package name (name or name=version)")
"""Check for a list of Debian packages, each ``name`` or ``name=version``."""
