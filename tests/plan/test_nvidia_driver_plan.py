"""Plan tests of the nvidia_driver role: the real deploy.py on recorded Debian 12 facts.

What could not run for real, and why: NVIDIA's CUDA repository (developer.download.nvidia.com)
is unreachable here and this machine has no GPU, so the 'nvidia' source, a loaded driver and a
reboot were never exercised on a real host. They are checked as plans: the exact key, deb822
source, branch pin and package steps, the reboot only when allowed, and "nothing to do" on a
host that has exactly what that plan installs. The Debian-packages path is deployed for real
by the lab test (tests/lab/test_guest_gpu_stack.py).
"""

from __future__ import annotations

import re

import pytest
from gpu_stack_facts import GUEST, KERNEL, converged_driver, recorded, responses, role_ops
from harness import file_line, run_plan
from pyinfra.api.exceptions import PyinfraError
from pyinfra.operations import server as pyinfra_server

from roles.nvidia_driver.facts import SECURE_BOOT_VAR
from roles.nvidia_driver.render import BLACKLIST_PATH, PERSISTENCED_DROPIN, PIN_PATH

FRESH = recorded("host-state.nvidia-driver.debian-12-lab-fresh.txt")
DEPLOYED = recorded("host-state.nvidia-driver.debian-12-lab-deployed.txt")
KEY = "/etc/apt/keyrings/nvidia-cuda.asc"
SOURCE = "/etc/apt/sources.list.d/nvidia-cuda.sources"
NVIDIA = {"nvidia_driver_source": "nvidia", "nvidia_driver_branch": "570"}
# Debian's 535 driver: Ollama cannot use the GPU with it, so the lab's pair (Ollama on the CPU).
DEBIAN = {"nvidia_driver_source": "debian", "ollama_gpu": False}
# A VM guest with a GPU passed through, before the driver is loaded (nouveau has it).
GPU_VM = [
    "probe gpu 0000:06:00.0",
    "probe loaded nouveau",
    "probe initramfs yes",
]


def plan_for(lines, **data):
    return run_plan({"ai_guests": {**GUEST, **data}}, responses(nvidia=lines))


def commands(plan) -> list[str]:
    return [c for _, cmds in role_ops(plan, "NVIDIA driver") for c in cmds]


def test_fresh_guest_gets_the_kernel_with_its_headers_and_the_module_for_the_boot_kernel():
    plan = plan_for(FRESH, **DEBIAN)
    assert plan.error is None, plan.error
    found = commands(plan)
    assert f"upload {BLACKLIST_PATH}" in found
    assert plan.files[BLACKLIST_PATH].endswith("blacklist nouveau\noptions nouveau modeset=0\n")
    # The kernel metapackage with its headers: DKMS builds for a kernel that is installed.
    install = plan.find(
        r"apt-get .* install linux-image-amd64 linux-headers-amd64 nvidia-driver "
        r"nvidia-kernel-dkms firmware-misc-nonfree nvidia-smi nvidia-persistenced$"
    )
    assert install
    build = plan.find(r"dkms autoinstall -k \"\$k\"")
    # The kernel is the one linux-image-amd64 is for (GRUB's default), never `uname -r`, and
    # the op fails unless that kernel is in /boot and its module file is where DKMS puts it.
    assert build and "dpkg-query -W -f='${Depends}' linux-image-amd64" in build[0]
    assert "uname" not in build[0]
    assert '[ -e "/boot/vmlinuz-$k" ]' in build[0]
    assert 'ls /lib/modules/"$k"/updates/dkms/nvidia*.ko*' in build[0]
    assert "(the default boot kernel)" in build[0]
    assert found.index(install[0]) < found.index(build[0])
    assert plan.find(r"systemctl enable nvidia-persistenced\.service")
    assert not plan.find(r"systemctl start nvidia-persistenced")  # no driver loaded yet
    assert not plan.find(r"apt-key|nvidia-cuda|developer\.download\.nvidia\.com")
    # No kernel image in the recorded machine (a container): no initramfs to rebuild.
    assert not plan.find("update-initramfs")


def test_persistenced_is_kept_from_failing_before_the_package_starts_it():
    """The package starts the daemon at install; without the driver on a GPU it failed and left
    the system degraded. The condition is in place before the install, and a unit an earlier
    run left failed is reset."""
    plan = plan_for(FRESH, **DEBIAN)
    found = commands(plan)
    dropin = plan.files[PERSISTENCED_DROPIN]
    assert "ExecCondition=/bin/sh -c 'grep -qs 0x10de /sys/bus/pci/devices/*/vendor" in dropin
    assert "! test -d /sys/module/nouveau'" in dropin
    install = plan.find(r"apt-get .* install linux-image-amd64")[0]
    assert found.index(f"upload {PERSISTENCED_DROPIN}") < found.index(install)
    assert plan.find(r"^systemctl daemon-reload$")
    reset = plan.find(r"systemctl reset-failed nvidia-persistenced")
    assert reset and found.index(install) < found.index(reset[0])
    # A converged guest whose unit is failed (an older deploy) gets only the reset.
    lines = [
        line.replace("active=inactive", "active=failed")
        for line in converged_driver(DEBIAN, gpu=False)
    ]
    plan = plan_for(lines, **DEBIAN)
    assert [name for name, _ in role_ops(plan, "NVIDIA driver")] == [
        "NVIDIA driver | nvidia-persistenced not left failed (no driver loaded yet)"
    ]


def test_initramfs_is_rebuilt_only_when_the_blacklist_changes():
    plan = plan_for(FRESH + GPU_VM)
    assert plan.find(r"^update-initramfs -u -k all$")
    unchanged = file_line(BLACKLIST_PATH, plan.files[BLACKLIST_PATH])
    plan = plan_for(FRESH + GPU_VM + [unchanged])
    assert not plan.find("update-initramfs")


GPU_SERVICES = re.compile(
    r"tabbyAPI \| (running and enabled|restart|answers)|Ollama \| (running and enabled|restart|"
    r"reload for|answers|models)"
)


def gpu_service_ops(plan) -> list[str]:
    return [name for name in plan.names() if GPU_SERVICES.search(name)]


def test_pending_reboot_not_allowed_starts_no_gpu_service_and_says_what_to_do(caplog):
    """The driver installed, nouveau on the GPU: nothing GPU-bound is started or waited on (no
    /health wait), everything else is configured, and the run says what waits and what next."""
    plan = plan_for(FRESH + GPU_VM)
    assert plan.error is None, plan.error
    assert not plan.find(r"reboot")
    assert gpu_service_ops(plan) == []
    names = plan.names()
    assert "tabbyAPI | enabled on boot" in names  # configured, not started
    assert "Ollama | enabled on boot" in names
    assert any("tabbyAPI | checkout" in n for n in names)
    assert "REBOOT PENDING: this run installs or changes the driver" in caplog.text
    assert "nouveau holds the GPU" in caplog.text
    assert "tabbyAPI is not started: REBOOT PENDING" in caplog.text
    assert "Ollama (GPU) is not started: REBOOT PENDING" in caplog.text


def test_a_cpu_only_tabbyapi_launch_is_not_held_back():
    """tabbyAPI told to launch without its GPU check (tabbyapi_lab_unsafe_launch, the lab's
    CPU-only launch) does not need the driver: it starts while the reboot is pending."""
    plan = plan_for(FRESH + GPU_VM, tabbyapi_lab_unsafe_launch=True, tabbyapi_pip_extras=[])
    assert plan.error is None, plan.error
    assert "tabbyAPI | running and enabled on boot" in plan.names()
    assert not [name for name in gpu_service_ops(plan) if name.startswith("Ollama")]


def test_a_rerun_before_the_reboot_still_holds_the_gpu_services(caplog):
    """Nothing left to change, but the guest still runs the old kernel with nouveau."""
    lines = [
        *(line for line in converged_driver() if not line.startswith(("probe running",
                                                                        "probe loaded"))),
        "probe running 6.1.0-9-amd64",
        "probe loaded nouveau",
    ]  # fmt: skip
    plan = plan_for(lines)
    assert plan.error is None, plan.error
    assert role_ops(plan, "NVIDIA driver") == []
    assert gpu_service_ops(plan) == []
    assert "the guest runs kernel 6.1.0-9-amd64; the driver is built for " in caplog.text


# After the reboot: the driver probe read again (its own command, without the state's sed).
AFTER_REBOOT = re.compile(r"echo running \$\(uname -r\)")
LOADED = [
    f"running {KERNEL}",
    f"image linux-image-{KERNEL} (= 6.1.192-2)",
    "loaded nvidia",
    "gpu 0000:06:00.0",
]


def reboot_plan(monkeypatch, after: list[str], **data):
    # pyinfra's reboot waits for the host to come back (seconds of real sleep; the fake host
    # reports the same uptime, which it reads as "rebooted"): skip the waiting.
    monkeypatch.setattr(pyinfra_server, "sleep", lambda seconds: None)
    extra = {"/proc/uptime": "100", AFTER_REBOOT: after}
    found = responses(nvidia=FRESH + GPU_VM, extra=extra)
    return run_plan({"ai_guests": {**GUEST, "nvidia_driver_reboot": True, **data}}, found)


def test_reboot_allowed_reboots_checks_the_module_and_goes_on(monkeypatch):
    plan = reboot_plan(monkeypatch, LOADED)
    assert plan.error is None, plan.error
    names = plan.names()
    reboot = names.index(
        "NVIDIA driver | reboot to load the driver (allowed by nvidia_driver_reboot)"
    )
    check = names.index("NVIDIA driver | the nvidia module is loaded for the running kernel")
    started = gpu_service_ops(plan)
    assert "tabbyAPI | running and enabled on boot" in started
    assert reboot < check < names.index(started[0])
    assert plan.find(r"^\( sleep 1 && reboot \)")


def test_reboot_allowed_but_the_module_does_not_load_fails_clearly(monkeypatch, caplog):
    after = [f"running {KERNEL}", f"image linux-image-{KERNEL} (= 6.1.192-2)", "loaded nouveau"]
    with pytest.raises(PyinfraError):  # the guest's only host failed: the run stops there
        reboot_plan(monkeypatch, after)
    assert "after the reboot: nouveau is loaded" in caplog.text
    assert "the nvidia module is not loaded (see `dmesg | grep -i nvidia`" in caplog.text
    assert "tabbyAPI | running" not in caplog.text


def test_guest_without_a_gpu_starts_no_gpu_service(caplog):
    plan = plan_for(converged_driver(gpu=False))
    assert plan.error is None, plan.error
    assert gpu_service_ops(plan) == []
    assert "NO GPU: no NVIDIA GPU is visible in the guest" in caplog.text


def test_secure_boot_is_refused_before_any_change():
    plan = plan_for(FRESH + GPU_VM + ["probe secureboot 1"])
    assert plan.error is not None and not plan.changed
    message = str(plan.error)
    assert "Secure Boot is on" in message and "unsigned" in message
    assert "<feature enabled='no' name='secure-boot'/>" in message
    assert "mokutil --import /var/lib/dkms/mok.pub" in message
    assert "nvidia_driver_secure_boot_mok = True" in message
    # The probe reads the UEFI variable's data byte; with the key enrolled it goes on.
    plan = plan_for(FRESH + GPU_VM + ["probe secureboot 1"], nvidia_driver_secure_boot_mok=True)
    assert plan.error is None, plan.error
    assert SECURE_BOOT_VAR.endswith("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c")


def test_debian_driver_with_ollama_on_the_gpu_is_refused_before_any_change():
    plan = plan_for(FRESH, nvidia_driver_source="debian")
    assert plan.error is not None and not plan.changed
    message = str(plan.error)
    for key in ("ollama_gpu", "nvidia_driver_source", "nvidia_driver_branch"):
        assert key in message
    assert "535" in message and "550 or newer" in message
    plan = plan_for(FRESH, nvidia_driver_branch="545")
    assert plan.error is not None and "nvidia_driver_branch = '545'" in str(plan.error)
    # Ollama off, or on the CPU on purpose: nothing to refuse.
    assert plan_for(FRESH, nvidia_driver_source="debian", ollama_enabled=False).error is None
    assert plan_for(FRESH, **DEBIAN).error is None


def test_the_default_driver_source_gives_ollama_a_gpu_capable_driver():
    plan = plan_for(FRESH)
    assert plan.error is None, plan.error
    assert plan.find(r"apt-get .* install linux-image-amd64 linux-headers-amd64 nvidia-driver-cuda")
    assert "Pin: version 580.*\n" in plan.files[PIN_PATH]


def test_nvidia_source_adds_key_source_and_pin_before_installing_the_branch():
    plan = plan_for(FRESH, **NVIDIA)
    assert plan.error is None, plan.error
    found = commands(plan)
    key = plan.find(
        r"curl -sSLf https://developer\.download\.nvidia\.com/compute/cuda/repos/debian12/"
        r"x86_64/3bf863cc\.pub "
    )
    assert key and plan.find(f"mv /tmp/pyinfra-[0-9a-f]+ {KEY}$")
    assert plan.files[SOURCE].splitlines()[1:] == [
        "Types: deb",
        "URIs: https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64",
        "Suites: /",
        f"Signed-By: {KEY}",
    ]
    assert "Pin: version 570.*\nPin-Priority: 1000\n" in plan.files[PIN_PATH]
    install = plan.find(
        r"apt-get .* install linux-image-amd64 linux-headers-amd64 nvidia-driver-cuda "
        r"nvidia-kernel-open-dkms nvidia-persistenced$"
    )
    assert install
    # The pinned branch is checked against the repository (after its index, before the install).
    guard = plan.find(r"apt-cache madison nvidia-driver-cuda .*grep -q '\^570\\\.'")
    assert guard, found
    order = [
        found.index(f"upload {PIN_PATH}"),
        found.index(key[0]),
        found.index(f"upload {SOURCE}"),
        found.index("apt-get update -qq"),
        found.index(guard[0]),
        found.index(install[0]),
    ]
    assert order == sorted(order)
    assert not plan.find("apt-key")


def test_converged_nvidia_source_guest_plans_nothing():
    """Key, source, pin, blacklist and drop-in as a fresh run writes them, the packages
    installed, the module built for the default boot kernel, the driver loaded on the GPU,
    persistenced running: nothing to do, and the GPU services may start."""
    plan = plan_for(converged_driver(NVIDIA), **NVIDIA)
    assert plan.error is None, plan.error
    assert role_ops(plan, "NVIDIA driver") == []
    assert "tabbyAPI | running and enabled on boot" in plan.names()


def test_recorded_lab_guest_after_the_deploy_plans_nothing():
    plan = plan_for(DEPLOYED, **DEBIAN)
    assert plan.error is None, plan.error
    assert role_ops(plan, "NVIDIA driver") == []


def test_new_kernel_without_the_module_gets_it_built():
    """After a kernel upgrade the image metapackage points at a kernel with no module yet."""
    newer = [line for line in converged_driver(DEBIAN) if not line.startswith("probe image")]
    newer += ["probe image linux-image-6.1.0-57-amd64 (= 6.1.193-1)", "probe boot 6.1.0-57-amd64"]
    plan = plan_for(newer, **DEBIAN)
    assert plan.find(r"dkms autoinstall")


def test_bad_driver_settings_stop_the_deploy_before_any_operation():
    plan = plan_for(
        FRESH,
        nvidia_driver_source="runfile",
        nvidia_driver_branch="55x",
        nvidia_driver_cuda_repo_url="developer.download.nvidia.com",
    )
    assert plan.error is not None and not plan.changed
    message = str(plan.error)
    for key in ("nvidia_driver_source", "nvidia_driver_branch", "nvidia_driver_cuda_repo_url"):
        assert key in message
