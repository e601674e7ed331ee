"""The client role on the lab: this machine as the inventory's `@local` clients host, next to
the deployed lab guest. The deploy writes the Continue config (to a scratch folder, not the
real ~/.continue), a re-run changes nothing, Continue's schema accepts the file, and the
end-to-end checks from this machine pass or skip with their reasons."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from continue_validator import validate
from deploy_run import ANSI, pyinfra_deploy

from lab.overrides import OVERRIDES
from roles.common import secrets
from roles.proxy import pki
from roles.proxy.settings import ProxySettings, key_secret

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def client_inventory(deployed, tmp_path_factory) -> tuple[Path, Path]:
    """(inventory, config path): the lab's inventory plus `@local` in the clients group."""
    folder = tmp_path_factory.mktemp("client")
    config = folder / "continue" / "config.yaml"
    inventory = folder / "inventory.py"
    inventory.write_text(
        f"exec(open({str(deployed.inventory)!r}).read())\n"
        f"clients = [('@local', {{'client_config_path': {str(config)!r}}})]\n"
    )
    return inventory, config


def pyinfra(inventory: Path, *args: str) -> tuple[int, str, float]:
    """(exit code, output without colours, seconds) of the real CLI, with the scratch folder
    as HOME (the client's config must be inside the home folder)."""
    env = {**os.environ, "HOME": str(inventory.parent)}
    run = pyinfra_deploy(inventory, *args, timeout=1800, env=env)
    return run.returncode, ANSI.sub("", run.output), run.seconds


def client_ops(output: str) -> dict[str, str]:
    """The client's operations in pyinfra's results table -> "changed" or "unchanged"."""
    _, _, table = output.partition("--> Results:")
    found = {}
    for row in table.splitlines():
        if row.strip().startswith("Client:"):
            name, _hosts, success, _error, _unchanged = row.strip().rsplit(None, 4)
            found[name] = "unchanged" if success == "-" else "changed"
    return found


def test_deploy_writes_the_config_and_a_rerun_changes_nothing(client_inventory, lab_timings):
    inventory, config = client_inventory
    code, first, seconds = pyinfra(inventory)  # the whole inventory, as a user runs it
    assert code == 0, first[-4000:]
    assert set(client_ops(first).values()) == {"changed"}, first[-3000:]
    lab_timings["deploy with the client"] = seconds
    code, again, seconds = pyinfra(inventory, "--limit", "clients")
    assert code == 0, again[-3000:]
    assert set(client_ops(again).values()) == {"unchanged"}, again[-3000:]
    lab_timings["client re-run (--limit clients)"] = seconds

    written = yaml.safe_load(config.read_text())
    guest_ip = next(d for _, d in _lab_guests(inventory))["ssh_hostname"]
    assert {m["apiBase"].split("//")[1].split(":")[0] for m in written["models"]} == {guest_ip}
    env = inventory.parent / ".continue" / ".env"  # HOME's: the one .env Continue reads
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "API_KEY_ME=" in env.read_text()  # the person's key, for the TLS front door
    key = secrets.get(key_secret(ProxySettings().people[0]))
    assert key and key not in first + again
    # Every enabled registered service is listed: the lab enables vLLM (lab/overrides.py).
    if OVERRIDES["ai_guests"].get("vllm_enabled"):
        # Behind the TLS front door: its route on the door's port, the person's key.
        base = f"https://{guest_ip}:{ProxySettings().port}/vllm/v1"
        vllm = [m for m in written["models"] if m["apiBase"] == base]
        assert [m["apiKey"] for m in vllm] == ["${{ secrets.API_KEY_ME }}"], written["models"]
    # The embeddings the guest serves are used: Continue's codebase index and search.
    assert "codebase" in [c["provider"] for c in written["context"]]
    code, messages = validate(config)
    assert code == 0, messages
    # https to the door, trusting the deploy's CA written beside the config.
    ca = config.parent / "aicoder-ca.crt"
    assert ca.read_text() == (pki.ca_dir() / "ca.crt").read_text()
    for model in written["models"]:
        assert model["apiBase"].startswith("https://"), model
        assert model["requestOptions"] == {"caBundlePath": str(ca)}


def test_endpoint_checks_pass_or_say_why_they_skip(client_inventory):
    inventory, config = client_inventory
    if not config.exists():
        pytest.skip("the client deploy did not run (see the test before)")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/infra/test_endpoints.py", "-p",
         "no:cacheprovider", "-q", "-rs"],
        # The deploy's HOME: the keys are in its ~/.continue/.env.
        cwd=REPO, env={**os.environ, "HOME": str(inventory.parent),
                       "AICODER_INVENTORY": str(inventory)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "test_continue_config_is_current" not in done.stdout.split("short test summary")[-1]
    for line in done.stdout.splitlines():
        if line.startswith("SKIPPED"):
            assert ": " in line.split("py:", 1)[-1], f"a skip without a reason: {line}"


def _lab_guests(inventory: Path):
    scope: dict = {}
    exec(inventory.read_text(), scope)
    return scope["ai_guests"]
