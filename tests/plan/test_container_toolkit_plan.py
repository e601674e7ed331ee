"""Plan tests of the container_toolkit role: the real deploy.py on recorded Debian 12 facts.

What could not run for real, and why: NVIDIA's libnvidia-container repository (nvidia.github.io)
is unreachable here and no GPU is present, so the toolkit was never installed on a real host of
this project, and `nvidia-ctk cdi generate` never ran. The lab deploys with the toolkit turned
off (lab/overrides.py). These plans check the exact key, deb822 source, package, daemon.json and
CDI steps, and "nothing to do" on a host that has exactly what that plan installs.
"""

from __future__ import annotations

import json

from gpu_stack_facts import GUEST, recorded, responses, role_ops
from harness import file_line, package_lines, run_plan

KEY = "/etc/apt/keyrings/nvidia-container-toolkit.asc"
SOURCE = "/etc/apt/sources.list.d/nvidia-container-toolkit.sources"
DOCKER_DEPLOYED = recorded("host-state.docker.debian-12-lab-deployed.txt")
GPU_LOADED = ["probe gpu 0000:06:00.0", "probe driver 535.309.01"]
TOOLKIT = "NVIDIA container toolkit"


def plan_for(toolkit_lines, docker_lines=DOCKER_DEPLOYED, **data):
    found = responses(docker=docker_lines, toolkit=toolkit_lines)
    return run_plan({"ai_guests": {**GUEST, "docker_source": "debian", **data}}, found)


def test_fresh_host_gets_key_source_package_and_the_runtime_in_daemon_json():
    plan = plan_for([])
    assert plan.error is None, plan.error
    found = [c for _, cmds in role_ops(plan, TOOLKIT) for c in cmds]
    key = plan.find(r"curl -sSLf https://nvidia\.github\.io/libnvidia-container/gpgkey ")
    assert key and plan.find(f"mv /tmp/pyinfra-[0-9a-f]+ {KEY}$")
    assert plan.files[SOURCE].splitlines()[1:] == [
        "Types: deb",
        "URIs: https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)",
        "Suites: /",
        f"Signed-By: {KEY}",
    ]
    install = plan.find(r"apt-get .* install nvidia-container-toolkit$")
    order = [
        found.index(key[0]),
        found.index(f"upload {SOURCE}"),
        found.index("apt-get update -qq"),
        found.index(install[0]),
    ]
    assert order == sorted(order)
    # Merged over the recorded file: the seeded key and the docker role's keys stay.
    assert json.loads(plan.files["/etc/docker/daemon.json"]) == {
        "labels": ["seeded-by=lab"],
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
    }
    # Written once (by the docker role, with the runtime) and Docker restarted once for it.
    assert plan.commands.count("upload /etc/docker/daemon.json") == 1
    restarts = [n for n in plan.names() if "restart" in n and "Docker" in n]
    assert restarts == ["Docker | restart to apply daemon.json"], plan.names()
    assert not plan.find("nvidia-ctk cdi")  # no GPU in the recorded machine
    assert not plan.find("nvidia-ctk runtime")  # merged, not rewritten by nvidia-ctk
    assert not plan.find("apt-key")


def test_a_fresh_guest_writes_daemon_json_once_and_never_restarts_docker():
    """Engine and toolkit both new: daemon.json (Docker's keys and the nvidia runtime) is
    written once, before the engine is installed, which then starts with it."""
    plan = plan_for([], docker_lines=[])
    assert plan.error is None, plan.error
    assert plan.commands.count("upload /etc/docker/daemon.json") == 1
    assert "runtimes" in json.loads(plan.files["/etc/docker/daemon.json"])
    assert not [n for n in plan.names() if "restart" in n.lower()], plan.names()


def test_cdi_spec_is_generated_where_a_gpu_and_the_driver_are_there():
    plan = plan_for(GPU_LOADED)
    assert plan.find(r"^nvidia-ctk cdi generate --output=/etc/cdi/nvidia\.yaml$")


def test_cdi_waits_for_the_reboot_when_the_driver_is_not_loaded():
    plan = plan_for(["probe gpu 0000:06:00.0"])
    assert not plan.find("nvidia-ctk cdi")


def test_converged_host_plans_nothing_and_does_not_restart_docker():
    fresh = plan_for([])
    daemon = json.loads(fresh.files["/etc/docker/daemon.json"])
    docker = [line for line in DOCKER_DEPLOYED if not line.startswith("probe json")]
    docker += [f"probe json {line}" for line in json.dumps(daemon).splitlines()]
    converged = [
        f"file 644 root:root 0123456789abcdef0123456789abcdef01234567 {KEY}",
        file_line(SOURCE, fresh.files[SOURCE]),
        *package_lines(["nvidia-container-toolkit"], "1.17.8-1"),
        *GPU_LOADED,
        "probe spec yes",
        "probe spec-current yes",
    ]
    plan = plan_for(converged, docker)
    assert plan.error is None, plan.error
    assert role_ops(plan, TOOLKIT) == [] and role_ops(plan, "Docker") == []


def test_stale_cdi_spec_after_a_driver_upgrade_is_regenerated():
    plan = plan_for([*GPU_LOADED, "probe spec yes"])
    assert plan.find(r"nvidia-ctk cdi generate")


def test_disabled_toolkit_plans_nothing_at_all():
    plan = plan_for([], container_toolkit_enabled=False)
    assert role_ops(plan, TOOLKIT) == []
    assert not plan.find("libnvidia-container")


def test_pinned_version_installs_the_four_packages_at_that_version():
    plan = plan_for([], container_toolkit_version="1.17.8-1")
    assert plan.find(
        r"install nvidia-container-toolkit=1\.17\.8-1 nvidia-container-toolkit-base=1\.17\.8-1 "
        r"libnvidia-container-tools=1\.17\.8-1 libnvidia-container1=1\.17\.8-1$"
    )
