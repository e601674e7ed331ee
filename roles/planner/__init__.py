"""The model planner: which backend and quant serve the wanted models on the guest's GPU.

With ``planner_chat_model`` set, the plan fills the tabbyapi_ and ollama_ model settings the user
did not set (a setting given in group_data or the inventory always wins), and its table is
printed before the deploy runs. Without it, nothing is planned. ``python -m roles.planner``
prints a plan for any card without touching a host.
"""

from __future__ import annotations

import re
from typing import Any

from pyinfra import logger

from roles.common.memo import host_memo
from roles.common.settings import SettingsError
from roles.ollama.settings import OllamaSettings
from roles.planner.catalogue import CATALOGUE, DRAFT, EMBED
from roles.planner.facts import GpuMemory
from roles.planner.plan import DRAFT_BPW, OLLAMA, TABBYAPI, Draft, Placement, Plan, PlanError, plan
from roles.planner.settings import PlannerSettings
from roles.tabbyapi.settings import TabbyapiSettings

__all__ = ["Plan", "PlanError", "PlannerSettings", "apply_plan", "plan_for_host", "planned_data"]


def plan_for_host(host) -> Plan | None:
    """The plan for an ai_guests host (cached on it), None when no chat model is set, or a
    SettingsError naming the planner setting to change."""
    memo = host_memo(host, "model_plan")
    if "plan" in memo:
        return memo["plan"]
    settings = PlannerSettings.from_host(host)
    result = None
    if settings.chat_model:
        # The cache settings the user gave (or the roles' defaults) size the KV caches.
        data = host.data.dict()
        tabby = _settings(host, TabbyapiSettings, data)
        ollama = _settings(host, OllamaSettings, data)
        gpus = [settings.vram_gib] if settings.vram_gib else _gpus_from_nvidia_smi(host)
        # tabbyAPI's automatic split (and Ollama) spread a model over every GPU; with a manual
        # split and no shares given, tabbyAPI loads onto the first GPU only.
        if not (tabby.gpu_split_auto or tabby.tensor_parallel or tabby.gpu_split):
            gpus = gpus[:1]
        vram = sum(gpus)
        draft = _draft(host.name, settings, tabby)
        try:
            result = plan(
                vram,
                settings.chat_model,
                autocomplete=settings.autocomplete_model or None,
                embed=settings.embed_model or None,
                chat_context=settings.chat_context,
                autocomplete_context=settings.autocomplete_context,
                tabbyapi_kv_bits=_tabbyapi_kv_bits(tabby.cache_mode),
                ollama_kv_bits=_ollama_kv_bits(ollama),
                ollama_parallel=ollama.num_parallel,
                ram_offload_gib=settings.ram_offload_gib,
                reserve_gib=settings.reserve_gib * len(gpus),  # each GPU keeps its own
                backends=tuple(
                    b for b, on in [(TABBYAPI, tabby.enabled), (OLLAMA, ollama.enabled)] if on
                ),
                draft=draft,
            )
        except PlanError as error:
            problem = (PlannerSettings.key("chat_model"), str(error))
            raise SettingsError(host.name, [problem]) from None
    memo["plan"] = result
    return result


def planned_data(host) -> dict[str, Any]:
    """The tabbyapi_/ollama_ settings the plan chooses that the host's data does not pin."""
    result = plan_for_host(host)
    if result is None:
        return {}
    given = host.data.dict()
    wanted = _tabbyapi_data(host.name, result.tabbyapi, given) | _ollama_data(result)
    return {key: value for key, value in wanted.items() if key not in given}


def apply_plan(host) -> None:
    """Fill the host's unpinned model settings from the plan and print the plan's table. Call
    it before the settings are validated, so the planned values are validated too."""
    data = planned_data(host)
    for key, value in data.items():
        setattr(host.data, key, value)
    result = plan_for_host(host)
    if result is not None:
        logger.info(
            f"{host.name}: model plan for {result.vram_gib:.1f} GiB of VRAM\n{result.table()}"
        )


def _gpus_from_nvidia_smi(host) -> list[float]:
    """Each GPU's memory in GiB, as nvidia-smi on the guest reports it."""
    gpus = host.get_fact(GpuMemory)
    if not gpus:
        raise SettingsError(
            host.name,
            [
                (
                    PlannerSettings.key("vram_gib"),
                    "the GPU's memory is unknown: nvidia-smi is not on the guest yet (no driver "
                    "before the first deploy); set planner_vram_gib (e.g. 24 for a 24 GB card)",
                )
            ],
        )
    return [gpu["total_mib"] / 1024 for gpu in gpus]


def _draft(name: str, settings: PlannerSettings, tabby: TabbyapiSettings) -> Draft | None:
    """The draft model tabbyAPI loads for speculative decoding, sized from its catalogue entry
    (planner_draft_model) and the bits its branch names; a SettingsError when the two settings
    disagree, since the planner cannot size a draft model it does not know."""
    loads = tabby.enabled and tabby.draft_mode == "model" and bool(tabby.draft_model)
    key = PlannerSettings.key("draft_model")
    if loads and not settings.draft_model:
        known = ", ".join(k for k, m in sorted(CATALOGUE.items()) if DRAFT in m.uses)
        what = (
            f"tabbyAPI loads the draft model {tabby.draft_model!r} beside its model (speculative "
            f"decoding): name it here so its VRAM is planned ({known}), or set "
            "tabbyapi_draft_mode to 'disabled'"
        )
        raise SettingsError(name, [(key, what)])
    if settings.draft_model and not loads:
        what = (
            f"{settings.draft_model} is planned as tabbyAPI's draft model, but tabbyAPI loads "
            "none: set tabbyapi_draft_model_repo (and its revision) with tabbyapi_draft_mode "
            "'model', or empty this setting"
        )
        raise SettingsError(name, [(key, what)])
    if not loads:
        return None
    # EXL3 branches and folders name their size, e.g. "4.0bpw_H6"; else assume the largest.
    sized = re.search(r"(\d+(?:\.\d+)?)bpw", f"{tabby.draft_model_revision} {tabby.draft_model}")
    bits = float(sized.group(1)) if sized else DRAFT_BPW
    return Draft(CATALOGUE[settings.draft_model], bits, _tabbyapi_kv_bits(tabby.draft_cache_mode))


def _settings(host, cls, data):
    settings, problems = cls.problems_in(data)
    if problems:
        raise SettingsError(host.name, problems)
    return settings


def _ollama_kv_bits(ollama: OllamaSettings) -> float:
    """Bits per cache element: q8_0 and q4_0 store 32 values with one 16-bit scale; without
    flash attention Ollama falls back to f16."""
    if not ollama.flash_attention:
        return 16
    return {"f16": 16, "q8_0": 8.5, "q4_0": 4.5}[ollama.kv_cache_type]


def _tabbyapi_kv_bits(cache_mode: str) -> int:
    """Bits per cache element of a tabbyAPI cache mode: FP16, Q8/Q6/Q4 or exllamav3's 'k,v'."""
    names = {"FP16": 16, "Q8": 8, "Q6": 6, "Q4": 4}
    if cache_mode in names:
        return names[cache_mode]
    k, v = (int(x) for x in cache_mode.split(","))
    return max(k, v)


def _tabbyapi_data(name: str, placement: Placement | None, given: dict) -> dict[str, Any]:
    if placement is None or placement.backend != TABBYAPI:
        return {"tabbyapi_enabled": False}
    model = placement.model
    data: dict[str, Any] = {
        "tabbyapi_enabled": True,
        "tabbyapi_max_seq_len": placement.context,
        "tabbyapi_tool_format": model.tool_format or "",  # '': tabbyAPI has no parser for it
    }
    if model.exl3_repo:
        data["tabbyapi_model_repo"] = model.exl3_repo
        data["tabbyapi_model_revision"] = placement.exl3_revision
        return data
    # No EXL3 repo of this model is known here: the user names one (and its branch).
    keys = ("tabbyapi_model_repo", "tabbyapi_model_revision")
    missing = [key for key in keys if key not in given]
    if missing:
        what = (
            f"the plan serves {model.key} on tabbyAPI as {placement.quant_label}, but no EXL3 "
            f"repo of it is known: set {' and '.join(missing)} (a repo with a branch of about "
            f"{placement.bits:.1f} bits per weight), or pin the model settings yourself"
        )
        raise SettingsError(name, [(key, what) for key in missing])
    return data


def _ollama_data(result: Plan) -> dict[str, Any]:
    placements = result.ollama
    if not placements:
        return {"ollama_enabled": False}
    data = {"ollama_enabled": True, "ollama_models": [p.ollama_tag for p in placements]}
    contexts = [p.context for p in placements if EMBED not in p.roles]
    if contexts:
        data["ollama_context_length"] = max(contexts)
    return data
