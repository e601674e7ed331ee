"""Checks of the docker role on AI guests: engine, daemon.json, group, a container, compose."""

from __future__ import annotations

import json

import pytest
from gpu_stack_checks import local_image, sh
from role_settings import release_of, settings_of

from roles.base.settings import BaseSettings
from roles.docker import render
from roles.docker.settings import DockerSettings


@pytest.fixture
def docker(host_data: dict) -> DockerSettings:
    return settings_of(DockerSettings, host_data)


def test_engine_packages_from_the_chosen_source(guest, docker):
    missing = [p for p in docker.engine_packages if not guest.package(p.split("=")[0]).is_installed]
    assert not missing, f"not installed: {missing}"
    mixed = [p for p in docker.removed_packages if guest.package(p).is_installed]
    assert not mixed, f"packages of the other source (or conflicting) still installed: {mixed}"


def test_dockers_repository_is_signed_by_its_own_key(guest, docker):
    sources = guest.file("/etc/apt/sources.list.d/docker.sources")
    if docker.source != "docker":
        assert not sources.exists
        return
    assert sources.contains("^Signed-By: /etc/apt/keyrings/docker.asc$")
    assert guest.file("/etc/apt/keyrings/docker.asc").contains("BEGIN PGP PUBLIC KEY BLOCK")


def test_service_enabled_and_running(guest):
    service = guest.service("docker")
    assert service.is_enabled and service.is_running


def test_daemon_json_holds_the_deploys_keys(guest, docker):
    data = json.loads(guest.file("/etc/docker/daemon.json").content_string)
    assert render.merge(data, docker.daemon_options) == data, (
        f"daemon.json lacks the deploy's keys {docker.daemon_options}: {data}"
    )
    driver = guest.check_output("docker info --format '{{.LoggingDriver}}'")
    assert driver == docker.daemon_options.get("log-driver", driver)


def test_admin_and_listed_users_in_the_docker_group(guest, docker, host_data):
    admin = settings_of(BaseSettings, host_data).admin_user
    for user in [admin, *docker.users]:
        assert "docker" in guest.user(user).groups, f"{user} is not in the docker group"


def test_a_container_runs_from_a_locally_imported_image(guest):
    with local_image(guest) as image:
        out = guest.check_output(
            sh("docker", "run", "--rm", "--network", "none", image, "/bin/dash", "-c", "echo ok")
        )
    assert out == "ok"


def test_a_compose_project_comes_up(guest, docker):
    """With the compose the source and release provide: `docker compose` (Docker's plugin, or
    Debian 13's docker-compose v2) or Debian 12's `docker-compose` 1.29 (v1)."""
    compose = " ".join(render.compose_command(docker, release_of(guest)))
    project = "aicoder-infra-check"
    with local_image(guest) as image:
        tmp = guest.check_output("mktemp -d")
        spec = {
            "version": "3.8",  # docker-compose 1.29 wants it; compose v2 ignores it
            "services": {
                "probe": {
                    "image": image,
                    "command": ["/bin/dash", "-c", "echo compose-ok; sleep 30"],
                    "network_mode": "none",
                }
            },
        }
        guest.check_output(f"printf '%s' {sh(json.dumps(spec))} > {tmp}/compose.yaml")
        base = f"cd {tmp} && {compose} -p {project} -f compose.yaml"
        try:
            guest.check_output(f"{base} up -d")
            # -a: the image holds dash alone (no sleep), so the container may have exited by
            # now; compose v2's ps lists only running ones without it (v1 listed all).
            created = guest.check_output(f"{base} ps -a -q")
            assert created, "the compose project started no container"
            logs = guest.check_output(f"{base} logs")
            assert "compose-ok" in logs
        finally:
            guest.run(f"{base} down -t 1")
            guest.run(f"rm -rf {tmp}")
