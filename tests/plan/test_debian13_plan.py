"""Plan tests of the deploy on Debian 13 hosts, where the release differs from Debian 12: its
suites, Docker's and NVIDIA's repositories for it, its own 550 driver (enough for Ollama on the
GPU), its docker-compose v2, Python 3.13 for tabbyAPI's wheels, and VMs made from its cloud image.

The host is a recorded Debian 13 os-release (fixtures/os-release.debian-13.txt, from the lab's
trixie root filesystem); each Debian 12 counterpart is in the role's own plan tests.
"""

from __future__ import annotations

from functools import partial

import pytest
from gpu_stack_facts import GUEST, recorded
from gpu_stack_facts import responses as gpu_responses
from guest_services_facts import LAN, TABBY_STATE, guest_plan, probe_lines, use_secrets
from guest_services_facts import responses as guest_responses
from harness import ROOT, debian_release, run_plan
from test_guest_vm_plan import VM
from test_guest_vm_plan import plan_for as vm_plan
from test_libvirt_plan import DEBIAN13
from test_tabbyapi_plan import install_lines

from roles.common.platform import DEBIAN_13
from roles.ollama import render as ollama_render

NVIDIA_FRESH = recorded("host-state.nvidia-driver.debian-12-lab-fresh.txt")
DOCKER_FRESH = recorded("host-state.docker.debian-12-lab-fresh.txt")
base_plan = partial(run_plan, deploy_file=ROOT / "tests" / "plan" / "deploys" / "base_only.py")


@pytest.fixture(autouse=True)
def user_secrets(monkeypatch, tmp_path):
    use_secrets(monkeypatch, tmp_path, "api", "admin")


def gpu_plan(nvidia=(), docker=(), **data):
    found = gpu_responses(nvidia=nvidia, docker=docker, release=DEBIAN_13)
    return run_plan({"ai_guests": {**GUEST, **data}}, found)


def test_sources_are_debian_13s_suites():
    plan = base_plan({"ai_guests": {}}, debian_release(13))
    assert plan.error is None, plan.error
    sources = plan.files["/etc/apt/sources.list.d/debian.sources"]
    assert "Suites: trixie trixie-updates\n" in sources
    assert "Suites: trixie-security\n" in sources and "bookworm" not in sources


def test_debians_own_550_driver_is_enough_for_ollama_on_the_gpu():
    """Debian 12's 535 is refused with ollama_gpu (test_nvidia_driver_plan.py); 13's 550 is not."""
    plan = gpu_plan(NVIDIA_FRESH, nvidia_driver_source="debian")
    assert plan.error is None, plan.error
    assert plan.find(r"apt-get .* install linux-image-amd64 linux-headers-amd64 nvidia-driver ")
    assert not plan.find(r"developer\.download\.nvidia\.com")
    # A newer minimum than the release has is still refused, naming the release's branch.
    plan = gpu_plan(NVIDIA_FRESH, nvidia_driver_source="debian", ollama_min_driver_branch=570)
    assert plan.error is not None and not plan.changed
    assert "Debian 13's 550 driver" in str(plan.error)


def test_nvidias_repository_is_the_one_for_debian_13():
    plan = gpu_plan(NVIDIA_FRESH)
    assert plan.error is None, plan.error
    source = plan.files["/etc/apt/sources.list.d/nvidia-cuda.sources"]
    assert f"URIs: {DEBIAN_13.cuda_repo_url}\n" in source
    assert DEBIAN_13.cuda_repo_url.endswith("/compute/cuda/repos/debian13/x86_64")
    # Signed by its own key: debian12's 3bf863cc is SHA-1 bound, which trixie's apt rejects
    # (NVIDIA/cuda-repo-management#30), so apt-get update would fail with it.
    assert plan.find(r"curl .*/repos/debian13/x86_64/8793F200\.pub")
    assert not plan.find(r"3bf863cc")


def test_dockers_repository_suite_is_trixie():
    plan = gpu_plan(docker=DOCKER_FRESH)
    assert plan.error is None, plan.error
    assert "Suites: trixie\n" in plan.files["/etc/apt/sources.list.d/docker.sources"]


def test_debians_docker_compose_is_v2_on_debian_13():
    """Debian 12's docker-compose is v1 (test_ollama_plan.py); Debian 13's is the v2 plugin."""
    plan = guest_plan({"docker_source": "debian"}, release=DEBIAN_13)
    assert plan.find(r"^docker compose -p ollama -f /opt/ollama/compose.yaml config --quiet$")
    unit = plan.files[ollama_render.UNIT_PATH]
    assert "ExecStart=docker compose -p ollama" in unit and "docker-compose" not in unit


@pytest.mark.parametrize("extras", [["cu12"], ["cu13"]])
def test_tabbyapi_wheels_fit_python_3_13(extras):
    """cu13 needs Python 3.12+: refused on Debian 12's 3.11 (test_tabbyapi_plan.py), fine on
    Debian 13's 3.13, as cu12 (3.10-3.13) is."""
    fresh = install_lines(head="", ref="", installed="", python="3.13")
    plan = run_plan(
        {"ai_guests": {**LAN, "tabbyapi_pip_extras": extras}},
        guest_responses({TABBY_STATE: probe_lines(fresh)}, release=DEBIAN_13),
    )
    assert plan.error is None, plan.error
    assert plan.find(rf"pip install .*\.\[{extras[0]}\]|pip install .*{extras[0]}")


def test_tabbyapis_cu13_wheels_on_debian_13s_550_driver_are_refused_before_any_change():
    """CUDA 13 runs on driver 580+ only: the release's own 550 would install the wheels and
    fail at every start; cu12 (CUDA 12.8, 525+ by minor-version compatibility) is fine."""
    fresh = install_lines(head="", ref="", installed="", python="3.13")
    found = guest_responses({TABBY_STATE: probe_lines(fresh)}, release=DEBIAN_13)
    debian = {**LAN, "nvidia_driver_source": "debian"}
    plan = run_plan({"ai_guests": {**debian, "tabbyapi_pip_extras": ["cu13"]}}, found)
    assert plan.error is not None and not plan.changed
    message = str(plan.error)
    assert "tabbyapi_pip_extras" in message and "Debian 13's 550 driver" in message, message
    assert "580 or newer" in message
    assert run_plan({"ai_guests": {**debian, "tabbyapi_pip_extras": ["cu12"]}}, found).error is None


def test_a_debian_13_vm_is_made_from_debian_13s_cloud_image():
    plan = vm_plan([{**VM, "release": "debian13"}])
    assert plan.error is None, plan.error
    (download,) = plan.find(r"curl .*debian-13-generic-amd64\.qcow2")
    assert "https://cloud.debian.org/images/cloud/trixie/latest/SHA512SUMS" in download
    assert "/images/cloud/trixie/latest/debian-13-generic-amd64.qcow2" in download
    assert plan.find(r"cp --sparse=always \S+/cache/debian-13-generic-amd64\.qcow2 ")


def test_vms_of_both_releases_each_get_their_image_once():
    vms = [VM, {"name": "b", "vcpus": 2, "release": "debian13"}]
    plan = vm_plan(vms)
    assert plan.error is None, plan.error
    assert len(plan.find(r"curl .*debian-12-generic-amd64\.qcow2")) == 1
    assert len(plan.find(r"curl .*debian-13-generic-amd64\.qcow2")) == 1
    # One checksum cannot fit two images; a release the deploy has no image of is refused.
    plan = vm_plan(vms, state="", guest_vm_image_sha512="ab" * 64)
    assert plan.error is not None and "guest_vm_image_sha512" in str(plan.error)
    plan = vm_plan([{**VM, "release": "debian11"}], state="")
    assert plan.error is not None and "guest_vm_vms[0].release" in str(plan.error)
    assert "debian12 or debian13" in str(plan.error)


def test_a_debian_13_hypervisor_gets_its_suites_and_creates_the_vm():
    plan = vm_plan([VM], os_release=DEBIAN13)
    assert plan.error is None, plan.error
    assert "Suites: trixie trixie-updates" in plan.files["/etc/apt/sources.list.d/debian.sources"]
    assert plan.find(r"curl .*debian-12-generic-amd64\.qcow2")  # the default guest: Debian 12
