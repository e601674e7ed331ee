"""Settings of the vllm role (AI guest, off by default): the pinned vLLM, its model, GPUs and
network. The serve options mirror vLLM's `vllm serve` arguments (docs.vllm.ai, Server Arguments),
written to its YAML --config file under their long names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from typing_extensions import override

from roles.common import checks
from roles.common.platform import Release
from roles.common.ports import ServicePorts, listen_setting, port_setting, start_timeout_setting
from roles.common.settings import RoleSettings, setting
from roles.hf_tools.models import folder_name, hf_repo, model_folder
from roles.nvidia_driver.settings import NvidiaDriverSettings

API_KEY_SECRET = "vllm_api_key"  # the key clients send; the client role reads it too
# vLLM's --quantization methods people publish coding models in; 'auto': from the model's
# config.json (quantization_config), which is what vLLM does without the flag.
QUANTIZATIONS = ("auto", "awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "compressed-tensors")
# vLLM's --tool-call-parser names at the pinned version (vllm/tool_parsers/__init__.py).
TOOL_PARSERS = (
    "deepseek_v3", "deepseek_v31", "deepseek_v32", "ernie45", "gemma4", "glm45", "glm47",
    "granite", "granite4", "hermes", "hunyuan_a13b", "internlm", "jamba", "kimi_k2",
    "llama3_json", "llama4_json", "llama4_pythonic", "minimax_m2", "mistral", "openai",
    "phi4_mini_json", "pythonic", "qwen3_coder", "qwen3_json", "qwen3_xml", "seed_oss", "xlam",
)  # fmt: skip
# tool_call_parser 'auto': the parser of the model's family, by its repo name. Qwen2.5 models
# call tools in the Hermes style (vLLM's tool calling docs); Qwen3-Coder has its own parser.
FAMILY_TOOL_PARSERS = (
    (re.compile(r"qwen3[-_.]?coder", re.I), "qwen3_coder"),
    (re.compile(r"qwen2\.5", re.I), "hermes"),
)
# --config keys a setting of this role writes (an extra option would bypass its checks), and the
# key that must never be in a file other users may read: the API key comes from the environment.
OWNED_OPTIONS = {
    "model": "model_repo",
    "served-model-name": "served_model_name",
    "host": "host",
    "port": "port",
    "max-model-len": "max_model_len",
    "gpu-memory-utilization": "gpu_memory_utilization",
    "tensor-parallel-size": "tensor_parallel_size",
    "quantization": "quantization",
    "enable-auto-tool-choice": "tool_call_parser",
    "tool-call-parser": "tool_call_parser",
    "download-dir": "model_dir",
}
REFUSED_OPTIONS = {
    "api-key": "the key is the secret vllm_api_key (the service reads it from its 0600 "
    "environment file, never from a file or command line others can read)",
    "config": "the deploy writes the config file itself",
}
VERSION = r"[0-9]+(\.[0-9]+){1,3}(rc[0-9]+|\.post[0-9]+)?"
OPTION = r"[a-z][a-z0-9-]*"


@dataclass(frozen=True)
class VllmSettings(ServicePorts, RoleSettings):
    PREFIX = "vllm"
    GROUPS = ("ai_guests",)

    enabled: bool = setting(
        False,
        "install and run vLLM as a second chat backend (AWQ, GPTQ, FP8 models); needs an "
        "NVIDIA GPU",
    )
    version: str = setting(
        "0.34.0",
        "the vllm release pip installs (its wheels bring CUDA torch: several GB)",
        checks.matches(VERSION, "a version like 0.34.0"),
    )
    pip_index_url: str = setting(
        "https://pypi.org/simple",
        "the Python package index vllm and its dependencies come from (a mirror: its URL)",
        checks.url("http", "https", "file"),
    )
    min_driver_branch: int = setting(
        580,
        "the oldest NVIDIA driver branch vllm's wheels run on: vllm 0.34.0 from PyPI brings torch "
        "2.14.0 built for CUDA 13.0, which needs 580 or newer (CUDA 13.0 release notes); the "
        "deploy refuses an older driver (lower it only for an index whose wheels are built for "
        "an older CUDA)",
        checks.in_range(300, 999),
    )
    lab_skip_install: bool = setting(
        False,
        "LAB ONLY: leave out the pip install of vllm (several GB of CUDA wheels) and the model; "
        "user, folders, config, key and unit are still written; refused on a guest with a GPU",
    )
    python: str = setting("/usr/bin/python3", "the venv's Python (3.11-3.14)", checks.safe_path)
    install_dir: str = setting("/opt/vllm", "its virtualenv: <dir>/venv (root's)", checks.safe_path)
    user: str = setting(
        "vllm",
        "system user the service runs as (owns its models, caches and log); never root",
        checks.service_user,
    )
    model_dir: str = setting(
        "/var/lib/vllm/models", "the downloaded models (kept across re-deploys)", checks.safe_path
    )
    host: str = listen_setting("vLLM")
    port: int = port_setting(8000, "vLLM")
    model_repo: str = setting(
        "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
        "Hugging Face repo of the model vLLM serves (AWQ, GPTQ, FP8 or unquantised safetensors)",
        hf_repo,
    )
    model_revision: str = setting(
        "8e8ed243bbe6f9a5aff549a0924562fc719b2b8a",
        "commit of model_repo (40 hex digits: a branch or tag can move)",
        checks.matches(r"[0-9a-f]{40}", "a commit id of 40 hex digits (a branch can move)"),
    )
    served_model_name: str = setting("", "its name in the API; empty: the repo's", folder_name)
    max_model_len: int = setting(32768, "context length in tokens", checks.in_range(256, 2**22))
    gpu_memory_utilization: float = setting(
        0.9,
        "share of each GPU's memory vLLM takes for weights and KV cache (lower it when another "
        "backend shares the card)",
        checks.in_range(0.05, 1.0),
    )
    tensor_parallel_size: int = setting(1, "GPUs the model is split over", checks.in_range(1, 64))
    quantization: str = setting(
        "auto",
        "quantization method (--quantization); 'auto': what the model's config.json says",
        checks.one_of(*QUANTIZATIONS),
    )
    tool_call_parser: str = setting(
        "auto",
        "vLLM's tool-call parser for the model's family (agent mode needs one); 'auto': by the "
        "repo's name (Qwen2.5: hermes, Qwen3-Coder: qwen3_coder), '' for none",
        checks.one_of("auto", "", *TOOL_PARSERS),
    )
    extra_options: dict[str, Any] = setting(
        {},
        "further `vllm serve` options by their long name, e.g. {'enable-prefix-caching': True, "
        "'kv-cache-dtype': 'fp8'}; api-key and the options that have a setting are refused",
    )
    start_timeout: int = start_timeout_setting(1200, "loading and compiling take long")

    @property
    def venv(self) -> str:
        return f"{self.install_dir}/venv"

    @property
    def model(self) -> str:
        """The model's folder under model_dir."""
        return model_folder(self.model_repo, self.model_revision)

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model_repo.rsplit("/", 1)[-1]

    @property
    def tool_parser(self) -> str:
        """The parser the config names ('' for none): 'auto' resolved by the repo's name."""
        if self.tool_call_parser != "auto":
            return self.tool_call_parser
        return next((p for f, p in FAMILY_TOOL_PARSERS if f.search(self.model_repo)), "")

    def downloads(self) -> list[tuple[str, str, str]]:
        """(repo, revision, folder) of the model to download; none when the install is skipped."""
        if self.lab_skip_install:
            return []
        return [(self.model_repo, self.model_revision, self.model)]

    @override
    def check(self) -> list[tuple[str, str]]:
        problems = []
        key = self.key("extra_options")
        for option, value in self.extra_options.items():
            if not re.fullmatch(OPTION, option):
                problems.append(
                    (key, f"{option!r} is not a long option name like 'enable-prefix-caching'")
                )
            elif option in REFUSED_OPTIONS:
                problems.append((key, f"{option} is refused: {REFUSED_OPTIONS[option]}"))
            elif option in OWNED_OPTIONS:
                owner = self.key(OWNED_OPTIONS[option])
                problems.append((key, f"{option} has its own setting: set {owner} instead"))
            elif not isinstance(value, str | int | float | bool):
                problems.append((key, f"{option}: {value!r} is not a string, number or bool"))
        return problems


def driver_too_old(
    settings: VllmSettings, driver: NvidiaDriverSettings, release: Release
) -> list[str]:
    """Refuse a driver branch older than vllm's CUDA wheels need: the service would be installed
    (several GB) and then fail at every start ("key: why" lines, roles/validate.py). Nothing to
    refuse when the install is left out (the lab-only setting)."""
    if not settings.enabled or settings.lab_skip_install:
        return []
    if driver.driver_branch(release) >= settings.min_driver_branch:
        return []
    return [
        f"{settings.key('enabled')}: {driver.branch_origin(release)}, but vllm {settings.version}"
        f"'s CUDA wheels need driver {settings.min_driver_branch} or newer "
        f"({settings.key('min_driver_branch')}) and would not start; use nvidia_driver_source = "
        f"'nvidia' (the default) with nvidia_driver_branch {settings.min_driver_branch} or newer "
        "(default '580'), or set vllm_enabled = False"
    ]
