"""The platform profile: what differs between the OS releases the deploy supports, in one place.

Roles ask a host's `Release` (``profile(host)``) for codenames, package names, repository paths,
driver branches, compose, Python, cloud images and the boot, initramfs and firewall tools,
instead of naming a release themselves. A new release is one more `Release` in ``RELEASES``
(README: "Adding an OS release").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import LinuxDistribution

from roles.common import prefetch
from roles.common.memo import host_memo

DEBIAN = "debian"
EL9 = "el9"

_EL_IDS = {"rhel", "rocky", "almalinux", "centos", "ol"}
CUDA_REPOS = "https://developer.download.nvidia.com/compute/cuda/repos"
DEBIAN_CLOUD = "https://cloud.debian.org/images/cloud"


@dataclass(frozen=True)
class Release:
    """One supported OS release and everything the roles do differently on it."""

    key: str  # "debian12": the name settings use (guest_vm_vms[].release)
    name: str  # for messages: "Debian 12"
    family: str  # DEBIAN or EL9: apt/dnf-level differences
    version: int  # major version
    codename: str  # Debian's suite name; "" on EL9
    python: tuple[int, int]  # the release's python3
    package_manager: str  # "apt" | "dnf"
    packages: tuple[str, ...]  # what the base role adds: repository keys' gpg, tzdata
    initramfs: str  # "initramfs-tools" (update-initramfs) | "dracut"
    bootloader: str  # kernel arguments through "grub" (update-grub) | "grubby"
    firewall: str  # the firewall role's backend: "nftables" | "firewalld"
    # NVIDIA: the driver branch of the release's own non-free archive (0: none), the path of
    # NVIDIA's CUDA repository for it (repos/<cuda_repo>/x86_64) and the file of the key that
    # signs that repository, in it (each repository has its own: NVIDIA/cuda-repo-management's
    # README lists them)
    archive_driver_branch: int = 0
    cuda_repo: str = ""
    cuda_repo_key: str = ""
    # The compose command of the release's own Docker packages (docker.io + docker-compose)
    archive_compose: tuple[str, ...] = ()
    # Debian's official cloud image of the release (guest_vm: the VMs' system disk)
    cloud_image: str = ""

    @property
    def suites(self) -> tuple[str, ...]:
        """The archive suites (-updates besides the release)."""
        return (self.codename, f"{self.codename}-updates")

    @property
    def security_suite(self) -> str:
        return f"{self.codename}-security"

    @property
    def cuda_repo_url(self) -> str:
        return f"{CUDA_REPOS}/{self.cuda_repo}/x86_64"

    @property
    def cloud_image_url(self) -> str:
        return f"{DEBIAN_CLOUD}/{self.codename}/latest/{self.cloud_image}"

    @property
    def cloud_image_sums_url(self) -> str:
        return f"{DEBIAN_CLOUD}/{self.codename}/latest/SHA512SUMS"

    @property
    def lab_cloud_image(self) -> str:
        """The file name of the lab's stand-in for the cloud image (lab/cloud_image.py)."""
        return f"debian-{self.version}-lab-amd64.qcow2"

    def fill(self, template: str) -> str:
        """``template`` with {codename}, {version} and {release} of this release."""
        return template.format(codename=self.codename, version=self.version, release=self.key)


DEBIAN_12 = Release(
    key="debian12", name="Debian 12", family=DEBIAN, version=12, codename="bookworm",
    python=(3, 11), package_manager="apt", packages=("gnupg", "apt-transport-https", "tzdata"),
    initramfs="initramfs-tools", bootloader="grub", firewall="nftables",
    archive_driver_branch=535,  # main 535.261, -security 535.309, -backports 535.216
    cuda_repo="debian12",
    cuda_repo_key="3bf863cc.pub",
    archive_compose=("docker-compose",),  # docker-compose 1.29, the v1 command
    cloud_image="debian-12-generic-amd64.qcow2",
)  # fmt: skip
DEBIAN_13 = replace(
    DEBIAN_12, key="debian13", name="Debian 13", version=13, codename="trixie", python=(3, 13),
    archive_driver_branch=550,  # trixie and trixie-backports: 550.163
    cuda_repo="debian13",
    # Not debian12's key: that one is bound by SHA-1, which trixie's apt (sqv) rejects since
    # 2026-02-01 (NVIDIA/cuda-repo-management#30); the debian13 repository has its own.
    cuda_repo_key="8793F200.pub",
    archive_compose=("docker", "compose"),  # docker-compose 2.26, the CLI plugin
    cloud_image="debian-13-generic-amd64.qcow2",
)  # fmt: skip
EL_9 = Release(
    key="el9", name="RHEL/Rocky/AlmaLinux 9", family=EL9, version=9, codename="",
    python=(3, 9), package_manager="dnf", packages=("gnupg2", "tzdata"),
    initramfs="dracut", bootloader="grubby", firewall="firewalld", cuda_repo="rhel9",
)  # fmt: skip

RELEASES = {r.key: r for r in (DEBIAN_12, DEBIAN_13, EL_9)}
DEFAULT_GUEST = DEBIAN_12  # what a new VM runs unless its `release` says otherwise
GUEST_RELEASES = tuple(r.key for r in RELEASES.values() if r.cloud_image)


def release_of(distro: dict) -> Release | None:
    """The supported release of pyinfra's LinuxDistribution fact, or None."""
    meta = distro.get("release_meta") or {}
    ids = {meta.get("ID", "").lower(), *meta.get("ID_LIKE", "").lower().split()}
    major = distro.get("major")
    if meta.get("ID", "").lower() == "debian":
        return next((r for r in RELEASES.values() if r.family == DEBIAN and r.version == major),
                    None)  # fmt: skip
    if ids & _EL_IDS and major == 9:
        return EL_9
    return None


def family_of(distro: dict) -> str | None:
    """'debian' for a supported Debian release, 'el9' for the RHEL 9 family, else None."""
    release = release_of(distro)
    return release.family if release else None


@prefetch.reader("hypervisors", "ai_guests")
def reads(host) -> list[prefetch.Request]:
    """The release files :func:`profile` reads."""
    return [prefetch.Request.of(LinuxDistribution)]


def _distro(host) -> dict:
    memo = host_memo(host, "platform")
    if "distro" not in memo:  # pyinfra 3 does not cache facts: read the release files once
        memo["distro"] = prefetch.fact(host, LinuxDistribution)
    return memo["distro"]


def host_release(host) -> Release | None:
    """The host's supported release, or None (for checks that leave the refusal to a role)."""
    return release_of(_distro(host))


def profile(host, allowed: tuple[str, ...] = (DEBIAN, EL9)) -> Release:
    """The host's release, or a DeployError naming the releases of the ``allowed`` families."""
    distro = _distro(host)
    release = release_of(distro)
    if release is None or release.family not in allowed:
        pretty = distro.get("release_meta", {}).get("PRETTY_NAME") or distro.get("name")
        supported = [r.name for r in RELEASES.values() if r.family in allowed]
        raise DeployError(
            f"{host.name}: {pretty or 'unknown OS'} is not supported here; "
            f"supported: {', '.join(supported)}"
        )
    return release


def os_family(host, allowed: tuple[str, ...] = (DEBIAN, EL9)) -> str:
    """The host's OS family (``profile(host, allowed).family``)."""
    return profile(host, allowed).family
