"""The report's own read: what the other roles' facts do not already read, in one round trip."""

from __future__ import annotations

from pyinfra.api import FactBase
from typing_extensions import override

from roles.libvirt.facts import sections

PROBE = "; ".join(
    [
        "echo '[os]'; . /etc/os-release 2>/dev/null && echo \"$PRETTY_NAME\"",
        "echo '[kernel-cmdline]'; cat /etc/kernel/cmdline 2>/dev/null",
        "echo '[curl]'; if command -v rpm >/dev/null; then rpm -q curl curl-minimal; "
        "else dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n' curl; fi 2>&1",
        "echo '[selinux]'; command -v getenforce >/dev/null && getenforce",
        "echo '[firewalld]'; command -v firewall-cmd >/dev/null && { firewall-cmd --state; "
        'echo "default zone: $(firewall-cmd --get-default-zone)"; firewall-cmd '
        "--get-active-zones; } 2>&1",
        "echo '[firewalld-files]'; ls /etc/firewalld/zones /etc/firewalld/policies 2>/dev/null",
        "true",
    ]
)


class HostReport(FactBase):
    """OS, /etc/kernel/cmdline, curl's packages, SELinux, firewalld's state and zones: each a
    list of the lines its command printed (empty when the tool is absent)."""

    @override
    def command(self) -> str:
        return PROBE

    @override
    def process(self, output):
        return {k: [line for line in v if line.strip()] for k, v in sections(output).items()}

    @staticmethod
    @override
    def default():
        return {}
