"""Third-party apt repositories the Debian way: an armored key under /etc/apt/keyrings and a
deb822 ``.sources`` file whose ``Signed-By`` names it (never ``apt-key``), see
https://wiki.debian.org/DebianRepository/UseThirdParty.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra.operations import files, server

from roles.common import host_state
from roles.common.host_state import UNCHANGED, State, absent, put
from roles.common.opname import op_name

KEYRINGS = "/etc/apt/keyrings"
SOURCES = "/etc/apt/sources.list.d"


@dataclass(frozen=True)
class AptRepo:
    """One repository: ``name`` names its files (``<name>.sources``, ``<name>.asc``)."""

    name: str
    title: str  # shown in operation names, e.g. "Docker"
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    key_url: str

    @property
    def key_path(self) -> str:
        # apt reads an ASCII-armored key directly when the file ends in .asc (apt >= 1.4).
        return f"{KEYRINGS}/{self.name}.asc"

    @property
    def source_path(self) -> str:
        return f"{SOURCES}/{self.name}.sources"

    def source_text(self) -> str:
        """The deb822 stanza; a flat repository (suite ``/``) has no Components field."""
        lines = [
            f"# Managed by the ai-coding-server deploy: {self.title} (key from {self.key_url}).",
            "Types: deb",
            f"URIs: {self.uri}",
            f"Suites: {' '.join(self.suites)}",
        ]
        if self.components:
            lines.append(f"Components: {' '.join(self.components)}")
        lines.append(f"Signed-By: {self.key_path}")
        return "\n".join(lines) + "\n"


def add(repo: AptRepo, state: State) -> list:
    """Ensures the key and the source file; returns their operations (changed => refresh).
    ``state`` must have read :func:`paths` (see roles.common.host_state)."""
    if repo.key_path in state.files:
        key: host_state.OpResult = (
            UNCHANGED  # a key is fetched once; delete the file to fetch it again
        )
    else:
        key = files.download(
            name=op_name(repo.title, "repository signing key"),
            src=repo.key_url,
            dest=repo.key_path,
            mode="644",
        )
    source = put(
        state, op_name(repo.title, "apt source (deb822)"), repo.source_path, repo.source_text()
    )
    return [key, source]


def remove(repo: AptRepo, state: State) -> list:
    """Ensures the repository's source file and key are gone (e.g. after a source switch)."""
    return [
        absent(state, op_name(repo.title, "remove apt source"), repo.source_path),
        absent(state, op_name(repo.title, "remove repository key"), repo.key_path),
    ]


def paths(repo: AptRepo) -> list[str]:
    """The files :func:`add` and :func:`remove` manage, for the role's HostState read."""
    return [repo.key_path, repo.source_path]


def refresh_index(title: str, repo_ops: list, missing_packages: list[str]):
    """``apt-get update`` when a repository changed, or when packages are still to install (a
    run interrupted between adding a source and installing must still find them)."""
    return host_state.after(
        repo_ops,
        server.shell,
        force=bool(missing_packages),
        name=op_name(title, "refresh the package index"),
        commands=["apt-get update -qq"],
    )
