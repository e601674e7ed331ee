"""Checks of the container_toolkit role on AI guests: package, runtime, CDI, GPU in a container."""

from __future__ import annotations

import json

import pytest
from gpu_stack_checks import local_image, require_loaded_driver, sh
from role_settings import enabled_settings

from roles.container_toolkit.settings import ContainerToolkitSettings


@pytest.fixture
def toolkit(host_data: dict) -> ContainerToolkitSettings:
    why = " (e.g. the lab: NVIDIA's repository is unreachable), so the toolkit is not installed"
    return enabled_settings(ContainerToolkitSettings, host_data, why)


def test_toolkit_installed_from_nvidias_repository(guest, toolkit):
    assert guest.package("nvidia-container-toolkit").is_installed
    sources = guest.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources")
    assert sources.contains("^Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.asc$")


def test_docker_knows_the_nvidia_runtime(guest, toolkit):
    data = json.loads(guest.file("/etc/docker/daemon.json").content_string)
    assert data["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    runtimes = json.loads(guest.check_output("docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in runtimes, f"dockerd has not loaded the runtime (restart?): {runtimes}"


def test_cdi_spec_lists_the_gpus(guest, toolkit):
    require_loaded_driver(guest)
    assert guest.file(toolkit.cdi_spec).exists
    devices = guest.check_output("nvidia-ctk cdi list")
    assert "nvidia.com/gpu=all" in devices, devices


def test_a_container_sees_the_gpu(guest, toolkit):
    require_loaded_driver(guest)
    with local_image(guest) as image:
        out = guest.check_output(
            sh("docker", "run", "--rm", "--gpus", "all", image, "nvidia-smi", "-L")
        )
    assert out.startswith("GPU 0:"), out


def test_a_container_sees_the_gpu_through_cdi(guest, toolkit):
    require_loaded_driver(guest)
    major = int(guest.check_output("docker version --format '{{.Server.Version}}'").split(".")[0])
    if major < 25:
        pytest.skip(f"Docker {major} has no CDI device support (25 or later has)")
    with local_image(guest) as image:
        out = guest.check_output(
            sh("docker", "run", "--rm", "--device", "nvidia.com/gpu=all", image, "nvidia-smi", "-L")
        )
    assert out.startswith("GPU 0:"), out
