"""vLLM's entry in the service registry (roles/common/registry.py): its endpoint and the model it
serves to Continue. The firewall, the client config, the port checks and the infra checks pick
it up from here."""

from __future__ import annotations

from roles.common.registry import Endpoint, Model, Service
from roles.planner.plan import Plan
from roles.vllm.settings import API_KEY_SECRET, VllmSettings

# What its model does in Continue when nothing else says: vLLM is the second chat backend.
ROLES = ("chat", "edit", "apply")


def endpoint(settings: VllmSettings) -> Endpoint:
    """Its OpenAI-compatible API: /v1 needs `Authorization: Bearer <key>` (VLLM_API_KEY is
    always set); /health answers without it."""
    port, host = settings.port, settings.host
    return Endpoint("vllm", "vLLM", port, settings.key("port"), host, settings.key("host"),
                    auth="bearer", key_secret=API_KEY_SECRET)  # fmt: skip


def models(settings: VllmSettings, plan: Plan | None) -> list[Model]:
    """The one model it serves, under its served name, with tools when a parser is set."""
    tools = bool(settings.tool_parser)
    return [Model(settings.served_name, ROLES, settings.max_model_len, tools)]


SERVICE = Service(name="vllm", settings=VllmSettings, endpoint=endpoint, models=models)
