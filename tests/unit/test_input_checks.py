"""Careless and hostile input (issue 13), one class at a time: paths, strings in files and
commands, pass-through maps, service users and networks, cross-field checks that still run."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
import yaml

from roles.common import checks
from roles.common.settings import REGISTRY, RoleSettings
from roles.docker.settings import DockerSettings
from roles.guest_vm.settings import GuestVmSettings
from roles.libvirt.settings import LibvirtSettings
from roles.ollama import render as ollama_render
from roles.ollama.settings import OllamaSettings
from roles.tabbyapi.settings import TabbyapiSettings

ROLES = Path(__file__).resolve().parents[2] / "roles"
VM = {"name": "ai", "address": "192.168.1.50/24", "gateway": "192.168.1.1"}


def found(cls: type[RoleSettings], **data) -> dict[str, str]:
    """key -> message of every problem ``cls`` finds in ``data`` (keys without the prefix)."""
    _, problems = cls.problems_in({cls.key(k): v for k, v in data.items()})
    return dict(problems)


# --- 1. paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/", "system folder"),
        ("/etc", "system folder"),
        ("/var/lib", "system folder"),
        ("/root", "system folder"),
        ("/var/lib/../../etc", "not normalised"),
        ("/var/lib/./ollama", "not normalised"),
        ("/var//lib/ollama", "not normalised"),
        ("/opt/ollama/", "not normalised"),
        ("/opt/my models", "' '"),
        ("/opt/$(reboot)", "'$'"),
        ("/opt/a;b", "';'"),
        ("/opt/~x", "'~'"),
        ("/proc/sys/kernel", "kernel, runtime or boot"),
        ("/boot/efi/x", "kernel, runtime or boot"),
        ("var/lib/ollama", "not an absolute path"),
        ("/opt/\u043e llama", "CYRILLIC SMALL LETTER O"),
        ("/opt/x\ny", "control character"),
    ],
)
def test_unsafe_paths_are_refused(path, fragment):
    assert fragment in (checks.safe_path(path) or ""), checks.safe_path(path)


@pytest.mark.parametrize("path", ["/var/lib/ollama", "/opt/tabbyapi", "/srv/models/q4_0+x"])
def test_safe_paths_pass(path):
    assert checks.safe_path(path) is None


@pytest.mark.parametrize(
    ("cls", "key"),
    [
        (OllamaSettings, "data_dir"),
        (OllamaSettings, "project_dir"),
        (TabbyapiSettings, "model_dir"),
        (TabbyapiSettings, "install_dir"),
        (LibvirtSettings, "image_dir"),
    ],
)
def test_path_settings_refuse_system_folders_and_dot_dot(cls, key):
    assert "system folder" in found(cls, **{key: "/etc"})[cls.key(key)]
    assert "not normalised" in found(cls, **{key: "/var/lib/libvirt/../../../root"})[cls.key(key)]


def test_client_config_path_cannot_leave_home_by_dot_dot():
    from roles.client.settings import ClientSettings

    problem = found(ClientSettings, config_path="~/../../etc/cron.d/x.yaml")
    assert "not normalised" in problem["client_config_path"]
    assert "kernel" in found(ClientSettings, config_path="/proc/self/x.yaml")["client_config_path"]


# --- 2. strings that land in a file or a command ------------------------------------------------


def test_every_string_setting_refuses_control_characters():
    """Every str field of every role (new ones too) refuses a newline, generically."""
    for role in sorted(p.parent.name for p in ROLES.glob("*/settings.py")):
        importlib.import_module(f"roles.{role}.settings")
    assert len(REGISTRY) >= 13
    for cls in list(REGISTRY.values()):
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, kind in hints.items():
            if kind not in ("str", "str | None"):
                continue
            problems = found(cls, **{name: "x\nTrusted: yes"})
            assert cls.key(name) in problems, (cls.key(name), problems)
            assert "control character" in problems[cls.key(name)], problems


@pytest.mark.parametrize(
    ("cls", "data", "key"),
    [
        (OllamaSettings, {"environment": {"OLLAMA_ORIGINS": "*\nOLLAMA_HOST=0"}}, "environment"),
        (OllamaSettings, {"environment": {"OLLAMA_X\n": "1"}}, "environment"),
        (DockerSettings, {"users": ["bob\nroot"]}, "users"),
        (TabbyapiSettings, {"config_overrides": {"model": {"prompt_template": "a\rb"}}},
         "config_overrides"),
    ],
)  # fmt: skip
def test_control_characters_nested_in_lists_and_dicts_are_refused(cls, data, key):
    assert "control character" in found(cls, **data)[cls.key(key)]


def test_a_look_alike_is_pointed_at_by_position():
    from roles.base.settings import BaseSettings

    problem = found(BaseSettings, admin_user="\u0430icoder")["base_admin_user"]
    assert "character 1" in problem and "CYRILLIC SMALL LETTER A" in problem
    mirror = found(BaseSettings, debian_mirror="http://deb.d\u0435bian.org/debian")
    assert "character 13" in mirror["base_debian_mirror"]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://deb.debian.org/debian\nTrusted: yes", "control character"),
        ("http://deb.debian.org /debian", "space"),
        ("http://deb.debian.org:99999/debian", "bad port"),
        ("http://-bad-.example/debian", "no valid host name"),
        ("http://exa_mple.org/x", "no valid host name"),
        ("ftp://deb.debian.org/debian", "is not a URL"),
    ],
)
def test_urls_are_parsed_strictly(url, fragment):
    assert fragment in (checks.url()(url) or ""), checks.url()(url)


@pytest.mark.parametrize("ref", ["main..evil", "x/.hidden", "v1.lock", "-b", "a//b", "x/"])
def test_git_refs_follow_gits_grammar(ref):
    assert checks.git_ref(ref)
    assert "tabbyapi_git_ref" in found(TabbyapiSettings, git_ref=ref)


def test_good_names_pass():
    assert checks.git_ref("e632af41eba68abeadc3437c62674360f2f8cbf1") is None
    assert checks.git_ref("4.0bpw_H6") is None
    assert checks.url()("http://[fd00::1]:8080/debian") is None


# --- 3. pass-through maps ------------------------------------------------------------------------


def test_every_ollama_variable_the_renderer_writes_is_owned():
    """The owned names come from render.environment itself: they cannot drift apart."""
    written = set(ollama_render.environment(OllamaSettings()))
    for name in written | {"OLLAMA_HOST", "OLLAMA_MODELS"}:
        problem = found(OllamaSettings, environment={name: "1"})["ollama_environment"]
        assert "set by the deploy" in problem, (name, problem)


def test_ollama_variables_are_typed_where_upstream_types_them():
    assert (
        "whole number"
        in found(OllamaSettings, environment={"OLLAMA_MAX_QUEUE": "many"})["ollama_environment"]
    )
    assert found(OllamaSettings, environment={"OLLAMA_MAX_QUEUE": "256"}) == {}


def test_compose_values_are_dollar_escaped():
    settings = dataclasses.replace(OllamaSettings(), environment={"OLLAMA_ORIGINS": "${HOME}$(id)"})
    env = yaml.safe_load(ollama_render.compose_yaml(settings, "10.0.0.2"))["services"]["ollama"][
        "environment"
    ]
    assert env["OLLAMA_ORIGINS"] == "$${HOME}$$(id)"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"model": {"chunk_size": "big"}}, "model.chunk_size must be a whole number"),
        ({"model": {"chunk_size": 0}}, "at least 1"),
        ({"draft_model": {"draft_num_tokens": 0}}, "at least 1"),
        ({"model": {"vision": "yes"}}, "True or False"),
        ({"lora": {"lora_dir": "/etc"}}, "system folder"),
        ({"network": {"host": "0.0.0.0"}}, "tabbyapi_host"),
    ],
)
def test_tabbyapi_overrides_are_typed_and_owned_options_refused(overrides, fragment):
    problem = found(TabbyapiSettings, config_overrides=overrides)["tabbyapi_config_overrides"]
    assert fragment in problem, problem


def test_a_draft_folder_nothing_downloads_is_refused():
    assert (
        "downloads it"
        in found(TabbyapiSettings, draft_model_name="tiny")["tabbyapi_draft_model_name"]
    )


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"hosts": ["unix:///run/docker.sock", "tcp://0.0.0.0:2375"]}, "opens the Docker API"),
        ({"hosts": "tcp://0.0.0.0:2376"}, "opens the Docker API"),
        ({"runtimes": {"x": {"path": "/bin/sh"}}}, "container_toolkit"),
        ({"default-runtime": "nvidia"}, "container_toolkit"),
        ({"data-root": "/var/lib"}, "system folder"),
        ({"live-restore": "yes"}, "must be bool"),
        ({"log-opts": {"max-file": 3}}, "must be strings"),
    ],
)
def test_docker_daemon_options_that_open_or_own_are_refused(options, fragment):
    assert fragment in found(DockerSettings, daemon_options=options)["docker_daemon_options"]


def test_a_unix_socket_host_is_fine():
    assert found(DockerSettings, daemon_options={"hosts": ["unix:///run/docker.sock"]}) == {}


# --- 4. service users and networks ---------------------------------------------------------------


def test_tabbyapi_never_runs_as_root():
    assert "never runs as root" in found(TabbyapiSettings, user="root")["tabbyapi_user"]


@pytest.mark.parametrize(
    ("vm", "key", "fragment"),
    [
        ({"mac": "ff:ff:ff:ff:ff:ff"}, "mac", "unicast"),
        ({"mac": "01:00:5e:00:00:01"}, "mac", "unicast"),
        ({"gateway": "192.168.1.50"}, "gateway", "own address"),
        ({"address": "192.168.1.0/24"}, "address", "network's own address"),
        ({"address": "192.168.1.255/24"}, "address", "network's own address"),
        ({"gateway": "10.0.0.1"}, "gateway", "not in"),
    ],
)
def test_vm_network_values(vm, key, fragment):
    problems = found(GuestVmSettings, vms=[{**VM, **vm}])
    assert fragment in problems[f"guest_vm_vms[0].{key}"], problems


def test_the_bridge_gateway_is_not_its_own_address():
    problems = found(LibvirtSettings, bridge_address="192.168.1.5/24", bridge_gateway="192.168.1.5")
    assert "own address" in problems["libvirt_bridge_gateway"]


# --- 6. cross-field checks run even when other keys fail -----------------------------------------


def test_cross_field_checks_run_beside_a_bad_key():
    problems = found(
        DockerSettings, users=["Bad User"], source="debian", version="5:27.5.1-1~debian.12"
    )
    assert set(problems) == {"docker_users", "docker_version"}, problems
