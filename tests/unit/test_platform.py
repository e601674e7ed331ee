"""The platform profile (roles/common/platform.py): releases told apart, and the only place
that names one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from roles.common.platform import (
    DEBIAN_12,
    DEBIAN_13,
    DEFAULT_GUEST,
    EL_9,
    GUEST_RELEASES,
    RELEASES,
    release_of,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = [ROOT / "tests" / "fixtures" / "el9", ROOT / "tests" / "plan" / "fixtures"]
CODENAMES = re.compile(r"\b(bookworm|trixie)\b", re.IGNORECASE)


def distro(name: str) -> dict:
    """pyinfra's LinuxDistribution fact, as far as release_of reads it, from a recorded file."""
    text = next((f / name).read_text() for f in FIXTURES if (f / name).exists())
    meta = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.M))
    major = meta.get("VERSION_ID", "").split(".")[0]
    return {"release_meta": meta, "major": int(major) if major.isdigit() else None}


@pytest.mark.parametrize(
    "name, release",
    [
        ("os-release.debian-12.txt", DEBIAN_12),
        ("os-release.debian-13.txt", DEBIAN_13),
        ("os-release.rocky-9.4.txt", EL_9),
        ("os-release.almalinux-9.6.txt", EL_9),
        ("os-release.rhel-9.4.txt", EL_9),
    ],
)
def test_recorded_releases_get_their_profile(name, release):
    assert release_of(distro(name)) is release


def test_other_releases_get_none():
    debian11 = {"release_meta": {"ID": "debian"}, "major": 11}
    ubuntu = {"release_meta": {"ID": "ubuntu", "ID_LIKE": "debian"}, "major": 24}
    assert release_of(debian11) is None and release_of(ubuntu) is None


def test_where_the_releases_differ():
    assert (DEBIAN_12.archive_driver_branch, DEBIAN_13.archive_driver_branch) == (535, 550)
    assert DEBIAN_12.archive_compose == ("docker-compose",)  # v1
    assert DEBIAN_13.archive_compose == ("docker", "compose")  # v2
    assert (DEBIAN_12.python, DEBIAN_13.python) == ((3, 11), (3, 13))
    assert DEBIAN_13.suites == ("trixie", "trixie-updates")
    assert DEBIAN_13.security_suite == "trixie-security"
    assert DEBIAN_13.cuda_repo_url.endswith("/cuda/repos/debian13/x86_64")
    # Each CUDA repository has its own signing key (NVIDIA/cuda-repo-management's README).
    assert (DEBIAN_12.cuda_repo_key, DEBIAN_13.cuda_repo_key) == ("3bf863cc.pub", "8793F200.pub")
    assert DEBIAN_13.cloud_image_url.endswith("/trixie/latest/debian-13-generic-amd64.qcow2")
    assert DEBIAN_12.lab_cloud_image == "debian-12-lab-amd64.qcow2"
    # EL9: dnf, grubby for the kernel arguments, dracut for the initramfs, firewalld.
    assert (EL_9.package_manager, EL_9.bootloader, EL_9.initramfs, EL_9.firewall) == (
        "dnf", "grubby", "dracut", "firewalld"
    )  # fmt: skip
    for debian in (DEBIAN_12, DEBIAN_13):
        assert (debian.package_manager, debian.bootloader, debian.initramfs, debian.firewall) == (
            "apt", "grub", "initramfs-tools", "nftables"
        )  # fmt: skip


def test_debian_12_stays_the_default_guest():
    assert DEFAULT_GUEST is DEBIAN_12
    assert GUEST_RELEASES == ("debian12", "debian13")  # EL9 has no cloud image here
    assert set(RELEASES) == {"debian12", "debian13", "el9"}


def test_no_release_codename_outside_the_profile():
    """Roles, templates and group_data ask the profile; only roles/common/platform.py names a
    release."""
    allowed = ROOT / "roles" / "common" / "platform.py"
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("roles", "group_data", "templates")
        for path in sorted((ROOT / folder).rglob("*"))
        if path.is_file() and path.suffix in {".py", ".j2", ".yml", ".yaml", ".md"}
        and path != allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if CODENAMES.search(line)
    ]  # fmt: skip
    assert not found, "release codenames outside the profile:\n" + "\n".join(found)
    assert CODENAMES.search(allowed.read_text())  # the check looks where the names are
