"""Settings of the ollama role (AI guest): image, published address, GPU, tuning, models.

The tuning variables and their values follow upstream's envconfig/config.go (ollama/ollama).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass

from typing_extensions import override

from roles.common import checks
from roles.common.platform import Release
from roles.common.ports import service_port_problems
from roles.common.settings import RoleSettings, setting
from roles.nvidia_driver.settings import NvidiaDriverSettings

# [host/][namespace/]model[:tag], each part as upstream's types/model/name.go allows it.
MODEL_NAME = (
    r"([A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}/)?([A-Za-z0-9_][A-Za-z0-9_-]{0,79}/)?"
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,79})?"
)
# name[:tag][@sha256:digest]; a tag or digest is required (pinned), "latest" is not a pin.
IMAGE = r"[a-z0-9][a-z0-9._/:-]*?(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?"
# Variables the compose file itself sets from other settings, or that would break it; the tuning
# variables a setting writes are added from the renderer itself (render.environment).
RESERVED_ENV = ("OLLAMA_HOST", "OLLAMA_MODELS")
# Forms of other upstream variables (envconfig/config.go), checked where known.
ENV_FORMS = {
    **dict.fromkeys(
        ("OLLAMA_DEBUG", "OLLAMA_NOPRUNE", "OLLAMA_SCHED_SPREAD", "OLLAMA_NOHISTORY",
         "OLLAMA_MULTIUSER_CACHE", "OLLAMA_NEW_ENGINE", "OLLAMA_INTEL_GPU"),
        (r"(?i)1|0|true|false|t|f", "true or false (1/0)"),
    ),
    **dict.fromkeys(
        ("OLLAMA_MAX_QUEUE", "OLLAMA_GPU_OVERHEAD", "OLLAMA_MAX_VRAM"),
        (r"[0-9]+", "a whole number"),
    ),
    "OLLAMA_LOAD_TIMEOUT": (r"-?\d+|-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", "a duration like 5m"),
}  # fmt: skip


OWNED_BY = {
    "OLLAMA_HOST": "ollama_bind_address / ollama_port",
    "OLLAMA_MODELS": "ollama_data_dir",
    "OLLAMA_KEEP_ALIVE": "ollama_keep_alive",
    "OLLAMA_FLASH_ATTENTION": "ollama_flash_attention",
    "OLLAMA_KV_CACHE_TYPE": "ollama_kv_cache_type",
    "OLLAMA_NUM_PARALLEL": "ollama_num_parallel",
    "OLLAMA_MAX_LOADED_MODELS": "ollama_max_loaded_models",
    "OLLAMA_CONTEXT_LENGTH": "ollama_context_length",
}
"""Which setting to use instead of a variable the deploy writes (the message's hint only)."""


def publish_address(value: str) -> str | None:
    """One address: Ollama has no authentication, so never all interfaces by hand ('auto' binds
    them only behind the firewall role's filter)."""
    if value == "auto":
        return None
    problem = checks.ip_address(value)
    if problem:
        return problem
    if ipaddress.ip_address(value).is_unspecified:
        return (
            f"{value!r} publishes Ollama on every interface, and Ollama has no authentication; "
            "use 'auto' (behind the firewall: reachable from firewall_allowed_networks only), "
            "the guest's address, or 127.0.0.1"
        )
    return None


def pinned_image(value: str) -> str | None:
    if not re.fullmatch(IMAGE, value):
        return f"{value!r} is not an image reference like ollama/ollama:0.32.15"
    name = value.split("@")[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    if "@" not in value and tag in ("", "latest"):
        return f"{value!r} is not pinned; name a release tag such as ollama/ollama:0.32.15"
    return None


def go_duration(value: str) -> str | None:
    """OLLAMA_KEEP_ALIVE: a Go duration (5m, 1h30m, -1) or a number of seconds."""
    if re.fullmatch(r"-?\d+|-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", value):
        return None
    return f"{value!r} is not a duration like 5m, 1h, 0 (unload at once) or -1 (keep loaded)"


@dataclass(frozen=True)
class OllamaSettings(RoleSettings):
    PREFIX = "ollama"
    GROUPS = ("ai_guests",)

    enabled: bool = setting(True, "run Ollama (embeddings, GGUF models) on the guest")
    image: str = setting(
        "ollama/ollama:0.32.15",
        "the Ollama image, pinned by tag or digest (a registry mirror's name works too)",
        pinned_image,
    )
    image_archive: str = setting(
        "",
        "a `docker save` archive of the image on the guest, loaded when the image is missing "
        "(air-gapped guests); empty: pull it",
        checks.optional(checks.absolute_path),
    )
    pull_image: bool = setting(
        True,
        "pull the image from its registry when it is missing and no archive is set; False "
        "without an archive leaves the stack stopped until the image exists",
    )
    project_dir: str = setting(
        "/opt/ollama", "folder of the compose project (compose.yaml)", checks.absolute_path
    )
    data_dir: str = setting(
        "/var/lib/ollama",
        "host folder holding the models (mounted at /root/.ollama); never deleted by the deploy",
        checks.absolute_path,
    )
    bind_address: str = setting(
        "auto",
        "address the API is published on: 'auto' (every IPv4 address, reachable only from "
        "firewall_allowed_networks, so a new DHCP lease changes nothing; with the firewall off: "
        "the guest's static address), one IP, or 127.0.0.1 for local clients only; never "
        "0.0.0.0 by hand (Ollama has no authentication)",
        publish_address,
    )
    port: int = setting(11434, "TCP port of Ollama's API", checks.port)
    gpu: bool = setting(True, "reserve the NVIDIA GPUs for the container (False: CPU only)")
    min_driver_branch: int = setting(
        550,
        "the oldest NVIDIA driver branch the image's CUDA runner uses: older drivers make Ollama "
        "drop the GPU and run on the CPU (v0.32.15: 550, and 570 for compute 5.0-6.2 cards; "
        "discover/cuda_compat.go); with ollama_gpu the deploy refuses an older driver",
        checks.in_range(300, 999),
    )
    gpu_device_ids: list[str] = setting(
        [],
        "GPUs to reserve, by index or UUID as nvidia-smi shows them; empty: all",
        checks.matches(r"[0-9]+|GPU-[0-9a-fA-F-]+", "a GPU index like '0' or a GPU-... UUID"),
    )
    keep_alive: str = setting(
        "5m", "OLLAMA_KEEP_ALIVE: how long an idle model stays loaded", go_duration
    )
    flash_attention: bool = setting(True, "OLLAMA_FLASH_ATTENTION (needed by a quantized cache)")
    kv_cache_type: str = setting(
        "q8_0",
        "OLLAMA_KV_CACHE_TYPE: f16, q8_0 (half the memory) or q4_0",
        checks.one_of("f16", "q8_0", "q4_0"),
    )
    num_parallel: int = setting(
        1, "OLLAMA_NUM_PARALLEL: requests one model serves at once", checks.in_range(1, 64)
    )
    max_loaded_models: int = setting(
        0,
        "OLLAMA_MAX_LOADED_MODELS: models loaded at once; 0 lets Ollama decide",
        checks.in_range(0, 64),
    )
    context_length: int = setting(
        0,
        "OLLAMA_CONTEXT_LENGTH: default context in tokens; 0 lets Ollama decide from the VRAM",
        checks.in_range(0, 4_194_304),
    )
    environment: dict[str, str] = setting(
        {},
        "more OLLAMA_* variables for the container, e.g. {'OLLAMA_MAX_QUEUE': '256'}",
    )
    models: list[str] = setting(
        ["nomic-embed-text"],
        "models pulled when /api/tags lacks them (nomic-embed-text: Continue's embeddings)",
        checks.matches(MODEL_NAME, "an Ollama model name like nomic-embed-text or qwen2.5:7b"),
    )
    start_timeout: int = setting(
        120, "seconds the deploy waits for /api/version after a start", checks.in_range(5, 3600)
    )
    pull_timeout: int = setting(7200, "seconds one model pull may take", checks.in_range(30, 86400))

    @override
    def check(self) -> list[tuple[str, str]]:
        problems = []
        problems += [(self.key("environment"), p) for p in self._environment_problems()]
        if self.kv_cache_type != "f16" and not self.flash_attention:
            problems.append(
                (
                    self.key("kv_cache_type"),
                    f"{self.kv_cache_type} needs ollama_flash_attention = True (Ollama falls back "
                    "to f16 without it)",
                )
            )
        if self.gpu_device_ids and not self.gpu:
            problems.append((self.key("gpu_device_ids"), "is set but ollama_gpu is False"))
        return problems

    def owned_environment(self) -> set[str]:
        """The variables the compose file sets from settings, read from the renderer itself."""
        from roles.ollama import render  # render imports this module

        return {*RESERVED_ENV, *render.environment(dataclasses.replace(self, environment={}))}

    def _environment_problems(self) -> list[str]:
        problems = []
        owned = self.owned_environment()
        for name, value in self.environment.items():
            if not re.fullmatch(r"OLLAMA_[A-Z0-9_]+", name):
                problems.append(f"{name!r} is not an OLLAMA_* name")
            elif name in owned:
                setting_ = OWNED_BY.get(name, "its own setting")
                problems.append(f"{name} is set by the deploy: set {setting_} instead")
            elif name in ENV_FORMS and not re.fullmatch(ENV_FORMS[name][0], value):
                problems.append(f"{name}={value!r} is not {ENV_FORMS[name][1]}")
        return problems

    @classmethod
    @override
    def problems_in(cls, data):
        """Also refuse sshd's port and other services' (all run on the guest), and a driver
        too old for the GPU runner."""
        settings, problems = super().problems_in(data)
        if settings is None or problems or not settings.enabled:
            return settings, problems
        problems += service_port_problems(cls, settings, data)
        return settings, problems


def driver_too_old(
    settings: OllamaSettings, driver: NvidiaDriverSettings, release: Release
) -> list[str]:
    """Refuse a driver branch Ollama's CUDA runner rejects: it would silently run on the CPU
    ("key: why" lines; the branch of source 'debian' is the release's, roles/validate.py)."""
    branch = driver.driver_branch(release)
    if not settings.gpu or branch >= settings.min_driver_branch:
        return []
    return [
        f"{OllamaSettings.key('gpu')}: {driver.branch_origin(release)}, but Ollama needs driver "
        f"{settings.min_driver_branch} or newer to use the GPU and otherwise runs on the CPU; "
        "use nvidia_driver_source = 'nvidia' (the default) with nvidia_driver_branch "
        f"{settings.min_driver_branch} or newer (default '580'; 570+ for compute 5.0-6.2 "
        "cards), or set ollama_gpu = False to run Ollama on the CPU"
    ]
