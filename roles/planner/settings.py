"""Settings of the model planner (AI guest): which models to serve on how much VRAM."""

from __future__ import annotations

from dataclasses import dataclass

from roles.common import checks
from roles.common.settings import RoleSettings, setting
from roles.planner.catalogue import AUTOCOMPLETE, CATALOGUE, CHAT, DRAFT, EMBED, SMALL_FIM
from roles.planner.plan import RESERVE_GIB


def _model_for(use: str):
    def check(value: str) -> str | None:
        if not value:
            return None
        model = CATALOGUE.get(value)
        if model is None:
            known = ", ".join(k for k, m in sorted(CATALOGUE.items()) if use in m.uses)
            return f"{value!r} is not in the planner's catalogue; for {use}: {known}"
        if use not in model.uses:
            return f"{value!r} is not made for {use} (it is for {', '.join(model.uses)})"
        return None

    return check


@dataclass(frozen=True)
class PlannerSettings(RoleSettings):
    PREFIX = "planner"
    GROUPS = ("ai_guests",)

    chat_model: str = setting(
        "",
        "chat model to plan for (`python -m roles.planner --list`); empty: no planning, the "
        "tabbyapi_/ollama_ model settings are used as given",
        _model_for(CHAT),
    )
    autocomplete_model: str = setting(
        "",
        f"autocomplete (FIM) model; empty: {SMALL_FIM} on Ollama when it fits without costing "
        "the chat model a quant, else the chat model (name the chat model to always use it)",
        _model_for(AUTOCOMPLETE),
    )
    embed_model: str = setting(
        "nomic-embed-text", "embedding model, served by Ollama; empty: none", _model_for(EMBED)
    )
    vram_gib: float = setting(
        0.0,
        "GPU memory in GiB (several GPUs: their sum); 0: read every GPU's from nvidia-smi on "
        "the guest (once the driver is there)",
        checks.in_range(0, 1024),
    )
    chat_context: int = setting(
        16384, "context (tokens) planned for the chat model", checks.in_range(1024, 1048576)
    )
    autocomplete_context: int = setting(
        4096,
        "context planned for a separate autocomplete model",
        checks.in_range(512, 1048576),
    )
    ram_offload_gib: float = setting(
        16.0,
        "GiB of a chat model too big for the card that Ollama may keep in system RAM (0: none)",
        checks.in_range(0, 4096),
    )
    reserve_gib: float = setting(
        RESERVE_GIB,
        "VRAM kept free on each GPU (driver, fragmentation, other processes); each process's "
        "own CUDA overhead is planned on top",
        checks.in_range(0, 64),
    )
    draft_model: str = setting(
        "",
        "catalogue name of the draft model tabbyAPI loads (tabbyapi_draft_model_repo), so its "
        "VRAM is planned; required while tabbyAPI loads one",
        _model_for(DRAFT),
    )
