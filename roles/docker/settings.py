"""Settings of the docker role (AI guest): engine source, versions, daemon.json keys, users."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from typing_extensions import override

from roles.common import checks
from roles.common.settings import RoleSettings, setting


def _daemon_opened(value: dict) -> str | None:
    """A ``hosts`` entry that is not a local socket opens the daemon (root on the guest) to
    the network without authentication."""
    hosts = value.get("hosts", [])
    for entry in hosts if isinstance(hosts, list) else [hosts]:
        if not (isinstance(entry, str) and entry.startswith(("unix://", "fd://"))):
            return (
                f"hosts entry {entry!r} opens the Docker API (root on the guest) to the network "
                "without authentication; keep only unix:// sockets (use ssh:// contexts to "
                "reach it remotely)"
            )
    return None


# Types of common daemon.json options (dockerd's documentation), checked where known.
DAEMON_OPTION_TYPES: dict[str, type] = {
    "log-driver": str,
    "log-opts": dict,
    "data-root": str,
    "live-restore": bool,
    "max-concurrent-downloads": int,
    "max-concurrent-uploads": int,
    "registry-mirrors": list,
    "insecure-registries": list,
    "dns": list,
    "userland-proxy": bool,
    "iptables": bool,
    "ip6tables": bool,
}


def _daemon_option_types(value: dict) -> str | None:
    for name, kind in DAEMON_OPTION_TYPES.items():
        if name in value and not (
            isinstance(value[name], kind) and not (kind is int and isinstance(value[name], bool))
        ):
            return f"{name!r} must be {kind.__name__}, got {value[name]!r}"
    if isinstance(value.get("data-root"), str):
        problem = checks.safe_path(value["data-root"])
        return f"'data-root': {problem}" if problem else None
    if value.get("log-opts") and not all(isinstance(v, str) for v in value["log-opts"].values()):
        return "'log-opts' values must be strings (dockerd reads them as strings: '10m', '3')"
    return None


def _json_object(value: dict) -> str | None:
    try:
        json.dumps(value, allow_nan=False)  # dockerd rejects NaN/Infinity
    except (TypeError, ValueError) as error:
        return f"is not JSON data ({error}); use strings, numbers, booleans, lists and dicts"
    return None


@dataclass(frozen=True)
class DockerSettings(RoleSettings):
    PREFIX = "docker"
    GROUPS = ("ai_guests",)

    source: str = setting(
        "docker",
        "where the engine comes from: 'docker' (Docker's apt repository, compose v2 plugin) or "
        "'debian' (Debian's docker.io and docker-compose: on Debian 12 1.29, the v1 "
        "`docker-compose` command; on Debian 13 v2, `docker compose`)",
        checks.one_of("docker", "debian"),
    )
    repo_url: str = setting(
        "https://download.docker.com/linux/debian",
        "Docker's apt repository (source 'docker'); the apt line and key URL derive from it",
        checks.url("http", "https", "file"),
    )
    repo_key_url: str = setting(
        "",
        "signing key of Docker's repository; empty means <docker_repo_url>/gpg",
        checks.optional(checks.url("http", "https", "file")),
    )
    repo_channel: str = setting(
        "stable", "channel of Docker's repository", checks.one_of("stable", "test")
    )
    version: str = setting(
        "",
        "docker-ce and docker-ce-cli version from Docker's repository, as `apt-cache madison "
        "docker-ce` shows it (e.g. '5:27.5.1-1~debian.12~' and the codename); empty: the newest",
        checks.optional(checks.matches(r"[A-Za-z0-9.+~:-]+", "a Debian package version")),
    )
    packages: list[str] = setting(
        ["containerd.io", "docker-buildx-plugin", "docker-compose-plugin"],
        "packages from Docker's repository besides docker-ce and docker-ce-cli",
        checks.apt_packages,
    )
    debian_packages: list[str] = setting(
        ["docker.io", "docker-compose"],
        "packages installed with source 'debian'",
        checks.not_empty,
        checks.apt_packages,
    )
    conflicting_packages: list[str] = setting(
        ["docker.io", "docker-doc", "docker-compose", "podman-docker", "containerd", "runc"],
        "Debian packages removed before Docker's own are installed (Docker's install guide)",
        checks.apt_packages,
    )
    users: list[str] = setting(
        [],
        "existing users added to the docker group besides base_admin_user",
        checks.matches(checks.NAME, "a user name"),
    )
    daemon_options: dict[str, Any] = setting(
        {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}},
        "keys the deploy owns in /etc/docker/daemon.json, merged into the file (other keys "
        "stay as they are)",
        _json_object,
        _daemon_opened,
        _daemon_option_types,
    )

    @override
    def check(self):
        problems = []
        from roles.container_toolkit.render import runtime_keys  # what that role writes
        from roles.container_toolkit.settings import ContainerToolkitSettings

        owned = runtime_keys(ContainerToolkitSettings(default_runtime=True))
        for name in sorted(set(owned) & set(self.daemon_options)):
            problems.append(
                (
                    self.key("daemon_options"),
                    f"{name!r} is written by the container_toolkit role (see "
                    "container_toolkit_default_runtime); leave it out here",
                )
            )
        if self.source == "debian" and self.version:
            problems.append(
                (
                    self.key("version"),
                    "pins a package of Docker's repository, but docker_source is 'debian'; "
                    "clear docker_version or set docker_source = 'docker'",
                )
            )
        return problems

    @property
    def key_url(self) -> str:
        return self.repo_key_url or f"{self.repo_url.rstrip('/')}/gpg"

    @property
    def engine_packages(self) -> list[str]:
        """What the chosen source installs (docker-ce and its CLI pinned to ``version``)."""
        if self.source == "debian":
            return list(self.debian_packages)
        pin = f"={self.version}" if self.version else ""
        return [f"docker-ce{pin}", f"docker-ce-cli{pin}", *self.packages]

    @property
    def removed_packages(self) -> list[str]:
        """Packages of the other source, removed first so the two never mix."""
        if self.source == "debian":
            return [p.split("=")[0] for p in ["docker-ce", "docker-ce-cli", *self.packages]]
        return list(self.conflicting_packages)
