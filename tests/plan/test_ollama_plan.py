"""Plan tests of the ollama role: the real deploy.py on a fake Debian 12 guest.

Recorded: os-release (tests/fixtures/el9/os-release.debian-12.txt). The other answers describe
a guest in a given state in the format the commands print (see guest_services_facts.py), with
Ollama's GET /api/tags answer in the format upstream's docs/api.md documents.
"""

from __future__ import annotations

import json
import re

import pytest
from guest_services_facts import (
    ADDRESS,
    LAN,
    LISTEN,
    OLLAMA_STATE,
    PLAIN,
    address_lines,
    guest_plan,
    own,
    probe_lines,
    responses,
    unit_line,
    use_secrets,
)
from harness import file_line, run_plan

from roles.firewall.render import NFT_FILE
from roles.ollama import render
from roles.ollama.settings import OllamaSettings

OWN_OPS = re.compile(r"^Ollama")
V2, V1 = ["docker", "compose"], ["docker-compose"]
TAGS = re.compile(r"curl -fsS -m 10 \S*http://127\.0\.0\.1:11434/api/tags")
VERSION = re.compile(r"until curl -fsS -o /dev/null -m 5 \S*http://127\.0\.0\.1:11434/api/version")


@pytest.fixture(autouse=True)
def user_secrets(monkeypatch, tmp_path):
    use_secrets(monkeypatch, tmp_path, "api", "admin")


def tags(*names: str) -> str:
    models = [{"name": n, "model": n, "size": 274302450, "digest": "0a8c"} for n in names]
    return json.dumps({"models": models})


def converged_guest(data: dict | None = None, compose=V2, models=("nomic-embed-text:latest",)):
    """Answers of a guest where the ollama role has run with ``data`` (Docker ``compose``)."""
    settings, problems = OllamaSettings.problems_in(data or {})
    assert not problems, problems
    probe = [
        "image present",
        f"tags {tags(*models)}",
        *address_lines(),
    ]
    state = [
        file_line(f"{settings.project_dir}/compose.yaml", render.compose_yaml(settings, LISTEN)),
        file_line(render.UNIT_PATH, render.unit(settings, compose)),
        unit_line(render.UNIT),
        f"dir 755 root:root {settings.project_dir}",
        f"dir 750 root:root {settings.data_dir}",
        *probe_lines(probe),
    ]
    # Read by the reload operation when it runs; a oneshot unit that stays active is "exited".
    running = {"--property SubState ollama.service": "Id=ollama.service\nSubState=exited"}
    return {OLLAMA_STATE: state, VERSION: "up", TAGS: tags(*models), **running}


def test_fresh_guest_pulls_the_image_writes_the_project_starts_it_and_pulls_models():
    plan = guest_plan()
    assert plan.find(r"^docker pull --quiet ollama/ollama:0\.32\.15$")
    compose = plan.files["/opt/ollama/compose.yaml"]
    assert "- 0.0.0.0:11434:11434" in compose and "capabilities:" in compose
    assert plan.find(r"^docker compose -p ollama -f /opt/ollama/compose.yaml config --quiet$")
    unit = plan.files[render.UNIT_PATH]
    assert "ExecStart=docker compose -p ollama -f /opt/ollama/compose.yaml up -d" in unit
    assert plan.find(r"^systemctl start ollama.service$")
    assert plan.find(r"^systemctl enable ollama.service$")
    [pull] = plan.find(r"/api/pull")
    assert '{"model": "nomic-embed-text", "stream": false}' in pull
    assert "http://127.0.0.1:11434/api/pull" in pull and "exit 1" in pull


def test_debian_docker_uses_compose_v1():
    plan = guest_plan({"docker_source": "debian"})
    assert plan.find(r"^docker-compose -p ollama -f /opt/ollama/compose.yaml config --quiet$")
    assert "ExecStart=docker-compose -p ollama" in plan.files[render.UNIT_PATH]


def test_local_only_address():
    plan = guest_plan({"ollama_bind_address": "127.0.0.1"})
    assert "- 127.0.0.1:11434:11434" in plan.files["/opt/ollama/compose.yaml"]
    assert plan.find(r"http://127\.0\.0\.1:11434/api/pull")


def test_an_air_gapped_guest_loads_the_image_archive():
    plan = guest_plan({"ollama_image_archive": "/srv/images/ollama-0.32.15.tar"})
    assert not plan.find(r"docker pull")
    assert plan.find(r"^docker load --quiet --input /srv/images/ollama-0\.32\.15\.tar$")
    assert plan.find(r"^docker image inspect ollama/ollama:0\.32\.15 >/dev/null \|\| ")


def test_without_a_registry_or_archive_the_stack_is_installed_but_not_started():
    plan = guest_plan({"ollama_pull_image": False})
    assert not plan.find(r"docker pull|docker load|/api/pull|systemctl start ollama")
    assert plan.find(r"^systemctl enable ollama.service$")
    assert "/opt/ollama/compose.yaml" in plan.files


def test_converged_guest_plans_nothing():
    plan = guest_plan(extra=converged_guest())
    assert own(plan, OWN_OPS) == [], plan.changed


def test_only_missing_models_are_pulled():
    data = {"ollama_models": ["nomic-embed-text", "qwen2.5-coder:1.5b", "hf.co/o/M-GGUF:Q4_K_M"]}
    extra = converged_guest(data, models=("nomic-embed-text:latest", "hf.co/o/M-GGUF:Q4_K_M"))
    plan = guest_plan(data, extra)
    assert own(plan, OWN_OPS) == [
        "Ollama | models nomic-embed-text, qwen2.5-coder:1.5b, hf.co/o/M-GGUF:Q4_K_M"
    ]
    [pull] = plan.find(r"/api/pull")
    assert '"model": "qwen2.5-coder:1.5b"' in pull


def test_a_changed_compose_file_is_applied_by_a_reload():
    plan = guest_plan({"ollama_keep_alive": "30m"}, converged_guest())
    assert own(plan, OWN_OPS) == [
        "Ollama | compose.yaml",
        "Ollama | compose.yaml is valid",
        "Ollama | reload for the change",
    ], plan.changed
    assert plan.find(r"^systemctl reload ollama.service$")
    assert "OLLAMA_KEEP_ALIVE: 30m" in plan.files["/opt/ollama/compose.yaml"]


def test_an_api_that_never_answers_fails_with_the_compose_logs():
    """Waited on before a pull (a model to add) or after a (re)start."""
    extra = converged_guest()
    extra[VERSION] = "down"
    plan = guest_plan({"ollama_models": ["nomic-embed-text", "qwen2.5-coder:1.5b"]}, extra)
    [command] = [c for n, [c, *_] in plan.changed if n == "Ollama | answers /api/version"]
    assert "Ollama did not answer http://127.0.0.1:11434/api/version within 120 s" in command
    assert (
        "docker compose -p ollama -f /opt/ollama/compose.yaml logs --no-color --tail 30" in command
    )
    assert "journalctl -u ollama.service -n 30" in command and command.endswith("exit 1")


def test_auto_binds_all_behind_the_firewall_else_a_static_address_and_refuses_a_lease():
    # (A longer key than the default answer of responses(), so that it is matched first.)
    dhcp = {"ip -4 -o route get 192.0.2.1 2>": f"route {ADDRESS}\naddr {ADDRESS}/24 dynamic"}
    behind = guest_plan(extra=dhcp)  # firewall_enabled: the default
    assert "- 0.0.0.0:11434:11434" in behind.files["/opt/ollama/compose.yaml"]
    assert "ip saddr @allowed_v4 return" in behind.files[NFT_FILE]  # Docker's ports filtered
    static = guest_plan({"firewall_enabled": False})
    assert f"- {ADDRESS}:11434:11434" in static.files["/opt/ollama/compose.yaml"]
    mine = {**LAN, **PLAIN, "firewall_enabled": False, "tabbyapi_host": ADDRESS}  # else refused
    refused = run_plan({"ai_guests": mine}, responses(dhcp))
    message = str(refused.error)
    assert "ollama_bind_address is 'auto'" in message and "leased by DHCP" in message
    assert "firewall_enabled" in message and refused.changed == []
