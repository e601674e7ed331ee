"""Settings of the nvidia_driver role (AI guest): where the driver comes from, reboot policy."""

from __future__ import annotations

from dataclasses import dataclass

from roles.common import checks
from roles.common.platform import DEBIAN, Release, host_release
from roles.common.settings import RoleSettings, setting


@dataclass(frozen=True)
class NvidiaDriverSettings(RoleSettings):
    PREFIX = "nvidia_driver"
    GROUPS = ("ai_guests",)

    source: str = setting(
        "nvidia",
        "where the driver comes from: 'nvidia' (NVIDIA's CUDA repository, the pinned branch: "
        "what Ollama's CUDA runner needs) or 'debian' (the release's non-free archive: 535 on "
        "Debian 12, too old for Ollama on the GPU, see ollama_min_driver_branch; 550 on Debian 13)",
        checks.one_of("debian", "nvidia"),
    )
    kernel_flavour: str = setting(
        "amd64",
        "the guest's kernel flavour: linux-image-<flavour> and linux-headers-<flavour> are "
        "installed together, so DKMS builds for the kernel that boots ('cloud-amd64' for "
        "genericcloud images)",
        checks.matches(r"[a-z0-9][a-z0-9-]*", "a kernel flavour like amd64 or cloud-amd64"),
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
        "",
        "NVIDIA's CUDA apt repository (source 'nvidia'); empty: NVIDIA's own for the guest's "
        "release, https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64 "
        "(debian13 on Debian 13); a mirror URL also works",
        checks.optional(checks.url("http", "https", "file")),
    )
    cuda_repo_key_url: str = setting(
        "",
        "signing key of the CUDA repository; empty: the key NVIDIA signs the release's "
        "repository with, in the repository (3bf863cc.pub for debian12, 8793F200.pub for "
        "debian13)",
        checks.optional(checks.url("http", "https", "file")),
    )
    reboot: bool = setting(
        False,
        "reboot the guest when the driver, the kernel or the nouveau blacklist changed or the "
        "driver is not loaded on the GPU yet, check it is loaded after, and go on; when False the "
        "run starts no GPU service and ends with REBOOT PENDING (the VMs this project creates "
        "set it True: inventory.py)",
    )
    lab_skip: bool = setting(
        False,
        "LAB ONLY: leave the driver out of the run (the Vagrant lab test: its DKMS build under "
        "emulation takes longer than CI allows; the nspawn lab installs it); never on a real guest",
    )
    secure_boot_mok: bool = setting(
        False,
        "install the driver although Secure Boot is on: only once DKMS's signing key is enrolled "
        "(mokutil --import /var/lib/dkms/mok.pub, confirmed in MokManager at the next boot)",
    )

    def cuda_url(self, release: Release) -> str:
        """The CUDA repository: the setting, else NVIDIA's for ``release``."""
        return (self.cuda_repo_url or release.cuda_repo_url).rstrip("/")

    def cuda_key_url(self, release: Release) -> str:
        return self.cuda_repo_key_url or f"{self.cuda_url(release)}/{release.cuda_repo_key}"

    @property
    def kernel_image(self) -> str:
        return f"linux-image-{self.kernel_flavour}"

    @property
    def kernel_headers(self) -> str:
        return f"linux-headers-{self.kernel_flavour}"

    @property
    def packages(self) -> list[str]:
        """Everything the chosen source installs, kernel and headers first (DKMS builds for
        the kernel whose headers are there)."""
        chosen = self.debian_packages if self.source == "debian" else self.nvidia_packages
        return [self.kernel_image, self.kernel_headers, *chosen]

    def driver_branch(self, release: Release) -> int:
        """The driver branch this source installs on ``release`` (source 'debian': the branch
        of the release's own archive)."""
        return release.archive_driver_branch if self.source == "debian" else int(self.branch)

    def branch_origin(self, release: Release) -> str:
        """Which setting gives :meth:`driver_branch`, for messages that refuse it."""
        if self.source == "debian":
            branch = release.archive_driver_branch
            return f"nvidia_driver_source = 'debian' installs {release.name}'s {branch} driver"
        return f"nvidia_driver_branch = '{self.branch}'"


def guest_driver(host_) -> tuple[NvidiaDriverSettings, Release] | None:
    """The driver settings of a Debian AI guest and its release, for the checks that refuse a
    branch too old for a service before anything runs (None: a release the roles refuse)."""
    release = host_release(host_)
    if release is None or release.family != DEBIAN:
        return None
    return NvidiaDriverSettings.from_host(host_), release
