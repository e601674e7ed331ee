"""container_toolkit role: settings validation, apt source, daemon.json keys, CDI state fact."""

from __future__ import annotations

import pytest

from roles.container_toolkit import render
from roles.container_toolkit.facts import parse_state, probe
from roles.container_toolkit.settings import ContainerToolkitSettings


def problems(**values) -> dict[str, str]:
    data = {ContainerToolkitSettings.key(k): v for k, v in values.items()}
    _, found = ContainerToolkitSettings.problems_in(data)
    return dict(found)


def settings(**values) -> ContainerToolkitSettings:
    data = {ContainerToolkitSettings.key(k): v for k, v in values.items()}
    instance, found = ContainerToolkitSettings.problems_in(data)
    assert not found, found
    return instance


def test_defaults_enable_the_toolkit_from_nvidias_stable_repository():
    s = settings()
    assert s.enabled is True
    assert s.packages == ["nvidia-container-toolkit"]
    assert s.key_url == "https://nvidia.github.io/libnvidia-container/gpgkey"


def test_version_pins_the_toolkit_and_its_libraries_together():
    assert settings(version="1.17.8-1").packages == [
        "nvidia-container-toolkit=1.17.8-1",
        "nvidia-container-toolkit-base=1.17.8-1",
        "libnvidia-container-tools=1.17.8-1",
        "libnvidia-container1=1.17.8-1",
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("repo_url", "nvidia.github.io/libnvidia-container", "is not a URL"),
        ("repo_key_url", "gpgkey", "is not a URL"),
        ("repo_channel", "nightly", "is not one of 'stable', 'experimental'"),
        ("version", "v1.17", "a version like 1.17.8-1"),
        ("cdi_spec", "etc/cdi/nvidia.yaml", "is not an absolute path"),
        ("enabled", "yes", "expected True or False"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(key, value, message):
    assert message in problems(**{key: value})[f"container_toolkit_{key}"]


def test_repository_is_the_flat_per_architecture_deb822_source():
    repo = render.toolkit_repo(settings(repo_url="http://mirror.lan/libnvidia-container/"))
    body = [line for line in repo.source_text().splitlines() if not line.startswith("#")]
    assert body == [
        "Types: deb",
        # apt substitutes $(ARCH) in deb822 URIs too (checked with `apt-get update --print-uris`)
        "URIs: http://mirror.lan/libnvidia-container/stable/deb/$(ARCH)",
        "Suites: /",
        "Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.asc",
    ]
    assert repo.key_url == "http://mirror.lan/libnvidia-container/gpgkey"


def test_runtime_keys_match_what_nvidia_ctk_runtime_configure_writes():
    # nvidia-container-toolkit pkg/config/engine/docker/docker.go AddRuntime: path + empty args.
    assert render.runtime_keys(settings()) == {
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
    }
    assert render.runtime_keys(settings(default_runtime=True))["default-runtime"] == "nvidia"


def test_cdi_state_parsing():
    fresh = parse_state(["gpu 0000:01:00.0", "driver 535.216.01"])
    assert fresh.gpus == ["0000:01:00.0"] and fresh.needs_spec()
    stale = parse_state(["gpu 0000:01:00.0", "driver 550.54.15", "spec yes"])
    assert stale.needs_spec()  # generated for an older driver
    current = parse_state(["gpu 0000:01:00.0", "driver 550.54.15", "spec yes", "spec-current yes"])
    assert not current.needs_spec()
    assert parse_state([]).gpus == []


def test_cdi_probe_quotes_the_spec_path():
    command = probe("/etc/cdi/my specs/nvidia.yaml")
    assert "/sys/module/nvidia/version" in command
    assert "grep -qF \"$v\" '/etc/cdi/my specs/nvidia.yaml'" in command
