"""nvidia_driver role: settings validation, file rendering, the driver-state fact."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from roles.common import host_state
from roles.common.platform import DEBIAN_12, DEBIAN_13
from roles.nvidia_driver import facts, render
from roles.nvidia_driver.facts import DriverState, parse_state
from roles.nvidia_driver.settings import NvidiaDriverSettings

FIXTURES = Path(__file__).resolve().parents[1] / "plan" / "fixtures"


def problems(**values) -> dict[str, str]:
    data = {NvidiaDriverSettings.key(k): v for k, v in values.items()}
    _, found = NvidiaDriverSettings.problems_in(data)
    return dict(found)


def settings(**values) -> NvidiaDriverSettings:
    data = {NvidiaDriverSettings.key(k): v for k, v in values.items()}
    instance, found = NvidiaDriverSettings.problems_in(data)
    assert not found, found
    return instance


def test_defaults_are_valid_and_use_nvidia_repository_packages():
    s = settings()
    assert s.source == "nvidia"  # Ollama's CUDA runner needs 550+
    assert s.driver_branch(DEBIAN_12) == s.driver_branch(DEBIAN_13) == 580
    # The kernel metapackage with its headers, first: DKMS builds for the kernel that boots.
    assert s.packages[:2] == ["linux-image-amd64", "linux-headers-amd64"]
    debian = settings(source="debian")
    # The release's own archive: Debian 12 stops at 535, Debian 13 has 550.
    assert debian.driver_branch(DEBIAN_12) == 535
    assert debian.driver_branch(DEBIAN_13) == 550
    assert {"nvidia-driver", "nvidia-kernel-dkms", "firmware-misc-nonfree"} <= set(debian.packages)


def test_cloud_kernel_flavour_installs_the_cloud_kernel_and_headers():
    s = settings(kernel_flavour="cloud-amd64")
    assert s.packages[:2] == ["linux-image-cloud-amd64", "linux-headers-cloud-amd64"]
    assert (
        "a kernel flavour like amd64"
        in problems(kernel_flavour="Cloud AMD64")["nvidia_driver_kernel_flavour"]
    )


def test_unknown_source_names_the_key_and_the_choices():
    found = problems(source="cuda")
    assert "'cuda' is not one of 'debian', 'nvidia'" in found["nvidia_driver_source"]


@pytest.mark.parametrize("branch", ["55", "5500", "550.54", "r550", "latest", "050"])
def test_malformed_branch_is_refused(branch):
    found = problems(branch=branch)
    assert "a driver branch number like '580'" in found["nvidia_driver_branch"]


def test_branch_given_as_a_number_says_a_string_is_expected():
    found = problems(branch=550)
    assert "expected a string" in found["nvidia_driver_branch"]


@pytest.mark.parametrize("url", ["developer.download.nvidia.com/compute", "ftp://x/y", "https//x"])
def test_malformed_repository_url_is_refused(url):
    found = problems(cuda_repo_url=url)
    assert "is not a URL" in found["nvidia_driver_cuda_repo_url"]


def test_malformed_key_url_is_refused_but_empty_means_derived():
    assert (
        "is not a URL"
        in problems(cuda_repo_key_url="3bf863cc.pub")["nvidia_driver_cuda_repo_key_url"]
    )
    mirror = settings(cuda_repo_url="http://mirror.lan/cuda/")
    assert mirror.cuda_key_url(DEBIAN_12) == "http://mirror.lan/cuda/3bf863cc.pub"
    assert mirror.cuda_key_url(DEBIAN_13) == "http://mirror.lan/cuda/8793F200.pub"


def test_bad_package_names_and_empty_lists_are_refused():
    assert (
        "is not a package name"
        in problems(debian_packages=["Nvidia Driver"])["nvidia_driver_debian_packages"]
    )
    assert "must not be empty" in problems(nvidia_packages=[])["nvidia_driver_nvidia_packages"]


def test_nvidia_source_installs_the_headless_packages():
    s = settings(source="nvidia", branch="570")
    assert s.packages == [
        "linux-image-amd64",
        "linux-headers-amd64",
        "nvidia-driver-cuda",
        "nvidia-kernel-open-dkms",
        "nvidia-persistenced",
    ]


def test_blacklist_disables_nouveau_and_modesetting():
    text = render.blacklist_nouveau()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == ["blacklist nouveau", "options nouveau modeset=0"]


def test_branch_pin_pins_driver_packages_to_the_branch():
    text = render.branch_pin(settings(source="nvidia", branch="570"))
    stanza = dict(
        line.split(": ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert stanza == {
        "Package": "*nvidia* libcuda* libnv* libxnvctrl*",
        "Pin": "version 570.*",
        "Pin-Priority": "1000",
    }


def test_cuda_repository_is_a_flat_deb822_source_with_signed_by():
    repo = render.cuda_repo(settings(source="nvidia"), DEBIAN_12)
    assert repo.key_path == "/etc/apt/keyrings/nvidia-cuda.asc"
    assert repo.source_path == "/etc/apt/sources.list.d/nvidia-cuda.sources"
    body = [line for line in repo.source_text().splitlines() if not line.startswith("#")]
    assert body == [
        "Types: deb",
        "URIs: https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64",
        "Suites: /",
        "Signed-By: /etc/apt/keyrings/nvidia-cuda.asc",
    ]
    assert repo.key_url.endswith("/debian12/x86_64/3bf863cc.pub")
    # Each release gets NVIDIA's repository for it; a mirror URL is used as it is.
    assert render.cuda_repo(settings(), DEBIAN_13).uri.endswith("/repos/debian13/x86_64")
    mirror = settings(cuda_repo_url="http://mirror.lan/cuda/")
    assert render.cuda_repo(mirror, DEBIAN_13).uri == "http://mirror.lan/cuda"
    # ... and the key that signs that release's repository (NVIDIA/cuda-repo-management README).
    assert render.cuda_repo(settings(), DEBIAN_13).key_url.endswith("/debian13/x86_64/8793F200.pub")


def test_probe_reads_everything_in_one_command():
    probe = facts.probe("cloud-amd64")
    for piece in ("uname -r", "linux-image-cloud-amd64", "linux-headers-cloud-amd64",
                  "/boot/vmlinuz-", "updates/dkms", "/sys/module/$m", "0x10de",
                  "update-initramfs", facts.SECURE_BOOT_VAR):  # fmt: skip
        assert piece in probe


def recorded(name: str) -> DriverState:
    """The driver probe lines of a recorded HostState output (see fixtures/README-gpu-stack)."""
    return parse_state(host_state.parse((FIXTURES / name).read_text().splitlines()).probe)


def test_state_of_a_lab_guest_after_the_deploy():
    """In a container the running kernel is the host's; the module is built for the kernel of
    the installed linux-image-amd64, which is what the guest boots (and its headers match)."""
    state = recorded("host-state.nvidia-driver.debian-12-lab-deployed.txt")
    assert state.target_kernel == state.headers_kernel == "6.1.0-57-amd64"
    assert state.boot_kernels == {"6.1.0-57-amd64"}
    assert state.running_kernel == "6.18.44-fc-v1098"
    assert state.module_built("6.1.0-57-amd64")
    assert not state.module_built(state.running_kernel)
    assert "nvidia-current" in state.dkms["6.1.0-57-amd64"]
    assert not state.gpus and not state.reboot_pending and not state.secure_boot
    assert state.has_initramfs_tools  # came with the kernel image
    assert state.pending_reasons() == [
        "the guest runs kernel 6.18.44-fc-v1098; the driver is built for 6.1.0-57-amd64, which "
        "boots next"
    ]


def test_state_of_a_fresh_guest():
    state = recorded("host-state.nvidia-driver.debian-12-lab-fresh.txt")
    assert state.target_kernel == "" and state.dkms == {}
    assert not state.module_built(state.running_kernel)


def test_module_files_of_debian_and_nvidia_packages_and_compressed_ones():
    state = parse_state(
        [
            "running 6.1.0-28-amd64",
            "image linux-image-6.1.0-28-amd64 (= 6.1.119-1)",
            "headers linux-headers-6.1.0-28-amd64 (= 6.1.119-1)",
            "boot 6.1.0-28-amd64",
            "secureboot",
            "ko /lib/modules/6.1.0-28-amd64/updates/dkms/nvidia-current.ko",
            "ko /lib/modules/6.1.0-27-amd64/updates/dkms/nvidia.ko.xz",
            "ko /lib/modules/6.1.0-26-amd64/updates/dkms/something-else.ko",
            "gpu 0000:01:00.0",
            "loaded nouveau",
            "initramfs yes",
        ]
    )
    assert state.target_kernel == state.headers_kernel == "6.1.0-28-amd64"
    assert state.boot_kernels == {"6.1.0-28-amd64"} and not state.secure_boot
    assert state.pending_reasons() == [
        "nouveau holds the GPU (blacklisted from the next boot on)",
        "the nvidia module is not loaded",
    ]
    assert state.module_built("6.1.0-28-amd64") and state.module_built("6.1.0-27-amd64")
    assert not state.module_built("6.1.0-26-amd64")
    assert state.reboot_pending  # a GPU, nouveau loaded, nvidia not
    assert state.has_initramfs_tools


def test_gpu_with_nvidia_loaded_needs_no_reboot():
    state = parse_state(["gpu 0000:06:00.0", "loaded nvidia"])
    assert not state.reboot_pending


def test_secure_boot_is_the_data_byte_of_the_efi_variable():
    assert parse_state(["secureboot 1"]).secure_boot
    assert not parse_state(["secureboot 0"]).secure_boot
    assert not parse_state(["secureboot"]).secure_boot  # no EFI variable: BIOS boot


def test_a_guest_on_an_older_kernel_than_the_module_is_built_for_waits_on_a_reboot():
    state = parse_state(
        ["running 6.1.0-9-amd64", "image linux-image-6.1.0-28-amd64 (= 6.1.119-1)",
         "gpu 0000:06:00.0"]
    )  # fmt: skip
    assert state.pending_reasons() == [
        "the guest runs kernel 6.1.0-9-amd64; the driver is built for 6.1.0-28-amd64, which "
        "boots next"
    ]


def test_persistenced_starts_only_with_an_nvidia_device_and_no_nouveau():
    text = render.persistenced_dropin()
    assert text.splitlines()[-2:] == [
        "[Service]",
        "ExecCondition=/bin/sh -c 'grep -qs 0x10de /sys/bus/pci/devices/*/vendor && "
        "! test -d /sys/module/nouveau'",
    ]


REPO = "https://developer.download.nvidia.com/compute/cuda/repos/debian13/x86_64  Packages"
MADISON = "".join(
    f"nvidia-driver-cuda | {version} | {REPO}\n" for version in ("1:590.48.01-1", "595.10.02-1")
)


@pytest.mark.parametrize(("branch", "ok"), [("580", False), ("590", True), ("595", True)])
def test_a_branch_the_repository_lacks_fails_the_run_naming_the_branches_it_has(
    tmp_path, branch, ok
):
    """NVIDIA's debian13 repository started at 590: the 580 pin matched nothing and apt quietly
    installed the newest branch. The check runs before the install (a fake apt-cache here)."""
    fake = tmp_path / "apt-cache"
    fake.write_text(f"#!/bin/sh\ncat <<'END'\n{MADISON}END\n")
    fake.chmod(0o755)
    command = render.branch_available(NvidiaDriverSettings(branch=branch), DEBIAN_13)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert (done.returncode == 0) == ok, done.stderr
    if not ok:
        assert f"repository has no {branch} driver" in done.stderr
        assert "its branches: 590 595 ." in done.stderr and "nvidia_driver_branch" in done.stderr
