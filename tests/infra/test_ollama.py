"""Checks of the ollama role on a real AI guest.

Checks of a running Ollama skip, saying why, when its image is not on the guest (no registry
reachable and no archive given) or when there is no GPU for a check that needs one.
"""

from __future__ import annotations

import json
import shlex

import pytest
import yaml
from role_settings import enabled_settings, settings_of

from roles.common.services import ALL_IPV4, client_address, resolve_on
from roles.firewall.settings import FirewallSettings
from roles.ollama import render
from roles.ollama.facts import canonical_model
from roles.ollama.settings import OllamaSettings
from roles.proxy.settings import ProxySettings

EMBED_MODEL, EMBED_DIMENSIONS = "nomic-embed-text", 768


@pytest.fixture
def ollama(host_data: dict) -> OllamaSettings:
    return enabled_settings(OllamaSettings, host_data)


@pytest.fixture
def filtered(host_data) -> bool:
    return settings_of(FirewallSettings, host_data).enabled


@pytest.fixture
def publish(guest, ollama, filtered, host_data) -> str:
    proxied = not settings_of(ProxySettings, host_data).plain_http  # behind the TLS front door
    return resolve_on(ollama.bind_address, guest.check_output, filtered, proxied)


@pytest.fixture
def compose(guest) -> str:
    """The compose command the guest has: v2 plugin, else Debian's v1."""
    if guest.run("docker compose version").rc == 0:
        return "docker compose"
    if guest.run("docker-compose version").rc == 0:
        return "docker-compose"
    pytest.fail("the guest has neither `docker compose` nor `docker-compose`")


@pytest.fixture
def api(guest, ollama, publish) -> str:
    """Ollama's URL on the guest, once its image is there and the stack runs (else skipped)."""
    if guest.run(f"docker image inspect {shlex.quote(ollama.image)}").rc != 0:
        pytest.skip(
            f"{ollama.image} is not on the guest: its registry was unreachable "
            f"(ollama_pull_image {ollama.pull_image}, no ollama_image_archive)"
        )
    assert guest.service(render.UNIT).is_running, f"{render.UNIT} is not active"
    return f"http://{client_address(publish)}:{ollama.port}"


def get_json(guest, url: str, body: dict | None = None) -> dict:
    data = f"-X POST -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
    out = guest.check_output(f"curl -fsS -m 120 {data if body else ''} {shlex.quote(url)}")
    return json.loads(out)


def test_compose_file_is_valid_and_published_where_configured(
    guest, ollama, publish, compose, filtered
):
    path = f"{ollama.project_dir}/{render.COMPOSE_FILE}"
    service = yaml.safe_load(guest.file(path).content_string)["services"]["ollama"]
    assert service["image"] == ollama.image
    assert service["ports"] == [render.published_port(publish, ollama.port)]
    # All addresses only for 'auto' behind the firewall (its forward chain filters Docker's
    # published ports: tests/infra/test_firewall.py); never '::'.
    assert publish != "::" and (publish != ALL_IPV4 or (filtered and ollama.bind_address == "auto"))
    assert service["volumes"] == [f"{ollama.data_dir}:/root/.ollama"]
    assert guest.run(f"{compose} -p {render.PROJECT} -f {path} config --quiet").rc == 0
    assert guest.file(ollama.data_dir).is_directory


def test_gpu_is_reserved_unless_disabled(guest, ollama):
    path = f"{ollama.project_dir}/{render.COMPOSE_FILE}"
    service = yaml.safe_load(guest.file(path).content_string)["services"]["ollama"]
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    if ollama.gpu:
        assert devices["devices"][0]["capabilities"] == ["gpu"]
    else:
        assert not devices


def test_unit_is_enabled_and_needs_docker(guest):
    assert guest.service(render.UNIT).is_enabled
    unit = guest.file(render.UNIT_PATH).content_string
    assert "Requires=docker.service" in unit and "WantedBy=multi-user.target" in unit


def test_listens_on_the_configured_address_only(guest, ollama, publish, api):
    sockets = guest.check_output(f"ss -ltnH 'sport = :{ollama.port}'").splitlines()
    addresses = {line.split()[3].rsplit(":", 1)[0].strip("[]") for line in sockets}
    assert addresses == {publish}, sockets


def test_api_answers_and_has_every_wanted_model(guest, ollama, api):
    assert "version" in get_json(guest, f"{api}/api/version")
    listed = {canonical_model(m["name"]) for m in get_json(guest, f"{api}/api/tags")["models"]}
    missing = [m for m in ollama.models if canonical_model(m) not in listed]
    assert not missing, f"models not pulled: {missing}"


def test_embedding_has_the_expected_dimension(guest, ollama, api):
    if EMBED_MODEL not in ollama.models:
        pytest.skip(f"{EMBED_MODEL} is not in ollama_models")
    answer = get_json(guest, f"{api}/api/embed", {"model": EMBED_MODEL, "input": "def add(a, b):"})
    assert len(answer["embeddings"][0]) == EMBED_DIMENSIONS
