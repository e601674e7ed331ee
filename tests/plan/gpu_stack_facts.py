"""Fake host state for the plan tests of nvidia_driver, docker and container_toolkit.

Each role reads everything it manages with one HostState fact (roles/common/host_state.py);
these helpers answer that read from recorded lab outputs (fixtures/README-gpu-stack.md) or build
the lines a host would print, e.g. a host where every file already holds what a fresh run
uploads.
"""

from __future__ import annotations

import re

from harness import debian_release, file_line, fixture, package_lines
from pyinfra.facts.files import File

from roles.common.platform import DEBIAN_12, Release
from roles.nvidia_driver import render
from roles.nvidia_driver.settings import NvidiaDriverSettings

# The firewall resolves its LAN from facts these tests do not describe; give it a fixed value
# so the whole deploy.py plans (the servers' 'auto' is loopback behind the TLS front door).
GUEST = {"firewall_allowed_networks": ["192.168.1.0/24"]}

# Each role's HostState command, told apart by its probe (first match wins, see @fake).
NVIDIA_STATE = re.compile(r"echo initramfs yes.*sed 's/\^/probe /'")
DOCKER_STATE = re.compile(r"getent group docker.*sed 's/\^/probe /'")
TOOLKIT_STATE = re.compile(r"/sys/module/nvidia/version.*sed 's/\^/probe /'")

ROLES = ("NVIDIA driver", "Docker", "NVIDIA container toolkit")


def recorded(name: str) -> list[str]:
    return fixture(name).splitlines()


def responses(
    nvidia=(), docker=(), toolkit=(), extra: dict | None = None, release: Release = DEBIAN_12
) -> dict:
    """Fake responses of a Debian guest (``release``) whose three state reads print these
    lines."""
    found = {
        NVIDIA_STATE: list(nvidia),
        DOCKER_STATE: list(docker),
        TOOLKIT_STATE: list(toolkit),
    }
    found.update(extra or {})
    found.update(debian_release(release.version))
    return found


def dpkg_l(names, version: str = "1.0-1") -> dict:
    """The response of pyinfra's DebPackages fact (``dpkg -l``), which apt.packages reads when
    it runs, for a host with these packages installed."""
    return {"dpkg -l": [f"ii  {name}  {version}  amd64  recorded package" for name in names]}


def file_fact(*paths: str) -> dict:
    """Responses of pyinfra's File fact (read by files.file/put when they run): these exist."""
    return {
        str(File().command(path=path)): (
            f"user=root group=root mode=-rw-r--r-- atime=0 mtime=0 ctime=0 size=1 '{path}'"
        )
        for path in paths
    }


def role_ops(plan, role: str | None = None) -> list[tuple[str, list[str]]]:
    """The changed operations of this part's roles (or of one of them)."""
    roles = (role,) if role else ROLES
    return [(n, c) for n, c in plan.changed if n.split(" | ")[0] in roles]


KERNEL = "6.1.0-56-amd64"


def converged_driver(
    data: dict | None = None, gpu: bool = True, kernel: str = KERNEL, release: Release = DEBIAN_12
) -> list:
    """The nvidia_driver state read of a guest where a run with ``data`` has nothing to do: its
    files as the deploy writes them, its packages, the module built for the default boot kernel
    and (``gpu``) a GPU that the loaded nvidia module drives, on that kernel."""
    settings, problems = NvidiaDriverSettings.problems_in(data or {})
    assert settings is not None and not problems, problems
    repo = render.cuda_repo(settings, release)
    files = [
        file_line(render.BLACKLIST_PATH, render.blacklist_nouveau()),
        file_line(render.PERSISTENCED_DROPIN, render.persistenced_dropin()),
    ]
    if settings.source == "nvidia":
        files += [
            f"file 644 root:root 0123456789abcdef0123456789abcdef01234567 {repo.key_path}",
            file_line(repo.source_path, repo.source_text()),
            file_line(render.PIN_PATH, render.branch_pin(settings)),
        ]
    active = "active" if gpu else "inactive"
    probe = [
        f"running {kernel}",
        f"image linux-image-{kernel} (= 6.1.192-2)",
        f"headers linux-headers-{kernel} (= 6.1.192-2)",
        f"boot {kernel}",
        f"ko /lib/modules/{kernel}/updates/dkms/nvidia.ko",
        "initramfs yes",
        "secureboot",
        *(["gpu 0000:06:00.0", "loaded nvidia"] if gpu else []),
    ]
    return [
        *files,
        *package_lines(settings.packages, "580.95.05-1"),
        f"unit nvidia-persistenced enabled=enabled active={active}",
        *[f"probe {line}" for line in probe],
    ]
