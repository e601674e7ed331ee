"""Settings of the tabbyapi role (AI guest): source, model, cache, GPUs, network.

The config.yml options mirror upstream's `common/config_models.py` (theroyallab/tabbyAPI); their
allowed values are checked here so a typo fails before anything changes on the guest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from typing_extensions import override

from roles.common import checks, secrets
from roles.common.ports import ServicePorts, listen_setting, port_setting, start_timeout_setting
from roles.common.settings import RoleSettings, setting
from roles.hf_tools.models import FOLDER, folder_name, hf_repo, model_folder

# exllamav3 cache modes: the legacy names, or "k_bits,v_bits" with each from 2 to 8
# (upstream CACHE_TYPE); the draft model accepts only the legacy names (CACHE_SIZES).
CACHE_NAMES = ("FP16", "Q8", "Q6", "Q4")
CACHE_BITS = re.compile(r"[2-8]\s*,\s*[2-8]")
CONFIG_SECTIONS = (
    "network",
    "logging",
    "model",
    "draft_model",
    "sampling",
    "lora",
    "embeddings",
    "memory",
    "developer",
)
# config.yml options that a setting of this role writes: an override of one would bypass the
# setting's checks (a port clash, a listen address), so the override names the setting instead.
OWNED_OPTIONS = {
    ("network", "host"): "host",
    ("network", "port"): "port",
    ("model", "model_dir"): "model_dir",
    ("model", "model_name"): "model_name",
    ("model", "max_seq_len"): "max_seq_len",
    ("model", "cache_size"): "cache_size",
    ("model", "cache_mode"): "cache_mode",
    ("model", "gpu_split_auto"): "gpu_split_auto",
    ("model", "gpu_split"): "gpu_split",
    ("model", "autosplit_reserve"): "autosplit_reserve",
    ("model", "tensor_parallel"): "tensor_parallel",
    ("model", "tensor_parallel_backend"): "tensor_parallel_backend",
    ("model", "tool_format"): "tool_format",
    ("draft_model", "draft_mode"): "draft_mode",
    ("draft_model", "draft_model_dir"): "model_dir",
    ("draft_model", "draft_model_name"): "draft_model_name",
    ("draft_model", "draft_cache_mode"): "draft_cache_mode",
    ("draft_model", "draft_gpu_split"): "draft_gpu_split",
    ("developer", "unsafe_launch"): "lab_unsafe_launch",
}
# tabbyAPI's tool-call parsers at the pinned commit (endpoints/OAI/utils/tools.py,
# ALL_TOOLCALL_FORMATS): config.yml model.tool_format names one, or tool calls are not parsed.
TOOL_FORMATS = (
    "deepseek_v4", "dsv4", "gemma4", "glm4_5", "glm4_6", "glm4_7", "harmony", "hy3", "hy_v3",
    "laguna", "poolside_v1", "minimax_m2", "minimax_m2_1", "minimax_m2_5", "mistral_old",
    "mistral", "muse_glimmer", "glimmer", "qwen3_coder", "qwen3_5", "step3_5", "step3_7",
)  # fmt: skip
# tool_format 'auto': the parser of the model's family, recognised by its repo or folder name.
FAMILY_TOOL_FORMATS = ((re.compile(r"qwen3[-_.]?coder", re.I), "qwen3_coder"),)
# Types of the other config.yml options (upstream's config_models.py at the pinned commit):
# (section, option) -> (type, the least allowed number); "path" is a folder on the guest.
OPTION_TYPES: dict[tuple[str, str], tuple[str, Any]] = {
    **{("network", o): ("bool", None) for o in ("disable_fetch_requests", "send_tracebacks")},
    ("network", "sse_ping_interval"): ("int", 0),
    **{
        ("logging", o): ("bool", None)
        for o in ("log_prompt", "log_generation_params", "log_requests",
                  "log_chat_completion_requests")
    },
    **{
        ("model", o): ("bool", None)
        for o in ("inline_model_loading", "use_dummy_models", "output_chunking", "vision",
                  "force_enable_thinking", "reasoning", "tool_calls_in_reasoning", "harmony")
    },
    ("model", "chunk_size"): ("int", 1),
    ("model", "max_batch_size"): ("int", 1),
    ("model", "cpu_moe_offload_layers"): ("int", 0),
    ("model", "reasoning_budget_tokens"): ("int", 0),
    ("model", "rope_scale"): ("float", 0),
    **{
        ("model", o): ("str", None)
        for o in ("backend", "prompt_template", "reasoning_start_token", "reasoning_end_token",
                  "reasoning_budget_message")
    },
    ("draft_model", "draft_num_tokens"): ("int", 1),
    ("draft_model", "ngram_match_min"): ("int", 1),
    ("draft_model", "dynamic_draft"): ("bool", None),
    ("draft_model", "draft_rope_scale"): ("float", 0),
    ("sampling", "override_preset"): ("str", None),
    ("lora", "lora_dir"): ("path", None),
    ("embeddings", "embedding_model_dir"): ("path", None),
    ("embeddings", "embedding_model_name"): ("str", None),
    ("memory", "sysmem_recurrent_cache"): ("int", 0),
    ("memory", "sysmem_kv_cache"): ("int", 0),
    ("memory", "cuda_malloc_async"): ("bool", None),
    **{
        ("developer", o): ("bool", None)
        for o in ("unsafe_launch", "disable_request_streaming", "realtime_process_priority",
                  "seqlog")
    },
}  # fmt: skip
API_KEY_SECRET = "tabbyapi_api_key"  # the key clients send; the client role reads it too


def cache_mode(value: str) -> str | None:
    if value in CACHE_NAMES or CACHE_BITS.fullmatch(value):
        return None
    return (
        f"{value!r} is not an exllamav3 cache mode; use FP16, Q8, Q6, Q4 or 'k,v' bits from "
        "2 to 8 such as '8,8' or '4,6'"
    )


def git_source(value: str | None) -> str | None:
    """A git URL, an scp-like ``user@host:path``, a local mirror path, or None (no source)."""
    if value is None or value.startswith("/"):
        return None
    if re.fullmatch(r"[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+:\S+", value):
        return None
    return checks.url("http", "https", "ssh", "git", "file")(value)


def option_value(section: str, option: str, value: Any) -> str | None:
    """A config.yml option's value against its upstream type, where the type is known."""
    kind, least = OPTION_TYPES.get((section, option), (None, None))
    if kind is None or value is None:  # upstream's options are Optional: None is its default
        return None
    where = f"{section}.{option}"
    if kind == "path":
        problem = checks.safe_path(value) if isinstance(value, str) else f"{value!r} is no path"
        return f"{where}: {problem}" if problem else None
    types_ = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}[kind]
    if not isinstance(value, types_) or (kind != "bool" and isinstance(value, bool)):
        return f"{where} must be {checks.KIND_NAMES[kind]}, got {value!r}"
    if least is not None and not (value > least if kind == "float" else value >= least):
        bound = "more than" if kind == "float" else "at least"
        return f"{where} must be {bound} {least}, got {value!r}"
    return None


def optional(check):
    """``check`` for a setting whose None means "not wanted"."""
    return lambda value: None if value is None else check(value)


@dataclass(frozen=True)
class TabbyapiSettings(ServicePorts, RoleSettings):
    PREFIX = "tabbyapi"
    GROUPS = ("ai_guests",)

    enabled: bool = setting(True, "install and run tabbyAPI (exllamav3, EXL3 models) on the guest")
    user: str = setting(
        "tabbyapi",
        "system user the service runs as (owns its models, keys file and log); never root",
        checks.service_user,
    )
    install_dir: str = setting(
        "/opt/tabbyapi",
        "code (root-owned): one release per ref and extras in <dir>/releases/<ref>+<extras> "
        "(checkout in src, virtualenv in venv), <dir>/current links the one the service runs, "
        "<dir>/locks keeps each release's pip freeze",
        checks.absolute_path,
    )
    git_url: str | None = setting(
        "https://github.com/theroyallab/tabbyAPI",
        "tabbyAPI's git repository: a URL or a local mirror path; None when no source is "
        "reachable (code, Python dependencies and the service start are then left out)",
        git_source,
    )
    git_ref: str = setting(
        "e632af41eba68abeadc3437c62674360f2f8cbf1",
        "commit (or tag) checked out; upstream is a rolling release without tags, so pin a "
        "commit (default: main of 2026-08-13)",
        checks.git_ref,
    )
    pip_extras: list[str] = setting(
        ["cu12"],
        "tabbyAPI's dependency sets: cu12 (CUDA 12.8 wheels, Python 3.10-3.13) or cu13 (CUDA 13, "
        "Python 3.12+, so not Debian 12's 3.11; driver 580+), optionally extras (embeddings); "
        "empty (base dependencies only, from PyPI) only with lab_unsafe_launch",
        checks.matches(r"cu12|cu13|extras", "a dependency set: cu12, cu13 or extras"),
    )
    lab_unsafe_launch: bool = setting(
        False,
        "LAB ONLY: start tabbyAPI without torch/exllamav3 (its developer.unsafe_launch), so a "
        "machine without a GPU runs it with no model; refused on a guest that has a GPU",
    )
    python: str = setting(
        "/usr/bin/python3",
        "interpreter the virtualenv is made with (3.10 to 3.13 for cu12)",
        checks.absolute_path,
    )
    host: str = listen_setting("tabbyAPI")
    port: int = port_setting(5000, "tabbyAPI")
    model_dir: str = setting(
        "/var/lib/tabbyapi/models",
        "where models are downloaded and loaded from (kept across re-deploys)",
        checks.absolute_path,
    )
    model_repo: str | None = setting(
        "ArtusDev/Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3",
        "Hugging Face repo of the EXL3 model to download; None: place the model yourself",
        optional(hf_repo),
    )
    model_revision: str = setting(
        "4.0bpw_H6",
        "branch, tag or commit of model_repo (EXL3 repos keep one branch per bit rate)",
        checks.git_ref,
    )
    model_name: str = setting(
        "",
        "folder under model_dir loaded at start; empty: derived from model_repo and its "
        "revision ('' with no repo: start without a model)",
        folder_name,
    )
    max_seq_len: int | None = setting(
        32768,
        "context length in tokens; -1 reads it from the model, None uses tabbyAPI's default",
        optional(checks.in_range(-1, 4_194_304)),
    )
    cache_size: int | None = setting(
        None,
        "K/V cache size in tokens (a multiple of 256, at least max_seq_len); None: max_seq_len",
        optional(checks.in_range(256, 16_777_216)),
    )
    cache_mode: str = setting(
        "8,8",
        "K/V cache precision: FP16, Q8, Q6, Q4 or exllamav3's 'k,v' bits (2-8) like '8,8'",
        cache_mode,
    )
    tool_format: str = setting(
        "auto",
        "tabbyAPI's tool-call parser for the model's family (e.g. qwen3_coder), so agent mode "
        "gets tool calls; 'auto': recognised from the model's name (Qwen3-Coder), '' for none. "
        "The Continue config offers tools only when it is set",
        checks.one_of("auto", "", *TOOL_FORMATS),
    )
    draft_mode: str = setting(
        "model",
        "speculative decoding: model (with draft_model_repo/name), mtp, ngram or disabled",
        checks.one_of("model", "disabled", "mtp", "ngram"),
    )
    draft_model_repo: str | None = setting(
        None,
        "Hugging Face repo of a small EXL3 draft model (same tokenizer); None: no draft model",
        optional(hf_repo),
    )
    draft_model_revision: str = setting(
        "main",
        "branch, tag or commit of draft_model_repo",
        checks.git_ref,
    )
    draft_model_name: str = setting(
        "",
        "folder under model_dir of the draft model; empty: derived from draft_model_repo",
        folder_name,
    )
    draft_cache_mode: str = setting(
        "FP16",
        "K/V cache precision of the draft model: FP16, Q8, Q6 or Q4",
        checks.one_of(*CACHE_NAMES),
    )
    gpu_split_auto: bool = setting(
        True, "spread the model over all GPUs automatically (ignored with one GPU)"
    )
    gpu_split: list[float] = setting(
        [],
        "GB of VRAM to use on each GPU, in order (with gpu_split_auto False or tensor_parallel)",
    )
    autosplit_reserve: list[float] = setting(
        [96], "MB of VRAM kept free on each GPU by the automatic split"
    )
    tensor_parallel: bool = setting(False, "tensor parallelism across several GPUs")
    tensor_parallel_backend: str = setting(
        "native",
        "tensor parallel transport: native (PCIe) or nccl (NVLink)",
        checks.one_of("native", "nccl"),
    )
    draft_gpu_split: list[float] = setting(
        [], "GB of VRAM per GPU for the draft model; empty: automatic"
    )
    config_overrides: dict[str, dict] = setting(
        {},
        "further config.yml options by section, e.g. {'model': {'chunk_size': 1024}} (see "
        "upstream's config_sample.yml); network.disable_auth is refused",
    )
    start_timeout: int = start_timeout_setting(900, "loading a large model takes time")
    hf_token_required: bool = setting(
        False,
        "the model repos are gated or private: fail early unless the secret hf_token is set",
    )

    @property
    def release(self) -> str:
        """Name of the release folder of this ref and these extras ('base': none)."""
        return f"{self.git_ref.replace('/', '_')}+{'-'.join(sorted(self.pip_extras)) or 'base'}"

    @property
    def release_dir(self) -> str:
        return f"{self.install_dir}/releases/{self.release}"

    @property
    def src(self) -> str:
        """The wanted release's checkout."""
        return f"{self.release_dir}/src"

    @property
    def venv(self) -> str:
        """The wanted release's virtualenv."""
        return f"{self.release_dir}/venv"

    @property
    def current(self) -> str:
        """The link to the release the service runs (switched only once a new one answers)."""
        return f"{self.install_dir}/current"

    @property
    def lock(self) -> str:
        """pip freeze of the release's first install that answered /health, reused as pip
        constraints when the release is installed again."""
        return f"{self.install_dir}/locks/{self.release}.txt"

    @property
    def model(self) -> str:
        """The model folder loaded at start ('' for none)."""
        if self.model_name or not self.model_repo:
            return self.model_name
        return model_folder(self.model_repo, self.model_revision)

    @property
    def tool_calls(self) -> str:
        """The tool format config.yml names ('' for none): 'auto' resolved by the model's name."""
        if self.tool_format != "auto":
            return self.tool_format
        names = f"{self.model_repo or ''} {self.model}"
        return next((fmt for family, fmt in FAMILY_TOOL_FORMATS if family.search(names)), "")

    @property
    def draft_model(self) -> str:
        if self.draft_model_name or not self.draft_model_repo:
            return self.draft_model_name
        return model_folder(self.draft_model_repo, self.draft_model_revision)

    def downloads(self) -> list[tuple[str, str, str]]:
        """(repo, revision, folder) of every model to download."""
        wanted = [
            (self.model_repo, self.model_revision, self.model),
            (self.draft_model_repo, self.draft_model_revision, self.draft_model),
        ]
        return [(repo, rev, folder) for repo, rev, folder in wanted if repo]

    @override
    def check(self) -> list[tuple[str, str]]:
        problems = []
        key = self.key
        if self.model and not re.fullmatch(FOLDER, self.model):
            problems.append(
                (key("model_name"), f"derived folder {self.model!r} is unusable; set it")
            )
        if self.draft_model_name and not self.draft_model_repo and self.draft_mode == "model":
            problems.append(
                (
                    key("draft_model_name"),
                    f"names folder {self.draft_model_name!r} but no tabbyapi_draft_model_repo "
                    "downloads it; set the repo (or clear the name)",
                )
            )
        if "cu12" in self.pip_extras and "cu13" in self.pip_extras:
            problems.append((key("pip_extras"), "choose one of cu12 and cu13, not both"))
        elif not {"cu12", "cu13"} & set(self.pip_extras) and not self.lab_unsafe_launch:
            problems.append(
                (
                    key("pip_extras"),
                    "add cu12 (or cu13): without it exllamav3 and torch are not installed and "
                    "tabbyAPI refuses to start",
                )
            )
        if self.max_seq_len == 0:
            problems.append((key("max_seq_len"), "0 is no context; use -1, None or a length"))
        if self.cache_size is not None:
            if self.cache_size % 256:
                problems.append((key("cache_size"), f"{self.cache_size} is not a multiple of 256"))
            elif self.max_seq_len and self.max_seq_len > 0 and self.cache_size < self.max_seq_len:
                problems.append(
                    (
                        key("cache_size"),
                        f"{self.cache_size} is less than max_seq_len {self.max_seq_len}; "
                        "raise it or leave it None",
                    )
                )
        problems += self._gpu_problems()
        problems += self._override_problems()
        if self.hf_token_required and not secrets.get("hf_token"):
            problems.append(
                (
                    key("hf_token_required"),
                    "the secret hf_token is missing: export AICODER_HF_TOKEN=hf_... or add "
                    f"'hf_token: hf_...' to {secrets.secrets_file()} (mode 0600)",
                )
            )
        return problems

    def _gpu_problems(self) -> list[tuple[str, str]]:
        key = self.key
        problems = []
        for name in ("gpu_split", "draft_gpu_split"):
            if any(v <= 0 for v in getattr(self, name)):
                problems.append((key(name), "every GPU's share must be more than 0 GB"))
        if any(v < 0 for v in self.autosplit_reserve):
            problems.append((key("autosplit_reserve"), "a reserve cannot be negative"))
        if self.gpu_split and self.gpu_split_auto and not self.tensor_parallel:
            problems.append(
                (
                    key("gpu_split"),
                    "is ignored while tabbyapi_gpu_split_auto is True; set that to False to use "
                    "this split (or empty the split)",
                )
            )
        if self.tensor_parallel and len(self.gpu_split) == 1:
            problems.append(
                (
                    key("gpu_split"),
                    "tensor parallelism needs several GPUs: give one share per GPU, or leave "
                    "the split empty for an automatic one",
                )
            )
        if self.tensor_parallel_backend == "nccl" and not self.tensor_parallel:
            problems.append(
                (key("tensor_parallel_backend"), "nccl is used only with tensor_parallel True")
            )
        return problems

    def _override_problems(self) -> list[tuple[str, str]]:
        problems = []
        for section, values in self.config_overrides.items():
            if section not in CONFIG_SECTIONS:
                problems.append(
                    (
                        self.key("config_overrides"),
                        f"unknown config.yml section {section!r}; use one of "
                        f"{', '.join(CONFIG_SECTIONS)}",
                    )
                )
            elif section == "network" and "disable_auth" in values:
                problems.append(
                    (
                        self.key("config_overrides"),
                        "network.disable_auth is refused: the API always requires its key "
                        "(the client config gets it from the secrets)",
                    )
                )
            for option in values if section in CONFIG_SECTIONS else ():
                owner = OWNED_OPTIONS.get((section, option))
                wrong = option_value(section, option, values[option])
                if wrong:
                    problems.append((self.key("config_overrides"), wrong))
                if owner:
                    problems.append(
                        (
                            self.key("config_overrides"),
                            f"{section}.{option} has its own setting: set {self.key(owner)} "
                            "instead (it is checked there)",
                        )
                    )
        return problems
