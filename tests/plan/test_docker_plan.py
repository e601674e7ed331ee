"""Plan tests of the docker role: the real deploy.py on recorded Debian 12 facts.

What could not run for real, and why: Docker's repository (download.docker.com) is unreachable
from this machine and its lab, so no host with docker-ce was ever deployed or recorded here. The
Docker-repository path is checked only as a plan: the exact key download, deb822 source and
package steps on a recorded fresh lab guest, and "nothing to do" on a host that has exactly what
that plan installs and uploads. The lab test (tests/lab/test_guest_gpu_stack.py) deploys the
Debian-packages path for real.
"""

from __future__ import annotations

import json

from gpu_stack_facts import GUEST, dpkg_l, file_fact, recorded, responses, role_ops
from harness import file_line, package_lines, run_plan

from roles.docker.settings import DockerSettings

FRESH = recorded("host-state.docker.debian-12-lab-fresh.txt")
DEPLOYED = recorded("host-state.docker.debian-12-lab-deployed.txt")
SEEDED = ['probe json {"labels": ["seeded-by=lab"], "log-driver": "journald"}']
DOCKER_PACKAGES = DockerSettings().engine_packages
KEY = "/etc/apt/keyrings/docker.asc"
SOURCE = "/etc/apt/sources.list.d/docker.sources"


def plan_for(docker_lines, installed=(), files=(), **data):
    found = responses(docker=docker_lines, extra={**dpkg_l(installed), **file_fact(*files)})
    return run_plan({"ai_guests": {**GUEST, **data}}, found)


def test_fresh_host_gets_dockers_key_source_and_packages_in_order():
    plan = plan_for(FRESH + SEEDED)
    assert plan.error is None, plan.error
    commands = [c for _, cmds in role_ops(plan, "Docker") for c in cmds]
    key = plan.find(r"curl -sSLf https://download\.docker\.com/linux/debian/gpg ")
    assert key and plan.find(f"mv /tmp/pyinfra-[0-9a-f]+ {KEY}$")
    assert plan.files[SOURCE] == (
        "# Managed by the ai-coding-server deploy: Docker (key from "
        "https://download.docker.com/linux/debian/gpg).\n"
        "Types: deb\n"
        "URIs: https://download.docker.com/linux/debian\n"
        "Suites: bookworm\n"
        "Components: stable\n"
        f"Signed-By: {KEY}\n"
    )
    install = plan.find(
        r"apt-get .* install docker-ce docker-ce-cli containerd\.io docker-buildx-plugin "
        r"docker-compose-plugin$"
    )
    assert install, commands
    order = [
        commands.index(key[0]),
        commands.index(f"upload {SOURCE}"),
        commands.index("apt-get update -qq"),
        commands.index(install[0]),
    ]
    assert order == sorted(order)
    assert not plan.find(r"apt-key")


def test_daemon_json_is_merged_into_the_existing_keys():
    plan = plan_for(FRESH + SEEDED)
    merged = json.loads(plan.files["/etc/docker/daemon.json"])
    # labels kept; log-driver is a key the deploy owns (docker_daemon_options) so it is set;
    # the runtime is the container toolkit's key, merged by the same mechanism.
    assert merged == {
        "labels": ["seeded-by=lab"],
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
    }


def test_conflicting_debian_packages_are_removed_before_anything_else():
    installed = ["docker.io", "containerd", "runc"]
    plan = plan_for(FRESH + package_lines(installed), installed)
    ops = role_ops(plan, "Docker")
    assert "remove" in ops[0][0] and "apt-get" in ops[0][1][0]
    assert ops[0][1][0].endswith("remove docker.io containerd runc")


def test_converged_docker_repository_host_plans_nothing():
    """A host with the key, exactly the source file and daemon.json a fresh run writes, the
    packages installed, the engine running and the admin user in the docker group."""
    fresh = plan_for(FRESH + SEEDED)
    daemon = json.loads(fresh.files["/etc/docker/daemon.json"])
    converged = [
        f"file 644 root:root 0123456789abcdef0123456789abcdef01234567 {KEY}",
        file_line(SOURCE, fresh.files[SOURCE]),
        *package_lines(DOCKER_PACKAGES, "5:27.5.1-1~debian.12~bookworm"),
        "unit docker enabled=enabled active=active",
        *[f"probe json {line}" for line in json.dumps(daemon, indent=4).splitlines()],
        "probe group docker:x:999:aicoder",
        "probe user aicoder",
    ]
    plan = plan_for(converged)
    assert plan.error is None, plan.error
    assert role_ops(plan, "Docker") == []
    assert role_ops(plan, "NVIDIA container toolkit")[0][0].endswith("repository signing key")


def test_recorded_lab_guest_with_debian_packages_plans_nothing():
    plan = plan_for(DEPLOYED, docker_source="debian", container_toolkit_enabled=False)
    assert plan.error is None, plan.error
    assert role_ops(plan, "Docker") == []


def test_debian_source_installs_docker_io_and_drops_dockers_repository():
    leftovers = [
        f"file 644 root:root 0123456789abcdef0123456789abcdef01234567 {KEY}",
        f"file 644 root:root 0123456789abcdef0123456789abcdef01234567 {SOURCE}",
        *package_lines(["docker-ce", "docker-compose-plugin"]),
    ]
    plan = plan_for(
        FRESH + leftovers,
        ["docker-ce", "docker-compose-plugin"],
        [KEY, SOURCE],
        docker_source="debian",
        container_toolkit_enabled=False,
    )
    assert plan.find(r"apt-get .* remove docker-ce docker-compose-plugin$")
    assert plan.find(f"rm -f {SOURCE}$") and plan.find(f"rm -f {KEY}$")
    assert plan.find(r"apt-get .* install docker\.io docker-compose$")
    assert not plan.find("download.docker.com")


def test_invalid_daemon_json_stops_the_deploy_instead_of_overwriting_it():
    plan = plan_for(FRESH + ['probe json {"labels": [}'])
    assert plan.error is not None and "not valid JSON" in str(plan.error)
    assert not plan.changed


def test_bad_docker_settings_stop_the_deploy_before_any_operation():
    plan = plan_for(FRESH, docker_source="snap", docker_repo_url="download.docker.com")
    assert plan.error is not None and not plan.changed
    assert "docker_source" in str(plan.error) and "docker_repo_url" in str(plan.error)
