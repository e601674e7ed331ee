"""The lab itself and the deploy on it: boot, deploy, infra checks, idempotency, Docker, down."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab import cgroups, proc, ssh

REPO = Path(__file__).resolve().parents[2]
SCRATCH = "test-b"  # a second lab instance, for tests that change a machine or take it down

pytestmark = pytest.mark.lab


def test_guest_has_its_name_address_and_the_network(lab):
    out = lab.ssh("guest", "hostname; ip -4 -br addr show host0").stdout.splitlines()
    assert out[0] == lab.config.machine_id("guest")
    assert lab.machine_state("guest")["ip"] in out[1]
    # The Debian mirror and PyPI through the host's masquerade, with the host's CA trusted.
    lab.ssh("guest", "apt-get -q update >/dev/null && python3 -c 'import urllib.request as u; "
                     'u.urlopen("https://pypi.org/simple/pip/", timeout=20)\'')  # fmt: skip


def test_inventory_is_self_contained(lab):
    """pyinfra imports the inventory file on its own: it must need nothing from the repo."""
    code = f"exec(open({str(lab.inventory)!r}).read()); print(ai_guests[0][0])"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == lab.config.machine_id("guest")


def test_deploy_succeeds(deploys):
    first, _ = deploys
    assert first.ok, f"pyinfra exited {first.returncode}:\n{first.tail()}"


def _login(lab, user: str, command: str) -> subprocess.CompletedProcess:
    """``command`` in the guest over SSH as ``user`` with the inventory's key."""
    ip = lab.machine_state("guest")["ip"]
    return subprocess.run(
        ["ssh", *ssh.OPTIONS, "-i", str(lab.config.key), f"{user}@{ip}", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_deploy_logs_in_as_the_admin_user_with_sudo_never_as_root(deployed):
    """As on a user's VM: the admin user cloud-init makes, every root operation through sudo."""
    scope: dict = {}
    exec(deployed.inventory.read_text(), scope)
    hosts = [data for group in ("ai_guests", "hypervisors") for _, data in scope[group]]
    assert hosts and all(
        (h["ssh_user"], h["_sudo"], h["ssh_key"]) == ("aicoder", True, str(deployed.config.key))
        for h in hosts
    ), hosts
    # The inventory's key cannot log in as root, so the deploy that succeeded did not.
    assert _login(deployed, "root", "true").returncode != 0, "root logs in with the deploy's key"
    admin = _login(deployed, "aicoder", "id -un; sudo -n id -un")
    assert admin.stdout.split() == ["aicoder", "root"], admin.stderr
    # Root-only work went through sudo: sudo logged the deploy's commands as run by aicoder.
    sudo_log = deployed.ssh("guest", "journalctl -q --no-pager SYSLOG_IDENTIFIER=sudo").stdout
    wanted = r"aicoder : .*USER=root ; COMMAND=\S*/sh -c .*apt-get"
    assert re.search(wanted, sudo_log), sudo_log[-3000:]
    mode = deployed.ssh("guest", "stat -c '%a %U' /etc/sudoers.d/90-aicoder").stdout.split()
    assert mode == ["440", "root"]  # written by the base role, through sudo


def test_infra_checks_pass_on_the_deployed_lab(deployed, tmp_path):
    report = tmp_path / "infra.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/infra", "-p", "no:cacheprovider", "-q", "-rs",
         f"--junitxml={report}"],
        cwd=REPO,
        env={**os.environ, "AICODER_INVENTORY": str(deployed.inventory)},
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    ran = int(suite.get("tests")) - int(suite.get("skipped"))
    assert ran > 0, f"the infra suite ran no test:\n{result.stdout}"


def test_second_deploy_changes_nothing(deploys):
    first, second = deploys
    if not first.ok:
        pytest.skip("the first deploy failed")
    assert second.ok, f"the re-run failed (exit {second.returncode}):\n{second.tail()}"
    changed = second.changed_operations()
    assert not changed, f"the re-run changed {changed}:\n{second.tail()}"


def test_a_no_change_run_is_one_round_trip_per_host(deploys, lab):
    """The converged lab re-deployed through lab.bench (the real deploy.py in-process, every
    command of each host's connector counted): one command and one SSH connection per host."""
    first, second = deploys
    if not (first.ok and second and second.ok):
        pytest.skip("the deploys failed")
    result = subprocess.run(
        [sys.executable, "-m", "lab.bench", "--group", "all", "--runs", "1", "--commands"],
        cwd=REPO,
        env=lab.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"^\| (\S+) \| - \| - \| (\d+) \| (\d+) \|$", result.stdout, re.M)
    assert rows, result.stdout
    assert all((trips, conns) == ("1", "1") for _, trips, conns in rows), result.stdout
    assert "operations changed in them: [0]" in result.stdout, result.stdout


@pytest.fixture(scope="module")
def scratch(lab_factory):
    """A second lab instance with one machine."""
    with lab_factory(SCRATCH, "guest") as inst:
        yield inst


def test_fresh_machine_boots_without_failed_units(scratch):
    inst = scratch
    out = inst.ssh("guest", "systemctl is-system-running --wait", check=False).stdout.strip()
    failed = inst.ssh("guest", "systemctl --failed --no-legend", check=False).stdout
    assert out == "running", failed
    lab_units = "systemd-networkd ssh aicoder-lab-cgroups"
    assert inst.ssh("guest", f"systemctl is-active {lab_units}").stdout.split() == ["active"] * 3


def test_docker_runs_containers_with_limits_in_a_machine(scratch, lab_timings, tmp_path):
    inst = scratch
    busybox = shutil.which("busybox")
    if not busybox or subprocess.run(["ldd", busybox], capture_output=True).returncode == 0:
        pytest.skip("needs a static busybox for the test image: apt-get install busybox-static")
    started = time.monotonic()
    inst.ssh("guest", "export DEBIAN_FRONTEND=noninteractive; apt-get -q update >/dev/null && "
                      "apt-get -q install -y docker.io >/dev/null")  # fmt: skip
    lab_timings["docker.io install"] = time.monotonic() - started
    # No registry is reachable: import a one-binary image made from the host's busybox.
    image = tmp_path / "busybox.tar"
    with tarfile.open(image, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
    with open(image, "rb") as f:
        imported = subprocess.run(
            [sys.executable, "-m", "lab", "ssh", "guest", "docker import - lab/busybox:1"],
            cwd=REPO, env=inst.env, stdin=f, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    started = time.monotonic()
    out = inst.ssh(
        "guest",
        "docker run --rm --memory 64m --cpus 0.5 lab/busybox:1 /bin/busybox cat "
        "/sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    )
    lab_timings["docker run"] = time.monotonic() - started
    # The limits reached the container's cgroups: Docker could write the v1 hierarchies.
    assert out.stdout.split() == [str(64 * 1024 * 1024), "50000"], out.stdout


def test_up_keeps_running_machines(scratch):
    inst = scratch
    pid = inst.machine_state("guest")["nspawn"]["pid"]
    inst.cli("up", "--machines", "guest")
    assert inst.machine_state("guest")["nspawn"]["pid"] == pid, "up restarted a running machine"


def test_down_restores_the_host(scratch, host_state, lab_timings):
    inst = scratch
    procs = [inst.machine_state("guest")[k] for k in ("script", "nspawn", "leader")]
    assert host_state(other_than=inst.name) != inst.host_before, "the lab changed nothing?"
    # What a run that died half-way leaves (seen in CI): a machine whose state names only its
    # `script` process (start died before finding nspawn), and the group of a machine whose
    # state is gone altogether. `down` must clear both.
    state_file = inst.dir / "machines" / "guest" / "state.json"
    state_file.write_text(
        json.dumps({**inst.machine_state("guest"), "nspawn": None, "leader": None})
    )
    stale = cgroups.create(f"{inst.config.cgroup}/crashed")
    started = time.monotonic()
    inst.cli("down")
    lab_timings[f"{inst.name} down"] = time.monotonic() - started
    assert host_state(other_than=inst.name) == inst.host_before
    assert not [p for p in procs if proc.alive(p)], "processes of the lab still run"
    assert not [d for d in stale if d.exists()], "down left a stale cgroup"
    inst.cli("down")  # a second down is fine
    assert not inst.inventory.exists()
