"""What the ollama role writes: the compose file (data, dumped from a dict) and the systemd unit
(Jinja2 text). Pure functions, so unit tests call them directly."""

from __future__ import annotations

import ipaddress
import shlex

import yaml

from roles.common.templates import render
from roles.ollama.settings import OllamaSettings

PROJECT = "ollama"  # compose project name: container ollama-ollama-1 (v2) / ollama_ollama_1 (v1)
COMPOSE_FILE = "compose.yaml"
UNIT = "ollama.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
CONTAINER_PORT = 11434  # Ollama's own port inside the container (OLLAMA_HOST's default)


def environment(settings: OllamaSettings) -> dict[str, str]:
    """The container's OLLAMA_* tuning variables, all as strings (compose wants strings)."""
    env = {
        "OLLAMA_KEEP_ALIVE": settings.keep_alive,
        "OLLAMA_FLASH_ATTENTION": "1" if settings.flash_attention else "0",
        "OLLAMA_KV_CACHE_TYPE": settings.kv_cache_type,
        "OLLAMA_NUM_PARALLEL": str(settings.num_parallel),
        "OLLAMA_MAX_LOADED_MODELS": str(settings.max_loaded_models),
        "OLLAMA_CONTEXT_LENGTH": str(settings.context_length),
    }
    env.update(settings.environment)
    return env


def compose_escaped(env: dict[str, str]) -> dict[str, str]:
    """Values as compose reads them literally: compose interpolates ``$`` (``${HOME}``,
    ``$(...)`` stays text but ``$VAR`` does not), so each becomes ``$$``."""
    return {name: value.replace("$", "$$") for name, value in env.items()}


def published_port(address: str, port: int) -> str:
    """HOST_IP:HOST_PORT:CONTAINER_PORT, the host address bracketed when it is IPv6."""
    host_ip = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"{host_ip}:{port}:{CONTAINER_PORT}"


def compose(settings: OllamaSettings, publish: str) -> dict:
    """The compose project as a dict; ``publish`` is the resolved address (never 'auto')."""
    service = {
        "image": settings.image,
        # The deploy pulls or loads the image itself (or leaves the stack down); `up` never
        # reaches out to a registry behind its back.
        "pull_policy": "never",
        "restart": "unless-stopped",
        # Ollama has no authentication: published on one address, or on all ('auto') only
        # where the firewall role's forward chain filters Docker's published ports.
        "ports": [published_port(publish, settings.port)],
        # A host folder, never a named volume: `docker compose down -v` or a volume prune
        # cannot delete the models.
        "volumes": [f"{settings.data_dir}:/root/.ollama"],
        "environment": compose_escaped(environment(settings)),
    }
    if settings.gpu:
        device = {"driver": "nvidia", "capabilities": ["gpu"]}
        if settings.gpu_device_ids:
            device["device_ids"] = list(settings.gpu_device_ids)
        else:
            device["count"] = "all"
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return {"services": {"ollama": service}}


def compose_yaml(settings: OllamaSettings, publish: str) -> str:
    header = "# Managed by the ai-coding-server deploy (roles/ollama): edit group_data instead.\n"
    return header + yaml.safe_dump(compose(settings, publish), sort_keys=False)


def compose_path(settings: OllamaSettings) -> str:
    return f"{settings.project_dir}/{COMPOSE_FILE}"


def compose_invocation(compose_command: list[str], settings: OllamaSettings) -> str:
    """The compose command line for this project, e.g. ``docker compose -p ollama -f ...``."""
    path = compose_path(settings)
    return " ".join([*map(shlex.quote, compose_command), "-p", PROJECT, "-f", shlex.quote(path)])


def unit(settings: OllamaSettings, compose_command: list[str]) -> str:
    return render(
        "ollama/ollama.service.j2",
        project_dir=settings.project_dir,
        compose=compose_invocation(compose_command, settings),
        start_timeout=settings.start_timeout + 60,
    )
