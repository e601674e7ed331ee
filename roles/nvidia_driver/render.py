"""Pure rendering for the nvidia_driver role: file contents from settings, no host access."""

from __future__ import annotations

from roles.common.apt_repo import AptRepo
from roles.common.platform import Release
from roles.common.templates import render
from roles.nvidia_driver.settings import NvidiaDriverSettings

BLACKLIST_PATH = "/etc/modprobe.d/blacklist-nouveau.conf"
PIN_PATH = "/etc/apt/preferences.d/nvidia-driver-pin"
PERSISTENCED_DROPIN = "/etc/systemd/system/nvidia-persistenced.service.d/aicoder-needs-gpu.conf"

# Names of the packages built from NVIDIA's driver sources (apt_preferences globs). Broad on
# purpose: the pin only raises versions of this branch, so a package matched here that has no
# such version (nvidia-container-toolkit 1.x, say) keeps its normal candidate.
PINNED_PACKAGES = "*nvidia* libcuda* libnv* libxnvctrl*"


def blacklist_nouveau() -> str:
    return render("nvidia_driver/blacklist-nouveau.conf.j2")


def persistenced_dropin() -> str:
    return render("nvidia_driver/persistenced-needs-gpu.conf.j2")


def branch_pin(settings: NvidiaDriverSettings) -> str:
    return render(
        "nvidia_driver/nvidia-driver-pin.pref.j2", branch=settings.branch, packages=PINNED_PACKAGES
    )


def cuda_repo(settings: NvidiaDriverSettings, release: Release) -> AptRepo:
    """NVIDIA's CUDA repository for ``release``: a flat repository (suite "/"), like
    cuda-keyring sets up."""
    return AptRepo(
        name="nvidia-cuda",
        title="NVIDIA CUDA repository",
        uri=settings.cuda_url(release),
        suites=("/",),
        components=(),
        key_url=settings.cuda_key_url(release),
    )


def branch_available(settings: NvidiaDriverSettings, release: Release) -> str:
    """A command failing, with the branches there are, when NVIDIA's repository has no version
    of the pinned branch: the pin would then match nothing and apt would take the newest branch
    (NVIDIA's debian13 repository started at 590, say)."""
    package, branch = settings.nvidia_packages[0], settings.branch
    # madison's second column, without blanks and epoch: "580.95.05-1"
    column = '{gsub(/ /, "", $2); sub(/^[0-9]+:/, "", $2); print $2}'
    found = f"apt-cache madison {package} | awk -F'|' '{column}'"
    why = (
        f"NVIDIA's {release.name} repository has no {branch} driver ({package}); its branches: "
        f"$branches. Set nvidia_driver_branch to one of them (check that it supports your GPU)"
    )
    return (
        f"versions=$({found}); "
        f"branches=$(printf '%s\\n' $versions | cut -d. -f1 | sort -u | tr '\\n' ' '); "
        f"printf '%s\\n' $versions | grep -q '^{branch}\\.' || "
        f'{{ echo "{why}" >&2; exit 1; }}'
    )
