"""Ollama's entry in the service registry (roles/common/registry.py): its endpoint, the models it
serves to Continue, and what it tells the planner."""

from __future__ import annotations

from typing import Any

from roles.common.registry import Endpoint, Model, Service
from roles.ollama.settings import OllamaSettings
from roles.planner.catalogue import CATALOGUE, EMBED
from roles.planner.plan import OLLAMA, Plan
from roles.planner.settings import PlannerSettings


def endpoint(settings: OllamaSettings) -> Endpoint:
    return Endpoint(
        service="ollama",
        label="Ollama",
        port=settings.port,
        port_key=settings.key("port"),
        listen=settings.bind_address,
        listen_key=settings.key("bind_address"),
        auth="none",  # Ollama has no authentication: the firewall and the listen address guard it
        api_path="/v1",
        health_path="/api/version",
        provider="ollama",  # Continue's ollama provider talks Ollama's own API at the root
        provider_path="",
    )


def models(settings: OllamaSettings, plan: Plan | None) -> list[Model]:
    """Every model pulled: planned ones with the plan's roles and context, others by their
    catalogue entry (embeddings only; other models get their roles from client_model_roles)."""
    planned = {p.ollama_tag: p for p in plan.ollama} if plan else {}
    served = []
    for name in settings.models:
        placement = planned.get(name)
        roles = placement.roles if placement else catalogue_roles(name)
        context = placement.context if placement and EMBED not in roles else None
        served.append(Model(name, tuple(roles), context, tools(name)))
    return served


def catalogue_roles(name: str) -> tuple[str, ...]:
    """Continue roles of a model the planner did not place: embeddings only, by the catalogue."""
    base = name.split(":")[0]
    for model in CATALOGUE.values():
        if model.ollama.split(":")[0] == base and EMBED in model.uses:
            return (EMBED,)
    return ()


def tools(name: str) -> bool:
    """Ollama's library template of the model ``name`` handles tools (by its catalogue entry;
    an unknown model: no)."""
    return any(
        name == m.ollama or name.startswith(f"{m.ollama}-")
        for m in CATALOGUE.values()
        if m.ollama_tools
    )


def kv_bits(settings: OllamaSettings) -> float:
    """Bits per cache element: q8_0 and q4_0 store 32 values with one 16-bit scale; without
    flash attention Ollama falls back to f16."""
    if not settings.flash_attention:
        return 16
    return {"f16": 16, "q8_0": 8.5, "q4_0": 4.5}[settings.kv_cache_type]


def plan_inputs(settings: OllamaSettings, planner: PlannerSettings, name: str) -> dict:
    return {"ollama_kv_bits": kv_bits(settings), "ollama_parallel": settings.num_parallel}


def planned_data(plan: Plan, given: dict, name: str) -> dict[str, Any]:
    """The ollama_ settings the plan chooses (the caller drops those the user set)."""
    placements = plan.ollama
    if not placements:
        return {"ollama_enabled": False}
    data = {"ollama_enabled": True, "ollama_models": [p.ollama_tag for p in placements]}
    contexts = [p.context for p in placements if EMBED not in p.roles]
    if contexts:
        data["ollama_context_length"] = max(contexts)
    return data


SERVICE = Service(
    name="ollama",
    settings=OllamaSettings,
    endpoint=endpoint,
    models=models,
    backend=OLLAMA,
    plan_inputs=plan_inputs,
    planned_data=planned_data,
)
