"""vLLM on the shared lab guest (lab/overrides.py enables it with the lab-only
vllm_lab_skip_install: its several GB of CUDA wheels and its Hugging Face model are left out, and
the guest has no GPU). What runs for real: the user and folders, config.yaml, the 0600 key file,
the unit (enabled; its start skipped for want of a GPU), the firewall port from the registry, and
no change on the re-run. The pip install, the download and the start are in
tests/plan/test_vllm_plan.py (a GPU guest) and tests/infra/test_vllm.py (a real host)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.overrides import OVERRIDES
from roles.common import secrets
from roles.vllm import render

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.lab


def guest(lab, command: str, check: bool = True) -> str:
    return lab.ssh("guest", command, check=check).stdout.strip()


@pytest.fixture
def vllm(deployed):
    if not OVERRIDES["ai_guests"].get("vllm_enabled"):
        pytest.skip("vLLM is not enabled in the lab (lab/overrides.py)")
    return deployed


def test_deploys_write_it_once_and_never_print_the_key(vllm, deploys):
    first, second = deploys
    changed = [n for n in first.changed_operations() if n.startswith("vLLM")]
    for wanted in (
        "vLLM | system user vllm",
        "vLLM | config.yaml",
        "vLLM | vllm.env (the key from the secrets)",
        "vLLM | systemd unit",
        "vLLM | enabled on boot",
    ):
        assert wanted in changed, changed
    assert not [n for n in changed if n.startswith(("vLLM | vllm ", "vLLM | model "))], changed
    assert second is not None and second.ok, second.tail() if second else first.tail()
    assert [n for n in second.changed_operations() if "vLLM" in n] == []
    key = secrets.get("vllm_api_key")
    assert key, f"the deploy left no vllm_api_key in {secrets.secrets_file()}"
    assert key not in first.output + second.output


def test_user_folders_config_and_key_file_are_in_place(vllm):
    modes = guest(
        vllm,
        "stat -c '%n %a %U:%G' /var/lib/vllm /var/lib/vllm/models /var/lib/vllm/.cache/vllm "
        f"/var/log/vllm {render.LOG_FILE} {render.CONFIG_FILE} {render.ENV_FILE}",
    )
    assert modes.splitlines() == [
        "/var/lib/vllm 750 vllm:vllm",
        "/var/lib/vllm/models 750 vllm:vllm",
        "/var/lib/vllm/.cache/vllm 700 vllm:vllm",
        "/var/log/vllm 700 vllm:vllm",
        f"{render.LOG_FILE} 600 vllm:vllm",
        f"{render.CONFIG_FILE} 644 root:root",
        f"{render.ENV_FILE} 600 root:root",
    ]
    config = yaml.safe_load(guest(vllm, f"cat {render.CONFIG_FILE}"))
    # 'auto': loopback behind the TLS front door (the default), else every address behind the
    # firewall.
    address = "0.0.0.0" if OVERRIDES["ai_guests"].get("proxy_plain_http") else "127.0.0.1"
    assert (config["host"], config["port"]) == (address, 8000)
    assert "api-key" not in config
    # The key file holds the secret (compared by hash: the key never reaches the test output).
    wanted = hashlib.sha1(render.environment(secrets.get("vllm_api_key") or "").encode())
    assert guest(vllm, f"sha1sum < {render.ENV_FILE}").split()[0] == wanted.hexdigest()


def test_the_unit_is_valid_enabled_and_skipped_without_a_gpu(vllm):
    out = guest(vllm, f"systemd-analyze verify {render.UNIT_PATH} 2>&1", check=False)
    # The one complaint allowed: vllm is not installed here (vllm_lab_skip_install).
    problems = [line for line in out.splitlines() if "/opt/vllm/venv/bin/vllm" not in line]
    assert not [p for p in problems if p.strip()], out
    assert guest(vllm, "systemctl is-enabled vllm.service") == "enabled"
    # With vllm in place (a stand-in here: the lab skips its install), only the GPU is missing.
    stub = "/opt/vllm/venv/bin/vllm"
    guest(vllm, f"mkdir -p /opt/vllm/venv/bin && printf '#!/bin/sh\\nexit 0\\n' > {stub}")
    guest(vllm, f"chmod 755 {stub}")
    try:
        guest(vllm, "systemctl start vllm.service")  # a start is skipped, not failed
        shown = guest(vllm, "systemctl show -p ConditionResult -p ActiveState vllm.service")
        status = guest(vllm, "systemctl status --no-pager vllm.service", check=False)
    finally:
        guest(vllm, "rm -rf /opt/vllm/venv")
    assert sorted(shown.splitlines()) == ["ActiveState=inactive", "ConditionResult=no"], shown
    assert "ConditionDirectoryNotEmpty=/proc/driver/nvidia/gpus was not met" in status, status


def test_vllm_is_reached_through_the_front_door_only(vllm):
    """The registry gives the door vLLM's route; the firewall opens the door's port, not 8000."""
    if OVERRIDES["ai_guests"].get("proxy_plain_http"):
        pytest.skip("the lab runs without the TLS front door (proxy_plain_http)")
    rules = guest(vllm, "nft list table inet aicoder_filter")
    assert "tcp dport 8443 ip saddr @allowed_v4 accept" in rules, rules
    assert not re.search(r"dport [^\n]*\b8000\b", rules), rules
    site = guest(vllm, "cat /etc/nginx/conf.d/aicoder.conf")
    assert "location /vllm/ {" in site


def test_the_infra_checks_pass_and_say_why_the_service_ones_skip(vllm):
    """What a user runs against their guest (tests/infra/test_vllm.py): here everything but the
    running service passes, and those skip naming the missing install."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/infra/test_vllm.py", "-p", "no:cacheprovider",
         "-q", "-rs"],
        cwd=REPO, env={**os.environ, "AICODER_INVENTORY": str(vllm.inventory)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert re.search(r"\b4 passed, 2 skipped\b", done.stdout), done.stdout[-3000:]
    skips = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("vllm_lab_skip_install: lab only" in line for line in skips), skips
