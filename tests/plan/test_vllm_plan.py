"""Plan tests of the vllm role: the real deploy.py on a fake Debian 12 guest with an NVIDIA GPU
(the driver loaded), vLLM enabled. The probe's lines are in the format roles/vllm/facts.py prints
(the service-host part as roles/common/services.py's ServiceHost reads it)."""

from __future__ import annotations

import re

import pytest
from guest_services_facts import (
    LAN,
    LISTEN,
    PLAIN,
    address_lines,
    probe_lines,
    responses,
    unit_line,
    use_secrets,
)
from harness import file_line, package_lines, run_plan

from roles.common.platform import DEBIAN_12, DEBIAN_13
from roles.firewall import NFT_FILE
from roles.vllm import render
from roles.vllm.settings import VllmSettings

API_KEY = "vllm-5e1a9c0b7d3f"
ON = {"vllm_enabled": True}
VLLM_STATE = re.compile(r"echo installed \$\(cat /opt/vllm/venv/.*sed 's/\^/probe /'")
HEALTH = re.compile(r"until curl -fsS -o /dev/null -m 5 \S*http://127\.0\.0\.1:8000/health")
REPO = "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"
COMMIT = "8e8ed243bbe6f9a5aff549a0924562fc719b2b8a"
FOLDER = f"Qwen2.5-Coder-7B-Instruct-AWQ-{COMMIT}"


@pytest.fixture(autouse=True)
def user_secrets(monkeypatch, tmp_path):
    use_secrets(monkeypatch, tmp_path, "tabby-key-0123", "tabby-admin-4567")
    monkeypatch.setenv("AICODER_VLLM_API_KEY", API_KEY)


def vllm_ops(plan) -> list[tuple[str, list[str]]]:
    return [(name, cmds) for name, cmds in plan.changed if name.startswith("vLLM")]


def plan_for(data: dict | None = None, extra: dict | None = None):
    # vLLM as it listens without the TLS front door (tests/plan/test_proxy_plan.py: behind it).
    return run_plan({"ai_guests": {**LAN, **PLAIN, **ON, **(data or {})}}, responses(extra))


def converged(data: dict | None = None, gpus: int = 1, **probe) -> dict:
    """HostState answers of a GPU guest where the vllm role has run with ``data``."""
    settings, problems = VllmSettings.problems_in({**ON, **(data or {})})
    assert settings and not problems, problems
    user = settings.user
    mine = f"{user}:{user}"
    install = {
        "installed": render.install_stamp(settings),
        "python": "3.11",
        "gpus": str(gpus),
        "user": "yes",
        **probe,
    }
    lines = [f"{k} {v}" for k, v in install.items() if v is not None]
    lines += [f"model {folder} {repo}@{rev}" for repo, rev, folder in settings.downloads()]
    from roles.vllm import _folders, _packages  # what the role keeps, as it keeps it

    return {
        VLLM_STATE: [
            file_line(render.CONFIG_FILE, render.config_yaml(settings, LISTEN)),
            file_line(render.ENV_FILE, render.environment(API_KEY), "600"),
            file_line(render.UNIT_PATH, render.unit(settings)),
            file_line(render.LOGROTATE_PATH, render.logrotate(settings)),
            file_line(render.LOG_FILE, "", "600", mine),
            *package_lines(_packages(settings)),
            unit_line(render.UNIT),
            *(f"dir {mode} {owner} {path}" for path, owner, mode in _folders(settings)),
            *probe_lines([*lines, *address_lines()]),
        ],
        HEALTH: "up",
        "--property SubState vllm.service": "Id=vllm.service\nSubState=running",
    }


# --- a fresh GPU guest -------------------------------------------------------------------------


def test_fresh_gpu_guest_gets_user_venv_model_config_key_and_a_running_service():
    plan = plan_for()
    assert plan.error is None, plan.error
    assert plan.find(r"^useradd --system --user-group --home-dir /var/lib/vllm .*vllm$")
    assert plan.find(r"^test -x /opt/vllm/venv/bin/python \|\| /usr/bin/python3 -m venv ")
    assert plan.find(
        r"^/opt/vllm/venv/bin/pip install .*--index-url https://pypi.org/simple vllm==0\.34\.0$"
    )
    # The model through the hf_tools role's CLI, at the pinned commit, as the service user.
    assert plan.find(
        rf"^runuser -u vllm -- env HF_HOME=/var/lib/vllm/.cache/huggingface .*/opt/hf-cli/bin/hf "
        rf"download {REPO} --revision {COMMIT} --local-dir /var/lib/vllm/models/{FOLDER} --quiet$"
    )
    config = plan.files[render.CONFIG_FILE]
    assert f"model: /var/lib/vllm/models/{FOLDER}\n" in config
    assert "host: 0.0.0.0\nport: 8000\n" in config  # 'auto' behind the firewall
    assert "served-model-name: Qwen2.5-Coder-7B-Instruct-AWQ\n" in config
    assert "tool-call-parser: hermes\n" in config and "api-key" not in config
    unit = plan.files[render.UNIT_PATH]
    assert "ExecStart=/opt/vllm/venv/bin/vllm serve --config /etc/vllm/config.yaml\n" in unit
    assert "EnvironmentFile=/etc/vllm/vllm.env\n" in unit
    assert "ConditionDirectoryNotEmpty=/proc/driver/nvidia/gpus\n" in unit
    assert "systemctl enable vllm.service" in plan.commands
    assert "systemctl start vllm.service" in plan.commands
    assert "vLLM | running and enabled on boot" in plan.names()


def test_vllm_gets_the_c_compiler_and_python_headers_triton_builds_its_launcher_with():
    """Triton compiles its CUDA launcher (Python.h) with gcc at vLLM's first start
    (vllm-project/vllm#27890); the lab-only skip installs no vllm, so not them either."""
    plan = plan_for()
    assert plan.find(r"apt-get .* install .*\bgcc python3-dev\b")
    lab = plan_for({"vllm_lab_skip_install": True}, extra={})
    assert lab.error is None, lab.error
    assert not lab.find(r"apt-get .* install .*python3-dev")


def test_a_service_that_never_answers_fails_with_its_last_log_lines():
    plan = plan_for(extra={HEALTH: "down"})
    (wait,) = [cmds for name, cmds in vllm_ops(plan) if name == "vLLM | answers /health"]
    assert "vLLM did not answer http://127.0.0.1:8000/health within 1200 s" in wait[0]
    assert "tail -n 30 /var/log/vllm/vllm.log; journalctl -u vllm.service" in wait[0]


def test_the_key_goes_to_a_0600_root_file_and_never_into_a_command():
    plan = plan_for()
    assert plan.files[render.ENV_FILE] == f"VLLM_API_KEY={API_KEY}\n"
    assert f"install -m 600 -o root -g root /dev/null {render.ENV_FILE}" in plan.commands
    assert not [c for c in plan.commands if API_KEY in c]
    assert not [
        path for path, text in plan.files.items() if API_KEY in text and path != render.ENV_FILE
    ]


def test_the_firewall_opens_vllms_port_from_the_registry():
    rules = plan_for().files[NFT_FILE]
    assert "tcp dport { 5000, 8000, 11434 }" in rules


def test_off_by_default_no_operation_and_no_open_port():
    plan = run_plan({"ai_guests": {**LAN, **PLAIN}}, responses())
    assert plan.error is None, plan.error
    assert vllm_ops(plan) == []
    assert "8000" not in plan.files[NFT_FILE]


def test_a_mirror_index_and_settings_reach_pip_and_the_config():
    data = {
        "vllm_pip_index_url": "https://pypi.example.internal/simple",
        "vllm_max_model_len": 16384,
        "vllm_gpu_memory_utilization": 0.5,
        "vllm_tensor_parallel_size": 2,
        "vllm_quantization": "awq_marlin",
        "vllm_host": "192.168.1.20",
        "vllm_port": 8100,
    }
    plan = plan_for(data)
    assert plan.error is None, plan.error
    assert plan.find(r"--index-url https://pypi.example.internal/simple vllm==0\.34\.0$")
    config = plan.files[render.CONFIG_FILE]
    for line in (
        "host: 192.168.1.20",
        "port: 8100",
        "max-model-len: 16384",
        "gpu-memory-utilization: 0.5",
        "tensor-parallel-size: 2",
        "quantization: awq_marlin",
    ):
        assert f"\n{line}\n" in config, line
    assert "tcp dport { 5000, 8100, 11434 }" in plan.files[NFT_FILE]


# --- a converged GPU guest ---------------------------------------------------------------------


def test_converged_gpu_guest_plans_nothing():
    plan = plan_for(extra=converged())
    assert plan.error is None, plan.error
    assert vllm_ops(plan) == []


def test_a_new_version_reinstalls_and_restarts():
    plan = plan_for(extra=converged(installed="0.33.0 https://pypi.org/simple"))
    assert plan.error is None, plan.error
    names = [name for name, _ in vllm_ops(plan)]
    assert names == [
        "vLLM | vllm 0.34.0 (with CUDA torch: several GB)",
        "vLLM | restart for the change",
    ]


def test_a_changed_setting_rewrites_the_config_and_restarts():
    plan = plan_for({"vllm_max_model_len": 8192}, extra=converged())
    assert plan.error is None, plan.error
    names = [name for name, _ in vllm_ops(plan)]
    assert names == ["vLLM | config.yaml", "vLLM | restart for the change"]
    assert "max-model-len: 8192\n" in plan.files[render.CONFIG_FILE]


def test_an_incomplete_model_is_downloaded_again():
    answers = converged()
    answers[VLLM_STATE] = [line for line in answers[VLLM_STATE] if "probe model " not in line]
    plan = plan_for(extra=answers)
    names = [name for name, _ in vllm_ops(plan)]
    assert names == [
        f"vLLM | model {FOLDER} from {REPO}@{COMMIT}",
        "vLLM | restart for the change",
    ]


# --- refused before any change -----------------------------------------------------------------


def test_lab_only_skip_install_is_refused_on_a_guest_with_a_gpu():
    plan = plan_for({"vllm_lab_skip_install": True}, extra=converged())
    assert "vllm_lab_skip_install is for a lab without a GPU" in str(plan.error)
    assert plan.changed == []


def test_tensor_parallel_over_more_gpus_than_the_guest_has_is_refused():
    plan = plan_for({"vllm_tensor_parallel_size": 2}, extra=converged(gpus=1))
    assert "vllm_tensor_parallel_size is 2 but the guest has 1 GPU" in str(plan.error)
    assert plan.changed == []


def test_an_interpreter_vllm_does_not_support_is_refused():
    plan = plan_for(extra=converged(python="3.9"))
    assert "is Python 3.9, but vllm 0.34.0 needs 3.11 to 3.14" in str(plan.error)


def test_a_driver_older_than_vllms_cuda_wheels_need_is_refused_before_any_change():
    """vllm 0.34.0's torch 2.14.0 (PyPI) is built for CUDA 13.0, which needs driver 580+: the
    releases' own 535 (Debian 12) and 550 (Debian 13), or a lower pinned branch, would install
    several GB and then fail at every start."""
    debian = {"nvidia_driver_source": "debian", "ollama_gpu": False}
    for release, branch in ((DEBIAN_12, 535), (DEBIAN_13, 550)):
        found = responses(converged(), release)
        plan = run_plan({"ai_guests": {**LAN, **PLAIN, **ON, **debian}}, found)
        assert plan.error is not None and plan.changed == []
        message = str(plan.error)
        assert f"{release.name}'s {branch} driver" in message, message
        assert "vllm_enabled" in message and "580 or newer" in message
    plan = plan_for({"nvidia_driver_branch": "570"}, extra=converged())
    assert "nvidia_driver_branch = '570'" in str(plan.error) and plan.changed == []
    # The default branch is enough; a lower minimum (an index with older CUDA wheels) is taken
    # as given, and with the lab-only skip nothing is installed that would need the driver.
    assert plan_for(extra=converged()).error is None
    lower = {**debian, "vllm_min_driver_branch": 535}
    assert plan_for(lower, extra=converged()).error is None
    lab = {**debian, "vllm_lab_skip_install": True}
    assert plan_for(lab, extra=converged(gpus=0, installed=None)).error is None


def test_a_port_of_another_service_is_refused_naming_the_key():
    plan = plan_for({"vllm_port": 5000})
    assert "vllm_port: 5000 is tabbyAPI's port too (tabbyapi_port)" in str(plan.error)
    assert plan.changed == []


# --- the lab-only path, without a GPU ----------------------------------------------------------


def test_lab_skip_install_without_a_gpu_writes_everything_but_installs_and_starts_nothing():
    plan = plan_for({"vllm_lab_skip_install": True}, extra=converged(gpus=0, installed=None))
    assert plan.error is None, plan.error
    assert [name for name, _ in vllm_ops(plan)] == []  # converged: enabled, files in place
    fresh = plan_for({"vllm_lab_skip_install": True}, extra={})
    commands = [c for _, cmds in vllm_ops(fresh) for c in cmds]
    assert not [c for c in commands if re.search(r"pip install|hf download", c)]
    assert "systemctl enable vllm.service" in commands
    assert "systemctl start vllm.service" not in commands
    assert render.CONFIG_FILE in fresh.files and render.ENV_FILE in fresh.files


# --- the editor's config -----------------------------------------------------------------------


def test_the_continue_config_lists_vllms_model_with_its_key_from_env(monkeypatch):
    from test_client_plan import CONFIG, GUEST_DATA, config_of, run_client

    monkeypatch.setenv("AICODER_TABBYAPI_API_KEY", "0123456789abcdef0123456789abcdef")
    plan = run_client(guests={"guest": {**GUEST_DATA, **ON}})
    assert plan.error is None, plan.error
    (model,) = [m for m in config_of(plan)["models"] if m["apiBase"].endswith(":8000/v1")]
    assert model["provider"] == "openai" and model["apiBase"] == "http://192.168.1.50:8000/v1"
    assert model["model"] == "Qwen2.5-Coder-7B-Instruct-AWQ"
    assert model["roles"] == ["chat", "edit", "apply"]
    assert model["apiKey"] == "${{ secrets.VLLM_API_KEY }}"
    assert model["defaultCompletionOptions"]["contextLength"] == 32768
    assert API_KEY not in plan.files[CONFIG] and not [c for c in plan.commands if API_KEY in c]
    assert plan.find(r"VLLM_API_KEY=")  # the .env line, written masked
    off = run_client(guests={"guest": GUEST_DATA})
    assert not [m for m in config_of(off)["models"] if ":8000" in m["apiBase"]]


def test_the_planner_sizes_vllm_on_a_guest_without_tabbyapi():
    data = {
        "planner_chat_model": "qwen2.5-coder-7b",
        "planner_vram_gib": 12,
        "tabbyapi_enabled": False,
    }
    plan = plan_for(data)
    assert plan.error is None, plan.error
    config = plan.files[render.CONFIG_FILE]
    assert f"model: /var/lib/vllm/models/{FOLDER}\n" in config
    assert "max-model-len: 16384\ngpu-memory-utilization: 0.56\n" in config
    assert not [name for name, _ in plan.changed if name.startswith("tabbyAPI")]
