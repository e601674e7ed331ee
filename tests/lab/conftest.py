"""Fixtures for lab tests: real Debian 12 machines (systemd-nspawn) deployed with the pyinfra CLI.

Shared by every tests/lab/test_*.py, all session-scoped so the suite boots and deploys once:
- `lab`: the test lab instance (AICODER_TEST_LAB_NAME, default "test", or test2... while
  another run or checkout has it; machines from AICODER_TEST_LAB_MACHINES, default "guest"),
  always torn down at the end, also on failure or Ctrl-C. `lab.ssh("guest", "cmd")` runs a
  command in a machine.
- `deploys`: `pyinfra -y <lab inventory> deploy.py` run twice in a row (fresh, then re-run).
  When a selected test asks for `debian13_deploys`, the same two runs go to a Debian 13 guest
  (its own lab instance, "test-d13") at the same time, so both releases cost one deploy's wait.
- `deployed`: the lab after a successful first deploy (fails the test with pyinfra's output
  otherwise): what a test of a role's effect on a machine asks for.
- `lab_factory(name, machines)`: a context manager for another, private lab instance;
  `host_state()` snapshots what labs change on the host; `lab_timings` collects timings that
  are printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deploy_run import DeployRun, pyinfra_deploy

from lab import network, proc
from lab.config import Lab

REPO = Path(__file__).resolve().parents[2]

TOOLS = ["systemd-nspawn", "mmdebstrap", "script", "ssh", "ssh-keygen", "nft", "ip"]
TIMINGS: dict[str, float] = {}  # shown at the end of the run


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.lab)


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items())
        terminalreporter.write_line(f"lab timings: {parts}")


def skip_reason() -> str | None:
    """Why lab machines cannot boot here, or None."""
    if os.geteuid() != 0:
        return "lab machines need root (systemd-nspawn, bridges, nft)"
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return f"missing {', '.join(missing)}: run scripts/bootstrap.sh"
    return None


@dataclass
class LabInstance:
    """A lab instance driven through its real command line (`python -m lab ...`)."""

    name: str
    dir: Path
    host_before: dict = field(default_factory=dict)  # host_snapshot() from before `up`

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "AICODER_LAB_NAME": self.name, "AICODER_LAB_DIR": str(self.dir)}

    @property
    def config(self) -> Lab:
        return Lab(self.name, self.dir)

    @property
    def inventory(self) -> Path:
        return self.config.inventory

    def cli(self, *args: str, check: bool = True, timeout: float = 900):
        result = subprocess.run(
            [sys.executable, "-m", "lab", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(f"python -m lab {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    def ssh(self, machine: str, command: str, check: bool = True, timeout: float = 600):
        """Run a shell command in a machine as root; fails the test if it fails and `check`."""
        result = self.cli("ssh", machine, command, check=False, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"{machine}: {command!r} exited {result.returncode}:\n"
                        f"{result.stdout}{result.stderr}")  # fmt: skip
        return result

    def machine_state(self, machine: str) -> dict:
        return json.loads((self.dir / "machines" / machine / "state.json").read_text())


def _used_elsewhere(inst: LabInstance) -> bool:
    """Whether another test run, or a lab of the same name from another checkout, has it."""
    with contextlib.suppress(OSError, ValueError):
        owner = json.loads((inst.dir / "owner.json").read_text())
        if proc.alive(owner) and owner["pid"] != os.getpid():
            return True
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((network.RUN_DIR / "instances" / inst.name).read_text())
        return info["dir"] != str(inst.dir) and network.link_exists(info["bridge"])
    return False


def _claim(base: str) -> LabInstance:
    """The first instance name of base, base2, base3... that is free, claimed for this run
    (a CI clone or an engineer's run may be using `base` on the same host)."""
    for i in range(1, 10):
        name = base if i == 1 else f"{base}{i}"
        inst = LabInstance(name, REPO / ".lab" / "tests" / name)
        if not _used_elsewhere(inst):
            inst.dir.mkdir(parents=True, exist_ok=True)
            (inst.dir / "owner.json").write_text(json.dumps(proc.ident(os.getpid())))
            return inst
    pytest.fail(f"no free lab instance name from {base!r}")


@contextmanager
def lab_instance(base: str, machines: str):
    """Bring a lab instance (named `base` or, if that is taken, `base2`...) up for the block
    and always take it down after it; `down` must leave the host as `up` found it."""
    inst = _claim(base)
    name, owner_file = inst.name, inst.dir / "owner.json"
    inst.cli("down")  # what a killed earlier run may have left
    before = inst.host_before = host_snapshot(other_than=name)
    try:
        started = time.monotonic()
        inst.cli("up", "--machines", machines)
        TIMINGS.setdefault(f"{name} up", time.monotonic() - started)
        yield inst
    finally:
        started = time.monotonic()
        inst.cli("down", check=False)
        TIMINGS.setdefault(f"{name} down", time.monotonic() - started)
        owner_file.unlink(missing_ok=True)
    # Reached only when nothing failed above: `down` must leave the host as `up` found it.
    after = host_snapshot(other_than=name)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"lab {name!r} left the host changed (before, after): {changed}"


@pytest.fixture(scope="session")
def lab():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    name = os.environ.get("AICODER_TEST_LAB_NAME", "test")
    machines = os.environ.get("AICODER_TEST_LAB_MACHINES", "guest")
    with lab_instance(name, machines) as inst:
        yield inst


Deploys = tuple[DeployRun, DeployRun | None]
DEBIAN13_RUNS: dict[str, Deploys] = {}  # the Debian 13 guest's runs, made beside `deploys`


def _deploy_twice(inventory: Path, label: str, env: dict[str, str] | None = None) -> Deploys:
    """(fresh deploy, immediate re-run); no re-run after a failed deploy."""
    first = pyinfra_deploy(inventory, env=env)
    TIMINGS[f"{label}deploy"] = first.seconds
    second = None
    if first.ok:
        second = pyinfra_deploy(inventory, env=env)
        TIMINGS[f"{label}re-deploy"] = second.seconds
    return first, second


@pytest.fixture(scope="session")
def debian13_lab():
    """A lab instance with one Debian 13 AI guest (machine `guest13`), for the whole session."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with lab_instance("test-d13", "guest13") as inst:
        yield inst


@pytest.fixture(scope="session")
def deploys(lab, request) -> Deploys:
    """(fresh deploy, immediate re-run). The re-run comes right after the first so that what
    later tests do to the machines cannot show up as changes. When a selected test uses
    `debian13_deploys`, the Debian 13 guest is deployed the same way in parallel."""
    if not (REPO / "deploy.py").exists():
        pytest.skip("no deploy.py in the repo yet")
    wanted = any("debian13_deploys" in item.fixturenames for item in request.session.items)
    debian13 = request.getfixturevalue("debian13_lab") if wanted else None
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = pool.submit(_deploy_twice, lab.inventory, "")
        if debian13 is not None:  # its own secrets file: two runs must not generate into one
            env = {**os.environ, "AICODER_SECRETS_FILE": str(debian13.dir / "secrets.yml")}
            d13 = pool.submit(_deploy_twice, debian13.inventory, "d13 ", env)
            DEBIAN13_RUNS["runs"] = d13.result()
        return runs.result()


@pytest.fixture(scope="session")
def debian13_deploys(deploys, debian13_lab) -> Deploys:
    """(fresh deploy, re-run) of the Debian 13 guest, made together with `deploys`."""
    return DEBIAN13_RUNS["runs"]


@pytest.fixture(scope="session")
def debian13_deployed(debian13_lab, debian13_deploys) -> LabInstance:
    """The Debian 13 lab after a successful first deploy."""
    first, _ = debian13_deploys
    if not first.ok:
        pytest.fail(f"the Debian 13 deploy failed (exit {first.returncode}):\n{first.tail()}")
    return debian13_lab


@pytest.fixture(scope="session")
def deployed(lab, deploys) -> LabInstance:
    """The lab after a successful deploy."""
    first, _ = deploys
    if not first.ok:
        pytest.fail(f"the deploy failed (exit {first.returncode}):\n{first.tail()}")
    return lab


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def host_snapshot(other_than: str | None = None) -> dict[str, object]:
    """What the lab touches on the host: links, routes, nft ruleset, ip_forward, cgroups.

    Leaves out what belongs to lab instances other than `other_than`'s, which another test run
    or engineer may bring up or down meanwhile.
    """
    others = []
    for reg in (network.RUN_DIR / "instances").glob("*"):
        with contextlib.suppress(OSError):  # gone meanwhile: that lab went down
            if reg.name != other_than:
                others.append(Lab(reg.name, Path(json.loads(reg.read_text())["dir"])))
    bridges = {o.bridge for o in others}
    ifaces = set(bridges)
    for bridge in bridges:
        for line in _run("ip", "-o", "link", "show", "master", bridge).splitlines():
            ifaces.add(line.split(":")[1].strip().split("@")[0])
    links = [
        " ".join(line.split()[:2])  # name and state; addresses of veths are random
        for line in _run("ip", "-br", "link").splitlines()
        if line.split()[0].split("@")[0] not in ifaces
    ]
    routes = [
        line
        for line in _run("ip", "route", "show", "table", "all").splitlines()  # v4 and v6
        if not set(re.findall(r"\bdev (\S+)", line)) & ifaces
    ]
    tables = re.split(r"^(?=table )", _run("nft", "list", "ruleset"), flags=re.M)
    ruleset = [t for t in tables if not any(f"table inet {o.nft_table} " in t for o in others)]
    # While other labs run, ip_forward is theirs; the host's own value waits in the lab's
    # record for the last one to go down (lab/network.py).
    saved = network.RUN_DIR / "ip_forward.before"
    forward = saved if others and saved.exists() else network.IP_FORWARD
    cgroups = sorted(
        str(p)
        for p in Path("/sys/fs/cgroup").glob("*/aicoder-lab-*")
        if not any(p.name == o.cgroup for o in others)
    )
    return {
        "links": links,
        "routes": routes,
        "nft": ruleset,
        "ip_forward": forward.read_text().strip(),
        "cgroups": cgroups,
    }


@pytest.fixture(scope="session")
def lab_factory():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    return lab_instance


@pytest.fixture(scope="session")
def host_state():
    return host_snapshot


@pytest.fixture(scope="session")
def lab_timings() -> dict[str, float]:
    return TIMINGS
