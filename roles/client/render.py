"""Build Continue's config.yaml (schema v1) for what was deployed, as data dumped to YAML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

CA_FILE = "aicoder-ca.crt"  # beside config.yaml: the CA the TLS front door's certificate has
HEADER = (
    "# Continue config written by the ai-coding-server deploy (roles/client) for the models\n"
    "# served on {guest}. Edits are replaced at the next deploy; the old file is kept beside it\n"
    "# as config.yaml.<time>.bak. The API key lives in ~/.continue/.env.\n"
)
# Continue's context providers (@-mentions in chat). Without a `context` list Continue offers
# none; folder and codebase search the index built with the embed model, so they are listed
# only when one is served.
CONTEXT = ("code", "docs", "diff", "terminal", "problems", "file", "currentFile")
EMBEDDING_CONTEXT = ("folder", "codebase")


@dataclass(frozen=True)
class Api:
    """One service's API as the editor reaches it."""

    label: str  # the service, for people: "tabbyAPI"
    provider: str  # Continue's provider: "openai", "ollama"
    base: str  # apiBase: http://host:port/v1
    key_env: str = ""  # the .env variable holding its key; "" for an API without one
    ca_bundle: str = ""  # the CA file the editor trusts for it (requestOptions.caBundlePath)


@dataclass(frozen=True)
class Served:
    """One model as the editor reaches it."""

    api: Api
    model: str  # the id the API answers to (tabbyAPI: the model folder; Ollama: the tag)
    roles: tuple[str, ...]  # Continue roles: chat, edit, apply, autocomplete, embed
    context: int | None = None  # tokens the server keeps for a request, if known
    tools: bool = False  # the server turns the model's tool calls into OpenAI tool_calls


@dataclass(frozen=True)
class Deployment:
    """What a guest serves and where the editor reaches it."""

    guest: str  # inventory name of the guest, for the config's header
    models: tuple[Served, ...]  # in the registry's order of their services


def continue_config(deployment: Deployment, name: str, autocomplete_options: dict) -> dict:
    """Continue's config.yaml as a dict: one entry per served model, chat models first."""
    models = []
    for served in sorted(deployment.models, key=lambda s: "chat" not in s.roles):
        api = served.api
        entry: dict[str, Any] = {
            "name": f"{served.model} ({api.label})",
            "provider": api.provider,
            "model": served.model,
            "apiBase": api.base,
        }
        if api.key_env:
            # The key's name in ~/.continue/.env: the config itself never holds it.
            entry["apiKey"] = "${{ secrets.%s }}" % api.key_env  # noqa: UP031 (literal braces)
        if api.ca_bundle:  # a private CA's certificate (the TLS front door's)
            entry["requestOptions"] = {"caBundlePath": api.ca_bundle}
        entry["roles"] = list(served.roles)
        if served.tools and "chat" in served.roles:
            entry["capabilities"] = ["tool_use"]  # agent mode sends tools to this model
        if served.context and "embed" not in served.roles:
            entry["defaultCompletionOptions"] = {"contextLength": served.context}
        if "autocomplete" in served.roles:
            entry["autocompleteOptions"] = dict(autocomplete_options)
        models.append(entry)
    embeds = any("embed" in s.roles for s in deployment.models)
    context = CONTEXT + (EMBEDDING_CONTEXT if embeds else ())
    return {
        "name": name,
        "version": "1.0.0",
        "schema": "v1",
        "models": models,
        "context": [{"provider": provider} for provider in context],
    }


def config_yaml(deployment: Deployment, name: str, autocomplete_options: dict) -> str:
    """The config.yaml text: a header comment, then the data in a stable key order."""
    data = continue_config(deployment, name, autocomplete_options)
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)
    return HEADER.format(guest=deployment.guest) + body
