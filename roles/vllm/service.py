"""vLLM's entry in the service registry (roles/common/registry.py): its endpoint, the model it
serves to Continue, and what it tells the planner. The firewall, the client config, the port
checks, the planner and the infra checks pick it up from here."""

from __future__ import annotations

import math
from typing import Any

from roles.common.registry import Endpoint, Model, Service
from roles.common.settings import SettingsError
from roles.planner.plan import VLLM, Plan
from roles.planner.settings import PlannerSettings
from roles.vllm.settings import API_KEY_SECRET, VllmSettings

# What its model does in Continue when the planner did not say: vLLM is the second chat backend.
ROLES = ("chat", "edit", "apply")


def endpoint(settings: VllmSettings) -> Endpoint:
    """Its OpenAI-compatible API: /v1 needs `Authorization: Bearer <key>` (VLLM_API_KEY is
    always set); /health answers without it."""
    port, host = settings.port, settings.host
    return Endpoint("vllm", "vLLM", port, settings.key("port"), host, settings.key("host"),
                    auth="bearer", key_secret=API_KEY_SECRET)  # fmt: skip


def models(settings: VllmSettings, plan: Plan | None) -> list[Model]:
    """The one model it serves, under its served name, with tools when a parser is set."""
    roles = plan.vllm.roles if plan and plan.vllm else ROLES
    tools = bool(settings.tool_parser)
    return [Model(settings.served_name, tuple(roles), settings.max_model_len, tools)]


def usable_gpus(settings: VllmSettings, gpus: list[float]) -> list[float]:
    """vLLM spreads its model over vllm_tensor_parallel_size GPUs (when it runs)."""
    return gpus[: settings.tensor_parallel_size] if settings.enabled else gpus


def plan_inputs(settings: VllmSettings, planner: PlannerSettings, name: str) -> dict:
    """Its K/V cache is in the model's precision unless kv-cache-dtype says fp8."""
    fp8 = str(settings.extra_options.get("kv-cache-dtype", "")).startswith("fp8")
    return {"vllm_kv_bits": 8 if fp8 else 16}


def planned_data(plan: Plan, given: dict, name: str) -> dict[str, Any]:
    """The vllm_ settings of the plan's vLLM placement: its repo at the known commit, context
    and the share of the card it takes. An enabled vLLM the plan gives no model is refused:
    it would load its default model into memory the plan gave the others."""
    placement = plan.vllm
    if placement is None:
        if given.get("vllm_enabled"):
            what = (
                "vllm_enabled is True but the plan serves no model on vLLM (the models it can "
                "serve there fit better elsewhere, or it knows no AWQ/GPTQ/FP8 repo of them): "
                "set vllm_enabled False, or tabbyapi_enabled False to let vLLM serve the chat "
                "model, or set the vllm_model_* settings and plan without it"
            )
            raise SettingsError(name, [(PlannerSettings.key("chat_model"), what)])
        return {}  # off, as by default
    assert placement.vllm_source, "a vLLM placement names its repo"
    repo, revision = placement.vllm_source
    share = math.ceil(placement.vram_gib / plan.vram_gib * 100) / 100
    return {
        "vllm_enabled": True,
        "vllm_model_repo": repo,
        "vllm_model_revision": revision,
        "vllm_max_model_len": placement.context,
        "vllm_gpu_memory_utilization": min(share, 0.95),
    }


# In the order of Service's fields: name, settings, endpoint, models, then the planner's hooks.
SERVICE = Service("vllm", VllmSettings, endpoint, models,
                  VLLM, plan_inputs, planned_data, usable_gpus)  # fmt: skip
