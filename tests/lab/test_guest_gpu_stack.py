"""Lab test of the AI guest's GPU stack (nvidia_driver, docker, container_toolkit) on a real
Debian 12 machine (systemd-nspawn), deployed by the shared fixtures with the real pyinfra CLI.

The lab settings (lab/overrides.py) use Debian's driver packages and Debian's docker.io +
docker-compose 1.29, and turn the container toolkit off: Docker's and NVIDIA's repositories are
unreachable here (their paths are covered by the plan tests). The machine has no GPU, so the
GPU-only checks of tests/infra skip with that reason. In a container the "default boot kernel"
is the one the installed linux-image-amd64 is for, not the host's running kernel: so for the
deploy a reboot is always pending here, which the re-run shows (REBOOT PENDING, no GPU service
started, done in seconds).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_run import ANSI, pyinfra_deploy

REPO = Path(__file__).resolve().parents[2]
ROLES = ("NVIDIA driver |", "Docker |", "NVIDIA container toolkit |")
INFRA = [
    "tests/infra/test_nvidia_driver.py",
    "tests/infra/test_docker.py",
    "tests/infra/test_container_toolkit.py",
]


def out(lab, command: str) -> str:
    return lab.ssh("guest", command).stdout.strip()


def boot_kernel(lab) -> str:
    """The kernel linux-image-amd64 is for: the newest installed, which GRUB boots."""
    depends = out(lab, "dpkg-query -W -f='${Depends}' linux-image-amd64")
    return re.match(r"linux-image-(\S+)", depends).group(1)


def test_dkms_module_is_built_for_the_default_boot_kernel_not_the_running_one(deployed):
    kernel = boot_kernel(deployed)
    headers = out(deployed, "dpkg-query -W -f='${Depends}' linux-headers-amd64")
    assert headers.startswith(f"linux-headers-{kernel} "), headers  # one ABI for both
    found = out(
        deployed,
        f"ls /boot/vmlinuz-{kernel} /lib/modules/{kernel}/updates/dkms/nvidia-current.ko*",
    )
    assert f"/lib/modules/{kernel}/updates/dkms/nvidia-current.ko" in found, found
    status = out(deployed, "dkms status")
    built = rf"^nvidia-current/[\d.]+, {re.escape(kernel)}, x86_64: installed$"
    assert re.search(built, status, re.M), status
    assert kernel != out(deployed, "uname -r")  # a container runs the host's kernel


def test_the_deploy_leaves_no_failed_unit(deployed):
    """nvidia-persistenced used to fail when the package started it (no driver on a GPU),
    leaving the system degraded; now systemd skips it until the driver runs."""
    failed = out(deployed, "systemctl list-units --failed --no-legend --plain")
    assert failed == "", failed
    state = deployed.ssh("guest", "systemctl is-system-running", check=False).stdout.strip()
    assert state == "running", state
    assert out(deployed, "systemctl is-enabled nvidia-persistenced") == "enabled"
    assert out(deployed, "systemctl is-active nvidia-persistenced || true") == "inactive"


def test_nouveau_is_blacklisted(deployed):
    config = out(deployed, "modprobe --showconfig | grep nouveau")
    assert "blacklist nouveau" in config.splitlines()


def test_docker_runs_with_the_seeded_daemon_json_key_kept(deployed):
    assert out(deployed, "systemctl is-enabled docker; systemctl is-active docker").split() == [
        "enabled",
        "active",
    ]
    data = json.loads(out(deployed, "cat /etc/docker/daemon.json"))
    assert data.get("labels") == ["seeded-by=lab"], (
        f"the key seeded before the deploy is gone (or lab/overrides.py SEED_COMMANDS did not "
        f"run): {data}"
    )
    assert data["log-driver"] == "json-file"  # and the deploy's own keys are merged in
    info = json.loads(out(deployed, "docker info --format '{{json .}}'"))
    assert "seeded-by=lab" in info["Labels"] and info["LoggingDriver"] == "json-file"


def test_second_deploy_changes_nothing_in_this_part(deploys):
    first, second = deploys
    assert first.ok, first.tail()
    assert second is not None and second.ok, second.tail() if second else "no second run"
    changed = [op for op in second.changed_operations() if op.startswith(ROLES)]
    assert changed == [], f"a re-run changed: {changed}"
    print(f"\nfresh deploy {first.seconds:.1f} s, re-run {second.seconds:.1f} s (whole deploy.py)")


def end_of_run(run) -> str:
    """What the run printed after its results table."""
    return ANSI.sub("", run.output).partition("--> Results:")[2]


def test_a_reboot_pending_rerun_starts_nothing_gpu_bound_and_ends_in_seconds(deploys):
    _, second = deploys
    assert second is not None and second.ok, second.tail() if second else "no second run"
    end = end_of_run(second)
    assert "REBOOT PENDING: the guest runs kernel" in end, second.tail()
    assert "no NVIDIA GPU is visible in the guest" in end and "Next: " in end
    assert not [op for op in second.changed_operations() if "answers" in op]
    assert second.seconds < 180, f"the re-run took {second.seconds:.0f} s"


def test_a_gpu_service_is_not_started_while_the_reboot_is_pending(deployed):
    """Ollama with the GPU (a local one-binary image stands in for Ollama's, and the driver
    floor is lowered to Debian's 535 for this run): configured and enabled, never started or
    waited on, and named at the end of the run. A plain deploy puts the lab back after."""
    image = "lab/busybox:1"
    deployed.ssh(
        "guest",
        "set -e; DEBIAN_FRONTEND=noninteractive apt-get -q install -y busybox-static >/dev/null; "
        f"if ! docker image inspect {image} >/dev/null 2>&1; then d=$(mktemp -d); "
        f"mkdir $d/bin; cp /bin/busybox $d/bin/; tar -C $d -c . | docker import - {image}; fi",
        timeout=300,
    )
    data = [f"ollama_image={image}", "ollama_gpu=true", "ollama_min_driver_branch=535"]
    try:
        run = pyinfra_deploy(deployed.inventory, *[a for d in data for a in ("--data", d)])
        assert run.ok, run.tail()
        changed = run.changed_operations()
        assert "Ollama | compose.yaml" in changed, changed
        assert not [op for op in changed if re.search(r"Ollama \| (running|restart|reload for|"
                                                      r"answers)", op)], changed  # fmt: skip
        assert "Not started (they need the GPU): Ollama (GPU)" in end_of_run(run), run.tail()
        assert out(deployed, "systemctl is-active ollama || true") == "inactive"
        assert out(deployed, "systemctl is-enabled ollama") == "enabled"
        print(f"\nGPU service held: the run took {run.seconds:.1f} s")
    finally:
        assert pyinfra_deploy(deployed.inventory).ok


def test_infra_checks_pass_on_the_lab_guest(deployed):
    """The checks users run on their real guest (tests/infra), run against the lab: a container
    from a locally imported image, a compose project with docker-compose 1.29, the driver and
    DKMS checks; the GPU-only and toolkit checks skip, saying why."""
    env = {**os.environ, "AICODER_INVENTORY": str(deployed.inventory)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *INFRA],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    summary = report.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 12, report
    skipped = re.findall(r"^SKIPPED \[\d+\] (.*)$", report, re.M)
    for reason in skipped:
        assert "no NVIDIA device" in reason or "container_toolkit_enabled is False" in reason, (
            reason
        )
    if not skipped:
        pytest.fail(f"expected the GPU-only checks to skip on the lab guest:\n{report}")
