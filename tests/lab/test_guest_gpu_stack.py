"""Lab test of the AI guest's GPU stack (nvidia_driver, docker, container_toolkit) on a real
Debian 12 machine (systemd-nspawn), deployed by the shared fixtures with the real pyinfra CLI.

The lab settings (lab/overrides.py) use Debian's driver packages and Debian's docker.io +
docker-compose 1.29, and turn the container toolkit off: Docker's and NVIDIA's repositories are
unreachable here (their paths are covered by the plan tests). The machine has no GPU, so the
GPU-only checks of tests/infra skip with that reason. In a container the "installed kernel" is
the one of the installed linux-headers-amd64 package, not the host's running kernel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = ("NVIDIA driver |", "Docker |", "NVIDIA container toolkit |")
INFRA = [
    "tests/infra/test_nvidia_driver.py",
    "tests/infra/test_docker.py",
    "tests/infra/test_container_toolkit.py",
]


def out(lab, command: str) -> str:
    return lab.ssh("guest", command).stdout.strip()


def installed_kernel(lab) -> str:
    depends = out(lab, "dpkg-query -W -f='${Depends}' linux-headers-amd64")
    return re.match(r"linux-headers-(\S+)", depends).group(1)


def test_dkms_module_is_built_for_the_installed_kernel_not_the_running_one(deployed):
    kernel = installed_kernel(deployed)
    running = out(deployed, "uname -r")
    status = out(deployed, "dkms status")
    built = rf"^nvidia-current/[\d.]+, {re.escape(kernel)}, x86_64: installed$"
    assert re.search(built, status, re.M), status
    assert kernel != running  # a container runs the host's kernel; the module is for the guest's


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
