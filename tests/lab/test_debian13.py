"""The AI guest roles on a real Debian 13 machine (lab machine `guest13`, its own lab instance).

Deployed together with the shared Debian 12 guest (tests/lab/conftest.py `deploys`: both runs go
at once), then re-run: nothing may change. Then what Debian 13 does differently, on the machine:
its own suites, its own driver (550, built by DKMS for the boot kernel), Debian's docker-compose
v2 (the `docker compose` plugin), tabbyAPI's virtualenv on Python 3.13, and the infra checks a
user runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab import mirrors
from roles.common.platform import DEBIAN_13

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.lab


def out(lab, command: str) -> str:
    return lab.ssh("guest13", command).stdout.strip()


def test_debian13_guest_deploys_and_a_rerun_changes_nothing(debian13_deploys):
    first, second = debian13_deploys
    assert first.ok, f"pyinfra exited {first.returncode}:\n{first.tail()}"
    assert second is not None and second.ok, second.tail() if second else "no re-run"
    changed = second.changed_operations()
    assert not changed, f"the re-run changed {changed}:\n{second.tail()}"


def test_it_is_debian_13_with_its_own_suites(debian13_deployed):
    assert out(debian13_deployed, ". /etc/os-release; echo $VERSION_ID") == "13"
    sources = out(debian13_deployed, "cat /etc/apt/sources.list.d/debian.sources")
    assert f"Suites: {' '.join(DEBIAN_13.suites)}\n" in sources + "\n"
    assert f"Suites: {DEBIAN_13.security_suite}" in sources


def test_debians_own_driver_is_550_built_for_the_boot_kernel(debian13_deployed):
    lab = debian13_deployed
    version = out(lab, "dpkg-query -W -f='${Version}' nvidia-driver")
    assert version.split(".")[0] == str(DEBIAN_13.archive_driver_branch), version
    depends = out(lab, "dpkg-query -W -f='${Depends}' linux-image-amd64")
    kernel = depends.split(",")[0].split()[0].removeprefix("linux-image-")
    assert out(lab, f"ls /lib/modules/{kernel}/updates/dkms/ | grep -c '^nvidia'") != "0"


def test_ollama_runs_compose_v2_from_debian(debian13_deployed):
    lab = debian13_deployed
    unit = out(lab, "systemctl cat ollama.service")
    assert "docker compose -p ollama" in unit and "docker-compose" not in unit, unit
    assert out(lab, "docker compose version --short").startswith("2.")
    config = out(lab, "docker compose -p ollama -f /opt/ollama/compose.yaml config")
    assert "ollama" in config


def test_tabbyapi_runs_on_python_3_13(debian13_deployed):
    lab = debian13_deployed
    if mirrors.tabbyapi_url(lab.config) is None:
        pytest.skip("no tabbyAPI source here (no GitHub, no bundle mirror): see lab/mirrors.py")
    version = "import sys; print(sys.version_info[:2])"
    python = out(lab, f"/opt/tabbyapi/current/venv/bin/python -c '{version}'")
    assert python == str(DEBIAN_13.python), python
    assert out(lab, "systemctl is-active tabbyapi.service") == "active"
    address = out(lab, "sed -n 's/^  host: //p' /etc/tabbyapi/config.yml")
    code = out(lab, f"curl -sS -o /dev/null -m 20 -w '%{{http_code}}' http://{address}:5000/health")
    assert code == "200"


def test_infra_checks_pass_on_the_debian13_guest(debian13_deployed, tmp_path):
    report = tmp_path / "infra.xml"
    env = {
        **os.environ,
        "AICODER_INVENTORY": str(debian13_deployed.inventory),
        "AICODER_SECRETS_FILE": str(debian13_deployed.dir / "secrets.yml"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/infra", "-p", "no:cacheprovider", "-q", "-rs",
         f"--junitxml={report}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert int(suite.get("tests")) - int(suite.get("skipped")) > 0, result.stdout
