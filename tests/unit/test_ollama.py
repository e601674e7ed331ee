"""ollama role: settings validation, the compose file and unit it renders, its facts' parsers."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from roles.common.settings import SettingsError, validate_host
from roles.ollama import render
from roles.ollama.facts import canonical_model, parse_tags
from roles.ollama.settings import OllamaSettings
from roles.tabbyapi.settings import TabbyapiSettings

CLASSES = [OllamaSettings, TabbyapiSettings]
V2, V1 = ["docker", "compose"], ["docker-compose"]


class FakeHost:
    def __init__(self, data):
        self.name = "guest"
        self.data = type("Data", (), {"dict": lambda _self: dict(data)})()


def settings(**data) -> OllamaSettings:
    built, problems = OllamaSettings.problems_in({f"ollama_{k}": v for k, v in data.items()})
    assert not problems, problems
    return built


def problems(data: dict) -> str:
    with pytest.raises(SettingsError) as caught:
        validate_host(FakeHost(data), CLASSES)
    return str(caught.value)


# --- settings ----------------------------------------------------------------------------------


def test_defaults_are_valid_pinned_and_documented():
    s = settings()
    assert s.image == "ollama/ollama:0.32.15"
    assert s.bind_address == "auto" and s.models == ["nomic-embed-text"]
    for key, _default, doc in OllamaSettings.docs():
        assert key.startswith("ollama_") and doc, key


BAD = [
    ("ollama_bind_address", "0.0.0.0", "no authentication"),
    ("ollama_bind_address", "::", "no authentication"),
    ("ollama_bind_address", "localhost", "not an IP address"),
    ("ollama_bind_address", "192.168.1.300", "not an IP address"),
    ("ollama_image", "ollama/ollama", "not pinned"),
    ("ollama_image", "ollama/ollama:latest", "not pinned"),
    ("ollama_image", "Ollama/Ollama:0.32.15", "not an image reference"),
    ("ollama_image", "ollama/ollama:0.32.15; rm -rf /", "not an image reference"),
    ("ollama_image_archive", "ollama.tar", "not an absolute path"),
    ("ollama_models", ["nomic embed text"], "not an Ollama model name"),
    ("ollama_models", ["qwen2.5:7b;reboot"], "not an Ollama model name"),
    ("ollama_models", ["a:b:c"], "not an Ollama model name"),
    ("ollama_models", ["-rf"], "not an Ollama model name"),
    ("ollama_models", ["host/ns.dot/model"], "not an Ollama model name"),
    ("ollama_kv_cache_type", "q5_0", "is not one of"),
    ("ollama_keep_alive", "5 minutes", "not a duration"),
    ("ollama_num_parallel", 0, "out of range"),
    ("ollama_port", 0, "not a TCP port"),
    ("ollama_environment", {"OLLAMA_HOST": "0.0.0.0"}, "set by the deploy"),
    ("ollama_environment", {"PATH": "/tmp"}, "not an OLLAMA_* name"),
    ("ollama_environment", {"OLLAMA_MAX_QUEUE": 256}, "expected a dict of a string to a string"),
    ("ollama_gpu_device_ids", ["first"], "GPU index"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_values_are_refused_naming_the_key(key, value, fragment):
    message = problems({key: value})
    assert f"- {key}: " in message and fragment in message, message


def test_quantized_cache_needs_flash_attention():
    message = problems({"ollama_flash_attention": False})
    assert "- ollama_kv_cache_type: q8_0 needs ollama_flash_attention = True" in message
    assert settings(flash_attention=False, kv_cache_type="f16").kv_cache_type == "f16"


def test_device_ids_without_gpu_are_refused():
    assert "ollama_gpu is False" in problems({"ollama_gpu": False, "ollama_gpu_device_ids": ["0"]})


@pytest.mark.parametrize(
    ("data", "clash"),
    [
        ({"tabbyapi_port": 11434}, True),
        ({"ollama_port": 5000}, True),
        ({"ollama_port": 5000, "tabbyapi_host": "0.0.0.0"}, True),
        (
            {"ollama_port": 5000, "ollama_bind_address": "10.0.0.5", "tabbyapi_host": "10.0.0.5"},
            True,
        ),
        ({"ollama_port": 5000, "ollama_bind_address": "127.0.0.1"}, False),  # auto is the LAN
        (
            {"ollama_port": 5000, "ollama_bind_address": "10.0.0.5", "tabbyapi_host": "10.0.0.6"},
            False,
        ),
        ({"tabbyapi_port": 11434, "tabbyapi_enabled": False}, False),
        ({"tabbyapi_port": 11434, "ollama_enabled": False}, False),
        ({}, False),
    ],
)
def test_port_clash_between_tabbyapi_and_ollama(data, clash):
    data = {**data, "proxy_plain_http": True}  # the servers on the addresses given here
    if clash:
        message = problems(data)
        assert "- ollama_port: " in message and "tabbyAPI's port too" in message, message
    else:
        validate_host(FakeHost(data), CLASSES)


@pytest.mark.parametrize(
    "name",
    [
        "nomic-embed-text",
        "qwen2.5-coder:7b-instruct-q4_K_M",
        "hf.co/bartowski/Qwen2.5-7B-GGUF:Q4_K_M",
        "registry.example.lan:5000/team/model:v1",
        "library/llama3.2",
    ],
)
def test_model_names_upstream_accepts(name):
    assert settings(models=[name]).models == [name]


@pytest.mark.parametrize(
    "image",
    [
        "ollama/ollama:0.32.15",
        "registry.lan:5000/mirror/ollama:0.32.15-rocm",
        "ollama/ollama@sha256:" + "a" * 64,
    ],
)
def test_pinned_images(image):
    assert settings(image=image).image == image


# --- compose file --------------------------------------------------------------------------------


def test_compose_typical():
    text = render.compose_yaml(settings(), "192.168.1.20")
    assert text.startswith("# Managed by the ai-coding-server deploy")
    service = yaml.safe_load(text)["services"]["ollama"]
    assert service["image"] == "ollama/ollama:0.32.15"
    assert service["ports"] == ["192.168.1.20:11434:11434"]
    assert service["volumes"] == ["/var/lib/ollama:/root/.ollama"]
    assert service["pull_policy"] == "never" and service["restart"] == "unless-stopped"
    assert service["environment"] == {
        "OLLAMA_KEEP_ALIVE": "5m",
        "OLLAMA_FLASH_ATTENTION": "1",
        "OLLAMA_KV_CACHE_TYPE": "q8_0",
        "OLLAMA_NUM_PARALLEL": "1",
        "OLLAMA_MAX_LOADED_MODELS": "0",
        "OLLAMA_CONTEXT_LENGTH": "0",
    }
    assert service["deploy"] == {
        "resources": {
            "reservations": {
                "devices": [{"driver": "nvidia", "capabilities": ["gpu"], "count": "all"}]
            }
        }
    }


def test_compose_edge_settings():
    s = settings(
        gpu_device_ids=["0", "GPU-2b7a4c1e-0000-1111-2222-333344445555"],
        port=11500,
        data_dir="/srv/ollama",
        keep_alive="-1",
        flash_attention=False,
        kv_cache_type="f16",
        num_parallel=4,
        max_loaded_models=2,
        context_length=8192,
        environment={"OLLAMA_MAX_QUEUE": "64"},
    )
    service = render.compose(s, "fd00::5")["services"]["ollama"]
    assert service["ports"] == ["[fd00::5]:11500:11434"]
    assert service["volumes"] == ["/srv/ollama:/root/.ollama"]
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["device_ids"] == ["0", "GPU-2b7a4c1e-0000-1111-2222-333344445555"]
    assert "count" not in device
    env = service["environment"]
    assert env["OLLAMA_KEEP_ALIVE"] == "-1" and env["OLLAMA_FLASH_ATTENTION"] == "0"
    assert env["OLLAMA_CONTEXT_LENGTH"] == "8192" and env["OLLAMA_MAX_QUEUE"] == "64"
    assert all(isinstance(v, str) for v in env.values())


def test_compose_without_gpu_reserves_none():
    assert "deploy" not in render.compose(settings(gpu=False), "127.0.0.1")["services"]["ollama"]


def test_compose_file_is_valid_for_docker_compose(tmp_path):
    """The real compose parser, where this machine has it (the lab test runs it on the guest)."""
    for command in (V2, V1):
        if (
            shutil.which(command[0])
            and subprocess.run([*command, "version"], capture_output=True).returncode == 0
        ):
            break
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed here")
    path = tmp_path / "compose.yaml"
    path.write_text(render.compose_yaml(settings(), "127.0.0.1"))
    result = subprocess.run(
        [*command, "-p", "ollama", "-f", str(path), "config"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1" in result.stdout and "capabilities" in result.stdout


# --- unit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("compose", "shown"), [(V2, "docker compose"), (V1, "docker-compose")])
def test_unit_brings_the_project_up_after_docker(compose, shown):
    text = render.unit(settings(), compose)
    project = f"{shown} -p ollama -f /opt/ollama/compose.yaml"
    assert "Requires=docker.service" in text
    assert "After=docker.service network-online.target" in text
    assert f"ExecStart={project} up -d --remove-orphans" in text
    assert f"ExecReload={project} up -d --remove-orphans" in text
    assert f"ExecStop={project} down\n" in text and " -v" not in text
    assert "Type=oneshot" in text and "RemainAfterExit=yes" in text
    assert "WantedBy=multi-user.target" in text
    assert "WorkingDirectory=/opt/ollama" in text


# --- facts ---------------------------------------------------------------------------------------


def tags_answer(*names: str) -> str:
    """An /api/tags answer in the format upstream documents (docs/api.md, List Local Models)."""
    return json.dumps(
        {
            "models": [
                {"name": n, "model": n, "size": 274302450, "digest": "0a8c", "details": {}}
                for n in names
            ]
        }
    )


def test_tags_answer_is_read_as_canonical_names():
    assert parse_tags(tags_answer("nomic-embed-text:latest", "hf.co/b/Q-GGUF:Q4_K_M")) == {
        "nomic-embed-text:latest",
        "hf.co/b/q-gguf:q4_k_m",
    }
    assert parse_tags('{"models": []}') == set()
    assert parse_tags('{"models": null}') == set()
    assert parse_tags("") is None and parse_tags("curl: (7) Failed to connect") is None


@pytest.mark.parametrize(
    ("wanted", "listed"),
    [
        ("nomic-embed-text", "nomic-embed-text:latest"),
        ("library/nomic-embed-text", "nomic-embed-text:latest"),
        ("registry.ollama.ai/library/nomic-embed-text:latest", "nomic-embed-text:latest"),
        ("Qwen2.5-Coder:7B", "qwen2.5-coder:7b"),
        ("hf.co/bartowski/X-GGUF", "hf.co/bartowski/X-GGUF:latest"),
    ],
)
def test_wanted_names_match_what_tags_lists(wanted, listed):
    assert canonical_model(wanted) == canonical_model(listed)


def test_a_different_tag_is_a_different_model():
    assert canonical_model("qwen2.5-coder:7b") != canonical_model("qwen2.5-coder:latest")
