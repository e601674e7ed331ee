"""Careless and hostile input (issue 13) through the real ``pyinfra`` command, as users run it:
one case per class, every refusal one message before any operation, a secret never shown, and
``--dry`` or a refused run leaving secrets.yml, the editor's config and ``~`` byte for byte.

The hosts are ``@fake`` ones answering as a realistic Rocky 9 hypervisor and Debian 12 guest
(test_bad_input.host_for); the client is this machine (``@local``) with a temporary HOME.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT, run_plan
from test_bad_input import GUEST, HV, VM, assert_refused, host_for

KEY = "5e1f0c9a7d3b2e4f6a8c0d1e3f5a7b9c1d3e5f7a9b0c2d4e"  # a user's API key: never in output
HV_NAME, GUEST_NAME = "@fake/gpu-host", "@fake/ai-guest"


def fake_host(name: str, group: str, data: dict) -> tuple[str, dict]:
    group_data, responses = host_for(group, data)
    return name, {"fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": responses,
                  **group_data}  # fmt: skip


def inventory_text(groups: dict[str, list[tuple[str, dict]]], client: bool = True) -> str:
    """An inventory.py of ``groups`` (plus this machine as the client)."""
    lines = ["import re", ""]
    for group, hosts in groups.items():
        lines.append(f"{group} = {hosts!r}")
    if client:
        lines.append('clients = [("@local", {})]')
    return "\n".join(lines) + "\n"


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: relative path -> sha256 (or 'dir'), and mode."""
    found = {}
    for path in sorted(folder.rglob("*")):
        kind = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        found[str(path.relative_to(folder))] = f"{kind} {oct(path.stat().st_mode & 0o777)}"
    return found


class Run:
    """One ``python -m pyinfra -y [--dry] inventory.py deploy.py`` from the repository, with
    its own HOME (holding an editor config and .env) and its own secrets file."""

    def __init__(self, folder: Path, inventory: str, secrets: str | None = None):
        self.folder, self.home = folder, folder / "home"
        (self.home / ".continue").mkdir(parents=True)
        (self.home / ".continue" / "config.yaml").write_text("name: mine\n# my own comments\n")
        (self.home / ".continue" / ".env").write_text("OTHER=1\n")
        (self.home / ".continue" / ".env").chmod(0o600)
        self.secrets = folder / "secrets.yml"
        if secrets is not None:
            self.secrets.write_text(secrets)
            self.secrets.chmod(0o600)
        self.inventory = folder / "inventory.py"
        self.inventory.write_text(inventory)

    def snapshot(self) -> dict[str, str]:
        return {**tree(self.home), **{"secrets": str(tree(self.folder).get("secrets.yml"))}}

    def start(self, dry: bool = True) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AICODER_")}
        env.update(HOME=str(self.home), AICODER_SECRETS_FILE=str(self.secrets))
        args = ["-y", "--dry"] if dry else ["-y"]
        return subprocess.Popen(
            [sys.executable, "-m", "pyinfra", *args, str(self.inventory), "deploy.py"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip


def guest(data: dict) -> dict:
    return {GUEST: [fake_host(GUEST_NAME, GUEST, data)]}


def hypervisor(data: dict) -> dict:
    return {HV: [fake_host(HV_NAME, HV, data)]}


# id -> (inventory groups, secrets.yml text or None, texts the refusal must show), one or more
# per class of issue 13 (1 paths ... 7 secrets); 6 (all hosts first) has two hosts.
CLI_CASES = {
    "1-path-dotdot-to-etc": (guest({"ollama_data_dir": "/var/lib/../../etc"}), None,
                             ["ollama_data_dir", "not normalised"]),
    "1-path-system-folder": (hypervisor({"libvirt_image_dir": "/root"}), None,
                             ["libvirt_image_dir", "system folder"]),
    "2-mirror-newline": (guest({"base_debian_mirror": "http://deb.debian.org/d\nTrusted: yes"}),
                         None, ["base_debian_mirror", "control character"]),
    "2-look-alike": (guest({"base_admin_user": "\u0430icoder"}), None,
                     ["base_admin_user", "character 1", "CYRILLIC SMALL LETTER A"]),
    "3-docker-tcp": (guest({"docker_daemon_options": {"hosts": ["tcp://0.0.0.0:2375"]}}), None,
                     ["docker_daemon_options", "opens the Docker API"]),
    "3-ollama-owned-variable": (guest({"ollama_environment": {"OLLAMA_KV_CACHE_TYPE": "q5"}}),
                                None, ["ollama_environment", "ollama_kv_cache_type"]),
    "3-tabbyapi-override-type": (guest({"tabbyapi_config_overrides": {"model": {"vision": 1}}}),
                                 None, ["tabbyapi_config_overrides", "model.vision"]),
    "4-service-user-root": (guest({"tabbyapi_user": "root"}), None, ["tabbyapi_user", "root"]),
    "4-broadcast-mac": (hypervisor({"guest_vm_vms": [{**VM, "mac": "ff:ff:ff:ff:ff:ff"}]}), None,
                        ["guest_vm_vms[0].mac", "unicast"]),
    "4-vm-address-is-gateway": (
        hypervisor({"guest_vm_vms": [{**VM, "address": "10.0.0.1/24", "gateway": "10.0.0.1"}]}),
        None, ["guest_vm_vms[0].gateway", "own address"]),
    "5-host-in-both-groups": (
        {HV: [fake_host(HV_NAME, HV, {})], GUEST: [(HV_NAME, {})]}, None,
        ["both hypervisors and ai_guests"]),
    "5-group-typo": ({"ai_guest": [fake_host(GUEST_NAME, GUEST, {})]}, None,
                     ["no group the deploy knows", "did you mean 'ai_guests'"]),
    "5-vms-as-a-dict": (hypervisor({"guest_vm_vms": {"name": "ai"}}), None,
                        ["guest_vm_vms", "expected a list of"]),
    "6-two-hosts-one-message": (
        {**hypervisor({"guest_vm_vms": [{**VM, "vcpus": 16}]}),
         **guest({"ollama_bind_address": "0.0.0.0"})},
        None, ["2 hosts", "guest_vm_vms[0].vcpus", "ollama_bind_address"]),
    "7-secret-octal": (guest({}), "# mine\ntabbyapi_api_key: 0777\n",
                       ["line 2", "tabbyapi_api_key", "quote it"]),
    "7-secret-bad-yaml": (guest({}), f"tabbyapi_api_key: '{KEY}\nadmin: [\n",
                          ["not valid YAML", "line"]),
    "7-secret-private-key": (
        guest({}), "tabbyapi_api_key: |\n  -----BEGIN OPENSSH PRIVATE KEY-----\n"
        f"  {KEY}\n  -----END OPENSSH PRIVATE KEY-----\n", ["private key"]),
}  # fmt: skip
GOOD = "good-guest-and-client"


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict[str, tuple[int, str, Run, dict, dict]]:
    """Every case at once (each is about a second of pyinfra start-up): id -> (exit code,
    output, run, snapshot before, snapshot after)."""
    runs = {}
    for case_id, (groups, secrets_text, _) in {**CLI_CASES, GOOD: (guest({}), None, [])}.items():
        run = Run(tmp_path_factory.mktemp(case_id), inventory_text(groups), secrets_text)
        runs[case_id] = (run, run.snapshot(), run.start())
    done = {}
    for case_id, (run, before, process) in runs.items():
        output = process.communicate(timeout=180)[0]
        done[case_id] = (process.returncode, output, run, before, run.snapshot())
    return done


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_refuses_with_one_message_before_any_operation(cli, case_id):
    code, output, _, before, after = cli[case_id]
    assert code != 0, output
    for text in CLI_CASES[case_id][2]:
        assert text in output, output
    assert "Traceback" not in output, output
    assert output.count("pyinfra error") == 1, output
    for marker in ("Ready: deploy.py", "change detection", "Beginning op"):
        assert marker not in output, output
    assert KEY not in output and "0777" not in output and "511" not in output, output
    assert after == before  # secrets.yml, the editor's config and ~ untouched


def test_cli_dry_run_writes_nothing_and_shows_generated_keys_masked(cli):
    """The control: the same guest and client with good input plan; --dry still writes
    neither secrets.yml (keys are generated in memory) nor anything under ~."""
    code, output, run, before, after = cli[GOOD]
    assert code == 0, output
    assert "Ready: deploy.py" in output, output
    assert "Generated secret tabbyapi_api_key <48 characters, hidden>" in output, output
    assert not run.secrets.exists() and after == before


def test_cli_a_refused_real_run_writes_nothing(tmp_path):
    """Not --dry: one bad key on the guest, the client's config and secrets.yml as the user
    left them (with a comment), ~ with its files: all byte for byte after the refusal."""
    run = Run(
        tmp_path,
        inventory_text(guest({"ollama_data_dir": "/etc"})),
        secrets=f"# mine\ntabbyapi_api_key: '{KEY}'\n",
    )
    before = run.snapshot()
    process = run.start(dry=False)
    output = process.communicate(timeout=180)[0]
    assert process.returncode != 0 and "ollama_data_dir" in output, output
    assert KEY not in output and "Traceback" not in output, output
    assert run.snapshot() == before


def test_a_client_without_home_is_refused(tmp_path):
    """HOME unset: no '~' folder appears in the checkout, one message says why."""
    run = Run(tmp_path, inventory_text(guest({})))
    env = {k: v for k, v in os.environ.items() if k != "HOME" and not k.startswith("AICODER_")}
    env["AICODER_SECRETS_FILE"] = str(run.secrets)
    done = subprocess.run(
        [sys.executable, "-m", "pyinfra", "-y", str(run.inventory), "deploy.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "HOME is unset" in output, output
    assert not (ROOT / "~").exists() and not run.secrets.exists()


# --- In process (pyinfra's API), one per class: the key named, nothing planned -----------------


@pytest.mark.parametrize(
    ("group", "data", "key"),
    [
        (GUEST, {"ollama_data_dir": "/etc"}, "ollama_data_dir"),
        (GUEST, {"base_debian_mirror": "http://x.org/debian\nTrusted: yes"}, "base_debian_mirror"),
        (GUEST, {"ollama_environment": {"OLLAMA_ORIGINS": "*", "OLLAMA_NUM_PARALLEL": "9"}},
         "ollama_environment"),
        (GUEST, {"tabbyapi_config_overrides": {"draft_model": {"draft_num_tokens": 0}}},
         "tabbyapi_config_overrides"),
        (GUEST, {"tabbyapi_user": "root"}, "tabbyapi_user"),
        (HV, {"guest_vm_vms": [{**VM, "mac": "01:00:5e:00:00:01"}]}, "guest_vm_vms[0].mac"),
        (HV, {"ollama_port": 11435}, "ollama_port"),  # a guest's setting in the hypervisors
        (HV, {"guest_vm_vms": {"name": "ai"}}, "guest_vm_vms"),
        (GUEST, {"tabbyapi_git_ref": "main..x", "docker_source": "debian",
                 "docker_version": "5:27.5.1-1~debian.12~bookworm"}, "docker_version"),
    ],
    ids=["path", "string", "pass-through", "override-type", "user", "mac", "group-not-using",
         "malformed", "cross-field-beside-bad-key"],
)  # fmt: skip
def test_refused_in_process(group, data, key):
    group_data, responses = host_for(group, data)
    plan = run_plan({group: group_data}, responses)
    assert_refused(plan, key)


def test_fact_checks_come_with_the_other_keys_of_the_host():
    """A VM larger than the host (a host fact) and a bad setting: both in the one message."""
    group_data, responses = host_for(HV, {"guest_vm_vms": [{**VM, "vcpus": 16}],
                                          "libvirt_image_dir": "/var"})  # fmt: skip
    plan = run_plan({HV: group_data}, responses)
    keys = {key for key, _ in plan.error.problems}
    assert keys == {"libvirt_image_dir"}, plan.error  # facts are read once settings are valid
    group_data, responses = host_for(HV, {"guest_vm_vms": [{**VM, "vcpus": 16}]})
    plan = run_plan({HV: group_data}, responses)
    assert {key for key, _ in plan.error.problems} == {"guest_vm_vms[0].vcpus"}
    assert plan.changed == []


def test_cli_a_group_data_file_of_no_group_is_reported(tmp_path):
    """group_data/ai_guest.py (a typo) beside the inventory matches no group: named, refused."""
    run = Run(tmp_path, inventory_text(guest({})))
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "ai_guest.py").write_text("ollama_port = 11435\n")
    output = run.start().communicate(timeout=180)[0]
    assert "group_data/ai_guest.py" in output and "did you mean 'ai_guests'" in output, output
    assert "Traceback" not in output and "Ready: deploy.py" not in output, output
