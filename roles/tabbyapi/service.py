"""tabbyAPI's entry in the service registry (roles/common/registry.py): its endpoint, the model it
serves to Continue, and what it tells the planner."""

from __future__ import annotations

import re
from typing import Any

from roles.common.registry import Endpoint, Model, Service
from roles.common.settings import SettingsError
from roles.planner.catalogue import CATALOGUE, DRAFT
from roles.planner.plan import DRAFT_BPW, TABBYAPI, Draft, Placement, Plan
from roles.planner.settings import PlannerSettings
from roles.tabbyapi.settings import API_KEY_SECRET, TabbyapiSettings

# What the model does in Continue when the planner did not say: tabbyAPI's one model does
# everything but embeddings (the brief of this project).
ROLES = ("chat", "edit", "apply", "autocomplete")


def endpoint(settings: TabbyapiSettings) -> Endpoint:
    return Endpoint(
        service="tabbyapi",
        label="tabbyAPI",
        port=settings.port,
        port_key=settings.key("port"),
        listen=settings.host,
        listen_key=settings.key("host"),
        auth="bearer",  # always on: network.disable_auth is refused
        key_secret=API_KEY_SECRET,
        api_path="/v1",
        health_path="/health",
        provider="openai",
        provider_path="/v1",
    )


def models(settings: TabbyapiSettings, plan: Plan | None) -> list[Model]:
    """The one model loaded at start, with the planner's roles (else all but embeddings)."""
    if not settings.model:
        return []
    roles = plan.tabbyapi.roles if plan and plan.tabbyapi else ROLES
    context = settings.max_seq_len if settings.max_seq_len and settings.max_seq_len > 0 else None
    return [Model(settings.model, tuple(roles), context, bool(settings.tool_calls))]


def kv_bits(cache_mode: str) -> int:
    """Bits per cache element of a tabbyAPI cache mode: FP16, Q8/Q6/Q4 or exllamav3's 'k,v'."""
    names = {"FP16": 16, "Q8": 8, "Q6": 6, "Q4": 4}
    if cache_mode in names:
        return names[cache_mode]
    k, v = (int(x) for x in cache_mode.split(","))
    return max(k, v)


def usable_gpus(settings: TabbyapiSettings, gpus: list[float]) -> list[float]:
    """tabbyAPI's automatic split (and Ollama) spread a model over every GPU; with a manual
    split and no shares given, tabbyAPI loads onto the first GPU only."""
    if not (settings.gpu_split_auto or settings.tensor_parallel or settings.gpu_split):
        return gpus[:1]
    return gpus


def plan_inputs(settings: TabbyapiSettings, planner: PlannerSettings, name: str) -> dict:
    return {
        "tabbyapi_kv_bits": kv_bits(settings.cache_mode),
        "draft": _draft(name, planner, settings),
    }


def _draft(name: str, planner: PlannerSettings, tabby: TabbyapiSettings) -> Draft | None:
    """The draft model tabbyAPI loads for speculative decoding, sized from its catalogue entry
    (planner_draft_model) and the bits its branch names; a SettingsError when the two settings
    disagree, since the planner cannot size a draft model it does not know."""
    loads = tabby.enabled and tabby.draft_mode == "model" and bool(tabby.draft_model)
    key = PlannerSettings.key("draft_model")
    if loads and not planner.draft_model:
        known = ", ".join(k for k, m in sorted(CATALOGUE.items()) if DRAFT in m.uses)
        what = (
            f"tabbyAPI loads the draft model {tabby.draft_model!r} beside its model (speculative "
            f"decoding): name it here so its VRAM is planned ({known}), or set "
            "tabbyapi_draft_mode to 'disabled'"
        )
        raise SettingsError(name, [(key, what)])
    if planner.draft_model and not loads:
        what = (
            f"{planner.draft_model} is planned as tabbyAPI's draft model, but tabbyAPI loads "
            "none: set tabbyapi_draft_model_repo (and its revision) with tabbyapi_draft_mode "
            "'model', or empty this setting"
        )
        raise SettingsError(name, [(key, what)])
    if not loads:
        return None
    # EXL3 branches and folders name their size, e.g. "4.0bpw_H6"; else assume the largest.
    sized = re.search(r"(\d+(?:\.\d+)?)bpw", f"{tabby.draft_model_revision} {tabby.draft_model}")
    bits = float(sized.group(1)) if sized else DRAFT_BPW
    return Draft(CATALOGUE[planner.draft_model], bits, kv_bits(tabby.draft_cache_mode))


def planned_data(plan: Plan, given: dict, name: str) -> dict[str, Any]:
    """The tabbyapi_ settings the plan chooses (the caller drops those the user set)."""
    placement: Placement | None = plan.tabbyapi
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


SERVICE = Service(
    name="tabbyapi",
    settings=TabbyapiSettings,
    endpoint=endpoint,
    models=models,
    backend=TABBYAPI,
    plan_inputs=plan_inputs,
    planned_data=planned_data,
    usable_gpus=usable_gpus,
)
