"""Pure rendering for the docker role: apt source, daemon.json merge, compose command."""

from __future__ import annotations

import copy
import json
from typing import Any

from roles.common.apt_repo import AptRepo
from roles.common.platform import Release
from roles.docker.settings import DockerSettings


def docker_repo(settings: DockerSettings, release: Release) -> AptRepo:
    """Docker's repository for the release: key in /etc/apt/keyrings/docker.asc, docker.sources
    (deb822)."""
    return AptRepo(
        name="docker",
        title="Docker",
        uri=settings.repo_url.rstrip("/"),
        suites=(release.codename,),
        components=(settings.repo_channel,),
        key_url=settings.key_url,
    )


def merge(current: dict[str, Any], owned: dict[str, Any]) -> dict[str, Any]:
    """``current`` with the ``owned`` keys set; nested objects merge key by key (so a
    ``runtimes`` entry or a ``log-opts`` key is added beside the ones already there), any other
    value is replaced. Keys only in ``current`` keep their value and their order."""
    result = copy.deepcopy(current)
    for key, value in owned.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def daemon_json_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def compose_command(settings: DockerSettings, release: Release) -> list[str]:
    """The compose command the chosen source provides: Docker's repository ships the v2 plugin
    (``docker compose``); Debian's docker-compose is the release's (Debian 12: 1.29, the v1
    ``docker-compose``; Debian 13: v2, the plugin)."""
    return ["docker", "compose"] if settings.source == "docker" else list(release.archive_compose)
