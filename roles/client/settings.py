"""Settings of the client role (the control machine): where the editor's Continue config goes."""

from __future__ import annotations

from dataclasses import dataclass

from roles.common import checks
from roles.common.settings import RoleSettings, setting

# autocompleteOptions keys of Continue's config.yaml schema (@continuedev/config-yaml 1.x).
AUTOCOMPLETE_OPTIONS = {
    "disable": bool,
    "maxPromptTokens": int,
    "debounceDelay": int,
    "modelTimeout": int,
    "maxSuffixPercentage": float,
    "prefixPercentage": float,
    "transform": bool,
    "template": str,
    "onlyMyCode": bool,
    "useCache": bool,
    "useImports": bool,
    "useRecentlyEdited": bool,
    "useRecentlyOpened": bool,
}


ROLES = ("chat", "edit", "apply", "autocomplete", "embed", "rerank", "summarize")


def _model_roles(value: dict) -> str | None:
    for model, roles in value.items():
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            known = ", ".join(ROLES)
            return f"{model!r}: {', '.join(map(repr, unknown))} is not a Continue role ({known})"
    return None


def _config_path(value: str) -> str | None:
    """Under ~/ (or absolute: the client's facts check that it is inside the home folder)."""
    if not (value.startswith("/") or value.startswith("~/")):
        return f"{value!r} is neither absolute nor under ~/ (e.g. ~/.continue/config.yaml)"
    problem = checks.path_form("/" + value[2:]) if value[0] == "~" else checks.safe_path(value)
    if problem:
        return problem.replace(repr("/" + value[2:]), repr(value))
    if not value.endswith((".yaml", ".yml")):
        return f"{value!r} is not a .yaml file (Continue reads config.yaml)"
    return None


def _autocomplete_options(value: dict) -> str | None:
    for key, item in value.items():
        kind = AUTOCOMPLETE_OPTIONS.get(key)
        if kind is None:
            known = ", ".join(AUTOCOMPLETE_OPTIONS)
            return f"{key!r} is not a Continue autocompleteOptions key ({known})"
        if kind is bool:
            fits = isinstance(item, bool)
        else:
            fits = not isinstance(item, bool) and isinstance(
                item, int | float if kind is float else kind
            )
        if not fits:
            return f"{key!r} must be {'a number' if kind is float else kind.__name__}, got {item!r}"
    return None


@dataclass(frozen=True)
class ClientSettings(RoleSettings):
    PREFIX = "client"
    GROUPS = ("clients",)

    config_path: str = setting(
        "~/.continue/config.yaml",
        "the Continue config written on the client; the API keys go to ~/.continue/.env (0600), "
        "the one .env Continue reads secrets from",
        _config_path,
    )
    guest: str = setting(
        "",
        "inventory name of the ai_guests host the editor uses (empty: the only one)",
    )
    person: str = setting(
        "",
        "whose key the config sends (one of the guest's proxy_people); empty: the first listed",
        checks.optional(checks.matches(r"[a-z][a-z0-9_]{0,31}", "a name from proxy_people")),
    )
    api_host: str = setting(
        "",
        "address the editor reaches the guest at (empty: the one address tabbyAPI binds to; "
        "when it binds all, as 'auto' does behind the firewall: the guest's ssh_hostname, else "
        "its inventory name)",
        checks.optional(checks.matches(r"[A-Za-z0-9.:_-]+", "a host name or IP address")),
    )
    name: str = setting(
        "AI coding server", "the config's name, shown in Continue", checks.not_empty
    )
    model_roles: dict[str, list[str]] = setting(
        {},
        "Continue roles by served model id, over the derived ones (tabbyAPI's model: chat, edit, "
        "apply, autocomplete; Ollama's: as planned, embeddings by name); [] leaves a model out",
        _model_roles,
    )
    autocomplete_options: dict = setting(
        {"debounceDelay": 250, "maxPromptTokens": 1024, "modelTimeout": 1000},
        "Continue autocompleteOptions for the autocomplete model (modelTimeout in ms: Continue's "
        "150 ms default drops most completions of a model served over the network)",
        _autocomplete_options,
    )
