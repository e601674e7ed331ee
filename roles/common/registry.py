"""The service registry: what each model server publishes, for the roles that serve its clients.

A serving role (tabbyAPI, Ollama, ...) describes itself once, in its own ``service.py``, as a
module-level ``SERVICE = Service(...)``, and is listed in :data:`SERVICE_MODULES`. The firewall
(its open ports), the client (the Continue config), the port-clash checks, the planner and the
infra checks iterate over :func:`services` / :func:`endpoints` and never import a serving role
by name. The table is loaded with importlib on first use, so import order does not matter.

Where a service listens (its ``upstream``) may differ from where clients reach it: a front
door such as a TLS proxy, listed in :data:`FRONT_MODULES`, rewrites each endpoint into the
public one (scheme, port, listen address, auth) and keeps the service's own in ``upstream``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from roles.common.settings import RoleSettings

SERVICE_MODULES: tuple[str, ...] = (
    "roles.tabbyapi.service",
    "roles.ollama.service",
    "roles.vllm.service",
)
"""Modules defining ``SERVICE``, in the order clients list them (Continue: the earlier first)."""

FRONT_MODULES: tuple[str, ...] = ("roles.proxy.front",)
"""Modules defining ``front(endpoint, settings_of) -> Endpoint``: a proxy in front of the
services (e.g. TLS) returning the public endpoint, with ``upstream`` set to the one it got."""

SettingsOf = Callable[[type[RoleSettings]], Any]
"""A host's validated settings of a role class (``cls.from_host(host)``, say)."""


@dataclass(frozen=True)
class Endpoint:
    """One API a service offers, as its settings configure it."""

    service: str  # the registered name, e.g. "tabbyapi"
    label: str  # for people: "tabbyAPI"
    port: int
    port_key: str  # the setting holding the port, for error messages: "tabbyapi_port"
    listen: str  # the listen address setting's value: 'auto', an IP, 0.0.0.0 or ::
    listen_key: str  # its setting: "tabbyapi_host"
    scheme: str = "http"
    auth: str = "none"  # "bearer" (Authorization: Bearer <key>) or "none"
    key_secret: str = ""  # with bearer: the name of the key clients send in roles.common.secrets
    api_path: str = "/v1"  # the OpenAI-compatible API under the base URL
    health_path: str = "/health"  # answers 2xx once the service is up
    provider: str = "openai"  # Continue's provider for this API
    provider_path: str = "/v1"  # the path Continue's provider wants in apiBase
    public_host: str = ""  # a front's host name clients must use (a TLS certificate's); '' none
    upstream: Endpoint | None = None  # behind a front: the service's own endpoint

    @property
    def own(self) -> Endpoint:
        """Where the service itself listens (itself unless a front stands before it)."""
        return self.upstream.own if self.upstream else self

    def base_url(self, host: str, path: str | None = None) -> str:
        """``scheme://host:port`` plus ``path`` (default: the provider's), IPv6 in brackets."""
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}{self.provider_path if path is None else path}"


@dataclass(frozen=True)
class Model:
    """A model a service serves, with the Continue roles it has unless the client overrides."""

    id: str  # what the API answers to (tabbyAPI: the model folder; Ollama: the tag)
    roles: tuple[str, ...]  # chat, edit, apply, autocomplete, embed, ...
    context: int | None = None  # tokens kept per request, when known
    tools: bool = False  # the server turns the model's tool calls into OpenAI tool_calls


def _no_models(settings: Any, plan: Any) -> list[Model]:
    return []


def _no_plan_inputs(settings: Any, planner: Any, host_name: str) -> dict[str, Any]:
    return {}


def _no_planned_data(plan: Any, given: dict, host_name: str) -> dict[str, Any]:
    return {}


def _all_gpus(settings: Any, gpus: list[float]) -> list[float]:
    return gpus


@dataclass(frozen=True)
class Service:
    """A serving role's entry. Every callable gets the role's validated settings object."""

    name: str  # the settings prefix, e.g. "tabbyapi"
    settings: type[RoleSettings]  # its GROUPS say which hosts run it; ``enabled`` turns it off
    endpoint: Callable[[Any], Endpoint]
    models: Callable[[Any, Any], list[Model]] = _no_models  # (settings, the planner's plan)
    # The planner (roles/planner): the plan's backend this service is ('' if none), the
    # keyword arguments of roles.planner.plan.plan() it sets, and the settings a plan fills.
    backend: str = ""
    plan_inputs: Callable[[Any, Any, str], dict[str, Any]] = _no_plan_inputs
    planned_data: Callable[[Any, dict, str], dict[str, Any]] = _no_planned_data
    usable_gpus: Callable[[Any, list[float]], list[float]] = _all_gpus  # GPUs one plan may use

    def enabled(self, settings: Any) -> bool:
        return bool(getattr(settings, "enabled", True))

    def runs_in(self, groups: Iterable[str]) -> bool:
        """Whether a host of ``groups`` runs this service (when enabled)."""
        return bool(set(self.settings.GROUPS) & set(groups))


@functools.cache
def services() -> tuple[Service, ...]:
    """Every registered service, in the table's order."""
    return tuple(importlib.import_module(name).SERVICE for name in SERVICE_MODULES)


@functools.cache
def _fronts() -> tuple[Callable[[Endpoint, SettingsOf], Endpoint], ...]:
    return tuple(importlib.import_module(name).front for name in FRONT_MODULES)


def service(name: str) -> Service:
    """The registered service ``name`` (a KeyError names the known ones)."""
    for entry in services():
        if entry.name == name:
            return entry
    raise KeyError(f"no service {name!r} is registered ({', '.join(s.name for s in services())})")


def service_of(cls: type[RoleSettings]) -> Service | None:
    """The service whose settings class is ``cls``, if any."""
    return next((s for s in services() if s.settings is cls), None)


def public(endpoint: Endpoint, settings_of: SettingsOf) -> Endpoint:
    """``endpoint`` as clients reach it, after every front in the table."""
    for front in _fronts():
        endpoint = front(endpoint, settings_of)
    return endpoint


def running(settings_of: SettingsOf, groups: Iterable[str]) -> list[tuple[Service, Any]]:
    """(service, its settings) of every enabled service a host of ``groups`` runs."""
    groups = tuple(groups)
    found = []
    for entry in services():
        if entry.runs_in(groups):
            settings = settings_of(entry.settings)
            if entry.enabled(settings):
                found.append((entry, settings))
    return found


def endpoints(settings_of: SettingsOf, groups: Iterable[str]) -> list[Endpoint]:
    """The public endpoints of the enabled services a host of ``groups`` runs."""
    return [
        public(s.endpoint(settings), settings_of) for s, settings in running(settings_of, groups)
    ]


def fronted(own: Endpoint, **changes: Any) -> Endpoint:
    """A front's helper: ``own`` with ``changes`` (scheme, port, listen, auth...), remembering
    ``own`` as its upstream."""
    return dataclasses.replace(own, upstream=own, **changes)
