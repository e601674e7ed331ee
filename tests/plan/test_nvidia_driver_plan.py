"""Plan tests of the nvidia_driver role: the real deploy.py on recorded Debian 12 facts.

What could not run for real, and why: NVIDIA's CUDA repository (developer.download.nvidia.com)
is unreachable here and this machine has no GPU, so the 'nvidia' source, a loaded driver and a
reboot were never exercised on a real host. They are checked as plans: the exact key, deb822
source, branch pin and package steps, the reboot only when allowed, and "nothing to do" on a
host that has exactly what that plan installs. The Debian-packages path is deployed for real
by the lab test (tests/lab/test_guest_gpu_stack.py).
"""

from __future__ import annotations

from gpu_stack_facts import GUEST, recorded, responses, role_ops
from harness import file_line, package_lines, run_plan
from pyinfra.operations import server as pyinfra_server

from roles.nvidia_driver.render import BLACKLIST_PATH, PIN_PATH

FRESH = recorded("host-state.nvidia-driver.debian-12-lab-fresh.txt")
DEPLOYED = recorded("host-state.nvidia-driver.debian-12-lab-deployed.txt")
KEY = "/etc/apt/keyrings/nvidia-cuda.asc"
SOURCE = "/etc/apt/sources.list.d/nvidia-cuda.sources"
NVIDIA = {"nvidia_driver_source": "nvidia", "nvidia_driver_branch": "570"}
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


def test_fresh_guest_gets_debian_packages_blacklist_and_the_module_for_the_installed_kernel():
    plan = plan_for(FRESH)
    assert plan.error is None, plan.error
    found = commands(plan)
    assert f"upload {BLACKLIST_PATH}" in found
    assert plan.files[BLACKLIST_PATH].endswith("blacklist nouveau\noptions nouveau modeset=0\n")
    install = plan.find(
        r"apt-get .* install linux-headers-amd64 nvidia-driver nvidia-kernel-dkms "
        r"firmware-misc-nonfree nvidia-smi nvidia-persistenced$"
    )
    assert install
    build = plan.find(r"dkms autoinstall -k \"\$k\"")
    # The kernel is the one linux-headers-amd64 is for, never `uname -r`.
    assert build and "dpkg-query -W -f='${Depends}' linux-headers-amd64" in build[0]
    assert "uname" not in build[0]
    assert found.index(install[0]) < found.index(build[0])
    assert plan.find(r"systemctl enable nvidia-persistenced\.service")
    assert not plan.find(r"systemctl start nvidia-persistenced")  # no driver loaded yet
    assert not plan.find(r"apt-key|nvidia-cuda|developer\.download\.nvidia\.com")
    # No kernel image in the recorded machine (a container): no initramfs to rebuild.
    assert not plan.find("update-initramfs")


def test_initramfs_is_rebuilt_only_when_the_blacklist_changes():
    plan = plan_for(FRESH + GPU_VM)
    assert plan.find(r"^update-initramfs -u -k all$")
    unchanged = file_line(BLACKLIST_PATH, plan.files[BLACKLIST_PATH])
    plan = plan_for(FRESH + GPU_VM + [unchanged])
    assert not plan.find("update-initramfs")


def test_no_reboot_unless_allowed_and_the_pending_reboot_is_reported(caplog):
    plan = plan_for(FRESH + GPU_VM)
    assert not plan.find(r"reboot")
    names = [name for name, _ in role_ops(plan, "NVIDIA driver")]
    assert any("report that a reboot is pending" in name for name in names)
    assert "REBOOT PENDING" in caplog.text


def test_reboot_when_allowed_and_something_changed(monkeypatch):
    # pyinfra's reboot waits for the host to come back (seconds of real sleep; the fake host
    # reports the same uptime, which it reads as "rebooted"): skip the waiting.
    monkeypatch.setattr(pyinfra_server, "sleep", lambda seconds: None)
    found = responses(nvidia=FRESH + GPU_VM, extra={"/proc/uptime": "100"})
    plan = run_plan({"ai_guests": {**GUEST, "nvidia_driver_reboot": True}}, found)
    assert plan.error is None, plan.error
    assert plan.find(r"^\( sleep 1 && reboot \)")
    assert not any("report that a reboot" in name for name, _ in plan.changed)


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
        r"apt-get .* install linux-headers-amd64 nvidia-driver-cuda nvidia-kernel-open-dkms "
        r"nvidia-persistenced$"
    )
    assert install
    order = [
        found.index(f"upload {PIN_PATH}"),
        found.index(key[0]),
        found.index(f"upload {SOURCE}"),
        found.index("apt-get update -qq"),
        found.index(install[0]),
    ]
    assert order == sorted(order)
    assert not plan.find("apt-key")


def test_converged_nvidia_source_guest_plans_nothing():
    """Key, source, pin and blacklist as a fresh run writes them, the packages installed, the
    module built for the headers' kernel, the driver loaded on the GPU, persistenced running."""
    fresh = plan_for(FRESH, **NVIDIA)
    kernel = "6.1.0-56-amd64"
    converged = [
        f"file 644 root:root 0123456789abcdef0123456789abcdef01234567 {KEY}",
        file_line(SOURCE, fresh.files[SOURCE]),
        file_line(PIN_PATH, fresh.files[PIN_PATH]),
        file_line(BLACKLIST_PATH, fresh.files[BLACKLIST_PATH]),
        *package_lines(
            [
                "linux-headers-amd64",
                "nvidia-driver-cuda",
                "nvidia-kernel-open-dkms",
                "nvidia-persistenced",
            ],
            "570.195.03-1",
        ),  # fmt: skip
        "unit nvidia-persistenced enabled=enabled active=active",
        f"probe running {kernel}",
        f"probe headers linux-headers-{kernel} (= 6.1.192-2)",
        f"probe ko /lib/modules/{kernel}/updates/dkms/nvidia.ko",
        "probe loaded nvidia",
        "probe gpu 0000:06:00.0",
        "probe initramfs yes",
    ]
    plan = plan_for(converged, **NVIDIA)
    assert plan.error is None, plan.error
    assert role_ops(plan, "NVIDIA driver") == []


def test_recorded_lab_guest_after_the_deploy_plans_nothing():
    plan = plan_for(DEPLOYED)
    assert plan.error is None, plan.error
    assert role_ops(plan, "NVIDIA driver") == []


def test_new_kernel_without_the_module_gets_it_built():
    """After a kernel upgrade the headers package points at a kernel with no module yet."""
    newer = [line for line in DEPLOYED if not line.startswith("probe headers")]
    newer.append("probe headers linux-headers-6.1.0-57-amd64 (= 6.1.193-1)")
    plan = plan_for(newer)
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
