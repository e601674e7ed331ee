"""Settings of the nvidia_driver role (AI guest): where the driver comes from, reboot policy."""

from __future__ import annotations

from dataclasses import dataclass

from roles.common import checks
from roles.common.settings import RoleSettings, setting


@dataclass(frozen=True)
class NvidiaDriverSettings(RoleSettings):
    PREFIX = "nvidia_driver"
    GROUPS = ("ai_guests",)

    source: str = setting(
        "debian",
        "where the driver comes from: 'debian' (bookworm non-free, 535 branch) or 'nvidia' "
        "(NVIDIA's CUDA repository, a pinned newer branch for newer cards)",
        checks.one_of("debian", "nvidia"),
    )
    kernel_headers: str = setting(
        "linux-headers-amd64",
        "headers package for the guest's kernel flavour; DKMS builds the module for its kernel",
        checks.matches(checks.APT_PACKAGE, "a package name like linux-headers-amd64"),
    )
    debian_packages: list[str] = setting(
        [
            "nvidia-driver",
            "nvidia-kernel-dkms",
            "firmware-misc-nonfree",
            "nvidia-smi",
            "nvidia-persistenced",
        ],
        "driver packages installed with source 'debian'",
        checks.not_empty,
        checks.apt_packages,
    )
    branch: str = setting(
        "580",
        "driver branch pinned with source 'nvidia' (apt preferences); 570+ for RTX 50xx cards",
        checks.matches(r"[1-9][0-9]{2}", "a driver branch number like '580' (three digits)"),
    )
    nvidia_packages: list[str] = setting(
        ["nvidia-driver-cuda", "nvidia-kernel-open-dkms", "nvidia-persistenced"],
        "driver packages installed with source 'nvidia' (headless compute; use "
        "nvidia-kernel-dkms instead of nvidia-kernel-open-dkms for cards older than Turing)",
        checks.not_empty,
        checks.apt_packages,
    )
    cuda_repo_url: str = setting(
        "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64",
        "NVIDIA's CUDA apt repository for Debian 12 (source 'nvidia'); a mirror URL also works",
        checks.url("http", "https", "file"),
    )
    cuda_repo_key_url: str = setting(
        "",
        "signing key of the CUDA repository; empty means <cuda_repo_url>/3bf863cc.pub",
        checks.optional(checks.url("http", "https", "file")),
    )
    reboot: bool = setting(
        False,
        "reboot the guest when the driver or the nouveau blacklist changed and the driver is not "
        "loaded yet; when False a pending reboot is only reported",
    )

    @property
    def cuda_key_url(self) -> str:
        return self.cuda_repo_key_url or f"{self.cuda_repo_url.rstrip('/')}/3bf863cc.pub"

    @property
    def packages(self) -> list[str]:
        """Everything the chosen source installs, headers first (DKMS needs them)."""
        chosen = self.debian_packages if self.source == "debian" else self.nvidia_packages
        return [self.kernel_headers, *chosen]
