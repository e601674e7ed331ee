"""The bad-input catalogue: every invalid setting is refused with a message naming its key,
before any operation runs on a host.

Each case is (inventory group, group data, key the message must name). The cases run the real
deploy.py in-process through pyinfra's ``@fake`` connector on a realistic host of that group
(a Debian 12 guest, a Rocky 9 hypervisor, a control machine), and a few run through the real
CLI exactly as users do (``python -m pyinfra -y --dry INVENTORY deploy.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import guest_services_facts
import pytest
import vfio_facts
from harness import ROOT, run_plan
from pyinfra.api.exceptions import PyinfraError
from test_guest_vm_plan import STATE as GUEST_VM_STATE

from roles.common.settings import SettingsError

LAN = ["192.168.1.0/24"]
VM = {"name": "ai", "vcpus": 2, "memory_mb": 4096, "disk_gb": 32}
GPU = "0000:01:00.0"
PLANNED = {"planner_chat_model": "qwen2.5-coder-7b", "planner_vram_gib": 24}


def vm(**over) -> list[dict]:
    """A one-VM ``guest_vm_vms`` with ``over`` changed."""
    return [{**VM, **over}]


def case(group: str, data: dict, key: str, case_id: str):
    return pytest.param(group, data, key, id=case_id)


HV, GUEST, CLIENT = "hypervisors", "ai_guests", "clients"

CASES = [
    # --- base (every host)
    case(HV, {"base_timezone": "Europe/Berlin Time"}, "base_timezone", "base-timezone-space"),
    case(GUEST, {"base_timezone": "../../etc/passwd"}, "base_timezone", "base-timezone-dotdot"),
    case(GUEST, {"base_debian_mirror": "deb.debian.org/debian"}, "base_debian_mirror",
         "base-mirror-no-scheme"),
    case(HV, {"base_debian_security_mirror": "ftp://mirror/debian-security"},
         "base_debian_security_mirror", "base-security-mirror-ftp"),
    case(GUEST, {"base_admin_user": "Admin User"}, "base_admin_user", "base-admin-user-illegal"),
    case(GUEST, {"base_packages": "curl"}, "base_packages", "base-packages-not-a-list"),
    case(GUEST, {"base_packages": ["curl; rm -rf /"]}, "base_packages", "base-package-illegal"),
    case(HV, {"base_admin_ssh_keys": ["AAAAC3Nza me@laptop"]}, "base_admin_ssh_keys",
         "base-ssh-key-no-type"),
    case(GUEST, {"base_timezon": "UTC"}, "base_timezone", "base-typo-did-you-mean"),
    # --- firewall (hypervisors and guests)
    case(GUEST, {"firewall_allowed_networks": ["0.0.0.0/0"]}, "firewall_allowed_networks",
         "firewall-anywhere-v4-without-flag"),
    case(HV, {"firewall_allowed_networks": ["::/0"]}, "firewall_allowed_networks",
         "firewall-anywhere-v6-without-flag"),
    case(GUEST, {"firewall_allowed_networks": ["192.168.1.0/33"]}, "firewall_allowed_networks",
         "firewall-cidr-prefix-33"),
    case(HV, {"firewall_allowed_networks": ["192.168.300.0/24"]}, "firewall_allowed_networks",
         "firewall-cidr-octet-300"),
    case(GUEST, {"firewall_allowed_networks": "192.168.1.0/24"}, "firewall_allowed_networks",
         "firewall-networks-not-a-list"),
    case(HV, {"firewall_ssh_port": 70000}, "firewall_ssh_port", "firewall-ssh-port-range"),
    case(GUEST, {"firewall_extra_tcp_ports": [8080, 0]}, "firewall_extra_tcp_ports",
         "firewall-extra-port-zero"),
    case(HV, {"firewall_allowed_network": LAN}, "firewall_allowed_networks",
         "firewall-typo-did-you-mean"),
    # --- vfio (hypervisor)
    case(HV, {"vfio_gpus": ["01:00.0"]}, "vfio_gpus", "vfio-pci-address-no-domain"),
    case(HV, {"vfio_gpus": ["10DE:2204"]}, "vfio_gpus", "vfio-pci-ids-upper-case"),
    case(HV, {"vfio_gpus": ["0000:01:00.8"]}, "vfio_gpus", "vfio-pci-function-8"),
    case(HV, {"vfio_gpus": ["10de:2204", "10de:2204"]}, "vfio_gpus", "vfio-gpu-listed-twice"),
    case(HV, {"vfio_gpus": GPU}, "vfio_gpus", "vfio-gpus-not-a-list"),
    case(HV, {"vfio_reboot": "yes"}, "vfio_reboot", "vfio-reboot-not-bool"),
    case(HV, {"vfio_reboot_timeout": 10}, "vfio_reboot_timeout", "vfio-reboot-timeout-range"),
    case(HV, {"vfio_gpus": ["0000:09:00.0"]}, "vfio_gpus", "vfio-gpu-not-on-host"),  # preflight
    case(HV, {"vfio_gpu": [GPU]}, "vfio_gpus", "vfio-typo-did-you-mean"),
    # --- libvirt (hypervisor)
    case(HV, {"libvirt_bridge": "bridge-name-too-long"}, "libvirt_bridge",
         "libvirt-bridge-name-too-long"),
    case(HV, {"libvirt_bridge_address": "192.168.1.5"}, "libvirt_bridge_address",
         "libvirt-address-no-prefix"),
    case(HV, {"libvirt_bridge_gateway": "192.168.1.1"}, "libvirt_bridge_gateway",
         "libvirt-gateway-with-dhcp"),
    case(HV, {"libvirt_bridge_uplink": "br0"}, "libvirt_bridge_uplink",
         "libvirt-uplink-is-bridge"),
    case(HV, {"libvirt_image_dir": "var/lib/libvirt/images"}, "libvirt_image_dir",
         "libvirt-image-dir-relative"),
    # --- guest_vm (hypervisor)
    case(HV, {"guest_vm_vms": vm(vcpus=0)}, "guest_vm_vms[0].vcpus", "vm-zero-vcpus"),
    case(HV, {"guest_vm_vms": vm(memory_mb=128)}, "guest_vm_vms[0].memory_mb",
         "vm-memory-too-small"),
    case(HV, {"guest_vm_vms": vm(disk_gb=1)}, "guest_vm_vms[0].disk_gb", "vm-disk-too-small"),
    case(HV, {"guest_vm_vms": vm(vcpus=2, cpu_pins=[0, 1, 2])}, "guest_vm_vms[0].cpu_pins",
         "vm-cpu-pins-count"),
    case(HV, {"guest_vm_vms": [{**VM, "cpu_pins": [0, 1]},
                               {**VM, "name": "ai2", "cpu_pins": [1, 2]}]},
         "guest_vm_vms[1].cpu_pins", "vm-cpu-pins-overlap"),
    case(HV, {"guest_vm_vms": [{**VM, "gpus": [GPU]}, {**VM, "name": "ai2", "gpus": [GPU]}]},
         "guest_vm_vms[1].gpus", "vm-gpu-given-to-two-vms"),
    case(HV, {"guest_vm_vms": vm(gpus=["1:00.0"])}, "guest_vm_vms[0].gpus",
         "vm-gpu-malformed-address"),
    case(HV, {"guest_vm_vms": vm(memroy_mb=8192)}, "guest_vm_vms[0].memroy_mb",
         "vm-key-typo-did-you-mean"),
    case(HV, {"guest_vm_vms": [{"vcpus": 2}]}, "guest_vm_vms[0].name", "vm-without-name"),
    case(HV, {"guest_vm_vms": vm(name="AI_guest")}, "guest_vm_vms[0].name", "vm-name-illegal"),
    case(HV, {"guest_vm_vms": vm(address="192.168.1.300/24")}, "guest_vm_vms[0].address",
         "vm-address-bad-ip"),
    case(HV, {"guest_vm_vms": vm(address="192.168.1.50/24", gateway="10.0.0.1")},
         "guest_vm_vms[0].gateway", "vm-gateway-outside-network"),
    case(HV, {"guest_vm_vms": [VM, dict(VM)]}, "guest_vm_vms[1].name", "vm-name-twice"),
    case(HV, {"guest_vm_vms": vm(cpu_pins=[0, 99])}, "guest_vm_vms[0].cpu_pins",
         "vm-cpu-pin-not-on-host"),  # refused from the host's facts, still before any change
    case(HV, {"guest_vm_vms": [{**VM, "address": "192.168.1.50/24"},
                               {**VM, "name": "ai2", "address": "192.168.1.50/24"}]},
         "guest_vm_vms[1].ip", "vm-address-twice"),
    case(HV, {"guest_vm_image_url": "ftp://mirror/debian-12-generic-amd64.qcow2"},
         "guest_vm_image_url", "vm-image-url-ftp"),
    case(HV, {"guest_vm_image_sha512": "abc123"}, "guest_vm_image_sha512", "vm-image-sha-short"),
    case(HV, {"guest_vm_domain_type": "xen"}, "guest_vm_domain_type", "vm-domain-type-unknown"),
    case(HV, {"guest_vm_image_url": "file:"}, "guest_vm_image_url", "vm-image-url-file-no-path"),
    # larger than the host (8 CPUs, 64 GiB, a 500 GiB filesystem): refused from its facts
    case(HV, {"guest_vm_vms": vm(vcpus=16)}, "guest_vm_vms[0].vcpus", "vm-more-vcpus-than-host"),
    case(HV, {"guest_vm_vms": vm(memory_mb=131072)}, "guest_vm_vms[0].memory_mb",
         "vm-more-memory-than-host"),
    case(HV, {"guest_vm_vms": [{**VM, "memory_mb": 40960},
                               {**VM, "name": "ai2", "memory_mb": 40960}]},
         "guest_vm_vms", "vms-memory-sum-more-than-host"),
    case(HV, {"guest_vm_vms": vm(disk_gb=4096)}, "guest_vm_vms[0].disk_gb",
         "vm-disk-larger-than-filesystem"),
    # --- nvidia_driver, docker, container_toolkit, hf_tools (guest)
    case(GUEST, {"nvidia_driver_source": "ubuntu"}, "nvidia_driver_source",
         "nvidia-unknown-source"),
    case(GUEST, {"nvidia_driver_branch": "58"}, "nvidia_driver_branch", "nvidia-branch-short"),
    case(GUEST, {"nvidia_driver_debian_packages": []}, "nvidia_driver_debian_packages",
         "nvidia-packages-empty"),
    case(GUEST, {"nvidia_driver_cuda_repo_url": "developer.download.nvidia.com/cuda"},
         "nvidia_driver_cuda_repo_url", "nvidia-repo-url-no-scheme"),
    case(GUEST, {"docker_source": "snap"}, "docker_source", "docker-unknown-source"),
    case(GUEST, {"docker_repo_url": "htp://mirror.lan/docker"}, "docker_repo_url",
         "docker-mirror-url-bad-scheme"),
    case(GUEST, {"docker_source": "debian", "docker_version": "5:27.5.1-1~debian.12~bookworm"},
         "docker_version", "docker-version-with-debian-source"),
    case(GUEST, {"docker_daemon_options": ["log-driver"]}, "docker_daemon_options",
         "docker-daemon-options-not-a-dict"),
    case(GUEST, {"docker_daemon_options": {"max-concurrent-downloads": float("inf")}},
         "docker_daemon_options", "docker-daemon-options-infinity"),
    case(GUEST, {"docker_users": ["Bad User"]}, "docker_users", "docker-user-illegal"),
    case(GUEST, {"container_toolkit_repo_url": "nvidia.github.io/libnvidia-container"},
         "container_toolkit_repo_url", "toolkit-mirror-url-no-scheme"),
    case(GUEST, {"container_toolkit_repo_channel": "nightly"}, "container_toolkit_repo_channel",
         "toolkit-unknown-channel"),
    case(GUEST, {"hf_tools_venv": "opt/hf-cli"}, "hf_tools_venv", "hf-tools-venv-relative"),
    case(GUEST, {"hf_tools_huggingface_hub_version": "latest"},
         "hf_tools_huggingface_hub_version", "hf-tools-version-not-a-version"),
    # --- tabbyapi (guest)
    case(GUEST, {"tabbyapi_port": 11434}, "ollama_port", "ports-tabbyapi-equals-ollama"),
    case(GUEST, {"ollama_port": 5000}, "ollama_port", "ports-ollama-equals-tabbyapi"),
    case(GUEST, {"tabbyapi_port": "5000"}, "tabbyapi_port", "tabbyapi-port-string"),
    case(GUEST, {"tabbyapi_port": 22}, "tabbyapi_port", "ports-tabbyapi-equals-ssh"),
    case(GUEST, {"firewall_ssh_port": 2222, "ollama_port": 2222}, "ollama_port",
         "ports-ollama-equals-moved-ssh"),
    case(GUEST, {"tabbyapi_config_overrides": {"network": {"port": 22}}},
         "tabbyapi_config_overrides", "tabbyapi-overrides-port-bypass"),
    case(GUEST, {"tabbyapi_config_overrides": {"network": {"host": "0.0.0.0"}}},
         "tabbyapi_config_overrides", "tabbyapi-overrides-host-bypass"),
    case(GUEST, {"tabbyapi_gpu_split_auto": False, "tabbyapi_gpu_split": [float("nan")]},
         "tabbyapi_gpu_split", "tabbyapi-gpu-split-nan"),
    case(GUEST, {"tabbyapi_autosplit_reserve": [float("inf")]}, "tabbyapi_autosplit_reserve",
         "tabbyapi-autosplit-reserve-infinity"),
    case(GUEST, {"tabbyapi_cache_mode": "Q5"}, "tabbyapi_cache_mode", "tabbyapi-cache-mode-q5"),
    case(GUEST, {"tabbyapi_cache_mode": "9,9"}, "tabbyapi_cache_mode",
         "tabbyapi-cache-bits-out-of-range"),
    case(GUEST, {"tabbyapi_draft_cache_mode": "8,8"}, "tabbyapi_draft_cache_mode",
         "tabbyapi-draft-cache-bits"),
    case(GUEST, {"tabbyapi_host": "0.0.0.0.0"}, "tabbyapi_host", "tabbyapi-bind-address-bad"),
    case(GUEST, {"tabbyapi_host": "localhost"}, "tabbyapi_host", "tabbyapi-bind-hostname"),
    case(GUEST, {"tabbyapi_model_repo": "Qwen3 Coder"}, "tabbyapi_model_repo",
         "tabbyapi-model-repo-illegal"),
    case(GUEST, {"tabbyapi_model_name": "../etc"}, "tabbyapi_model_name",
         "tabbyapi-model-name-dotdot"),
    case(GUEST, {"tabbyapi_git_url": "github.com/theroyallab/tabbyAPI"}, "tabbyapi_git_url",
         "tabbyapi-git-url-no-scheme"),
    case(GUEST, {"tabbyapi_pip_extras": ["cu12", "cu13"]}, "tabbyapi_pip_extras",
         "tabbyapi-cu12-and-cu13"),
    case(GUEST, {"tabbyapi_cache_size": 1000}, "tabbyapi_cache_size",
         "tabbyapi-cache-size-not-256-multiple"),
    case(GUEST, {"tabbyapi_config_overrides": {"network": {"disable_auth": True}}},
         "tabbyapi_config_overrides", "tabbyapi-disable-auth-refused"),
    case(GUEST, {"tabbyapi_config_overrides": {"modle": {"chunk_size": 1024}}},
         "tabbyapi_config_overrides", "tabbyapi-overrides-unknown-section"),
    case(GUEST, {"tabbyapi_hf_token_required": True}, "tabbyapi_hf_token_required",
         "tabbyapi-private-repo-without-hf-token"),
    case(GUEST, {"tabbyapi_cahce_mode": "Q4"}, "tabbyapi_cache_mode",
         "tabbyapi-typo-did-you-mean"),
    # --- ollama (guest)
    case(GUEST, {"ollama_bind_address": "0.0.0.0"}, "ollama_bind_address",
         "ollama-bind-all-interfaces"),
    case(GUEST, {"ollama_bind_address": "192.168.1"}, "ollama_bind_address",
         "ollama-bind-address-bad"),
    case(GUEST, {"ollama_models": ["nomic embed text"]}, "ollama_models",
         "ollama-model-name-space"),
    case(GUEST, {"ollama_models": ["qwen2.5:7b;reboot"]}, "ollama_models",
         "ollama-model-name-semicolon"),
    case(GUEST, {"ollama_image": "ollama/ollama:latest"}, "ollama_image", "ollama-image-unpinned"),
    case(GUEST, {"ollama_environment": {"OLLAMA_HOST": "0.0.0.0"}}, "ollama_environment",
         "ollama-env-reserved"),
    case(GUEST, {"ollama_environment": {"OLLAMA_ORIGINS": "*\nOLLAMA_HOST=0.0.0.0"}},
         "ollama_environment", "ollama-env-value-newline"),
    case(GUEST, {"ollama_kv_cache_type": "q5_1"}, "ollama_kv_cache_type",
         "ollama-kv-cache-unknown"),
    case(GUEST, {"ollama_keep_alive": "forever"}, "ollama_keep_alive", "ollama-keep-alive-bad"),
    # --- planner (guest)
    case(GUEST, {"planner_chat_model": "gpt-5"}, "planner_chat_model",
         "planner-chat-model-unknown"),
    case(GUEST, {"planner_vram_gib": -1}, "planner_vram_gib", "planner-vram-negative"),
    case(GUEST, {**PLANNED, "planner_embed_model": "qwen2.5-coder-7b"}, "planner_embed_model",
         "planner-chat-model-as-embeddings"),
    case(GUEST, {**PLANNED, "tabbyapi_cache_mode": 8}, "tabbyapi_cache_mode",
         "planner-on-cache-mode-int"),  # the planner reads it before validation: no traceback
    case(GUEST, {**PLANNED, "planner_vram_gib": 1}, "planner_chat_model",
         "planner-model-too-big-for-card"),
    case(GUEST, {"planner_chat_model": "qwen2.5-coder-7b"}, "planner_vram_gib",
         "planner-vram-unknown-before-driver"),  # no nvidia-smi on a fresh guest
    # --- client (control machine)
    case(CLIENT, {"client_config_path": "~/.continue/config.json"}, "client_config_path",
         "client-config-not-yaml"),
    case(CLIENT, {"client_model_roles": {"qwen": ["chatting"]}}, "client_model_roles",
         "client-model-role-unknown"),
    case(CLIENT, {"client_autocomplete_options": {"debounce": 250}},
         "client_autocomplete_options", "client-autocomplete-option-unknown"),
    case(CLIENT, {"client_config_pth": "~/.continue/config.yaml"}, "client_config_path",
         "client-typo-did-you-mean"),
]  # fmt: skip


@pytest.fixture(autouse=True)
def no_user_secrets(monkeypatch, tmp_path):
    """No secrets of the user's: an empty secrets file of this test, no AICODER_* secrets."""
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(tmp_path / "secrets.yml"))
    for name in list(os.environ):
        if name.startswith("AICODER_") and name != "AICODER_SECRETS_FILE":
            monkeypatch.delenv(name)


# The guest_vm role's state fact on that host, in its format (tests/plan/test_guest_vm_plan.py):
# CPUs 0-7 online, /dev/kvm present, no hugepages, 64 GiB, a 500 GiB filesystem, no VM yet.
HV_CPUS_KVM = (
    "[cpus]\n0-7\n[kvm]\npresent\n[hugepages]\n0\n[mem-kib]\n65536000\n"
    f"[fs-bytes]\n{500 * 2**30}\n[pci]"
)


def host_for(group: str, data: dict) -> tuple[dict, dict]:
    """(group data, fake responses) of a realistic host of ``group`` given ``data``."""
    if group == HV:  # Rocky 9.4 on AMD, recorded (tests/plan/vfio_facts.py), 8 CPUs and KVM
        responses = {GUEST_VM_STATE: HV_CPUS_KVM, **vfio_facts.el9_fresh_amd()}
        return {"firewall_allowed_networks": LAN, **data}, responses
    if group == GUEST:  # Debian 12 guest (tests/plan/guest_services_facts.py)
        return {"firewall_allowed_networks": LAN, **data}, guest_services_facts.responses()
    return data, {}  # the control machine: only the editor's config, no facts read before it


def assert_refused(plan, key: str) -> None:
    """Refused with pyinfra's error (no traceback) naming ``key``, before any operation ran."""
    assert plan.error is not None, f"accepted: {key}"
    assert isinstance(plan.error, PyinfraError), repr(plan.error)
    assert key in str(plan.error), str(plan.error)
    if isinstance(plan.error, SettingsError):  # the key is a problem's own, or its suggestion
        assert any(key == k or key in msg for k, msg in plan.error.problems), plan.error.problems
    assert plan.changed == []


@pytest.mark.parametrize(("group", "data", "key"), CASES)
def test_bad_input_is_refused_naming_the_key(group, data, key):
    group_data, responses = host_for(group, data)
    plan = run_plan({group: group_data}, responses)
    assert_refused(plan, key)


@pytest.mark.parametrize("group", [HV, GUEST])
def test_the_same_hosts_accept_good_input(group):
    """The control of the catalogue: each realistic host plans without error when no value is
    bad, so every refusal above is its bad value's."""
    group_data, responses = host_for(group, {})
    plan = run_plan({group: group_data}, responses)
    assert plan.error is None, plan.error
    assert plan.changed  # a fresh host: the deploy plans work


@pytest.mark.parametrize(
    ("data", "suggestion"),
    [
        ({"base_timezon": "UTC"}, "did you mean 'base_timezone'?"),
        ({"tabbyapi_cahce_mode": "Q4"}, "did you mean 'tabbyapi_cache_mode'?"),
        ({"guest_vm_vms": vm(memroy_mb=8192)}, "did you mean 'memory_mb'?"),
    ],
    ids=["top-level-key", "role-key", "vm-key"],
)
def test_typos_suggest_the_key(data, suggestion):
    group = HV if "guest_vm_vms" in data else GUEST
    group_data, responses = host_for(group, data)
    plan = run_plan({group: group_data}, responses)
    assert suggestion in str(plan.error)
    assert plan.changed == []


def test_secrets_file_readable_by_others_is_refused(monkeypatch, tmp_path):
    """A secrets file given by AICODER_SECRETS_FILE with mode 0644 is refused with the fix."""
    path = tmp_path / "shared-secrets.yml"
    path.write_text("tabbyapi_api_key: k1\ntabbyapi_admin_key: k2\n")
    path.chmod(0o644)
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(path))
    group_data, responses = host_for(GUEST, {})
    plan = run_plan({GUEST: group_data}, responses)
    assert isinstance(plan.error, SettingsError), repr(plan.error)  # with every host's problems
    assert f"chmod 600 {path}" in str(plan.error)
    assert plan.changed == []
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # left as it was: the user decides


# --- Through the real CLI, as users run it --------------------------------------------------

# id -> (group, bad data, text the output must show, mode of a secrets file to write or None)
CLI_CASES: dict[str, tuple[str, dict, str, int | None]] = {
    "cli-ollama-bind-all": (GUEST, {"ollama_bind_address": "0.0.0.0"}, "ollama_bind_address", None),
    "cli-gpu-given-to-two-vms": (
        HV, {"guest_vm_vms": [{**VM, "gpus": [GPU]}, {**VM, "name": "b", "gpus": [GPU]}]},
        "guest_vm_vms[1].gpus", None),
    "cli-typo-did-you-mean": (
        GUEST, {"tabbyapi_cahce_mode": "Q4"}, "did you mean 'tabbyapi_cache_mode'", None),
    "cli-anywhere-without-flag": (
        HV, {"firewall_allowed_networks": ["0.0.0.0/0"]}, "firewall_allow_anywhere", None),
    "cli-secrets-file-0644": (GUEST, {}, "chmod 600", 0o644),
}  # fmt: skip
GOOD = "cli-good-input"  # the control: the same guest without a bad value


def write_inventory(folder: Path, group: str, data: dict, responses: dict) -> Path:
    """An inventory with one ``@fake`` host in ``group`` holding ``data`` and the fake answers
    of a realistic host of that group (some are compiled regexes, hence ``import re``)."""
    host_data = {"fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": responses, **data}
    inv = folder / "inventory.py"
    inv.write_text(f'import re\n\n{group} = [("@fake/badhost", {host_data!r})]\n')
    return inv


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """``python -m pyinfra -y --dry INVENTORY deploy.py`` from the repo, as users run it, for
    every case at once (each is about a second of pyinfra start-up): id -> (exit code, output).
    Each run has its own secrets file (AICODER_SECRETS_FILE), never the user's."""
    runs = {}
    for case_id, (group, data, _, mode) in {**CLI_CASES, GOOD: (GUEST, {}, "", None)}.items():
        folder = tmp_path_factory.mktemp(case_id)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AICODER_")}
        env["AICODER_SECRETS_FILE"] = str(folder / "secrets.yml")
        if mode is not None:
            (folder / "secrets.yml").write_text("tabbyapi_api_key: k1\n")
            (folder / "secrets.yml").chmod(mode)
        inv = write_inventory(folder, group, *host_for(group, data))
        runs[case_id] = subprocess.Popen(
            [sys.executable, "-m", "pyinfra", "-y", "--dry", str(inv), "deploy.py"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return {case_id: (p.wait(120), p.communicate()[0]) for case_id, p in runs.items()}


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_refuses_bad_input(cli_runs, case_id):
    code, output = cli_runs[case_id]
    assert code != 0, output
    assert CLI_CASES[case_id][2] in output, output
    assert "Traceback" not in output, output  # a clean pyinfra error, not a crash
    # Refused while the deploy file loaded: the host never got "Ready", and pyinfra never got to
    # change detection (a good run prints "Skipping change detection" with -y) nor ran an op.
    assert "Loading: deploy.py" in output, output
    for marker in ("Ready: deploy.py", "change detection", "Detected changes", "Beginning op"):
        assert marker not in output, output


def test_cli_accepts_the_same_host_with_good_input(cli_runs):
    """The control of the CLI cases: the same inventory without the bad value loads (so the
    refusals above are the bad values', not the fixture's)."""
    code, output = cli_runs[GOOD]
    assert code == 0, output
    assert "Ready: deploy.py" in output, output
