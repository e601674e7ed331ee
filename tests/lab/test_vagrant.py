"""`vagrant up --provider=libvirt guest` for real (issue 17): the Vagrantfile's `guest` machine,
deployed by the Vagrantfile's own trigger, checked, provisioned again and destroyed.

Where: Vagrant, vagrant-libvirt and libvirtd run inside the lab machine `vagrant` (its own lab
instance): this host has no systemd to run libvirtd, and the machine keeps libvirt's networks
(vagrant-libvirt's management network 192.168.121.0/24, the host-only 192.168.56.0/24) and
iptables rules in its own namespace. The machine sees this repository and its .venv read-only at
the repository's own path, so the trigger's `pyinfra -y vagrant/inventory.py deploy.py` and
`pytest tests/infra` run from the checkout as a user runs them (AICODER_PYINFRA names the venv's
pyinfra, as docs/vagrant.md says); Vagrant's own state goes to VAGRANT_DOTFILE_PATH instead of
.vagrant/ in the read-only checkout. No KVM: the domain is emulated (type qemu).

The box: Vagrant Cloud is unreachable, so the box is built from the lab's Debian 12 cloud image
(lab/vagrant_box.py) and added as `aicoder-lab/debian12` (lab only; AICODER_GUEST_BOX picks it;
users keep `debian/bookworm64`).

What differs from a user's run, lab-only and passed to vagrant/inventory.py through
AICODER_LAB_VAGRANT_DATA: the offline/mirror settings of the nspawn lab (lab/overrides.py:
Debian's docker.io, no toolkit, no image or model download, tabbyAPI from the lab's mirror over
`git daemon` when the mirror exists) and LEFT_OUT below.

The `hypervisor` machine stays validate-only (tests/unit/test_vagrantfile.py): its box is Rocky
Linux (generic/rocky9), which cannot be downloaded or built here (no EL9 image or repository is
reachable), and it needs nested virtualization, which TCG under a paravirtual /dev/kvm cannot
give; the hypervisor roles are covered by tests/lab/test_hypervisor_vm.py.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from deploy_run import ANSI, DeployRun

from lab import mirrors, vagrant_box
from lab.overrides import OVERRIDES, TABBYAPI_RUNNABLE, VAGRANT_LEFT_OUT

REPO = Path(__file__).resolve().parents[2]
LAB_NAME = "test-vagrant"
STATE = "/var/lib/aicoder-lab-vagrant"  # in the machine: Vagrant's dotfile path, the lab data
LAB_DATA = f"{STATE}/lab-data.json"
MGMT_GATEWAY = "192.168.121.1"  # vagrant-libvirt's management network, seen from the VM
# The guest's host-only address (vagrant/inventory.py, the Vagrantfile).
GUEST_IP = re.search(r'^GUEST_IP = "(.+)"', (REPO / "vagrant/inventory.py").read_text(), re.M)[1]
TABBYAPI_PORT = 5000  # tabbyapi_port's default
PACKAGES = "vagrant vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils ovmf "
PACKAGES += "dnsmasq-base iptables git"
UP_TIMEOUT = 3600
ENV = {
    "VAGRANT_DOTFILE_PATH": f"{STATE}/dot",
    "AICODER_GUEST_BOX": vagrant_box.BOX_NAME,
    "AICODER_PYINFRA": f"{REPO}/.venv/bin/pyinfra",
    "AICODER_LAB_VAGRANT_DATA": LAB_DATA,
    "PYTHONDONTWRITEBYTECODE": "1",  # the checkout is read-only in the machine
    "VAGRANT_NO_COLOR": "1",
}
# Vagrant prints a trigger's output with the machine's name in front of each line.
TRIGGER_PREFIX = re.compile(r"^ {4}guest: ?", re.M)


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    def deploy(self) -> DeployRun:
        """The trigger's pyinfra run as pyinfra printed it."""
        text = TRIGGER_PREFIX.sub("", ANSI.sub("", self.output))
        return DeployRun(self.returncode, text, self.seconds)


@dataclass
class VagrantLab:
    lab: Any  # LabInstance of tests/lab/conftest.py
    runs: dict[str, Run] = field(default_factory=dict)
    after_destroy: dict[str, str] = field(default_factory=dict)
    probes: dict[str, str] = field(default_factory=dict)  # address -> HTTP status, from the machine

    def sh(self, command: str, check: bool = True, timeout: float = 900):
        return self.lab.ssh("vagrant", command, check=check, timeout=timeout)

    def run(self, what: str, command: str, timeout: float = UP_TIMEOUT) -> Run:
        """``command`` in the checkout in the machine, with ENV; kept under ``what``."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in ENV.items())
        started = time.monotonic()
        done = self.sh(f"cd {REPO} && env {env} {command} 2>&1", check=False, timeout=timeout)
        run = Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started)
        self.runs[what] = run
        return run


def lab_data(serves_tabbyapi: bool) -> dict:
    """The guest's lab-only host data: the nspawn lab's offline settings and LEFT_OUT."""
    data = {**OVERRIDES["ai_guests"], **{k: True for k in VAGRANT_LEFT_OUT.values()}}
    if serves_tabbyapi:
        data |= TABBYAPI_RUNNABLE | {"tabbyapi_git_url": f"git://{MGMT_GATEWAY}/{mirrors.TABBYAPI}"}
    return data


def prepare(vl: VagrantLab, lab_timings: dict) -> None:
    """Vagrant, libvirt and the box in the machine; the tabbyAPI mirror served to the VM."""
    started = time.monotonic()
    vl.sh(f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
          f"--no-install-recommends {PACKAGES} >/dev/null")  # fmt: skip
    vl.sh("systemctl start libvirtd.service")
    serves = vl.sh(f"test -d {mirrors.MOUNT}/{mirrors.TABBYAPI}", check=False).returncode == 0
    if serves:
        vl.sh(f"systemd-run --unit=aicoder-lab-git-daemon git daemon --reuseaddr --export-all "
              f"--base-path={mirrors.MOUNT} {mirrors.MOUNT}")  # fmt: skip
    data = json.dumps(lab_data(serves))
    vl.sh(f"mkdir -p {STATE} && printf '%s\\n' {shlex.quote(data)} > {LAB_DATA}")
    box = f"{vagrant_box.MOUNT}/{vagrant_box.BOX_FILE}"
    vl.sh(f"vagrant box add --no-color --name {vagrant_box.BOX_NAME} {box}")
    lab_timings["vagrant machine setup"] = time.monotonic() - started


def probe_tabbyapi(vl: VagrantLab) -> dict[str, str]:
    """tabbyAPI's /health from the machine (the user's host), on the host-only address and on
    the guest's management address ('000': no answer)."""
    config = vl.run("ssh-config", "vagrant ssh-config guest", timeout=120).output
    mgmt = re.search(r"^\s*HostName (\S+)", config, re.M)
    found = {}
    for address in (GUEST_IP, mgmt.group(1) if mgmt else "no-address"):
        url = f"http://{address}:{TABBYAPI_PORT}/health"
        status = vl.sh(f"curl -s -m 10 -o /dev/null -w '%{{http_code}}' {url}", check=False)
        found[address] = status.stdout.strip()
    return found


@pytest.fixture(scope="module")
def vagrant_lab(lab_factory, lab_timings):
    with lab_factory(LAB_NAME, "vagrant") as lab:
        vl = VagrantLab(lab)
        prepare(vl, lab_timings)
        try:
            up = vl.run("up", "vagrant up --provider=libvirt --no-color guest")
            lab_timings["vagrant up + trigger's deploy"] = up.seconds
            if up.returncode == 0:
                infra = vl.run(
                    "infra",
                    f"{REPO}/.venv/bin/python -m pytest -q -rs -p no:cacheprovider tests/infra",
                    timeout=1200,
                )
                lab_timings["infra checks"] = infra.seconds
                vl.probes = probe_tabbyapi(vl)
                again = vl.run("provision", "vagrant provision --no-color guest")
                lab_timings["vagrant provision"] = again.seconds
        finally:
            destroy = vl.run("destroy", "vagrant destroy --force --no-color guest", timeout=600)
            lab_timings["vagrant destroy"] = destroy.seconds
            vl.after_destroy = {
                "domains": vl.sh("virsh -c qemu:///system list --all --name").stdout,
                "volumes": vl.sh("virsh -c qemu:///system vol-list default").stdout,
            }
        yield vl
    # lab_factory has checked here that the host is as the lab found it (host_snapshot).


@pytest.fixture(scope="module")
def up(vagrant_lab) -> DeployRun:
    run = vagrant_lab.runs["up"]
    if run.returncode != 0:
        # Vagrant's own errors end in a Ruby backtrace: its first lines say what failed.
        lines = [line for line in run.output.splitlines() if not line.lstrip().startswith("from /")]
        pytest.fail(f"vagrant up failed (exit {run.returncode}):\n" + "\n".join(lines[-80:]))
    return run.deploy()


def test_vagrant_up_boots_the_box_and_the_trigger_deploys_with_the_vagrant_inventory(up):
    text = up.output
    assert f"Box '{vagrant_box.BOX_NAME}'" in text or vagrant_box.BOX_NAME in text, up.tail()
    assert "Running local: Inline script" in text, up.tail()
    assert "pyinfra -y vagrant/inventory.py deploy.py" in text, up.tail()
    # pyinfra's @vagrant connector found the guest; @local got the client config.
    assert "[@vagrant/guest] Success" in text and "[@local] Success" in text, up.tail(120)
    assert "@vagrant/hypervisor" not in text, "the hypervisor is not up: it must not be a host"
    assert up.changed_operations(), up.tail()


def test_roles_left_out_of_the_vagrant_run_say_why(vagrant_lab, up):
    """The infra checks of a left-out role skip with its lab-only setting as the reason."""
    report = vagrant_lab.runs["infra"].output
    for key in VAGRANT_LEFT_OUT.values():
        assert re.search(rf"^SKIPPED .*{key} \(LAB ONLY\)", report, re.M), report
    pytest.skip(
        "left out of the Vagrant run (LAB ONLY, AICODER_LAB_VAGRANT_DATA): "
        + ", ".join(f"{role} ({key})" for role, key in VAGRANT_LEFT_OUT.items())
        + ": the NVIDIA driver's DKMS build takes far too long under emulation (TCG); "
        "tests/lab/test_guest_gpu_stack.py covers it on the nspawn lab"
    )


def test_infra_checks_pass_against_the_vagrant_inventory(vagrant_lab, up):
    """`AICODER_INVENTORY=vagrant/inventory.py pytest tests/infra`, from the checkout: the
    firewall, Docker, tabbyAPI and Ollama on the host-only address, the client config; GPU-only
    and upstream-only checks skip, saying why."""
    run = vagrant_lab.runs["infra"]
    report = run.output
    assert run.returncode == 0, report[-12000:]
    summary = report.strip().splitlines()[-1]
    assert int(re.search(r"(\d+) passed", summary).group(1)) >= 20, report[-6000:]


def test_tabbyapi_answers_on_the_host_only_address_only(vagrant_lab, up):
    """From the user's side (the machine): tabbyAPI, bound to the host-only address by
    vagrant/inventory.py, answers there and not on the management network's address."""
    if not json.loads(vagrant_lab.sh(f"cat {LAB_DATA}").stdout)["tabbyapi_git_url"]:
        pytest.skip("no tabbyAPI mirror in this lab (lab/mirrors.py): tabbyAPI's code is left out")
    probes = vagrant_lab.probes
    assert probes.pop(GUEST_IP) == "200", vagrant_lab.probes
    assert list(probes.values()) == ["000"], probes


def test_a_second_vagrant_provision_changes_nothing(vagrant_lab, up):
    run = vagrant_lab.runs["provision"]
    deploy = run.deploy()
    assert run.returncode == 0, run.output[-8000:]
    assert "pyinfra -y vagrant/inventory.py deploy.py" in deploy.output
    assert deploy.changed_operations() == [], deploy.tail(120)


def test_vagrant_destroy_removes_the_domain_and_its_disk(vagrant_lab, up):
    assert vagrant_lab.runs["destroy"].returncode == 0, vagrant_lab.runs["destroy"].output
    assert vagrant_lab.after_destroy["domains"].strip() == ""
    volumes = vagrant_lab.after_destroy["volumes"]
    # Only the box's own volume stays in the pool (vagrant-libvirt keeps it for the next up).
    assert "guest" not in volumes and "aicoder-lab" in volumes, volumes
