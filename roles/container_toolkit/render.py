"""Pure rendering for the container_toolkit role."""

from __future__ import annotations

from typing import Any

from roles.common.apt_repo import AptRepo
from roles.container_toolkit.settings import ContainerToolkitSettings


def toolkit_repo(settings: ContainerToolkitSettings) -> AptRepo:
    """NVIDIA's flat repository ``<repo>/<channel>/deb/$(ARCH) /`` (apt fills in $(ARCH))."""
    return AptRepo(
        name="nvidia-container-toolkit",
        title="NVIDIA container toolkit",
        uri=f"{settings.repo_url.rstrip('/')}/{settings.repo_channel}/deb/$(ARCH)",
        suites=("/",),
        components=(),
        key_url=settings.key_url,
    )


def runtime_keys(settings: ContainerToolkitSettings) -> dict[str, Any]:
    """The daemon.json keys that ``nvidia-ctk runtime configure --runtime=docker`` writes
    (``--set-as-default`` adds default-runtime), merged instead of letting it rewrite the file."""
    keys: dict[str, Any] = {
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
    }
    if settings.default_runtime:
        keys["default-runtime"] = "nvidia"
    return keys
