"""Settings of the base role (every host): package sources, base packages, admin user, time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from typing_extensions import override

from roles.common import checks
from roles.common.settings import Problem, RoleSettings, setting


@dataclass(frozen=True)
class BaseSettings(RoleSettings):
    PREFIX = "base"
    GROUPS = ()  # every host

    debian_mirror: str = setting(
        "http://deb.debian.org/debian",
        "Debian archive (the release's suite and -updates)",
        checks.url(),
    )
    debian_security_mirror: str = setting(
        "http://deb.debian.org/debian-security",
        "Debian security archive (the release's -security suite)",
        checks.url(),
    )
    debian_components: list[str] = setting(
        ["main", "contrib", "non-free", "non-free-firmware"],
        "archive components (the NVIDIA driver needs contrib, non-free, non-free-firmware)",
        checks.matches(r"[a-z-]+", "a component name"),
    )
    packages: list[str] = setting(
        ["ca-certificates", "curl", "sudo", "git", "python3", "tmux", "jq"],
        "packages installed on every host",
        checks.apt_packages,
    )
    admin_user: str = setting(
        "aicoder",
        "the admin user (sudo, SSH keys, docker group)",
        checks.matches(checks.NAME, "a user name"),
    )
    admin_ssh_keys: list[str] = setting(
        [],
        "public SSH keys authorized for the admin user",
        checks.matches(
            r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+( .*)?",
            "an SSH public key line (e.g. 'ssh-ed25519 AAAA... me@laptop')",
        ),
    )
    admin_passwordless_sudo: bool = setting(True, "sudo without a password for the admin user")
    timezone: str = setting(
        "UTC",
        "time zone (a name under /usr/share/zoneinfo)",
        checks.matches(
            r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", "a time zone name like Europe/Berlin"
        ),
    )

    @classmethod
    @override
    def problems_in(cls, data: dict[str, Any]):
        """Also refuse taking password-less sudo away from the user this deploy connects as,
        with no sudo password to give: the very next run would stop at sudo's prompt."""
        settings, problems = super().problems_in(data)
        if settings is not None and not problems:
            problems += _sudo_lockout(settings, data)
        return settings, problems


def _sudo_lockout(settings: BaseSettings, data: dict[str, Any]) -> list[Problem]:
    connects_as = data.get("ssh_user")
    if settings.admin_passwordless_sudo or connects_as != settings.admin_user:
        return []
    if not data.get("_sudo") or data.get("_sudo_password"):
        return []
    return [
        (
            BaseSettings.key("admin_passwordless_sudo"),
            f"is False, but this deploy connects as {connects_as!r} (base_admin_user) and uses "
            "sudo with no _sudo_password: after this run sudo would ask for a password the "
            "next run cannot give; set _sudo_password in the host's data (from an environment "
            "variable, never in git) or keep base_admin_passwordless_sudo True",
        )
    ]
