"""The model planner: which backend and quant serve the wanted models on the guest's GPU.

With ``planner_chat_model`` set, the plan fills the model settings of the services it places
models on (the registry's services with a backend: tabbyapi_, ollama_) that the user did not
set (a setting given in group_data or the inventory always wins), and its table is printed
before the deploy runs. Without it, nothing is planned. ``python -m roles.planner``
prints a plan for any card without touching a host.
"""

from __future__ import annotations

from typing import Any

from pyinfra import logger

from roles.common import registry
from roles.common.memo import host_memo
from roles.common.settings import SettingsError
from roles.planner.facts import GpuMemory
from roles.planner.plan import Plan, PlanError, plan
from roles.planner.settings import PlannerSettings

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
        # The cache settings the user gave (or the roles' defaults) size the KV caches; each
        # planned service (the registry's with a backend) adds its own plan() arguments.
        data = host.data.dict()
        planned = [(s, _settings(host, s.settings, data)) for s in _planned_services()]
        gpus = [settings.vram_gib] if settings.vram_gib else _gpus_from_nvidia_smi(host)
        backends: list[str] = []
        inputs: dict[str, Any] = {}
        for service, own in planned:
            gpus = service.usable_gpus(own, gpus)
            inputs |= service.plan_inputs(own, settings, host.name)
            if service.enabled(own):
                backends.append(service.backend)
        try:
            result = plan(
                sum(gpus),
                settings.chat_model,
                autocomplete=settings.autocomplete_model or None,
                embed=settings.embed_model or None,
                chat_context=settings.chat_context,
                autocomplete_context=settings.autocomplete_context,
                ram_offload_gib=settings.ram_offload_gib,
                reserve_gib=settings.reserve_gib * len(gpus),  # each GPU keeps its own
                backends=tuple(backends),
                **inputs,
            )
        except PlanError as error:
            problem = (PlannerSettings.key("chat_model"), str(error))
            raise SettingsError(host.name, [problem]) from None
    memo["plan"] = result
    return result


def planned_data(host) -> dict[str, Any]:
    """The settings of the planned services that the plan chooses and the host's data does
    not pin."""
    result = plan_for_host(host)
    if result is None:
        return {}
    given = host.data.dict()
    wanted: dict[str, Any] = {}
    for service in _planned_services():
        wanted |= service.planned_data(result, given, host.name)
    return {key: value for key, value in wanted.items() if key not in given}


def _planned_services() -> list[registry.Service]:
    """The registered services the planner places models on (those naming a backend)."""
    return [s for s in registry.services() if s.backend]


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


def _settings(host, cls, data):
    settings, problems = cls.problems_in(data)
    if problems:
        raise SettingsError(host.name, problems)
    return settings
