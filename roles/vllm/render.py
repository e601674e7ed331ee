"""What the vllm role writes: config.yaml (`vllm serve --config`, dumped from a dict), the
environment file holding the API key, the systemd unit and the log rotation (Jinja2 text). Pure
functions, so unit tests call them directly."""

from __future__ import annotations

import re
from typing import Any

import yaml

from roles.common.services import outside
from roles.common.templates import render
from roles.hf_tools import models
from roles.vllm.settings import VllmSettings

CONFIG_DIR, LOG_DIR = "/etc/vllm", "/var/log/vllm"
CONFIG_FILE, ENV_FILE = f"{CONFIG_DIR}/config.yaml", f"{CONFIG_DIR}/vllm.env"
LOG_FILE, LOGROTATE_PATH = f"{LOG_DIR}/vllm.log", "/etc/logrotate.d/vllm"
UNIT = "vllm.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
INSTALL_STAMP = ".aicoder-installed"  # in the venv: what the last successful pip install was for
# The NVIDIA driver lists each GPU it drives here: the unit starts only where one exists.
GPU_CONDITION = "/proc/driver/nvidia/gpus"


def home(settings: VllmSettings) -> str:
    """The service user's home: its caches live under it."""
    return f"/var/lib/{settings.user}"


def hf_home(settings: VllmSettings) -> str:
    return models.hf_home(home(settings))


def cache_dir(settings: VllmSettings) -> str:
    """VLLM_CACHE_ROOT: vLLM's compile and kernel caches (kept: a restart is faster with them)."""
    return f"{home(settings)}/.cache/vllm"


def install_stamp(settings: VllmSettings) -> str:
    """What a pip install was for: a new version or index reinstalls."""
    return f"{settings.version} {settings.pip_index_url}"


def config(settings: VllmSettings, listen: str) -> dict[str, Any]:
    """config.yaml as a dict, under `vllm serve`'s long option names; ``listen`` is the
    resolved address (never 'auto')."""
    data: dict[str, Any] = {
        "model": f"{settings.model_dir}/{settings.model}",
        "served-model-name": settings.served_name,
        "host": listen,
        "port": settings.port,
        "max-model-len": settings.max_model_len,
        "gpu-memory-utilization": settings.gpu_memory_utilization,
        "tensor-parallel-size": settings.tensor_parallel_size,
    }
    if settings.quantization != "auto":
        data["quantization"] = settings.quantization
    if settings.tool_parser:
        data["enable-auto-tool-choice"] = True
        data["tool-call-parser"] = settings.tool_parser
    data.update(settings.extra_options)
    return data


def config_yaml(settings: VllmSettings, listen: str) -> str:
    header = "# Managed by the ai-coding-server deploy (roles/vllm): edit group_data instead.\n"
    return header + yaml.safe_dump(config(settings, listen), sort_keys=False)


def environment(api_key: str) -> str:
    """The unit's EnvironmentFile: vLLM requires VLLM_API_KEY as a bearer token on /v1 when it
    is set (vllm/entrypoints/serve/middleware), so the key never is on a command line."""
    if re.fullmatch(r"[A-Za-z0-9._~+/=:@%^,-]+", api_key):
        return f"VLLM_API_KEY={api_key}\n"
    # systemd reads quotes and backslashes in an EnvironmentFile and trims outer blanks
    # (systemd.exec(5)): any other key is double-quoted, with the characters that are special
    # inside double quotes escaped, so vLLM gets the key the clients send.
    return 'VLLM_API_KEY="{}"\n'.format(re.sub(r'([\\"`$])', r"\\\1", api_key))


def unit(settings: VllmSettings) -> str:
    paths = {
        "venv": settings.venv,
        "home": home(settings),
        "hf_home": hf_home(settings),
        "cache_dir": cache_dir(settings),
        "writable": outside(home(settings), settings.model_dir),
    }
    files = {"config_file": CONFIG_FILE, "env_file": ENV_FILE, "log_file": LOG_FILE}
    return render(
        "vllm/vllm.service.j2", user=settings.user, gpu_condition=GPU_CONDITION, log_dir=LOG_DIR,
        **paths, **files,
    )  # fmt: skip


def logrotate(settings: VllmSettings) -> str:
    return render("common/logrotate.j2", role="vllm", log_file=LOG_FILE, user=settings.user)
