"""What an ai_guests host serves, read from its settings (as the planner filled them), and the
address the editor reaches it at: the input of the Continue config."""

from __future__ import annotations

import ipaddress

from pyinfra.api.exceptions import DeployError

from roles import planner
from roles.client.render import OLLAMA, TABBYAPI, Deployment, Served
from roles.client.settings import ClientSettings
from roles.common.checks import WILDCARD_ADDRESSES
from roles.common.services import host_address
from roles.common.settings import SettingsError
from roles.firewall.settings import FirewallSettings
from roles.ollama.settings import OllamaSettings
from roles.planner.catalogue import CATALOGUE, EMBED
from roles.tabbyapi.settings import TabbyapiSettings

# What a model does in Continue when the planner did not say: tabbyAPI's one model does
# everything but embeddings (the brief of this project); Ollama models by their catalogue entry.
TABBYAPI_ROLES = ("chat", "edit", "apply", "autocomplete")


def choose_guest(inventory, settings: ClientSettings):
    """The ai_guests host the editor uses: client_guest, or the only one."""
    guests = list(inventory.get_group("ai_guests", []))
    names = [g.name for g in guests]
    if settings.guest:
        for guest in guests:
            if guest.name == settings.guest:
                return guest
        raise DeployError(
            f"client_guest {settings.guest!r} is not in the ai_guests group; set it to one of "
            f"{', '.join(names) or '(none: add the guest to ai_guests in inventory.py)'}"
        )
    if len(guests) != 1:
        found = ", ".join(names) or "none"
        raise DeployError(
            f"the Continue config points at one AI guest; the inventory has {found}: set "
            "client_guest to the inventory name of the one the editor should use"
        )
    return guests[0]


def guest_settings(guest, cls):
    """``cls`` settings of ``guest``, with the model settings the planner fills."""
    data = {**guest.data.dict(), **planner.planned_data(guest)}
    settings, problems = cls.problems_in(data)
    if problems:
        raise SettingsError(guest.name, problems)
    return settings


def deployment(guest, settings: ClientSettings) -> Deployment:
    """The models ``guest`` serves and their URLs as the editor on this machine sees them."""
    tabby = guest_settings(guest, TabbyapiSettings)
    ollama = guest_settings(guest, OllamaSettings)
    plan = planner.plan_for_host(guest)
    models = []
    if tabby.enabled and tabby.model:
        roles = plan.tabbyapi.roles if plan and plan.tabbyapi else TABBYAPI_ROLES
        roles = tuple(settings.model_roles.get(tabby.model, roles))
        context = tabby.max_seq_len if tabby.max_seq_len and tabby.max_seq_len > 0 else None
        if roles:
            tools = bool(tabby.tool_calls)
            models.append(Served(TABBYAPI, tabby.model, tuple(roles), context, tools))
    if ollama.enabled:
        planned = {p.ollama_tag: p for p in plan.ollama} if plan else {}
        for name in ollama.models:
            placement = planned.get(name)
            roles = placement.roles if placement else _catalogue_roles(name)
            roles = tuple(settings.model_roles.get(name, roles))
            if roles:
                context = placement.context if placement and EMBED not in roles else None
                tools = _ollama_tools(name)
                models.append(Served(OLLAMA, name, tuple(roles), context, tools))
    tabby_host = _address(guest, settings, tabby.host, TabbyapiSettings.key("host"))
    ollama_host = _address(guest, settings, ollama.bind_address, OllamaSettings.key("bind_address"))
    return Deployment(
        guest=guest.name,
        tabbyapi_base=f"http://{_url_host(tabby_host)}:{tabby.port}/v1",
        ollama_base=f"http://{_url_host(ollama_host)}:{ollama.port}",
        models=tuple(models),
    )


def _catalogue_roles(name: str) -> tuple[str, ...]:
    """Continue roles of an Ollama model the planner did not place: embeddings only, by the
    catalogue; other models get theirs from the planner or client_model_roles."""
    base = name.split(":")[0]
    for model in CATALOGUE.values():
        if model.ollama.split(":")[0] == base and EMBED in model.uses:
            return (EMBED,)
    return ()


def _ollama_tools(name: str) -> bool:
    """Ollama's library template of the model ``name`` handles tools (by its catalogue entry;
    an unknown model: no)."""
    return any(
        name == m.ollama or name.startswith(f"{m.ollama}-")
        for m in CATALOGUE.values()
        if m.ollama_tools
    )


def _address(guest, settings: ClientSettings, listen: str, key: str) -> str:
    """Where this machine reaches a service of ``guest`` that listens on ``listen``."""
    if settings.api_host:
        return settings.api_host
    fallback = guest.data.get("ssh_hostname") or guest.name
    if listen in WILDCARD_ADDRESSES:
        return fallback
    if listen == "auto":
        if guest_settings(guest, FirewallSettings).enabled:
            return fallback  # 'auto' binds every address behind the firewall (listen_address)
        # The one address the service listens on; the SSH address if the guest is not
        # connected in this run.
        return (guest.connected and host_address(guest).address) or fallback
    if ipaddress.ip_address(listen).is_loopback:
        raise DeployError(
            f"{guest.name}: {key} is {listen}, which the editor on this machine cannot reach; "
            "listen on the LAN ('auto') or set client_api_host to the address of a tunnel"
        )
    return listen


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
