"""Checks of the nvidia_driver role on AI guests: packages, DKMS module, nouveau, nvidia-smi."""

from __future__ import annotations

import re

import pytest
from gpu_stack_checks import require_gpu, require_loaded_driver
from role_settings import settings_of

from roles.nvidia_driver.render import BLACKLIST_PATH, PIN_PATH
from roles.nvidia_driver.settings import NvidiaDriverSettings


@pytest.fixture
def driver(host_data: dict) -> NvidiaDriverSettings:
    settings = settings_of(NvidiaDriverSettings, host_data)
    if settings.lab_skip:
        pytest.skip(
            f"{settings.key('lab_skip')} (LAB ONLY): the driver role was left out of this run, "
            "its DKMS build is too slow under emulation; the nspawn lab covers it"
        )
    return settings


def installed_kernel(host, driver: NvidiaDriverSettings) -> str:
    """The kernel the image metapackage is for: what the guest boots by default (not `uname -r`,
    which in a container is the host's kernel and before a reboot may be an older one)."""
    depends = host.check_output(f"dpkg-query -W -f='${{Depends}}' {driver.kernel_image}")
    match = re.match(r"linux-image-(\S+)", depends)
    assert match, f"{driver.kernel_image} depends on no linux-image package: {depends!r}"
    return match.group(1)


def test_driver_packages_installed(guest, driver):
    missing = [p for p in driver.packages if not guest.package(p.split("=")[0]).is_installed]
    assert not missing, f"driver packages not installed: {missing}"


def test_dkms_module_built_for_the_installed_kernel(guest, driver):
    kernel = installed_kernel(guest, driver)
    status = guest.check_output(f"dkms status -k {kernel}")
    assert re.search(r"^nvidia[^,]*[/,].*: installed", status, re.M), (
        f"no nvidia DKMS module installed for kernel {kernel}:\n{status}"
    )


def test_nouveau_is_blacklisted(guest, driver):
    assert guest.file(BLACKLIST_PATH).contains("^blacklist nouveau$")
    # What modprobe will actually do, whichever file says it.
    config = guest.check_output("modprobe --showconfig")
    assert re.search(r"^blacklist nouveau$", config, re.M)
    assert re.search(r"^options nouveau .*modeset=0", config, re.M)


def test_branch_pin_matches_the_source(guest, driver):
    pin = guest.file(PIN_PATH)
    if driver.source == "debian":
        assert not pin.exists, f"{PIN_PATH} left from source 'nvidia'"
        return
    assert pin.contains(f"^Pin: version {driver.branch}\\.\\*$")
    version = guest.package("nvidia-driver-cuda").version
    assert version.startswith(f"{driver.branch}."), f"driver {version} is not {driver.branch}"


def test_persistenced_enabled(guest, driver):
    assert guest.service("nvidia-persistenced").is_enabled


def test_nouveau_not_loaded_on_the_gpu(guest):
    require_gpu(guest)
    assert not guest.file("/sys/module/nouveau").exists, "nouveau is loaded: reboot the guest"


def test_nvidia_smi_sees_every_gpu(guest):
    gpus = require_gpu(guest)
    require_loaded_driver(guest)
    listing = guest.check_output("nvidia-smi -L")
    assert len(re.findall(r"^GPU \d+:", listing, re.M)) == len(gpus), listing
    assert guest.run("nvidia-smi").rc == 0


def test_persistenced_running_with_the_driver(guest):
    require_loaded_driver(guest)
    assert guest.service("nvidia-persistenced").is_running


def test_no_failed_unit_leaves_the_guest_degraded(guest):
    """nvidia-persistenced once failed at install (no driver on a GPU yet): the system stayed
    'degraded'. Any failed unit is named here."""
    failed = guest.check_output("systemctl list-units --failed --no-legend --plain")
    assert failed.strip() == "", f"failed units:\n{failed}"
