"""Value checks for settings: each returns None when the value is fine, else what to fix."""

from __future__ import annotations

import ipaddress
import posixpath
import re
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

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
                return plain_text(str(item), what) or f"{item!r} is not {what}"
        return None

    return check


def url(*schemes: str) -> Check:
    """A URL of one of ``schemes``, parsed strictly: no whitespace, control or non-ASCII
    character, a host name or address (or a path for file:), a valid port."""
    schemes = schemes or ("http", "https")
    form = f"a URL ({'/'.join(schemes)}://host/path)"

    def check(value):
        problem = plain_text(value, form)
        if problem:
            return problem
        if re.search(r"\s", value):
            return f"{value!r} holds a space; it is not {form}"
        parsed = urlsplit(value)
        local = parsed.scheme == "file" and parsed.path.startswith("/")
        if parsed.scheme not in schemes or not (parsed.netloc or local):
            return f"{value!r} is not {form}"
        try:
            parsed.port  # noqa: B018 (raises on a port that is not a number in range)
        except ValueError:
            return f"{value!r} has a bad port; it is not {form}"
        if parsed.netloc and not re.fullmatch(URL_HOST, parsed.hostname or ""):
            return f"{value!r} has no valid host name; it is not {form}"
        return None

    return check


LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
URL_HOST = rf"{LABEL}(\.{LABEL})*\.?|[0-9a-fA-F:.]+"
"""A URL's host: a DNS name, an IPv4 address or (inside brackets) an IPv6 address."""


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Characters that end a line or are invisible in a file or a command."""


def control_character(value: str) -> str | None:
    """Where ``value`` holds a newline or another control character, if it does."""
    found = CONTROL.search(value)
    if found:
        return (
            f"holds a control character ({found.group()!r} at position {found.start() + 1}); "
            "it would split a line in a file or a command: remove it"
        )
    return None


def non_ascii(value: str) -> str | None:
    """Point at the first non-ASCII character: a look-alike (a Cyrillic а for a) reads the same
    but names something else."""
    for i, char in enumerate(value):
        if ord(char) > 127:
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            return (
                f"character {i + 1} of {value!r} is {name} (U+{ord(char):04X}), not ASCII; "
                "retype it (a look-alike?)"
            )
    return None


def plain_text(value: str, what: str) -> str | None:
    """``value`` is one line of ASCII text; else say where it is not (before saying it is not
    ``what``)."""
    problem = control_character(value) or non_ascii(value)
    return f"{problem}; expected {what}" if problem else None


WILDCARD_ADDRESSES = ("0.0.0.0", "::")
"""Listen addresses that mean every interface."""


def ip_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address (e.g. 127.0.0.1 or 192.168.1.10)"
    return None


def auto_or_ip(value: str) -> str | None:
    """A service's listen address: 'auto' (see roles/common/services.listen_address) or one IP."""
    return None if value == "auto" else ip_address(value)


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


SYSTEM_FOLDERS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/usr/bin",
        "/usr/include",
        "/usr/lib",
        "/usr/lib64",
        "/usr/libexec",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/lib",
        "/usr/local/sbin",
        "/usr/sbin",
        "/usr/share",
        "/usr/src",
        "/var",
        "/var/cache",
        "/var/lib",
        "/var/local",
        "/var/log",
        "/var/mail",
        "/var/opt",
        "/var/spool",
        "/var/tmp",
        "/etc/systemd",
        "/etc/systemd/system",
        "/etc/ssh",
        "/etc/sudoers.d",
        "/etc/cron.d",
        "/etc/apt",
    ]  # noqa: SIM905
)
"""Folders the system owns: a setting naming one would chmod, chown or fill it."""

VIRTUAL_FOLDERS = ("/proc", "/sys", "/dev", "/run", "/boot")
"""Kernel, device, runtime and boot file systems: nothing of the deploy's belongs under them."""

PATH_CHARACTERS = r"[A-Za-z0-9._+@%,=:/-]*"
"""What a path may hold: no whitespace, quote, glob, ~, $ or other shell-special character."""


def safe_path(value: str) -> str | None:
    """An absolute, normalised path of plain characters that is not a system folder."""
    problem = path_form(value)
    if problem:
        return problem
    if value in SYSTEM_FOLDERS:
        own = f"{value.rstrip('/')}/aicoder"
        return f"{value!r} is a system folder; name a folder of its own such as {own!r}"
    if any(value == v or value.startswith(v + "/") for v in VIRTUAL_FOLDERS):
        return f"{value!r} is under a kernel, runtime or boot file system; use another folder"
    return None


def path_form(value: str) -> str | None:
    """An absolute, normalised path of plain characters (wherever it points)."""
    problem = plain_text(value, "an absolute path like /var/lib/name")
    if problem:
        return problem
    if not value.startswith("/"):
        return f"{value!r} is not an absolute path (start it with /)"
    if not re.fullmatch(PATH_CHARACTERS, value):
        bad = sorted({c for c in value if not re.fullmatch(PATH_CHARACTERS, c)})
        return (
            f"{value!r} holds {' '.join(map(repr, bad))}; use letters, digits and . _ + @ % , = : "
            "- / only (no spaces or shell characters)"
        )
    if posixpath.normpath(value) != value or "/./" in value + "/" or "/../" in value + "/":
        return f"{value!r} is not normalised (no '..', '.', '//' or trailing '/'); write it as " + (
            f"{posixpath.normpath(value)!r}"
        )
    return None


absolute_path = safe_path
"""Every path setting gets the full path check (older name kept for the roles)."""


def service_user(value: str) -> str | None:
    """A POSIX user name for a service to run as: never root."""
    if not re.fullmatch(NAME, value):
        return plain_text(value, "a user name") or f"{value!r} is not a user name"
    if value == "root":
        return "a service never runs as root; use its own user (e.g. the default)"
    return None


GIT_REF = r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}"
"""The characters of a git branch, tag or commit; git_ref adds git's own rules."""


def git_ref(value: str) -> str | None:
    """A branch, tag or commit as ``git check-ref-format`` allows it (no '..', no part
    starting with '.', not ending in '/', '.' or '.lock')."""
    what = "a branch, tag or commit (a commit id or tag name, or a branch like main)"
    bad = (
        not re.fullmatch(GIT_REF, value)
        or ".." in value
        or "//" in value
        or "/." in value
        or value.endswith(("/", ".", ".lock"))
    )
    return (plain_text(value, what) or f"{value!r} is not {what}") if bad else None


def unicast_mac(value: str) -> str | None:
    """A lower-case MAC address of one network card (not multicast or broadcast, not zero)."""
    if not re.fullmatch(MAC_ADDRESS, value):
        return f"{value!r} is not a MAC address like 52:54:00:12:34:56 (lower case)"
    if int(value[:2], 16) & 1:
        return (
            f"{value!r} is a multicast/broadcast address; use a unicast one like 52:54:00:12:34:56"
        )
    if value == "00:00:00:00:00:00":
        return f"{value!r} is no address; use one like 52:54:00:12:34:56"
    return None


KIND_NAMES = {
    "bool": "True or False",
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
}

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
