"""Facts of the ollama role: its probe (read in the role's one HostState round trip) and the
models Ollama has, read again when the pull operation runs."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase
from typing_extensions import override


@dataclass
class OllamaState:
    image: bool = False  # Docker has the image
    models: set[str] | None = None  # canonical names /api/tags lists; None: no answer


def probe(image: str, tags_url: str) -> str:
    """Whether Docker has ``image`` (not while Docker is missing) and the models the API lists."""
    q = shlex.quote
    return "; ".join(
        [
            f"docker image inspect --format '{{{{.Id}}}}' {q(image)} >/dev/null 2>&1 "
            "&& echo image present || echo image missing",
            f"echo tags $(curl -fsS -m 5 {q(tags_url)} 2>/dev/null | tr -d '\\n')",
        ]
    )


def parse_state(lines: list[str]) -> OllamaState:
    state = OllamaState()
    for line in lines:
        kind, _, value = line.partition(" ")
        if kind == "image":
            state.image = value.strip() == "present"
        elif kind == "tags":
            state.models = parse_tags(value)
    return state


def canonical_model(name: str) -> str:
    """A model name as /api/tags lists it: without the default registry and namespace, with the
    default tag (nomic-embed-text -> nomic-embed-text:latest). Names compare case-insensitively,
    as upstream's types/model/name.go does."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/library/", "registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def parse_tags(text: str) -> set[str] | None:
    """The canonical names in an /api/tags answer; None if it is not one (API unreachable)."""
    try:
        models = json.loads(text)["models"]
    except (ValueError, KeyError, TypeError):
        return None
    return {canonical_model(m.get("name") or m.get("model", "")) for m in models or []}


class OllamaModels(FactBase):
    """The models Ollama has (GET /api/tags), or None when its API does not answer."""

    @override
    def command(self, api: str) -> str:
        return f"curl -fsS -m 10 {shlex.quote(api + '/api/tags')} 2>/dev/null || true"

    @override
    def process(self, output: list[str]) -> set[str] | None:
        return parse_tags("\n".join(output))
