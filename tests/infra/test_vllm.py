"""Checks of the vllm role on a real AI guest where vllm_enabled is set.

Checks of the running service skip, saying why, where vLLM is not installed (the lab-only
vllm_lab_skip_install) or the NVIDIA driver drives no GPU (its unit then does not start)."""

from __future__ import annotations

import shlex

import pytest
import yaml
from role_settings import enabled_settings, listen_on

from roles.common.services import client_address
from roles.vllm import render
from roles.vllm.settings import VllmSettings


@pytest.fixture
def vllm(host_data: dict) -> VllmSettings:
    return enabled_settings(VllmSettings, host_data)


@pytest.fixture
def running(guest, vllm):
    """The guest, once vLLM is installed and a GPU is there (else the test is skipped)."""
    if not guest.file(f"{vllm.venv}/bin/vllm").exists:
        pytest.skip(f"vLLM is not installed in {vllm.venv} (vllm_lab_skip_install: lab only)")
    if not guest.run(f"ls -A {render.GPU_CONDITION} 2>/dev/null").stdout.strip():
        pytest.skip(f"the NVIDIA driver drives no GPU ({render.GPU_CONDITION} is empty)")
    if not guest.service(render.UNIT).is_running:
        pytest.fail(f"{render.UNIT} is installed, a GPU is there, but it is not running")
    return guest


@pytest.fixture
def listen(guest, vllm, host_data) -> str | None:
    return listen_on(guest, vllm.host, host_data)


# The key is read on the guest by the command itself: it never appears in a test's output.
API_KEY = f"$(sed -n 's/^VLLM_API_KEY=//p' {render.ENV_FILE})"


def curl(guest, url: str, *args: str) -> int:
    """HTTP status of a request made on the guest (the body stays out of the output)."""
    out = guest.check_output(
        f"curl -sS -o /dev/null -m 20 -w '%{{http_code}}' {' '.join(args)} {shlex.quote(url)}"
    )
    return int(out)


def test_service_user_and_folders(guest, vllm):
    user = guest.user(vllm.user)
    assert user.exists and user.shell == "/usr/sbin/nologin" and user.uid < 1000
    for path, mode in (
        (vllm.model_dir, 0o750),
        (render.cache_dir(vllm), 0o700),
        (render.LOG_DIR, 0o700),
    ):
        folder = guest.file(path)
        assert folder.is_directory and folder.user == vllm.user and folder.mode == mode, path


def test_config_matches_the_settings(guest, vllm, listen):
    data = yaml.safe_load(guest.file(render.CONFIG_FILE).content_string)
    assert (data["host"], data["port"]) == (listen, vllm.port)
    assert data["model"] == f"{vllm.model_dir}/{vllm.model}"
    assert data["served-model-name"] == vllm.served_name
    assert data["max-model-len"] == vllm.max_model_len and "api-key" not in data


def test_the_key_file_is_roots_only_and_holds_a_key(guest):
    env = guest.file(render.ENV_FILE)
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert guest.run(f"grep -qE '^VLLM_API_KEY=.{{16,}}$' {render.ENV_FILE}").rc == 0


def test_unit_is_enabled_and_needs_a_gpu(guest):
    assert guest.service(render.UNIT).is_enabled
    unit = guest.file(render.UNIT_PATH).content_string
    assert f"ConditionDirectoryNotEmpty={render.GPU_CONDITION}" in unit
    assert f"EnvironmentFile={render.ENV_FILE}" in unit and "--api-key" not in unit


def test_listens_on_the_configured_address_only(running, vllm, listen):
    sockets = running.check_output(f"ss -ltnH 'sport = :{vllm.port}'").splitlines()
    addresses = {line.split()[3].rsplit(":", 1)[0].strip("[]") for line in sockets}
    assert addresses == {listen}, sockets


def test_health_needs_no_key_and_models_needs_it(running, vllm, listen):
    base = f"http://{client_address(listen)}:{vllm.port}"
    assert curl(running, f"{base}/health") == 200
    assert curl(running, f"{base}/v1/models") == 401
    assert curl(running, f"{base}/v1/models", "-H", f'"Authorization: Bearer {API_KEY}"') == 200
    served = running.check_output(
        f'curl -sS -m 20 -H "Authorization: Bearer {API_KEY}" {base}/v1/models'
    )
    assert vllm.served_name in served
