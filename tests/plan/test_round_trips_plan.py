"""Every read the deploy makes while it plans goes to the host in ONE command per host.

Counts the commands the deploy's own code sends outside operations (the validation's and the
roles' state reads: roles/common/prefetch.py) on fake hosts. A role that reads something it did
not declare in its prefetch reader, or declares it differently, adds a command and fails here.
"""

from __future__ import annotations

import pytest
from guest_services_facts import guest_plan
from harness import run_plan
from test_container_toolkit_plan import plan_for
from test_hypervisor_first_run_plan import HOSTS, hypervisor_ops, later_run
from test_libvirt_plan import DEBIAN, EL9, LAN
from test_libvirt_plan import responses as libvirt_responses
from test_ollama_plan import converged_guest
from test_tabbyapi_plan import converged_guest as tabbyapi_converged
from test_tabbyapi_plan import user_secrets as tabbyapi_secrets  # noqa: F401 - autouse
from test_vllm_plan import converged as vllm_converged
from test_vllm_plan import plan_for as vllm_plan
from test_vllm_plan import user_secrets  # noqa: F401 - autouse: the keys

BATCH = "echo '@@aicoder-fact 0'"


def assert_one_read(plan) -> None:
    assert plan.error is None, plan.error
    assert len(plan.role_reads) == 1, "\n".join(r[:160] for r in plan.role_reads)
    assert plan.role_reads[0].startswith(BATCH)


def test_a_guest_plans_with_one_read():
    plan = guest_plan(extra=converged_guest())
    assert_one_read(plan)
    assert [n for n in plan.names() if n.startswith("Ollama")] == []


@pytest.mark.parametrize("source", ["debian", "docker"])
def test_a_fresh_guest_with_the_container_toolkit_plans_with_one_read(source):
    """Fresh: the operations check the host themselves, later; the plan itself reads once."""
    plan = plan_for([], docker_source=source)
    assert_one_read(plan)
    assert any(n.startswith("NVIDIA container toolkit") for n in plan.names())


@pytest.mark.parametrize("kind", HOSTS)
def test_a_converged_hypervisor_plans_with_one_read(kind):
    """EL9 hypervisors (nmcli, firewalld) and both VFIO layouts."""
    plan = later_run(HOSTS[kind], running=True)
    assert_one_read(plan)
    assert hypervisor_ops(plan) == []


def test_a_fresh_guest_installs_the_plain_packages_in_the_base_transaction():
    """git, python3-venv (hf_tools), curl and logrotate (tabbyapi) need no repository of their
    own: they come with the base packages, in one apt run, and their roles install nothing."""
    plan = guest_plan()
    installs = plan.find(r"apt-get .* install ")
    base = [c for n, cmds in plan.changed if n.endswith("Base packages") for c in cmds]
    assert len(base) == 1 and all(p in base[0].split() for p in ("git", "curl", "logrotate"))
    assert "python3-venv" in base[0].split()
    own = [n for n in plan.names() if n.startswith(("Hugging Face tools", "tabbyAPI"))]
    assert not [n for n in own if "git and python3-venv" in n or "curl and logrotate" in n]
    assert len(installs) < 6, installs


@pytest.mark.parametrize("release", [DEBIAN, EL9])
def test_a_hypervisor_without_vfio_gpus_plans_with_one_read(release):
    """No GPU to isolate: the vfio role's release check, libvirt's and the VMs' reads."""
    plan = run_plan({"hypervisors": LAN}, libvirt_responses(release))
    assert_one_read(plan)


def test_a_guest_with_vllm_plans_with_one_read():
    """vLLM's keys come from its tests' autouse fixture (user_secrets, imported here)."""
    plan = vllm_plan(extra=vllm_converged())
    assert_one_read(plan)


def test_a_running_service_is_not_waited_on_when_nothing_restarted_it():
    """No health wait for a service this run did not (re)start: a running tabbyAPI was waited
    on in every run, a second round trip (tabbyAPI and Ollama converged here)."""
    plan = guest_plan(extra={**converged_guest(), **tabbyapi_converged()})
    assert_one_read(plan)
    waits = [c for c in plan.executed[len(plan.reads) :] if "until curl" in c]
    assert waits == []
