"""vllm role: settings validation, what it renders (config.yaml, the key's environment file,
the unit), its probe's parsing and its registry entry."""

from __future__ import annotations

import re

import pytest
import yaml

from roles.common import registry
from roles.vllm import render
from roles.vllm.facts import parse_state
from roles.vllm.service import endpoint, models
from roles.vllm.settings import VllmSettings


def settings(**data) -> VllmSettings:
    built, problems = VllmSettings.problems_in({f"vllm_{k}": v for k, v in data.items()})
    assert built and not problems, problems
    return built


def problems(**data) -> list[tuple[str, str]]:
    return VllmSettings.problems_in({f"vllm_{k}": v for k, v in data.items()})[1]


def test_defaults_are_off_pinned_documented_and_point_at_upstream():
    s = settings()
    assert not s.enabled and not s.lab_skip_install
    assert s.version == "0.34.0" and s.pip_index_url == "https://pypi.org/simple"
    assert len(s.model_revision) == 40 and s.port == 8000
    for key, _default, doc in VllmSettings.docs():
        assert key.startswith("vllm_") and doc, key
    assert "LAB ONLY" in dict((k, d) for k, _, d in VllmSettings.docs())["vllm_lab_skip_install"]


# name: (value, what the message says), a bad value of each kind of check.
BAD = {
    "model_revision": ("main", "a commit id of 40 hex digits"),
    "version": ("latest", "a version like 0.34.0"),
    "pip_index_url": ("pypi.org/simple", "is not a URL"),
    "quantization": ("AWQ", "is not one of"),
    "tool_call_parser": ("qwen3coder", "is not one of"),
    "gpu_memory_utilization": (1.5, "out of range"),
    "tensor_parallel_size": (0, "out of range"),
    "max_model_len": (10, "out of range"),
    "host": ("localhost", "is not an IP address"),
    "model_repo": ("just-a-name", "a Hugging Face repo id"),
    "user": ("root", "never runs as root"),
}
BAD_OPTIONS = [
    ({"api-key": "x"}, "the key is the secret vllm_api_key"),
    ({"max-model-len": 8192}, "set vllm_max_model_len instead"),
    ({"--enable-prefix-caching": True}, "is not a long option name"),
    ({"speculative-config": {"n": 1}}, "is not a string, number or bool"),
]
CASES = [(n, v, m) for n, (v, m) in BAD.items()] + [("extra_options", *c) for c in BAD_OPTIONS]


@pytest.mark.parametrize(("name", "value", "message"), CASES)
def test_bad_values_name_the_key_and_the_fix(name, value, message):
    found = problems(enabled=True, **{name: value})
    assert [key for key, _ in found] == [f"vllm_{name}"], found
    assert message in found[0][1]


def test_port_clashes_with_sshd_and_tabbyapi_are_refused_only_when_enabled():
    data: dict[str, object] = {"vllm_enabled": True, "vllm_port": 22}
    assert "is the SSH port" in VllmSettings.problems_in(data)[1][0][1]
    data = {"vllm_enabled": True, "vllm_port": 11434}
    assert "Ollama's port too (ollama_port)" in VllmSettings.problems_in(data)[1][0][1]
    assert VllmSettings.problems_in({"vllm_port": 11434})[1] == []  # off: nothing to clash
    # Another address than Ollama's loopback one: no clash.
    data = {"vllm_enabled": True, "vllm_port": 11434, "ollama_bind_address": "127.0.0.1",
            "vllm_host": "127.0.0.2"}  # fmt: skip
    assert VllmSettings.problems_in(data)[1] == []


def test_config_holds_the_settings_under_vllms_long_option_names():
    s = settings(
        max_model_len=8192, quantization="awq", extra_options={"enable-prefix-caching": True}
    )
    data = yaml.safe_load(render.config_yaml(s, "192.168.1.20"))
    assert data == {
        "model": f"/var/lib/vllm/models/Qwen2.5-Coder-7B-Instruct-AWQ-{s.model_revision}",
        "served-model-name": "Qwen2.5-Coder-7B-Instruct-AWQ",
        "host": "192.168.1.20",
        "port": 8000,
        "max-model-len": 8192,
        "gpu-memory-utilization": 0.9,
        "tensor-parallel-size": 1,
        "quantization": "awq",
        "enable-auto-tool-choice": True,
        "tool-call-parser": "hermes",
        "enable-prefix-caching": True,
    }


def test_tool_parser_auto_follows_the_models_family_and_can_be_off():
    assert settings(model_repo="Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8").tool_parser == "qwen3_coder"
    assert settings(model_repo="someone/Unknown-7B-AWQ").tool_parser == ""
    off = settings(tool_call_parser="")
    assert "tool-call-parser" not in render.config(off, "0.0.0.0")
    assert "enable-auto-tool-choice" not in render.config(off, "0.0.0.0")


def systemd_value(line: str) -> str:
    """What systemd makes of one NAME=value line of an EnvironmentFile (systemd.exec(5),
    src/basic/env-file.c): a double-quoted value keeps everything, a backslash escaping one of
    \\ " ` $; an unquoted one drops backslashes and quotes and its outer blanks."""
    value = line.split("=", 1)[1].rstrip("\n")
    if value.startswith('"') and value.endswith('"'):
        return re.sub(r'\\([\\"`$])', r"\1", value[1:-1])
    return re.sub(r"\\(.)", r"\1", value).replace('"', "").replace("'", "").strip()


@pytest.mark.parametrize("key", ["k-123", "a1b2c3" * 8, 'pa"ss', "back\\slash", " $HOME 'x' `y` "])
def test_systemd_hands_vllm_the_key_as_given(key):
    """A key of the user's own may hold quotes, backslashes or blanks, which systemd would
    otherwise strip: vLLM would then refuse the clients' key."""
    assert systemd_value(render.environment(key)) == key


def test_the_key_is_in_the_environment_file_and_nowhere_in_the_unit():
    s = settings(enabled=True)
    assert render.environment("k-123") == "VLLM_API_KEY=k-123\n"
    unit = render.unit(s)
    assert "EnvironmentFile=/etc/vllm/vllm.env\n" in unit
    assert (
        "--api-key" not in unit
        and "VLLM_API_KEY" not in unit.split("[Service]")[1].split("EnvironmentFile")[1]
    )
    assert "ExecStart=/opt/vllm/venv/bin/vllm serve --config /etc/vllm/config.yaml\n" in unit


def test_the_unit_runs_only_with_an_nvidia_gpu_as_its_user_offline():
    unit = render.unit(settings(model_dir="/srv/models"))
    assert "ConditionDirectoryNotEmpty=/proc/driver/nvidia/gpus\n" in unit
    assert "ConditionPathExists=/opt/vllm/venv/bin/vllm\n" in unit
    assert "User=vllm\n" in unit and "HF_HUB_OFFLINE=1" in unit
    # Models outside the home stay writable for the service (the sandbox is read-only).
    assert "ReadWritePaths=/var/lib/vllm /var/log/vllm /srv/models\n" in unit


def test_probe_output_is_parsed():
    state = parse_state(
        [
            "installed 0.34.0 https://pypi.org/simple",
            "python 3.11",
            "gpus 2",
            "user yes",
            "route 192.168.1.20",
            "model Qwen2.5-Coder-7B-Instruct-AWQ-x Qwen/Qwen2.5-Coder-7B-Instruct-AWQ@x",
        ]
    )
    assert state.installed == "0.34.0 https://pypi.org/simple"
    assert (state.python, state.gpus, state.user_exists) == ((3, 11), 2, True)
    assert state.models == {
        "Qwen2.5-Coder-7B-Instruct-AWQ-x": "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ@x"
    }
    assert state.address and state.address.address == "192.168.1.20"
    assert parse_state([]).installed == "" and parse_state([]).python is None


def test_registered_with_a_bearer_endpoint_and_its_model():
    entry = registry.service("vllm")
    assert entry.settings is VllmSettings
    e = endpoint(settings(port=8100, host="10.0.0.5"))
    assert (e.label, e.port, e.port_key, e.listen, e.listen_key) == (
        "vLLM", 8100, "vllm_port", "10.0.0.5", "vllm_host"
    )  # fmt: skip
    assert (e.auth, e.key_secret, e.health_path, e.provider) == (
        "bearer", "vllm_api_key", "/health", "openai"
    )  # fmt: skip
    assert e.base_url("guest") == "http://guest:8100/v1"
    (model,) = models(settings(max_model_len=16384), None)
    assert (model.id, model.roles, model.context, model.tools) == (
        "Qwen2.5-Coder-7B-Instruct-AWQ", ("chat", "edit", "apply"), 16384, True
    )  # fmt: skip


def test_only_an_enabled_vllm_is_running_on_a_guest():
    def settings_of(data):
        return lambda cls: cls.problems_in(data)[0]

    names = [s.name for s, _ in registry.running(settings_of({}), ["ai_guests"])]
    assert "vllm" not in names
    names = [
        s.name for s, _ in registry.running(settings_of({"vllm_enabled": True}), ["ai_guests"])
    ]
    assert names[-1] == "vllm"


# --- the planner -------------------------------------------------------------------------------


def test_the_planner_puts_an_awq_chat_model_on_vllm_when_it_runs_and_tabbyapi_does_not():
    from roles.planner.plan import OLLAMA, TABBYAPI, VLLM, plan

    on_vllm = plan(12, "qwen2.5-coder-7b", backends=(VLLM, OLLAMA))
    assert on_vllm.vllm and on_vllm.vllm.model.key == "qwen2.5-coder-7b"
    assert (on_vllm.vllm.quant, on_vllm.vllm.roles) == ("AWQ", ("chat", "edit", "apply"))
    assert "2.0 vLLM" in on_vllm.table()
    # EXL3 on tabbyAPI stays the first choice; without vLLM nothing changes.
    both = plan(12, "qwen2.5-coder-7b", backends=(TABBYAPI, VLLM, OLLAMA))
    assert both.tabbyapi and not both.vllm
    assert not plan(12, "qwen2.5-coder-7b").vllm
    # A model without a known AWQ/GPTQ/FP8 repo is never placed on vLLM.
    assert not plan(48, "qwen2.5-coder-32b", backends=(VLLM, OLLAMA)).vllm


def test_the_plan_fills_vllms_model_context_and_memory_share():
    from roles.planner.plan import OLLAMA, VLLM, plan
    from roles.vllm.service import planned_data

    data = planned_data(plan(12, "qwen2.5-coder-7b", backends=(VLLM, OLLAMA)), {}, "guest")
    assert data == {
        "vllm_enabled": True,
        "vllm_model_repo": "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
        "vllm_model_revision": "8e8ed243bbe6f9a5aff549a0924562fc719b2b8a",
        "vllm_max_model_len": 16384,
        "vllm_gpu_memory_utilization": 0.56,  # 6.6 GiB of 12
    }
    assert VllmSettings.problems_in(data)[1] == []


def test_an_enabled_vllm_the_plan_gives_no_model_is_refused():
    from roles.common.settings import SettingsError
    from roles.planner.plan import OLLAMA, TABBYAPI, VLLM, plan
    from roles.vllm.service import planned_data, usable_gpus

    tabby = plan(24, "qwen2.5-coder-7b", backends=(TABBYAPI, VLLM, OLLAMA))
    assert planned_data(tabby, {}, "guest") == {}
    with pytest.raises(SettingsError, match="vllm_enabled is True but the plan serves no model"):
        planned_data(tabby, {"vllm_enabled": True}, "guest")
    assert usable_gpus(settings(enabled=True), [24, 24]) == [24]
    assert usable_gpus(settings(enabled=True, tensor_parallel_size=2), [24, 24]) == [24, 24]
    assert usable_gpus(settings(), [24, 24]) == [24, 24]  # off: it takes none
