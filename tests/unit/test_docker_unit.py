"""docker role: settings validation, apt source, the daemon.json fact and merge, compose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roles.common import host_state
from roles.common.platform import DEBIAN_12, DEBIAN_13
from roles.docker import facts, render
from roles.docker.facts import DaemonJson, DaemonJsonError, parse_daemon_json
from roles.docker.settings import DockerSettings


def problems(**values) -> dict[str, str]:
    data = {DockerSettings.key(k): v for k, v in values.items()}
    _, found = DockerSettings.problems_in(data)
    return dict(found)


def settings(**values) -> DockerSettings:
    data = {DockerSettings.key(k): v for k, v in values.items()}
    instance, found = DockerSettings.problems_in(data)
    assert not found, found
    return instance


def test_defaults_install_dockers_packages_and_remove_debians_first():
    s = settings()
    assert s.engine_packages == [
        "docker-ce",
        "docker-ce-cli",
        "containerd.io",
        "docker-buildx-plugin",
        "docker-compose-plugin",
    ]
    assert s.removed_packages == [
        "docker.io",
        "docker-doc",
        "docker-compose",
        "podman-docker",
        "containerd",
        "runc",
    ]
    assert s.key_url == "https://download.docker.com/linux/debian/gpg"


def test_version_pins_engine_and_cli():
    s = settings(version="5:27.5.1-1~debian.12~bookworm")
    assert s.engine_packages[:2] == [
        "docker-ce=5:27.5.1-1~debian.12~bookworm",
        "docker-ce-cli=5:27.5.1-1~debian.12~bookworm",
    ]


def test_debian_source_installs_docker_io_and_removes_dockers_packages():
    s = settings(source="debian")
    assert s.engine_packages == ["docker.io", "docker-compose"]
    assert "docker-ce" in s.removed_packages and "docker-compose-plugin" in s.removed_packages


def test_unknown_source_is_refused():
    assert "'podman' is not one of 'docker', 'debian'" in problems(source="podman")["docker_source"]


@pytest.mark.parametrize("url", ["download.docker.com/linux/debian", "docker", "gopher://x"])
def test_malformed_mirror_url_is_refused(url):
    assert "is not a URL" in problems(repo_url=url)["docker_repo_url"]


def test_key_url_derives_from_the_mirror_unless_given():
    assert settings(repo_url="https://mirror.lan/docker/").key_url == (
        "https://mirror.lan/docker/gpg"
    )
    assert settings(repo_key_url="https://keys.lan/docker.asc").key_url == (
        "https://keys.lan/docker.asc"
    )
    assert "is not a URL" in problems(repo_key_url="docker.asc")["docker_repo_key_url"]


def test_version_with_debian_source_is_a_contradiction():
    found = problems(source="debian", version="5:27.5.1-1~debian.12~bookworm")
    assert "docker_source is 'debian'" in found["docker_version"]


def test_malformed_version_channel_user_and_options_are_refused():
    assert "Debian package version" in problems(version="27.5 latest")["docker_version"]
    assert "is not one of" in problems(repo_channel="nightly")["docker_repo_channel"]
    assert "is not a user name" in problems(users=["Bad User"])["docker_users"]
    assert "not JSON data" in problems(daemon_options={"x": {1, 2}})["docker_daemon_options"]
    assert "expected a dict" in problems(daemon_options=["log-driver"])["docker_daemon_options"]


def test_docker_source_is_deb822_with_signed_by_the_asc_key():
    repo = render.docker_repo(settings(), DEBIAN_12)
    assert repo.key_path == "/etc/apt/keyrings/docker.asc"
    assert repo.source_path == "/etc/apt/sources.list.d/docker.sources"
    body = [line for line in repo.source_text().splitlines() if not line.startswith("#")]
    assert body == [
        "Types: deb",
        "URIs: https://download.docker.com/linux/debian",
        "Suites: bookworm",
        "Components: stable",
        "Signed-By: /etc/apt/keyrings/docker.asc",
    ]


def test_merge_keeps_foreign_keys_and_merges_nested_objects():
    current = {
        "labels": ["seeded-by=lab"],
        "log-opts": {"max-size": "1g", "labels": "a"},
        "runtimes": {"crun": {"path": "/usr/bin/crun"}},
    }
    owned = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
    }
    merged = render.merge(current, owned)
    assert merged == {
        "labels": ["seeded-by=lab"],
        "log-opts": {"max-size": "10m", "labels": "a", "max-file": "3"},
        "runtimes": {
            "crun": {"path": "/usr/bin/crun"},
            "nvidia": {"args": [], "path": "nvidia-container-runtime"},
        },
        "log-driver": "json-file",
    }
    assert list(merged)[:3] == ["labels", "log-opts", "runtimes"]  # the user's order stays
    assert current["log-opts"] == {"max-size": "1g", "labels": "a"}  # input untouched


def test_merge_of_what_is_already_there_is_no_change():
    current = {"log-driver": "json-file", "log-opts": {"max-file": "3", "max-size": "10m"}}
    assert render.merge(current, {"log-opts": {"max-size": "10m"}}) == current


def test_daemon_json_text_round_trips():
    data = {"labels": ["a"], "log-opts": {"max-size": "10m"}}
    assert json.loads(render.daemon_json_text(data)) == data


def test_fact_parses_missing_empty_and_present_files():
    assert DaemonJson().process([]) == {}
    assert parse_daemon_json("  \n") == {}
    assert DaemonJson().process(['{"labels": ["seeded-by=lab"]}']) == {"labels": ["seeded-by=lab"]}


def test_fact_refuses_invalid_json_instead_of_overwriting():
    with pytest.raises(DaemonJsonError, match="not valid JSON.*will not overwrite"):
        parse_daemon_json('{"labels": [}')
    with pytest.raises(DaemonJsonError, match="not a JSON object"):
        parse_daemon_json('["labels"]')


def test_compose_command_follows_the_source():
    for release in (DEBIAN_12, DEBIAN_13):
        assert render.compose_command(settings(), release) == ["docker", "compose"]
    assert render.compose_command(settings(source="debian"), DEBIAN_12) == ["docker-compose"]
    # Debian 13's docker-compose is v2, the CLI plugin.
    assert render.compose_command(settings(source="debian"), DEBIAN_13) == ["docker", "compose"]


FIXTURES = Path(__file__).resolve().parents[1] / "plan" / "fixtures"


def recorded(name: str) -> tuple[host_state.State, facts.DockerProbe]:
    state = host_state.parse((FIXTURES / name).read_text().splitlines())
    return state, facts.parse_probe(state.probe)


def test_probe_of_a_deployed_lab_guest():
    """Recorded after the deploy merged its keys over a seeded ``labels`` key."""
    state, probe = recorded("host-state.docker.debian-12-lab-deployed.txt")
    assert probe.daemon_json == {
        "labels": ["seeded-by=lab"],
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
    }
    assert probe.group_members == {"aicoder"} and probe.users == {"aicoder"}
    assert state.units["docker"] == ("enabled", "active")
    assert "docker.io" in state.packages and "docker-ce" not in state.packages  # "un" rows
    assert render.merge(probe.daemon_json, settings().daemon_options) == probe.daemon_json


def test_probe_of_a_fresh_guest():
    state, probe = recorded("host-state.docker.debian-12-lab-fresh.txt")
    assert probe.daemon_json == {} and probe.group_members == set() and probe.users == set()
    assert state.units["docker"] == ("", "inactive")


def test_probe_command_names_the_users():
    command = facts.probe(["aicoder", "bob"])
    assert "getent passwd aicoder bob" in command and "/etc/docker/daemon.json" in command
