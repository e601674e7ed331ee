"""Settings of the nvidia_driver role (AI guest): where the driver comes from, reboot policy."""

from __future__ import annotations

from dataclasses import dataclass

from roles.common import checks
from roles.common.settings import RoleSettings, setting

# The branch of Debian 12's nvidia-driver in every bookworm suite (main 535.261, -security
# 535.309, -backports 535.216); Debian 13 has 550.
DEBIAN_BRANCH = 535


@dataclass(frozen=True)
class NvidiaDriverSettings(RoleSettings):
    PREFIX = "nvidia_driver"
    GROUPS = ("ai_guests",)

    source: str = setting(
        "nvidia",
        "where the driver comes from: 'nvidia' (NVIDIA's CUDA repository, the pinned branch: "
        "what Ollama's CUDA runner needs) or 'debian' (bookworm non-free, 535: too old for "
        "Ollama on the GPU, see ollama_min_driver_branch)",
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

    @property
    def cuda_key_url(self) -> str:
        return self.cuda_repo_key_url or f"{self.cuda_repo_url.rstrip('/')}/3bf863cc.pub"

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

    @property
    def driver_branch(self) -> int:
        """The driver branch this source installs (bookworm's non-free suites all ship 535)."""
        return DEBIAN_BRANCH if self.source == "debian" else int(self.branch)
