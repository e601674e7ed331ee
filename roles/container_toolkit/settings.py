"""Settings of the container_toolkit role (AI guest): NVIDIA's repository, runtime, CDI."""

from __future__ import annotations

from dataclasses import dataclass

from roles.common import checks
from roles.common.settings import RoleSettings, setting


@dataclass(frozen=True)
class ContainerToolkitSettings(RoleSettings):
    PREFIX = "container_toolkit"
    GROUPS = ("ai_guests",)

    enabled: bool = setting(
        True,
        "install the NVIDIA container toolkit (containers need it to see the GPU); turn off only "
        "where NVIDIA's repository cannot be reached",
    )
    repo_url: str = setting(
        "https://nvidia.github.io/libnvidia-container",
        "NVIDIA's libnvidia-container apt repository; the apt line and key URL derive from it",
        checks.url("http", "https", "file"),
    )
    repo_key_url: str = setting(
        "",
        "signing key of the repository; empty means <container_toolkit_repo_url>/gpgkey",
        checks.optional(checks.url("http", "https", "file")),
    )
    repo_channel: str = setting(
        "stable", "channel of the repository", checks.one_of("stable", "experimental")
    )
    version: str = setting(
        "",
        "toolkit version to pin (e.g. '1.17.8-1', as `apt-cache madison nvidia-container-toolkit` "
        "shows it); empty means the newest",
        checks.optional(checks.matches(r"[0-9][A-Za-z0-9.+~-]*", "a version like 1.17.8-1")),
    )
    default_runtime: bool = setting(
        False,
        "make nvidia Docker's default runtime (otherwise containers ask for GPUs with --gpus or "
        "compose device reservations)",
    )
    cdi_spec: str = setting(
        "/etc/cdi/nvidia.yaml",
        "where `nvidia-ctk cdi generate` writes the CDI spec (only where a GPU is present)",
        checks.absolute_path,
    )

    @property
    def key_url(self) -> str:
        return self.repo_key_url or f"{self.repo_url.rstrip('/')}/gpgkey"

    @property
    def packages(self) -> list[str]:
        """The toolkit and, when pinned, its three sibling packages at the same version (as
        NVIDIA's install guide pins them)."""
        if not self.version:
            return ["nvidia-container-toolkit"]
        names = [
            "nvidia-container-toolkit",
            "nvidia-container-toolkit-base",
            "libnvidia-container-tools",
            "libnvidia-container1",
        ]
        return [f"{name}={self.version}" for name in names]
